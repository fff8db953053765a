"""The page's login: a key typed into a form, checked as the API checks it (server/keys.py, in
constant time), becomes a session: a random token in an HttpOnly, SameSite=Strict cookie, mapped
here to the key's tenant (its hash's prefix). The cookie never holds the key, and the key is
kept nowhere. Sessions live in the server's memory: a restarted server asks for the key again.

A POST that changes the session (login, logout) must come from this site: its Origin (or, from a
browser that sends none, its Referer) must be the server's own, so another site cannot log a
visitor in with the wrong key or out (CSRF)."""

from __future__ import annotations

import secrets
import threading
import time
from urllib.parse import parse_qs, urlsplit

from fastapi import Request

COOKIE = "spotbatch_session"
SESSION_SECONDS = 8 * 3600  # a working day, then the key is asked for again
MAX_FORM_BYTES = 4096  # a login form is a key and a few bytes


class Sessions:
    """token -> (tenant, expiry); tokens are 256 random bits."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, tuple[str, float]] = {}

    def open(self, tenant: str) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            now = time.time()
            self._sessions = {t: s for t, s in self._sessions.items() if s[1] > now}  # the expired go
            self._sessions[token] = (tenant, now + SESSION_SECONDS)
        return token

    def tenant(self, token: str | None) -> str | None:
        with self._lock:
            tenant, until = self._sessions.get(token or "", (None, 0.0))
        return tenant if until > time.time() else None

    def close(self, token: str | None) -> None:
        with self._lock:
            self._sessions.pop(token or "", None)


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


def set_cookie(response, request: Request, token: str) -> None:
    response.set_cookie(COOKIE, token, max_age=SESSION_SECONDS, path="/", httponly=True, samesite="strict",
                        secure=over_tls(request))


def clear_cookie(response, request: Request) -> None:
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=over_tls(request))


async def small_form(request: Request) -> dict[str, str] | None:
    """An urlencoded form's fields (the first value of each); None if it is over MAX_FORM_BYTES."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
