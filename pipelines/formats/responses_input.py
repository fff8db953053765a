"""OpenAI Responses' `input` read as chat messages, as vLLM's Responses server reads it
(vllm/entrypoints/openai/responses/utils.py construct_chat_messages_with_tool_call):

- message items keep their role, their text parts joined;
- `function_call` items join the assistant message before them (or start one) as its
  `tool_calls` [{id: call_id, type: function, function: {name, arguments}}], OpenAI chat's form;
- a `function_call_output` item is a {role: tool, tool_call_id, content} message; one whose
  call_id no earlier function_call made is refused, as OpenAI refuses it;
- a `reasoning` item (an earlier answer's thinking) is the `reasoning` of the assistant message
  before it (one that has none yet), or starts one, which the next function_call or assistant
  message joins; the chat template sees it as `reasoning_content` too (operators/prompts.py), and
  a thinking model's template shows it or drops it as it does at vLLM's server. vLLM reads the
  first text part (content, else summary); here all are joined, so nothing written is lost.
  Its `encrypted_content` is OpenAI's, which nothing here can read: refused, as vLLM does.

Every other item type and any unknown field is refused by name.
"""

from __future__ import annotations

from typing import Any

from pipelines.formats.lines import kind_of, shown, string_field
from spotbatch.errors import BatchFileError

ITEM_FIELDS = {
    "message": {"type", "role", "content", "id", "status"},
    "function_call": {"type", "call_id", "name", "arguments", "id", "status"},
    "function_call_output": {"type", "call_id", "output", "id", "status"},
    "reasoning": {"type", "id", "summary", "content", "status", "encrypted_content"},
}
MESSAGE_PARTS, OUTPUT_PARTS = ("input_text", "output_text"), ("input_text",)
REASONING_PARTS = {"summary": ("summary_text",), "content": ("reasoning_text",)}


def input_messages(items: Any, where: str) -> list[dict[str, Any]] | None:
    """The input as chat messages: a string is one user message; items as the module says."""
    if items is None or isinstance(items, str):
        return None if not items else [{"role": "user", "content": items}]
    if not isinstance(items, list):
        raise BatchFileError(f"{where}: body.input must be a string or a list of input items, got {kind_of(items)}")
    messages: list[dict[str, Any]] = []
    calls: set[str] = set()  # the call_ids made so far
    for i, item in enumerate(items):
        at = f"body.input[{i}]"
        kind = _kind(item, where, at)
        if kind == "message":
            message = {"role": item.get("role"), "content": _text(item.get("content"), where, f"{at}.content",
                                                                  MESSAGE_PARTS)}
            last = messages[-1] if messages else None
            if message["role"] == "assistant" and last and "reasoning" in last and last["content"] is None \
                    and not last.get("tool_calls"):
                last["content"] = message["content"]  # the answer its reasoning item began, as vLLM joins them
            else:
                messages.append(message)
        elif kind == "function_call":
            call = {"id": string_field(item.get("call_id"), where, f"{at}.call_id"), "type": "function",
                    "function": {"name": string_field(item.get("name"), where, f"{at}.name"),
                                 "arguments": string_field(item.get("arguments"), where, f"{at}.arguments")}}
            calls.add(call["id"])
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            call_id = string_field(item.get("call_id"), where, f"{at}.call_id")
            if call_id not in calls:
                raise BatchFileError(f"{where}: {at}.call_id {shown(call_id)}: no earlier function_call item made "
                                     f"this call (OpenAI refuses it too)")
            output = item.get("output")
            content = (_text(output, where, f"{at}.output", OUTPUT_PARTS) if isinstance(output, list)
                       else string_field(output, where, f"{at}.output"))
            messages.append({"role": "tool", "tool_call_id": call_id, "content": content})
        else:
            thought = _reasoning(item, where, at)
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "reasoning" not in last:
                last["reasoning"] = thought
            else:
                messages.append({"role": "assistant", "content": None, "reasoning": thought})
    return messages


def _kind(item: Any, where: str, at: str) -> str:
    """The item's type, one read here, with no field it does not have."""
    if not isinstance(item, dict):
        raise BatchFileError(f"{where}: {at} must be an object (an input item), got {kind_of(item)}")
    kind = item.get("type", "message")
    if kind not in ITEM_FIELDS:
        raise BatchFileError(f"{where}: {at}.type {shown(kind)} cannot be honoured: input items here are "
                             f"{', '.join(ITEM_FIELDS)}; refused rather than dropped")
    unknown = sorted(set(item) - ITEM_FIELDS[kind])
    if unknown:
        raise BatchFileError(f"{where}: {at}.{unknown[0]} is not a {kind} item field; refused rather than dropped")
    return kind


def _reasoning(item: dict[str, Any], where: str, at: str) -> str:
    """A reasoning item's text: its content's parts, else its summary's (as vLLM reads it)."""
    if item.get("encrypted_content") is not None:
        raise BatchFileError(f"{where}: {at}.encrypted_content cannot be honoured: it is OpenAI's, encrypted for "
                             f"its own models; refused rather than dropped")
    for field in REASONING_PARTS:
        if item.get(field) is not None and not isinstance(item[field], list):
            raise BatchFileError(f"{where}: {at}.{field} must be a list of text parts, got {kind_of(item[field])}")
    texts = {field: _text(item[field], where, f"{at}.{field}", kinds) if item.get(field) else ""
             for field, kinds in REASONING_PARTS.items()}
    return texts["content"] or texts["summary"]


def _text(content: Any, where: str, field: str, kinds: tuple[str, ...]) -> Any:
    """Content as text: a string, or text parts of `kinds` joined by newlines; images, files,
    audio and refusals are refused by name."""
    if not isinstance(content, list):
        return content  # a string, or what chat_messages_of names as wrong
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict):
            raise BatchFileError(f"{where}: {field}[{j}] must be an object (a content part), got {kind_of(part)}")
        kind = part.get("type")
        if kind not in kinds:
            raise BatchFileError(f"{where}: {field}[{j}].type {shown(kind)} cannot be honoured: only text parts "
                                 f"({', '.join(kinds)}) are read here; refused rather than dropped")
        unknown = sorted(set(part) - {"type", "text", "annotations", "logprobs"})
        if unknown:
            raise BatchFileError(f"{where}: {field}[{j}].{unknown[0]} is not a text part field; refused rather than "
                                 f"dropped")
        texts.append(string_field(part.get("text"), where, f"{field}[{j}].text"))
    return "\n".join(texts)
