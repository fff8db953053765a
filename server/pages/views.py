"""What the status page shows, read from the store the batches API reads (server/state.py) and
from each batch's run (its status and ledger, as `spotbatch status` and `spotbatch report` read
them). A page never renders a batch object itself: it renders a BatchView, which each kind of
batch makes from its own object. OpenAI's batches are one kind; Anthropic's Message Batches (on
the same store and the same runs underneath) another, in Anthropic's words and counts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from server.anthropic_objects import is_message_batch, processing_status
from server.anthropic_objects import request_counts as message_request_counts
from server.objects import RUNNING
from server.pages.run_detail import RunDetail, RunRead, read_run, run_detail
from server.state import State

LIVE = ("in_progress", "finalizing", "cancelling")  # a run is working: its figures are read as it goes


@dataclass
class BatchView:
    """One batch as the page shows it, whatever API created it."""

    id: str
    kind: str  # which API: "OpenAI" or "Anthropic"
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
    counts: dict[str, int] = field(default_factory=dict)  # the kind's own words for its ended requests, if it has them
    queued: bool = False  # running by its API's word, but waiting its turn: no run of it is going
    stopping: bool = False  # being cancelled: it will stop, so nothing more is projected

    @property
    def projected_usd(self) -> float | None:
        """What the whole batch will have cost: what is spent, plus the remaining requests at the
        per-request cost of those done (the ledger's useful and wasted work per request; loading
        engines and their idle time are paid once, not per request). A batch being cancelled
        will stop: its projection is what it has spent.

        >>> BatchView("b", "OpenAI", "in_progress", True, 0, total=60, done=15, failed=0, cost_usd=0.05,
        ...           breakdown_usd={"load": 0.03, "useful": 0.015, "idle": 0.002, "wasted": 0.003}).projected_usd
        0.104
        """
        if self.cost_usd is None or not self.done:
            return None
        if not self.running or self.stopping:
            return self.cost_usd
        per_request = (self.breakdown_usd.get("useful", 0.0) + self.breakdown_usd.get("wasted", 0.0)) / self.done
        return round(self.cost_usd + per_request * max(0, self.total - self.done), 6)

    def eta_seconds(self, now: float | None = None) -> float | None:
        """Seconds to the end at the pace since its run started (started_at: not while it waited its
        turn); None when it is not running, is queued, or nothing is done yet.

        >>> view = BatchView("b", "OpenAI", "in_progress", True, 0, total=60, done=15, failed=0, started_at=100)
        >>> view.eta_seconds(now=130)
        90.0
        """
        if not self.running or self.queued or not self.done or self.started_at is None or self.done >= self.total:
            return None
        elapsed = (now or time.time()) - self.started_at
        return max(0.0, elapsed * (self.total - self.done) / self.done)


def openai_view(state: State, tenant: str, batch: dict[str, Any], read: RunRead | None) -> BatchView:
    """An OpenAI batch object (with its run's live figures while it works) as a BatchView."""
    counts, usage, cost = _live(state, tenant, batch, read)
    source = state.file(tenant, batch["input_file_id"]) or {}
    return _view(batch, usage, cost, _run_start(state, tenant, batch), kind="OpenAI", status=batch["status"],
                 total=counts["total"], done=counts["completed"] + counts["failed"], failed=counts["failed"],
                 label=source.get("filename", ""))


def message_batch_view(state: State, tenant: str, record: dict[str, Any], read: RunRead | None) -> BatchView:
    """An Anthropic Message Batch as a BatchView: its processing_status and, once ended, its
    request_counts, as its API shows them (server/anthropic_objects.py); while it works, the
    requests its run has answered so far, and those errored at create (which its run leaves out)."""
    live, usage, cost = _live(state, tenant, record, read)
    counts = message_request_counts(record)
    total = record["request_counts"]["total"]
    ended = {k: n for k, n in counts.items() if k != "processing"}
    errored = (record.get("spotbatch") or {}).get("errored_at_create", 0)
    done, failed = (total - counts["processing"], total - counts["succeeded"]) if not counts["processing"] else (
        live["completed"] + live["failed"] + errored, live["failed"] + errored)
    return _view(record, usage, cost, _run_start(state, tenant, record), kind="Anthropic",
                 status=processing_status(record), total=total, done=done, failed=failed,
                 label=f"{total:,} request{'s' if total != 1 else ''}",
                 counts=ended if not counts["processing"] else {})


def _live(state: State, tenant: str, batch: dict[str, Any],
          read: RunRead | None) -> tuple[dict[str, int], dict, dict]:
    """(request_counts, usage, cost fields): the record's, or (`read`) its run's while it works."""
    from server.finish import figures_of
    from server.live_counts import request_counts

    counts, usage, cost = batch["request_counts"], batch.get("usage") or {}, batch.get("spotbatch") or {}
    if read is not None:
        counts = request_counts(state, tenant, batch) or counts
        usage, figures = figures_of(read.status, read.ledger.summary)
        cost = {**cost, **figures}
    return counts, usage, cost


def _run_start(state: State, tenant: str, batch: dict[str, Any]) -> tuple[float | None, bool]:
    """(when the batch's run first started, whether it waits its turn). A batch is in_progress
    from its validation on, but its run starts only when the driver takes it (one at a time,
    server/driver.py), writing a run record; a batch with no run going (none yet, or the last one
    ended, as when a restarted server has not come back to it) is queued."""
    from pipelines.store.output import OutputStore
    from pipelines.store.records import Records

    if batch["status"] not in RUNNING:
        return batch.get("in_progress_at"), False  # as it was accepted: an ended batch's runs are not read
    store = OutputStore(state.run_url(tenant, batch["id"]), state.storage_options)
    if store.read_manifest() is None:
        return None, True
    runs = sorted(Records(store).runs().values(), key=lambda r: r.get("started_at") or 0.0)
    if not runs or runs[-1].get("ended_at") is not None:
        return (runs[0].get("started_at") if runs else None), True
    return runs[0].get("started_at"), False


def _view(batch: dict[str, Any], usage: dict, cost: dict, run: tuple[float | None, bool],
          **kind_fields: Any) -> BatchView:
    """The fields every kind reads alike from the batch record (and `run`: _run_start's)."""
    ended = [batch.get(f"{s}_at") for s in ("completed", "failed", "expired", "cancelled")]
    started, queued = run
    return BatchView(
        id=batch["id"], running=batch["status"] in RUNNING, created_at=batch["created_at"],
        input_tokens=usage.get("input_tokens", 0), output_tokens=usage.get("output_tokens", 0),
        cost_usd=cost.get("cost_usd"), breakdown_usd=cost.get("breakdown_usd") or {},
        started_at=started, queued=queued, stopping=batch["status"] == "cancelling",
        ended_at=next((t for t in ended if t), None),
        model=batch.get("model"), metadata=batch.get("metadata") or {},
        errors=list((batch.get("errors") or {}).get("data") or []), **kind_fields)


@dataclass(frozen=True)
class Kind:
    """A kind of batch the page shows: which records are its, and the view of one."""

    accepts: Callable[[dict[str, Any]], bool]
    view: Callable[[State, str, dict[str, Any], RunRead | None], BatchView]


KINDS = [Kind(lambda r: not is_message_batch(r), openai_view), Kind(is_message_batch, message_batch_view)]


@dataclass
class Seen:
    """A batch's view, and its run's detail (made when a batch's page first asks for it), both
    from one read of its run."""

    view: BatchView
    read: RunRead | None
    detail: RunDetail | None = None


class Views:
    """The batches as the page shows them, each made at most once every SECONDS whoever asks (every
    open tab, the list and a batch's page share it): a running batch's view reads its whole run
    (status, ledger, committed units), which is too much to do per tab per tick."""

    SECONDS = 3.0

    def __init__(self, state: State) -> None:
        self.state = state
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], tuple[float, Seen]] = {}
        self._making: dict[tuple[str, str], threading.Lock] = {}

    def all(self, tenant: str) -> list[BatchView]:
        """The tenant's batches, newest first."""
        views = [self._get(tenant, record).view for record in self.state.batches(tenant)]
        return sorted(views, key=lambda v: (v.created_at, v.id), reverse=True)

    def one(self, tenant: str, batch_id: str) -> tuple[BatchView, RunDetail] | None:
        """One of the tenant's batches and its run's detail; None if it has none of that id
        (another key's is none too)."""
        record = self.state.batch(tenant, batch_id)
        if record is None:
            return None
        seen = self._get(tenant, record)
        if seen.detail is None:  # made once per view, from the same read of the run
            seen.detail = run_detail(self.state, tenant, batch_id, seen.read)
        return seen.view, seen.detail

    def _get(self, tenant: str, record: dict[str, Any]) -> Seen:
        key, now = (tenant, record["id"]), time.monotonic()
        with self._lock:
            making = self._making.setdefault(key, threading.Lock())
        with making:  # a second viewer waits for the first one's view rather than making its own
            with self._lock:
                at, seen = self._seen.get(key, (-1.0, None))
            if seen is not None and now - at < self.SECONDS:
                return seen
            seen = self._make(tenant, record)
            with self._lock:
                self._seen[key] = (time.monotonic(), seen)
                if len(self._seen) > 4096:  # views of batches no one looks at any more go
                    self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.SECONDS}
                    self._making = {k: m for k, m in self._making.items() if k in self._seen or k == key}
            return seen

    def _make(self, tenant: str, record: dict[str, Any]) -> Seen:
        read = read_run(self.state, tenant, record["id"]) if record["status"] in LIVE else None
        kind = next(k for k in KINDS if k.accepts(record))
        return Seen(kind.view(self.state, tenant, record, read), read)
