"""The generate operator: rendered prompts in, one result per row out.

Rows are tokenized here, ordered for the engine (operators/batching.py) and submitted to the
engine feeder, which keeps the engine busy across units. Rows that cannot be generated become
error records with a class and a reason, and the rest go on. An engine that fails as a whole
(dead, out of memory) is not a row's fault: that error propagates, so the unit is retried
instead of committed as errors.
"""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa

from operators.batching import Request, order_for_engine
from operators.engine import Completion, RowRejected
from operators.failures import BAD_INPUT, CONTEXT_TOO_LONG, TIMEOUT, classify_rejection
from operators.feeder import EngineFeeder
from operators.tokens import PromptForm

# What this operator writes per row: the one home of the result columns (a unit's results
# file adds the input's id, the model and the spec's fingerprint).
# served_from: "engine" (generated for this row), "duplicate" (an identical request in this run
# was generated once for both), "cache" (answered by the response cache); None for errors.
# choices: every choice when a row asked for n > 1 (output is the first); logprobs: one list per
# choice, one entry per generated token, when asked; stop_sequence: the stop string that ended
# the first choice; queued_s and generate_s: this request's wait for the engine and its time in it.
# tool_calls: the calls the answer made, OpenAI's [{id, type, function: {name, arguments}}] as JSON
# text (output is then the text beside them, often ""); reasoning: the thinking a reasoning parser
# kept apart from output, and reasoning_tokens its tokens (within completion_tokens).
TOKEN_LOGPROB = pa.struct([("token", pa.string()), ("logprob", pa.float64())])
LOGPROB = pa.struct([("token", pa.string()), ("logprob", pa.float64()), ("top_logprobs", pa.list_(TOKEN_LOGPROB))])
CHOICE = pa.struct([("text", pa.string()), ("finish_reason", pa.string()), ("completion_tokens", pa.int64()),
                    ("stop_sequence", pa.string())])
RESULT_SCHEMA = pa.schema([
    ("output", pa.string()), ("prompt_tokens", pa.int64()), ("completion_tokens", pa.int64()),
    ("cached_prompt_tokens", pa.int64()), ("finish_reason", pa.string()), ("error", pa.string()),
    ("error_class", pa.string()), ("served_from", pa.string()), ("choices", pa.list_(CHOICE)),
    ("logprobs", pa.list_(pa.list_(LOGPROB))), ("stop_sequence", pa.string()), ("queued_s", pa.float64()),
    ("generate_s", pa.float64()), ("tool_calls", pa.string()), ("reasoning", pa.string()),
    ("reasoning_tokens", pa.int64()),
])
RESULT_COLUMNS = tuple(RESULT_SCHEMA.names)
# An answer as the engine gave it, which a duplicate or the cache may give again.
ANSWER_FIELDS = ("output", "prompt_tokens", "completion_tokens", "cached_prompt_tokens", "finish_reason",
                 "choices", "logprobs", "stop_sequence", "tool_calls", "reasoning", "reasoning_tokens")


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A results table with `schema`'s columns: those it lacks (a file written before they were
    added) as nulls."""
    for f in schema:
        if f.name not in table.column_names:
            table = table.append_column(f, pa.nulls(table.num_rows, f.type))
    return table.select(schema.names)


def empty_results(errors: list[str | None], error_class: str = BAD_INPUT) -> dict[str, list[Any]]:
    """Result columns for rows not (yet) answered: a row with an error gets `error_class`."""
    n = len(errors)
    cols: dict[str, list[Any]] = {c: [None] * n for c in RESULT_COLUMNS}
    for c in ("prompt_tokens", "completion_tokens", "cached_prompt_tokens"):
        cols[c] = [0] * n
    cols["error"] = list(errors)
    cols["error_class"] = [error_class if e is not None else None for e in errors]
    return cols


def answer_of(completion: Completion) -> dict[str, Any]:
    """A completion as result columns."""
    choices = completion.choices
    return {
        "output": completion.text, "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens, "cached_prompt_tokens": completion.cached_prompt_tokens,
        "finish_reason": completion.finish_reason, "stop_sequence": completion.stop_sequence,
        "choices": [{"text": c.text, "finish_reason": c.finish_reason, "completion_tokens": c.completion_tokens,
                     "stop_sequence": c.stop_sequence} for c in choices] if len(choices) > 1 else None,
        "logprobs": [c.logprobs for c in choices] if choices and choices[0].logprobs is not None else None,
        "queued_s": completion.queued_s, "generate_s": completion.generate_s,
        "tool_calls": json.dumps(completion.tool_calls) if completion.tool_calls else None,
        "reasoning": completion.reasoning, "reasoning_tokens": completion.reasoning_tokens,
    }


MEMO_SIZE = 100_000  # answers an actor remembers for duplicates that come later


class Tokenizer(Protocol):
    max_model_len: int
    prefix_block_tokens: int

    def encode(self, prompt: str, system_prompt: str | None, fmt: str,
               sampling: dict[str, Any] | None = None) -> list[int]: ...


@dataclass(frozen=True)
class RowBatch:
    """A unit's rows as the operator reads them: a list per column, item i for row i."""

    prompts: list[str | None]
    """Each row's rendered prompt (None for a row that already failed)."""
    errors: list[str | None]
    """Each row's error so far (None: none); a row with one is not sent."""
    max_tokens: list[int | None] | None = None
    """Each row's own max_tokens (None: its sampling's)."""
    keys: list[str | None] | None = None
    """Each row's request key (pipelines/cache/response_cache.py): identical requests are generated once."""
    samplings: list[dict[str, Any] | None] | None = None
    """Each row's own sampling, every field (None: the operator's)."""


