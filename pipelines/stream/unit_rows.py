"""The first stage of a run (CPU tasks): a block of unit descriptors in, the units' rows out,
each with its rendered prompt or the reason it has none. A block of units becomes one block of
rows, so the engine stage (pipelines/engine/actor.py) sees whole units. Only the row groups that hold
a unit's rows are read.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from operators.engine_config import ADAPTER
from operators.failures import INPUT_CHANGED, STORAGE_ERROR
from operators.prompts import InvalidText, PromptRenderer
from pipelines.planning.inputs import file_version
from pipelines.planning.routing import models_of
from pipelines.spec import PipelineSpec, row_sampling

# The columns a unit's rows travel in between the stages (the input's own names may clash).
UNIT, UNIT_ROWS, ID, PROMPT, ERROR, MAX_TOKENS = "__unit", "__unit_rows", "__id", "__prompt", "__error", "__max_tokens"
SAMPLING = "__sampling"  # a row's own sampling, every field, as JSON (null: the run's; ADAPTER: its LoRA)
UNITS = "units"  # the read stage's input column: a list of unit descriptors, one block's
# A unit that comes out of the read stage as one marker row says so in UNIT_ROWS (ERROR: why).
UNREADABLE_ROWS = -1  # its rows could not be read: the storage kept failing the read
STOPPED_ROWS = -2  # its run was asked to stop: its rows were not read
INPUT_CHANGED_ROWS = -3  # its rows were not read: its shard changed since planning


def pack_ids(ids: pa.Array) -> bytes:
    """Ids as Arrow IPC bytes: every id type (timestamps, decimals, binary) travels exactly.

    >>> import datetime
    >>> ids = pa.array([datetime.datetime(2026, 1, 1)], pa.timestamp("us"))
    >>> unpack_ids(pack_ids(ids)).equals(ids)
    True
    """
    sink = pa.BufferOutputStream()
    table = pa.table({"id": ids})
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def unpack_ids(data: bytes) -> pa.Array:
    return pa.ipc.open_stream(data).read_all().column(0).combine_chunks()


class InputChanged(Exception):
    """A unit's shard is not the version the run was planned on."""


def read_unit_rows(path: str, start: int, stop: int, columns: list[str], storage_options: dict) -> pa.Table:
    """Rows [start, stop) of one Parquet file, reading only the row groups that hold them."""
    fs, fpath = url_to_fs(path, **storage_options)
    with fs.open(fpath, "rb") as fh:
        pf = pq.ParquetFile(fh)
        groups, first_row, offset = [], None, 0
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if offset < stop and offset + n > start:
                groups.append(g)
                first_row = offset if first_row is None else first_row
            offset += n
        table = pf.read_row_groups(groups, columns=columns)
    return table.slice(start - (first_row or 0), stop - start)


READ_TRIES = 3  # a unit's rows are read this often before a storage fault leaves it pending
READ_BACKOFF_SECONDS = 2.0


def read_units(batch: pa.Table, spec_data: dict[str, Any], run_id: str | None = None) -> pa.Table:
    """The Ray Data stage: a block's unit descriptors (`Unit.descriptor`, a list in its UNITS
    column, pipelines/stream/unit_blocks.py) in, their rows out. A unit whose
    rows cannot be read comes out as one marker row (UNIT_ROWS INPUT_CHANGED_ROWS: its shard
    changed since planning, or UNREADABLE_ROWS: the storage kept failing the read; ERROR says
    why): the engine stage records it (input_changed, storage_error), runs nothing of it and
    leaves it pending.
    Once run `run_id` is asked to stop, units come out as STOPPED_ROWS markers, unread, so the
    units the driver had already handed to Ray Data pass through in moments and the run ends.
    An exception here would end the whole run."""
    from cluster.storage_requests import count_s3_requests
    from pipelines.stops.stopping import run_stop
    count_s3_requests()  # Ray's read tasks count theirs too, as every process that reads units does
    spec = PipelineSpec.model_validate(spec_data)
    tables = []
    for unit in (u for block in batch.column(UNITS).to_pylist() for u in block):
        stop = run_stop(spec.output.path, spec.output.storage_options, run_id) if run_id else None
        if stop:
            tables.append(_marker(unit["unit_id"], stop, STOPPED_ROWS))  # the stop's reason
            continue
        for n in range(READ_TRIES):
            try:
                tables.append(unit_rows(unit, spec))
                break
            except InputChanged as err:
                tables.append(_marker(unit["unit_id"], str(err), INPUT_CHANGED_ROWS))
                break
            except Exception as err:  # an S3 5xx past s3fs's retries, a file system gone away
                if n + 1 == READ_TRIES:
                    tables.append(_marker(unit["unit_id"], f"{STORAGE_ERROR} while reading the unit's rows from "
                                                           f"{unit['path']}: {err!r}"[:2000]))
                else:
                    time.sleep(READ_BACKOFF_SECONDS * 2**n)
    return pa.concat_tables(tables, promote_options="permissive")


