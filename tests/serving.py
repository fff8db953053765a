"""A spotbatch server on loopback for tests, in a thread of the test process (uvicorn), and
the official OpenAI SDK pointed at it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from server.app import Serving, create_app


@contextmanager
def served(serving: Serving) -> Iterator[str]:
    """The server's base URL (http://127.0.0.1:PORT/v1) while the block runs; stopped after it."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(create_app(serving), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, name="test-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(120)


def client(base_url: str, key: str):
    from openai import OpenAI

    return OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=60)


def jsonl(lines: list[dict]) -> bytes:
    import json

    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def chat_line(custom_id: str, model: str = "gpt-4o-mini", content: str = "Say hi", **body) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": content}], **body}}


def wait_for(c, batch_id: str, timeout: float, until=("completed", "failed", "expired", "cancelled")):
    deadline = time.monotonic() + timeout
    while True:
        batch = c.batches.retrieve(batch_id)
        if batch.status in until:
            return batch
        assert time.monotonic() < deadline, f"batch {batch_id} still {batch.status} after {timeout} s"
        time.sleep(0.5)
