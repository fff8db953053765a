"""`spotbatch serve` without an engine: the official OpenAI SDK, pointed at the server on
loopback, uploads, lists, reads and deletes files, and meets OpenAI's errors for a wrong key,
another key's objects, an oversize file, a file that fails validation (with line numbers) and
an unknown model. The engine flows are in tests/test_serve_engine.py."""

import hashlib
import time

import httpx
import openai
import pytest

from server.app import Serving
from server.config import config_from
from tests.serving import chat_line, client, jsonl, served, wait_for

KEY, OTHER = "sk-test-one-0123456789", "sk-test-two-9876543210"


@pytest.fixture
def base_url(tmp_path, monkeypatch):
    monkeypatch.setenv("SPOTBATCH_API_KEY", KEY)
    monkeypatch.setenv("SPOTBATCH_API_KEY_HASHES", hashlib.sha256(OTHER.encode()).hexdigest())
    config = config_from({"models": {"gpt-4o-mini": "tiny-random"}, "max_file_bytes": 4096,
                          "max_requests_per_file": 4})
    with served(Serving(config, str(tmp_path / "store"))) as url:
        yield url


def test_files_upload_list_retrieve_content_delete(base_url):
    c = client(base_url, KEY)
    data = jsonl([chat_line("a"), chat_line("b")])
    up = c.files.create(file=("in.jsonl", data), purpose="batch")
    assert up.object == "file" and up.purpose == "batch" and up.bytes == len(data) and up.filename == "in.jsonl"
    assert [f.id for f in c.files.list()] == [up.id]
    assert c.files.retrieve(up.id) == up
    assert c.files.content(up.id).content == data
    assert c.files.delete(up.id).deleted
    assert list(c.files.list()) == []
    with pytest.raises(openai.NotFoundError, match=f"No such File object: {up.id}"):
        c.files.retrieve(up.id)


def test_a_wrong_or_missing_key_is_401_and_another_keys_objects_are_404(base_url):
    mine = client(base_url, KEY)
    up = mine.files.create(file=("in.jsonl", jsonl([chat_line("a")])), purpose="batch")
    with pytest.raises(openai.AuthenticationError) as err:
        client(base_url, "sk-wrong").files.list()
    assert err.value.body["code"] == "invalid_api_key" and "sk-wrong" not in str(err.value)
    assert httpx.get(f"{base_url}/files").status_code == 401
    other = client(base_url, OTHER)
    assert list(other.files.list()) == []
    with pytest.raises(openai.NotFoundError):
        other.files.content(up.id)
    with pytest.raises(openai.NotFoundError):
        other.batches.create(input_file_id=up.id, endpoint="/v1/chat/completions", completion_window="24h")
    bad = mine.files.create(file=("in.jsonl", jsonl([chat_line("a", model="nope")])), purpose="batch")
    batch = mine.batches.create(input_file_id=bad.id, endpoint="/v1/chat/completions", completion_window="24h")
    for call in (other.batches.retrieve, other.batches.cancel):
        with pytest.raises(openai.NotFoundError, match=f"No such Batch object: {batch.id}"):
            call(batch.id)
    assert list(other.batches.list()) == [] and [b.id for b in mine.batches.list()] == [batch.id]


def test_an_oversize_file_is_refused_with_openais_error(base_url):
    with pytest.raises(openai.APIStatusError) as err:
        client(base_url, KEY).files.create(file=("big.jsonl", b"x" * 100_000), purpose="batch")
    assert err.value.status_code == 413 and err.value.body["code"] == "file_too_large"
    with pytest.raises(openai.APIStatusError) as err:  # just over: counted while read
        client(base_url, KEY).files.create(file=("big.jsonl", b"x" * 4097), purpose="batch")
    assert err.value.status_code == 413


