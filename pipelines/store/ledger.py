"""The ledger: what a run (every invocation on one output) cost, from its records.

It is computed from the records alone, so it works on a finished, partial, preempted or
still-running run, and is written beside the results as Parquet:
    _spotbatch/ledger/actors.parquet   one row per engine actor: node, price, seconds and $ per bucket
    _spotbatch/ledger/units.parquet    one row per unit: attempts, tokens, useful and wasted $
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from operators.cost import BUCKETS, ActorTime, Attempt, CostSummary, attempt_seconds, split_actor_time, summarize
from pipelines.store.adapter_costs import committed_adapter_tokens, split_cost
from pipelines.store.output import OutputStore
from pipelines.store.record_types import AttemptOutcome, attempt_outcome
from pipelines.store.records import HEARTBEAT_SECONDS, Records

LEDGER = "_spotbatch/ledger"


@dataclass
class Ledger:
    summary: CostSummary
    actors: pa.Table
    units: pa.Table
    timeline: list[tuple[float, int]]  # (commit time, output tokens of that unit; embeddings: input), in order
    started_at: float | None


def actor_end(actor: dict[str, Any], runs: dict[str, dict[str, Any]], now: float) -> float:
    """When the actor stopped costing: its run's end if it lived that long; else (preempted, or
    its driver died) the end of the heartbeat interval in which it died: it beat no more, and
    a node is billed until it is gone, so this errs by less than one interval, on the high side."""
    if actor.get("warm_until"):  # held warm after the run, for the next: that time is this run's idle
        return actor["warm_until"]
    last_seen = actor["last_seen"]
    period = actor.get("beat_seconds") or HEARTBEAT_SECONDS
    run_end = runs.get(actor.get("run_id"), {}).get("ended_at")
    if run_end is not None and last_seen >= run_end - 2 * period:
        # Released with the run. Its run's end, not its last beat: an actor beats on for the
        # moment Ray takes to tear it down, and a beat landing after the ledger was written
        # would make the same run's ledger differ when it is read again.
        return run_end
    if run_end is None and now - last_seen <= 2 * period:
        return now  # alive: the run is going on
    return min(last_seen + period, run_end or now)


def storage_cost(runs: dict[str, dict], actors: dict[str, dict], attempts: dict[str, dict]) -> dict[str, Any]:
    """The S3 requests the output's runs made (cluster/storage_requests.py): each driver's, from
    its run record, and each engine actor's, from the latest of its beats and attempt ends (its
    counts only grow), priced at the catalog's request prices."""
    from cluster.prices import request_prices, requests_usd

    latest: dict[str, dict[str, int]] = {a: r.get("storage_requests") or {} for a, r in actors.items()}
    for tries in attempts.values():
        for t in tries.values():
            counts = (t.get("end") or {}).get("storage_requests")
            actor = (t.get("start") or {}).get("actor_id")
            if counts and sum(counts.values()) > sum(latest.get(actor, {}).values()):
                latest[actor] = counts
    total: dict[str, int] = {}
    for counts in [r.get("storage_requests") or {} for r in runs.values()] + list(latest.values()):
        for kind, n in counts.items():
            total[kind] = total.get(kind, 0) + n
    prices = request_prices()
    return {"requests": dict(sorted(total.items())), "usd": requests_usd(total, prices),
            "as_of": prices["as_of"], "source": prices["source"]}


