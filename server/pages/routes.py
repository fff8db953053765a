"""The status page's routes: `/` (the caller's batches, or the login form), `/batches/{id}`,
POST `/login` and `/logout`, and the page's script and stylesheet. A key sees only its own
batches; another key's batch is a 404, as in the API."""

from __future__ import annotations

import time
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from server.pages import assets, session
from server.pages.render import list_page, login_page, not_found_page
from server.pages.render_batch import batch_page

router = APIRouter()
WRONG_KEY = "That key is not accepted here."  # the same for every failure: nothing is told about keys


def _tenant(request: Request) -> str | None:
    return request.app.state.sessions.tenant(request.cookies.get(session.COOKIE))


@router.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse)
def home(request: Request) -> HTMLResponse:
    tenant = _tenant(request)
    if tenant is None:
        return HTMLResponse(login_page(next_path=session.safe_next(request.query_params.get("next"))))
    return HTMLResponse(list_page(request.app.state.views.all(tenant), time.time()))


@router.get("/batches/{batch_id}", response_class=HTMLResponse)
def batch(request: Request, batch_id: str) -> Response:
    tenant = _tenant(request)
    if tenant is None:  # to the login, and back here after it
        return RedirectResponse(f"/?{urlencode({'next': request.url.path})}", status_code=303)
    found = request.app.state.views.one(tenant, batch_id)
    if found is None:
        return HTMLResponse(not_found_page(), status_code=404)
    return HTMLResponse(batch_page(*found, time.time()))


@router.post("/login")
async def login(request: Request) -> Response:
    if not session.same_origin(request):
        return HTMLResponse(login_page("This form must be sent from this server's own page."), status_code=403)
    form = await session.small_form(request) or {}
    key, next_path = form.get("key", "").strip(), session.safe_next(form.get("next"))
    tenant = request.app.state.keys.tenant(f"Bearer {key}") if key else None  # constant time (server/keys.py)
    if tenant is None:
        return HTMLResponse(login_page(WRONG_KEY, next_path), status_code=401)
    response = RedirectResponse(next_path, status_code=303)
    held = request.cookies.get(session.COOKIE)  # a browser signing in again: its old session is voided
    session.set_cookie(response, request, request.app.state.sessions.open(tenant, replacing=held))
    return response


@router.get("/login")
@router.get("/logout")
def sign_in_or_out_by_link() -> Response:
    """A login or logout is a POST from the page's form; a link or a typed address lands on the page."""
    return RedirectResponse("/", status_code=303)


@router.post("/logout")
def logout(request: Request) -> Response:
    if not session.same_origin(request):
        return HTMLResponse(login_page("This form must be sent from this server's own page."), status_code=403)
    request.app.state.sessions.close(request.cookies.get(session.COOKIE))
    response = RedirectResponse("/", status_code=303)
    session.clear_cookie(response, request)
    return response


@router.get("/static/status.js")
def script() -> Response:
    return Response(assets.SCRIPT, media_type="text/javascript", headers={"Cache-Control": "no-cache"})


@router.get("/static/status.css")
def style() -> Response:
    return Response(assets.STYLE, media_type="text/css", headers={"Cache-Control": "no-cache"})
