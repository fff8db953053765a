"""Chat template variables (`chat_template_kwargs`, a model's or a request's) that would not reach
the template as variables: the names of the tokenizer's own apply_chat_template arguments, which
spotbatch sets from other fields, and the template's `messages`. vLLM's server refuses some of
them (tokenize, chat_template) and drops others unseen; here each is refused by name, before any
engine starts.

>>> check_template_kwargs({"enable_thinking": False})
{'enable_thinking': False}
>>> check_template_kwargs({"tokenize": True})
Traceback (most recent call last):
ValueError: tokenize is not a template variable: spotbatch renders the prompt as text and tokenizes it itself
"""

from __future__ import annotations

from typing import Any

_TOKENIZING = "spotbatch renders the prompt as text and tokenizes it itself"
RESERVED = {
    "conversation": "the conversation is the request's messages",
    "messages": "the conversation is the request's messages",
    "tools": "give the functions as tools (sampling.tools, or the request's tools), which are checked and parsed",
    "documents": "documents are not read here; put them in the messages",
    "chat_template": "the template is model.chat_template",
    "add_generation_prompt": "every prompt ends with the assistant's turn opened",
    "continue_final_message": "every prompt ends with the assistant's turn opened",
    **{name: _TOKENIZING for name in ("tokenize", "padding", "truncation", "max_length", "return_tensors",
                                      "return_dict", "return_assistant_tokens_mask", "tokenizer_kwargs")},
}


def check_template_kwargs(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """`value`, or ValueError naming the first variable that the template would not see as given."""
    for name in sorted(set(value or {}) & set(RESERVED)):
        raise ValueError(f"{name} is not a template variable: {RESERVED[name]}")
    return value
