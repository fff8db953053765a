"""A run whose model is a hub repo id, served from a hub cache laid out by hand with
HF_HUB_OFFLINE set by the user (as on an air-gapped cluster), with its own chat template and
template variables (real engine, a run in a process of its own, as users run it)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from tests.conftest import write_shards
from tests.helpers import ROOT, hub_cache, spotbatch_cmd, spotbatch_env, write_spec

pytestmark = pytest.mark.engine

TEMPLATE = ("{% if verbose %}the long preamble of a verbose template, to be seen in the token count. {% endif %}"
            "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "<|im_start|>assistant\n")


def test_a_hub_model_with_its_own_chat_template(tiny_model, tmp_path):
    import subprocess

    from transformers import AutoTokenizer

    commit = "c" * 40
    snapshot = hub_cache(tmp_path / "hf", tiny_model, "acme/tiny-chat", commit)
    (tmp_path / "chat.jinja").write_text(TEMPLATE)
    write_shards(tmp_path / "in", [{"id": i, "text": f"question {i}"} for i in range(6)], 2)
    spec = write_spec(tmp_path / "spec.yaml", {
        "input": {"paths": str(tmp_path / "in"), "prompt_column": "text"},
        "model": {"name": "acme/tiny-chat", "revision": "main", "chat_template": str(tmp_path / "chat.jinja"),
                  "chat_template_kwargs": {"verbose": True}, "max_model_len": 256, "enforce_eager": True},
        "sampling": {"max_tokens": 4},
        "compute": {"engine_threads": 2},
        "output": {"path": str(tmp_path / "out")},
    })
    env = {**spotbatch_env(), "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1",
           "HF_TOKEN": "hf_secretvalue_not_to_be_written"}
    env.pop("HF_HUB_CACHE", None)
    proc = subprocess.run(spotbatch_cmd("run", str(spec)), cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    manifest = (tmp_path / "out" / "_spotbatch" / "manifest.json").read_text()
    assert json.loads(manifest)["models"][""]["pin"] == {"repo": "acme/tiny-chat", "commit": commit}
    written = [p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert not any(b"hf_secretvalue_not_to_be_written" in data for data in written + [proc.stdout.encode(),
                                                                                      proc.stderr.encode()])

    tok = AutoTokenizer.from_pretrained(snapshot)

    def tokens(text: str, verbose: bool) -> int:
        rendered = tok.apply_chat_template([{"role": "user", "content": text}], chat_template=TEMPLATE,
                                           tokenize=False, add_generation_prompt=True, verbose=verbose)
        return len(tok.encode(rendered, add_special_tokens=False))

    rows = pq.read_table(tmp_path / "out").to_pylist()
    assert len(rows) == 6 and all(r["error"] is None for r in rows)
    for row in rows:
        text = f"question {row['id']}"
        assert tokens(text, verbose=True) != tokens(text, verbose=False)  # the variable decides the prompt
        assert row["prompt_tokens"] == tokens(text, verbose=True)  # the user's template, with their variable


def test_every_engine_of_a_run_loads_the_dtype_its_first_engine_loaded(tiny_model, tmp_path, ray_cluster):
    """`auto` is float32 on a CPU without bf16 and bf16 elsewhere: a resume on other hardware
    loads what the run began with, so one output never mixes two dtypes."""
    from operators.engine import effective_dtype
    from pipelines.run import prepare, run
    from pipelines.spec import PipelineSpec
    from pipelines.store.output import OutputStore
    from pipelines.store.records import Records

    write_shards(tmp_path / "in", [{"id": i, "text": f"q {i}"} for i in range(4)], 1)
    spec = PipelineSpec(input={"paths": str(tmp_path / "in"), "prompt_column": "text"},
                        model={"name": str(tiny_model), "max_model_len": 256, "enforce_eager": True},
                        sampling={"max_tokens": 2}, output={"path": str(tmp_path / "out")})
    here = "float32" if effective_dtype("auto", on_cpu=True) == "float32" else "bfloat16"  # the model's own
    began_with = "bfloat16" if here == "float32" else "float32"  # what another machine's first engine loaded
    store, _ = prepare(spec)
    records = Records(store)
    assert records.pin_loaded_dtype("model", began_with, "actor-elsewhere") == began_with
    assert records.pin_loaded_dtype("model", here, "actor-late") == began_with  # the first one stays
    assert run(spec, address=ray_cluster).finished
    (actor,) = Records(OutputStore(str(tmp_path / "out"))).actors().values()
    assert actor["loaded_dtype"] == began_with and actor["model_source"]["dtype_from_run"] is True
