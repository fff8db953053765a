"""The server: the FastAPI app over a store, a driver thread and the keys; serve() runs it with
uvicorn. Every error a client gets is OpenAI's body, `{"error": {message, type, param, code}}`."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from server import anthropic_api, batches_api, files_api
from server.anthropic_door import AnthropicDoor
from server.config import ServeConfig, load_config
from server.driver import Driver
from server.guard import Guard
from server.keys import Keys
from server.lease import Lease
from server.objects import ApiError
from server.pages import PagesFirst, status_pages
from server.state import State

log = logging.getLogger("spotbatch.serve")
MULTIPART_SLACK = 64 * 1024  # a form's own bytes around the file


@dataclass(frozen=True)
class Serving:
    """What a server serves: its config, its store and the Ray cluster its batches run on."""

    config: ServeConfig
    store: str
    address: str | None = None
    storage_options: dict[str, Any] | None = None


def create_app(serving: Serving) -> FastAPI:
    state = State(serving.store, serving.storage_options)
    keys = Keys.load(serving.config.api_keys_file)
    driver, lease = Driver(state, serving.config, serving.address), Lease(state)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        lease.take()  # one server per store
        driver.start()  # resumes the store's unfinished batches first
        yield
        driver.stop(timeout=60)
        lease.release()

    app = FastAPI(title="spotbatch serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.state, app.state.keys, app.state.driver, app.state.config = state, keys, driver, serving.config
    app.state.lease = lease
    app.include_router(files_api.router)
    app.include_router(batches_api.router)
    app.include_router(anthropic_api.router)
    _errors_as_openai(app)
    app.add_middleware(Guard, keys=keys, max_file_bytes=serving.config.max_file_bytes,
                       upload_cap=serving.config.max_file_bytes + MULTIPART_SLACK,
                       post_caps={anthropic_api.router.prefix: serving.config.max_message_batch_bytes})
    app.add_middleware(AnthropicDoor, keys=keys)  # outside the Guard: Anthropic's headers and error body
    app.add_middleware(PagesFirst, pages=status_pages(app))  # the status page (server/pages/), before the gate
    return app


def _errors_as_openai(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, err: ApiError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(p) for p in first["loc"][1:]) or None
        return JSONResponse(ApiError(400, f"{param or 'request'}: {first['msg']}", "invalid_value", param).body(),
                            status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, err: Exception) -> JSONResponse:  # logged by uvicorn, with its trace
        return JSONResponse(ApiError(500, "The server had an error while processing your request.",
                                     kind="server_error").body(), status_code=500)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, err: HTTPException) -> JSONResponse:
        return JSONResponse(ApiError(err.status_code, str(err.detail)).body(), status_code=err.status_code)


def serve(config: str | ServeConfig, store: str, *, port: int = 8000, host: str = "127.0.0.1",
          address: str | None = None) -> None:
    """Serve OpenAI's Files and Batches API on host:port (loopback unless told otherwise) until
    interrupted; `config` is serve.yaml (or a ServeConfig), `store` a folder or an s3:// prefix."""
    import uvicorn

    from pipelines.log import console
    from pipelines.redact import redact_url

    console()
    config = load_config(config) if isinstance(config, str) else config
    app = create_app(Serving(config, store, address))
    app.state.lease.take()  # before uvicorn: a refusal is a plain error, not a failed startup
    log.info("spotbatch serve on http://%s:%d/v1 (store %s; models %s)", host, port, redact_url(store),
             ", ".join(config.models))
    uvicorn.run(app, host=host, port=port, log_level="warning")


@contextmanager
def serve_in_thread(serving: Serving) -> Iterator[str]:
    """The server on a free loopback port, in a thread of this process (uvicorn), while the block
    runs; yields its base URL (http://127.0.0.1:PORT/v1). For tests and benchmarks: the batches'
    runs, their warm engines and their memory are this process's, as they are `spotbatch serve`'s."""
    import threading
    import time

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(create_app(serving), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, name="spotbatch-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True  # a late start must not leave a server nobody stops
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(120)
