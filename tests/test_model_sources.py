"""Model sources (cluster/models), Ray-free: the four forms, their pins, and what a node does
with them. The URL form runs against the loopback S3 server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from cluster.models import ModelChangedError, ModelNotFoundError, identify, kind_of, resolve
from cluster.models import local as local_source
from cluster.models import url as url_source
from tests.helpers import ROOT, hub_cache

COMMIT_A, COMMIT_B = "a" * 40, "b" * 40


def model(name, revision=None, storage_options=None):
    return SimpleNamespace(name=name, revision=revision, storage_options=storage_options or {})


@pytest.fixture
def node_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPOTBATCH_MODELS", str(tmp_path / "node-cache"))
    return tmp_path / "node-cache"


def fake_model(folder: Path, weights: bytes = b"w" * 1000) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(weights)
    return folder


def test_the_four_forms_and_a_typo(tmp_path):
    fake_model(tmp_path / "m")
    assert kind_of("tiny-random") == "builtin"
    assert kind_of(str(tmp_path / "m")) == "local"
    assert kind_of("Qwen/Qwen2.5-7B-Instruct") == "hub"
    assert kind_of("s3://ml-models/llama-3.1-8b-ft/") == "url" and kind_of("gs://b/m") == "url"
    with pytest.raises(ModelNotFoundError, match="Did you mean 'smollm2-135m'"):
        kind_of("smollm2-13m")
    with pytest.raises(ModelNotFoundError, match="no folder at"):
        identify(model(str(tmp_path / "nope")))
    with pytest.raises(ModelNotFoundError, match="model.revision is for hub repo ids only"):
        identify(model("tiny-random", revision="v2"))


def test_a_local_folder_is_pinned_by_content_and_new_weights_are_named(tmp_path, node_cache):
    folder = fake_model(tmp_path / "ft")
    before = identify(model(str(folder)))
    assert set(before.pin["files"]) == {"config.json", "model.safetensors"}
    (folder / "model.safetensors").write_bytes(b"v" * 1000)  # same size, new content
    after = identify(model(str(folder)))
    assert after.pin != before.pin
    with pytest.raises(ModelChangedError, match="changed: model.safetensors"):
        resolve(model(str(folder)), before)
    assert resolve(model(str(folder)), after)[0] == folder.resolve()


def test_hashes_are_kept_by_size_and_mtime_so_big_folders_are_read_once(tmp_path, node_cache):
    path = fake_model(tmp_path / "m") / "model.safetensors"
    first = local_source.file_hash(path)
    stat = path.stat()
    path.write_bytes(b"x" * 1000)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and time: the kept hash answers
    assert local_source.file_hash(path) == first
    path.touch()
    assert local_source.file_hash(path) != first


def test_a_hub_repo_is_pinned_to_the_commit_its_revision_names(tiny_model, tmp_path, node_cache, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snap_a = hub_cache(tmp_path / "hf", tiny_model, "acme/tiny", COMMIT_A)
    hub_cache(tmp_path / "hf", tiny_model, "acme/tiny", COMMIT_A, ref="v1")
    source = identify(model("acme/tiny"))
    assert (source.kind, source.pin) == ("hub", {"repo": "acme/tiny", "commit": COMMIT_A})
    assert identify(model("acme/tiny", revision="v1")).pin["commit"] == COMMIT_A
    hub_cache(tmp_path / "hf", tiny_model, "acme/tiny", COMMIT_B)  # main moves mid-night
    assert identify(model("acme/tiny")).pin["commit"] == COMMIT_B
    assert resolve(model("acme/tiny"), source)[0] == snap_a  # actors keep loading the planned commit
    with pytest.raises(ModelNotFoundError, match=r"'acme/other'.*not in the hub cache at .*HF_HUB_OFFLINE"):
        identify(model("acme/other"))
    with pytest.raises(ModelNotFoundError, match="revision 'v9' is not in the hub cache"):
        identify(model("acme/tiny", revision="v9"))


@pytest.fixture
def s3_model(s3_server):
    """Uploads a model folder under a fresh prefix; returns (url, fs)."""
    import s3fs

    fs = s3fs.S3FileSystem(**s3_server)
    url = f"s3://spotbatch/models-{uuid.uuid4().hex[:8]}/ft"

    def upload(folder: Path) -> str:
        fs.put(str(folder), url, recursive=True)
        fs.invalidate_cache()
        return url
    return upload, fs


@pytest.mark.s3
def test_an_s3_folder_is_downloaded_once_per_node_and_pinned_by_its_listing(tmp_path, node_cache, s3_server, s3_model):
    upload, fs = s3_model
    url = upload(fake_model(tmp_path / "ft"))
    spec = model(url, storage_options=s3_server)
    source = identify(spec)
    assert source.kind == "url" and all(etag for _, etag in source.pin["files"].values())
    folder, downloaded = resolve(spec, source)[0], resolve(spec, source)[1]["downloaded"]
    assert not downloaded  # the first call downloaded; the second found it
    assert (folder / "model.safetensors").read_bytes() == b"w" * 1000
    fs.pipe(f"{url}/model.safetensors", b"v" * 1000)  # a new checkpoint at the same URL
    fs.invalidate_cache()
    new = identify(spec)
    assert new.pin != source.pin
    assert resolve(spec, source)[0] == folder  # this node still holds exactly the planned weights
    os.environ["SPOTBATCH_MODELS"] = str(tmp_path / "fresh-node")
    with pytest.raises(ModelChangedError, match="changed: model.safetensors"):
        resolve(spec, source)  # a fresh node cannot get the old weights: it refuses, never mixes
    assert not url_source.node_folder(source).exists()


@pytest.mark.s3
def test_an_s3_folder_that_is_missing_empty_or_unreadable_is_refused_by_name(tmp_path, s3_server, s3_model):
    upload, fs = s3_model
    url = upload(fake_model(tmp_path / "ft"))
    with pytest.raises(ModelNotFoundError, match="nothing there"):
        identify(model(url + "-typo", storage_options=s3_server))
    fs.rm(f"{url}/config.json")
    fs.invalidate_cache()
    with pytest.raises(ModelNotFoundError, match="holds no config.json"):
        identify(model(url, storage_options=s3_server))
    bad = {**s3_server, "key": "AKIAWRONG", "secret": "wrong-secret-value"}
    with pytest.raises(ModelNotFoundError) as err:
        identify(model(url, storage_options=bad))
    assert "wrong-secret-value" not in str(err.value) and "AKIAWRONG" not in str(err.value)


RESOLVE = """
import json, sys
from types import SimpleNamespace
from cluster.models import ModelSource, resolve
spec = SimpleNamespace(name=sys.argv[1], revision=None, storage_options=json.loads(sys.argv[2]))
folder, how = resolve(spec, ModelSource.from_json(json.loads(sys.argv[3])))
print(json.dumps({"folder": str(folder), **how}))
"""


def start_resolve(url, options, source, node_cache) -> subprocess.Popen:
    import json

    return subprocess.Popen([sys.executable, "-c", RESOLVE, url, json.dumps(options), json.dumps(source.to_json())],
                            cwd=ROOT, env={**os.environ, "SPOTBATCH_MODELS": str(node_cache)},
                            stdout=subprocess.PIPE, text=True)


@pytest.mark.s3
def test_two_processes_on_a_node_download_once(tmp_path, node_cache, s3_server, s3_model):
    import json

    upload, _ = s3_model
    url = upload(fake_model(tmp_path / "ft", weights=os.urandom(8 << 20)))
    source = identify(model(url, storage_options=s3_server))
    procs = [start_resolve(url, s3_server, source, node_cache) for _ in range(2)]
    outs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert sorted(o["downloaded"] for o in outs) == [False, True]
    assert outs[0]["folder"] == outs[1]["folder"]


@pytest.mark.s3
def test_a_download_killed_midway_leaves_nothing_that_is_loaded(tmp_path, node_cache, s3_server, s3_model):
    upload, _ = s3_model
    weights = os.urandom(256 << 20)
    url = upload(fake_model(tmp_path / "ft", weights=weights))
    spec = model(url, storage_options=s3_server)
    source = identify(spec)
    proc = start_resolve(url, s3_server, source, node_cache)
    deadline = time.monotonic() + 60
    while not any(p.stat().st_size > 0 for p in node_cache.rglob(".staging-*/model.safetensors")):
        assert proc.poll() is None and time.monotonic() < deadline, "the download ended before it could be killed"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not url_source.node_folder(source).exists()  # nothing partial was put in place
    assert list(node_cache.rglob(".staging-*/config.json"))  # only a staging folder, never loaded
    folder, how = resolve(spec, source)
    assert how["downloaded"] and (folder / "model.safetensors").read_bytes() == weights
    assert not list(node_cache.rglob(".staging-*"))  # the dead download's leftovers were swept


IDENTIFY = """
import sys
from types import SimpleNamespace
from cluster.models import ModelNotFoundError, identify
try:
    print(identify(SimpleNamespace(name=sys.argv[1], revision=None, storage_options={})).pin["commit"])
except ModelNotFoundError as err:
    print("refused:", err)
"""


def test_an_unreachable_hub_falls_back_to_the_cache_as_huggingface_hub_does(tiny_model, tmp_path):
    from tests.ray_nodes import free_port

    hub_cache(tmp_path / "hf", tiny_model, "acme/tiny", COMMIT_A)
    env = {k: v for k, v in os.environ.items() if k not in {"HF_HUB_OFFLINE", "HF_HUB_CACHE"}}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=f"http://127.0.0.1:{free_port()}")  # nothing listens

    def ask(repo):
        return subprocess.run([sys.executable, "-c", IDENTIFY, repo], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120)
    cached = ask("acme/tiny")
    assert cached.stdout.strip() == COMMIT_A and "the hub could not be reached" in cached.stderr
    missing = ask("acme/absent")
    assert missing.stdout.startswith("refused: model 'acme/absent' revision 'main' is not in the hub cache"), \
        missing.stdout + missing.stderr
