"""A row's own sampling: the run's, with the overrides its sampling column (or request body) gives."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from pipelines.formats.json_text import NotJSON, check_json_value, load_json
from pipelines.spec.problems import describe_problem
from pipelines.spec.sampling import SamplingSpec

KWARGS = "chat_template_kwargs"


def row_sampling(base: SamplingSpec | Any, override: Any) -> tuple[dict[str, Any] | None, str | None]:
    """A row's own sampling (every field: the run's, with the row's overrides), or why the
    overrides cannot be used. An override is a JSON object (text) or a struct; null: none.
    `base` is the run's SamplingSpec, or with `task: embed` its EmbedSpec (a row's own options).

    >>> row_sampling(SamplingSpec(), '{"temperature": 0.5, "n": 2}')[0]["n"]
    2
    >>> row_sampling(SamplingSpec(), '{"temprature": 0.5}')[1]
    'temprature is not a known field'
    >>> row_sampling(SamplingSpec(), {"top_p": 3.0, "seed": None})[1]
    'top_p must be <= 1, got 3.0'
    """
    if override is None:
        return None, None
    try:
        if isinstance(override, str):
            override = load_json(override)
            if not isinstance(override, dict):
                return None, f"must be a JSON object of sampling fields, got {type(override).__name__}"
        elif isinstance(override, dict):  # a struct column: a null field is one the row does not set
            check_json_value(override)
            override = {k: v for k, v in override.items() if v is not None}
        else:
            return None, f"must be a JSON object or a struct of sampling fields, got {type(override).__name__}"
    except json.JSONDecodeError as err:
        return None, f"is not JSON ({err.msg})"
    except NotJSON as err:
        return None, str(err)
    if not override:
        return None, None
    written = base.model_dump()
    if isinstance(written.get(KWARGS), dict) and isinstance(override.get(KWARGS), dict):
        # Template variables by name, as vLLM's server puts a request's over its defaults: a row's
        # (or Anthropic's thinking disabled, pipelines/formats/anthropic.py) keeps the spec's others.
        override = {**override, KWARGS: {**written[KWARGS], **override[KWARGS]}}
    try:
        # Strict: "64" or 64.5 for an integer is refused, as the providers refuse it, not guessed at.
        merged = type(base).model_validate({**written, **override}, strict=True)
    except ValidationError as err:
        # A rule across fields is the row's sampling's, not the spec's: no "spec:" before it.
        return None, "; ".join(describe_problem(e).removeprefix("spec: ") for e in err.errors())
    return merged.model_dump(mode="json"), None
