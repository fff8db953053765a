"""The generate operator: rendered prompts in, one result per row out.

Rows are tokenized here, ordered for the engine (operators/batching.py) and submitted to the
engine feeder, which keeps the engine busy across units. Rows that cannot be generated become
error records with a class and a reason, and the rest go on. An engine that fails as a whole
(dead, out of memory) is not a row's fault: that error propagates, so the unit is retried
instead of committed as errors.
"""

from __future__ import annotations

import concurrent.futures
import time
from typing import Any, Protocol

from operators.batching import Request, order_for_engine
from operators.engine import RowRejected
from operators.failures import BAD_INPUT, CONTEXT_TOO_LONG, TIMEOUT, classify_rejection
from operators.feeder import EngineFeeder

RESULT_COLUMNS = ("output", "prompt_tokens", "completion_tokens", "cached_prompt_tokens", "finish_reason",
                  "error", "error_class")


class Tokenizer(Protocol):
    max_model_len: int
    prefix_block_tokens: int

    def encode(self, prompt: str, system_prompt: str | None, chat: bool) -> list[int]: ...


class GenerateOperator:
    """Reads `prompt` text (or a prior `error`) per row; writes RESULT_COLUMNS."""

    def __init__(self, engine: Tokenizer, feeder: EngineFeeder, sampling: dict[str, Any],
                 system_prompt: str | None, chat: bool, timeout_seconds: float | None = None):
        self.engine = engine
        self.feeder = feeder
        self.sampling = sampling
        self.system_prompt = system_prompt
        self.chat = chat
        self.timeout_seconds = timeout_seconds

    def __call__(self, prompts: list[str | None], errors: list[str | None],
                 max_tokens: list[int | None] | None = None) -> dict[str, list[Any]]:
        n = len(prompts)
        result: dict[str, list[Any]] = {
            "output": [None] * n,
            "prompt_tokens": [0] * n,
            "completion_tokens": [0] * n,
            "cached_prompt_tokens": [0] * n,
            "finish_reason": [None] * n,
            "error": list(errors),
            "error_class": [BAD_INPUT if e is not None else None for e in errors],
        }
        requests: list[Request] = []
        for i, prompt in enumerate(prompts):
            if result["error"][i] is not None:
                continue
            ids = self.engine.encode(prompt, self.system_prompt, self.chat)
            # vLLM needs room for at least one generated token.
            if len(ids) >= self.engine.max_model_len:
                self._fail(result, i, CONTEXT_TOO_LONG, f"prompt is longer than the model's context: "
                           f"{len(ids)} tokens, max_model_len is {self.engine.max_model_len}")
                continue
            row_max = max_tokens[i] if max_tokens and max_tokens[i] else self.sampling["max_tokens"]
            requests.append(Request(i, ids, row_max))
        ordered = order_for_engine(requests, self.engine.prefix_block_tokens)
        futures = self.feeder.submit(ordered, self.sampling) if ordered else []
        deadline = time.monotonic() + self.timeout_seconds if self.timeout_seconds else None
        for request, future in zip(ordered, futures):
            i = request.key
            try:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                completion = future.result(timeout=left)
            except RowRejected as err:
                self._fail(result, i, classify_rejection(str(err)), f"engine rejected the request: {err}")
                continue
            except concurrent.futures.TimeoutError:
                self.feeder.cancel([future])
                self._fail(result, i, TIMEOUT, f"no result within {self.timeout_seconds:g} s of its unit's start")
                continue
            result["output"][i] = completion.text
            result["prompt_tokens"][i] = completion.prompt_tokens
            result["completion_tokens"][i] = completion.completion_tokens
            result["cached_prompt_tokens"][i] = completion.cached_prompt_tokens
            result["finish_reason"][i] = completion.finish_reason
        return result

    @staticmethod
    def _fail(result: dict[str, list[Any]], i: int, error_class: str, message: str) -> None:
        result["error"][i] = message
        result["error_class"][i] = error_class
