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


def test_a_file_the_server_will_not_size_is_refused_without_the_urls_password(tmp_path, request):
    """A file the folder page links but the server will not answer for: refused by its name, never
    with the URL, whose userinfo is a password."""
    import functools
    import http.server
    import threading
    from types import SimpleNamespace

    from cluster.models import ModelNotFoundError, identify

    fake_model(tmp_path / "web" / "ft")

    class Refusing(http.server.SimpleHTTPRequestHandler):
        def do_HEAD(self):
            self.send_error(500) if self.path.endswith("model.safetensors") else super().do_HEAD()

        def do_GET(self):  # fsspec asks by GET where HEAD fails
            self.send_error(500) if self.path.endswith("model.safetensors") else super().do_GET()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(Refusing, directory=str(tmp_path / "web")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    request.addfinalizer(server.server_close)
    request.addfinalizer(server.shutdown)
    url = f"http://user:pw-secret-42@127.0.0.1:{server.server_port}/ft/"
    with pytest.raises(ModelNotFoundError) as err:
        identify(SimpleNamespace(name=url, revision=None, storage_options={}))
    assert "model.safetensors" in str(err.value) and "pw-secret-42" not in str(err.value), err.value
