"""What planning can tell of an embedding run before any engine starts: whether its model
allows `embed.dimensions` (Matryoshka truncation), or the `dimensions` of a batch file's request,
read from the model's config.json where the folder is on this machine (a built-in model built
here, or a local folder)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cluster.models import kind_of, models_dir
from pipelines.redact import redact_url
from pipelines.spec import PipelineSpec, SpecError
from spotbatch.errors import BatchFileError


def model_config(model: Any) -> dict[str, Any] | None:
    """The model's config.json with the spec's hf_overrides over it, or None when its folder
    is not on this machine (a hub or URL model: the engine then refuses, at its start)."""
    kind = kind_of(model.name)
    folder = models_dir() / model.name if kind == "builtin" else Path(model.name.removeprefix("file://"))
    if kind not in ("builtin", "local") or not (folder / "config.json").is_file():
        return None
    config = json.loads((folder / "config.json").read_text())
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


def check_embed(spec: PipelineSpec) -> None:
    """Refuse, by name, `embed.dimensions` on a model that cannot honour it."""
    if spec.task != "embed" or spec.embed.dimensions is None:
        return
    for model in spec.models.values() if spec.routed else [spec.model]:
        config = model_config(model)
        why = None if config is None else allows_dimensions(config, spec.embed.dimensions)
        if why:
            raise SpecError(f"embed.dimensions: {spec.embed.dimensions} cannot be honoured: model "
                            f"{redact_url(model.name)!r} {why}")


def check_request_dimensions(given: PipelineSpec, resolved: PipelineSpec) -> None:
    """Refuse, naming its file, line and field, a batch file's request whose `dimensions` its
    model cannot honour, as `embed.dimensions` is refused (the engine would make each of its rows
    an error record). `given`: the spec as written; `resolved`: reading the Parquet made from its
    batch files (pipelines/formats/batch_files.py), whose rows hold each request's own options."""
    from pipelines.formats.batch_files import first_request
    from pipelines.planning.inputs import list_shards, read_column

    column = resolved.input.sampling_column
    if resolved.task != "embed" or given.input.kind == "parquet" or not column:
        return
    asked = {json.loads(v).get("dimensions") for shard in list_shards(resolved.input)
             for v in read_column(resolved.input, shard, column).to_pylist() if v}
    models = sorted(given.models) if given.routed else None
    for name, model in given.models.items() if given.routed else [(None, given.model)]:
        config = model_config(model)
        refused = {d: allows_dimensions(config, d) for d in asked if d is not None and config is not None}
        refused = {d: why for d, why in refused.items() if why}
        found = refused and first_request(given.input, models, lambda row, m=name, no=refused: (
            (m is None or row.get("model") == m) and json.loads(row["sampling"] or "{}").get("dimensions") in no))
        if found:
            where, row = found
            dimensions = json.loads(row["sampling"])["dimensions"]
            raise BatchFileError(f"{where}: body.dimensions: {dimensions} cannot be honoured: model "
                                 f"{redact_url(model.name)!r} {refused[dimensions]}")
