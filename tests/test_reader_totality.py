"""The batch readers are total: whatever JSON value stands anywhere in a request line (or text
that is no JSON at all), reading the line gives a row or an InputError naming the file and
line, never another exception; a row's own sampling object gives its sampling or why it has
none. Property-based (hypothesis): lines built from full templates of both providers with
random values at random places, and purely random ones. No Ray, no engine: the last tests read
a unit's rows as the run's first stage does, and run `spotbatch run` as a user does, refused
before an engine could start."""

from __future__ import annotations

import copy
import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from operators.prompts import chat_messages
from pipelines.formats import anthropic, openai
from pipelines.formats.batch_files import read_line
from pipelines.planning.inputs import InputError
from pipelines.spec import PipelineSpec, SamplingSpec, row_sampling
from pipelines.stream.unit_rows import ERROR, PROMPT, SAMPLING, unit_rows
from tests.helpers import spotbatch, write_spec

WHERE = "batch.jsonl line 7"
EXAMPLES = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

OPENAI_LINE = {"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions", "body": {
    "model": "a", "max_completion_tokens": 9, "max_tokens": 9, "temperature": 0.3, "top_p": 0.8, "seed": 4,
    "stop": ["x"], "n": 2, "logprobs": True, "top_logprobs": 1, "presence_penalty": 0.1, "frequency_penalty": 0.2,
    "user": "u", "metadata": {"k": "v"}, "store": False, "service_tier": "auto",
    "response_format": {"type": "json_schema", "json_schema": {"name": "c", "strict": True, "schema": {
        "type": "object", "properties": {"n": {"type": "integer"}}}}},
    "messages": [{"role": "developer", "content": "Be terse."},
                 {"role": "user", "name": "ann", "content": [{"type": "text", "text": "one"},
                                                             {"type": "text", "text": "two"}]},
                 {"role": "assistant", "content": "ok"}, {"role": "user", "content": "again"}]}}
ANTHROPIC_LINE = {"custom_id": "c1", "params": {
    "model": "a", "max_tokens": 5, "temperature": 0.5, "top_p": 0.9, "top_k": 3, "stop_sequences": ["\n\n"],
    "metadata": {"user_id": "u"}, "service_tier": "auto",
    "system": [{"type": "text", "text": "Sys.", "cache_control": {"type": "ephemeral"}}],
    "messages": [{"role": "user", "content": "hi"},
                 {"role": "assistant", "content": [{"type": "text", "text": "a"}]},
                 {"role": "user", "content": [{"type": "text", "text": "b", "cache_control": {"type": "ephemeral"}}]}]}}
ROW_SAMPLING = {"max_tokens": 9, "temperature": 0.3, "top_p": 0.8, "seed": 4, "stop": ["x"], "n": 2, "logprobs": True,
            "top_logprobs": 1, "presence_penalty": 0.1, "frequency_penalty": 0.2, "top_k": 3, "min_p": 0.1,
            "repetition_penalty": 1.1, "response_format": {"type": "json_object"}}
STRUCTURED = {"temperature": 0.0, "structured": {"choice": ["yes", "no"]}}
# Words the readers look for, so random objects and values often hit a real field or role.
WORDS = ["role", "content", "name", "type", "text", "user", "assistant", "system", "developer", "tool", "image",
         "cache_control", "custom_id", "method", "url", "body", "params", "messages", "model", "max_tokens",
         "temperature", "stop", "stop_sequences", "n", "seed", "top_k", "json_schema", "json_object", "schema",
         "structured", "choice", "regex", "response_format", "POST", "GET", "/v1/chat/completions", "a", "b", ""]
# Text that json.dumps never writes but a file may hold: put in verbatim where one is drawn.
RAW = ["NaN", "-Infinity", "1e400", "-1e400", "1" + "0" * 5000, "[" * 3000 + "]" * 3000,
       "[" * 70 + "1" + "]" * 70, '"\\ud800"', '{"\\udfff": 1}', "true", "-0", "1.0", "12345678901234567890123"]

# Numbers at the edges the readers and vLLM care about (int32, int64, a float's integers).
EDGES = [0, -1, 1, 2**31, 2**63 - 1, 2**63, -2**63 - 1, 2**64, 2**53 + 1, 1e-320, -0.0, 1.5, 2.0]
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-2**70, 2**70), st.sampled_from(EDGES),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12), st.sampled_from(WORDS))
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(WORDS) | st.text(max_size=6), inner, max_size=4), max_leaves=12)


