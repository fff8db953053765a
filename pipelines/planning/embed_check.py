"""What planning can tell of an embedding run before any engine starts: whether its model
allows `embed.dimensions` (Matryoshka truncation), read from the model's config.json: the
folder's own (built-in, local), or fetched with its tokenizer files, never its weights (a hub
repo at its pinned commit, a URL folder)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipelines.planning.units import SINGLE_MODEL
from pipelines.redact import redact_url
from pipelines.spec import PipelineSpec, SpecError


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
