"""What every provider's request line is checked for, in one place: a string custom_id, only
the line's own fields, every request field honoured or refused by name, and a model that the
spec has. Each provider's module (openai.py, anthropic.py) says which fields are which."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pipelines.formats.json_text import NotJSON, load_json
from spotbatch.errors import BatchFileError

# A failed row's error type in the providers' result lines (both use these names).
ERROR_TYPES = {"bad_input": "invalid_request_error", "context_too_long": "invalid_request_error"}


def parse_line(line: str, where: str) -> Any:
    """The JSON value a request line holds (plain JSON only: pipelines/formats/json_text.py)."""
    try:
        return load_json(line)
    except json.JSONDecodeError as err:
        raise BatchFileError(f"{where}: not JSON ({err.msg})") from None
    except NotJSON as err:
        raise BatchFileError(f"{where}: {err}") from None


def kind_of(value: Any) -> str:
    """What a JSON value is, for a message that must not print the value itself.

    >>> kind_of({"x": 1}), kind_of([]), kind_of(True), kind_of(2), kind_of(None)
    ('an object', 'a list', 'a boolean', 'a number', 'null')
    """
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if value is None:
        return "null"
    return {str: "a string", list: "a list", dict: "an object"}.get(type(value), f"a {type(value).__name__}")


def shown(value: Any) -> str:
    """A value for a message: a string as itself (cut short), anything else by its kind."""
    return repr(value if len(value) <= 60 else value[:60] + "...") if isinstance(value, str) else kind_of(value)


def string_field(value: Any, where: str, field: str) -> str:
    """`value`, which the request's `field` must hold as a string."""
    if not isinstance(value, str):
        raise BatchFileError(f"{where}: {field} must be a string, got {kind_of(value)}")
    return value


def check_line(request: Any, where: str, fields: set[str], provider: str) -> dict[str, Any]:
    """The request line as an object with a string custom_id and no field of another format."""
    if not isinstance(request, dict):
        raise BatchFileError(f"{where}: a batch request line must be a JSON object, got {kind_of(request)}")
    string_field(request.get("custom_id"), where, "custom_id")
    unknown = sorted(set(request) - fields)
    if unknown:
        raise BatchFileError(f"{where}: field {unknown[0]!r} is not part of an {provider} batch request line")
    return request


@dataclass(frozen=True)
class KnownFields:
    """The fields of a provider's request that spotbatch reads, and those it refuses (with why)."""

    known: set[str]
    """Fields honoured."""
    refused: dict[str, str]
    """Fields refused by name, each with the reason."""
    what: str
    """What a field is, as the message says it: "an OpenAI chat completion field"."""


def check_fields(body: dict[str, Any], where: str, prefix: str, fields: KnownFields) -> None:
    """Every field of the request is one spotbatch honours; the first that is not is named."""
    known, refused, what = fields.known, fields.refused, fields.what
    for name in sorted(body):
        if name in refused:
            raise BatchFileError(f"{where}: field {prefix}.{name} cannot be honoured: {refused[name]}; refused rather "
                             f"than dropped. Remove it from the file")
        if name not in known:
            raise BatchFileError(f"{where}: field {prefix}.{name} is not {what} spotbatch knows; refused rather than "
                             f"dropped")


def requested_model(model: Any, where: str, field: str, models: list[str] | None) -> str | None:
    """The model a request names; with routed `models`, it must be one of them."""
    if model is not None:
        string_field(model, where, field)
    if models and model not in models:
        raise BatchFileError(f"{where}: {field} {shown(model)} names no model of the spec's `models` "
                             f"({', '.join(models)})")
    return model


# The rows a request becomes: one, named by its custom_id; or several (a list of prompts or of
# inputs), each named [custom_id, index, count] in JSON, so ids stay unique and an export puts
# the request back together from its rows alone.
def row_ids(custom_id: str, count: int, where: str) -> list[str]:
    """The ids of a request's `count` rows; a custom_id that reads as a row id of several is
    refused, since its rows could not be told from another request's."""
    if custom_id.startswith("[") and _triple(custom_id) is not None:
        raise BatchFileError(f"{where}: custom_id {shown(custom_id)} reads as spotbatch's name for one row of a "
                             f"request of several prompts; choose another")
    if count == 1:
        return [custom_id]
    return [json.dumps([custom_id, i, count]) for i in range(count)]


def request_of(row_id: str) -> tuple[str, int, int]:
    """(custom_id, index, count) of a row named by row_ids.

    >>> request_of("r1"), request_of(row_ids("r1", 2, "f line 1")[1])
    (('r1', 0, 1), ('r1', 1, 2))
    """
    found = _triple(row_id) if row_id.startswith("[") else None
    return found if found is not None else (row_id, 0, 1)


def _triple(text: str) -> tuple[str, int, int] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if (isinstance(value, list) and len(value) == 3 and isinstance(value[0], str)
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value[1:])):
        return value[0], value[1], value[2]
    return None
