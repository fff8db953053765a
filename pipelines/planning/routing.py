"""Route rows to models: the value of one column picks each row's model (spec.route).

Routes are read at planning, from that one column, so every unit belongs to one model and the
run knows before any engine starts which models have work; a row no route covers is refused
then, with the values named, not found by an engine actor hours in.

>>> from pipelines.spec import RouteSpec
>>> route = RouteSpec(column="tier", map={"hard": "big"}, default="small")
>>> models_of(["hard", "small", None, "other"], route, ["small", "big"])
['big', 'small', 'small', 'small']
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from pipelines.planning.inputs import InputError, Shard, read_column
from pipelines.spec import PipelineSpec, RouteSpec


def models_of(values: Iterable[Any], route: RouteSpec, models: Iterable[str]) -> list[str | None]:
    """Each value's model: its entry in route.map, else the model of that name, else the default
    (None where there is none)."""
    names = set(models)
    out: list[str | None] = []
    for value in values:
        key = None if value is None else str(value)
        model = route.map.get(key) if key is not None else None
        if model is None and key in names:
            model = key
        out.append(model or route.default)
    return out


def route_shards(spec: PipelineSpec, shards: list[Shard]) -> list[list[str]]:
    """The model of every row of every shard; refuses rows that no route covers."""
    routes, unrouted = [], Counter()
    for shard in shards:
        values = read_column(spec.input, shard, spec.route.column, named_by="route.column").to_pylist()
        models = models_of(values, spec.route, spec.models)
        unrouted.update(repr(v) for v, m in zip(values, models) if m is None)
        routes.append(models)
    if unrouted:
        found = ", ".join(f"{v} ({n} rows)" for v, n in unrouted.most_common(5))
        raise InputError(f"column {spec.route.column!r} has values that route to no model: {found}. "
                         f"Add them to route.map, or set route.default.")
    return routes
