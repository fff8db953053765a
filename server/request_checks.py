"""What a run would refuse of one request, checked when the batch is made, by the run's own code:
tools its model cannot parse (pipelines/formats/batch_files.py refuses the whole run for one such
request), and, for a Message Batch, what the run makes the request's error record (no messages,
sampling fields the run's SamplingSpec refuses), which Anthropic answers as that request's
invalid_request_error (server/anthropic_requests.py makes the request errored, not the run)."""

from __future__ import annotations

import functools
import json
from typing import Any

from pipelines.formats.request_checks import RequestModels, base_sampling, check_request_rows
from pipelines.spec.row_sampling import row_sampling
from spotbatch.errors import BatchFileError


def check_tools(rows: list[dict[str, Any]], where: str, served: dict[str, Any], module) -> None:
    """A BatchFileError naming `where` when a request's tools (or its n with a reasoning parser)
    cannot be honoured by its served model, checked by the run's own code (the served models as the
    run's spec routes them: server/driver.py batch_spec), with that model's serve.yaml sampling."""
    names = sorted(served)
    model = rows[0].get("model") if rows else None
    sampling = served[model].sampling if model in served else {}
    specs = {n: _model_spec(json.dumps(served[n].model, sort_keys=True)) for n in names}
    check_request_rows(rows, where, module, RequestModels(names, specs, sampling))


@functools.lru_cache(maxsize=64)
def _model_spec(model: str):
    from pipelines.spec.model import ModelSpec

    return ModelSpec.model_validate(json.loads(model))


def check_row(rows: list[dict[str, Any]], where: str, served: dict[str, Any], module) -> None:
    """A BatchFileError naming `where` and the field for a row the run could only error: no
    messages, or sampling the run's SamplingSpec refuses (the provider's names in the message)."""
    theirs = {ours: name for name, ours in getattr(module, "SAMPLING_FIELDS", {}).items()}
    for row in rows:
        if row.get(module.PROMPT_COLUMN) is None:
            raise BatchFileError(f"{where}: params.{module.PROMPT_COLUMN} must be a list of at least one message")
        base = base_sampling(module, json.dumps(served[row["model"]].sampling, sort_keys=True))
        _, why = row_sampling(base, row.get("sampling"))
        if why:
            field, _, rest = why.partition(" ")
            name = theirs.get(field.rstrip(":"), field.rstrip(":"))
            raise BatchFileError(f"{where}: params.{name}{':' if field.endswith(':') else ''} {rest}")
