"""Batching logic of the generate operator, with a fake engine (never in an end-to-end test)."""

import pytest

from operators.engine import Completion, RowRejected
from operators.generate import GenerateOperator


class FakeEngine:
    """Tokens are characters; rejects prompts holding 'BAD'; `dead` fails every call."""

    max_model_len = 20

    def __init__(self, dead: bool = False):
        self.calls: list[int] = []
        self.dead = dead

    def encode(self, prompt, system_prompt, chat):
        text = (system_prompt or "") + prompt if chat else prompt
        return [ord(c) for c in text]

    def generate(self, prompts, sampling):
        self.calls.append(len(prompts))
        if self.dead:
            raise RuntimeError("engine core died")
        if any("BAD" in "".join(map(chr, p)) for p in prompts):
            raise RowRejected("token id out of range")
        return [Completion(text="ok", prompt_tokens=len(p), completion_tokens=2, finish_reason="stop") for p in prompts]


SAMPLING = {"max_tokens": 2, "temperature": 0.0, "top_p": 1.0, "seed": 0, "stop": []}


def test_rows_with_errors_are_not_sent_and_keep_their_reason():
    engine = FakeEngine()
    out = GenerateOperator(engine, SAMPLING, None, chat=False)(["hi", None, "yo"], [None, "prompt is null", None])
    assert out["output"] == ["ok", None, "ok"]
    assert out["error"] == [None, "prompt is null", None]
    assert out["prompt_tokens"] == [2, 0, 2] and out["completion_tokens"] == [2, 0, 2]
    assert engine.calls == [2]  # one batch, of the two good rows


def test_prompt_longer_than_context_becomes_an_error_record():
    out = GenerateOperator(FakeEngine(), SAMPLING, "SYS:", chat=True)(["short", "x" * 16], [None, None])
    assert out["output"][0] == "ok" and out["prompt_tokens"][0] == len("SYS:short")
    assert out["error"][1] == "prompt is longer than the model's context: 20 tokens, max_model_len is 20"
    assert out["prompt_tokens"][1] == 0


def test_a_rejected_request_is_isolated_and_the_rest_go_on():
    engine = FakeEngine()
    out = GenerateOperator(engine, SAMPLING, None, chat=False)(["a", "BAD", "c"], [None] * 3)
    assert out["output"] == ["ok", None, "ok"]
    assert out["error"][1].startswith("engine rejected the request: token id out of range")
    assert engine.calls == [3, 1, 1, 1]


def test_a_dead_engine_fails_the_batch_instead_of_writing_errors():
    with pytest.raises(RuntimeError, match="engine core died"):
        GenerateOperator(FakeEngine(dead=True), SAMPLING, None, chat=False)(["a", "b"], [None, None])


def test_nothing_to_generate_makes_no_engine_call():
    engine = FakeEngine()
    out = GenerateOperator(engine, SAMPLING, None, chat=False)([None], ["prompt is empty"])
    assert out["error"] == ["prompt is empty"] and engine.calls == []
