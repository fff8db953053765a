"""LoRA adapters on the real engine (issue 33): one run of SmolLM2 with two adapters made by
peft, through the CLI on the session's Ray cluster. Rows of both adapters and of the base model
share one unit; each row's greedy answer is transformers+peft's with its adapter, token for
token; an unknown adapter is that row's error record; the report's per-adapter lines add up."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from transformers import AutoTokenizer

from operators.tokens import PromptForm, prompt_token_ids
from tests.conftest import write_shards
from tests.helpers import spotbatch, write_spec
from tests.lora import make_adapter, peft_greedy

pytestmark = pytest.mark.engine
PROMPTS = ["Name a colour.", "What colour is the sky?"]
MAX_TOKENS = 12


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, ray_cluster, smollm2):
    tmp = tmp_path_factory.mktemp("lora")
    adapters = {"sql": make_adapter(smollm2, seed=1), "code": make_adapter(smollm2, seed=2)}
    rows = [{"id": f"{name or 'base'}-{i}", "text": p, "lora": name}
            for name in (None, "sql", "code") for i, p in enumerate(PROMPTS)]
    rows += [{"id": "named-base", "text": PROMPTS[0], "lora": "smollm2-135m"},
             {"id": "unknown", "text": PROMPTS[0], "lora": "nope"}]
    write_shards(tmp / "in", rows, 1)
    spec = write_spec(tmp / "spec.yaml", {
        "input": {"paths": str(tmp / "in"), "prompt_column": "text", "adapter_column": "lora"},
        "model": {"name": "smollm2-135m", "dtype": "float32", "enforce_eager": True, "max_model_len": 512,
                  "adapters": {name: str(path) for name, path in adapters.items()}},
        "sampling": {"temperature": 0, "max_tokens": MAX_TOKENS},
        "compute": {"engine_threads": 2}, "output": {"path": str(tmp / "out")}})
    proc = spotbatch("run", str(spec), "--address", ray_cluster)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = spotbatch("report", str(tmp / "out"), "--json")
    assert report.returncode == 0, report.stderr[-2000:]
    table = pq.read_table(tmp / "out", columns=["id", "output", "completion_tokens", "error", "adapter",
                                                 "served_from"])
    results = {r["id"]: r for r in table.to_pylist()}
    return {"adapters": adapters, "results": results, "report": json.loads(report.stdout), "summary": proc.stdout,
            "units": len(list((tmp / "out").glob("*.parquet")))}


def test_each_rows_greedy_answer_is_transformers_and_pefts_with_its_adapter(lora_run, smollm2):
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2))
    results, adapters = lora_run["results"], lora_run["adapters"]
    assert lora_run["units"] == 1  # the rows of every adapter and of the base shared one unit
    for i, prompt in enumerate(PROMPTS):
        ids = prompt_token_ids(tokenizer, prompt, PromptForm(None, "chat"))
        outputs = {}
        for name in ("base", "sql", "code"):
            expected = peft_greedy(smollm2, adapters.get(name), ids, MAX_TOKENS)
            row = results[f"{name}-{i}"]
            assert row["error"] is None and row["adapter"] == (None if name == "base" else name)
            assert row["completion_tokens"] == len(expected), (name, row, tokenizer.decode(expected))
            assert row["output"] == tokenizer.decode(expected, skip_special_tokens=True), (name, prompt)
            outputs[name] = row["output"]
        assert len(set(outputs.values())) == 3, outputs  # each adapter changed the answer (measured: they do)
    named = results["named-base"]  # the base model's name picks the base model
    assert named["adapter"] is None and named["output"] == results["base-0"]["output"]


def test_an_unknown_adapter_is_that_rows_error_record(lora_run):
    row = lora_run["results"]["unknown"]
    assert row["output"] is None and row["adapter"] is None
    assert row["error"] == "lora: no adapter 'nope' in model.adapters (defined: code, sql)"


def test_the_reports_cost_lines_per_adapter_add_up_to_the_total(lora_run):
    report = lora_run["report"]
    lines = report["by_adapter"]
    assert set(lines) == {"(base)", "sql", "code"}
    assert sum(line["usd"] for line in lines.values()) == pytest.approx(report["total_usd"], rel=1e-9)
    assert sum(line["input_tokens"] for line in lines.values()) == report["input_tokens"]
    assert sum(line["output_tokens"] for line in lines.values()) == report["output_tokens"]
    results = lora_run["results"].values()
    for name, line in lines.items():
        # the engine's tokens: "named-base" asks what "base-0" asks, and is answered by it (a duplicate)
        mine = [r for r in results if (r["adapter"] or "(base)") == name and r["served_from"] == "engine"]
        assert line["output_tokens"] == sum(r["completion_tokens"] for r in mine) > 0
    assert "adapter sql: $" in lora_run["summary"]  # the run's own summary shows the lines too
