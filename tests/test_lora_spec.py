"""LoRA adapters at planning (issue 33): `model.adapters` found, checked against the base model
and pinned before anything is written; a missing or wrong adapter is refused naming its field, and
new weights at an adapter's path refuse the resume by name. No engine starts here."""

from __future__ import annotations

import json
import shutil

import pytest

from pipelines.run import prepare
from pipelines.spec import PipelineSpec, SpecError
from pipelines.store.output import OutputError
from spotbatch.errors import ModelNotFoundError
from tests.conftest import write_shards
from tests.helpers import hub_cache, spotbatch, write_spec
from tests.lora import make_adapter


@pytest.fixture(scope="module")
def tiny_lora(tiny_model):
    return make_adapter(tiny_model, seed=1)


def spec_for(tmp_path, base, adapters, **inp) -> PipelineSpec:
    if not (tmp_path / "in").exists():
        write_shards(tmp_path / "in", [{"id": i, "text": f"t{i}", "lora": "sql"} for i in range(4)], 1)
    return PipelineSpec.model_validate({
        "input": {"paths": str(tmp_path / "in"), "prompt_column": "text", **inp},
        "model": {"name": str(base), "adapters": adapters}, "output": {"path": str(tmp_path / "out")}})


def test_a_missing_adapter_folder_is_refused_by_the_cli_before_anything_is_written(tiny_model, tmp_path):
    spec = spec_for(tmp_path, tiny_model, {"sql": str(tmp_path / "no-such-lora")}, adapter_column="lora")
    write_spec(tmp_path / "spec.yaml", spec.model_dump(mode="json"))
    proc = spotbatch("run", str(tmp_path / "spec.yaml"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "model.adapters.sql" in proc.stderr and "no folder at" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("breakage, message", [
    (lambda d: (d / "adapter_config.json").unlink(), "holds no adapter_config.json"),
    (lambda d: _edit_config(d, peft_type="IA3"), "peft_type is 'IA3'; vLLM serves LORA adapters only"),
    (lambda d: _edit_config(d, r=0), "r must be a rank from 1 to 512, got 0"),
    (lambda d: _edit_config(d, target_modules=[]), "names no target_modules"),
    (lambda d: (d / "adapter_config.json").write_text("{not json"), "cannot read its adapter_config.json"),
    # what vLLM refuses only when an engine loads the adapter, mid-run: refused at planning by name
    (lambda d: _edit_config(d, use_dora=True), "use_dora is True: vLLM serves no DoRA"),
    (lambda d: _edit_config(d, lora_bias=True), "lora_bias is True: vLLM serves no LoRA bias"),
    (lambda d: _edit_config(d, bias="all"), "bias is 'all': vLLM serves LoRAs with bias 'none' only"),
    (lambda d: _edit_config(d, modules_to_save=["lm_head"]), r"modules_to_save is \['lm_head'\]"),
    (lambda d: _edit_config(d, init_lora_weights="pissa"), "init_lora_weights is 'pissa'"),
    (lambda d: _edit_config(d, rank_pattern={"v_proj": 1024}), "rank_pattern.v_proj must be a rank from 1 to 512"),
])
def test_a_bad_adapter_folder_is_refused_naming_the_adapter(tiny_model, tiny_lora, tmp_path, breakage, message):
    folder = tmp_path / "lora"
    shutil.copytree(tiny_lora, folder)
    breakage(folder)
    with pytest.raises(ModelNotFoundError, match=rf"model\.adapters\.sql: .*{message}"):
        prepare(spec_for(tmp_path, tiny_model, {"sql": str(folder)}))
    assert not (tmp_path / "out" / "_spotbatch" / "manifest.json").exists()


def _edit_config(folder, **fields) -> None:
    path = folder / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


def test_an_adapter_of_another_base_model_is_refused(smollm2, tiny_lora, tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"model\.adapters\.sql: adapter_model\.safetensors .* reads vectors "
                                                 r"of 64 numbers; the base model's are \[576, 1536\]"):
        prepare(spec_for(tmp_path, smollm2, {"sql": str(tiny_lora)}))


def test_an_adapter_reading_attention_or_expert_widths_is_accepted(tiny_model, tmp_path):
    """o_proj's LoRA reads num_attention_heads * head_dim numbers (2048 on Qwen3-0.6B, whose hidden
    size is 1024), an MoE expert's down_proj moe_intermediate_size: both the base model's, not another's."""
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file, save_file
    from transformers import AutoConfig, AutoModelForCausalLM

    base = tmp_path / "base"
    shutil.copytree(tiny_model, base)
    config = AutoConfig.from_pretrained(base)
    config.num_attention_heads, config.num_key_value_heads = 4, 4  # head_dim 64: attention 256 wide, hidden 64
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    lora = tmp_path / "lora"
    get_peft_model(model, LoraConfig(r=8, lora_alpha=8, target_modules=["o_proj", "down_proj"],
                                     init_lora_weights=False, task_type="CAUSAL_LM")).save_pretrained(lora)
    prepare(spec_for(tmp_path, base, {"sql": str(lora)}))  # o_proj reads 256 numbers: accepted

    # an MoE base: an expert's down_proj reads moe_intermediate_size numbers
    (base / "config.json").write_text(json.dumps({**json.loads((base / "config.json").read_text()),
                                                  "moe_intermediate_size": 96}))
    tensors = load_file(str(lora / "adapter_model.safetensors"))
    tensors["base_model.model.model.layers.0.mlp.experts.0.down_proj.lora_A.weight"] = torch.zeros(8, 96)
    save_file(tensors, str(lora / "adapter_model.safetensors"))
    prepare(spec_for(tmp_path / "moe", base, {"sql": str(lora)}))


@pytest.mark.parametrize("extra, key", [({"revision": "main"}, "revision"), ({"storage_options": {"anon": True}},
                                                                             "storage_options")])
def test_a_hub_or_url_field_on_a_local_adapter_is_refused_naming_the_adapters_field(tiny_model, tiny_lora, tmp_path,
                                                                                   extra, key):
    with pytest.raises(ModelNotFoundError, match=rf"model\.adapters\.sql\.{key} is for"):
        prepare(spec_for(tmp_path, tiny_model, {"sql": {"source": str(tiny_lora), **extra}}))


def test_adapter_names_and_columns_are_checked_in_the_spec(tiny_model, tmp_path):
    with pytest.raises(SpecError, match="input.adapter_column 'lora' names adapters, but model.adapters defines none"):
        spec_for(tmp_path, tiny_model, {}, adapter_column="lora")
    with pytest.raises(SpecError, match="is the base model's name"):
        spec_for(tmp_path, tiny_model, {str(tiny_model): "x"})
    with pytest.raises(SpecError, match="names may hold letters"):
        spec_for(tmp_path, tiny_model, {"a b": "x"})
    with pytest.raises(SpecError, match="model.adapters is for a run's single model"):
        PipelineSpec.model_validate({"input": {"paths": "x", "prompt_column": "t"}, "output": {"path": "o"},
                                     "model": {"adapters": {"sql": "x"}}, "models": {"a": {"name": "tiny-random"}},
                                     "route": {"column": "m"}})


def test_new_weights_at_an_adapters_path_refuse_the_resume_naming_it(tiny_model, tiny_lora, tmp_path):
    folder = tmp_path / "lora"
    shutil.copytree(tiny_lora, folder)
    _, plan = prepare(spec_for(tmp_path, tiny_model, {"sql": str(folder)}, adapter_column="lora"))
    manifest = json.loads((tmp_path / "out" / "_spotbatch" / "manifest.json").read_text())
    assert manifest["models"]["adapter:sql"]["pin"]["files"]["adapter_model.safetensors"]
    prepare(spec_for(tmp_path, tiny_model, {"sql": str(folder)}, adapter_column="lora"))  # same adapter: resumes
    weights = folder / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(OutputError, match=r"what differs from it: adapters\. model '.*lora' \(local\): new weights "
                                          r"at the same path \(changed: adapter_model.safetensors\)"):
        prepare(spec_for(tmp_path, tiny_model, {"sql": str(folder)}, adapter_column="lora"))


def test_an_adapter_added_or_renamed_changes_the_fingerprint(tiny_model, tiny_lora, tmp_path):
    prepare(spec_for(tmp_path, tiny_model, {"sql": str(tiny_lora)}, adapter_column="lora"))
    with pytest.raises(OutputError, match=r"what differs from it: adapters"):
        prepare(spec_for(tmp_path, tiny_model, {"code": str(tiny_lora)}, adapter_column="lora"))
    with pytest.raises(OutputError, match=r"what differs from it: adapters"):
        prepare(spec_for(tmp_path, tiny_model, {}))


def test_a_hub_adapter_is_pinned_to_its_commit(tiny_model, tiny_lora, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_cache(tmp_path / "hf", tiny_lora, "acme/tiny-lora", "c" * 40)
    _, plan = prepare(spec_for(tmp_path, tiny_model, {"sql": {"source": "acme/tiny-lora", "revision": "main"}}))
    assert plan.models["adapter:sql"]["pin"] == {"repo": "acme/tiny-lora", "commit": "c" * 40}
    hub_cache(tmp_path / "hf", tiny_lora, "acme/tiny-lora", "d" * 40)
    with pytest.raises(OutputError, match=f"adapters. model 'acme/tiny-lora@main'.*now at commit {'d' * 40}"):
        prepare(spec_for(tmp_path, tiny_model, {"sql": {"source": "acme/tiny-lora", "revision": "main"}}))


@pytest.mark.parametrize("kind", ["parquet", "openai_batch"])
def test_adapters_on_a_routed_model_are_refused_by_the_cli_naming_the_model(tmp_path, kind):
    """Adapters under `models:` were accepted and every engine start then failed (KeyError 'adapter:sql')."""
    if kind == "parquet":
        write_shards(tmp_path / "in", [{"id": i, "t": f"t{i}", "m": "a"} for i in range(2)], 1)
        inp, route = {"paths": str(tmp_path / "in"), "prompt_column": "t"}, {"route": {"column": "m"}}
    else:
        line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": "a", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}}
        (tmp_path / "batch.jsonl").write_text(json.dumps(line) + "\n")
        inp, route = {"kind": kind, "paths": str(tmp_path / "batch.jsonl")}, {}
    write_spec(tmp_path / "spec.yaml", {
        "input": inp, "output": {"path": str(tmp_path / "out")}, **route,
        "models": {"a": {"name": "tiny-random", "adapters": {"sql": "x"}}, "b": {"name": "tiny-random"}}})
    proc = spotbatch("estimate", str(tmp_path / "spec.yaml"))  # estimate: never an engine, even before the fix
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "models.a.adapters: adapters are for a run's single model" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "out").exists()
