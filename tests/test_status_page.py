"""The status page of `spotbatch serve` (server/pages/) without an engine, over HTTP on loopback:
the login (cookie flags, CSRF, a wrong key), tenancy, security headers, and the escaping of what
users wrote. The page in a real browser, with a batch running, is the last test of
tests/test_serve_engine.py (it needs an engine)."""

import hashlib
import threading
import time

import httpx
import pytest

from server.app import Serving
from server.config import config_from
from spotbatch.errors import SpecError
from tests.serving import chat_line, client, jsonl, served, wait_for

KEY, OTHER = "sk-page-one-0123456789", "sk-page-two-9876543210"
XSS = "<script>alert(1)</script>"
FILE_NAME = "<img src=x onerror=alert(1)>.jsonl"


@pytest.fixture
def page(tmp_path, monkeypatch):
    """The page's base URL (http://127.0.0.1:PORT), and the API's."""
    monkeypatch.setenv("SPOTBATCH_API_KEY", KEY)
    monkeypatch.setenv("SPOTBATCH_API_KEY_HASHES", hashlib.sha256(OTHER.encode()).hexdigest())
    with served(Serving(config_from({"models": {"gpt-4o-mini": "tiny-random"}}), str(tmp_path / "store"))) as url:
        yield url.removesuffix("/v1"), url


def signed_in(base: str, key: str) -> httpx.Client:
    browser = httpx.Client(base_url=base, headers={"Origin": base})
    answer = browser.post("/login", data={"key": key})
    assert answer.status_code == 303 and answer.headers["location"] == "/", answer.text
    return browser


def failed_batch(api_url: str, key: str, metadata: dict | None = None) -> str:
    """A batch that fails validation (no engine starts): a custom_id used twice."""
    c = client(api_url, key)
    up = c.files.create(file=(FILE_NAME, jsonl([chat_line(XSS), chat_line(XSS)])), purpose="batch")
    batch = c.batches.create(input_file_id=up.id, endpoint="/v1/chat/completions", completion_window="24h",
                             metadata=metadata)
    assert wait_for(c, batch.id, 60).status == "failed"
    return batch.id


def test_without_a_session_the_page_is_the_login_form_and_a_batch_page_redirects_to_it(page):
    base, api_url = page
    batch_id = failed_batch(api_url, KEY)
    home = httpx.get(f"{base}/")
    assert home.status_code == 200 and 'name="key"' in home.text and batch_id not in home.text
    answer = httpx.get(f"{base}/batches/{batch_id}")
    assert answer.status_code == 303 and answer.headers["location"] == f"/?next=%2Fbatches%2F{batch_id}"
    assert batch_id not in answer.text
    csp = home.headers["content-security-policy"]
    assert "unsafe-inline" not in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert home.headers["x-frame-options"] == "DENY" and home.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in home.text.replace('<script src="/static/status.js" defer></script>', "")
    assert httpx.get(f"{base}/static/status.js").headers["content-type"].startswith("text/javascript")
    assert httpx.get(f"{api_url}/batches").status_code == 401  # the API's gate is as it was


def test_login_sets_an_httponly_samesite_cookie_holding_a_session_not_the_key_and_logout_ends_it(page):
    base, api_url = page
    batch_id = failed_batch(api_url, KEY)
    answer = httpx.post(f"{base}/login", data={"key": KEY}, headers={"Origin": base})
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"]
    flags = {f.strip().lower() for f in cookie.split(";")}
    assert {"httponly", "samesite=lax", "path=/"} <= flags and "secure" not in flags  # plain http here
    token = cookie.split(";")[0].split("=", 1)[1]
    assert len(token) >= 40 and KEY not in cookie and hashlib.sha256(KEY.encode()).hexdigest()[:16] not in cookie
    browser = httpx.Client(base_url=base, headers={"Origin": base}, cookies={"spotbatch_session": token})
    home = browser.get("/")
    assert batch_id in home.text and home.headers["cache-control"] == "no-store"
    assert browser.get(f"/batches/{batch_id}").status_code == 200
    out = browser.post("/logout")
    assert out.status_code == 303 and 'spotbatch_session=""' in out.headers["set-cookie"]
    again = httpx.Client(base_url=base, cookies={"spotbatch_session": token})  # the token itself is void now
    assert batch_id not in again.get("/").text and again.get(f"/batches/{batch_id}").status_code == 303


