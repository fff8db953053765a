"""spotbatch: offline LLM batch inference over Parquet (or OpenAI/Anthropic batch files) on spot
GPUs, each row exactly once, resumable, with what every token cost.

This package is the public API; the folders beside it (operators, pipelines, cluster, jobs) are
its internals and may move. Its names are loaded on first use, so `import spotbatch` starts no
Ray, imports no vLLM or torch and changes no global state (no fsspec filesystem is registered).

A spec is built in Python, or read from YAML as the CLI reads it:

>>> import spotbatch
>>> spec = spotbatch.Spec.model_validate({"input": {"paths": "data/", "prompt_column": "text"},
...                                       "output": {"path": "out/"}})
>>> spec.sampling.max_tokens
256
>>> spotbatch.Spec.model_validate({"input": {"paths": "data/"}, "output": {"path": "out/"},
...                                "sampling": {"max_tokens": -3}})
Traceback (most recent call last):
spotbatch.errors.SpecError: invalid spec:
  input: set exactly one of prompt_column or template
  sampling.max_tokens must be > 0, got -3

Then `spotbatch.run(spec)` runs it (`spotbatch.start(spec)` in the background), and
`status`, `report`, `export` and `cancel` take its output path. Every error raised on purpose
is a `spotbatch.SpotbatchError` (spotbatch/errors.py).
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> (module, attribute): imported when first asked for.
_LAZY = {
    "Spec": ("pipelines.spec", "PipelineSpec"),
    "run": ("spotbatch.api", "run"),
    "start": ("spotbatch.api", "start"),
    "status": ("spotbatch.api", "status"),
    "report": ("spotbatch.api", "report"),
    "export": ("spotbatch.api", "export"),
    "cancel": ("spotbatch.api", "cancel"),
    "release_engines": ("spotbatch.api", "release_engines"),
    "estimate": ("spotbatch.api", "estimate"),
    "serve": ("spotbatch.api", "serve"),
    **{name: ("spotbatch.errors", name) for name in (
        "SpotbatchError", "UserError", "SpecError", "InputError", "BatchFileError", "OutputError", "ModelError",
        "ModelNotFoundError", "ModelChangedError", "PriceError", "RunFailed", "EngineFailed", "EngineStartError",
        "StorageError")},
}
# What a run returns and what start() hands back, for type hints; not loaded by `import *`.
_TYPES = {
    "RunSummary": ("pipelines.run", "RunSummary"),
    "RunHandle": ("pipelines.background", "RunHandle"),
    "Estimate": ("pipelines.estimate", "Estimate"),
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name) or _TYPES.get(name)
    if where is None:
        raise AttributeError(f"module 'spotbatch' has no attribute {name!r}")
    value = getattr(importlib.import_module(where[0]), where[1])
    globals()[name] = value  # asked once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_TYPES))
