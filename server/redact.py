"""An error message as a client may read it: what the server knows only of itself (its store's
paths, the tenant's id, a served model's folder) named as the client knows it: a line of their
batch's input as `requests[i]` (a Message Batch: its index in the batch, counting those errored
at create, which the run's input left out) or `line n` (an OpenAI batch file), a served model by
the name their requests use, the rest of the store as `<store>`."""

from __future__ import annotations

import re
from typing import Any

from server.anthropic_errored import errored_requests, request_index
from server.anthropic_objects import is_message_batch
from server.config import ServeConfig
from server.state import State


def for_client(message: str, state: State, config: ServeConfig, tenant: str, batch: dict[str, Any]) -> str:
    requests = state.url_of(state.content_name(tenant, batch["input_file_id"]))
    listed = is_message_batch(batch)
    skipped = [e["index"] for e in errored_requests(state, tenant, batch["id"])] if listed else []

    def line(found: re.Match) -> str:
        n = int(found.group(1))
        return f"requests[{request_index(n, skipped)}]" if listed else f"line {n}"

    message = re.sub(re.escape(requests) + r",? line (\d+)", line, message)
    message = message.replace(requests, "the batch's requests" if listed else "the batch's input file")
    for name, served in sorted(config.models.items(), key=lambda m: -len(str(m[1].model.get("name", "")))):
        folder = str(served.model.get("name", ""))
        if "/" in folder:  # a folder or a URL of the server's (a hub id is public, but named as theirs too)
            message = message.replace(folder, name)
    for root in sorted({state.url_of(""), state.url, state.storage.path("")}, key=len, reverse=True):
        if root.rstrip("/"):  # the URL first: its path alone is in it
            message = message.replace(root.rstrip("/"), "<store>")
    return message.replace(tenant, "<tenant>")
