"""The first stage of a run (CPU tasks): one unit descriptor in, the unit's rows out, each with
its rendered prompt or the reason it has none. One unit becomes one block, so the engine stage
(pipelines/stages.py) sees whole units. Only the row groups that hold a unit's rows are read.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from operators.prompts import PromptRenderer
from pipelines.routing import models_of
from pipelines.spec import PipelineSpec

# The columns a unit's rows travel in between the stages (the input's own names may clash).
UNIT, UNIT_ROWS, ID, PROMPT, ERROR, MAX_TOKENS = "__unit", "__unit_rows", "__id", "__prompt", "__error", "__max_tokens"


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


def read_units(batch: pa.Table, spec_data: dict[str, Any]) -> pa.Table:
    """The Ray Data stage: unit descriptors (`Unit.descriptor`) in, their rows out."""
    spec = PipelineSpec.model_validate(spec_data)
    return pa.concat_tables([unit_rows(unit, spec) for unit in batch.to_pylist()])


def unit_rows(unit: dict[str, Any], spec: PipelineSpec) -> pa.Table:
    """One unit's rows, with their prompts rendered (or why a row has none)."""
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
        only = pa.array(json.loads(unit["only_ids"]), rows.schema.field(spec.input.id_column).type)
        rows = rows.filter(pc.is_in(rows.column(spec.input.id_column), value_set=only))
        expected = len(only)
    prompts, errors = renderer.render({c: rows.column(c).to_pylist() for c in renderer.columns})
    n = rows.num_rows
    max_tokens = [None] * n
    if spec.input.max_tokens_column:
        max_tokens = rows.column(spec.input.max_tokens_column).to_pylist()
        for i, value in enumerate(max_tokens):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                max_tokens[i] = None
                errors[i] = errors[i] or f"{spec.input.max_tokens_column} must be a positive integer, got {value!r}"
                prompts[i] = None
    return pa.table(
        {
            UNIT: pa.array([unit["unit_id"]] * n, pa.string()),
            UNIT_ROWS: pa.array([expected] * n, pa.int64()),
            ID: rows.column(spec.input.id_column),
            PROMPT: pa.array(prompts, pa.string()),
            ERROR: pa.array(errors, pa.string()),
            MAX_TOKENS: pa.array(max_tokens, pa.int64()),
        }
    )
