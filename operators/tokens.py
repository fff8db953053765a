"""A prompt's token ids as the model sees them: one function, used by the engine adapter
(operators/engine.py) and by the estimate (pipelines/estimate/), so the estimate counts exactly
the tokens the engine will be given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from operators.prompts import chat_messages


@dataclass(frozen=True)
class PromptForm:
    """How a row's prompt text becomes what the model reads (the spec's `input` section)."""

    system_prompt: str | None
    """The system message sent with every prompt (chat format)."""
    fmt: str
    """raw: the text as it is; chat: one user message in the chat template; messages: a JSON list of messages."""


def prompt_token_ids(tokenizer: Any, prompt: str, form: PromptForm, chat_template: str | None = None,
                     chat_template_kwargs: dict[str, Any] | None = None) -> list[int]:
    """`form.fmt` "raw" sends the text as it is; "chat" applies the chat template to one user
    message; "messages" reads the prompt as a JSON list of chat messages (an OpenAI batch body's).
    `chat_template`: the spec's, instead of the tokenizer's own; `chat_template_kwargs` may hold
    `tools` (OpenAI's), which the template shows the model."""
    system_prompt, fmt = form.system_prompt, form.fmt
    if fmt == "raw":
        return list(tokenizer.encode(prompt, add_special_tokens=True))
    text = tokenizer.apply_chat_template(chat_messages(prompt, system_prompt, fmt), tokenize=False,
                                         add_generation_prompt=True, chat_template=chat_template,
                                         **(chat_template_kwargs or {}))
    return list(tokenizer.encode(text, add_special_tokens=False))


def template_kwargs(model_kwargs: dict[str, Any] | None, sampling: dict[str, Any] | None) -> dict[str, Any]:
    """The chat template's variables for a request: the model's, the request's own over them, and
    the request's tools, which the template shows the model (and which count in its prompt).

    >>> template_kwargs({"enable_thinking": True}, {"chat_template_kwargs": {"enable_thinking": False}, "tools": []})
    {'enable_thinking': False}
    """
    sampling = sampling or {}
    return {**(model_kwargs or {}), **(sampling.get("chat_template_kwargs") or {}),
            **({"tools": sampling["tools"]} if sampling.get("tools") else {})}


def text_token_ids(tokenizer: Any, text: str, max_tokens: int | None = None) -> list[int]:
    """A text's token ids as an embedding model reads it: with the model's special tokens, no chat
    template, cut to `max_tokens` (when given) by the tokenizer's own truncation, which keeps the
    closing special token."""
    cut = {"truncation": True, "max_length": max_tokens} if max_tokens else {}
    return list(tokenizer.encode(text, add_special_tokens=True, **cut))
