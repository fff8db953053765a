"""Tools as OpenAI's chat API writes them, checked where a spec or a row gives them: `tools` (the
functions a model may call) and `tool_choice` (none, auto, required, or one function by name).

>>> tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
>>> check_tools(tools) == tools
True
>>> choice_of({"type": "function", "function": {"name": "get_weather"}}, tools)
'get_weather'
>>> choice_of(None, tools), choice_of(None, None)
('auto', 'none')
>>> check_tool_choice({"type": "function", "function": {"name": "nope"}}, tools)
Traceback (most recent call last):
ValueError: tool_choice names function 'nope', which tools does not define (defined: get_weather)
"""

from __future__ import annotations

from typing import Any

CHOICES = ("none", "auto", "required")
TOOL_FIELDS = {"type", "function"}
FUNCTION_FIELDS = {"name", "description", "parameters", "strict"}


def check_tools(tools: Any) -> list[dict[str, Any]] | None:
    """`tools`, a list of {type: function, function: {name, description, parameters, strict}}."""
    if tools is None:
        return None
    if not isinstance(tools, list) or not tools:
        raise ValueError("tools must be a non-empty list of {type: function, function: {name, parameters}}")
    names = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
            raise ValueError(f"tools[{i}] must be {{type: function, function: {{name, parameters}}}} (only "
                             f"function tools are run here)")
        extra = sorted(set(tool) - TOOL_FIELDS) or sorted(set(tool["function"]) - FUNCTION_FIELDS)
        if extra:
            raise ValueError(f"tools[{i}]: {extra[0]} is not a function tool field; refused rather than dropped")
        function = tool["function"]
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"tools[{i}].function.name must be a non-empty string")
        if not isinstance(function.get("parameters", {}), dict):
            raise ValueError(f"tools[{i}].function.parameters must be a JSON Schema object")
        if name in names:
            raise ValueError(f"tools[{i}].function.name {name!r} is defined twice")
        names.append(name)
    return tools


def check_tool_choice(choice: Any, tools: list[dict[str, Any]] | None) -> Any:
    """`tool_choice`: none, auto, required, or {type: function, function: {name}} of one of `tools`."""
    if choice is None:
        return None
    if isinstance(choice, str):
        if choice not in CHOICES:
            raise ValueError(f"tool_choice must be none, auto, required or {{type: function, function: {{name}}}}, "
                             f"got {choice!r}")
    elif not (isinstance(choice, dict) and choice.get("type") == "function" and set(choice) == {"type", "function"}
              and isinstance(choice["function"], dict) and set(choice["function"]) == {"name"}):
        raise ValueError("tool_choice must be none, auto, required or {type: function, function: {name}}")
    if choice != "none" and not tools:
        raise ValueError("tool_choice needs tools (the functions it chooses among)")
    name = choice["function"]["name"] if isinstance(choice, dict) else None
    defined = [t["function"]["name"] for t in tools or []]
    if name is not None and name not in defined:
        raise ValueError(f"tool_choice names function {name!r}, which tools does not define "
                         f"(defined: {', '.join(defined)})")
    return choice


def choice_of(choice: Any, tools: list[dict[str, Any]] | None) -> str:
    """What a request's tools ask for: none, auto, required, or a function's name. Without a
    tool_choice, tools mean auto, as at OpenAI."""
    if isinstance(choice, dict):
        return choice["function"]["name"]
    return choice or ("auto" if tools else "none")


def auto_refusal(sampling: dict[str, Any], tool_parser: str | None) -> str | None:
    """Why a request's tools cannot run on a model without a tool parser (None: they can)."""
    if tool_parser or choice_of(sampling.get("tool_choice"), sampling.get("tools")) != "auto":
        return None
    return ("tool_choice auto (OpenAI's default when tools are given) needs model.tool_parser, the vLLM tool "
            "parser of the model's call format (hermes, llama3_json, mistral, ...); or set tool_choice to "
            "required, a function ({type: function, function: {name}}) or none")


def strict_refusal(sampling: dict[str, Any], tool_parser: str | None) -> str | None:
    """Why a strict function cannot be held to its schema with tool_choice auto (None: it can, or
    nothing asks). vLLM holds an auto call's arguments to a strict function's schema by the
    structural tag of the tool parser's format; a parser with none would leave `strict` unkept."""
    if choice_of(sampling.get("tool_choice"), sampling.get("tools")) != "auto" or not tool_parser:
        return None
    strict = [i for i, tool in enumerate(sampling.get("tools") or []) if tool["function"].get("strict")]
    from operators.output_parsing import holds_auto_calls

    if not strict or holds_auto_calls(tool_parser):
        return None
    return (f"tools[{strict[0]}].function.strict: true cannot be kept with tool_choice auto: vLLM's {tool_parser} "
            f"tool parser has no structural tag to hold a call's arguments to the schema; use tool_choice "
            f"required or a named function (forced by structured output), a tool parser that has one "
            f"(hermes, qwen3_json, llama3_json, ...), or strict: false")
