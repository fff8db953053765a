"""What the status page shows, read from the store the batches API reads (server/state.py) and
from each batch's run (its status and ledger, as `spotbatch status` and `spotbatch report` read
them). A page never renders a batch object itself: it renders a BatchView, which each kind of
batch makes from its own object. OpenAI's batches are one kind; another (Anthropic's Message
Batches, on the same store and the same runs underneath) is one more entry in KINDS."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from server.objects import RUNNING
from server.state import State

LIVE = ("in_progress", "finalizing", "cancelling")  # a run is working: its figures are read as it goes


@dataclass
class BatchView:
    """One batch as the page shows it, whatever API created it."""

    id: str
    kind: str  # which API: "OpenAI"
    status: str
    running: bool
    created_at: int
    total: int  # requests
    done: int  # requests answered (a result or an error)
    failed: int
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    breakdown_usd: dict[str, float] = field(default_factory=dict)
    started_at: int | None = None
    ended_at: int | None = None
    model: str | None = None
    label: str = ""  # the input file's name
    metadata: dict[str, str] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)  # the batch's own (validation): code, message, line

    @property
    def projected_usd(self) -> float | None:
        """The whole batch's cost at the rate of the requests done so far.

        >>> BatchView("b", "OpenAI", "in_progress", True, 0, total=60, done=15, failed=0, cost_usd=0.01).projected_usd
        0.04
        """
        if self.cost_usd is None or not self.done:
            return None
        return self.cost_usd if not self.running else self.cost_usd * max(self.total, self.done) / self.done

    def eta_seconds(self, now: float | None = None) -> float | None:
        """Seconds to the end at the pace since the batch started; None when it is not running or
        nothing is done yet.

        >>> view = BatchView("b", "OpenAI", "in_progress", True, 0, total=60, done=15, failed=0, started_at=100)
        >>> view.eta_seconds(now=130)
        90.0
        """
        if not self.running or not self.done or self.started_at is None or self.done >= self.total:
            return None
        elapsed = (now or time.time()) - self.started_at
        return max(0.0, elapsed * (self.total - self.done) / self.done)


def openai_views(state: State, tenant: str) -> Iterable[BatchView]:
    return (openai_view(state, tenant, batch) for batch in state.batches(tenant))


def openai_one(state: State, tenant: str, batch_id: str) -> BatchView | None:
    batch = state.batch(tenant, batch_id)
    return None if batch is None else openai_view(state, tenant, batch)


def openai_view(state: State, tenant: str, batch: dict[str, Any]) -> BatchView:
    """An OpenAI batch object (with its run's live figures while it works) as a BatchView."""
    from server.finish import run_figures
    from server.live_counts import request_counts

    counts, usage, cost = batch["request_counts"], batch.get("usage") or {}, batch.get("spotbatch") or {}
    if batch["status"] in LIVE:
        figures, live = run_figures(state, tenant, batch["id"]), request_counts(state, tenant, batch)
        counts = live or counts
        if figures is not None:
            usage, cost = figures[0], {**cost, **figures[1]}
    source = state.file(tenant, batch["input_file_id"]) or {}
    ended = [batch.get(f"{s}_at") for s in ("completed", "failed", "expired", "cancelled")]
    return BatchView(
        id=batch["id"], kind="OpenAI", status=batch["status"], running=batch["status"] in RUNNING,
        created_at=batch["created_at"], total=counts["total"], done=counts["completed"] + counts["failed"],
        failed=counts["failed"], input_tokens=usage.get("input_tokens", 0),
        output_tokens=usage.get("output_tokens", 0), cost_usd=cost.get("cost_usd"),
        breakdown_usd=cost.get("breakdown_usd") or {}, started_at=batch.get("in_progress_at"),
        ended_at=next((t for t in ended if t), None), model=batch.get("model"), label=source.get("filename", ""),
        metadata=batch.get("metadata") or {}, errors=list((batch.get("errors") or {}).get("data") or []))


@dataclass(frozen=True)
class Kind:
    """A kind of batch the page shows: all of a tenant's, and one by id (None: not the tenant's)."""

    all: Callable[[State, str], Iterable[BatchView]]
    one: Callable[[State, str, str], BatchView | None]


# Anthropic's Message Batches (the same store, a spotbatch run under each) go here as one more Kind.
KINDS = [Kind(openai_views, openai_one)]


def batch_views(state: State, tenant: str) -> list[BatchView]:
    """The tenant's batches, newest first."""
    views = [view for kind in KINDS for view in kind.all(state, tenant)]
    return sorted(views, key=lambda v: (v.created_at, v.id), reverse=True)


def batch_view(state: State, tenant: str, batch_id: str) -> BatchView | None:
    """One of the tenant's batches; None if it has none of that id (another key's is none too)."""
    return next((v for kind in KINDS if (v := kind.one(state, tenant, batch_id)) is not None), None)
