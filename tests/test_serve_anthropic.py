"""Anthropic's Message Batches on `spotbatch serve`, without an engine: the official `anthropic`
SDK, pointed at the server on loopback, creates, retrieves, lists (Anthropic's pagination),
cancels, deletes and reads results as its own types, and meets Anthropic's errors for a wrong
key, another key's batch, an oversize batch and a request of a bad shape (naming its index); a
request whose params are bad ends `errored` (naming its index and field) while the others go on. The server's
Message Batches expire as they are created here (message_batch_expiry 0s), so each ends without
an engine: its requests `expired`, or `canceled` when cancelled first. A batch that runs is in
tests/test_serve_engine.py."""

import hashlib
import json
import re
import threading
from contextlib import contextmanager

import anthropic
import httpx
import pytest
from anthropic.types.messages import (
    DeletedMessageBatch,
    MessageBatch,
    MessageBatchErroredResult,
    MessageBatchIndividualResponse,
)

from server.app import Serving
from server.config import config_from
from tests.serving import chat_line, jsonl, served

KEY, OTHER = "sk-ant-test-one-0123456789", "sk-ant-test-two-9876543210"
VERSION = {"anthropic-version": "2023-06-01"}


@pytest.fixture
def base_url(tmp_path, monkeypatch):
    monkeypatch.setenv("SPOTBATCH_API_KEY", KEY)
    monkeypatch.setenv("SPOTBATCH_API_KEY_HASHES", hashlib.sha256(OTHER.encode()).hexdigest())
    config = config_from({"models": {"claude-haiku": "tiny-random", "gpt-4o-mini": "tiny-random"},
                          "max_message_batch_requests": 4, "max_message_batch_bytes": 4096,
                          "message_batch_expiry": "0s"})
    with served(Serving(config, str(tmp_path / "store"))) as url:
        yield url.removesuffix("/v1")


def client(base_url: str, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base_url, api_key=key, max_retries=0, timeout=60)


def request(custom_id: str, model: str = "claude-haiku", **params) -> dict:
    return {"custom_id": custom_id, "params": {"model": model, "max_tokens": 16,
                                               "messages": [{"role": "user", "content": "Say hi"}], **params}}


def ended(c: anthropic.Anthropic, batch_id: str, timeout: float = 60) -> MessageBatch:
    import time

    deadline = time.monotonic() + timeout
    while (batch := c.messages.batches.retrieve(batch_id)).processing_status != "ended":
        assert time.monotonic() < deadline, f"{batch_id} still {batch.processing_status}"
        time.sleep(0.2)
    return batch


def test_create_retrieve_results_and_delete_in_anthropics_shapes(base_url, tmp_path):
    c = client(base_url, KEY)
    batch = c.messages.batches.create(requests=[request("a"), request("b", system="Be brief.")])
    assert isinstance(batch, MessageBatch) and batch.id.startswith("msgbatch_") and batch.type == "message_batch"
    assert batch.processing_status == "in_progress" and batch.results_url is None and batch.ended_at is None
    assert batch.request_counts.model_dump() == {"processing": 2, "succeeded": 0, "errored": 0, "canceled": 0,
                                                 "expired": 0}
    assert batch.expires_at == batch.created_at  # message_batch_expiry 0s (Anthropic's: 24 h)
    batch = ended(c, batch.id)
    assert batch.request_counts.expired == 2 and batch.request_counts.processing == 0
    assert batch.ended_at >= batch.created_at and batch.cancel_initiated_at is None and batch.archived_at is None
    assert batch.results_url == f"{base_url}/v1/messages/batches/{batch.id}/results"
    results = list(c.messages.batches.results(batch.id))
    assert all(isinstance(r, MessageBatchIndividualResponse) for r in results)
    assert sorted((r.custom_id, r.result.type) for r in results) == [("a", "expired"), ("b", "expired")]
    gone = c.messages.batches.delete(batch.id)
    assert isinstance(gone, DeletedMessageBatch) and (gone.id, gone.type) == (batch.id, "message_batch_deleted")
    with pytest.raises(anthropic.NotFoundError):
        c.messages.batches.retrieve(batch.id)
    store = tmp_path / "store"
    assert not [p for p in store.rglob("*") if batch.id in str(p)]  # its requests, results and run went too
    assert not [p for p in store.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]


