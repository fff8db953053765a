"""`spotbatch serve` with a real engine (SmolLM2, as examples/serve.yaml serves it): the official
OpenAI SDK uploads, creates, polls, downloads the output and error files and parses their lines
with its own types, cancels a batch mid-run, and sees a batch expire at its completion window;
the anthropic SDK runs a Message Batch on the same engine.
One server and one warm engine for the whole module (the batches run one after another on it)."""

import json
import time

import pytest
import ray
import yaml
from openai.types import Batch, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion

from pipelines.engine.warm_pool import POOL
from pipelines.store.output import OutputStore
from pipelines.store.records import Records
from server.app import Serving
from server.config import config_from
from server.keys import key_hash
from tests.helpers import ROOT
from tests.serving import chat_line, client, jsonl, served, wait_for

pytestmark = pytest.mark.engine
KEY = "sk-serve-engine-test-0123"
ENDED = ("completed", "failed", "expired", "cancelled")
KEEP_WARM, GRACE = 3, 5  # seconds: the last test's idle window, and the time its engines take to go


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("serve") / "store"


@pytest.fixture(scope="module")
def serving(store, ray_cluster, smollm2, minilm) -> Serving:
    """The example's config, as a test runs it: an eager engine (starts in seconds), units of a
    few requests (so a cancel or a deadline falls between them)."""
    data = yaml.safe_load((ROOT / "examples" / "serve.yaml").read_text())
    data["models"]["gpt-4o-mini"]["model"]["enforce_eager"] = True
    data["models"]["gpt-4o-mini"]["compute"]["tokens_per_unit"] = 300
    data["models"]["claude-haiku-4-5"] = data["models"]["gpt-4o-mini"]  # the same engine, Anthropic's name
    return Serving(config_from(data), str(store), address=ray_cluster)


@pytest.fixture(scope="module")
def api(serving):
    mp = pytest.MonkeyPatch()
    mp.setenv("SPOTBATCH_API_KEY", KEY)
    try:
        with served(serving) as url:
            yield client(url, KEY)
    finally:
        mp.undo()
        POOL.release()


def lines_of(c, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(line) for line in c.files.content(file_id).text.splitlines()]


def create(c, lines: list[dict], window: str = "24h") -> Batch:
    up = c.files.create(file=("batch.jsonl", jsonl(lines)), purpose="batch")
    return c.batches.create(input_file_id=up.id, endpoint="/v1/chat/completions", completion_window=window,
                            metadata={"test": "serve"})


def test_a_batch_completes_with_output_and_error_files_in_openais_shapes(api):
    lines = [chat_line(f"q{i}", content=f"What is {i} plus {i}?", max_completion_tokens=12, temperature=0)
             for i in range(5)]
    lines.append(chat_line("too-long", content="word " * 3000, max_completion_tokens=8))  # past max_model_len
    batch = create(api, lines)
    seen = set()
    while batch.status not in ENDED:
        seen.add(batch.status)
        batch = api.batches.retrieve(batch.id)
    assert batch.status == "completed", batch.errors
    assert seen & {"validating", "in_progress", "finalizing"} and batch.completed_at >= batch.in_progress_at
    assert batch.request_counts.model_dump() == {"total": 6, "completed": 5, "failed": 1}
    outputs, errors = lines_of(api, batch.output_file_id), lines_of(api, batch.error_file_id)
    assert sorted(o["custom_id"] for o in outputs) == [f"q{i}" for i in range(5)]
    for o in outputs:
        answer = ChatCompletion.model_validate(o["response"]["body"])
        assert o["response"]["status_code"] == 200 and answer.choices[0].message.content
        assert answer.model == "smollm2-135m" and answer.usage.completion_tokens <= 12
    (e,) = errors
    assert (e["custom_id"], e["response"]) == ("too-long", None)
    assert e["error"]["code"] == "invalid_request_error" and "context_too_long" in e["error"]["message"]
    assert batch.usage.output_tokens == sum(ChatCompletion.model_validate(o["response"]["body"]).usage
                                            .completion_tokens for o in outputs)
    cost = batch.model_extra["spotbatch"]
    assert cost["cost_usd"] > 0 and cost["usd_per_1m_output_tokens"] > 0
    assert api.files.retrieve(batch.output_file_id).purpose == "batch_output"
    assert batch.id in [b.id for b in api.batches.list()]
    assert POOL.held() == 1  # the engine stays warm for the next batch


