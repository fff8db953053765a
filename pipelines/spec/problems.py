"""pydantic's validation errors as this project says them: `section.field must be > 0, got -3`."""

from __future__ import annotations

from pydantic import ValidationError

from spotbatch.errors import SpecError

_RULES = {
    "greater_than": "must be > {gt:g}",
    "greater_than_equal": "must be >= {ge:g}",
    "less_than": "must be < {lt:g}",
    "less_than_equal": "must be <= {le:g}",
}


def describe_problem(error: dict) -> str:
    """One pydantic error as a line naming the field, the rule and the value."""
    where = ".".join(str(p) for p in error["loc"]) or "spec"
    kind = error["type"]
    if kind == "missing":
        return f"{where} is required"
    if kind == "extra_forbidden":
        return f"{where} is not a known field"
    if kind in _RULES:
        return f"{where} {_RULES[kind].format(**error['ctx'])}, got {error['input']!r}"
    if kind == "value_error":
        return f"{where}: {error['ctx']['error']}"
    return f"{where}: {error['msg']}, got {error['input']!r}"


def spec_error(err: ValidationError) -> SpecError:
    """pydantic's error as a SpecError, a line per problem."""
    return SpecError("invalid spec:\n  " + "\n  ".join(describe_problem(e) for e in err.errors()))
