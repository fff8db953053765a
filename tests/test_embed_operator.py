"""The embed operator's requests, with a fake pooling engine (never in an end-to-end test: those
use vLLM, tests/test_embed_engine.py): too-long texts, truncation, token ids, duplicates and a
row's own options."""

from operators.embed import EmbedOperator, embed_schema
from operators.engine import Embedding
from operators.feeder import EngineFeeder
from operators.generate import RowBatch
from operators.tokens import PromptForm


class FakePooling:
    """Tokens are characters, with a [CLS]-like 1 before and a [SEP]-like 2 after; a vector is
    the token count and the request's `dimensions`."""

    max_model_len = 8
    prefix_block_tokens = 4

    def __init__(self):
        self.running: list[tuple[str, list[int], dict]] = []
        self.added: list[list[int]] = []

    def encode_text(self, text, max_tokens=None):
        ids = [1, *map(ord, text), 2]
        return ids if max_tokens is None or len(ids) <= max_tokens else [*ids[:max_tokens - 1], 2]

    def kv_capacity_tokens(self):
        return 1000

    def add(self, request_id, token_ids, sampling):
        self.added.append(token_ids)
        self.running.append((request_id, token_ids, sampling))

    def abort(self, request_ids):
        pass

    def step(self):
        done, self.running = self.running, []
        return [(rid, Embedding([float(len(ids)), float(s.get("dimensions") or 0)], len(ids))) for rid, ids, s in done]


def embed(engine, prompts, fmt="raw", options=None, keys=None, samplings=None):
    op = EmbedOperator(engine, EngineFeeder(engine), {"dimensions": None, "normalize": None,
                                                      "truncate_prompt_tokens": None, **(options or {})},
                       PromptForm(None, fmt))
    return op(RowBatch(prompts, [None] * len(prompts), keys=keys, samplings=samplings))


def test_a_text_longer_than_the_context_is_an_error_record_unless_truncation_is_asked():
    cols = embed(FakePooling(), ["abc", "abcdefghij"])
    assert cols["embedding"][0] == [5.0, 0.0] and cols["prompt_tokens"] == [5, 0]
    assert cols["error_class"] == [None, "context_too_long"]
    assert "12 tokens, max_model_len is 8" in cols["error"][1]
    cut = embed(FakePooling(), ["abcdefghij"], options={"truncate_prompt_tokens": -1})
    assert cut["prompt_tokens"] == [8] and cut["error"] == [None]
    cut = embed(FakePooling(), ["abcdefghij"], options={"truncate_prompt_tokens": 4})
    assert cut["prompt_tokens"] == [4]
    assert set(cut) == set(embed_schema(None).names)


def test_json_inputs_are_texts_or_token_ids_and_a_row_may_ask_its_own_dimensions():
    engine = FakePooling()
    cols = embed(engine, ['"ab"', "[1, 9, 9, 2]", '{"not": "an input"}'], fmt="messages",
                 samplings=[None, {"dimensions": 3}, None])
    assert engine.added == [[1, 9, 9, 2], [1, 97, 98, 2]] or engine.added == [[1, 97, 98, 2], [1, 9, 9, 2]]
    assert cols["embedding"][:2] == [[4.0, 0.0], [4.0, 3.0]]
    assert cols["error_class"][2] == "bad_input" and "a text or a non-empty list of token ids" in cols["error"][2]


def test_identical_requests_are_embedded_once():
    engine = FakePooling()
    cols = embed(engine, ["same", "same", "other"], keys=["k1", "k1", "k2"])
    assert len(engine.added) == 2
    assert sorted(cols["served_from"]) == ["duplicate", "engine", "engine"]
    assert cols["embedding"][0] == cols["embedding"][1]


class StepCounting(FakePooling):
    """A pooling engine as vLLM's reports itself (operators/engine.py): no KV blocks, and a
    budget of two steps' tokens; it counts the requests it holds at each step."""

    prefix_block_tokens = 0
    max_model_len = 512

    def __init__(self):
        super().__init__()
        self.held_at_steps: list[int] = []

    def kv_capacity_tokens(self):
        return 2 * 4096

    def step(self):
        self.held_at_steps.append(len(self.running))
        return super().step()


def test_a_units_texts_go_to_a_pooling_engine_together_counted_by_their_tokens():
    # vLLM gives a pooling engine one 128-token placeholder block; counted as KV blocks, that let
    # one text in per step (1000 steps for 1000 texts, against plain LLM.embed's 18).
    engine = StepCounting()
    texts = [f"text number {i} " + "word " * (i % 20) for i in range(120)]
    cols = embed(engine, texts)
    assert cols["error"] == [None] * 120 and len(engine.added) == 120
    assert engine.held_at_steps[0] == 120, engine.held_at_steps  # 120 texts of 15 to 115 tokens fit 8192
