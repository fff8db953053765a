"""serve.yaml: which model names requests may use, and the spotbatch model and compute each is
served with.

    models:
      gpt-4o-mini:                       # the name a request's body.model uses
        model: {name: smollm2-135m}      # a spotbatch model: built-in, hub id, s3:// or local folder
        compute: {actors: 1}             # as a spec's compute (its deadline is the batch's window)
        sampling: {max_tokens: 512}      # optional: defaults for requests that leave a field out
    keep_warm_seconds: 300               # engines stay loaded this long after a batch of their model
    max_file_bytes: 209715200            # OpenAI's 200 MB
    max_requests_per_file: 50000         # OpenAI's
    max_message_batch_requests: 100000   # Anthropic's: requests in one Message Batch
    max_message_batch_bytes: 268435456   # Anthropic's 256 MB: a Message Batch's request body
    message_batch_expiry: 24h            # Anthropic's: a Message Batch ends, the rest expired, this long after creation
    api_keys_file: keys.txt              # optional: sha256 hashes of the keys, one a line
    behind_tls: false                    # true when a proxy in front ends TLS (the page's cookie is Secure)
    public_origins: [https://batch.example.com]  # optional: the origins the page is served at (behind a proxy)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from spotbatch.errors import SpecError


class ServedModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: dict[str, Any] = Field(description="A spec's `model` (name: a built-in, a hub id, a folder, s3://).")
    compute: dict[str, Any] = Field(default_factory=dict, description="A spec's `compute` for its batches.")
    sampling: dict[str, Any] = Field(default_factory=dict, description="A spec's `sampling`: defaults for requests.")

    @model_validator(mode="before")
    @classmethod
    def _a_name_alone(cls, data: Any) -> Any:
        """`gpt-4o-mini: smollm2-135m` and `gpt-4o-mini: {name: ...}` are the model alone."""
        if isinstance(data, str):
            return {"model": {"name": data}}
        if isinstance(data, dict) and "name" in data:
            return {"model": data}
        return data


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: dict[str, ServedModel] = Field(min_length=1, description="Request model name -> how it is served.")
    keep_warm_seconds: float = Field(300.0, ge=0, description="Engines kept loaded after a batch of their model.")
    max_file_bytes: int = Field(200 * 1024 * 1024, gt=0, description="The largest upload (OpenAI: 200 MB).")
    max_requests_per_file: int = Field(50_000, gt=0, description="Request lines a batch may hold (OpenAI: 50,000).")
    max_message_batch_requests: int = Field(100_000, gt=0, description="Requests a Message Batch may hold "
                                            "(Anthropic: 100,000).")
    max_message_batch_bytes: int = Field(256 * 1024 * 1024, gt=0, description="The largest Message Batch request "
                                         "body (Anthropic: 256 MB).")
    message_batch_expiry: str = Field("24h", description="How long after its creation a Message Batch ends, its "
                                      "unanswered requests `expired` (Anthropic: 24h).")
    api_keys_file: str | None = Field(None, description="A file of sha256 hashes of the API keys, one a line.")
    behind_tls: bool = Field(False, description="A proxy in front ends TLS: the status page's cookie is Secure.")
    public_origins: list[str] = Field(default_factory=list, description="The origins (scheme://host[:port]) the "
                                      "status page is served at; when set, a login or logout form must come from "
                                      "one of them, whatever Host the proxy sends.")

    @field_validator("public_origins")
    @classmethod
    def _origins(cls, values: list[str]) -> list[str]:
        from urllib.parse import urlsplit

        for value in values:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/") or parts.query:
                raise ValueError(f"must be origins like 'https://batch.example.com', got {value!r}")
        return [value.rstrip("/") for value in values]

    @field_validator("message_batch_expiry")
    @classmethod
    def _a_duration(cls, value: str) -> str:
        from server.objects import window_seconds

        try:
            window_seconds(value)
        except ValueError:
            raise ValueError(f"must be a duration like '24h' (or '90m', '45s'), got {value!r}") from None
        return value


def load_config(path: str | Path) -> ServeConfig:
    """serve.yaml read and checked; a SpecError names the file and each field that is wrong."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise SpecError(f"serve config {path}: {err}") from None
    return config_from(data, str(path))


def config_from(data: Any, where: str = "serve config") -> ServeConfig:
    try:
        config = ServeConfig.model_validate(data)
    except ValidationError as err:
        problems = "\n  ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
        raise SpecError(f"{where}:\n  {problems}") from None
    if config.api_keys_file and not Path(config.api_keys_file).is_absolute() and where != "serve config":
        config.api_keys_file = str(Path(where).parent / config.api_keys_file)  # beside serve.yaml
    return config
