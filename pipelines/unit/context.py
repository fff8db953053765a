"""Who runs a unit, for which run: what pipelines/unit/protocol.py's UnitProtocol is made with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pipelines.spec import PipelineSpec


@dataclass(frozen=True)
class UnitContext:
    """One actor's place in one run."""

    spec: PipelineSpec
    fingerprint: str
    """The run's plan: a unit is committed only while the output still holds it."""
    run_id: str
    actor_id: str
    """The actor's record in the run's output (pipelines/store/records.py)."""
    node_id: str
    retry: bool = False
    """A `--retry-failed` run: units are failed rows of committed units, merged back when done."""
    model_key: str | None = None
    """The model part of a response-cache key (pipelines/unit/requests.py); None: the spec's."""
    adapter_keys: dict[str, str] = field(default_factory=dict)
    """Each LoRA adapter's part of a key: its name and pinned weights (pipelines/unit/requests.py)."""
    engine_stats: Callable[[], dict] = dict
    """The engine's figures, kept in each attempt's end record."""
    storage_requests: Callable[[], dict] = dict
    """The actor's S3 requests for this run so far (the ledger's)."""
    embedding_size: int | None = None
    """`task: embed`: the numbers in each vector (the `embedding` column's fixed size)."""
