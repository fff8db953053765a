"""Cost arithmetic: measured actor seconds times the price of the share of a node they held.

Every second of an engine actor's life falls in exactly one bucket, so the buckets add up to
the whole by construction:
    load    from the actor's start until its model was loaded
    useful  attempts whose results were committed (a second shared by k attempts in flight
            on one engine counts 1/k to each)
    wasted  attempts that were lost (node preempted, driver killed), failed, or generated a
            unit that another attempt committed first
    idle    the rest: waiting for work, and the tail before the actor was released
Tokens are the engine's own counts from committed units; they are never re-estimated.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

BUCKETS = ("load", "useful", "idle", "wasted")


@dataclass
class ActorTime:
    actor_id: str
    started_at: float
    loaded_at: float
    ended_at: float
    usd_per_second: float
    on_demand_usd_per_second: float
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(BUCKETS, 0.0))

    @property
    def lifetime(self) -> float:
        return sum(self.seconds.values())

    def usd(self, bucket: str) -> float:
        return self.seconds[bucket] * self.usd_per_second


@dataclass(frozen=True)
class Attempt:
    unit_id: str
    actor_id: str
    started_at: float
    ended_at: float | None  # None: lost with its actor
    committed: bool
    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0  # of output_tokens, the thinking a reasoning parser kept apart


def attempt_seconds(attempts: list[Attempt], actor_end: float) -> list[float]:
    """Engine seconds of each attempt. An actor works on a few units at once (the next one
    is fed while the last one's tail runs), so a second in which k attempts ran is split
    k ways: the shares add up to the time the actor had any work, never more.

    >>> attempt_seconds([Attempt("a", "x", 0, 10, True), Attempt("b", "x", 5, 15, True)], 20)
    [7.5, 7.5]
    """
    spans = [(a.started_at, a.ended_at if a.ended_at is not None else max(actor_end, a.started_at))
             for a in attempts]
    edges = sorted({t for span in spans for t in span})
    by_start = sorted(range(len(spans)), key=lambda i: spans[i][0])
    by_end = sorted(range(len(spans)), key=lambda i: spans[i][1])
    shares = [0.0] * len(spans)
    active: set[int] = set()
    started = ended = 0
    # A sweep over the edges: an actor that ran 10k units over a run is 10k attempts, and
    # scanning them all at each edge took minutes (quadratic).
    for lo, hi in zip(edges, edges[1:]):
        while started < len(by_start) and spans[by_start[started]][0] <= lo:
            active.add(by_start[started])
            started += 1
        while ended < len(by_end) and spans[by_end[ended]][1] <= lo:
            active.discard(by_end[ended])
            ended += 1
        for i in active:  # running over all of [lo, hi]: it began by lo and ends at an edge past lo
            shares[i] += (hi - lo) / len(active)
    return shares


def split_actor_time(actor: ActorTime, attempts: Iterable[Attempt]) -> ActorTime:
    """Fill `actor.seconds` from its attempts. A lost attempt runs until the actor's end."""
    attempts = list(attempts)
    load = max(0.0, actor.loaded_at - actor.started_at)
    useful = wasted = 0.0
    for a, seconds in zip(attempts, attempt_seconds(attempts, actor.ended_at)):
        if a.committed:
            useful += seconds
        else:
            wasted += seconds
    lifetime = max(actor.ended_at - actor.started_at, load + useful + wasted)
    actor.seconds = {"load": load, "useful": useful, "wasted": wasted, "idle": lifetime - load - useful - wasted}
    return actor


@dataclass
class CostSummary:
    total_usd: float
    on_demand_usd: float
    input_tokens: int
    output_tokens: int
    breakdown_usd: dict[str, float]
    breakdown_seconds: dict[str, float]
    actors: int
    reference: dict[str, Any] | None = None
    by_model: dict[str, dict[str, Any]] = field(default_factory=dict)  # routed runs: a line per model
    by_adapter: dict[str, dict[str, Any]] = field(default_factory=dict)  # runs with LoRA adapters: a line each
    # The S3 requests the runs made and their price, beside (not in) total_usd, the engines' cost:
    # {"requests": {class: n}, "usd": ..., "as_of": ..., "source": ...} (pipelines/store/ledger.py)
    storage: dict[str, Any] | None = None

    @property
    def usd_per_1m_input_tokens(self) -> float | None:
        return self.total_usd / self.input_tokens * 1e6 if self.input_tokens else None

    @property
    def usd_per_1m_output_tokens(self) -> float | None:
        return self.total_usd / self.output_tokens * 1e6 if self.output_tokens else None

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "usd_per_1m_input_tokens": self.usd_per_1m_input_tokens,
            "usd_per_1m_output_tokens": self.usd_per_1m_output_tokens,
            "breakdown": self.breakdown_usd,
        }


def summarize(actors: list[ActorTime], input_tokens: int, output_tokens: int,
              reference: dict[str, Any] | None = None) -> CostSummary:
    """Totals over actors; `reference` ({name, usd_per_1m_input_tokens, usd_per_1m_output_tokens,
    as_of}) adds what the same tokens would have cost at that price."""
    usd = {b: sum(a.usd(b) for a in actors) for b in BUCKETS}
    summary = CostSummary(
        total_usd=sum(usd.values()),
        on_demand_usd=sum(a.lifetime * a.on_demand_usd_per_second for a in actors),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        breakdown_usd=usd,
        breakdown_seconds={b: sum(a.seconds[b] for a in actors) for b in BUCKETS},
        actors=len(actors),
    )
    if reference:
        theirs = (reference["usd_per_1m_input_tokens"] * input_tokens
                  + reference["usd_per_1m_output_tokens"] * output_tokens) / 1e6
        summary.reference = {**reference, "usd": theirs,
                             "ratio": summary.total_usd / theirs if theirs else None}
    return summary
