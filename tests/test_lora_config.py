"""LoRA adapters without an engine (issue 33): the engine's LoRA settings come from the adapters
themselves, the same for a GPU engine as for a CPU one; a row's adapter is read from its column
(an unknown name is that row's error record) and keys its request with the adapter's pinned weights."""

from __future__ import annotations

import json

import pytest

from cluster.models import ModelSource
from pipelines.engine.start import EngineLoad, engine_config
from pipelines.planning.inputs import list_shards
from pipelines.planning.plan_run import identify_models
from pipelines.planning.units import plan_units
from pipelines.spec import PipelineSpec
from pipelines.stream.unit_rows import ERROR, PROMPT, SAMPLING, unit_rows
from pipelines.unit.requests import UnitRequests, adapter_cache_keys, model_cache_key
from tests.conftest import write_shards
from tests.lora import make_adapter


@pytest.fixture(scope="module")
def loras(tiny_model):
    return {"sql": make_adapter(tiny_model, seed=1), "code": make_adapter(tiny_model, seed=2, rank=12)}


def spec_for(tmp_path, base, adapters, **compute) -> PipelineSpec:
    return PipelineSpec.model_validate({
        "input": {"paths": str(tmp_path / "in"), "prompt_column": "text", "adapter_column": "lora"},
        "model": {"name": str(base), "adapters": {k: str(v) for k, v in adapters.items()}},
        "output": {"path": str(tmp_path / "out")}, "compute": compute})


@pytest.mark.parametrize("compute", [{}, {"gpus_per_actor": 1}], ids=["cpu", "gpu"])
def test_the_engines_lora_settings_come_from_the_adapters(tiny_model, loras, tmp_path, compute):
    spec = spec_for(tmp_path, tiny_model, loras, **compute)
    sources = identify_models(spec)
    load = EngineLoad(spec, ModelSource.from_json(sources[""]), "model", 1, True, sources)
    config = engine_config(load, str(tiny_model))
    kwargs = config.llm_kwargs()
    # ranks 8 and 12: slots of 16, the least vLLM accepts that holds both; both adapters on the device,
    # and the one that serves the base model's rows
    assert {k: kwargs[k] for k in ("enable_lora", "max_loras", "max_cpu_loras", "max_lora_rank")} == {
        "enable_lora": True, "max_loras": 3, "max_cpu_loras": 3, "max_lora_rank": 16}
    assert {k: v for k, v in config.adapters.items() if k != "(base)"} == {n: str(p) for n, p in loras.items()}
    assert config.lora_ids() == {"(base)": 1, "code": 2, "sql": 3}  # by name: the same in every engine of a run


def test_max_lora_rank_holds_an_adapters_rank_pattern(tiny_model, loras, tmp_path):
    """vLLM checks max(r, *rank_pattern) against max_lora_rank when it loads an adapter."""
    import shutil

    folder = tmp_path / "patterned"
    shutil.copytree(loras["sql"], folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "rank_pattern": {"v_proj": 32}}))
    spec = spec_for(tmp_path, tiny_model, {"sql": folder})
    sources = identify_models(spec)
    kwargs = engine_config(EngineLoad(spec, ModelSource.from_json(sources[""]), "model", 1, True, sources),
                           str(tiny_model)).llm_kwargs()
    assert kwargs["max_lora_rank"] == 32


def test_the_base_models_rows_get_an_adapter_that_adds_exactly_nothing(tiny_model, loras, tmp_path):
    from safetensors.torch import load_file

    spec = spec_for(tmp_path, tiny_model, loras)
    sources = identify_models(spec)
    config = engine_config(EngineLoad(spec, ModelSource.from_json(sources[""]), "model", 1, True, sources),
                           str(tiny_model))
    null = load_file(f"{config.adapters['(base)']}/adapter_model.safetensors")
    like = load_file(f"{config.adapters['code']}/adapter_model.safetensors")
    assert null.keys() == like.keys() and any(".lora_B." in k for k in null)
    assert all(not v.any() for k, v in null.items() if ".lora_B." in k)  # B = 0: x A B adds 0


