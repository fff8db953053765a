"""`spotbatch serve` guards its door without an engine: a request with no key is answered 401
from its headers before its body is read, and a body past its cap is answered 413 while it
arrives, chunked ones too (no Content-Length to refuse it by)."""

import time

import httpx
import pytest

from tests.test_serve_api import KEY, base_url  # noqa: F401 (the fixture)

CHUNK, CHUNKS = 64 * 1024, 1024  # 64 MB offered; the server's limit is 4 KB a file, 1 MB else


def _chunked(sent: list[int], head: bytes = b""):
    yield head
    for _ in range(CHUNKS):
        sent[0] += 1
        yield b"x" * CHUNK


def _post(url: str, sent: list[int], head: bytes = b"", **headers) -> httpx.Response:
    return httpx.post(url, content=_chunked(sent, head), headers=headers, timeout=60)


def test_no_key_is_401_before_the_body_is_read(base_url):  # noqa: F811
    for route, kind in (("/files", "multipart/form-data; boundary=XX"), ("/batches", "application/json")):
        sent = [0]
        response = _post(base_url + route, sent, **{"Content-Type": kind})
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
        assert sent[0] < CHUNKS // 2, f"{route}: the client sent {sent[0]} of {CHUNKS} chunks before the 401"


def test_a_chunked_body_past_its_cap_is_413(base_url):  # noqa: F811
    form = (b'--XX\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n--XX\r\n'
            b'Content-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n')
    for route, kind, head, code in (("/files", "multipart/form-data; boundary=XX", form, "file_too_large"),
                                    ("/batches", "application/json", b'{"metadata": "', "request_too_large")):
        sent = [0]
        response = _post(base_url + route, sent, head, **{"Content-Type": kind, "Authorization": f"Bearer {KEY}"})
        assert response.status_code == 413 and response.json()["error"]["code"] == code
        assert sent[0] < CHUNKS // 2, f"{route}: the client sent {sent[0]} of {CHUNKS} chunks before the 413"


def test_a_batch_cancelled_before_validation_ends_cancelled(base_url, monkeypatch):  # noqa: F811
    """While the validating thread is busy with batch A, batch B is created and cancelled: B ends
    `cancelled`, with no result files, not `failed`."""
    import threading

    import server.driver
    from tests.serving import chat_line, client, jsonl, wait_for

    busy, check = threading.Event(), server.driver.check_file
    monkeypatch.setattr(server.driver, "check_file", lambda *a: busy.wait(30) and check(*a))
    c = client(base_url, KEY)
    up = c.files.create(file=("in.jsonl", jsonl([chat_line("a", model="nope")])), purpose="batch")
    a = c.batches.create(input_file_id=up.id, endpoint="/v1/chat/completions", completion_window="24h")
    b = c.batches.create(input_file_id=up.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert c.batches.cancel(b.id).status == "cancelling"
    busy.set()
    assert wait_for(c, a.id, 60).status == "failed"  # its model is not served: no engine starts
    b = wait_for(c, b.id, 60)
    assert (b.status, b.errors, b.failed_at, b.output_file_id, b.error_file_id) == ("cancelled", None, None, None, None)
    assert b.cancelled_at >= b.cancelling_at and b.request_counts.total == 0


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the driver's death
def test_a_server_dead_while_finishing_writes_the_result_files_once(tmp_path, monkeypatch):
    """The server dies after writing a batch's result file, before its batch object names it; the
    next server on the store finishes the batch and lists one result file, not two. (The batch's
    window ends while it is validated, so it expires without an engine.)"""
    import server.driver
    from server.app import Serving
    from server.config import config_from
    from tests.serving import chat_line, client, jsonl, served, wait_for

    monkeypatch.setenv("SPOTBATCH_API_KEY", KEY)
    serving = Serving(config_from({"models": {"gpt-4o-mini": "tiny-random"}}), str(tmp_path / "store"))
    check, end = server.driver.check_file, server.driver.Driver._end
    monkeypatch.setattr(server.driver, "check_file", lambda *a: time.sleep(1.5) or check(*a))

    def dies_after_the_files(self, tenant, batch_id, status, errors=None, **fields):
        if fields.get("error_file_id"):
            raise SystemExit  # ends the driver's thread there, as a kill would the server
        return end(self, tenant, batch_id, status, errors, **fields)

    monkeypatch.setattr(server.driver.Driver, "_end", dies_after_the_files)
    with served(serving) as url:
        c = client(url, KEY)
        up = c.files.create(file=("in.jsonl", jsonl([chat_line("a"), chat_line("b")])), purpose="batch")
        batch = c.batches.create(input_file_id=up.id, endpoint="/v1/chat/completions", completion_window="1s")
        deadline = time.monotonic() + 60
        while not list(c.files.list(purpose="batch_output")):
            assert time.monotonic() < deadline, "no result file was written"
            time.sleep(0.2)
    monkeypatch.setattr(server.driver.Driver, "_end", end)
    monkeypatch.setenv("SPOTBATCH_API_KEY", KEY)  # the first server took it out of the environment
    with served(serving) as url:
        c = client(url, KEY)
        batch = wait_for(c, batch.id, 60)
        outputs = [f.id for f in c.files.list(purpose="batch_output")]
    assert batch.status == "expired" and batch.request_counts.failed == 2 and outputs == [batch.error_file_id]


def test_the_clear_key_leaves_the_environment_and_bearer_is_any_case(base_url):  # noqa: F811
    """What the server starts (local Ray, vLLM) inherits its environment: the key is not there."""
    import os

    assert "SPOTBATCH_API_KEY" not in os.environ
    for scheme in ("Bearer", "bearer", "BEARER"):
        assert httpx.get(f"{base_url}/files", headers={"Authorization": f"{scheme} {KEY}"}).status_code == 200
    assert httpx.get(f"{base_url}/files", headers={"Authorization": f"Basic {KEY}"}).status_code == 401


def test_an_unexpected_error_is_openais_500_body(base_url, monkeypatch):  # noqa: F811
    from server.state import State

    def broken(*_):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(State, "files", broken)
    response = httpx.get(f"{base_url}/files", headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 500 and response.json()["error"]["type"] == "server_error"
    assert "disk on fire" not in response.text


def test_one_server_per_store(tmp_path, monkeypatch):
    """`spotbatch serve` on a store another live server serves refuses to start, saying why; once
    that server stops, a server starts on the store."""
    import os
    import subprocess
    import sys

    from server.app import Serving
    from server.config import config_from
    from tests.helpers import ROOT
    from tests.serving import client, served
    from tests.test_serve_kill import free_port

    store, config = str(tmp_path / "store"), config_from({"models": {"gpt-4o-mini": "tiny-random"}})
    monkeypatch.setenv("SPOTBATCH_API_KEY", KEY)
    with served(Serving(config, store)):
        second = subprocess.run([sys.executable, "-m", "jobs.cli", "serve", "--config", "examples/serve.yaml",
                                 "--store", store, "--port", str(free_port())], cwd=ROOT, capture_output=True,
                                text=True, timeout=60, env={**os.environ, "SPOTBATCH_API_KEY": KEY})
    assert second.returncode != 0 and "is served by another server" in second.stdout + second.stderr
    monkeypatch.setenv("SPOTBATCH_API_KEY", KEY)
    with served(Serving(config, store)) as url:
        assert list(client(url, KEY).files.list()) == []