def test_list_pages_as_anthropics_and_the_openai_side_shows_no_message_batch(base_url):
    c = client(base_url, KEY)
    made = [c.messages.batches.create(requests=[request(f"r{i}")]).id for i in range(5)]
    newest = made[::-1]
    page = c.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == newest[:2] and page.has_more
    assert (page.first_id, page.last_id) == (newest[0], newest[1])
    assert [b.id for b in c.messages.batches.list(limit=2)] == newest  # the SDK follows after_id itself
    assert [b.id for b in c.messages.batches.list(after_id=newest[1], limit=2).data] == newest[2:4]
    before = c.messages.batches.list(before_id=newest[3], limit=2)
    assert [b.id for b in before.data] == newest[1:3] and before.has_more
    # the SDK pages on to newer batches with before_id=first_id: each page newest first
    assert [b.id for b in c.messages.batches.list(before_id=newest[3], limit=2)] == newest[1:3] + newest[:1]
    openai_side = httpx.get(f"{base_url}/v1/batches", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert openai_side["data"] == []
    assert httpx.get(f"{base_url}/v1/batches/{made[0]}", headers={"Authorization": f"Bearer {KEY}"}).status_code == 404
    assert c.messages.batches.list(limit=1000).data and _status(c, "get", "/v1/messages/batches?limit=1001") == 400


def test_cancel_before_its_turn_ends_canceled_and_an_ended_batch_is_not_cancelled_again(base_url, monkeypatch):
    """The validating thread is held by an OpenAI batch, so the Message Batch waits its turn: it is
    cancelled first, and ends with every request `canceled` (no run, no engine), but the one whose
    params were bad: it was never processing, so it stays `errored`."""
    import server.driver
    from tests.serving import client as openai_client

    busy, check = threading.Event(), server.driver.check_file
    monkeypatch.setattr(server.driver, "check_file", lambda *a: busy.wait(30) and check(*a))
    o = openai_client(f"{base_url}/v1", KEY)
    up = o.files.create(file=("in.jsonl", jsonl([chat_line("x", model="nope")])), purpose="batch")
    o.batches.create(input_file_id=up.id, endpoint="/v1/chat/completions", completion_window="24h")
    c = client(base_url, KEY)
    batch = c.messages.batches.create(requests=[request("a"), request("b"), request("c", temperature=5)])
    with pytest.raises(anthropic.BadRequestError, match="still in progress"):
        c.messages.batches.delete(batch.id)
    canceling = c.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at is not None
    busy.set()
    batch = ended(c, batch.id)
    assert batch.request_counts.canceled == 2 and batch.ended_at >= batch.cancel_initiated_at
    assert batch.request_counts.errored == 1
    assert {r.custom_id: r.result.type for r in c.messages.batches.results(batch.id)} == {
        "a": "canceled", "b": "canceled", "c": "errored"}
    with pytest.raises(anthropic.BadRequestError) as err:
        c.messages.batches.cancel(batch.id)
    assert err.value.body == {"type": "error", "error": {"type": "invalid_request_error", "message":
                              f"message batch {batch.id} has ended; only a batch in progress can be canceled"}}


def test_keys_and_headers_as_anthropics_and_another_keys_batch_is_404(base_url):
    batch = client(base_url, KEY).messages.batches.create(requests=[request("a")])
    with pytest.raises(anthropic.AuthenticationError) as err:
        client(base_url, "sk-wrong").messages.batches.list()
    assert err.value.body["error"]["type"] == "authentication_error" and "sk-wrong" not in str(err.value)
    url = f"{base_url}/v1/messages/batches/{batch.id}"
    assert httpx.get(url, headers={"x-api-key": KEY, **VERSION}).json()["id"] == batch.id  # Anthropic's header
    missing = httpx.get(url, headers={"x-api-key": KEY})
    assert missing.status_code == 400 and missing.json() == {"type": "error", "error": {
        "type": "invalid_request_error", "message": "anthropic-version: header is required"}}
    assert httpx.get(url, headers=VERSION).json()["error"]["type"] == "authentication_error"
    other = client(base_url, OTHER)
    calls = (other.messages.batches.retrieve, other.messages.batches.cancel, other.messages.batches.delete,
             lambda i: list(other.messages.batches.results(i)))
    for call in calls:
        with pytest.raises(anthropic.NotFoundError) as err:
            call(batch.id)
        assert err.value.body["error"] == {"type": "not_found_error", "message": f"message batch {batch.id} not found"}
    assert other.messages.batches.list().data == []
    unknown = httpx.get(f"{base_url}/v1/messages/nothing/here", headers={"x-api-key": KEY, **VERSION})
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found_error"


def test_an_oversize_batch_gets_anthropics_errors(base_url):
    c = client(base_url, KEY)
    with pytest.raises(anthropic.BadRequestError, match="at most 4 requests, this one 5"):
        c.messages.batches.create(requests=[request(f"r{i}") for i in range(5)])
    with pytest.raises(anthropic.APIStatusError) as err:  # 4 requests, over max_message_batch_bytes
        c.messages.batches.create(requests=[request(f"r{i}", system="x" * 1500) for i in range(4)])
    assert err.value.status_code == 413 and err.value.body["error"]["type"] == "request_too_large"
    sent = [0]

    def chunks():  # no Content-Length: counted as it arrives
        yield b'{"requests": [{"custom_id": "a", "params": {"system": "'
        for _ in range(4096):  # 16 MB: far past what socket buffers hold once the server has answered
            sent[0] += 1
            yield b"x" * 4096
    response = httpx.post(f"{base_url}/v1/messages/batches", content=chunks(), timeout=60,
                          headers={"x-api-key": KEY, "content-type": "application/json", **VERSION})
    assert response.status_code == 413 and response.json()["error"]["type"] == "request_too_large"
    # The server answered before the body ended, so the client stopped sending; how much it had
    # sent by then is the socket buffers' and the scheduler's (148 of 256 chunks seen under load,
    # and once all 256: so 4,096 of them).
    assert sent[0] < 4096


@pytest.mark.parametrize("requests, message", [
    ([request("a"), request("b c")], "requests[1]: custom_id 'b c' must be 1 to 64 characters of letters"),
    ([request("a" * 65)], "requests[0]: custom_id 'aaaa"),
    ([request("a"), request("b"), request("a")], "requests[2]: custom_id 'a' is used by an earlier request"),
    ([request("a"), "b"], "requests[1]: a batch request line must be a JSON object, got a string"),
    ([{"params": request("a")["params"]}], "requests[0]: custom_id must be a string, got null"),
    ([{"custom_id": "a"}], "requests[0]: field 'params' must be a JSON object"),
    ([{"custom_id": "a", "params": "hi"}], "requests[0]: field 'params' must be a JSON object"),
    ([{**request("a"), "model": "claude-haiku"}], "requests[0]: field 'model' is not part of an Anthropic"),
    # the shape is checked before any request's params: a later bad custom_id is refused all the same
    ([request("a", max_tokens=0), request("b c")], "requests[1]: custom_id 'b c'"),
    ([], "requests: must be a list of at least one request"),
])
def test_a_request_of_a_bad_shape_is_refused_at_create_naming_its_index(base_url, requests, message):
    """What Anthropic refuses at create: the body's shape, each request's custom_id and params
    being there, Anthropic's custom_id rule, a custom_id used twice."""
    c = client(base_url, KEY)
    with pytest.raises(anthropic.BadRequestError) as err:
        c.messages.batches.create(requests=requests)
    assert err.value.body["type"] == "error" and err.value.body["error"]["type"] == "invalid_request_error"
    assert err.value.body["error"]["message"].startswith(message)
    assert c.messages.batches.list().data == []  # nothing was made


@pytest.mark.parametrize("requests, message", [
    ([request("a"), request("b", model="claude-9")], "requests[1]: params.model 'claude-9' is not a model this "
                                                      "server serves (claude-haiku, gpt-4o-mini)"),
    ([{"custom_id": "a", "params": {"model": "claude-haiku", "messages": []}}], "requests[0]: params.max_tokens is "
                                                                                "required"),
    ([request("a", thinking={"type": "enabled"})], "requests[0]: field params.thinking.budget_tokens must be an "
                                                   "integer of at least 1024"),
    ([request("a", thinking={"type": "adaptive"})], "requests[0]: field params.thinking: type adaptive is not "
                                                    "honoured here"),
    # a budget the served model cannot keep (it has no reasoning parser): the run would refuse the batch
    ([request("a", max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024})],
     "requests[0]: field params.thinking cannot be honoured: the model has no reasoning_parser"),
    # tools need a tool parser the served model lacks (tool_choice auto, Anthropic's default): the run
    # would refuse the whole batch, so this request is errored here and the others run
    ([request("a"), request("b", tools=[{"name": "f", "input_schema": {"type": "object"}}])],
     "requests[1]: tools cannot be honoured: tool_choice auto"),
    ([request("a", messages="Say hi")], "requests[0]: params.messages must be a list"),
    ([request("a", messages={"role": "user"})], "requests[0]: params.messages must be a list"),
    ([request("a", messages=[])], "requests[0]: params.messages must be a list"),
    ([{"custom_id": "a", "params": {"model": "claude-haiku", "max_tokens": 16}}], "requests[0]: params.messages"),
    ([request("a", metadata="x")], "requests[0]: params.metadata must be an object"),
    ([request("a", max_tokens="16")], "requests[0]: params.max_tokens: Input should be a valid integer"),
    ([request("a", max_tokens=0)], "requests[0]: params.max_tokens must be > 0"),
    ([request("a", max_tokens=-1)], "requests[0]: params.max_tokens must be > 0"),
    ([request("b"), request("a", temperature=5)], "requests[1]: params.temperature must be <= 2"),
])
def test_a_request_with_bad_params_ends_errored_and_the_others_go_on(base_url, requests, message):
    """As at Anthropic, which checks each request's params asynchronously: the batch is made, and
    the request ends `errored` (invalid_request_error, naming its index and the field) once the
    batch has ended; the others go on (here they expire: message_batch_expiry 0s)."""
    c = client(base_url, KEY)
    batch = c.messages.batches.create(requests=requests)
    assert batch.processing_status == "in_progress" and batch.request_counts.processing == len(requests)
    bad = requests[int(re.match(r"requests\[(\d+)]", message).group(1))]["custom_id"]
    batch = ended(c, batch.id)
    assert batch.request_counts.model_dump() == {"processing": 0, "succeeded": 0, "errored": 1, "canceled": 0,
                                                 "expired": len(requests) - 1}
    results = {r.custom_id: r.result for r in c.messages.batches.results(batch.id)}
    assert sorted(results) == sorted(r["custom_id"] for r in requests)
    assert isinstance(results[bad], MessageBatchErroredResult) and results[bad].error.type == "error"
    assert results[bad].error.error.type == "invalid_request_error"
    assert results[bad].error.error.message.startswith(message)
    assert {results[r["custom_id"]].type for r in requests if r["custom_id"] != bad} <= {"expired"}


