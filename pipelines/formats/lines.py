"""What every provider's request line is checked for, in one place: a string custom_id, only
the line's own fields, every request field honoured or refused by name, and a model that the
spec has. Each provider's module (openai.py, anthropic.py) says which fields are which."""

from __future__ import annotations

from typing import Any

from pipelines.inputs import InputError

# A failed row's error type in the providers' result lines (both use these names).
ERROR_TYPES = {"bad_input": "invalid_request_error", "context_too_long": "invalid_request_error"}


def check_line(request: Any, where: str, fields: set[str], provider: str) -> dict[str, Any]:
    """The request line as an object with a string custom_id and no field of another format."""
    if not isinstance(request, dict) or not isinstance(request.get("custom_id"), str):
        raise InputError(f"{where}: a batch request needs a string custom_id")
    unknown = sorted(set(request) - fields)
    if unknown:
        raise InputError(f"{where}: field {unknown[0]!r} is not part of an {provider} batch request line")
    return request


def check_fields(body: dict[str, Any], where: str, prefix: str, known: set[str], refused: dict[str, str],
                 what: str) -> None:
    """Every field of the request is one spotbatch honours; the first that is not is named."""
    for name in sorted(body):
        if name in refused:
            raise InputError(f"{where}: field {prefix}.{name} cannot be honoured: {refused[name]}; refused rather "
                             f"than dropped. Remove it from the file")
        if name not in known:
            raise InputError(f"{where}: field {prefix}.{name} is not {what} spotbatch knows; refused rather than "
                             f"dropped")


def requested_model(model: Any, where: str, field: str, models: list[str] | None) -> str | None:
    """The model a request names; with routed `models`, it must be one of them."""
    if model is not None and not isinstance(model, str):
        raise InputError(f"{where}: {field} must be a string, got {type(model).__name__}")
    if models and model not in models:
        raise InputError(f"{where}: {field} {model!r} names no model of the spec's `models` ({', '.join(models)})")
    return model
