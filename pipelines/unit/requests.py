"""A unit's requests: the keys that name identical ones (for dedup and the response cache),
the answers the cache already holds, and what the engine generated, shared once committed."""

from __future__ import annotations

import json
import logging
from typing import Any

import pyarrow as pa

from operators.engine_config import ADAPTER
from pipelines.cache.response_cache import ANSWER_COLUMNS, ResponseCache, request_key
from pipelines.planning.units import model_identity
from pipelines.spec import PipelineSpec, sampling_identity
from pipelines.store.counts import ENGINE
from pipelines.stream.unit_rows import SAMPLING

log = logging.getLogger("spotbatch.unit")


def row_samplings(rows: pa.Table) -> list[dict[str, Any] | None] | None:
    """Each row's own sampling (every field, pipelines/stream/unit_rows.py), or None for a run without."""
    if SAMPLING not in rows.column_names:
        return None
    values = rows.column(SAMPLING).to_pylist()
    return [json.loads(v) if v else None for v in values] if any(values) else None


def model_cache_key(spec: PipelineSpec, source: dict | None = None, loaded_dtype: str | None = None) -> str:
    """The model part of a response-cache key: which weights, loaded how, so a shared cache
    never answers from another checkpoint or another dtype."""
    return json.dumps(model_identity(spec, source) + ([loaded_dtype] if loaded_dtype else []),
                      sort_keys=True, default=str)


def adapter_cache_keys(sources: dict[str, dict] | None) -> dict[str, str]:
    """Each adapter's part of a request key, by name: its name and its pin's digest, so a shared
    cache never answers a row of an adapter from other weights under the same name."""
    from cluster.models import ModelSource
    from cluster.models.adapters import ADAPTER_KEY

    return {key.removeprefix(ADAPTER_KEY): f"{key.removeprefix(ADAPTER_KEY)}@{ModelSource.from_json(s).digest()}"
            for key, s in (sources or {}).items()}


class UnitRequests:
    """The keys, cached answers and sharing of one actor's units (Thread-safe: no state of its own)."""

    def __init__(self, spec: PipelineSpec, cache: ResponseCache | None, model_key: str | None = None,
                 adapter_keys: dict[str, str] | None = None):
        self.spec = spec
        self.cache = cache
        self.model_key = model_key if model_key is not None else model_cache_key(spec)
        self.adapter_keys = adapter_keys or {}  # a LoRA's name and pin (adapter_cache_keys)

    def keys(self, prompts: list[str | None], max_tokens: list[int | None],
             samplings: list[dict[str, Any] | None] | None = None) -> list[str | None]:
        """Keys that name identical requests (pipelines/cache/response_cache.py), or all None when
        neither dedup nor a cache is on. Every sampling field that can change an answer is in
        the key, a row's own included."""
        spec = self.spec
        if not spec.cache.dedup and not self.cache:
            return [None] * len(prompts)
        if spec.task == "embed":  # a vector is decided by the model, the text and the embed options
            options = {"task": "embed", **spec.embed.identity()}
            return [None if p is None else request_key(self.model_key, p, None, spec.input.format, {
                **options, **((samplings[i] if samplings else None) or {})}) for i, p in enumerate(prompts)]
        base = spec.sampling.model_dump(mode="json")
        keys = []
        for i, (p, m) in enumerate(zip(prompts, max_tokens)):
            sampling = (samplings[i] if samplings else None) or base
            if sampling.get(ADAPTER):  # a row of an adapter: keyed by that adapter's pinned weights too
                sampling = {**sampling, ADAPTER: self.adapter_keys.get(sampling[ADAPTER], sampling[ADAPTER])}
            keys.append(None if p is None else request_key(
                self.model_key, p, spec.input.system_prompt, spec.input.format,
                sampling_identity({**sampling, "max_tokens": m or sampling["max_tokens"]})))
        return keys

    def cached(self, keys: list[str | None]) -> dict[str, dict[str, Any]]:
        """Cached answers; a cache that cannot be read only costs engine time, never the unit."""
        if not self.cache or not any(keys):
            return {}
        try:
            return self.cache.lookup(keys)
        except Exception as err:
            log.warning("could not read the response cache: %r", err)
            return {}

    def share(self, keys: list[str | None], cols: dict[str, list]) -> None:
        """Share what the engine generated (never errors, never answers it got from elsewhere)."""
        if not self.cache or not self.spec.cache.write:
            return
        rows = [i for i, k in enumerate(keys) if k is not None and cols["served_from"][i] == ENGINE]
        try:
            self.cache.add([keys[i] for i in rows],
                           {c: [cols[c][i] for i in rows] for c in ANSWER_COLUMNS if c in cols})
        except Exception as err:  # the unit is committed; a cache that cannot be written only costs later runs
            log.warning("could not add to the response cache: %r", err)
