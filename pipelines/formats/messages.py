"""Chat messages as the providers write them, read into the plain form a chat template takes.
`where` names the file and line, `field` the request field read (e.g. body.messages)."""

from __future__ import annotations

import json
from typing import Any

from pipelines.formats.lines import kind_of, shown, string_field
from spotbatch.errors import BatchFileError

ROLES = {"system", "developer", "user", "assistant", "tool"}
MESSAGE_FIELDS = {"role", "content", "name"}
# An agent trace's history: an assistant's calls, and the tool's answer to each (by its call's id).
ROLE_FIELDS = {"assistant": {"tool_calls", "reasoning"}, "tool": {"tool_call_id"}}  # reasoning: vLLM's, earlier
# thinking for templates that show it (a Responses reasoning item's, pipelines/formats/responses_input.py)
CALL_FIELDS = {"id", "type", "function"}


def text_of(content: Any, where: str, field: str) -> str | None:
    """A message's content as text: a string, or a list of text parts (joined by newlines, as
    vLLM's server does); any other part (an image, audio, a file, a document) is refused."""
    if isinstance(content, str) or content is None:
        return content
    if not isinstance(content, list):
        raise BatchFileError(f"{where}: {field} must be a string or a list of parts, got {kind_of(content)}")
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict):
            raise BatchFileError(f"{where}: {field}[{j}] must be an object (a content part), got {kind_of(part)}")
        kind = part.get("type")
        if kind != "text":
            raise BatchFileError(f"{where}: {field}[{j}].type {shown(kind)} cannot be honoured: only text parts are "
                             f"read here; refused rather than dropped")
        unknown = sorted(set(part) - {"type", "text", "cache_control"})  # cache_control: a provider's billing hint
        if unknown:
            raise BatchFileError(f"{where}: {field}[{j}].{unknown[0]} is not a text part field; refused rather than "
                             f"dropped")
        texts.append(string_field(part.get("text"), where, f"{field}[{j}].text"))
    return "\n".join(texts)


def role_of(message: dict[str, Any], where: str, field: str, roles: set[str], why: str) -> str:
    """The message's role, one of `roles`; `why` says what the others are not."""
    role = string_field(message.get("role"), where, f"{field}.role")
    if role not in roles:
        raise BatchFileError(f"{where}: {field}.role {shown(role)} cannot be honoured: {why}")
    return role


def chat_messages_of(messages: Any, where: str, field: str, system: str | None = None) -> str | None:
    """The messages as a JSON list of {role, content[, name]}, or None when there are none (that
    row becomes an error record, as a request the provider would refuse)."""
    if not isinstance(messages, list) or not messages:
        return None
    out = [{"role": "system", "content": system}] if system is not None else []
    for i, message in enumerate(messages):
        at = f"{field}[{i}]"
        if not isinstance(message, dict):
            raise BatchFileError(f"{where}: {at} must be an object, got {kind_of(message)}")
        role = role_of(message, where, at, ROLES, f"roles here are {', '.join(sorted(ROLES))} (OpenAI's "
                                                  f"function role is the older name of tool)")
        unknown = sorted(set(message) - MESSAGE_FIELDS - ROLE_FIELDS.get(role, set()))
        if unknown:
            raise BatchFileError(f"{where}: {at}.{unknown[0]} cannot be honoured; refused rather than dropped")
        # OpenAI's developer messages are system messages for every model but its reasoning ones.
        read = {"role": "system" if role == "developer" else role,
                "content": text_of(message.get("content"), where, f"{at}.content")}
        if "name" in message:
            read["name"] = string_field(message["name"], where, f"{at}.name")
        if "tool_calls" in message:
            read["tool_calls"] = tool_calls_of(message["tool_calls"], where, f"{at}.tool_calls")
        if "reasoning" in message:
            read["reasoning"] = string_field(message["reasoning"], where, f"{at}.reasoning")
        if role == "tool":
            read["tool_call_id"] = string_field(message.get("tool_call_id"), where, f"{at}.tool_call_id")
        out.append(read)
    return json.dumps(out)


def tool_calls_of(calls: Any, where: str, field: str) -> list[dict[str, Any]]:
    """An assistant message's earlier calls: [{id, type: function, function: {name, arguments}}],
    arguments as JSON text (OpenAI's), kept as written."""
    if not isinstance(calls, list):
        raise BatchFileError(f"{where}: {field} must be a list of calls, got {kind_of(calls)}")
    for j, call in enumerate(calls):
        at = f"{field}[{j}]"
        if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
            raise BatchFileError(f"{where}: {at} must be {{id, type: function, function: {{name, arguments}}}}")
        unknown = sorted(set(call) - CALL_FIELDS) or sorted(set(call["function"]) - {"name", "arguments"})
        if unknown:
            raise BatchFileError(f"{where}: {at}.{unknown[0]} is not a tool call field; refused rather than dropped")
        if call.get("type", "function") != "function":
            raise BatchFileError(f"{where}: {at}.type {shown(call.get('type'))} cannot be honoured: only function "
                                 f"calls are run here")
        string_field(call.get("id"), where, f"{at}.id")
        string_field(call["function"].get("name"), where, f"{at}.function.name")
        string_field(call["function"].get("arguments"), where, f"{at}.function.arguments")
    return calls
