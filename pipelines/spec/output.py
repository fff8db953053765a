"""Where answers go (`output`), the response cache shared across runs (`cache`), and how rows
pick a model (`route`)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from pipelines.spec.base import _Section


class OutputSpec(_Section):
    path: str = Field(description="Folder for results, local or s3://.")
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec options for the output file system."
    )


class CacheSpec(_Section):
    path: str | None = Field(
        None, description="Response cache shared across runs, local or s3://: identical requests "
        "(model, prompt, system prompt, sampling, seed) are answered from it at no engine cost.",
    )
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec options for the cache.")
    dedup: bool = Field(True, description="Generate identical requests once within a run.")
    write: bool = Field(True, description="Add this run's answers to the cache (with path).")


class RouteSpec(_Section):
    column: str = Field(description="Input column whose value picks each row's model.")
    map: dict[str, str] = Field(
        default_factory=dict, description="Column value -> a model's name in `models`. A value with no "
        "entry that is itself a name in `models` picks that model.",
    )
    default: str | None = Field(
        None, description="Model for rows whose value picks none (null, or unknown). Without it, such "
        "rows are refused before the run starts, naming the values.",
    )
