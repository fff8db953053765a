"""A batch file's requests checked against the spec's models before anything is written: what a
model cannot honour for a request (its tool parser, its reasoning parser) refuses the run by name
(file, line, field) before any engine starts (pipelines/formats/batch_files.py). A request's own
bad values are its row's error record instead, as OpenAI answers them in its error file."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from pipelines.spec.row_sampling import row_sampling
from pipelines.spec.sampling import SamplingSpec
from pipelines.spec.tools import auto_refusal, strict_refusal
from spotbatch.errors import BatchFileError


@dataclass(frozen=True)
class RequestModels:
    """The spec's models and sampling as a request line meets them."""

    names: list[str] | None = None
    """The routed models, which each request's model must name (None: one model answers all)."""
    models: dict[str | None, Any] = field(default_factory=dict)
    """Each model's ModelSpec (key None: the one model's): its parsers decide the tools and choices a
    request may ask for."""
    sampling: dict[str, Any] = field(default_factory=dict)
    """The spec's sampling fields that are set, over the provider's defaults, under each request's own."""
    adapters: list[str] = field(default_factory=list)
    """The one model's LoRA adapters (model.adapters): a request's model names one of them, or the base model."""
    base: str | None = None
    """The one model's name, as a request may name it for the base model when it has adapters."""


def check_request_rows(rows: list[dict[str, Any]], where: str, endpoint: ModuleType, models: RequestModels) -> None:
    """What the spec's models cannot honour for a request refuses the run by name: tool_choice auto
    or a strict function its model's tool parser cannot hold, n > 1 with a reasoning parser, a
    thinking budget without one. A
    request whose own values are wrong (temperature 7, n: 2 with tools, a template variable the
    template cannot take) is not refused: its row becomes a bad_input record and the rest run."""
    if getattr(endpoint, "TASK", "generate") != "generate":
        return
    base = base_sampling(endpoint, json.dumps(models.sampling, sort_keys=True))
    for row in rows:
        sampling, why = row_sampling(base, json.loads(row.get("sampling") or "{}"))
        if why:  # the read stage makes it this request's bad_input record, as OpenAI answers a bad
            continue  # request in its error file while the others run (tests/test_request_fields.py)
        model = models.models.get(row.get("model") if models.names else None)
        cannot = model and model_cannot(sampling or base.model_dump(), model)
        if not cannot:
            continue
        rule, why = cannot
        if rule == "tools":
            raise BatchFileError(f"{where}: tools cannot be honoured: {why}")
        if rule == "thinking_token_budget":
            raise BatchFileError(f"{where}: field {getattr(endpoint, 'THINKING_FIELD', 'thinking_token_budget')} "
                                 f"cannot be honoured: the model has no reasoning_parser (vLLM ends a thinking it "
                                 f"knows by its parser's markers)")
        raise BatchFileError(f"{where}: n: {why} cannot be honoured: model.reasoning_parser takes "
                             f"n: 1 (each result row keeps one choice's reasoning)")


def model_cannot(sampling: dict[str, Any], model: Any) -> tuple[str, str] | None:
    """What of a request's (or a row's) sampling its model (a ModelSpec) cannot honour, the one
    place these are decided; the callers say it in their words (a batch file's refusal by line
    above, a Parquet row's bad_input record in pipelines/stream/unit_rows.py): ("tools", why) for
    tool_choice auto or a strict function its tool parser cannot hold, ("thinking_token_budget",
    "") for a budget without a reasoning parser, ("n", n) for n > 1 with one."""
    why = sampling.get("tools") and (auto_refusal(sampling, model.tool_parser)
                                     or strict_refusal(sampling, model.tool_parser))
    if why:
        return "tools", why
    if sampling.get("thinking_token_budget") is not None and not model.reasoning_parser:
        return "thinking_token_budget", ""
    if model.reasoning_parser and (sampling.get("n") or 1) > 1:
        return "n", str(sampling["n"])
    return None


@functools.lru_cache(maxsize=8)
def base_sampling(endpoint: ModuleType, written: str) -> SamplingSpec:
    """A request's sampling before its own fields: the provider's defaults under the spec's."""
    return SamplingSpec.model_validate({**endpoint.DEFAULT_SAMPLING, **json.loads(written)})
