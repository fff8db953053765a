"""A thinking budget (issue 33): Anthropic's thinking {type: enabled, budget_tokens} and vLLM's own
thinking_token_budget reach vLLM's SamplingParams for the row that asks, where the model has a
reasoning parser; thinking {type: disabled} closes the template's thinking; what cannot be honoured
is refused by file, line and field before any engine starts. Ray-free: the engine's side is in
tests/test_tools_reasoning_engine.py."""

from __future__ import annotations

import json

import pytest

from operators.engine_params import sampling_params
from operators.tokens import PromptForm, prompt_token_ids
from pipelines.formats.batch_files import resolve_input
from pipelines.spec import PipelineSpec, validate_spec
from spotbatch.errors import SpecError
from tests.helpers import spotbatch, write_spec
from tests.test_tools_reasoning import TEMPLATE
from tests.test_tools_refusals import batch_spec, chat_line, parquet_spec, read_errors
from tests.test_tools_refusals import refused_before_anything_is_written as refused

PARSER = {"reasoning_parser": "qwen3"}
AT_LEAST = r"field params.thinking.budget_tokens must be an integer of at least 1024"


def anthropic_line(custom_id: str = "a", max_tokens: int = 4096, **params) -> dict:
    return {"custom_id": custom_id, "params": {"model": "m", "max_tokens": max_tokens,
                                               "messages": [{"role": "user", "content": "What is 2 + 2?"}], **params}}


def row_samplings(spec) -> list[dict]:
    """Each request's sampling as the read stage gives it to the engine (its row's SAMPLING column)."""
    from pipelines.estimate.work import model_sources
    from pipelines.planning.inputs import list_shards
    from pipelines.planning.units import make_plan
    from pipelines.stream.unit_rows import SAMPLING, unit_rows

    spec = resolve_input(spec)
    plan = make_plan(spec, list_shards(spec.input), model_sources(spec))
    return [json.loads(s or "{}") for u in plan.units for s in unit_rows(u.descriptor(), spec).column(SAMPLING)
            .to_pylist()]


def test_anthropic_thinking_enabled_is_the_rows_thinking_budget_and_disabled_closes_the_thinking(tmp_path, smollm2):
    from transformers import AutoTokenizer

    lines = [anthropic_line("budget", thinking={"type": "enabled", "budget_tokens": 2000}),
             anthropic_line("off", thinking={"type": "disabled"}), anthropic_line("plain")]
    budget, off, plain = row_samplings(batch_spec(tmp_path, "anthropic_batch", lines, **PARSER))
    assert sampling_params(budget).thinking_token_budget == 2000
    assert sampling_params(plain).thinking_token_budget is None and sampling_params(off).thinking_token_budget is None
    # disabled: the template opens no thinking (vLLM's server's reasoning_effort none: enable_thinking false)
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2))
    ask = json.dumps([{"role": "user", "content": "What is 2 + 2?"}])
    closed = tokenizer.decode(prompt_token_ids(tokenizer, ask, PromptForm(None, "messages"), TEMPLATE,
                                               off["chat_template_kwargs"]))
    assert closed.endswith("<|im_start|>assistant\n") and "<think>" not in closed


@pytest.mark.parametrize("thinking, named", [
    ({"type": "adaptive"}, r"field params.thinking: type adaptive is not honoured here"),
    ({"type": "deep"}, r"field params.thinking must be \{type: enabled, budget_tokens\} or \{type: disabled\}"),
    ("on", r"field params.thinking must be \{type: enabled"),
    ({"type": "enabled"}, r"field params.thinking.budget_tokens must be an integer of at least 1024 \(as at "
                          r"Anthropic\), got null"),
    ({"type": "enabled", "budget_tokens": 1023}, AT_LEAST),
    ({"type": "enabled", "budget_tokens": 2048.0}, AT_LEAST),
    ({"type": "enabled", "budget_tokens": 4096}, r"field params.thinking.budget_tokens must be less than "
                                                 r"params.max_tokens \(as at Anthropic\), got 4096 with max_tokens "
                                                 r"4096"),
    ({"type": "enabled", "budget_tokens": 1024, "display": "omitted"}, r"field params.thinking.display is not "
                                                                       r"honoured here"),
])
def test_anthropic_thinking_that_cannot_be_honoured_is_refused_by_line_and_field(tmp_path, thinking, named):
    lines = [anthropic_line("a"), anthropic_line("b", thinking=thinking)]
    refused(tmp_path, batch_spec(tmp_path, "anthropic_batch", lines, **PARSER),
                                       r"batch.jsonl line 2: " + named)


def test_a_thinking_budget_on_a_model_without_a_reasoning_parser_is_refused_by_the_cli(tmp_path):
    batch = tmp_path / "batch.jsonl"
    batch.write_text(json.dumps(anthropic_line(thinking={"type": "enabled", "budget_tokens": 1024})) + "\n")
    spec = write_spec(tmp_path / "spec.yaml", {"input": {"kind": "anthropic_batch", "paths": str(batch)},
                                               "model": {"name": "tiny-random"},
                                               "output": {"path": str(tmp_path / "o")}})
    proc = spotbatch("run", str(spec))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert ("batch.jsonl line 1: field params.thinking cannot be honoured: the model has no reasoning_parser"
            in proc.stderr), proc.stderr
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").rglob("*.parquet"))


