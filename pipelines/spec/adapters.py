"""`model.adapters`: LoRA adapters served by the base model's engine, each named and picked per
row (`input.adapter_column`) or per batch line (`body.model`). A source takes the forms of a
model's (cluster/models): a local folder, a hub repo id pinned to a commit, a URL folder."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from pipelines.spec.base import _Section


class AdapterSpec(_Section):
    source: str = Field(
        description="Where the adapter is: a local folder, a hub repo id (org/name) or a folder's URL "
        "(s3://bucket/prefix/), holding peft's adapter_config.json and weights. A text alone is the source.")
    revision: str | None = Field(
        None, description="Hub repo ids: a branch, tag or commit (default main), pinned to a commit at planning.")
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="URL folders: fsspec options (endpoint, credentials); never written down.")

    @model_validator(mode="before")
    @classmethod
    def _text_is_the_source(cls, value: Any) -> Any:
        return {"source": value} if isinstance(value, str) else value

    @field_validator("source")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name a folder, a hub repo id or a URL")
        return value

    @property
    def name(self) -> str:  # cluster/models reads a source as a model's: name, revision, storage_options
        return self.source


def check_adapter_names(adapters: dict[str, AdapterSpec], base: str) -> None:
    """Adapter names are what rows and batch lines write: plain words, never the base model's name."""
    for name in adapters:
        if name == base:
            raise ValueError(f"{name!r} is the base model's name, which rows use for the base")
        if not name or not all(c.isalnum() or c in "_.-" for c in name):
            raise ValueError(f"names may hold letters, digits, _ . and -; got {name!r}")