def test_a_file_that_fails_validation_says_which_lines_and_why(base_url):
    c = client(base_url, KEY)
    lines = jsonl([chat_line("a"), chat_line("b", model="gpt-9"), chat_line("a")]) + b"{not json\n"
    up = c.files.create(file=("in.jsonl", lines), purpose="batch")
    batch = c.batches.create(input_file_id=up.id, endpoint="/v1/chat/completions", completion_window="24h",
                             metadata={"job": "nightly"})
    assert batch.status == "validating" and batch.metadata == {"job": "nightly"}
    batch = wait_for(c, batch.id, 60)
    assert batch.status == "failed" and batch.failed_at and batch.output_file_id is None
    errors = {e.line: e for e in batch.errors.data}
    assert sorted(errors) == [2, 3, 4]
    assert errors[2].code == "model_not_found" and "'gpt-9'" in errors[2].message
    assert errors[3].code == "duplicate_custom_id" and errors[4].code == "invalid_json_line"
    assert errors[4].message.startswith("line 4: not JSON")


def test_too_many_requests_and_a_wrong_endpoint_fail_validation(base_url):
    c = client(base_url, KEY)
    up = c.files.create(file=("in.jsonl", jsonl([chat_line(str(i)) for i in range(5)])), purpose="batch")
    batch = wait_for(c, c.batches.create(input_file_id=up.id, endpoint="/v1/chat/completions",
                                         completion_window="24h").id, 60)
    assert [(e.code, e.line) for e in batch.errors.data] == [("too_many_requests", 5)]
    small = c.files.create(file=("in.jsonl", jsonl([chat_line("a")])), purpose="batch")
    batch = wait_for(c, c.batches.create(input_file_id=small.id, endpoint="/v1/embeddings",
                                         completion_window="24h").id, 60)
    assert [(e.code, e.line) for e in batch.errors.data] == [("invalid_url", 1)]


def test_batch_requests_refused_by_name(base_url):
    c = client(base_url, KEY)
    up = c.files.create(file=("in.jsonl", jsonl([chat_line("a")])), purpose="batch")
    with pytest.raises(openai.BadRequestError, match="completion_window"):
        c.batches.create(input_file_id=up.id, endpoint="/v1/chat/completions", completion_window="soon")
    with pytest.raises(openai.BadRequestError, match="endpoint '/v1/images'"):
        c.batches.create(input_file_id=up.id, endpoint="/v1/images", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        c.batches.retrieve("batch_nothing")
    with pytest.raises(openai.BadRequestError, match="purpose"):
        c.files.create(file=("in.jsonl", b"{}\n"), purpose="fine-tune")


def test_batches_list_newest_first_with_after_and_limit(base_url):
    c = client(base_url, KEY)
    up = c.files.create(file=("in.jsonl", jsonl([chat_line("a", model="nope")])), purpose="batch")
    made = [c.batches.create(input_file_id=up.id, endpoint="/v1/chat/completions", completion_window="24h").id
            for _ in range(3)]
    page = c.batches.list(limit=2)
    assert [b.id for b in page.data] == made[::-1][:2] and page.has_more
    assert [b.id for b in c.batches.list()] == made[::-1]  # the SDK follows `after` itself
    assert [b.id for b in c.batches.list(after=made[2])] == made[1::-1]


def test_spotbatch_serve_runs_the_example_config_on_loopback(tmp_path):
    """`spotbatch serve --config examples/serve.yaml --store DIR --port N`, as the docs start it;
    the key given in clear is written nowhere (not in the store, not in the server's output)."""
    import os
    import subprocess
    import sys

    from tests.helpers import ROOT
    from tests.test_serve_kill import free_port

    port, log = free_port(), tmp_path / "serve.log"
    env = {**os.environ, "SPOTBATCH_API_KEY": KEY}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", "serve", "--config", "examples/serve.yaml",
                                 "--store", str(tmp_path / "store"), "--port", str(port)], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        c = client(f"http://127.0.0.1:{port}/v1", KEY)
        for _ in range(300):
            try:
                up = c.files.create(file=("in.jsonl", jsonl([chat_line("a", model="gpt-5")])), purpose="batch")
                break
            except openai.APIConnectionError:
                assert proc.poll() is None, log.read_text()
                time.sleep(0.2)
        batch = wait_for(c, c.batches.create(input_file_id=up.id, endpoint="/v1/chat/completions",
                                             completion_window="24h").id, 60)
        assert [(e.code, e.line) for e in batch.errors.data] == [("model_not_found", 1)]
        assert "gpt-4o-mini, text-embedding-3-small" in batch.errors.data[0].message
        with pytest.raises(openai.APIConnectionError):  # loopback only
            client(f"http://{_an_address_not_loopback()}:{port}/v1", KEY).files.list()
    finally:
        proc.terminate()
        proc.wait(60)
    written = [p.read_bytes() for p in (tmp_path / "store").rglob("*") if p.is_file()] + [log.read_bytes()]
    assert not [w for w in written if KEY.encode() in w]