def test_an_openai_lines_thinking_token_budget_is_vllms_extension_with_the_same_checks(tmp_path):
    lines = [chat_line("a", thinking_token_budget=16), chat_line("b", thinking_token_budget=-1), chat_line("c")]
    read, other, bad = (tmp_path / name for name in ("read", "other", "bad"))
    for folder in (read, other, bad):
        folder.mkdir()
    budget, unlimited, plain = row_samplings(batch_spec(read, "openai_batch", lines, **PARSER))
    assert sampling_params(budget).thinking_token_budget == 16
    assert sampling_params(unlimited).thinking_token_budget is None and "thinking_token_budget" not in plain
    refused(other, batch_spec(other, "openai_batch", lines[:1]),
                                       r"batch.jsonl line 1: field body.thinking_token_budget cannot be honoured: "
                                       r"the model has no reasoning_parser")
    # the request's own bad value: its row's bad_input record, and the others run
    errors = read_errors(batch_spec(bad, "openai_batch", [chat_line("a"), chat_line(
        "b", thinking_token_budget=-2), chat_line("c", thinking_token_budget="8")], **PARSER))
    assert errors[0] is None and "thinking_token_budget must be >= 0" in errors[1], errors
    assert "thinking_token_budget" in errors[2], errors


def test_a_specs_thinking_token_budget_needs_a_reasoning_parser_and_changes_the_sampling_identity():
    with pytest.raises(SpecError, match=r"sampling.thinking_token_budget needs model.reasoning_parser"):
        parquet_spec({}, {"thinking_token_budget": 64})
    spec = parquet_spec(PARSER, {"thinking_token_budget": 64})
    assert spec.sampling.identity()["thinking_token_budget"] == 64
    assert "thinking_token_budget" not in parquet_spec(PARSER, {}).sampling.identity()  # earlier runs still match
    routed = {"input": {"paths": "in/", "prompt_column": "text"}, "route": {"column": "m"}, "output": {"path": "out/"},
              "models": {"a": {"name": "smollm2-135m", **PARSER}, "b": {"name": "smollm2-135m"}},
              "sampling": {"thinking_token_budget": 64}}
    with pytest.raises(SpecError, match=r"needs models.b.reasoning_parser"):
        validate_spec(routed)


def test_thinking_disabled_keeps_the_specs_own_template_variables(tmp_path):
    """{type: disabled} adds enable_thinking: false to the template's variables, as vLLM's server
    adds it beside a request's own; the spec's sampling.chat_template_kwargs are not dropped."""
    batch = tmp_path / "batch.jsonl"
    batch.write_text(json.dumps(anthropic_line("off", thinking={"type": "disabled"})) + "\n")
    spec = PipelineSpec(input={"kind": "anthropic_batch", "paths": str(batch)},
                        model={"name": "tiny-random", **PARSER}, output={"path": str(tmp_path / "out")},
                        sampling={"chat_template_kwargs": {"custom_flag": True}})
    (off,) = row_samplings(spec)
    assert off["chat_template_kwargs"] == {"custom_flag": True, "enable_thinking": False}


def test_a_parquet_rows_own_thinking_token_budget_without_a_reasoning_parser_is_its_rows_error(tmp_path):
    """A row's own thinking_token_budget (input.sampling_column) on a model with no reasoning
    parser: that row's bad_input record, naming the field the model lacks, before any engine
    starts (vLLM would refuse it by its CLI flag once the engine ran); the other rows go on."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"id": [1, 2, 3], "text": ["a", "b", "c"], "m": ["a", "b", "b"],
                             "params": ['{"thinking_token_budget": 16}', '{"thinking_token_budget": 16}',
                                        '{"temperature": 0.5}']}), tmp_path / "in" / "p.parquet")
    base = {"input": {"paths": str(tmp_path / "in"), "prompt_column": "text", "sampling_column": "params"},
            "output": {"path": str(tmp_path / "out")}}
    errors = read_errors(validate_spec({**base, "model": {"name": "tiny-random"}}))
    assert errors == ["params: thinking_token_budget needs model.reasoning_parser (vLLM ends a thinking it "
                      "knows by its parser's markers)"] * 2 + [None], errors
    routed = validate_spec({**base, "route": {"column": "m"},
                            "models": {"a": {"name": "tiny-random", **PARSER}, "b": {"name": "tiny-random"}}})
    assert sorted(read_errors(routed), key=str) == [None, None, (
        "params: thinking_token_budget needs models.b.reasoning_parser (vLLM ends a thinking it knows by its "
        "parser's markers)")], read_errors(routed)


def test_a_parquet_rows_own_n_or_tools_its_model_cannot_honour_is_its_rows_error(tmp_path):
    """The other two per-request checks of a batch file, for a Parquet row's own sampling: n > 1
    on a model with a reasoning parser, and tools with tool_choice auto on a model without a tool
    parser, were passed to the engine (n: 2 kept one choice's reasoning; auto ran unparsed)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"id": [1, 2, 3], "text": ["a", "b", "c"],
                             "params": ['{"n": 2}', json.dumps({"tools": [tool]}), '{"temperature": 0.5}']}),
                   tmp_path / "in" / "p.parquet")
    spec = validate_spec({"input": {"paths": str(tmp_path / "in"), "prompt_column": "text",
                                    "sampling_column": "params"},
                          "output": {"path": str(tmp_path / "out")}, "model": {"name": "tiny-random", **PARSER}})
    errors = read_errors(spec)
    assert errors[0] == "params: n: 2 cannot be honoured: model.reasoning_parser takes n: 1 (one reasoning a row)"
    assert errors[1].startswith("params: tools cannot be honoured: tool_choice auto (OpenAI's default when tools "
                                "are given) needs model.tool_parser"), errors
    assert errors[2] is None
