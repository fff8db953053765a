"""Chat messages as the providers write them, read into the plain form a chat template takes."""

from __future__ import annotations

import json
from typing import Any

from pipelines.inputs import InputError

ROLES = {"system", "developer", "user", "assistant"}
MESSAGE_FIELDS = {"role", "content", "name"}


def text_of(content: Any, where: str) -> str | None:
    """A message's content as text: a string, or a list of text parts (joined by newlines, as
    vLLM's server does); any other part (an image, audio, a file, a document) is refused."""
    if isinstance(content, str) or content is None:
        return content
    if not isinstance(content, list):
        raise InputError(f"{where} must be a string or a list of parts, got {type(content).__name__}")
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "text" or not isinstance(part.get("text"), str):
            raise InputError(f"{where}[{j}].type {kind!r} cannot be honoured: only text parts are read here; "
                             f"refused rather than dropped")
        unknown = sorted(set(part) - {"type", "text", "cache_control"})  # cache_control: a provider's billing hint
        if unknown:
            raise InputError(f"{where}[{j}].{unknown[0]} is not a text part field; refused rather than dropped")
        texts.append(part["text"])
    return "\n".join(texts)


def chat_messages_of(messages: Any, where: str, system: str | None = None) -> str | None:
    """The messages as a JSON list of {role, content[, name]}, or None when there are none (that
    row becomes an error record, as a request the provider would refuse)."""
    if not isinstance(messages, list) or not messages:
        return None
    out = [{"role": "system", "content": system}] if system is not None else []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InputError(f"{where}[{i}] must be an object, got {type(message).__name__}")
        role = message.get("role")
        if role not in ROLES:
            raise InputError(f"{where}[{i}].role {role!r} cannot be honoured: roles here are "
                             f"{', '.join(sorted(ROLES))} (tool results need tool calls, which are not run)")
        unknown = sorted(set(message) - MESSAGE_FIELDS)
        if unknown:
            raise InputError(f"{where}[{i}].{unknown[0]} cannot be honoured; refused rather than dropped")
        # OpenAI's developer messages are system messages for every model but its reasoning ones.
        read = {"role": "system" if role == "developer" else role,
                "content": text_of(message.get("content"), f"{where}[{i}].content")}
        if "name" in message:
            read["name"] = message["name"]
        out.append(read)
    return json.dumps(out)
