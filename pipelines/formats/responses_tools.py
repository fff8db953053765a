"""OpenAI Responses' function tools, read into the chat's (the row's sampling holds OpenAI chat's
`tools` and `tool_choice`), and calls and reasoning written back as Responses output items. In:
`tools` [{type: function, name, description, parameters, strict}], `tool_choice` (none, auto,
required, {type: function, name}), `parallel_tool_calls`. Out: `reasoning` and `function_call`
items beside the message."""

from __future__ import annotations

import json
from typing import Any

from pipelines.formats.lines import shown
from pipelines.spec.tools import check_tool_choice, check_tools
from spotbatch.errors import BatchFileError

FUNCTION_FIELDS = {"type", "name", "description", "parameters", "strict"}


def tool_sampling(body: dict[str, Any], where: str) -> dict[str, Any]:
    """A body's function tools and choice as the chat's sampling fields ({} without tools)."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    sampling: dict[str, Any] = {}
    if tools is not None:
        if not isinstance(tools, list):
            raise BatchFileError(f"{where}: field body.tools must be a list of function tools")
        functions = []
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or tool.get("type") != "function":
                kind = tool.get("type") if isinstance(tool, dict) else tool
                raise BatchFileError(f"{where}: field body.tools[{i}] type {shown(kind)} cannot be honoured: only "
                                     f"function tools are run here (built-in tools are OpenAI's: web search, file "
                                     f"search, code interpreter)")
            unknown = sorted(set(tool) - FUNCTION_FIELDS)
            if unknown:
                raise BatchFileError(f"{where}: field body.tools[{i}].{unknown[0]} is not a function tool field; "
                                     f"refused rather than dropped")
            functions.append({"type": "function", "function": {k: v for k, v in tool.items() if k != "type"}})
        sampling["tools"] = functions
    if choice is not None:
        sampling["tool_choice"] = ({"type": "function", "function": {"name": choice.get("name")}}
                                   if isinstance(choice, dict) and set(choice) == {"type", "name"}
                                   and choice.get("type") == "function" else choice)
    if body.get("parallel_tool_calls") is not None:
        sampling["parallel_tool_calls"] = body["parallel_tool_calls"]
    try:
        check_tool_choice(sampling.get("tool_choice"), check_tools(sampling.get("tools")))
    except ValueError as err:
        raise BatchFileError(f"{where}: field body.{err}") from None
    return sampling


def output_items(custom_id: str, row: dict[str, Any]) -> list[dict[str, Any]]:
    """The items before and after the message: the reasoning, then the function calls."""
    items: list[dict[str, Any]] = []
    if row.get("reasoning") is not None:
        items.append({"type": "reasoning", "id": f"rs_{custom_id}", "summary": [],
                      "content": [{"type": "reasoning_text", "text": row["reasoning"]}]})
    calls = json.loads(row["tool_calls"]) if row.get("tool_calls") else []
    items += [{"type": "function_call", "id": f"fc_{c['id']}", "call_id": c["id"], "name": c["function"]["name"],
               "arguments": c["function"]["arguments"], "status": "completed"} for c in calls]
    return items


def echoed(sampling_json: str | None) -> dict[str, Any]:
    """The request's tools, tool_choice and parallel_tool_calls as a response returns them."""
    sampling = json.loads(sampling_json) if sampling_json else {}
    tools = [{"type": "function", **t["function"]} for t in sampling.get("tools") or []]
    choice = sampling.get("tool_choice") or ("auto" if tools else "none")
    if isinstance(choice, dict):
        choice = {"type": "function", "name": choice["function"]["name"]}
    return {"tools": tools, "tool_choice": choice, "parallel_tool_calls": sampling.get("parallel_tool_calls", True)
            if tools else False}