def _marker(unit_id: str, why: str, kind: int = UNREADABLE_ROWS) -> pa.Table:
    return pa.table({UNIT: [unit_id], UNIT_ROWS: pa.array([kind], pa.int64()), ID: pa.nulls(1),
                     PROMPT: pa.nulls(1, pa.string()), ERROR: [why], MAX_TOKENS: pa.nulls(1, pa.int64()),
                     SAMPLING: pa.nulls(1, pa.string())})


def check_version(unit: dict[str, Any], storage_options: dict) -> None:
    """Raise InputChanged when the unit's shard is not the version it was planned on."""
    if not unit.get("version"):
        return  # planned before versions were pinned per unit
    fs, fpath = url_to_fs(unit["path"], **storage_options)
    try:
        now = file_version(fs.info(fpath))
    except FileNotFoundError:
        now = "gone"
    if now != unit["version"]:
        raise InputChanged(f"{INPUT_CHANGED}: {unit['path']} changed since the run was planned "
                           f"(version {unit['version']}, now {now}); its rows were not read. Restore "
                           f"the file, or start over with --new-run")


def unit_rows(unit: dict[str, Any], spec: PipelineSpec) -> pa.Table:
    """One unit's rows, with their prompts rendered (or why a row has none)."""
    check_version(unit, spec.input.storage_options)
    renderer = PromptRenderer(spec.input.prompt_column, spec.input.template)
    columns = spec.input.columns_read()
    if spec.routed and spec.route.column not in columns:
        columns.append(spec.route.column)
    rows = read_unit_rows(unit["path"], unit["start"], unit["stop"], columns, spec.input.storage_options)
    expected = unit["stop"] - unit["start"]
    if unit.get("model"):  # a routed unit: the rows of its range that go to its model
        routes = models_of(rows.column(spec.route.column).to_pylist(), spec.route, spec.models)
        rows = rows.filter(pa.array([m == unit["model"] for m in routes]))
        expected = unit["rows"]
    if unit.get("only_ids"):  # a retry: just the rows that failed
        only = unpack_ids(unit["only_ids"])
        rows = rows.filter(pc.is_in(rows.column(spec.input.id_column), value_set=only))
        expected = len(only)
    prompts, errors = renderer.render({c: _values(rows.column(c)) for c in renderer.columns})
    n = rows.num_rows
    max_tokens: list[int | None] = [None] * n
    if spec.input.max_tokens_column:
        name = spec.input.max_tokens_column
        for i, value in enumerate(_values(rows.column(name))):  # text that is not UTF-8 is this row's error
            max_tokens[i], why = (None, f"is {value}") if isinstance(value, InvalidText) else row_max_tokens(value)
            if why:
                errors[i] = errors[i] or f"{name} {why}"
                prompts[i] = None
    samplings: list[str | None] = [None] * n
    if spec.input.sampling_column:
        name = spec.input.sampling_column
        for i, value in enumerate(_values(rows.column(name))):
            sampling, why = ((None, f"is {value}") if isinstance(value, InvalidText)
                             else row_sampling(spec.embed if spec.task == "embed" else spec.sampling, value))
            why = why or unhonoured(sampling, spec, unit.get("model"))
            if why:
                errors[i] = errors[i] or f"{name}: {why}"
                prompts[i] = None
            elif sampling is not None:
                samplings[i] = json.dumps(sampling)
    if spec.input.adapter_column:
        pick_adapters(spec, _values(rows.column(spec.input.adapter_column)), samplings, (prompts, errors))
    return pa.table(
        {
            UNIT: pa.array([unit["unit_id"]] * n, pa.string()),
            UNIT_ROWS: pa.array([expected] * n, pa.int64()),
            ID: rows.column(spec.input.id_column),
            PROMPT: pa.array(prompts, pa.string()),
            ERROR: pa.array(errors, pa.string()),
            MAX_TOKENS: pa.array(max_tokens, pa.int64()),
            SAMPLING: pa.array(samplings, pa.string()),
        }
    )


