"""The decoding a run holds, which the compile choice (pipelines/engine/compile_choice.py) weighs: for
each row, the most tokens it may generate times its choices, summed per unit at planning
(`Unit.decode_tokens`), so the driver never reads the rows again to decide.

A row's most tokens are what the engine will let it make (operators/generate.py): its own
max_tokens (`input.max_tokens_column`, or its own sampling's, as a provider batch request's body
gives it), else the run's `sampling.max_tokens`, else up to the context, as the providers do
when a request gives none; never more than the room its prompt leaves in the context (the
shard's mean prompt, estimated from its bytes). An upper bound: answers often stop sooner.
"""

from __future__ import annotations

import json
from typing import Any

from pipelines.planning.inputs import Shard, read_column
from pipelines.spec import ModelSpec, PipelineSpec
from pipelines.stream.unit_rows import row_max_tokens

BYTES_PER_TOKEN = 4  # rough for English BPE; only used to size units and work, never to count cost
# What the context is taken to be where neither the spec nor a config at hand says: the
# spec's own default for model.max_model_len.
UNKNOWN_CONTEXT = ModelSpec.model_fields["max_model_len"].default
REFUSED = -1  # a row whose own limit is not valid: it becomes an error record and decodes nothing


def prompt_tokens_per_row(shard: Shard) -> float:
    return shard.prompt_bytes / max(1, shard.num_rows) / BYTES_PER_TOKEN


def context_tokens(model: ModelSpec) -> int:
    """The model's context: model.max_model_len, else its config's (cluster/models/context.py)."""
    from cluster.models.context import config_context

    return model.max_model_len or config_context(model) or UNKNOWN_CONTEXT


def own_limits(spec: PipelineSpec, shard: Shard) -> list[tuple[int | None, int]] | None:
    """Each row's own (max_tokens, n) of a shard, None for a limit the row does not set; None
    for the whole shard when no column gives rows their own."""
    inp, n = spec.input, spec.sampling.n
    if not inp.max_tokens_column and not inp.sampling_column:
        return None
    limits: list[tuple[int | None, int]] = [(None, n)] * shard.num_rows
    if inp.sampling_column:
        values = read_column(inp, shard, inp.sampling_column, named_by="input.sampling_column").to_pylist()
        limits = [_sampling_limit(v, n) for v in values]
    if inp.max_tokens_column:  # it wins over the row's sampling, as in the engine
        values = read_column(inp, shard, inp.max_tokens_column, named_by="input.max_tokens_column").to_pylist()
        for i, value in enumerate(values):
            own, why = row_max_tokens(value)
            if why or own is not None:
                limits[i] = (REFUSED if why else own, limits[i][1])
    return limits


def _sampling_limit(value: Any, n: int) -> tuple[int | None, int]:
    """(max_tokens, n) of a row's own sampling (a JSON object or a struct)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return REFUSED, n
    if not isinstance(value, dict):
        return (None, n) if value is None else (REFUSED, n)
    own, why = row_max_tokens(value.get("max_tokens"))
    choices = value.get("n")
    return (REFUSED if why else own), (choices if isinstance(choices, int) and choices >= 1 else n)


def unit_decode_tokens(spec: PipelineSpec, shards: list[Shard], units: list, routes: list[list[str]] | None = None
                       ) -> list[int]:
    """Each unit's decode tokens (units as planning made them, shard by shard; `routes`: each
    row's model, for a routed run). A shard's own limits are read once, and only when a column
    gives rows their own."""
    index_of = {s.path: i for i, s in enumerate(shards)}
    contexts: dict[str | None, int] = {}
    current: tuple[int, list | None] | None = None
    found = []
    for unit in units:
        index = index_of[unit.path]
        shard = shards[index]
        if current is None or current[0] != index:
            current = (index, own_limits(spec, shard))
        if unit.model not in contexts:
            contexts[unit.model] = context_tokens(spec.for_model(unit.model).model if unit.model else spec.model)
        room = max(1, contexts[unit.model] - round(prompt_tokens_per_row(shard)))
        default = min(spec.sampling.max_tokens or room, room)
        limits = current[1]
        if limits is None:
            found.append(unit.rows * default * spec.sampling.n)
            continue
        rows = range(unit.start, unit.stop)
        if unit.model:
            rows = [r for r in rows if routes[index][r] == unit.model]
        found.append(sum(0 if own == REFUSED else min(own or default, room) * n
                         for own, n in (limits[r] for r in rows)))
    return found


def tokens_ahead(spec: PipelineSpec, units: list, only_ids: dict[str, Any] | None = None) -> int:
    """The decoding ahead of the engines of one model (`spec.model`, as they see it) for
    `units`: each unit's planned decode tokens, or with `only_ids` (a --retry-failed) its rows'
    share of them. A unit planned before units kept theirs counts at the run's limit."""
    room = context_tokens(spec.model)
    per_row = min(spec.sampling.max_tokens or room, room) * spec.sampling.n
    total = 0
    for unit in units:
        whole = unit.decode_tokens if unit.decode_tokens is not None else unit.rows * per_row
        total += whole * len(only_ids[unit.unit_id]) // max(1, unit.rows) if only_ids is not None else whole
    return total
