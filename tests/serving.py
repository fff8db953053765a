"""A spotbatch server on loopback for tests, in a thread of the test process (uvicorn), and
the official OpenAI SDK pointed at it."""

from __future__ import annotations

import time

from server.app import serve_in_thread

served = serve_in_thread  # the server in a thread of the test process (server/app.py)


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


def answered_ids(c, batch) -> list[str]:
    """The custom_id of every line in the batch's output and error files, as the SDK downloads them
    (a request answered twice appears twice)."""
    import json

    return [json.loads(line)["custom_id"] for fid in (batch.output_file_id, batch.error_file_id) if fid
            for line in c.files.content(fid).text.splitlines()]