def unhonoured(sampling: dict[str, Any] | None, spec: PipelineSpec, routed_to: str | None) -> str | None:
    """Why a row's own sampling asks what its model cannot do (pipelines/formats/request_checks.py
    model_cannot, which refuses a batch file's request by line for the same), said before the
    engine starts. The spec's own sampling is refused so in pipelines/spec/pipeline.py."""
    from pipelines.formats.request_checks import model_cannot

    model, where = (spec.models[routed_to], f"models.{routed_to}") if routed_to else (spec.model, "model")
    cannot = model_cannot(sampling, model) if sampling else None
    if not cannot:
        return None
    rule, why = cannot
    if rule == "tools":
        return f"tools cannot be honoured: {why.replace('model.', where + '.')}"
    if rule == "thinking_token_budget":
        return (f"thinking_token_budget needs {where}.reasoning_parser (vLLM ends a thinking it knows by its "
                f"parser's markers)")
    return f"n: {why} cannot be honoured: {where}.reasoning_parser takes n: 1 (one reasoning a row)"


def pick_adapters(spec: PipelineSpec, names: list[Any], samplings: list[str | None],
                  rows: tuple[list[str | None], list[str | None]]) -> None:
    """Each row's adapter (input.adapter_column) into its sampling, as `adapter`, where the engine
    (operators/engine.py) and the request keys read it; null or the base model's name is the base.
    A name model.adapters does not define makes the row an error record."""
    prompts, errors = rows
    column, known = spec.input.adapter_column, spec.model.adapters
    for i, name in enumerate(names):
        if name is None or name == "" or name == spec.model.name or errors[i]:
            continue
        if not isinstance(name, str) or name not in known:
            errors[i] = f"{column}: no adapter {name!r} in model.adapters (defined: {', '.join(sorted(known))})"
            prompts[i] = None
            continue
        own = json.loads(samplings[i]) if samplings[i] else spec.sampling.model_dump(mode="json")
        samplings[i] = json.dumps({**own, ADAPTER: name})


def _values(column: pa.ChunkedArray) -> list[Any]:
    """A column as Python values; text that is not valid UTF-8 becomes an InvalidText, which the
    renderer turns into that row's error instead of failing the unit."""
    try:
        return column.to_pylist()
    except UnicodeDecodeError:
        raw = pc.cast(column, pa.binary()) if pa.types.is_string(column.type) else column
        return [_decode(v) for v in raw.to_pylist()]


def _decode(value: bytes | None) -> str | InvalidText | None:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as err:
        return InvalidText(f"not valid UTF-8 text (byte {err.start}: {value[err.start:err.start + 1]!r})")


def row_max_tokens(value: Any) -> tuple[int | None, str | None]:
    """A row's own max_tokens, or why it has none usable.

    >>> row_max_tokens(64), row_max_tokens(64.0), row_max_tokens(None)
    ((64, None), (64, None), (None, None))
    >>> row_max_tokens(2**63)[1]
    'must be a positive integer below 2**63, got 9223372036854775808'
    >>> row_max_tokens(1.5)[1]
    'must be a positive integer below 2**63, got 1.5'
    """
    if value is None:
        return None, None
    if isinstance(value, float) and value.is_integer():  # pandas writes integers with nulls as floats
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**63:
        return None, f"must be a positive integer below 2**63, got {value!r}"
    return value, None
