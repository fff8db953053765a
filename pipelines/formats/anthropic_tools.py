"""Anthropic's tools in a Messages request, read into OpenAI's shapes (the row's sampling and
messages hold OpenAI's, pipelines/formats/openai_chat.py), and calls written back as tool_use
blocks. In: `tools` [{name, description, input_schema}], `tool_choice` {type: auto|any|tool|none,
name, disable_parallel_tool_use}; assistant `tool_use` (and `thinking`) blocks and user `tool_result`
blocks in the history. Out: tool_use blocks {id, name, input}."""

from __future__ import annotations

import json
from typing import Any

from pipelines.formats.lines import kind_of, shown, string_field
from pipelines.spec.tools import check_tool_choice, check_tools
from spotbatch.errors import BatchFileError

TOOL_FIELDS = {"name", "description", "input_schema", "type", "cache_control"}
# A history's blocks; cache_control is a provider's billing hint (the engine's prefix cache needs none).
BLOCK_FIELDS = {"tool_use": {"type", "id", "name", "input", "cache_control"},
                "tool_result": {"type", "tool_use_id", "content", "is_error", "cache_control"},
                # An assistant turn's thinking, which Anthropic asks be sent back in a tool-use trace made
                # with thinking; its signature (Anthropic's check of it) is not read by any engine here.
                "thinking": {"type", "thinking", "signature", "cache_control"},
                "redacted_thinking": {"type", "data", "cache_control"}}
THOUGHTS = ("thinking", "redacted_thinking")  # an assistant turn's own; in a user turn, refused by the reader
ERROR_PREFIX = "Error: "  # how a tool_result with is_error: true reads to the model (the template sees text)
CHOICES = {"auto": "auto", "any": "required", "none": "none"}


def tool_sampling(params: dict[str, Any], where: str) -> dict[str, Any]:
    """A request's tools and tool_choice as OpenAI's sampling fields ({} without tools)."""
    tools, choice = params.get("tools"), params.get("tool_choice")
    if tools is None and choice is None:
        return {}
    if not isinstance(tools, list):
        raise BatchFileError(f"{where}: field params.tools must be a list of tools, got {kind_of(tools)}")
    functions = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type", "custom") != "custom" or "input_schema" not in tool:
            raise BatchFileError(f"{where}: field params.tools[{i}] cannot be honoured: only client tools "
                                 f"{{name, description, input_schema}} are run here (Anthropic's server tools "
                                 f"are not)")
        unknown = sorted(set(tool) - TOOL_FIELDS)
        if unknown:
            raise BatchFileError(f"{where}: field params.tools[{i}].{unknown[0]} is not a tool field spotbatch "
                                 f"knows; refused rather than dropped")
        functions.append({"type": "function", "function": {
            "name": tool.get("name"), "parameters": tool["input_schema"],
            **({"description": tool["description"]} if "description" in tool else {})}})
    sampling: dict[str, Any] = {"tools": functions}
    if choice is not None:
        sampling.update(_choice(choice, where))
    try:
        check_tool_choice(sampling.get("tool_choice"), check_tools(functions))
    except ValueError as err:
        raise BatchFileError(f"{where}: field params.{err}") from None
    return sampling


def _choice(choice: Any, where: str) -> dict[str, Any]:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind not in (*CHOICES, "tool") or set(choice) - {"type", "name", "disable_parallel_tool_use"}:
        raise BatchFileError(f"{where}: field params.tool_choice must be {{type: auto|any|tool|none}} "
                             f"(with name for tool), got {shown(choice)}")
    out: dict[str, Any] = {"tool_choice": CHOICES.get(kind) or {
        "type": "function", "function": {"name": string_field(choice.get("name"), where, "params.tool_choice.name")}}}
    if choice.get("disable_parallel_tool_use"):
        out["parallel_tool_calls"] = False
    return out


