"""Tool calls and reasoning out of a generated text, by vLLM's own parsers: part of the engine
adapter (operators/engine.py), so no other module touches vLLM.

A request's tools (OpenAI's `tools` and `tool_choice`, in its sampling) decide how it is parsed:
- required, or one function by name: the call is forced by structured output (the JSON schema
  vLLM's server derives from the functions' parameters), and parsed as vLLM's server parses it;
- auto: the model's own call format, parsed by the vLLM tool parser named in model.tool_parser;
- none: the tools were only shown to the chat template; no call is parsed.
With model.reasoning_parser, the thinking is split from the answer first (vLLM's reasoning
parsers: deepseek_r1, qwen3, ...) and its tokens counted.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields, replace
from typing import Any

FORCED = "spotbatch_forced"  # the tool parser for forced calls when the spec names none


@dataclass(frozen=True)
class Parsed:
    content: str  # the answer alone ("" when the model only called tools or only thought)
    reasoning: str | None
    tool_calls: list[dict[str, Any]] | None  # OpenAI's: [{id, type: function, function: {name, arguments}}]
    reasoning_tokens: int


def tools_of(sampling: dict[str, Any]) -> dict[str, Any]:
    """The fields of a request's sampling that are about tools (absent: none)."""
    return {k: sampling[k] for k in ("tools", "tool_choice", "parallel_tool_calls") if sampling.get(k) is not None}


def _forced_calls_parser():
    """A vLLM tool parser that finds only forced calls (required, a named function), which vLLM's
    parsing reads from the structured JSON itself; free text is never read as a call."""
    from vllm.entrypoints.generate.base.protocol import ExtractedToolCallInformation
    from vllm.tool_parsers import ToolParserManager
    from vllm.tool_parsers.abstract_tool_parser import ToolParser

    class ForcedCallsOnly(ToolParser):
        supports_required_and_named = True

        def extract_tool_calls(self, model_output, request):
            return ExtractedToolCallInformation(tools_called=False, tool_calls=[], content=model_output)

    ToolParserManager.register_module(FORCED, module=ForcedCallsOnly)


class OutputParsing:
    """The parsers of one engine: built once, with the engine's tokenizer."""

    def __init__(self, tokenizer: Any, tool_parser: str | None, reasoning_parser: str | None,
                 chat_template_kwargs: dict[str, Any] | None = None):
        from vllm.parser import ParserManager

        _forced_calls_parser()
        self.tokenizer = tokenizer
        self.reasoning = bool(reasoning_parser)
        self.chat_template_kwargs = chat_template_kwargs or {}  # the model's; a request's own go over them

        def parser(tools: str | None, field: str):
            try:
                return ParserManager.get_parser(tool_parser_name=tools, reasoning_parser_name=reasoning_parser,
                                                enable_auto_tools=True, tokenizer=tokenizer)
            except (TypeError, KeyError, ValueError, ImportError) as err:  # ImportError: a parser's own package
                raise ValueError(f"{field} cannot be used with this model: {err}") from err

        what = "model.reasoning_parser" if reasoning_parser else "the forced tool call parser"
        self.forced = parser(FORCED, what)
        self.auto = parser(tool_parser, f"model.tool_parser {tool_parser!r}") if tool_parser else None
        self._requests: dict[str, Any] = {}

    def needed(self, sampling: dict[str, Any]) -> bool:
        return self.reasoning or bool(sampling.get("tools"))

    def _request(self, sampling: dict[str, Any]):
        """vLLM's ChatCompletionRequest for a request's tools: what its parsers read."""
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

        tools = tools_of(sampling)
        key = json.dumps(tools, sort_keys=True)
        found = self._requests.get(key)
        if found is None:
            found = ChatCompletionRequest.model_validate(
                {"model": "", "messages": [{"role": "user", "content": ""}], **tools, "include_reasoning": True})
            if len(self._requests) > 1000:
                self._requests.clear()
            self._requests[key] = found
        # A copy: vLLM's schema helpers pop the tools' $defs in place, which would leave every
        # later row of the same tools a $ref to nothing.
        return found.model_copy(deep=True)

    def engine_sampling(self, sampling: dict[str, Any]) -> dict[str, Any]:
        """A parsed request's sampling as the engine runs it: with the structured output that forces
        its call (if any), and what its tool parser's adjust_request asks of the engine, as vLLM's
        server applies it (hermes, kimi_k2, ...: the call's markers are special tokens, kept in the
        text so the parser finds them). ValueError says why the request cannot be run."""
        if sampling.get("n", 1) > 1:
            raise ValueError("n > 1 with tools or a reasoning parser: each result row keeps one choice's tool "
                             "calls and reasoning; ask for n: 1")
        auto = bool(sampling.get("tools")) and sampling.get("tool_choice") in (None, "auto")
        if auto and self.auto is None:
            raise ValueError("tool_choice auto needs model.tool_parser (hermes, llama3_json, ...)")
        if auto:
            return {**sampling, **self._auto_adjustments(sampling)}
        schema = self.forced_schema(sampling)
        return sampling if schema is None else {**sampling, "response_format": None, "structured": {"json": schema}}

    def _auto_adjustments(self, sampling: dict[str, Any]) -> dict[str, Any]:
        """What the tool parser's adjust_request sets on an auto request: its detokenizing, and the
        structural tag some parsers hold a call's envelope (and a strict tool's arguments) to."""
        request = self._request(sampling)
        parser = self.auto(self.tokenizer, request.tools, chat_template_kwargs=self.template_kwargs(sampling))
        adjusted = parser.adjust_request(request)
        found = {"skip_special_tokens": adjusted.skip_special_tokens,
                 "spaces_between_special_tokens": adjusted.spaces_between_special_tokens}
        made = adjusted.structured_outputs
        if made is not None:
            found["structured"] = {f.name: getattr(made, f.name) for f in fields(made)
                                   if f.init and not f.name.startswith("_") and getattr(made, f.name) != f.default}
            found["response_format"] = None
        return found

    def engine_request(self, engine: Any, request_id: str, prompt: Any, params: Any,
                       row: tuple[dict[str, Any], Any]) -> Any:
        """A structured request as the engine takes it: with a reasoning parser, the template's
        variables that tell the engine's parser whether the prompt left a thinking block open (Qwen3's
        enable_thinking: false closes it), as vLLM's server sends them; without them, its structured
        output would wait for the end of a thinking never opened. `row`: the row's sampling and its
        LoRA request (None: none), which a request processed here must carry itself."""
        if not self.reasoning:
            return prompt
        sampling, lora = row
        request = engine.input_processor.process_inputs(request_id, prompt, params, lora_request=lora,
                                                        supported_tasks=engine.get_supported_tasks())
        request.reasoning_parser_kwargs = {"chat_template_kwargs": self.template_kwargs(sampling)}
        return request

    def forced_schema(self, sampling: dict[str, Any]) -> dict[str, Any] | None:
        """The JSON schema that forces a required or named call (None: nothing forced), as vLLM's
        server builds it from the functions' parameters."""
        if not sampling.get("tools") or sampling.get("tool_choice") in (None, "auto", "none"):
            return None
        from vllm.tool_parsers.utils import get_json_schema_from_tools

        request = self._request(sampling)
        return get_json_schema_from_tools(request.tool_choice, request.tools, request.parallel_tool_calls)

    def template_kwargs(self, sampling: dict[str, Any]) -> dict[str, Any]:
        """The template's variables, which tell a reasoning parser how the prompt ended (Qwen3's
        enable_thinking: false leaves no thinking open), as vLLM's server gives them."""
        return {**self.chat_template_kwargs, **(sampling.get("chat_template_kwargs") or {})}

    def parse(self, text: str, token_ids: list[int], sampling: dict[str, Any]) -> Parsed:
        """A finished choice's text split into reasoning, answer and tool calls."""
        request = self._request(sampling)
        auto = sampling.get("tools") and sampling.get("tool_choice") in (None, "auto")
        parser = (self.auto if auto else self.forced)(self.tokenizer, request.tools,
                                                      chat_template_kwargs=self.template_kwargs(sampling))
        reasoning, content, calls = parser.parse(text, request, enable_auto_tools=bool(auto),
                                                 model_output_token_ids=token_ids)
        if sampling.get("parallel_tool_calls") is False:
            calls = (calls or [])[:1]  # as vLLM's server keeps them: the first call only
        reasoning_tokens = parser.count_reasoning_tokens(token_ids) if self.reasoning else 0
        tool_calls = [{"id": _call_id(i, c.name, c.arguments), "type": "function",
                       "function": {"name": c.name, "arguments": c.arguments}} for i, c in enumerate(calls or [])]
        return Parsed(content or "", reasoning, tool_calls or None, reasoning_tokens)