def test_a_wrong_key_gets_a_generic_error_and_no_cookie(page):
    base, _ = page
    for key in ("sk-wrong", "", KEY + "x", "Bearer " + KEY + " x"):
        answer = httpx.post(f"{base}/login", data={"key": key}, headers={"Origin": base})
        assert answer.status_code == 401 and "That key is not accepted here." in answer.text, key
        assert "set-cookie" not in answer.headers and "sk-wrong" not in answer.text


def test_a_login_or_logout_from_another_site_is_refused(page):
    base, _ = page
    for headers in ({"Origin": "http://evil.example"}, {}, {"Origin": "null"},
                    {"Referer": "http://evil.example/page"}):
        answer = httpx.post(f"{base}/login", data={"key": KEY}, headers=headers)
        assert answer.status_code == 403 and "set-cookie" not in answer.headers, headers
    browser = signed_in(base, KEY)
    assert browser.post("/logout", headers={"Origin": "http://evil.example"}).status_code == 403
    assert "Log out" in browser.get("/").text  # still signed in
    referer_only = httpx.post(f"{base}/login", data={"key": KEY}, headers={"Referer": f"{base}/"})
    assert referer_only.status_code == 303  # a browser that sends no Origin sends its Referer


def test_each_key_sees_only_its_own_batches_and_another_keys_batch_is_404(page):
    base, api_url = page
    mine, theirs = failed_batch(api_url, KEY), failed_batch(api_url, OTHER)
    me, other = signed_in(base, KEY), signed_in(base, OTHER)
    assert mine in me.get("/").text and theirs not in me.get("/").text
    assert theirs in other.get("/").text and mine not in other.get("/").text
    refused = other.get(f"/batches/{mine}")
    assert refused.status_code == 404 and mine not in refused.text.replace(f"/batches/{mine}", "")


def test_what_users_wrote_is_shown_as_text(page):
    base, api_url = page
    batch_id = failed_batch(api_url, KEY, metadata={"note": XSS, XSS[:60]: "x"})
    me = signed_in(base, KEY)
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    for html in (me.get("/").text, me.get(f"/batches/{batch_id}").text):
        assert escaped in html and XSS not in html and "<script>alert" not in html
    detail = me.get(f"/batches/{batch_id}").text
    assert "duplicate_custom_id" in detail and "&lt;img src=x onerror=alert(1)&gt;.jsonl" in detail
    assert FILE_NAME not in detail


def test_behind_tls_the_cookie_is_secure(tmp_path, monkeypatch):
    monkeypatch.setenv("SPOTBATCH_API_KEY", KEY)
    config = config_from({"models": {"gpt-4o-mini": "tiny-random"}, "behind_tls": True})
    with served(Serving(config, str(tmp_path / "store"))) as url:
        base = url.removesuffix("/v1")
        host = base.removeprefix("http://")
        answer = httpx.post(f"{base}/login", data={"key": KEY}, headers={"Origin": f"https://{host}"})
        assert answer.status_code == 303 and "secure" in answer.headers["set-cookie"].lower()
        plain = httpx.post(f"{base}/login", data={"key": KEY}, headers={"Origin": base})
        assert plain.status_code == 403  # the visitor's page is https: an http Origin is not it


def test_behind_a_proxy_the_login_is_checked_against_public_origins(tmp_path, monkeypatch):
    """nginx's proxy_pass sends the upstream's Host (127.0.0.1:PORT) while the browser's Origin is
    the public name: serve.yaml's public_origins says which origins the page is served at."""
    monkeypatch.setenv("SPOTBATCH_API_KEY", KEY)
    config = config_from({"models": {"gpt-4o-mini": "tiny-random"}, "behind_tls": True,
                          "public_origins": ["https://batch.example.com"]})
    with served(Serving(config, str(tmp_path / "store"))) as url:
        base = url.removesuffix("/v1")
        public = httpx.post(f"{base}/login", data={"key": KEY}, headers={"Origin": "https://batch.example.com"})
        assert public.status_code == 303, public.text
        own_host = httpx.post(f"{base}/login", data={"key": KEY},
                              headers={"Origin": f"https://{base.removeprefix('http://')}"})
        assert own_host.status_code == 403  # a name not listed (DNS rebinding's) is refused
        evil = httpx.post(f"{base}/login", data={"key": KEY}, headers={"Origin": "https://evil.example"})
        assert evil.status_code == 403
    with pytest.raises(SpecError, match="public_origins"):
        config_from({"models": {"gpt-4o-mini": "tiny-random"}, "public_origins": ["batch.example.com/x"]})


