"""A run is tied to the weights it was planned with: pinned in the manifest, and a resume on
new weights at the same path is refused (exit 2) naming the model and what changed."""

from __future__ import annotations

import json
import shutil

import pytest

from pipelines.run import prepare
from pipelines.spec import PipelineSpec
from pipelines.store.output import OutputError
from tests.conftest import write_shards
from tests.helpers import hub_cache, spotbatch, write_spec


def spec_for(tmp_path, name, **model) -> PipelineSpec:
    return PipelineSpec(input={"paths": str(tmp_path / "in"), "prompt_column": "text"},
                        model={"name": name, **model}, output={"path": str(tmp_path / "out")})


def test_resume_on_new_weights_at_the_same_path_is_refused_naming_the_model(tiny_model, tmp_path):
    write_shards(tmp_path / "in", [{"id": i, "text": f"t{i}"} for i in range(4)], 1)
    folder = tmp_path / "ft"
    shutil.copytree(tiny_model, folder)
    _, plan = prepare(spec_for(tmp_path, str(folder)))
    manifest = json.loads((tmp_path / "out" / "_spotbatch" / "manifest.json").read_text())
    assert manifest["models"][""]["pin"]["files"]["model.safetensors"][1] == plan.models[""]["pin"]["files"][
        "model.safetensors"][1]
    prepare(spec_for(tmp_path, str(folder)))  # same weights: resumes
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one byte of a new checkpoint, same size
    weights.write_bytes(bytes(data))
    with pytest.raises(OutputError, match=r"what differs from it: model\. model '.*ft' \(local\): new weights "
                                          r"at the same path \(changed: model.safetensors\)"):
        prepare(spec_for(tmp_path, str(folder)))
    write_spec(tmp_path / "spec.yaml", spec_for(tmp_path, str(folder)).model_dump(mode="json"))
    proc = spotbatch("run", str(tmp_path / "spec.yaml"))
    assert proc.returncode == 2 and "changed: model.safetensors" in proc.stderr, proc.stderr[-2000:]


def test_a_hub_revision_is_recorded_as_its_commit_and_a_moved_branch_refuses_the_resume(
        tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", "hf_not_to_be_written_down")
    write_shards(tmp_path / "in", [{"id": i, "text": f"t{i}"} for i in range(4)], 1)
    hub_cache(tmp_path / "hf", tiny_model, "acme/tiny", "a" * 40)
    prepare(spec_for(tmp_path, "acme/tiny", revision="main"))
    text = (tmp_path / "out" / "_spotbatch" / "manifest.json").read_text()
    assert json.loads(text)["models"][""]["pin"] == {"repo": "acme/tiny", "commit": "a" * 40}
    assert "hf_not_to_be_written_down" not in text
    hub_cache(tmp_path / "hf", tiny_model, "acme/tiny", "b" * 40)
    with pytest.raises(OutputError, match=f"revision now at commit {'b' * 40}, was {'a' * 40}"):
        prepare(spec_for(tmp_path, "acme/tiny"))


def test_a_chat_template_file_is_read_into_the_spec_and_the_fingerprint(tmp_path):
    (tmp_path / "t.jinja").write_text("{% for m in messages %}[{{ m['content'] }}]{% endfor %}")
    spec = spec_for(tmp_path, "tiny-random", chat_template=str(tmp_path / "t.jinja"))
    assert spec.model.chat_template.startswith("{% for m")
    with pytest.raises(ValueError, match="neither a Jinja template nor a readable file"):
        spec_for(tmp_path, "tiny-random", chat_template=str(tmp_path / "missing.jinja"))
    from pipelines.planning.units import fingerprint_parts

    plain = fingerprint_parts(spec_for(tmp_path, "tiny-random"), [])
    assert fingerprint_parts(spec, [])["model"] != plain["model"]
    kwargs = spec_for(tmp_path, "tiny-random", chat_template_kwargs={"enable_thinking": False})
    assert fingerprint_parts(kwargs, [])["model"] != plain["model"]