def parsed_completion(completion: Any, out: Any, parsing: OutputParsing,
                      sampling: dict[str, Any]) -> Any:
    """A completion whose (one) choice is split into reasoning, answer and tool calls. A choice
    that called a tool, unless one function was named (as at OpenAI), finished for tool_calls."""
    first = min(out.outputs, key=lambda c: c.index)
    parsed = parsing.parse(first.text, list(first.token_ids), sampling)
    finish = completion.finish_reason
    if parsed.tool_calls and finish == "stop" and not isinstance(sampling.get("tool_choice"), dict):
        finish = "tool_calls"
    choices = tuple(replace(c, text=parsed.content, finish_reason=finish, reasoning=parsed.reasoning,
                            tool_calls=parsed.tool_calls, reasoning_tokens=parsed.reasoning_tokens)
                    for c in completion.choices)
    return replace(completion, text=parsed.content, finish_reason=finish, reasoning=parsed.reasoning,
                   tool_calls=parsed.tool_calls, reasoning_tokens=parsed.reasoning_tokens, choices=choices)


def _call_id(index: int, name: str, arguments: str) -> str:
    """A call's id, the same for the same answer (a resumed or cached row keeps its ids)."""
    return "call_" + hashlib.sha256(f"{index}:{name}:{arguments}".encode()).hexdigest()[:24]


def holds_auto_calls(tool_parser: str) -> bool:
    """Whether vLLM holds this parser's auto calls to a structural tag (a strict function's arguments
    to its schema), as its server does through the parser's adjust_request: checked on the driver."""
    from vllm.tool_parsers import ToolParserManager

    return ToolParserManager.get_tool_parser(tool_parser).structural_tag_model is not None


def unknown_parser(kind: str, name: str) -> str | None:
    """Why `name` is not one of vLLM's parsers of `kind` ("tool" or "reasoning"), or None: checked
    on the driver, before any engine starts."""
    if kind == "tool":
        from vllm.tool_parsers import ToolParserManager as manager

        known = {*manager.tool_parsers, *manager.lazy_parsers}
    else:
        from vllm.reasoning import ReasoningParserManager as manager

        known = {*manager.reasoning_parsers, *manager.lazy_parsers}
    if name in known:
        return None
    return f"{name!r} is not one of vLLM's {kind} parsers ({', '.join(sorted(known))})"