def test_the_null_adapter_zeroes_an_embedding_loras_factors_too(tiny_model, tmp_path):
    """peft's LoRA of embed_tokens is lora_embedding_A/B (no `.lora_B.`), which vLLM loads: zeroing only
    lora_B left the base model's rows answered by the embedding LoRA."""
    from safetensors.torch import load_file

    emb = make_adapter(tiny_model, seed=3, targets=("embed_tokens", "q_proj"))
    spec = spec_for(tmp_path, tiny_model, {"emb": emb})
    sources = identify_models(spec)
    config = engine_config(EngineLoad(spec, ModelSource.from_json(sources[""]), "model", 1, True, sources),
                           str(tiny_model))
    null = load_file(f"{config.adapters['(base)']}/adapter_model.safetensors")
    assert any(k.endswith("lora_embedding_B") for k in null) and any(".lora_B." in k for k in null)
    nonzero_b = [k for k, v in null.items() if ("lora_B" in k or "lora_embedding_B" in k) and v.any()]
    assert nonzero_b == []  # every B factor zero: x A B adds 0 on every module


@pytest.mark.parametrize("weights", ["adapter_model.bin", "adapter_model.pt"])
def test_an_adapter_saved_as_bin_only_gets_its_null_adapter_too(tiny_model, loras, tmp_path, weights):
    """Planning takes a folder with only adapter_model.bin (peft's safe_serialization=False) or
    adapter_model.pt (vLLM 0.32's lora_model.py loads either), so the null adapter is made from it
    too, not from an adapter_model.safetensors that is not there. A .pt adapter was refused."""
    import shutil

    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "torch-lora"
    folder.mkdir()
    shutil.copy(loras["sql"] / "adapter_config.json", folder)
    torch.save(load_file(str(loras["sql"] / "adapter_model.safetensors")), folder / weights)
    spec = spec_for(tmp_path, tiny_model, {"sql": folder})
    sources = identify_models(spec)
    config = engine_config(EngineLoad(spec, ModelSource.from_json(sources[""]), "model", 1, True, sources),
                           str(tiny_model))
    null = load_file(f"{config.adapters['(base)']}/adapter_model.safetensors")
    assert null.keys() == load_file(str(loras["sql"] / "adapter_model.safetensors")).keys()
    assert not any(v.any() for v in null.values())


def test_engine_kwargs_still_win_and_a_run_without_adapters_has_no_lora(tiny_model, loras, tmp_path):
    spec = spec_for(tmp_path, tiny_model, {"sql": loras["sql"]})
    spec.model.engine_kwargs = {"max_cpu_loras": 4}
    sources = identify_models(spec)
    kwargs = engine_config(EngineLoad(spec, ModelSource.from_json(sources[""]), "model", 1, True, sources),
                           str(tiny_model)).llm_kwargs()
    assert (kwargs["max_loras"], kwargs["max_cpu_loras"], kwargs["max_lora_rank"]) == (2, 4, 8)
    plain = PipelineSpec.model_validate({"input": {"paths": "x", "prompt_column": "t"}, "output": {"path": "o"},
                                         "model": {"name": str(tiny_model)}})
    kwargs = engine_config(EngineLoad(plain, ModelSource("local", str(tiny_model)), "model", 1, True),
                           str(tiny_model)).llm_kwargs()
    assert not {"enable_lora", "max_loras", "max_lora_rank"} & kwargs.keys()


def test_a_users_max_loras_above_the_adapters_raises_max_cpu_loras_with_it(tiny_model, loras, tmp_path):
    """vLLM refuses max_cpu_loras < max_loras: engine_kwargs' max_loras 6 with one adapter (and the
    base's) takes max_cpu_loras to 6, not 2."""
    spec = spec_for(tmp_path, tiny_model, {"sql": loras["sql"]})
    spec.model.engine_kwargs = {"max_loras": 6}
    sources = identify_models(spec)
    kwargs = engine_config(EngineLoad(spec, ModelSource.from_json(sources[""]), "model", 1, True, sources),
                           str(tiny_model)).llm_kwargs()
    assert (kwargs["max_loras"], kwargs["max_cpu_loras"]) == (6, 6)


