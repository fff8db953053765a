"""The status page of `spotbatch serve`: HTML for people, beside the API for programs, on the
same server and store. It is an app of its own in front of the API's: the API's gate (a key in
every request's Authorization header, server/guard.py) does not apply to a browser, which signs
in once and carries a session cookie (session.py); and its errors are pages, not OpenAI's JSON."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse

from server.pages import routes
from server.pages.render import error_page
from server.pages.session import Sessions
from server.pages.views import Views

log = logging.getLogger(__name__)
PAGE_PATHS = ("/", "/login", "/logout", "/static/status.js", "/static/status.css")
PAGE_PREFIXES = ("/batches/",)
# No inline script or style anywhere (render.py, assets.py), so none is allowed.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "same-origin", "Cache-Control": "no-store"}


def status_pages(api: FastAPI) -> FastAPI:
    """The pages app, reading the API app's store, keys and config."""
    pages = FastAPI(title="spotbatch status", docs_url=None, redoc_url=None, openapi_url=None)
    pages.state.state, pages.state.keys = api.state.state, api.state.keys
    pages.state.behind_tls = api.state.config.behind_tls
    pages.state.public_origins = api.state.config.public_origins
    pages.state.sessions = Sessions()
    pages.state.views = Views(api.state.state)
    pages.include_router(routes.router)

    @pages.middleware("http")
    async def security_headers(request: Request, call_next):
        try:
            response = await call_next(request)
        except Exception:  # answered here, so that a 500 carries the headers as every page does
            log.exception("status page %s %s failed", request.method, request.url.path)
            response = HTMLResponse(error_page(), status_code=500)
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    return pages


class PagesFirst:
    """ASGI middleware: the status page's paths go to the pages app, every other to the API."""

    def __init__(self, app, pages: FastAPI):
        self.app, self.pages = app, pages

    async def __call__(self, scope: dict[str, Any], receive, send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path in PAGE_PATHS or path.startswith(PAGE_PREFIXES)):
            return await self.pages(scope, receive, send)
        return await self.app(scope, receive, send)