def test_a_message_batch_runs_through_the_anthropic_sdk_on_the_warm_engine(api):
    """Anthropic's SDK creates a Message Batch, polls it and reads its results as its own types:
    the answers `succeeded`, a request past the context `errored`, and one whose params are bad
    (temperature 5) `errored` too, the others run all the same, as at Anthropic; on the chat
    engine kept warm."""
    import anthropic
    from anthropic.types.messages import MessageBatchErroredResult, MessageBatchSucceededResult

    c = anthropic.Anthropic(base_url=str(api.base_url).removesuffix("/v1/"), api_key=KEY, max_retries=0)
    requests = [{"custom_id": f"m{i}", "params": {"model": "claude-haiku-4-5", "max_tokens": 12, "temperature": 0,
                                                  "messages": [{"role": "user", "content": f"What is {i} plus {i}?"}]}}
                for i in range(3)]
    requests.append({"custom_id": "too-long", "params": {"model": "claude-haiku-4-5", "max_tokens": 8,
                                                         "messages": [{"role": "user", "content": "word " * 3000}]}})
    requests.insert(1, {"custom_id": "hot", "params": {**requests[0]["params"], "temperature": 5}})
    batch = c.messages.batches.create(requests=requests)
    while batch.processing_status != "ended":
        batch = c.messages.batches.retrieve(batch.id)
    assert batch.request_counts.model_dump() == {"processing": 0, "succeeded": 3, "errored": 2, "canceled": 0,
                                                 "expired": 0}
    results = {r.custom_id: r.result for r in c.messages.batches.results(batch.id)}
    assert sorted(results) == ["hot", "m0", "m1", "m2", "too-long"]
    assert isinstance(results["hot"], MessageBatchErroredResult)
    assert results["hot"].error.error.message.startswith("requests[1]: params.temperature must be <= 2")
    for i in range(3):
        answer = results[f"m{i}"]
        assert isinstance(answer, MessageBatchSucceededResult) and answer.message.content[0].text
        assert answer.message.model == "smollm2-135m" and 0 < answer.message.usage.output_tokens <= 12
    assert isinstance(results["too-long"], MessageBatchErroredResult)
    assert results["too-long"].error.error.type == "invalid_request_error"
    assert POOL.held() == 1  # the chat engine served it, and stays warm


def test_a_cancel_commits_what_is_in_flight_and_ends_cancelled_with_partial_results(api):
    lines = [chat_line(f"c{i}", content=f"Write a long story about the number {i}.", max_completion_tokens=48)
             for i in range(120)]
    batch = create(api, lines)
    batch = wait_for(api, batch.id, 240, until=("in_progress",) + ENDED)
    while batch.status == "in_progress" and not batch.request_counts.completed:
        batch = api.batches.retrieve(batch.id)
    assert batch.status == "in_progress", "the batch ended before it could be cancelled"
    assert api.batches.cancel(batch.id).status == "cancelling"
    batch = wait_for(api, batch.id, 240)
    assert batch.status == "cancelled" and batch.cancelled_at, batch.errors
    done = [o["custom_id"] for o in lines_of(api, batch.output_file_id)]
    assert 0 < len(done) < 120 and len(set(done)) == len(done)
    assert batch.request_counts.completed == len(done) and batch.request_counts.total == 120


def test_at_its_completion_window_a_batch_expires_and_the_rest_are_batch_expired(api):
    lines = [chat_line(f"e{i}", content=f"Count to {i + 20}, slowly.", max_completion_tokens=48)
             for i in range(120)]
    batch = wait_for(api, create(api, lines, window="8s").id, 240)
    assert batch.status == "expired" and batch.expired_at, batch.errors
    done = [o["custom_id"] for o in lines_of(api, batch.output_file_id)]
    errors = lines_of(api, batch.error_file_id)
    expired = [e["custom_id"] for e in errors if e["error"]["code"] == "batch_expired"]
    assert expired and sorted(done + [e["custom_id"] for e in errors]) == sorted(line["custom_id"] for line in lines)
    assert batch.request_counts.failed == len(errors) and batch.request_counts.completed == len(done)


def test_the_guides_curl_block_runs_a_batch(api, tmp_path):
    import re
    import subprocess

    guide = (ROOT / "docs" / "guide" / "serve.md").read_text()
    block = re.search(r"## With curl.*?```bash\n(.*?)```", guide, re.S).group(1)
    script = block.replace("http://127.0.0.1:8000/v1", str(api.base_url).rstrip("/"))
    (tmp_path / "batch_input.jsonl").write_bytes(jsonl([chat_line("curl-1", max_completion_tokens=8)]))
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=240, env={"PATH": "/usr/bin:/bin", "SPOTBATCH_API_KEY": KEY})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["status"] == "completed"
    (line,) = (tmp_path / "batch_output.jsonl").read_text().splitlines()
    assert json.loads(line)["custom_id"] == "curl-1"