def test_a_body_that_is_not_a_batch_is_refused_by_name(base_url):
    headers = {"x-api-key": KEY, "content-type": "application/json", **VERSION}
    for body, message in ((b"{not json", "JSON decode error"), (json.dumps({"requests": [request("a")],
                                                                           "model": "x"}).encode(), "model: Extra")):
        response = httpx.post(f"{base_url}/v1/messages/batches", content=body, headers=headers)
        assert response.status_code == 400 and response.json()["type"] == "error"
        assert message in response.json()["error"]["message"]


def _status(c: anthropic.Anthropic, method: str, path: str) -> int:
    return httpx.request(method.upper(), f"{c.base_url}".rstrip("/") + path,
                         headers={"x-api-key": KEY, **VERSION}).status_code


def test_a_batch_whose_run_cannot_start_ends_with_every_request_errored_saying_why(tmp_path, monkeypatch):
    """The served model's folder is not there: the run fails before any engine, and the batch
    ends (not stuck in_progress) with each request errored, as Anthropic's api_error."""
    monkeypatch.setenv("SPOTBATCH_API_KEY", KEY)
    config = config_from({"models": {"claude-haiku": {"name": str(tmp_path / "no-model")}}})
    with served(Serving(config, str(tmp_path / "store"))) as url:
        c = client(url.removesuffix("/v1"), KEY)
        batch = ended(c, c.messages.batches.create(requests=[request("a"), request("b")]).id)
        assert batch.request_counts.errored == 2 and batch.results_url
        results = list(c.messages.batches.results(batch.id))
    assert sorted(r.custom_id for r in results) == ["a", "b"]
    for r in results:
        assert r.result.type == "errored" and r.result.error.error.type == "api_error"
        assert r.result.error.error.message.startswith("model 'claude-haiku': no folder")  # not the server's path
        assert str(tmp_path) not in r.result.error.error.message