Wait = tuple[int, Future, str]  # (row, the future that answers it, served_from)


class GenerateOperator:
    """Reads `prompt` text (or a prior `error`) per row; writes RESULT_COLUMNS."""

    def __init__(self, engine: Tokenizer, feeder: EngineFeeder, sampling: dict[str, Any], form: PromptForm,
                 timeout_seconds: float | None = None):
        self.engine = engine
        self.feeder = feeder
        self.sampling = sampling
        self.form = form  # the system prompt, and raw, chat or messages (VLLMEngine.encode)
        self.timeout_seconds = timeout_seconds
        self._memo: OrderedDict[str, Future] = OrderedDict()  # request key -> its one generation
        self._memo_lock = threading.Lock()

    def _claim(self, key: str) -> tuple[Future, bool]:
        """The future that answers `key`, and whether this caller must generate it."""
        with self._memo_lock:
            found = self._memo.get(key)
            failed = found is not None and found.done() and (found.cancelled() or found.exception() is not None)
            if found is not None and not failed:
                self._memo.move_to_end(key)
                return found, False
            future: Future = Future()
            self._memo[key] = future
            while len(self._memo) > MEMO_SIZE:
                self._memo.popitem(last=False)
            return future, True

    def __call__(self, batch: RowBatch, cached: dict[str, dict[str, Any]] | None = None) -> dict[str, list[Any]]:
        """Results for `batch`'s rows. Rows with the same key are generated once, and rows whose
        key is in `cached` are answered from it."""
        result = self._empty(batch.errors)
        requests, waits, mine = self._requests(batch, cached or {}, result)
        waits += self._submit(order_for_engine(requests, self.engine.prefix_block_tokens), mine)
        self._collect(waits, result)
        return result

    def _requests(self, batch: RowBatch, cached: dict[str, dict[str, Any]],
                  result: dict[str, list[Any]]) -> tuple[list[Request], list[Wait], dict[int, Future]]:
        """The engine requests of the rows this call generates; rows answered from the cache are
        filled, rows waiting on another's generation queued, refused rows made errors."""
        requests: list[Request] = []
        waits: list[Wait] = []
        mine: dict[int, Future] = {}  # rows this call generates for everyone with the same key
        for i, prompt in enumerate(batch.prompts):
            if result["error"][i] is not None:
                continue
            key = batch.keys[i] if batch.keys else None
            if key is not None and key in cached:
                self._fill(result, i, cached[key], "cache")
                continue
            if key is not None:
                future, generate = self._claim(key)
                if not generate:
                    waits.append((i, future, "duplicate"))
                    continue
                mine[i] = future
            request = self._request(i, prompt, batch, result)
            if isinstance(request, RowRejected):
                if i in mine:
                    mine[i].set_exception(request)
                continue
            requests.append(request)
        return requests, waits, mine

    def _request(self, i: int, prompt: str, batch: RowBatch, result: dict[str, list[Any]]) -> Request | RowRejected:
        """Row i's engine request, or (the row made an error) why it was refused."""
        own = batch.samplings[i] if batch.samplings and batch.samplings[i] else None  # the row's own, if any
        sampling = own or self.sampling
        try:  # a row's tools and chat_template_kwargs are the chat template's to show
            ids = self.engine.encode(prompt, self.form.system_prompt, self.form.fmt, sampling)
        except (ValueError, TypeError, AttributeError) as err:  # messages that are not a chat
            self._fail(result, i, BAD_INPUT, f"prompt could not be read as {self.form.fmt}: {err}")
            return RowRejected(str(err))
        # vLLM needs room for at least one generated token.
        if len(ids) >= self.engine.max_model_len:
            message = (f"prompt is longer than the model's context: "
                       f"{len(ids)} tokens, max_model_len is {self.engine.max_model_len}")
            self._fail(result, i, CONTEXT_TOO_LONG, message)
            return RowRejected(message)
        row_max = ((batch.max_tokens[i] if batch.max_tokens else None) or sampling["max_tokens"]
                   or self.engine.max_model_len - len(ids))  # none given: up to the context, as the providers
        return Request(i, ids, row_max, sampling=own, n=sampling.get("n", 1))

    def _submit(self, ordered: list[Request], mine: dict[int, Future]) -> list[Wait]:
        """Send the requests to the engine; rows sharing a key get what it answers."""
        try:
            futures = self.feeder.submit(ordered, self.sampling) if ordered else []
        except BaseException as err:
            for future in mine.values():
                future.set_exception(err)
            raise
        waits: list[Wait] = []
        for request, future in zip(ordered, futures):
            if request.key in mine:
                future.add_done_callback(lambda f, shared=mine[request.key]: _copy(f, shared))
            waits.append((request.key, future, "engine"))
        return waits

    def _collect(self, waits: list[Wait], result: dict[str, list[Any]]) -> None:
        """Each waiting row's answer, or its error, by the unit's deadline."""
        deadline = time.monotonic() + self.timeout_seconds if self.timeout_seconds else None
        for i, future, source in waits:
            try:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                completion = future.result(timeout=left)
            except RowRejected as err:
                self._fail(result, i, classify_rejection(str(err)), f"engine rejected the request: {err}")
                continue
            except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
                if source == "engine":
                    self.feeder.cancel([future])
                self._fail(result, i, TIMEOUT, f"no result within {self.timeout_seconds:g} s of its unit's start")
                continue
            answer = self._answer(completion)
            if source != "engine":  # a duplicate waited for another row's request, not the engine
                answer.pop("queued_s"), answer.pop("generate_s")
            self._fill(result, i, answer, source)

    # What the embed operator (operators/embed.py) writes instead: its own columns.
    answer_fields = ANSWER_FIELDS
    _empty = staticmethod(empty_results)
    _answer = staticmethod(answer_of)

    def _fill(self, result: dict[str, list[Any]], i: int, answer: dict[str, Any], source: str) -> None:
        for column in (*self.answer_fields, "queued_s", "generate_s"):
            if column in answer:
                result[column][i] = answer[column]
        result["served_from"][i] = source

    @staticmethod
    def _fail(result: dict[str, list[Any]], i: int, error_class: str, message: str) -> None:
        result["error"][i] = message
        result["error_class"][i] = error_class


def _copy(source: Future, target: Future) -> None:
    """Hand one generation's outcome to the shared future that duplicates wait on."""
    if target.done():
        return
    if source.cancelled():
        target.cancel()
    elif source.exception() is not None:
        target.set_exception(source.exception())
    else:
        target.set_result(source.result())
