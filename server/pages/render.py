"""The status page's HTML, rendered on the server. Everything that came from a user (metadata,
file names, custom_ids and error messages, ids) goes through `esc`; numbers are formatted here.
No inline script or style: the page's one script and stylesheet are files of this server
(assets.py), so the Content-Security-Policy needs no 'unsafe-inline'."""

from __future__ import annotations

import time
from html import escape

from server.pages.views import BatchView


def esc(value: object) -> str:
    return escape(str(value), quote=True)


def usd(value: float | None) -> str:
    if value is None:
        return "–"
    return f"${value:,.4f}" if value < 100 else f"${value:,.2f}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h {rest // 60:02d}m" if hours else f"{rest // 60}m {rest % 60:02d}s"


def when(stamp: float | None) -> str:
    return "–" if not stamp else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp))


def layout(title: str, body: str, *, refresh: bool = False, signed_in: bool = False) -> str:
    """A whole page. `refresh`: the script reloads its <main> every few seconds (a batch runs)."""
    logout = ('<form method="post" action="/logout" class="logout"><button type="submit">Log out</button></form>'
              if signed_in else "")
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{esc(title)} · spotbatch</title><link rel="stylesheet" href="/static/status.css">'
        '<script src="/static/status.js" defer></script></head><body>'
        f'<header><a href="/" class="home">spotbatch</a>{logout}</header>'
        f'<main data-refresh="{1 if refresh else 0}">{body}</main></body></html>'
    )


def login_page(error: str | None = None, next_path: str = "/") -> str:
    """The login form; `next_path` (a path of this site, session.safe_next) is where it goes after."""
    shown = f'<p class="error" role="alert">{esc(error)}</p>' if error else ""
    # autocomplete off: an API key is not a password for the browser to offer to save or fill in
    return layout("Sign in", (
        '<h1>Batches</h1><p>Sign in with an API key of this server to see your batches.</p>'
        f'{shown}<form method="post" action="/login" class="login">'
        f'<input type="hidden" name="next" value="{esc(next_path)}">'
        '<label for="key">API key</label>'
        '<input id="key" name="key" type="password" autocomplete="off" required autofocus>'
        '<button type="submit">Sign in</button></form>'))


def error_page() -> str:
    return layout("Error", '<h1>Something went wrong</h1><p>The server could not make this page; its log says '
                  'why. <a href="/">Your batches</a></p>')


def not_found_page() -> str:
    return layout("Not found", '<h1>Not found</h1><p>No such batch. <a href="/">Your batches</a></p>',
                  signed_in=True)


def progress(view: BatchView) -> str:
    """A <progress> of requests answered of all, with the figures beside it."""
    total = max(view.total, view.done)
    bar = (f'<progress value="{view.done}" max="{total}">{view.done} of {total}</progress>' if total
           else '<progress></progress>')
    failed = f", {view.failed:,} failed" if view.failed else ""
    if view.counts:  # the kind's own words (Anthropic's succeeded, errored, canceled, expired)
        failed = "".join(f", {n:,} {word}" for word, n in view.counts.items() if n)
    return f'{bar} <span class="count">{view.done:,} of {total:,}{failed}</span>'


def list_page(views: list[BatchView], now: float) -> str:
    if not views:
        body = "<h1>Batches</h1><p>No batches yet.</p>"
        return layout("Batches", body, signed_in=True)
    rows = "".join(_row(v, now) for v in views)
    body = (
        '<h1>Batches</h1><table class="batches"><thead><tr><th>Batch</th><th>Status</th><th>Requests</th>'
        '<th>Tokens in / out</th><th>Spent</th><th>Projected</th><th>ETA</th></tr></thead>'
        f'<tbody>{rows}</tbody></table>')
    return layout("Batches", body, refresh=any(v.running for v in views), signed_in=True)


def _row(v: BatchView, now: float) -> str:
    meta = " ".join(f'<span class="tag">{esc(k)}: {esc(val)}</span>' for k, val in v.metadata.items())
    return (
        f'<tr data-batch="{esc(v.id)}"><td><a href="/batches/{esc(v.id)}">{esc(v.id)}</a>'
        f'<div class="sub">{esc(v.kind)} · {esc(v.label)} · {esc(when(v.created_at))}</div>'
        f'<div class="sub">{meta}</div></td>'
        f'<td>{status(v)}</td>'
        f'<td class="progress">{progress(v)}</td>'
        f'<td class="num">{v.input_tokens:,} / {v.output_tokens:,}</td>'
        f'<td class="num spent">{usd(v.cost_usd)}</td><td class="num">{usd(v.projected_usd)}</td>'
        f'<td class="num">{eta(v, now)}</td></tr>')


def status(v: BatchView) -> str:
    """The batch's status in its API's word, and `queued` while it waits its turn to run."""
    queued = ' <span class="status s-queued">queued</span>' if v.queued else ""
    return f'<span class="status s-{esc(v.status)}">{esc(v.status)}</span>{queued}'


def eta(v: BatchView, now: float) -> str:
    return "queued" if v.queued else duration(v.eta_seconds(now))
