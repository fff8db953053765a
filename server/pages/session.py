"""The page's login: a key typed into a form, checked as the API checks it (server/keys.py, in
constant time), becomes a session: a random token in an HttpOnly, SameSite=Lax cookie, mapped
here to the key's tenant (its hash's prefix). The cookie never holds the key, and the key is
kept nowhere. Sessions live in the server's memory: a restarted server asks for the key again.

A POST that changes the session (login, logout) must come from this site: its Origin (or, from a
browser that sends none, its Referer) must be the server's own, so another site cannot log a
visitor in with the wrong key or out (CSRF)."""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from urllib.parse import parse_qs, urlsplit

from fastapi import Request

COOKIE = "spotbatch_session"
SESSION_SECONDS = 8 * 3600  # a working day, then the key is asked for again
MAX_FORM_BYTES = 4096  # a login form is a key and a few bytes


class Sessions:
    """token -> (tenant, expiry); tokens are 256 random bits. A login is O(1): the expired are
    swept every PRUNE_EVERY logins (and skipped when read), not on each; a tenant keeps its newest
    PER_TENANT sessions, its oldest dropped, so logins in a loop cannot grow memory without end."""

    PER_TENANT = 32
    PRUNE_EVERY = 256

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, tuple[str, float]] = {}
        self._by_tenant: dict[str, OrderedDict[str, None]] = {}  # oldest first
        self._logins = 0

    def open(self, tenant: str, replacing: str | None = None) -> str:
        """A new session for `tenant`; `replacing` (the token the browser held) is voided."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            now = time.time()
            self._drop(replacing)
            self._sessions[token] = (tenant, now + SESSION_SECONDS)
            mine = self._by_tenant.setdefault(tenant, OrderedDict())
            mine[token] = None
            while len(mine) > self.PER_TENANT:
                self._drop(next(iter(mine)))
            self._logins += 1
            if self._logins % self.PRUNE_EVERY == 0:
                for old in [t for t, (_, until) in self._sessions.items() if until <= now]:
                    self._drop(old)
        return token

    def tenant(self, token: str | None) -> str | None:
        with self._lock:
            tenant, until = self._sessions.get(token or "", (None, 0.0))
        return tenant if until > time.time() else None

    def close(self, token: str | None) -> None:
        with self._lock:
            self._drop(token)

    def __len__(self) -> int:
        return len(self._sessions)

    def _drop(self, token: str | None) -> None:
        """Forget a session (under the lock); no-op for a token that is not one."""
        found = self._sessions.pop(token or "", None)
        if found is not None:
            mine = self._by_tenant.get(found[0])
            if mine is not None:
                mine.pop(token, None)
                if not mine:
                    del self._by_tenant[found[0]]


def safe_next(path: str | None) -> str:
    r"""Where to go after the login: a path of this site only ("/batches/x"), else "/" (no open
    redirect: "//evil.com", "https://evil.com" and "/\\evil.com" are refused).

    >>> [safe_next(p) for p in ("/batches/b_1", "//evil.com", "https://evil.com", "/\\evil.com", None)]
    ['/batches/b_1', '/', '/', '/', '/']
    """
    if not path or not path.startswith("/") or path.startswith(("//", "/\\")):
        return "/"
    parts = urlsplit(path)
    if parts.scheme or parts.netloc or any(c < " " or c == "\\" for c in path):
        return "/"
    return path


def same_origin(request: Request) -> bool:
    """The request came from a page of this server (its Origin, else its Referer, is ours): one of
    serve.yaml's public_origins when it names them (a proxy in front may send its upstream's Host,
    and a name pinned in config also refuses a page reached by DNS rebinding), else the request's
    own scheme and Host."""
    sent = request.headers.get("origin") or request.headers.get("referer")
    if not sent or sent == "null":
        return False
    parts = urlsplit(sent)
    origin = f"{parts.scheme}://{parts.netloc}".lower()
    public = getattr(request.app.state, "public_origins", None)
    if public:
        return origin in {o.lower() for o in public}
    return origin == f"{_scheme(request)}://{request.headers.get('host', '')}".lower()


def over_tls(request: Request) -> bool:
    """The visitor's connection is TLS: served so (uvicorn's scheme), or the config says a proxy in
    front ends TLS (serve.yaml behind_tls)."""
    return _scheme(request) == "https"


def _scheme(request: Request) -> str:
    return "https" if getattr(request.app.state, "behind_tls", False) else request.url.scheme


# Lax, not Strict: a link to /batches/X followed from elsewhere (a chat, a mail) carries the
# cookie and opens the page, where Strict would show the login form to a signed-in visitor. Lax
# still keeps the cookie off another site's POSTs and subresources, and the POSTs that change
# anything (login, logout) are checked by their Origin (same_origin) besides; the pages' GETs
# change nothing.
SAMESITE = "lax"


def set_cookie(response, request: Request, token: str) -> None:
    response.set_cookie(COOKIE, token, max_age=SESSION_SECONDS, path="/", httponly=True, samesite=SAMESITE,
                        secure=over_tls(request))


def clear_cookie(response, request: Request) -> None:
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite=SAMESITE, secure=over_tls(request))


async def small_form(request: Request) -> dict[str, str] | None:
    """An urlencoded form's fields (the first value of each); None if it is over MAX_FORM_BYTES."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