def test_the_status_page_in_a_browser_signs_in_and_shows_a_running_batch_move_and_its_cost(api):
    """Headless Chromium (tests/browser.py): nothing without a key; signed in, a batch's page
    refreshes by itself while it runs, its progress moves and its cost appears; the screenshot
    taken then is the guide's (docs/img/status_page.png)."""
    import time

    from tests.browser import batch_page_now, chromium, page_errors, sign_in, text_of, wait_until

    base = str(api.base_url).rstrip("/").removesuffix("/v1")
    batch = create(api, [chat_line(f"p{i}", content=f"Tell a short story about the number {i}.",
                                   max_completion_tokens=40) for i in range(60)])
    with chromium() as browser:
        browser.get(f"{base}/batches/{batch.id}")
        asked = f"{base}/?next=%2Fbatches%2F{batch.id}"  # the login form, back to the batch after it
        assert browser.current_url == asked and 'id="key"' in browser.page_source
        sign_in(browser, base, KEY)
        assert batch.id in browser.page_source
        browser.get(f"{base}/batches/{batch.id}")  # from here on, only the page's own script reloads it
        seen, shot, deadline = set(), False, time.monotonic() + 300
        while (now := batch_page_now(browser))["status"] not in ENDED:
            done, total, spent = now["done"], now["total"], now["spent"]
            seen.add(done)
            if not shot and 0 < done < total and spent.startswith("$") and float(spent[1:].replace(",", "")) > 0:
                browser.save_screenshot(str(ROOT / "docs" / "img" / "status_page.png"))
                shot = True
            assert time.monotonic() < deadline, f"batch {batch.id} still running after 300 s"
            time.sleep(0.3)
        assert (now["status"], now["done"], now["total"]) == ("completed", 60, 60)
        assert shot and any(0 < d < 60 for d in seen), f"progress seen: {sorted(seen)}"  # it moved, cost shown
        assert float(text_of(browser, ".spent")[1:]) > 0 and "useful" in text_of(browser, "table.legend")
        assert text_of(browser, "table.engines tbody tr")  # the engine that ran it, with its node and market
        assert browser.find_element("tag name", "header").value_of_css_property("background-color") \
            == "rgba(248, 249, 251, 1)"  # the stylesheet loaded under the CSP
        assert not [e for e in page_errors(browser) if "Content Security Policy" in e], page_errors(browser)
        browser.find_element("css selector", "form.logout button").click()
        wait_until(browser, lambda: "Log out" not in browser.page_source, 30, "the logout did not go through")
        browser.get(f"{base}/batches/{batch.id}")
        assert browser.current_url == asked and "Log out" not in browser.page_source


def engines_of(store, batch: Batch) -> list[dict]:
    run = store / "runs" / key_hash(KEY)[:32] / batch.id
    return list(Records(OutputStore(str(run))).actors().values())


def test_two_batches_on_two_models_queued_each_models_engine_starting_on_its_turn_then_released(api, serving,
                                                                                                 store):
    """A chat batch and an embeddings batch, queued: both complete (embeddings parse as the SDK's
    CreateEmbeddingResponse), the embedding model's engine starts only when its batch runs, and
    both engines are released after the idle window (every CPU free). The module's last engine
    user: its short window would make a later test load an engine again."""
    serving.config.keep_warm_seconds = KEEP_WARM  # what the driver reads for each batch it runs
    chat = create(api, [chat_line(f"t{i}", content=f"Name a colour, {i}.", max_completion_tokens=8)
                        for i in range(3)])
    texts = ["the cat sat on the mat", "spot instances are cheap", "exactly once"]
    up = api.files.create(file=("emb.jsonl", jsonl([
        {"custom_id": f"v{i}", "method": "POST", "url": "/v1/embeddings",
         "body": {"model": "text-embedding-3-small", "input": text}} for i, text in enumerate(texts)])),
        purpose="batch")
    emb = api.batches.create(input_file_id=up.id, endpoint="/v1/embeddings", completion_window="24h")
    chat, emb = wait_for(api, chat.id, 240), wait_for(api, emb.id, 240)
    assert (chat.status, emb.status) == ("completed", "completed"), (chat.errors, emb.errors)
    assert POOL.held() <= 1  # the chat engine went when the embedding model's started: one model at a time
    (chat_engine,) = engines_of(store, chat)
    assert chat_engine.get("warm")  # the chat model's engine was kept from the batches before
    (emb_engine,) = engines_of(store, emb)
    assert emb_engine["started_at"] >= chat.completed_at - 1  # started when its batch's turn came
    vectors = {o["custom_id"]: CreateEmbeddingResponse.model_validate(o["response"]["body"])
               for o in lines_of(api, emb.output_file_id)}
    assert sorted(vectors) == ["v0", "v1", "v2"] and len(vectors["v0"].data[0].embedding) == 384
    # One model's engines are kept warm at a time (pipelines/engine/warm_pool.py): the chat engine
    # went when the embedding model's started; the embedding engine, idle keep_warm_seconds after
    # its batch, goes too, and the cluster is left with every CPU free.
    waited, deadline = time.monotonic(), time.monotonic() + KEEP_WARM + GRACE
    while POOL.held() or ray.available_resources().get("CPU") != ray.cluster_resources()["CPU"]:
        assert time.monotonic() < deadline, (f"{POOL.held()} engines held, CPUs free "
                                             f"{ray.available_resources().get('CPU')} of "
                                             f"{ray.cluster_resources()['CPU']}, {KEEP_WARM + GRACE} s after")
        time.sleep(0.2)
    print(f"released {time.monotonic() - waited:.1f} s after the last batch completed")
    assert "warm_until" in engines_of(store, chat)[0] and "warm_until" in engines_of(store, emb)[0]  # released
