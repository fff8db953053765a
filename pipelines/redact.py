"""No secret is ever written down: the spec as it is recorded (in the manifest, beside results
that teammates and downstream jobs read) keeps every key, but only values known to be safe.

Decided by an allow-list of option names known to be safe, never a deny-list of names known to
be secret: a provider's new credential name is redacted too. The names are fsspec's
(`storage_options`, below) and vLLM's (`model.engine_kwargs`, operators/engine_args.py). URL
userinfo (`s3://key:secret@b`, `ftp://user:password@host/`) is redacted wherever a URL appears,
the model's name included.

>>> redact_options({"key": "AKIA", "client_kwargs": {"endpoint_url": "http://x", "aws_session_token": "t"}})
{'key': '<redacted>', 'client_kwargs': {'endpoint_url': 'http://x', 'aws_session_token': '<redacted>'}}
>>> redact_url("s3://AKIA:wJalr@bucket/path")
's3://<redacted>@bucket/path'
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from operators.engine_args import (
    REDACTED,
    SAFE_ENGINE_ARGS,
    redact_url,  # noqa: F401 (its home; importable from here as before)
)

# fsspec, s3fs, gcsfs, adlfs and botocore option names whose values are settings, not secrets.
SAFE_OPTIONS = frozenset({
    "anon", "endpoint_url", "region_name", "region", "use_ssl", "verify", "requester_pays",
    "default_block_size", "default_fill_cache", "default_cache_type", "version_aware", "cache_regions",
    "use_listings_cache", "listings_expiry_time", "max_paths", "skip_instance_cache", "profile",
    "client_kwargs", "config_kwargs", "connect_timeout", "read_timeout", "retries", "max_pool_connections",
    "signature_version", "s3", "addressing_style", "fixed_upload_size", "project", "consistency",
    "requests_timeout", "account_name", "use_emulator", "timeout", "auto_mkdir",
})
_USERINFO_ANYWHERE = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")


def redact_message(text: str, options: dict[str, Any] | None = None) -> str:
    """An error's text fit to be shown and recorded: userinfo stripped from every URL in it, and
    every value of `options` not known to be safe replaced wherever it appears.

    >>> redact_message("GET s3://AKIA:wJalr@b/k failed for key wJalr", {"secret": "wJalr"})
    'GET s3://<redacted>@b/k failed for key <redacted>'
    """
    text = _USERINFO_ANYWHERE.sub(rf"\1{REDACTED}@", text)
    for value in _secret_values(options or {}):
        text = text.replace(value, REDACTED)
    return text


def _secret_values(options: dict[str, Any]) -> list[str]:
    found: list[str] = []
    for name, value in options.items():
        if isinstance(value, dict):
            found += _secret_values(value)
        elif name not in SAFE_OPTIONS and isinstance(value, str) and len(value) >= 4:
            found.append(value)
    return found


def redact_options(options: dict[str, Any]) -> dict[str, Any]:
    """Storage options with every value not known to be safe replaced; nested safe dicts
    (client_kwargs, config_kwargs) are redacted the same way."""
    out: dict[str, Any] = {}
    for name, value in options.items():
        if name not in SAFE_OPTIONS:
            out[name] = REDACTED
        elif isinstance(value, dict):
            out[name] = redact_options(value)
        else:
            out[name] = redact_url(value) if isinstance(value, str) else value
    return out


def redact_engine_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """vLLM arguments with every value not known to be a setting replaced.

    >>> redact_engine_kwargs({"max_num_seqs": 64, "hf_token": "hf_abc"})
    {'max_num_seqs': 64, 'hf_token': '<redacted>'}
    """
    return {name: redact_spec(value) if name in SAFE_ENGINE_ARGS else REDACTED for name, value in kwargs.items()}


_BY_NAME = {"storage_options": redact_options, "engine_kwargs": redact_engine_kwargs}


def redact_spec(data: Any) -> Any:
    """A spec (as JSON data) fit to be written down: every `storage_options` and
    `engine_kwargs` redacted, every URL stripped of its userinfo."""
    if isinstance(data, dict):
        return {k: _BY_NAME[k](v) if k in _BY_NAME and isinstance(v, dict) else redact_spec(v)
                for k, v in data.items()}
    if isinstance(data, list):
        return [redact_spec(v) for v in data]
    return redact_url(data) if isinstance(data, str) else data


def without_redacted(data: Any) -> Any:
    """A recorded spec made usable again: redacted values dropped, so credentials come from
    where the user gives them now (the environment, `--set`), never from the stored spec."""
    if isinstance(data, dict):
        return {k: without_redacted(v) for k, v in data.items() if v != REDACTED}
    if isinstance(data, list):
        return [without_redacted(v) for v in data]
    return data


def recorded_spec(recorded: dict[str, Any], overrides: list[str]):
    """The spec an output keeps, made runnable: no credential comes from it (they were never
    written down); `overrides` (`--set`) and the environment give them now."""
    from pipelines.spec import apply_overrides, validate_spec

    return validate_spec(apply_overrides(without_redacted(recorded), overrides))


def output_options(overrides: list[str]) -> dict[str, Any]:
    """The output's storage options among `--set` overrides (needed to read its manifest)."""
    from pipelines.spec import apply_overrides

    mine = [o for o in overrides if o.startswith("output.storage_options.")]
    return apply_overrides({}, mine).get("output", {}).get("storage_options", {})


def describe(spec) -> str:
    """What a recorded spec will read and run, said before it runs (the output folder could
    have been written by anyone)."""
    models = [m.name for m in spec.models.values()] if spec.routed else [spec.model.name]
    return (f"input {', '.join(redact_url(p) for p in spec.input.paths)}; model {', '.join(map(redact_url, models))}; "
            f"output {redact_url(spec.output.path)}")


def redacted_fields(data: Any, at: str = "") -> list[str]:
    """Where a recorded spec had a secret: the dotted names of its redacted values.

    >>> redacted_fields({"model": {"name": "ftp://<redacted>@h/m/", "engine_kwargs": {"hf_token": "<redacted>"}}})
    ['model.name', 'model.engine_kwargs.hf_token']
    """
    if isinstance(data, dict):
        return [f for k, v in data.items() for f in redacted_fields(v, f"{at}.{k}" if at else str(k))]
    if isinstance(data, list):
        return [f for i, v in enumerate(data) for f in redacted_fields(v, f"{at}[{i}]")]
    return [at] if isinstance(data, str) and REDACTED in data else []


@contextmanager
def credentials_hint(recorded: dict[str, Any]) -> Iterator[None]:
    """Errors reading what a recorded spec names say, when that spec had credentials, that
    the output keeps none, and which settings held them."""
    from pipelines.planning.inputs import InputError

    try:
        yield
    except InputError:
        raise
    except Exception as err:
        fields = redacted_fields(recorded)
        if not fields:
            raise
        raise InputError(
            f"could not read what the output's spec names ({err!r}). The output keeps no credentials "
            f"(its spec's secret values were redacted when it was written: {', '.join(fields)}): give them in "
            f"the environment (AWS_PROFILE, AWS_ACCESS_KEY_ID, HF_TOKEN, ...) or with --set NAME=VALUE for those "
            f"settings (a URL whole, with its user and password)") from None
