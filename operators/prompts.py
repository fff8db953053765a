"""Prompt rendering: the user text of each row, from one column or a template over columns.

A row that cannot give a prompt (null or empty) gets an error string instead; the other rows
go on. The model's chat template is applied later, by the engine adapter, which owns the
tokenizer.

>>> r = PromptRenderer(template="Label: {text}")
>>> r.render({"text": ["good", None, "  "]})
(['Label: good', None, None], [None, "column 'text' is null", 'prompt is empty'])
"""

from __future__ import annotations

import json
import string
from typing import Any


def chat_messages(prompt: str, system_prompt: str | None, fmt: str = "chat") -> list[dict[str, Any]]:
    """The chat a prompt stands for. fmt "chat": one user message; "messages": the prompt is a
    JSON list of messages (an OpenAI batch body's). The system prompt goes first unless the
    messages bring their own.

    >>> chat_messages("Hi", "Be brief.")
    [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Hi'}]
    """
    messages = json.loads(prompt) if fmt == "messages" else [{"role": "user", "content": prompt}]
    messages = [_reasoning_for_template(m) for m in map(_calls_for_template, messages)]
    if system_prompt and not any(m.get("role") == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def _reasoning_for_template(message: Any) -> Any:
    """An earlier turn's thinking under both names templates read, as vLLM's server gives it; a
    message of thinking alone (a Responses reasoning item no answer joined) has "" for content, as
    vLLM gives a template, where a template joining None to text would fail.

    >>> _reasoning_for_template({"role": "assistant", "content": None, "reasoning": "Hm."})
    {'role': 'assistant', 'content': '', 'reasoning': 'Hm.', 'reasoning_content': 'Hm.'}
    """
    if not isinstance(message, dict) or "reasoning" not in message:
        return message
    content = "" if message.get("content") is None else message["content"]
    return {**message, "content": content, "reasoning_content": message["reasoning"]}


def _calls_for_template(message: dict[str, Any]) -> dict[str, Any]:
    """An assistant message with earlier tool calls, its arguments as objects: OpenAI writes them
    as JSON text, chat templates (as vLLM's server gives them) read objects.

    >>> _calls_for_template({"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": '{"a": 1}'}}]})
    {'role': 'assistant', 'tool_calls': [{'function': {'name': 'f', 'arguments': {'a': 1}}}]}
    """
    calls = message.get("tool_calls") if isinstance(message, dict) else None
    if not calls:
        return message

    def read(arguments: Any) -> Any:
        try:
            return json.loads(arguments) if isinstance(arguments, str) else arguments
        except ValueError:
            return arguments  # not JSON: the template shows the text as it is

    return {**message, "tool_calls": [{**c, "function": {**c["function"], "arguments": read(
        c["function"].get("arguments"))}} if isinstance(c, dict) and isinstance(c.get("function"), dict) else c
        for c in calls]}


class InvalidText(str):
    """A value read as text that is not text (invalid UTF-8): says why, for the row's error."""


class PromptRenderer:
    def __init__(self, prompt_column: str | None = None, template: str | None = None):
        if (prompt_column is None) == (template is None):
            raise ValueError("give exactly one of prompt_column or template")
        self.prompt_column = prompt_column
        self.template = template
        if template is not None:
            self.columns = [f for _, f, _, _ in string.Formatter().parse(template) if f]
        else:
            self.columns = [prompt_column]

    def render(self, columns: dict[str, list[Any]]) -> tuple[list[str | None], list[str | None]]:
        """Prompts and errors, one of each per row; exactly one of the pair is None."""
        n = len(columns[self.columns[0]])
        prompts: list[str | None] = []
        errors: list[str | None] = []
        for i in range(n):
            text, error = self._one({c: columns[c][i] for c in self.columns})
            prompts.append(text)
            errors.append(error)
        return prompts, errors

    def _one(self, row: dict[str, Any]) -> tuple[str | None, str | None]:
        """
        >>> PromptRenderer(template="{n:d} items").render({"n": ["three"]})[1]
        ["template '{n:d} items' does not fit this row: Unknown format code 'd' for object of type 'str'"]
        """
        for name, value in row.items():
            what = "prompt" if self.template is None else f"column {name!r}"
            if value is None:
                return None, f"{what} is null"
            if isinstance(value, InvalidText):
                return None, f"{what} is {value}"
        if self.template is None:
            value = row[self.prompt_column]
            if not isinstance(value, str):
                return None, f"prompt must be text, got {type(value).__name__}"
        # Blank in every column it reads means there is nothing to ask, template or not.
        if all(isinstance(v, str) and not v.strip() for v in row.values()):
            return None, "prompt is empty"
        if self.template is None:
            return row[self.prompt_column], None
        try:
            return self.template.format_map(row), None
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
            return None, f"template {self.template!r} does not fit this row: {err}"
