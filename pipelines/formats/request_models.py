"""The spec's models as a provider batch file's request lines meet them: each line's model, the
tools its model can parse, and the LoRA adapter it names, checked at planning by name."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pipelines.formats.lines import shown
from pipelines.spec.tools import auto_refusal
from spotbatch.errors import BatchFileError


@dataclass(frozen=True)
class RequestModels:
    """The spec's models as a request line meets them."""

    names: list[str] | None = None
    """The routed models, which each request's model must name (None: one model answers all)."""
    tool_parsers: dict[str | None, str | None] = field(default_factory=dict)
    """Each model's model.tool_parser (key None: the one model's), without which tool_choice auto is refused."""
    adapters: list[str] = field(default_factory=list)
    """The one model's LoRA adapters (model.adapters): a request's model names one of them, or the base model."""
    base: str | None = None
    """The one model's name, as a request may name it for the base model when it has adapters."""


def check_tools(rows: list[dict[str, Any]], where: str, models: RequestModels) -> None:
    """A request whose tools need a tool parser its model lacks (tool_choice auto), refused by name."""
    for row in rows:
        sampling = json.loads(row.get("sampling") or "{}")
        why = auto_refusal(sampling, models.tool_parsers.get(row.get("model") if models.names else None))
        if why:
            raise BatchFileError(f"{where}: tools cannot be honoured: {why}")


def check_adapters(rows: list[dict[str, Any]], where: str, models: RequestModels, model_field: str) -> None:
    """With model.adapters, a request's model names an adapter or the base model; anything else
    (a typo, another fleet's name) is refused by name, never answered by the base model instead."""
    for row in rows:
        model = row.get("model")
        if models.adapters and model is not None and model not in models.adapters and model != models.base:
            raise BatchFileError(f"{where}: {model_field} {shown(model)} names no adapter of model.adapters "
                                 f"({', '.join(models.adapters)}) and is not the base model {models.base!r}")