class Raw:
    """Text to write verbatim into the line in place of a value."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text[:24]!r}{'...' if len(self.text) > 24 else ''})"


values = st.one_of(json_values, json_values, json_values, st.sampled_from(RAW).map(Raw))


def paths(value: Any, at: tuple = ()) -> list[tuple]:
    """Every place in a JSON value, the value itself first."""
    found = [at]
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found += paths(item, at + (key,))
    return found


@st.composite
def mutated(draw, template: Any) -> Any:
    """The template with one to three changes: a value replaced, a field or item removed, or a
    field or item added, each at a random place."""
    line = copy.deepcopy(template)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.sampled_from(paths(line)))
        how, value = draw(st.sampled_from(["replace", "remove", "add"])), draw(values)
        if not at:
            line = value if how == "replace" else line
            continue
        parent = line
        for key in at[:-1]:
            parent = parent[key]
        if how == "replace":
            parent[at[-1]] = value
        elif how == "remove":
            del parent[at[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(WORDS) | st.text(max_size=6))] = value
        else:
            parent.insert(draw(st.integers(0, len(parent))), value)
    return line


def dumps(value: Any) -> str:
    """A value as one line of JSON text, its Raw parts written verbatim."""
    raws: list[str] = []

    def mark(raw: Raw) -> str:
        raws.append(raw.text)
        return f"\x00raw{len(raws) - 1}\x00"

    def marked(v: Any) -> Any:
        if isinstance(v, Raw):
            return mark(v)
        if isinstance(v, dict):
            return {k: marked(x) for k, x in v.items()}
        return [marked(x) for x in v] if isinstance(v, list) else v

    text = json.dumps(marked(value), allow_nan=True)
    for i, raw in enumerate(raws):
        text = text.replace(json.dumps(f"\x00raw{i}\x00"), raw)
    return text


def read_or_refuse(provider, line: str, models: list[str] | None) -> dict | None:
    """The row the line reads as, or None when refused; a refusal must be an InputError that
    names the line, and a row must be one the run can write, render and sample."""
    try:
        endpoint, rows = read_line(provider, line, WHERE, models)
    except InputError as err:
        assert str(err).startswith(f"{WHERE}: "), str(err)
        assert len(str(err)) < 1000, str(err)  # names the value's kind, not the whole value
        return None
    pa.Table.from_pylist(rows, schema=endpoint.SCHEMA)
    row, = rows  # the lines read here are chat lines: one row each
    assert set(row) == set(endpoint.SCHEMA.names) and all(v is None or isinstance(v, str) for v in row.values()), row
    for message in chat_messages(row["messages"], None, "messages") if row["messages"] is not None else []:
        assert message["role"] in {"system", "user", "assistant"}, message
        assert all(isinstance(message.get(k), str) for k in ("content", "name") if message.get(k) is not None), message
    check_sampling(row_sampling(SamplingSpec(), row["sampling"]))
    return row


def check_sampling(read: tuple[dict | None, str | None]) -> None:
    """A row's sampling, or why it has none: never both, and what is kept is plain JSON."""
    sampling, why = read
    assert sampling is None or why is None
    assert why is None or (isinstance(why, str) and why), read
    if sampling is not None:
        json.dumps(sampling, allow_nan=False)
        assert sampling["seed"] is None or -2**63 <= sampling["seed"] < 2**63  # vLLM seeds a torch generator
        assert SamplingSpec.model_validate(sampling, strict=True).model_dump(mode="json") == sampling


PROVIDERS = st.sampled_from([(openai, OPENAI_LINE), (anthropic, ANTHROPIC_LINE)])
MODELS = st.sampled_from([None, ["a", "b"]])


def test_the_templates_read_as_rows():
    """The property tests below start from lines that are whole and valid."""
    assert read_or_refuse(openai, json.dumps(OPENAI_LINE), ["a"])["custom_id"] == "r1"
    assert read_or_refuse(anthropic, json.dumps(ANTHROPIC_LINE), ["a"])["custom_id"] == "c1"
    assert row_sampling(SamplingSpec(), json.dumps(ROW_SAMPLING))[1] is None
    assert row_sampling(SamplingSpec(), STRUCTURED)[1] is None


@EXAMPLES
@given(provider_and_template=PROVIDERS, models=MODELS, data=st.data())
def test_any_value_anywhere_in_a_providers_line_gives_a_row_or_a_named_refusal(provider_and_template, models, data):
    provider, template = provider_and_template
    event("read as a row" if read_or_refuse(provider, dumps(data.draw(mutated(template))), models) else "refused")


@settings(max_examples=1000, deadline=None)
@given(provider_and_template=PROVIDERS, models=MODELS, line=values.map(dumps) | st.text(max_size=40))
def test_any_json_or_text_as_a_line_gives_a_row_or_a_named_refusal(provider_and_template, models, line):
    event("read as a row" if read_or_refuse(provider_and_template[0], line, models) else "refused")


