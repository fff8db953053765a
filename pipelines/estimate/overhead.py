"""A run's seconds outside its engines' start and steps, measured by a calibration run and split
as the ledger (pipelines/store/ledger.py) prices them: it prices an engine actor from the
actor's start to its release, so the run's time before the engine actor exists (Ray's start,
the actor's placement) is in the run's wall time but in nobody's $, while the actor's own
set-up around its engine's start and its idle tail after its last request until its release
are in both. The estimate's time counts every part; its $ only the parts the ledger prices.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pipelines.spec import PipelineSpec


@dataclass(frozen=True)
class Overhead:
    before_engine: float  # the run's start to its first engine actor's start: Ray's start, the placement
    actor_setup: float  # that actor's start to its engine loaded, less the engine's own start: the ledger's load
    wrap_up: float  # the last request to the actor's release, as the ledger ends it: the ledger's idle
    after_release: float  # the actor's release to the run's end

    @property
    def seconds(self) -> float:
        return self.before_engine + self.actor_setup + self.wrap_up + self.after_release

    @property
    def priced(self) -> float:
        return self.actor_setup + self.wrap_up


def run_overhead(run: dict[str, Any], actors: list[dict[str, Any]], now: float | None = None) -> Overhead | None:
    """A run's overhead from its run record and its actors' records (Records.actors()), split
    by what the ledger prices; None where the records do not tell (no engine finished a request)."""
    from pipelines.store.ledger import actor_end

    ended = [a for a in actors if (a.get("engine") or {}).get("last_finished_at") and a.get("loaded_at")]
    if not ended or not run.get("started_at") or not run.get("ended_at"):
        return None
    first = min(ended, key=lambda a: a["loaded_at"])
    last = max(ended, key=lambda a: a["engine"]["last_finished_at"])
    start = first.get("started_at") or first["loaded_at"]
    loading = (first.get("compile") or {}).get("engine_start_seconds") or 0.0
    finished = last["engine"]["last_finished_at"]
    # When the ledger ends the actor's cost; a run's later seconds (a warm engine's wait) are not its rows'.
    released = max(finished, min(actor_end(last, {last.get("run_id"): run}, now or time.time()), run["ended_at"]))
    return Overhead(before_engine=max(0.0, start - run["started_at"]),
                    actor_setup=max(0.0, first["loaded_at"] - start - loading),
                    wrap_up=released - finished, after_release=max(0.0, run["ended_at"] - released))


def overhead_facts(overhead: Overhead, run_id: str) -> dict[str, Any]:
    """What the engine facts keep of it (run_overhead_seconds: the whole, as before the split)."""
    return {"run_overhead_seconds": overhead.seconds, "priced_overhead_seconds": overhead.priced,
            "before_engine_seconds": overhead.before_engine, "run_overhead_run_id": run_id}


def from_facts(on: dict[str, Any]) -> tuple[float, float, str]:
    """The overhead's seconds in the run's time, those of them the ledger prices, and the words
    that say so. Facts kept before the split priced it all (errs high, and says so)."""
    whole = on.get("run_overhead_seconds")
    if whole is None:
        return 0.0, 0.0, ""
    said = f"; plus {whole:.0f} s of a run's overhead measured by run {on['run_overhead_run_id']}"
    priced = on.get("priced_overhead_seconds")
    if priced is None:
        return whole, whole, (f"{said} (Ray's start, the actor's placement, the wrap-up), all in $: that run kept "
                              f"no split of what the ledger prices, so $ errs high; a calibration measures it again")
    before = on.get("before_engine_seconds") or 0.0
    return whole, priced, (f"{said}: {before:.0f} s before its engine actor started (Ray's start, the actor's "
                           f"placement) and {whole - before - priced:.0f} s after the actor's release are time only; "
                           f"$ prices {priced:.0f} s of it (the actor's set-up around its engine's start, and its "
                           f"wrap-up after its last request until its release), as the ledger prices an engine "
                           f"actor from its start to its release")


def remember_overhead(spec: PipelineSpec) -> None:
    """Keep the calibration run's overhead (run_overhead) on each instance type it ran on, for
    the estimate's time and $ (pipelines/estimate/options.py): under each model whose engines ran
    there (a routed run's each under its own, never the default model's)."""
    from pipelines.engine import facts as engine_facts
    from pipelines.store.output import OutputStore
    from pipelines.store.records import Records

    records = Records(OutputStore(spec.output.path))
    run_id, run = next(iter(records.runs().items()), (None, {}))
    actors = [a for a in records.actors().values() if a.get("run_id") == run_id and a.get("instance_type")]
    overhead = run_overhead(run, actors)
    if overhead is None:
        return
    for model in overhead_models(spec, actors):
        on = {t: overhead_facts(overhead, run_id)
              for t in {a["instance_type"] for a in actors if _model_of(spec, a) == model}}
        engine_facts.remember(model, spec.compute.gpus_per_actor, {"on": on}, run_id)


def _model_of(spec: PipelineSpec, actor: dict[str, Any]):
    """The model an engine actor ran: a routed run's by the name it records, else the spec's."""
    name = actor.get("model")
    return spec.models[name] if spec.routed and name in spec.models else None if spec.routed else spec.model


def overhead_models(spec: PipelineSpec, actors: list[dict[str, Any]]) -> list:
    """The models whose engine facts keep a run's overhead: those its actors ran (none unknown)."""
    found = []
    for actor in actors:
        model = _model_of(spec, actor)
        if model is not None and all(model is not m for m in found):
            found.append(model)
    return found
