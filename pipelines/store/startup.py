"""Where a run's first seconds went, from its records: planning, Ray, the engine actor's start,
the model load, and the first unit, up to its first committed result.

Read from the run record (invoked, started streaming, Ray ready), the first actor that served
it (started, loaded; a warm engine did neither for this run) and its attempts (the first end
of a committed one). Nothing is timed twice: each phase ends where the next begins.
"""

from __future__ import annotations

from typing import Any

from pipelines.store.record_types import AttemptOutcome, attempt_outcome
from pipelines.store.records import Records

PHASES = ("planning", "ray", "actor_start", "model_load", "first_unit")


def startup(records: Records, run_id: str | None = None) -> dict[str, Any] | None:
    """The phases of `run_id` (default: the latest run that recorded them), in seconds, with
    `to_first_result`; None when no run got that far."""
    runs = {r: rec for r, rec in records.runs().items() if rec.get("ray_ready_at") and rec.get("invoked_at")}
    if run_id is None and runs:
        run_id = max(runs, key=lambda r: runs[r]["started_at"])
    run = runs.get(run_id)
    if run is None:
        return None
    ends = [(t["end"]["time"], t["start"].get("actor_id")) for tries in records.settled_attempts().values()
            for t in tries.values() if t.get("start", {}).get("run_id") == run_id
            and attempt_outcome(t) is AttemptOutcome.COMMITTED]
    if not ends:
        return None
    first_end, actor_id = min(ends)
    actor = records.actors().get(actor_id, {})
    ready = run["ray_ready_at"]
    warm = bool(actor.get("warm"))
    loaded = ready if warm or not actor else max(actor["loaded_at"], ready)
    phases = {
        "planning": run["started_at"] - run["invoked_at"],
        "ray": ready - run["started_at"],
        "actor_start": 0.0 if warm or not actor else max(0.0, actor["started_at"] - ready),
        "model_load": 0.0 if warm or not actor else actor["loaded_at"] - max(actor["started_at"], ready),
        "first_unit": first_end - loaded,
    }
    return {**phases, "to_first_result": first_end - run["invoked_at"], "warm_engine": warm}


def format_startup(s: dict[str, Any]) -> str:
    """One line.

    >>> format_startup({"planning": 0.2, "ray": 3.1, "actor_start": 2.0, "model_load": 8.0, "first_unit": 1.4,
    ...                 "to_first_result": 14.7, "warm_engine": False})  # doctest: +NORMALIZE_WHITESPACE
    'start-up: 14.7 s to the first result: planning 0.2 s, Ray 3.1 s, actor start 2.0 s, model load 8.0 s,
     first unit 1.4 s'
    """
    names = {"planning": "planning", "ray": "Ray", "actor_start": "actor start", "model_load": "model load",
             "first_unit": "first unit"}
    parts = ", ".join(f"{names[p]} {s[p]:.1f} s" for p in PHASES if not (s["warm_engine"] and p in (
        "actor_start", "model_load")))
    return f"start-up: {s['to_first_result']:.1f} s to the first result: {parts}" + (
        " (a warm engine: no actor start, no model load)" if s["warm_engine"] else "")