def test_a_message_batch_shows_as_anthropics_in_its_words_and_counts(tmp_path, monkeypatch):
    """A Message Batch (created through Anthropic's API; it expires at once here, so no engine
    starts) is an Anthropic batch on the page: `ended`, its requests `expired`, of 2."""
    monkeypatch.setenv("SPOTBATCH_API_KEY", KEY)
    config = config_from({"models": {"claude-haiku": "tiny-random"}, "message_batch_expiry": "0s"})
    with served(Serving(config, str(tmp_path / "store"))) as url:
        base = url.removesuffix("/v1")
        request = {"model": "claude-haiku", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
        made = httpx.post(f"{url}/messages/batches", headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"},
                          json={"requests": [{"custom_id": c, "params": request} for c in ("a", "b")]})
        assert made.status_code == 200, made.text
        batch_id = made.json()["id"]
        me = signed_in(base, KEY)
        for _ in range(300):
            row = me.get("/").text
            if "s-ended" in row:
                break
            time.sleep(0.1)
        detail = me.get(f"/batches/{batch_id}").text
        for html in (row, detail):
            assert batch_id in html and ">ended<" in html and "Anthropic" in html and "OpenAI" not in html
            assert "2 of 2, 2 expired" in html and "2 requests" in html and "completed" not in html


def test_a_message_batchs_requests_errored_at_create_count_as_done_while_it_runs(tmp_path, monkeypatch):
    """A request whose params are bad ends errored, not run (server/anthropic_errored.py): while the
    batch waits (its driver held, no engine), the page counts it answered and failed, 1 of 3."""
    import server.driver

    hold = threading.Event()
    monkeypatch.setattr(server.driver.Driver, "_drive", lambda self, tenant, batch_id: hold.wait(30))
    monkeypatch.setenv("SPOTBATCH_API_KEY", KEY)
    config = config_from({"models": {"claude-haiku": "tiny-random"}})
    try:
        with served(Serving(config, str(tmp_path / "store"))) as url:
            request = {"model": "claude-haiku", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
            requests = [{"custom_id": "a", "params": request}, {"custom_id": "b", "params": {**request, "top_k": -2}},
                        {"custom_id": "c", "params": request}]
            made = httpx.post(f"{url}/messages/batches", json={"requests": requests},
                              headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"})
            assert made.status_code == 200, made.text
            row = signed_in(url.removesuffix("/v1"), KEY).get("/").text.split(f'data-batch="{made.json()["id"]}"')[1]
            assert ">in_progress<" in row and "1 of 3, 1 failed" in row
            hold.set()
    finally:
        hold.set()


def test_a_batch_waiting_its_turn_shows_queued_with_no_eta(page, monkeypatch):
    """A batch is in_progress from its validation on, but its run starts only when the driver
    takes it: until then the page says `queued` (here the driver is held, so no engine starts)."""
    import server.driver

    base, api_url = page
    hold = threading.Event()
    monkeypatch.setattr(server.driver.Driver, "_drive", lambda self, tenant, batch_id: hold.wait(30))
    try:
        c = client(api_url, KEY)
        up = c.files.create(file=("ok.jsonl", jsonl([chat_line("a"), chat_line("b")])), purpose="batch")
        batch = c.batches.create(input_file_id=up.id, endpoint="/v1/chat/completions", completion_window="24h")
        wait_for(c, batch.id, 30, until=("in_progress",))
        me = signed_in(base, KEY)
        row = me.get("/").text.split(f'data-batch="{batch.id}"', 1)[1]
        assert ">in_progress<" in row and row.count(">queued<") == 2  # beside the status, and for the ETA
        detail = me.get(f"/batches/{batch.id}").text
        assert "<dt>ETA</dt><dd>queued</dd>" in detail and ">queued</span>" in detail
    finally:
        hold.set()


def test_the_projection_scales_only_the_per_request_cost_and_a_cancelled_batch_projects_what_it_spent():
    """Loading engines and their idle time are paid once: 15 of 60 requests done for $0.05, of it
    $0.018 useful and wasted work, project $0.05 + 45 x $0.0012 = $0.104 (not 4 x $0.05)."""
    from server.pages.render import list_page
    from server.pages.views import BatchView

    spent = {"load": 0.03, "useful": 0.015, "idle": 0.002, "wasted": 0.003}
    running = BatchView("batch_run", "OpenAI", "in_progress", True, 0, total=60, done=15, failed=0, cost_usd=0.05,
                        breakdown_usd=spent)
    assert running.projected_usd == pytest.approx(0.104)
    cancelling = BatchView("batch_stop", "OpenAI", "cancelling", True, 0, total=60, done=15, failed=0,
                           cost_usd=0.05, breakdown_usd=spent, stopping=True)
    assert cancelling.projected_usd == 0.05
    html = list_page([running, cancelling], now=0)
    assert "$0.1040" in html and "$0.2000" not in html


def test_after_the_login_the_page_asked_for_opens_and_no_other_site_is_redirected_to(page):
    base, api_url = page
    batch_id = failed_batch(api_url, KEY)
    asked = httpx.get(f"{base}/batches/{batch_id}")
    form = httpx.get(f"{base}{asked.headers['location']}").text
    assert f'name="next" value="/batches/{batch_id}"' in form and 'autocomplete="off"' in form
    browser = httpx.Client(base_url=base, headers={"Origin": base})
    back = browser.post("/login", data={"key": KEY, "next": f"/batches/{batch_id}"})
    assert back.status_code == 303 and back.headers["location"] == f"/batches/{batch_id}"
    for elsewhere in ("//evil.com", "https://evil.com", "/\\evil.com", "http:/evil.com", "javascript:alert(1)"):
        answer = httpx.post(f"{base}/login", data={"key": KEY, "next": elsewhere}, headers={"Origin": base})
        assert answer.status_code == 303 and answer.headers["location"] == "/", elsewhere
        assert "evil.com" not in httpx.get(f"{base}/", params={"next": elsewhere}).text


def test_a_login_again_voids_the_browsers_old_session_and_a_key_keeps_only_its_newest_sessions(page):
    base, _ = page
    first = signed_in(base, KEY)
    old = first.cookies["spotbatch_session"]
    again = first.post("/login", data={"key": KEY})  # the browser sends its cookie
    assert again.status_code == 303 and first.cookies["spotbatch_session"] != old
    assert "Log out" in first.get("/").text
    assert "Log out" not in httpx.get(f"{base}/", cookies={"spotbatch_session": old}).text
    tokens = [signed_in(base, KEY).cookies["spotbatch_session"] for _ in range(34)]
    alive = ["Log out" in httpx.get(f"{base}/", cookies={"spotbatch_session": t}).text for t in tokens]
    assert not alive[0] and all(alive[-32:])  # the oldest dropped, the newest 32 kept


def test_a_batchs_view_is_made_once_for_every_viewer_and_both_pages_and_the_page_ticks_every_5_s(page, monkeypatch):
    """Every open tab re-reads its batches each tick: a batch's view (its run read whole while it
    runs) is made once every few seconds whoever asks, the list and the batch's page alike."""
    from server.pages import assets
    from server.pages.views import Views
    from server.state import State

    monkeypatch.setattr(Views, "SECONDS", 600.0)  # what is shared, not how fast a loaded machine serves 6 pages
    base, api_url = page
    batch_id = failed_batch(api_url, KEY)
    made, file_of = [], State.file
    monkeypatch.setattr(State, "file", lambda self, *a: made.append(a) or file_of(self, *a))  # a view reads its file
    tabs = [signed_in(base, KEY) for _ in range(3)]
    pages = [tab.get(path) for tab in tabs for path in ("/", f"/batches/{batch_id}")]
    assert all(p.status_code == 200 and batch_id in p.text for p in pages)
    assert len(made) == 1, made
    assert assets.REFRESH_MS == 5000


def test_get_login_or_logout_lands_on_the_page_head_answers_and_a_500_carries_the_security_headers(page, monkeypatch):
    from server.pages.views import Views

    base, _ = page
    for path in ("/login", "/logout"):
        answer = httpx.get(f"{base}{path}")
        assert answer.status_code == 303 and answer.headers["location"] == "/", path
    head = httpx.head(f"{base}/")
    assert head.status_code == 200 and head.headers["x-frame-options"] == "DENY"
    me = signed_in(base, KEY)
    monkeypatch.setattr(Views, "all", lambda self, tenant: 1 / 0)
    broken = me.get("/")
    assert broken.status_code == 500 and "frame-ancestors 'none'" in broken.headers.get("content-security-policy", "")
    assert "Something went wrong" in broken.text
    assert broken.headers["x-content-type-options"] == "nosniff" and "ZeroDivisionError" not in broken.text