def test_an_openai_batch_with_tools_its_model_cannot_parse_fails_validation_by_line(base_url):
    """The same check on the OpenAI side: the run would refuse the whole file for such a line,
    so validation names the line (OpenAI's tool_choice defaults to auto too)."""
    from tests.serving import client as openai_client
    from tests.serving import wait_for

    o = openai_client(f"{base_url}/v1", KEY)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    up = o.files.create(file=("in.jsonl", jsonl([chat_line("a"), chat_line("b", tools=tools)])), purpose="batch")
    batch = wait_for(o, o.batches.create(input_file_id=up.id, endpoint="/v1/chat/completions",
                                         completion_window="24h").id, 60)
    assert batch.status == "failed" and [(e.line, e.param) for e in batch.errors.data] == [(2, "body.tools")]
    assert batch.errors.data[0].message.startswith("line 2: tools cannot be honoured: tool_choice auto")


@pytest.mark.parametrize("how", ["unfinished", "raises"])
def test_a_run_that_breaks_keeps_its_committed_answers_and_errors_only_the_rest(tmp_path, monkeypatch, how):
    """Anthropic has no failed batch: a run that ends with units left (no stop reason) or raises
    ends the batch with the answers it committed `succeeded` and only the other requests errored,
    and request_counts as the results file. The run commits request a's unit by hand (no engine)."""
    from types import SimpleNamespace


    def run(spec, **_):
        commit_first_unit_by_hand(spec)
        if how == "raises":
            raise RuntimeError("the run broke")
        return SimpleNamespace(finished=False, stopped=None)

    with served_with_run(monkeypatch, str(tmp_path / "store"), run) as c:
        batch = ended(c, c.messages.batches.create(requests=[request("a"), request("b"), request("c")]).id)
        results = {r.custom_id: r.result for r in c.messages.batches.results(batch.id)}
    assert results["a"].type == "succeeded" and results["a"].message.content[0].text == "X"
    assert {results[i].type for i in "bc"} == {"errored"}
    assert all(results[i].error.error.type == "api_error" for i in "bc")
    assert batch.request_counts.model_dump() == {"processing": 0, "succeeded": 1, "errored": 2, "canceled": 0,
                                                 "expired": 0}


