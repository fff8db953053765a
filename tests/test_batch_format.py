"""Provider batch JSONL in, provider batch output and training data out (real vLLM engine,
tiny random model), and the batch file's mistakes named before any engine starts."""

import json

import pyarrow.parquet as pq
import pytest

from pipelines.planning.inputs import InputError
from pipelines.run import run
from pipelines.spec import PipelineSpec
from pipelines.store.output import OutputStore
from pipelines.store.records import Records
from tests.helpers import files_under, spotbatch, write_spec

pytestmark = pytest.mark.engine


def batch_line(i, messages=None, max_tokens=5):
    body = {"model": "gpt-4o-mini", "messages": messages or [{"role": "user", "content": f"say {i}"}],
            "max_tokens": max_tokens}
    return json.dumps({"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body})


def spec_for(tmp_path, model, batch):
    return PipelineSpec(input={"kind": "openai_batch", "paths": str(batch)},
                        model={"name": str(model), "enforce_eager": True, "max_model_len": 256},
                        sampling={"max_tokens": 8, "temperature": 0.0}, output={"path": str(tmp_path / "out")})


def test_a_provider_batch_runs_unchanged_and_exports_both_ways(tmp_path, ray_cluster, tiny_model):
    batch = tmp_path / "batch_input.jsonl"
    lines = [batch_line(i, max_tokens=3 + i % 3) for i in range(12)]
    lines.append(batch_line(12, messages=[{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": "hello"}]))
    lines.append(json.dumps({"custom_id": "req-empty", "body": {"messages": []}}))  # an error record
    batch.write_text("\n".join(lines) + "\n")
    summary = run(spec_for(tmp_path, tiny_model, batch), address=ray_cluster)
    assert summary.finished and summary.rows == 14 and summary.errors_by_class == {"bad_input": 1}

    out = tmp_path / "batch_output.jsonl"
    proc = spotbatch("export", str(tmp_path / "out"), "--format", "openai-batch", "--to", str(out))
    assert proc.returncode == 0, proc.stderr
    answers = [json.loads(line) for line in out.read_text().splitlines()]
    errors = [json.loads(line) for line in (tmp_path / "batch_output.errors.jsonl").read_text().splitlines()]
    assert sorted(a["custom_id"] for a in answers) == sorted(f"req-{i}" for i in range(13))
    assert [e["custom_id"] for e in errors] == ["req-empty"] and errors[0]["error"]["code"] == "invalid_request_error"
    assert errors[0]["error"]["message"].startswith("bad_input: ")  # spotbatch's class, for a retry by class
    for a in answers:
        body = a["response"]["body"]
        assert a["response"]["status_code"] == 200 and body["object"] == "chat.completion"
        usage = body["usage"]
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        i = int(a["custom_id"].split("-")[1])
        assert usage["completion_tokens"] <= (3 + i % 3 if i < 12 else 5)  # each request's own max_tokens
    # The same command again refuses to overwrite what it wrote.
    again = spotbatch("export", str(tmp_path / "out"), "--format", "openai-batch", "--to", str(out))
    assert again.returncode == 2 and "never overwrites" in again.stderr

    train = tmp_path / "train.jsonl"
    assert spotbatch("export", str(tmp_path / "out"), "--format", "chat-jsonl", "--to", str(train),
                     "--include-truncated").returncode == 0
    chats = [json.loads(line)["messages"] for line in train.read_text().splitlines()]
    assert len(chats) == 13 and all(c[-1]["role"] == "assistant" for c in chats)
    assert any(c[0] == {"role": "system", "content": "Be brief."} for c in chats)
    pairs = tmp_path / "pairs.parquet"
    assert spotbatch("export", str(tmp_path / "out"), "--format", "pairs-parquet", "--to", str(pairs)).returncode == 0
    table = pq.read_table(pairs)
    assert table.num_rows == 13 and set(table.column_names) >= {"prompt", "response", "completion_tokens"}

    # The batch file changes: the run is refused by name before the converted input is rewritten.
    converted = files_under(tmp_path / "out" / "_spotbatch" / "input")
    batch.write_text("\n".join(lines[:5]) + "\n")
    changed = spotbatch("run", str(write_spec(tmp_path / "spec.yaml", spec_for(tmp_path, tiny_model, batch)
                                               .model_dump(mode="json"))), "--address", ray_cluster)
    assert changed.returncode == 2 and "holds a run of other batch files" in changed.stderr, changed.stderr[-2000:]
    assert files_under(tmp_path / "out" / "_spotbatch" / "input") == converted


def test_a_provider_batch_on_a_spec_with_every_default_runs_through_the_cli(tmp_path, ray_cluster, tiny_model):
    """No sampling.max_tokens (a request without one runs up to the context, OpenAI's meaning) and
    no model.enforce_eager (chosen by the work ahead): the compile choice reads each request's own."""
    batch = tmp_path / "batch_input.jsonl"
    lines = [batch_line(i, max_tokens=4) for i in range(3)]
    lines.append(json.dumps({"custom_id": "req-open", "body": {"messages": [{"role": "user", "content": "go on"}]}}))
    batch.write_text("\n".join(lines) + "\n")
    spec = write_spec(tmp_path / "spec.yaml", {"input": {"kind": "openai_batch", "paths": str(batch)},
                                               "model": {"name": "tiny-random"},
                                               "output": {"path": str(tmp_path / "out")}})
    proc = spotbatch("run", str(spec), "--address", ray_cluster)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "4 rows in" in proc.stdout and "4 completed, 0 failed" in proc.stdout, proc.stdout
    choices = [a["compile"] for a in Records(OutputStore(str(tmp_path / "out"))).actors().values()]
    assert choices and all(c["enforce_eager"] and "of decoding ahead" in c["reason"] for c in choices)  # ~2k tokens

    out = tmp_path / "batch_output.jsonl"
    assert spotbatch("export", str(tmp_path / "out"), "--format", "openai-batch", "--to", str(out)).returncode == 0
    usage = {a["custom_id"]: a["response"]["body"]["usage"] for a in map(json.loads, out.read_text().splitlines())}
    assert all(usage[f"req-{i}"]["completion_tokens"] <= 4 for i in range(3))
    assert usage["req-open"]["prompt_tokens"] + usage["req-open"]["completion_tokens"] <= 2048  # the default context


def test_a_broken_batch_file_is_named_before_any_engine(tmp_path):
    batch = tmp_path / "bad.jsonl"
    batch.write_text(batch_line(1) + "\n{not json\n")
    with pytest.raises(InputError, match=r"bad.jsonl line 2: not JSON"):
        run(spec_for(tmp_path, "tiny-random", batch))
    batch.write_text(json.dumps({"custom_id": "e", "url": "/v1/audio/speech", "body": {}}) + "\n")
    with pytest.raises(InputError, match="url '/v1/audio/speech' is not an endpoint spotbatch runs"):
        run(spec_for(tmp_path, "tiny-random", batch))


@pytest.mark.parametrize("extra, named", [
    ({"tools": []}, "field body.tools must be a non-empty list"),
    ({"tool_choice": "auto"}, "field body.tool_choice needs tools"),
    ({"functions": [{"name": "f"}]}, "field body.functions cannot be honoured: deprecated by OpenAI; give tools"),
    ({"stream": True}, "field body.stream cannot be honoured"),
    ({"logit_bias": {"50256": -100}}, "field body.logit_bias cannot be honoured: its token ids are OpenAI's"),
    ({"frobnicate": 1}, "field body.frobnicate is not an OpenAI chat completion field"),
    ({"messages": [{"role": "tool", "content": "x"}]}, r"body.messages\[0\].tool_call_id must be a string"),
    ({"messages": [{"role": "function", "content": "x"}]}, r"body.messages\[0\].role 'function' cannot be honoured"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
     r"body.messages\[0\].content\[0\].type 'input_audio' cannot be honoured"),
])
def test_a_body_field_that_cannot_be_honoured_is_refused_by_name_not_dropped(tmp_path, extra, named):
    batch = tmp_path / "batch.jsonl"
    line = json.loads(batch_line(1))
    line["body"].update(extra)
    batch.write_text(batch_line(0) + "\n" + json.dumps(line) + "\n")
    with pytest.raises(InputError, match=rf"batch.jsonl line 2: {named}"):
        run(spec_for(tmp_path, "tiny-random", batch))
    assert not list(tmp_path.rglob("*.parquet"))  # refused before the batch file was converted
