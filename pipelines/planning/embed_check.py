"""What planning can tell of an embedding run before any engine starts: whether its model
allows `embed.dimensions` (Matryoshka truncation), or the `dimensions` of a batch file's request,
read from the model's config.json: the folder's own (built-in, local), or fetched with its
tokenizer files, never its weights (a hub repo at its pinned commit, a URL folder)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipelines.planning.units import SINGLE_MODEL
from pipelines.redact import redact_url
from pipelines.spec import PipelineSpec, SpecError
from spotbatch.errors import BatchFileError


def model_config(model: Any, source: dict[str, Any]) -> dict[str, Any]:
    """The model's config.json (of the pinned source `identify` found) with the spec's
    hf_overrides over it."""
    from cluster.models.source import ModelSource
    from cluster.models.tokenizer_files import tokenizer_folder

    folder = tokenizer_folder(model, ModelSource.from_json(source))
    config = json.loads((Path(folder) / "config.json").read_text())
    return {**config, **(model.engine_kwargs.get("hf_overrides") or {})}


def allows_dimensions(config: dict[str, Any], dimensions: int) -> str | None:
    """None if the model may cut its vectors to `dimensions`; else why not."""
    allowed = config.get("matryoshka_dimensions")
    if not allowed and not config.get("is_matryoshka"):
        return ("is not trained for Matryoshka truncation (its config.json has neither is_matryoshka nor "
                "matryoshka_dimensions; a model that is can be declared with model.engine_kwargs.hf_overrides)")
    if allowed and dimensions not in allowed:
        return f"allows dimensions {allowed} only"
    size = config.get("hidden_size")
    if size and dimensions > size:
        return f"makes vectors of {size} numbers"
    return None


def check_embed(spec: PipelineSpec, sources: dict[str, dict[str, Any]]) -> None:
    """Refuse, by name, `embed.dimensions` on a model that cannot honour it (`sources`: each
    model's pinned source, as plan_run's identify_models found them)."""
    if spec.task != "embed" or spec.embed.dimensions is None:
        return
    for name, model in spec.models.items() if spec.routed else [(SINGLE_MODEL, spec.model)]:
        why = allows_dimensions(model_config(model, sources[name]), spec.embed.dimensions)
        if why:
            raise SpecError(f"embed.dimensions: {spec.embed.dimensions} cannot be honoured: model "
                            f"{redact_url(model.name)!r} {why}")


def check_request_dimensions(given: PipelineSpec, resolved: PipelineSpec, sources: dict[str, dict[str, Any]]) -> None:
    """Refuse, naming its file, line and field, a batch file's request whose `dimensions` its
    model cannot honour, as `embed.dimensions` is refused (the engine would make each of its rows
    an error record). `given`: the spec as written; `resolved`: reading the Parquet made from its
    batch files (pipelines/formats/batch_files.py), whose rows hold each request's own options;
    `sources`: the resolved spec's models' pinned sources."""
    from pipelines.formats.batch_files import first_request
    from pipelines.planning.inputs import list_shards, read_column

    column = resolved.input.sampling_column
    if resolved.task != "embed" or given.input.kind == "parquet" or not column:
        return
    asked = {json.loads(v).get("dimensions") for shard in list_shards(resolved.input)
             for v in read_column(resolved.input, shard, column).to_pylist() if v}
    models = sorted(resolved.models) if resolved.routed else None
    for name, model in resolved.models.items() if resolved.routed else [(None, resolved.model)]:
        config = model_config(model, sources[name or SINGLE_MODEL])
        refused = {d: allows_dimensions(config, d) for d in asked if d is not None}
        refused = {d: why for d, why in refused.items() if why}
        found = refused and first_request(given.input, models, lambda row, m=name, no=refused: (
            (m is None or row.get("model") == m) and json.loads(row["sampling"] or "{}").get("dimensions") in no))
        if found:
            where, row = found
            dimensions = json.loads(row["sampling"])["dimensions"]
            raise BatchFileError(f"{where}: body.dimensions: {dimensions} cannot be honoured: model "
                                 f"{redact_url(model.name)!r} {refused[dimensions]}")
