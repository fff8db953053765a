"""What an engine actor is asked to serve (RunRequest) and what it serves a run with
(RunBinding): the two frozen objects that travel from the driver to pipelines/engine/actor.py."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the driver imports this module without the engine's
    from cluster.node_facts import NodeFacts
    from pipelines.spec import PipelineSpec
    from pipelines.store.records import Records
    from pipelines.unit.protocol import UnitProtocol


@dataclass(frozen=True)
class RunRequest:
    """One run an engine is asked to serve, as the driver sends it (pipelines/run.py's
    engine_args, by keyword: Ray Data passes a callable class's arguments so)."""

    spec_data: dict[str, Any]
    """The run's spec, as JSON (validated again in the actor)."""
    fingerprint: str
    """The plan's fingerprint: a unit is committed only while the output still holds it."""
    run_id: str
    model_source: dict[str, Any]
    """The weights planning pinned (cluster/models.py's ModelSource, as JSON)."""
    retry: bool = False
    """A `--retry-failed` run: units are failed rows of committed units, merged back."""
    route_name: str | None = None
    """The routed model's name, or None for a run's single `model`."""
    adapter_sources: dict[str, Any] | None = None
    """The LoRA adapters planning pinned (model.adapters), by the plan's key for each."""

    @classmethod
    def of(cls, context: dict[str, Any]) -> RunRequest:
        """The request among a call's context (pipelines/engine/host.py's, which carries more)."""
        return cls(**{f.name: context[f.name] for f in fields(cls) if f.name in context})


@dataclass(frozen=True)
class RunBinding:
    """What an engine serves one run with. A unit is run with the binding of the run it came
    from, end to end: a warm engine bound to the next run meanwhile never changes it."""

    run_id: str
    actor_id: str  # this engine's record in the run's output (a new one for each run it serves)
    spec: PipelineSpec
    protocol: UnitProtocol
    records: Records
    node: NodeFacts
    beat_seconds: float
    started_at: float
