"""The generate operator: rendered prompts in, one result per row out.

Rows that cannot be generated become error records with a reason, and the rest of the batch
goes on. An engine that fails as a whole (dead, out of memory) is not a row's fault: that
error propagates so the unit is retried instead of committed as errors.
"""

from __future__ import annotations

from typing import Any, Protocol

from operators.engine import Completion, RowRejected

RESULT_COLUMNS = ("output", "prompt_tokens", "completion_tokens", "finish_reason", "error")


class Engine(Protocol):
    max_model_len: int

    def encode(self, prompt: str, system_prompt: str | None, chat: bool) -> list[int]: ...

    def generate(self, prompts: list[list[int]], sampling: dict[str, Any]) -> list[Completion]: ...


class GenerateOperator:
    """Reads `prompt` text (or a prior `error`) per row; writes RESULT_COLUMNS."""

    def __init__(self, engine: Engine, sampling: dict[str, Any], system_prompt: str | None, chat: bool):
        self.engine = engine
        self.sampling = sampling
        self.system_prompt = system_prompt
        self.chat = chat

    def __call__(self, prompts: list[str | None], errors: list[str | None]) -> dict[str, list[Any]]:
        n = len(prompts)
        result: dict[str, list[Any]] = {
            "output": [None] * n,
            "prompt_tokens": [0] * n,
            "completion_tokens": [0] * n,
            "finish_reason": [None] * n,
            "error": list(errors),
        }
        todo: list[int] = []
        token_ids: list[list[int]] = []
        for i, prompt in enumerate(prompts):
            if result["error"][i] is not None:
                continue
            ids = self.engine.encode(prompt, self.system_prompt, self.chat)
            # vLLM needs room for at least one generated token.
            if len(ids) >= self.engine.max_model_len:
                result["error"][i] = (
                    f"prompt is longer than the model's context: {len(ids)} tokens, "
                    f"max_model_len is {self.engine.max_model_len}"
                )
                continue
            todo.append(i)
            token_ids.append(ids)
        for i, completion in zip(todo, self._generate(token_ids)):
            if isinstance(completion, str):
                result["error"][i] = completion
                continue
            result["output"][i] = completion.text
            result["prompt_tokens"][i] = completion.prompt_tokens
            result["completion_tokens"][i] = completion.completion_tokens
            result["finish_reason"][i] = completion.finish_reason
        return result

    def _generate(self, token_ids: list[list[int]]) -> list[Completion | str]:
        """Completions, or for a request the engine refused, the reason as a string."""
        if not token_ids:
            return []
        try:
            return list(self.engine.generate(token_ids, self.sampling))
        except RowRejected:
            pass
        # One request spoiled the batch: find it by sending each alone (rare, so cheap enough).
        results: list[Completion | str] = []
        for ids in token_ids:
            try:
                results.extend(self.engine.generate([ids], self.sampling))
            except RowRejected as err:
                results.append(f"engine rejected the request: {err}")
        return results