UNIT_PER_REQUEST = {"models": {"claude-haiku": {"model": {"name": "tiny-random"}, "compute": {"tokens_per_unit": 1}}}}


@contextmanager
def served_with_run(monkeypatch, store: str, run, models: dict = UNIT_PER_REQUEST):
    """A server on `store` (serve.yaml's `models`) whose batches' runs are `run` (no engine), and
    the anthropic SDK's client on it."""
    import pipelines.run

    monkeypatch.setattr(pipelines.run, "run", run)
    monkeypatch.setenv("SPOTBATCH_API_KEY", KEY)  # each time: a server takes it out of the environment
    with served(Serving(config_from(models), store)) as url:
        yield client(url.removesuffix("/v1"), KEY)


def commit_first_unit_by_hand(spec) -> None:
    """The batch's run planned, and its first unit (one request) committed as if the model had
    answered "X" (tests/test_openai_endpoints.py answered_by_hand, on the server's own spec)."""
    import pyarrow as pa

    from operators.generate import RESULT_SCHEMA, empty_results
    from pipelines.planning.plan_run import plan_run
    from pipelines.store.counts import UnitCounts
    from pipelines.stream.unit_rows import read_unit_rows

    _, store, plan = plan_run(spec)
    unit = plan.units[0]
    ids = read_unit_rows(unit.path, unit.start, unit.stop, ["custom_id"], spec.output.storage_options)
    n = len(ids)
    cols = {**empty_results([None] * n), "output": ["X"] * n, "prompt_tokens": [2] * n,
            "completion_tokens": [1] * n, "finish_reason": ["stop"] * n, "served_from": ["engine"] * n}
    store.commit(unit.unit_id, pa.table({"custom_id": ids.column("custom_id"),
                                         **{f.name: pa.array(cols[f.name], f.type) for f in RESULT_SCHEMA},
                                         "model": ["claude-haiku"] * n, "spec_fingerprint": [plan.fingerprint] * n}),
                 UnitCounts.of_results(cols, 0.0).to_json())