def _an_address_not_loopback() -> str:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # no packet is sent: this picks the machine's outward address
        return s.getsockname()[0]


@pytest.mark.s3
def test_a_store_on_s3_holds_the_files_and_batches(tmp_path, monkeypatch, s3_server):
    from jobs.bench.s3_requests import BUCKET

    monkeypatch.setenv("SPOTBATCH_API_KEY", KEY)
    store = f"s3://{BUCKET}/serve-{tmp_path.name}"
    config = config_from({"models": {"gpt-4o-mini": "tiny-random"}})
    with served(Serving(config, store, storage_options=s3_server)) as url:
        c = client(url, KEY)
        data = jsonl([chat_line("a"), chat_line("b", model="gpt-9")])
        up = c.files.create(file=("in.jsonl", data), purpose="batch")
        assert c.files.content(up.id).content == data
        batch = wait_for(c, c.batches.create(input_file_id=up.id, endpoint="/v1/chat/completions",
                                             completion_window="24h").id, 60)
        assert [(e.code, e.line) for e in batch.errors.data] == [("model_not_found", 2)]
    monkeypatch.setenv("SPOTBATCH_API_KEY", KEY)  # a server takes it out of the environment
    with served(Serving(config, store, storage_options=s3_server)) as url:  # another server, the same store
        assert client(url, KEY).batches.retrieve(batch.id) == batch


def test_a_running_batchs_request_counts_are_requests_not_rows(base_url, tmp_path):
    """A completions batch of list prompts, part committed: a request counts once all its rows are
    in, failed if any row is an error, as its line in the export; so completed + failed <= total,
    in_progress and finalizing alike (before, `completed` counted rows and went past `total`)."""
    from pipelines.formats.lines import row_ids
    from server.keys import key_hash
    from server.objects import batch_object
    from server.state import State, new_id
    from tests.test_openai_endpoints import answered_by_hand, line

    lines = [line("/v1/completions", "a", model="gpt-4o-mini", prompt=["p0", "p1", "p2"]),
             line("/v1/completions", "b", model="gpt-4o-mini", prompt="q"),
             line("/v1/completions", "c", model="gpt-4o-mini", prompt=["r0", "r1"]),
             line("/v1/completions", "d", model="gpt-4o-mini", prompt=["s0", "s1"])]
    c = client(base_url, KEY)
    up = c.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
    state, tenant = State(str(tmp_path / "store")), key_hash(KEY)[:32]
    batch = batch_object(new_id("batch_"), {"input_file_id": up.id, "endpoint": "/v1/completions",
                                            "completion_window": "24h"}, int(time.time()))
    # Put by hand once the server runs (its driver resumes running batches only at its start).
    state.put_batch(tenant, {**batch, "status": "in_progress", "request_counts": {"total": 4, "completed": 0,
                                                                                  "failed": 0}})
    # Rows a0 a1 a2 b c0 c1 d0 d1, a unit each: a1 an error, c1 not committed yet.
    answered_by_hand(tmp_path / "run", lines, units=[0, 1, 2, 3, 4, 6, 7], out=state.run_url(tenant, batch["id"]),
                     failing=frozenset({row_ids("a", 3, "")[1]}))
    live = c.batches.retrieve(batch["id"])
    assert live.request_counts.model_dump() == {"total": 4, "completed": 2, "failed": 1}  # b, d; a
    assert live.spotbatch["rows_done"] == 7 and [b.request_counts for b in c.batches.list()] == [live.request_counts]
    state.update_batch(tenant, batch["id"], lambda b: b.update(status="finalizing"))
    assert c.batches.retrieve(batch["id"]).request_counts == live.request_counts
