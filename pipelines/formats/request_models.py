"""A provider batch file's request lines and the spec's LoRA adapters: the adapter each line's
model names, checked at planning by name (the rest of a line's checks: request_checks.py)."""

from __future__ import annotations

from typing import Any

from pipelines.formats.lines import shown
from pipelines.formats.request_checks import RequestModels
from spotbatch.errors import BatchFileError


def check_adapters(rows: list[dict[str, Any]], where: str, models: RequestModels, model_field: str) -> None:
    """With model.adapters, a request's model names an adapter or the base model; anything else
    (a typo, another fleet's name) is refused by name, never answered by the base model instead."""
    for row in rows:
        model = row.get("model")
        if models.adapters and model is not None and model not in models.adapters and model != models.base:
            raise BatchFileError(f"{where}: {model_field} {shown(model)} names no adapter of model.adapters "
                                 f"({', '.join(models.adapters)}) and is not the base model {models.base!r}")