def test_a_cancel_as_the_run_ends_is_not_overwritten_by_finalizing(base_url, monkeypatch):
    """A cancel that lands as the driver finalizes (here: just before its first write of the batch
    after the run) stays: the batch goes canceling -> ended, never back to in_progress. The same
    driver code ends OpenAI batches."""
    from server.state import State

    c, update, written = client(base_url, KEY), State.update_batch, []

    def update_batch(self, tenant, batch_id, change):
        if threading.current_thread().name == "spotbatch-serve-driver" and not written:
            written.append("cancel")
            c.messages.batches.cancel(batch_id)  # the cancel comes between the driver's read and write
        batch = update(self, tenant, batch_id, change)
        written.append(batch["status"])
        return batch

    monkeypatch.setattr(State, "update_batch", update_batch)
    batch = ended(c, c.messages.batches.create(requests=[request("a")]).id)
    assert written[:2] == ["cancel", "cancelling"] and "finalizing" not in written, written
    assert batch.cancel_initiated_at is not None


def test_a_batch_waiting_its_turn_ends_at_its_expiry(tmp_path, monkeypatch):
    """The driver runs one batch at a time; one queued behind it ends at its expires_at all the
    same (every request `expired`), without waiting its turn; an OpenAI batch at its
    completion_window too (the same code). The running batch's run is held (no engine)."""
    from types import SimpleNamespace

    import pipelines.run
    import server.objects
    from tests.serving import client as openai_client
    from tests.serving import wait_for

    running, release = threading.Event(), threading.Event()

    def run(spec, **_):
        running.set()
        release.wait(60)
        return SimpleNamespace(finished=False, stopped="deadline")

    monkeypatch.setattr(pipelines.run, "run", run)
    monkeypatch.setattr(server.objects, "window_seconds", lambda window: 2)  # OpenAI's 24h, here 2 s
    monkeypatch.setenv("SPOTBATCH_API_KEY", KEY)
    config = config_from({"models": {"claude-haiku": "tiny-random", "gpt-4o-mini": "tiny-random"},
                          "message_batch_expiry": "2s"})
    try:
        with served(Serving(config, str(tmp_path / "store"))) as url:
            c, o = client(url.removesuffix("/v1"), KEY), openai_client(url, KEY)
            first = c.messages.batches.create(requests=[request("a")])
            assert running.wait(30)
            queued = c.messages.batches.create(requests=[request("a"), request("b")])
            up = o.files.create(file=("in.jsonl", jsonl([chat_line("x")])), purpose="batch")
            openai_batch = o.batches.create(input_file_id=up.id, endpoint="/v1/chat/completions",
                                            completion_window="24h")
            queued = ended(c, queued.id, timeout=20)
            assert queued.request_counts.expired == 2 and c.messages.batches.retrieve(first.id).processing_status \
                == "in_progress"
            assert {r.result.type for r in c.messages.batches.results(queued.id)} == {"expired"}
            assert wait_for(o, openai_batch.id, 20).status == "expired" and not release.is_set()
            release.set()
            assert ended(c, first.id).request_counts.expired == 1
    finally:
        release.set()