def compute_ledger(store: OutputStore, reference: dict[str, Any] | None = None, now: float | None = None) -> Ledger:
    records = Records(store)
    now = now or time.time()
    runs = records.runs()
    actor_records = records.actors()
    per_unit: dict[str, dict[str, Any]] = {}
    settled = records.settled_attempts()
    attempts = settled_attempt_list(settled)
    by_actor_attempts: dict[str, list[Attempt]] = {}
    for a in attempts:
        by_actor_attempts.setdefault(a.actor_id, []).append(a)
    actors: list[ActorTime] = []
    for actor_id, rec in sorted(actor_records.items()):
        mine = by_actor_attempts.get(actor_id, [])
        ended = max([actor_end(rec, runs, now)] + [a.ended_at for a in mine if a.ended_at is not None])
        actors.append(split_actor_time(ActorTime(
            actor_id=actor_id, started_at=rec["started_at"], loaded_at=rec["loaded_at"], ended_at=ended,
            usd_per_second=rec["usd_per_hour"] * rec["share"] / 3600,
            on_demand_usd_per_second=rec["on_demand_usd_per_hour"] * rec["share"] / 3600,
        ), mine))
    by_actor = {a.actor_id: a for a in actors}
    for actor_id, mine in by_actor_attempts.items():
        actor = by_actor.get(actor_id)
        shares = attempt_seconds(mine, actor.ended_at if actor else max(a.started_at for a in mine))
        for a, seconds in zip(mine, shares):
            row = per_unit.setdefault(a.unit_id, {
                "unit_id": a.unit_id, "attempts": 0, "input_tokens": 0, "output_tokens": 0, "reasoning_tokens": 0,
                "useful_seconds": 0.0, "wasted_seconds": 0.0, "usd_useful": 0.0, "usd_wasted": 0.0})
            rate = actor.usd_per_second if actor else 0.0
            kind = "useful" if a.committed else "wasted"
            row["attempts"] += 1
            row["input_tokens"] += a.input_tokens
            row["output_tokens"] += a.output_tokens
            row["reasoning_tokens"] += a.reasoning_tokens
            row[f"{kind}_seconds"] += seconds
            row[f"usd_{kind}"] += seconds * rate
    input_tokens = sum(a.input_tokens for a in attempts)
    output_tokens = sum(a.output_tokens for a in attempts)
    actor_rows = [
        {**{k: v for k, v in actor_records[a.actor_id].items() if k in (
            "run_id", "model", "node_id", "instance_type", "market", "usd_per_hour", "share", "price_source")},
         "actor_id": a.actor_id, "started_at": a.started_at, "ended_at": a.started_at + a.lifetime,
         **{f"{b}_seconds": a.seconds[b] for b in BUCKETS}, **{f"usd_{b}": a.usd(b) for b in BUCKETS},
         "usd_total": sum(a.usd(b) for b in BUCKETS)}
        for a in actors
    ]
    # An embedding run makes no output tokens: its throughput is the input it read.
    timeline = sorted((a.ended_at, a.output_tokens if output_tokens else a.input_tokens)
                      for a in attempts if a.committed and a.ended_at)
    summary = summarize(actors, input_tokens, output_tokens, reference)
    summary.by_model = per_model(actors, attempts, actor_records)
    summary.by_adapter = split_cost(summary.total_usd, committed_adapter_tokens(settled))
    summary.storage = storage_cost(runs, actor_records, settled)
    return Ledger(
        summary=summary,
        actors=pa.Table.from_pylist(actor_rows),
        units=pa.Table.from_pylist(sorted(per_unit.values(), key=lambda r: r["unit_id"])),
        timeline=timeline,
        started_at=min((r["started_at"] for r in runs.values()), default=None),
    )


def settled_attempt_list(settled: dict[str, dict[str, dict[str, Any]]]) -> list[Attempt]:
    """Each attempt whose start is readable, with the tokens of those that committed."""
    attempts: list[Attempt] = []
    for unit_id, tries in settled.items():
        for t in tries.values():
            start, end = t.get("start"), t.get("end")
            if start is None:  # not readable (yet); an end is never written before its start
                continue
            committed = attempt_outcome(t) is AttemptOutcome.COMMITTED
            attempts.append(Attempt(
                unit_id=unit_id, actor_id=start.get("actor_id", ""), started_at=start["time"],
                ended_at=end.get("time") if end else None, committed=committed,
                input_tokens=end.get("prompt_tokens", 0) if committed else 0,
                output_tokens=end.get("completion_tokens", 0) if committed else 0,
                reasoning_tokens=end.get("reasoning_tokens", 0) if committed else 0,
            ))
    return attempts


def per_model(actors: list[ActorTime], attempts: list[Attempt],
              actor_records: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each model's actors, their cost and the tokens they made: a ledger line per model."""
    groups: dict[str, list[ActorTime]] = {}
    for a in actors:
        groups.setdefault(actor_records[a.actor_id].get("model", ""), []).append(a)
    lines = {}
    for model, group in sorted(groups.items()):
        ids = {a.actor_id for a in group}
        mine = [t for t in attempts if t.actor_id in ids]
        s = summarize(group, sum(t.input_tokens for t in mine), sum(t.output_tokens for t in mine))
        lines[model] = {"usd": s.total_usd, "breakdown_usd": s.breakdown_usd, "actors": s.actors,
                        "input_tokens": s.input_tokens, "output_tokens": s.output_tokens,
                        "usd_per_1m_output_tokens": s.usd_per_1m_output_tokens}
    return lines


def write_ledger(store: OutputStore, ledger: Ledger) -> None:
    """Rewrite the ledger files (they are derived from the records, which stay the truth)."""
    for name, table in (("actors", ledger.actors), ("units", ledger.units)):
        buf = io.BytesIO()
        pq.write_table(table, buf)
        store.put(f"{LEDGER}/{name}.parquet", buf.getvalue())