def test_each_row_reads_its_adapter_and_an_unknown_one_is_that_rows_error(tiny_model, loras, tmp_path):
    names = ["sql", None, "code", "nope", str(tiny_model), 7]
    write_shards(tmp_path / "in", [{"id": i, "text": f"t{i}", "lora": json.dumps(n) if n == 7 else n}
                                   for i, n in enumerate(names)], 1)
    spec = spec_for(tmp_path, tiny_model, loras)
    unit = plan_units(list_shards(spec.input), 10**9, 16)[0]
    rows = unit_rows(unit.descriptor(), spec)
    samplings = [json.loads(s) if s else None for s in rows.column(SAMPLING).to_pylist()]
    assert [s and s["adapter"] for s in samplings] == ["sql", None, "code", None, None, None]
    assert samplings[0]["max_tokens"] == spec.sampling.max_tokens  # the run's sampling, with the adapter
    errors = rows.column(ERROR).to_pylist()
    assert errors[3] == "lora: no adapter 'nope' in model.adapters (defined: code, sql)"
    assert errors[5] == "lora: no adapter '7' in model.adapters (defined: code, sql)"
    assert [e is None for e in errors] == [True, True, True, False, True, False]
    assert rows.column(PROMPT).to_pylist()[3] is None


def test_a_rows_request_key_names_its_adapters_pinned_weights(tiny_model, loras, tmp_path):
    spec = spec_for(tmp_path, tiny_model, loras)
    spec.cache.dedup = True
    sources = identify_models(spec)
    keys_now = adapter_cache_keys({k: v for k, v in sources.items() if k.startswith("adapter:")})
    moved = {**sources["adapter:sql"], "pin": {"files": {"adapter_model.safetensors": [1, "other"]}}}
    keys_then = adapter_cache_keys({"adapter:sql": moved, "adapter:code": sources["adapter:code"]})
    base = spec.sampling.model_dump(mode="json")
    rows = [None, {**base, "adapter": "sql"}, {**base, "adapter": "code"}]

    def keys(adapter_keys):
        requests = UnitRequests(spec, None, model_cache_key(spec, sources[""]), adapter_keys)
        return requests.keys(["hi"] * 3, [None] * 3, rows)

    now, then = keys(keys_now), keys(keys_then)
    assert len(set(now)) == 3  # the base and each adapter: three requests, never one answer for all
    assert now[0] == then[0] and now[2] == then[2]  # the base's and code's answers are still good
    assert now[1] != then[1]  # sql's weights changed: its cached answers are not


def _batch_spec(tmp_path, base, adapters, lines, kind="openai_batch") -> PipelineSpec:
    path = tmp_path / "batch.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return PipelineSpec.model_validate({
        "input": {"kind": kind, "paths": str(path)}, "output": {"path": str(tmp_path / "out")},
        "model": {"name": str(base), "adapters": {k: str(v) for k, v in adapters.items()}}})


def _chat(custom_id: str, model: str) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}}


def test_a_batch_line_picks_its_adapter_by_its_model(tiny_model, loras, tmp_path):
    from pipelines.planning.plan_run import plan_run

    spec = _batch_spec(tmp_path, tiny_model, loras, [_chat("a", "sql"), _chat("b", str(tiny_model)),
                                                    _chat("c", "code")])
    resolved, _, plan = plan_run(spec)
    assert resolved.input.adapter_column == "model"
    unit = plan.units[0]
    rows = unit_rows(unit.descriptor(), resolved)
    adapters = [json.loads(s).get("adapter") if s else None for s in rows.column(SAMPLING).to_pylist()]
    assert adapters == ["sql", None, "code"] and rows.column(ERROR).to_pylist() == [None] * 3


@pytest.mark.parametrize("kind", ["openai_batch", "anthropic_batch"])
def test_a_batch_line_naming_no_adapter_is_refused_at_planning_by_file_line_and_field(tiny_model, loras, tmp_path,
                                                                                       kind):
    from pipelines.planning.plan_run import plan_run
    from spotbatch.errors import BatchFileError

    lines = [_chat("a", "sql"), _chat("b", "sqll")]
    if kind == "anthropic_batch":
        lines = [{"custom_id": x["custom_id"], "params": {k: v for k, v in x["body"].items()}} for x in lines]
    field = "params.model" if kind == "anthropic_batch" else "body.model"
    with pytest.raises(BatchFileError, match=rf"batch.jsonl line 2: {field} 'sqll' names no adapter of "
                                             rf"model.adapters \(code, sql\) and is not the base model"):
        plan_run(_batch_spec(tmp_path, tiny_model, loras, lines, kind))
    assert not (tmp_path / "out" / "_spotbatch" / "manifest.json").exists()