def test_an_error_names_the_request_not_the_servers_store_or_the_tenant(tmp_path, monkeypatch):
    """A run that refuses a line of the batch's requests names it by the store's path (its
    tenant's id in it): the client reads `requests[i]`, and nothing of the server's paths."""
    import pipelines.run
    from spotbatch.errors import BatchFileError

    def run(spec, **_):
        raise BatchFileError(f"{spec.input.paths[0]} line 2: params.messages[0].content: refused here; "
                             f"output {spec.output.path} left as it was")

    monkeypatch.setattr(pipelines.run, "run", run)
    monkeypatch.setenv("SPOTBATCH_API_KEY", KEY)
    config = config_from({"models": {"claude-haiku": "tiny-random"}})
    with served(Serving(config, str(tmp_path / "store"))) as url:
        c = client(url.removesuffix("/v1"), KEY)
        batch = ended(c, c.messages.batches.create(requests=[request("a"), request("b")]).id)
        messages = {r.result.error.error.message for r in c.messages.batches.results(batch.id)}
        tenants = [p.name for p in (tmp_path / "store" / "batches").iterdir()]
    assert messages == {"requests[1]: params.messages[0].content: refused here; output <store>/runs/<tenant>/"
                        f"{batch.id} left as it was"}
    assert tenants and not any(t in m or str(tmp_path) in m for t in tenants for m in messages)


def test_a_batch_whose_every_request_is_errored_runs_nothing_and_ends_at_once(tmp_path, monkeypatch):
    """Every request's params bad: nothing to run, so the batch ends at once, every result errored,
    without waiting its turn behind a batch that runs (held here, no engine), and no run of it."""
    from types import SimpleNamespace

    import pipelines.run

    runs, release = [], threading.Event()

    def run(spec, **_):
        runs.append(spec.output.path)
        release.wait(60)
        return SimpleNamespace(finished=False, stopped="deadline")

    monkeypatch.setattr(pipelines.run, "run", run)
    monkeypatch.setenv("SPOTBATCH_API_KEY", KEY)
    config = config_from({"models": {"claude-haiku": "tiny-random"}})
    try:
        with served(Serving(config, str(tmp_path / "store"))) as url:
            c = client(url.removesuffix("/v1"), KEY)
            first = c.messages.batches.create(requests=[request("a")])
            bad = c.messages.batches.create(requests=[request("x", max_tokens=0), request("y", model="claude-9")])
            bad = ended(c, bad.id, timeout=20)
            assert c.messages.batches.retrieve(first.id).processing_status == "in_progress"
            results = {r.custom_id: r.result for r in c.messages.batches.results(bad.id)}
            release.set()
            assert ended(c, first.id).request_counts.expired == 1
    finally:
        release.set()
    assert bad.request_counts.model_dump() == {"processing": 0, "succeeded": 0, "errored": 2, "canceled": 0,
                                               "expired": 0}
    assert all(isinstance(r, MessageBatchErroredResult) for r in results.values())
    assert results["x"].error.error.message.startswith("requests[0]: params.max_tokens must be > 0")
    assert results["y"].error.error.message.startswith("requests[1]: params.model 'claude-9' is not a model")
    assert len(runs) == 1 and first.id in runs[0] and not list((tmp_path / "store" / "runs").rglob(f"{bad.id}*"))