@EXAMPLES
@given(override=mutated(ROW_SAMPLING) | mutated(STRUCTURED) | json_values, as_text=st.booleans())
@example(override={"seed": 2**64}, as_text=True)
def test_any_value_in_a_rows_sampling_gives_sampling_or_why_not(override, as_text):
    """A row's own sampling, as JSON text (a string column) or as an object (a struct column)."""
    sampling, why = row_sampling(SamplingSpec(), dumps(override) if as_text else _plain(override))
    check_sampling((sampling, why))
    event("sampling" if sampling else "why not" if why else "none")


def _plain(value: Any) -> Any:
    """A value as a struct column gives it: what is Raw becomes the Python value it reads as."""
    if isinstance(value, Raw):
        try:
            return json.loads(value.text)
        except (ValueError, RecursionError):
            return value.text
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return [_plain(v) for v in value] if isinstance(value, list) else value


def test_a_rows_own_sampling_or_max_tokens_that_is_not_utf8_is_that_rows_error(tmp_path):
    """Read as the run's first stage reads a unit's rows: the bad row is an error record and the
    others go on (it used to fail the whole unit's read, as if the storage had)."""
    bad = pa.array([b'{"temperature": 0.5}', b'\xff{"n": 2}'], pa.binary()).view(pa.string())
    pq.write_table(pa.table({"id": [1, 2], "text": ["a", "b"], "params": bad, "mt": bad}), tmp_path / "p.parquet")
    for column in ("mt", "params"):
        spec = PipelineSpec(input={"paths": str(tmp_path), "prompt_column": "text",
                                   ("sampling_column" if column == "params" else "max_tokens_column"): column},
                            output={"path": str(tmp_path / "out")})
        rows = unit_rows({"unit_id": "u", "path": str(tmp_path / "p.parquet"), "start": 0, "stop": 2}, spec)
        said = f"{column}: is" if column == "params" else f"{column} is"
        assert rows.column(ERROR)[1].as_py() == f"{said} not valid UTF-8 text (byte 0: b'\\xff')"
        assert rows.column(PROMPT)[1].as_py() is None
    # (a max_tokens column of text is refused row by row anyway; a sampling column of text is right)
    assert rows.column(ERROR)[0].as_py() is None and rows.column(PROMPT)[0].as_py() == "a"
    assert json.loads(rows.column(SAMPLING)[0].as_py())["temperature"] == 0.5


def _with(template: dict, section: str, **fields) -> bytes:
    """The template's line, another request's, with these fields in its body or params."""
    return json.dumps({**template, "custom_id": "bad", section: {**template[section], **fields}}).encode()


@pytest.mark.parametrize("kind, bad_line, named", [
    ("openai_batch", _with(OPENAI_LINE, "body", messages=[{"role": {"x": 1}, "content": "hi"}]),
     "body.messages[0].role must be a string, got an object"),
    ("anthropic_batch", _with(ANTHROPIC_LINE, "params", messages=[{"role": ["user"], "content": "hi"}]),
     "params.messages[0].role must be a string, got a list"),
    ("openai_batch", _with(OPENAI_LINE, "body", temperature=float("nan")), "NaN is not a JSON number"),
    ("anthropic_batch", b'{"custom_id": "\xff"}', "not UTF-8 text (byte 16 of the line)"),
    ("anthropic_batch", _with(ANTHROPIC_LINE, "params", metadata="nightly"),
     "params.metadata must be an object (as at Anthropic), got a string"),
], ids=["openai-role-object", "anthropic-role-list", "openai-nan", "anthropic-not-utf8", "anthropic-metadata"])
def test_a_malformed_line_is_refused_by_the_cli_naming_file_line_and_field(tmp_path, tiny_model, kind, bad_line,
                                                                          named):
    template = OPENAI_LINE if kind == "openai_batch" else ANTHROPIC_LINE
    batch = tmp_path / "batch.jsonl"
    batch.write_bytes(json.dumps(template).encode() + b"\n" + bad_line + b"\n")
    spec = write_spec(tmp_path / "spec.yaml", {
        "input": {"kind": kind, "paths": str(batch)},
        "model": {"name": "tiny-random", "max_model_len": 256, "enforce_eager": True},
        "output": {"path": str(tmp_path / "out")},
    })
    # No Ray listens there: a line that got through would fail to connect, not start an engine here.
    proc = spotbatch("run", str(spec), "--address", "127.0.0.1:9", timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"batch.jsonl line 2: {named}" in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "out").exists()  # refused before anything was written, or any engine started
