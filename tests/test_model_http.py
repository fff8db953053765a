"""A model folder at an http(s) URL (a plain web server's folder listing, as python's
http.server gives it): pinned by each file's size and ETag or date from the server, downloaded
once per node, and a changed file is a new pin. The listing's links carry no sizes: every
download failed with "arrived with N bytes, the listing says 0"."""

from __future__ import annotations

import pytest

from cluster.models import ModelChangedError, fetch
from tests.helpers import http_folder
from tests.test_model_sources import fake_model


def test_an_http_folder_is_pinned_by_its_sizes_and_downloaded_whole(tmp_path, monkeypatch, request):
    monkeypatch.setenv("SPOTBATCH_MODELS", str(tmp_path / "node-cache"))
    folder = fake_model(tmp_path / "web" / "ft")
    url = http_folder(tmp_path / "web", request) + "ft/"
    got = fetch(url)
    assert sorted(p.name for p in got.iterdir()) == sorted(p.name for p in folder.iterdir())
    assert (got / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(b"v" * 2000)  # a new checkpoint at the same URL
    again = fetch(url)
    assert again != got and (again / "model.safetensors").read_bytes() == b"v" * 2000


def test_a_folder_that_changes_while_a_node_downloads_it_is_not_kept(tmp_path, monkeypatch, request):
    from types import SimpleNamespace

    from cluster.models import identify, resolve

    monkeypatch.setenv("SPOTBATCH_MODELS", str(tmp_path / "node-cache"))
    folder = fake_model(tmp_path / "web" / "ft")
    model = SimpleNamespace(name=http_folder(tmp_path / "web", request) + "ft/", revision=None, storage_options={})
    planned = identify(model)
    (folder / "model.safetensors").write_bytes(b"v" * 2000)
    with pytest.raises(ModelChangedError, match="model.safetensors"):
        resolve(model, planned)