def test_a_mixed_batch_runs_only_its_good_requests(tmp_path, monkeypatch):
    """The run's requests are the good ones only; at the end the good are answered (a's unit
    committed by hand, no engine; c left at the deadline) and the bad errored."""
    from types import SimpleNamespace

    import fsspec


    read = []

    def run(spec, **_):
        with fsspec.open(spec.input.paths[0], "rt") as fh:
            read.extend(json.loads(line)["custom_id"] for line in fh)
        commit_first_unit_by_hand(spec)
        return SimpleNamespace(finished=False, stopped="deadline")

    with served_with_run(monkeypatch, str(tmp_path / "store"), run) as c:
        requests = [request("a"), request("b", temperature=5), request("c"), request("d", messages=[])]
        batch = ended(c, c.messages.batches.create(requests=requests).id)
        results = {r.custom_id: r.result for r in c.messages.batches.results(batch.id)}
    assert read == ["a", "c"]
    assert {k: r.type for k, r in results.items()} == {"a": "succeeded", "b": "errored", "c": "expired",
                                                        "d": "errored"}
    assert results["b"].error.error.message.startswith("requests[1]: params.temperature must be <= 2")
    assert results["d"].error.error.message.startswith("requests[3]: params.messages must be a list")
    assert batch.request_counts.model_dump() == {"processing": 0, "succeeded": 1, "errored": 2, "canceled": 0,
                                                 "expired": 1}


def test_a_restarted_server_keeps_the_requests_errored_at_create(tmp_path, monkeypatch):
    """The errored requests are in the store before the batch is acknowledged: a server stopped
    while the batch's run is held, and another on the same store, ends it with them errored (the
    good request's unit committed by hand there, no engine)."""
    from types import SimpleNamespace


    running = threading.Event()

    def held(spec, control, **_):
        running.set()
        while not control.asked:  # until the server's shutdown stops it
            threading.Event().wait(0.05)
        return SimpleNamespace(finished=False, stopped="cancelled")

    def answered(spec, **_):
        commit_first_unit_by_hand(spec)
        return SimpleNamespace(finished=True, stopped=None)

    store = str(tmp_path / "store")
    with served_with_run(monkeypatch, store, held) as c:
        batch = c.messages.batches.create(requests=[request("a", max_tokens=0), request("b")])
        assert running.wait(30)
    with served_with_run(monkeypatch, store, answered) as c:
        batch = ended(c, batch.id)
        results = {r.custom_id: r.result for r in c.messages.batches.results(batch.id)}
    assert batch.request_counts.model_dump() == {"processing": 0, "succeeded": 1, "errored": 1, "canceled": 0,
                                                 "expired": 0}
    assert results["b"].type == "succeeded" and isinstance(results["a"], MessageBatchErroredResult)
    assert results["a"].error.error.message.startswith("requests[0]: params.max_tokens must be > 0")


def test_a_run_error_names_the_request_by_its_index_in_the_batch(tmp_path, monkeypatch):
    """The run's requests leave out those errored at create, so its line 2 is here requests[3]."""
    import pipelines.run
    from spotbatch.errors import BatchFileError

    def run(spec, **_):
        raise BatchFileError(f"{spec.input.paths[0]} line 2: params.messages[0].content: refused here")

    monkeypatch.setattr(pipelines.run, "run", run)
    monkeypatch.setenv("SPOTBATCH_API_KEY", KEY)
    config = config_from({"models": {"claude-haiku": "tiny-random"}})
    with served(Serving(config, str(tmp_path / "store"))) as url:
        c = client(url.removesuffix("/v1"), KEY)
        requests = [request("x", max_tokens=0), request("a"), request("y", max_tokens=0), request("b")]
        batch = ended(c, c.messages.batches.create(requests=requests).id)
        messages = {r.custom_id: r.result.error.error.message for r in c.messages.batches.results(batch.id)}
    assert messages["a"] == messages["b"] == "requests[3]: params.messages[0].content: refused here"
    assert messages["x"].startswith("requests[0]: params.max_tokens") and messages["y"].startswith("requests[2]")
