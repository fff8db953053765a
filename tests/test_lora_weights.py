"""An adapter's weights checked at planning in every form it may take (a local folder, a hub
commit in the cache, an S3 folder, an HTTP folder): a folder with a config and no weights, and an adapter of
another base model, are refused naming the adapter before anything is written; the check reads
the safetensors header only. No engine starts here."""

from __future__ import annotations

import shutil
import uuid

import pytest

from pipelines.run import prepare
from pipelines.spec import PipelineSpec
from spotbatch.errors import ModelNotFoundError
from tests.conftest import write_shards
from tests.helpers import http_folder, hub_cache, spotbatch, write_spec
from tests.lora import make_adapter

OTHER_BASE = r"model\.adapters\.sql: adapter_model\.safetensors .* reads vectors of 64 numbers; the base model's are"
NO_WEIGHTS = (r"model\.adapters\.sql: the adapter holds no adapter_model\.safetensors, adapter_model\.bin or "
              r"adapter_model\.pt")


@pytest.fixture(scope="module")
def tiny_lora(tiny_model):
    return make_adapter(tiny_model, seed=1)


@pytest.fixture
def place(tmp_path, monkeypatch, request):
    """Puts an adapter folder where its form says and returns the spec's source for it."""
    def put(folder, form: str) -> dict:
        if form == "local":
            return {"source": str(folder)}
        if form == "hub":
            monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
            monkeypatch.setenv("HF_HUB_OFFLINE", "1")
            hub_cache(tmp_path / "hf", folder, "acme/lora", "e" * 40)
            return {"source": "acme/lora", "revision": "main"}
        if form == "http":
            return {"source": http_folder(folder, request)}
        import s3fs

        options = request.getfixturevalue("s3_server")
        url = f"s3://spotbatch/lora-{uuid.uuid4().hex[:8]}"
        fs = s3fs.S3FileSystem(**options)
        fs.put(str(folder), url, recursive=True)
        return {"source": url, "storage_options": options}
    return put


def spec_for(tmp_path, base, adapter: dict) -> PipelineSpec:
    write_shards(tmp_path / "in", [{"id": i, "text": f"t{i}", "lora": "sql"} for i in range(2)], 1)
    return PipelineSpec.model_validate({
        "input": {"paths": str(tmp_path / "in"), "prompt_column": "text", "adapter_column": "lora"},
        "model": {"name": str(base), "adapters": {"sql": adapter}}, "output": {"path": str(tmp_path / "out")}})


FORMS = ["local", "hub", "http", pytest.param("s3", marks=pytest.mark.s3)]


@pytest.mark.parametrize("form", FORMS)
def test_an_adapter_of_another_base_model_is_refused_in_every_form(smollm2, tiny_lora, tmp_path, place, form):
    with pytest.raises(ModelNotFoundError, match=OTHER_BASE):
        prepare(spec_for(tmp_path, smollm2, place(tiny_lora, form)))
    assert not (tmp_path / "out" / "_spotbatch" / "manifest.json").exists()


@pytest.mark.parametrize("form", FORMS)
def test_an_adapter_of_its_own_base_model_passes_in_every_form(tiny_model, tiny_lora, tmp_path, place, form):
    _, plan = prepare(spec_for(tmp_path, tiny_model, place(tiny_lora, form)))
    assert plan.models["adapter:sql"]["kind"] == {"s3": "url", "http": "url"}.get(form, form)


@pytest.mark.parametrize("form", FORMS)
def test_an_adapter_folder_without_weights_is_refused_in_every_form(tiny_model, tiny_lora, tmp_path, place, form):
    folder = tmp_path / "no-weights"
    shutil.copytree(tiny_lora, folder)
    (folder / "adapter_model.safetensors").unlink()
    with pytest.raises(ModelNotFoundError, match=NO_WEIGHTS):
        prepare(spec_for(tmp_path, tiny_model, place(folder, form)))


def test_a_garbled_weights_file_is_refused_by_name(tiny_model, tiny_lora, tmp_path):
    folder = tmp_path / "garbled"
    shutil.copytree(tiny_lora, folder)
    (folder / "adapter_model.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{not")
    with pytest.raises(ModelNotFoundError, match=r"model\.adapters\.sql: cannot read adapter_model\.safetensors's"):
        prepare(spec_for(tmp_path, tiny_model, {"source": str(folder)}))


def test_a_routed_models_revision_on_a_folder_is_refused_naming_its_own_field(tiny_model, tmp_path):
    """Routed models were told `model.revision`, a field their spec does not have."""
    write_shards(tmp_path / "in", [{"id": 0, "t": "hi", "m": "a"}], 1)
    write_spec(tmp_path / "spec.yaml", {
        "input": {"paths": str(tmp_path / "in"), "prompt_column": "t"}, "route": {"column": "m"},
        "output": {"path": str(tmp_path / "out")},
        "models": {"a": {"name": str(tiny_model), "revision": "main"}, "b": {"name": "tiny-random"}}})
    proc = spotbatch("run", str(tmp_path / "spec.yaml"))
    assert proc.returncode == 2 and "models.a.revision is for hub repo ids only" in proc.stderr, proc.stderr[-2000:]


def test_an_offline_hub_cache_that_holds_only_the_adapters_config_says_where_it_looked(
        tiny_model, tiny_lora, tmp_path, place):
    """What an online planning (an estimate, say) leaves in the cache is adapter_config.json
    alone; offline, the adapter was said to hold no weights, when the cache did not."""
    folder = tmp_path / "config-only"
    folder.mkdir()
    shutil.copy(tiny_lora / "adapter_config.json", folder)
    with pytest.raises(ModelNotFoundError, match=NO_WEIGHTS + r".*HF_HUB_OFFLINE is set: only the hub cache at "
                       r".*hf\S* was looked in; hf download acme/lora --revision e{40}"):
        prepare(spec_for(tmp_path, tiny_model, place(folder, "hub")))
