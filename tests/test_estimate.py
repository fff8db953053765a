"""`spotbatch estimate`: the bill before the run, with no engine, no Ray, nothing written.

Prompt tokens are checked against the model's own tokenizer applied independently here (and,
once, against a real run's engine counts: see the commit that added this file)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from jobs.cli import main
from pipelines.engine import facts as engine_facts
from pipelines.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ["What is two plus two?", "Name a colour.", "Write one sentence about the sea and the sky at dusk.",
             "Say hi."]


def write_input(folder: Path, rows: int, text=lambda i: QUESTIONS[i % len(QUESTIONS)] + f" ({i})") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": list(range(rows)), "text": [text(i) for i in range(rows)]}),
                   folder / "part-0.parquet", row_group_size=500)


def write_spec(tmp_path: Path, model: Path, rows: int = 40, text=None, **extra) -> Path:
    write_input(tmp_path / "in", rows, *(text,) if text else ())
    spec = {"input": {"paths": str(tmp_path / "in"), "prompt_column": "text", "system_prompt": "Be brief."},
            "model": {"name": str(model), "max_model_len": 2048}, "sampling": {"max_tokens": 64},
            "output": {"path": str(tmp_path / "out")}, **extra}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def estimate_json(capsys, spec: Path, *args: str) -> dict:
    assert main(["estimate", str(spec), "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def own_count(model: Path, texts: list[str], system: str = "Be brief.") -> int:
    """The prompt tokens as the model's tokenizer makes them, by its chat template here."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model))
    def count(text: str) -> int:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": text}]
        return len(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False))

    return sum(count(t) for t in texts)


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run_cli_alone(spec: Path, env_facts: Path, *args: str) -> subprocess.CompletedProcess:
    """The CLI in a fresh Python, which then says whether Ray or vLLM was ever imported."""
    code = ("import sys; from jobs.cli import main; rc = main(sys.argv[1:]); "
            "print('IMPORTED', [m for m in ('ray', 'vllm') if m in sys.modules]); sys.exit(rc)")
    env = {**os.environ, "SPOTBATCH_FACTS": str(env_facts), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", code, "estimate", str(spec), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_estimate_writes_no_output_starts_no_ray_and_counts_prompts_exactly(tmp_path, smollm2):
    spec = write_spec(tmp_path, smollm2, rows=40)
    done = run_cli_alone(spec, tmp_path / "facts.json", "--json", "--reference", "gpt-4o-mini")
    assert done.returncode == 0, done.stderr
    body, imported = done.stdout.rsplit("IMPORTED", 1)
    assert imported.strip() == "[]"  # neither Ray nor vLLM
    assert not (tmp_path / "out").exists()
    est = json.loads(body)
    texts = [QUESTIONS[i % 4] + f" ({i})" for i in range(40)]
    assert est["work"]["prompt_tokens"] == own_count(smollm2, texts)
    assert est["work"]["exact"] and est["work"]["rows_read"] == 40 and est["work"]["units"] >= 1
    assert est["work"]["allowed_output_tokens"] == 40 * 64
    ref, work = est["references"][0], est["work"]
    assert ref["name"] == "gpt-4o-mini"
    # a provider bills every row, duplicates too: the tokens before the dedup
    billed_output = round(work["allowed_output_tokens"] * work["output_ratio"])
    assert ref["usd"] == pytest.approx((ref["usd_per_1m_input_tokens"] * work["prompt_tokens"]
                                        + ref["usd_per_1m_output_tokens"] * billed_output) / 1e6)
    option = est["options"][0]
    assert {"instance_type", "market", "engines", "seconds", "usd"} <= set(option)
    assert est["recommendation"]["instance_type"] == option["instance_type"]  # no deadline: the cheapest


def test_an_output_with_committed_units_is_read_not_touched(tmp_path, tiny_model):
    from pipelines.run import prepare
    from tests.conftest import commit_by_hand

    spec_path = write_spec(tmp_path, tiny_model, rows=400, compute={"tokens_per_unit": 2000})
    spec = load_spec(spec_path)
    store, plan = prepare(spec)
    assert len(plan.units) > 2
    commit_by_hand(store, plan, plan.units[:2])
    before = snapshot(tmp_path / "out")
    done = run_cli_alone(spec_path, tmp_path / "facts.json", "--json")
    assert done.returncode == 0, done.stderr
    assert snapshot(tmp_path / "out") == before
    work = json.loads(done.stdout.rsplit("IMPORTED", 1)[0])["work"]
    assert work["units_done"] == 2
    assert work["rows_pending"] == 400 - plan.units[0].rows - plan.units[1].rows


def test_duplicates_the_dedup_answers_are_counted_once(tmp_path, capsys, smollm2):
    spec = write_spec(tmp_path, smollm2, rows=40, text=lambda i: QUESTIONS[i % 4])
    work = estimate_json(capsys, spec)["work"]
    assert work["duplicate_rows"] == 36
    assert work["engine_prompt_tokens"] == own_count(smollm2, QUESTIONS)
    assert work["prompt_tokens"] == 10 * own_count(smollm2, QUESTIONS)


def test_a_large_input_is_sampled_and_says_its_error(tmp_path, capsys, tiny_model):
    words = ["alpha", "beta gamma", "delta epsilon zeta eta", "theta " * 9]
    spec = write_spec(tmp_path, tiny_model, rows=3000, text=lambda i: words[(i * 7 + i // 13) % 4] + f" {i}")
    exact = estimate_json(capsys, spec)["work"]
    sampled = estimate_json(capsys, spec, "--sample-rows", "300")["work"]
    assert exact["exact"] and not sampled["exact"]
    assert 250 <= sampled["rows_read"] <= 300
    assert sampled["prompt_tokens_error"] > 0
    assert abs(sampled["prompt_tokens"] - exact["prompt_tokens"]) <= sampled["prompt_tokens_error"]
    capsys.readouterr()
    assert main(["estimate", str(spec), "--sample-rows", "300"]) == 0
    assert "rows read (sampled): +/-" in capsys.readouterr().out


def test_measured_figures_are_used_and_named(tmp_path, capsys, tiny_model):
    spec_path = write_spec(tmp_path, tiny_model, rows=40)
    spec = load_spec(spec_path)
    engine_facts.remember(spec.model, 0.0, {
        "on": {"cpu-2vcpu": {"tokens_per_second": 400.0, "start_seconds": 5.0, "engines": 2, "run_id": "r1"}},
        "output_ratio": engine_facts.output_ratio(250, 1000, "r1")}, "r1")
    est = estimate_json(capsys, spec_path, "--instance-type", "cpu-2vcpu")
    assert est["work"]["output_ratio"] == 0.25
    assert est["work"]["output_tokens"] == round(40 * 64 * 0.25)
    assert "measured: run r1" in est["work"]["output_ratio_source"]
    on_demand = next(o for o in est["options"] if o["market"] == "on_demand")
    assert on_demand["measured"] and on_demand["tokens_per_second"] == 400.0
    assert on_demand["seconds"] == pytest.approx(5.0 + 640 / 400.0)
    assert on_demand["usd"] == pytest.approx(0.0816 * on_demand["seconds"] / 3600)
    assert {o["instance_type"] for o in est["options"]} == {"cpu-2vcpu"}


def test_a_run_keeps_its_speed_per_instance_type_and_its_output_ratio(tmp_path, tiny_model):
    from pipelines.planning.units import Unit
    from pipelines.run import RunSummary, _output_ratio

    spec = load_spec(write_spec(tmp_path, tiny_model))
    actors = {f"a{i}": {"run_id": "r2", "instance_type": "g6.xlarge", "compile": {"enforce_eager": True,
                        "engine_start_seconds": 30.0 + i}, "engine": {"busy_seconds": 10.0,
                                                                      "completion_tokens": 1000 * (i + 1)}}
              for i in range(2)}
    pending = [Unit("u0", "p", 0, 10, decode_tokens=640), Unit("u1", "p", 10, 20, decode_tokens=640)]
    summary = RunSummary(units_run=2, completion_tokens=300, reused_completion_tokens=20)
    ratio = _output_ratio(spec, pending, summary, None, "r2")
    engine_facts.remember_run(spec, actors, "r2", ratio=ratio)
    kept = engine_facts.lookup(spec.model, 0.0)
    assert kept["on"]["g6.xlarge"] == {"tokens_per_second": 150.0, "engines": 2, "start_seconds": 31.0,
                                       "run_id": "r2"}
    assert kept["output_ratio"]["ratio"] == 320 / 1280
    assert _output_ratio(spec, pending, RunSummary(units_run=1), None, "r2") is None  # not every unit: none


def test_the_deadline_picks_the_cheapest_that_meets_it_or_says_none_does(tmp_path, capsys, tiny_model):
    spec = write_spec(tmp_path, tiny_model, rows=40, sampling={"max_tokens": 20000}, compute={"deadline": "5m"})
    est = estimate_json(capsys, spec)
    rec = est["recommendation"]
    meets = [o for o in est["options"] if o["seconds"] <= 5 * 60]
    assert rec["instance_type"] == meets[0]["instance_type"] and rec["market"] == meets[0]["market"]
    assert rec["saves_usd"] == pytest.approx(meets[1]["usd"] - meets[0]["usd"])
    assert min(o["usd"] for o in est["options"]) < meets[0]["usd"]  # the cheapest overall is too slow
    rec = estimate_json(capsys, spec, "--by", "1s")["recommendation"]
    assert rec["instance_type"] is None and "no option meets the deadline '1s'" in rec["says"]


@pytest.mark.parametrize("args, message", [
    (["--reference", "gpt-9"], "no batch price for reference model 'gpt-9'; known: "),
    (["--instance-type", "g7.mega"], "no price for instance type 'g7.mega'; known: "),
    (["--by", "6am"], "--by: deadline '6am' is neither"),
    (["--set", "input.kind=openai_batch"], "input.kind openai_batch: the estimate reads Parquet inputs only"),
])
def test_unknown_names_are_refused_by_name(tmp_path, capsys, tiny_model, args, message):
    spec = write_spec(tmp_path, tiny_model, rows=4)
    assert main(["estimate", str(spec), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def run_by_hand(store, plan, spec) -> None:
    """One invocation as an engine actor records it: run record, actor, each unit through the
    unit protocol (a fake generate: 2 prompt and 3 output tokens a row), run ended."""
    import time

    from pipelines.store.records import Records
    from pipelines.unit.protocol import UnitContext, UnitProtocol
    from tests.test_compact import NODE
    from tests.test_unit_protocol import FakeGenerate, unit_rows

    records, t0 = Records(store), time.time() - 100
    records.run_record("run-1", {"started_at": t0, "ended_at": None, "stopped": None})
    records.actor_started("actor-1", {"run_id": "run-1", "started_at": t0, "loaded_at": t0 + 3, "model": "m", **NODE})
    records.actor_beat("actor-1", {"time": time.time()})
    context = UnitContext(spec.model_copy(update={"cache": spec.cache.model_copy(update={"dedup": False})}),
                          fingerprint=plan.fingerprint, run_id="run-1", actor_id="actor-1", node_id="n1")
    protocol = UnitProtocol(context, FakeGenerate(), store=store)
    for unit in plan.units:
        assert protocol.run(unit.unit_id, unit_rows()).committed
    records.run_record("run-1", {"started_at": t0, "ended_at": time.time(), "stopped": None})


def test_report_checks_the_estimate_against_the_run(tmp_path, capsys, tiny_model):
    from pipelines.run import prepare
    from pipelines.store.ledger import compute_ledger

    spec_path = write_spec(tmp_path, tiny_model, rows=40, cost={"instance_type": "cpu-2vcpu", "market": "spot"})
    est_file = tmp_path / "estimate.json"
    est_file.write_text(json.dumps(estimate_json(capsys, spec_path)))
    store, plan = prepare(load_spec(spec_path))
    run_by_hand(store, plan, load_spec(spec_path))
    ledger = compute_ledger(store).summary
    assert ledger.input_tokens > 0 and ledger.total_usd > 0

    assert main(["report", str(tmp_path / "out"), "--json", "--estimate", str(est_file)]) == 0
    check = json.loads(capsys.readouterr().out)["estimate"]
    est = json.loads(est_file.read_text())
    option = next(o for o in est["options"] if (o["instance_type"], o["market"]) == ("cpu-2vcpu", "spot"))
    assert (check["instance_type"], check["market"]) == ("cpu-2vcpu", "spot")
    assert check["input_tokens"] == {"estimated": est["work"]["engine_prompt_tokens"], "actual": ledger.input_tokens,
                                     "error": est["work"]["engine_prompt_tokens"] / ledger.input_tokens - 1}
    assert check["usd"]["estimated"] == option["usd"] and check["usd"]["actual"] == ledger.total_usd
    assert check["seconds"]["actual"] > 0

    assert main(["report", str(tmp_path / "out"), "--estimate", str(est_file)]) == 0
    assert "estimated against actual (cpu-2vcpu spot):" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text("{}")
    assert main(["report", str(tmp_path / "out"), "--estimate", str(tmp_path / "bad.json")]) == 2
    assert f"estimate file {tmp_path / 'bad.json'}: field work is missing" in capsys.readouterr().err


def test_an_output_holding_another_run_is_refused_as_run_refuses_it(tmp_path, capsys, tiny_model):
    from pipelines.run import prepare

    spec_path = write_spec(tmp_path, tiny_model, rows=8)
    prepare(load_spec(spec_path))
    before = snapshot(tmp_path / "out")
    assert main(["estimate", str(spec_path), "--set", "sampling.max_tokens=32"]) == 2
    assert f"output path {tmp_path / 'out'} holds another run's results" in capsys.readouterr().err
    assert snapshot(tmp_path / "out") == before
    assert main(["estimate", str(spec_path), "--set", "sampling.max_tokens=32", "--output",
                 str(tmp_path / "elsewhere")]) == 0


@pytest.mark.s3
def test_a_url_model_is_estimated_from_its_tokenizer_files_without_its_weights(tmp_path, capsys, monkeypatch,
                                                                               tiny_model, s3_server):
    """A 70B model's folder is ~140 GB: the estimate fetches its tokenizer, config and chat
    template only, and counts the same tokens as the model's own folder."""
    import uuid

    import s3fs

    url = f"s3://spotbatch/models-{uuid.uuid4().hex[:8]}/tiny"
    fs = s3fs.S3FileSystem(**s3_server)
    fs.put(str(tiny_model), url, recursive=True)
    monkeypatch.setenv("SPOTBATCH_MODELS", str(tmp_path / "node-cache"))
    local = estimate_json(capsys, write_spec(tmp_path / "a", tiny_model))["work"]
    spec = write_spec(tmp_path / "b", tiny_model)
    data = yaml.safe_load(spec.read_text())
    data["model"].update(name=url, storage_options=s3_server)
    spec.write_text(yaml.safe_dump(data))
    remote = estimate_json(capsys, spec)["work"]
    assert remote["prompt_tokens"] == local["prompt_tokens"] > 0
    fetched = {p.name for p in (tmp_path / "node-cache").rglob("*") if p.is_file()}
    assert "tokenizer.json" in fetched and "chat_template.jinja" in fetched
    assert not any(name.endswith(".safetensors") for name in fetched), fetched


def test_a_model_urls_password_never_reaches_the_estimate(tmp_path):
    """The speed's source names the model when the catalog's figure is for another one."""
    from pipelines.estimate.options import engine_speed
    from pipelines.spec import PipelineSpec

    spec = PipelineSpec.model_validate({"input": {"paths": "x.parquet", "prompt_column": "p"},
                                        "output": {"path": str(tmp_path / "out")},
                                        "model": {"name": "ftp://user:Secret-Pw-123@host/models/m"}})
    entry = {"engine_tokens_per_second": 95.0, "engine_tokens_per_second_source": "measured",
             "engine_figures_model": "smollm2-135m", "engine_start_seconds": 27.0}
    speed = engine_speed(spec, "cpu-2vcpu", entry, 0)
    assert "Secret-Pw-123" not in speed.source and "guess for" in speed.source


def test_an_embedding_run_counts_its_input_tokens_only_and_prices_no_output(tmp_path, capsys, minilm):
    from transformers import AutoTokenizer

    texts = [f"a passage about spot nodes and batches, number {i % 30}" for i in range(40)]  # 10 repeated
    write_input(tmp_path / "in", 40, text=lambda i: texts[i])
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"task": "embed", "model": {"name": "all-minilm-l6-v2"},
                                    "input": {"paths": str(tmp_path / "in"), "prompt_column": "text"},
                                    "output": {"path": str(tmp_path / "out")}}))
    est = estimate_json(capsys, spec, "--reference", "gpt-4o-mini")
    tok = AutoTokenizer.from_pretrained(str(minilm))
    counts = [len(tok.encode(t, add_special_tokens=True)) for t in texts]  # no chat template: the text as it is
    work = est["work"]
    assert work["prompt_tokens"] == sum(counts) and work["duplicate_rows"] == 10
    assert work["engine_prompt_tokens"] == sum(counts[:30])
    assert work["allowed_output_tokens"] == 0 and work["output_tokens"] == 0
    ref = est["references"][0]
    assert ref["usd"] == pytest.approx(ref["usd_per_1m_input_tokens"] * sum(counts) / 1e6)  # input only
    assert est["options"] == [] and "no embedding speed is known" in est["left_out"][0]
    assert not (tmp_path / "out").exists()


def test_tool_rows_count_their_tools_as_the_chat_template_renders_them(tmp_path, capsys, smollm2):
    """The template shows the tools to the model, so they are prompt tokens: the run's tools, and
    a row's own tools and template variables (its sampling column)."""
    from transformers import AutoTokenizer

    from tests.test_tools_reasoning import TEMPLATE, TOOLS

    (tmp_path / "in").mkdir()
    own = {"tools": TOOLS[1:], "tool_choice": "none", "chat_template_kwargs": {"enable_thinking": False}}
    pq.write_table(pa.table({"id": [1, 2], "text": ["Weather in Oslo?", "What time is it?"],
                             "sampling": [None, json.dumps(own)]}),
                   tmp_path / "in" / "part-0.parquet")
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "input": {"paths": str(tmp_path / "in"), "prompt_column": "text", "sampling_column": "sampling"},
        "model": {"name": str(smollm2), "max_model_len": 2048, "chat_template": TEMPLATE},
        "sampling": {"max_tokens": 8, "tools": TOOLS, "tool_choice": "none"},
        "output": {"path": str(tmp_path / "out")}}))
    tok = AutoTokenizer.from_pretrained(str(smollm2))

    def count(text: str, **variables) -> int:
        return len(tok.apply_chat_template([{"role": "user", "content": text}], chat_template=TEMPLATE,
                                           add_generation_prompt=True, tokenize=True, return_dict=False, **variables))

    expected = count("Weather in Oslo?", tools=TOOLS) + count("What time is it?", tools=TOOLS[1:],
                                                              enable_thinking=False)
    assert estimate_json(capsys, spec)["work"]["prompt_tokens"] == expected