def openai_messages(messages: Any, where: str) -> Any:
    """The history with its tool_use and tool_result blocks as OpenAI's tool_calls and tool
    messages, and an assistant turn's thinking blocks as its `reasoning` (joined, as vLLM's
    Anthropic server reads them; redacted_thinking, Anthropic's encrypted thinking, dropped as
    vLLM drops it: no engine here can read it); anything else is left for the messages reader."""
    if not isinstance(messages, list):
        return messages
    out: list[Any] = []
    for i, m in enumerate(messages):
        blocks = m.get("content") if isinstance(m, dict) else None
        if not isinstance(blocks, list):
            out.append(m)
            continue
        read = ("tool_use", "tool_result", *(THOUGHTS if m.get("role") == "assistant" else ()))
        kinds = [b.get("type") if isinstance(b, dict) else None for b in blocks]  # not a block: the reader's
        if not any(kind in read for kind in kinds):
            out.append(m)
            continue
        at = f"params.messages[{i}].content"
        _check_blocks(blocks, where, at)
        uses = [b for b, kind in zip(blocks, kinds) if kind == "tool_use"]
        results = [b for b, kind in zip(blocks, kinds) if kind == "tool_result"]
        thoughts = [string_field(b.get("thinking"), where, f"{at}[{j}].thinking")
                    for j, (b, kind) in enumerate(zip(blocks, kinds)) if kind == "thinking" and kind in read]
        rest = [b for b, kind in zip(blocks, kinds) if kind not in read]
        out += [{"role": "tool", "tool_call_id": string_field(r.get("tool_use_id"), where, f"{at}[].tool_use_id"),
                 "content": _result_content(r, where, at)} for r in results]
        if len(results) < len(blocks):  # a turn of thinking alone is a turn too, as at vLLM
            message: dict[str, Any] = {"role": m.get("role"), "content": rest or (None if uses else "")}
            if thoughts:
                message["reasoning"] = "".join(thoughts)
            if uses:
                message["tool_calls"] = [{"id": string_field(u.get("id"), where, f"{at}[].id"), "type": "function",
                                          "function": {"name": string_field(u.get("name"), where, f"{at}[].name"),
                                                       "arguments": json.dumps(u.get("input", {}))}} for u in uses]
            out.append(message)
    return out


def _check_blocks(blocks: list[Any], where: str, at: str) -> None:
    """tool_use and tool_result blocks hold only the fields read here: any other is refused by name."""
    for j, block in enumerate(blocks):
        known = BLOCK_FIELDS.get(block.get("type")) if isinstance(block, dict) else None
        unknown = sorted(set(block) - known) if known else []
        if unknown:
            raise BatchFileError(f"{where}: field {at}[{j}].{unknown[0]} is not a {block['type']} field spotbatch "
                                 f"knows ({', '.join(sorted(known))}); refused rather than dropped")
        if known and block["type"] == "tool_result" and not isinstance(block.get("is_error", False), bool):
            raise BatchFileError(f"{where}: field {at}[{j}].is_error must be true or false, "
                                 f"got {kind_of(block['is_error'])}")


def _result_content(block: dict[str, Any], where: str, at: str) -> Any:
    """A tool_result as a tool message's content; a failed call's (is_error: true) reads "Error: ...",
    since OpenAI's tool message, and so a chat template, has no field that says so."""
    content = _result_text(block.get("content"), where, at)
    return ERROR_PREFIX + content if block.get("is_error") and isinstance(content, str) else content


def _result_text(content: Any, where: str, at: str) -> Any:
    """A tool_result's content: a string, or text blocks (others are left for the reader to refuse)."""
    if isinstance(content, list) and all(isinstance(b, dict) and b.get("type") == "text" for b in content):
        return "\n".join(string_field(b.get("text"), where, f"{at}[].content[].text") for b in content)
    return content if content is not None else ""


def content_blocks(row: dict[str, Any]) -> list[dict[str, Any]]:
    """A result row as Anthropic's content: its thinking, its text, its tool_use blocks."""
    blocks: list[dict[str, Any]] = []
    if row.get("reasoning") is not None:
        blocks.append({"type": "thinking", "thinking": row["reasoning"], "signature": ""})
    calls = json.loads(row["tool_calls"]) if row.get("tool_calls") else []
    if row["output"] or not calls:
        blocks.append({"type": "text", "text": row["output"]})
    blocks += [{"type": "tool_use", "id": c["id"], "name": c["function"]["name"],
                "input": call_input(c["function"]["arguments"])} for c in calls]
    return blocks


def call_input(arguments: str) -> dict[str, Any]:
    """A call's arguments as Anthropic's `input` object. A call cut off by max_tokens has text
    that is no JSON object: its input is empty (its stop_reason says max_tokens), never a crash
    that ends the whole export."""
    try:
        found = json.loads(arguments)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}
