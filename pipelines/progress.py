"""Live progress of a run, its budget and its deadline: rows, tokens/s, ETA, $ so far and projected.

Shown as a progress bar in a terminal; in a notebook as one line updated in place (IPython's
display, so it needs no widget library and the saved notebook keeps the final state); and as a
log line every LOG_SECONDS, and a last one at the end, where there is neither (`ray job submit`,
cron). Dollars here are live estimates from the actors' prices and ages; the ledger computed
from the records afterwards is the exact figure.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipelines.log import PROGRESS

LOG_SECONDS = 10.0
NOTEBOOK_SECONDS = 0.5  # the notebook's line is redrawn at most this often
log = logging.getLogger("spotbatch.run")
progress_log = logging.getLogger(PROGRESS)


def ipython_shell() -> Any:
    """The IPython shell this process runs, if any: a REPL's or a notebook kernel's."""
    ipython = sys.modules.get("IPython")  # imported by a kernel; a library may import it too
    return ipython.get_ipython() if ipython is not None else None


def notebook_kernel() -> bool:
    """Whether this is a notebook's kernel (IPython with a kernel), where stdout is no terminal
    but a person watches the cell's output."""
    return getattr(ipython_shell(), "kernel", None) is not None


class _NotebookLine:
    """One output line of the running cell, redrawn in place."""

    def __init__(self, text: str):
        from IPython.display import display

        self._handle = display({"text/plain": text}, raw=True, display_id=True)
        self._drawn = 0.0

    def update(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._drawn >= NOTEBOOK_SECONDS:
            self._drawn = now
            self._handle.update({"text/plain": text}, raw=True)


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


@dataclass(frozen=True)
class RunTotals:
    """What a run sets out to do, what was done before it, and its limits."""

    rows_total: int
    rows_done_before: int
    units_pending: int
    usd_before: float
    """What the output cost before this run (the ledger's figure)."""
    max_cost_usd: float | None = None
    deadline: float | None = None
    """A Unix time (compute.deadline)."""


class RunMonitor:
    def __init__(self, totals: RunTotals, request_stop: Callable[[str], None], interactive: bool | None = None,
                 show: bool = True):
        self.rows_total = totals.rows_total
        self.rows_before = totals.rows_done_before
        self.units_pending = totals.units_pending
        self.usd_before = totals.usd_before
        self.max_cost_usd = totals.max_cost_usd
        self.request_stop = request_stop  # pipelines/stops/stopping.py: writes the stop, then calls stopping()
        self.deadline = totals.deadline  # a Unix time (compute.deadline)
        self.started = time.monotonic()
        self.rows = self.tokens = self.units = 0
        self.unit_seconds = 0.0  # engine seconds of the units committed in this run
        self.actors: dict[str, tuple[float, float]] = {}  # actor -> (started_at, $/s)
        self.stopped: str | None = None
        self.show = show  # False: its caller reads line() (pipelines/stops/control.py); nothing is printed
        self._last_log = 0.0
        self._logged_rows: int | None = None  # the rows the last log line showed
        self._bar = self._notebook = None
        # The bar and the notebook's line are progress lines too: a logger set past INFO hides them.
        show = show and progress_log.isEnabledFor(logging.INFO)
        if show and interactive is None and not sys.stdout.isatty() and notebook_kernel():
            self._notebook = _NotebookLine(f"spotbatch progress: {self.line()}, waiting for the first result")
        elif show and (sys.stdout.isatty() if interactive is None else interactive):
            from tqdm import tqdm  # not tqdm.auto: its notebook bar needs ipywidgets

            self._bar = tqdm(total=self.rows_total, initial=self.rows_before, unit="row", dynamic_ncols=True)

    def spent(self, now: float | None = None) -> float:
        now = now or time.time()
        return self.usd_before + sum((now - t0) * rate for t0, rate in self.actors.values())

    def projected(self) -> float | None:
        """$ when every pending unit is done, at this run's cost per unit so far."""
        if not self.units:
            return None
        run_usd = self.spent() - self.usd_before
        return self.spent() + run_usd / self.units * (self.units_pending - self.units)

    def on_unit(self, unit: dict[str, Any]) -> None:
        self.actors.setdefault(unit["actor_id"], (unit["actor_started_at"], unit["actor_usd_per_second"]))
        if unit["committed"]:
            self.units += 1
            self.rows += unit["rows"]
            self.tokens += unit["completion_tokens"]
            self.unit_seconds += unit["engine_seconds"]
        self._check_budget()
        if self.past_deadline():
            self.request_stop("deadline")
        self._show()

    def stopping(self, reason: str) -> None:
        if self.stopped is None:
            self.stopped = reason
            if self._notebook is not None:
                self._notebook.update(f"spotbatch progress: {self.line()}", force=True)
            if self._bar is None and self.show:
                log.info("stopping (%s): taking no new unit, committing the units in flight", reason)

    def past_deadline(self, now: float | None = None) -> bool:
        """Whether a unit taken now would end past the deadline, at this run's measured time per unit."""
        if self.deadline is None:
            return False
        next_unit = self.unit_seconds / self.units if self.units else 0.0
        return (now or time.time()) + next_unit > self.deadline

    def _check_budget(self) -> None:
        if self.max_cost_usd is None or self.stopped or not self.units:
            return
        # every actor will take one more unit, of the measured average length, before it hears of a stop
        next_round = sum(rate for _, rate in self.actors.values()) * self.unit_seconds / self.units
        if self.spent() + next_round > self.max_cost_usd:
            self.request_stop("budget")

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        rate = self.rows / elapsed if elapsed else 0
        left = self.rows_total - self.rows_before - self.rows
        projected = self.projected()
        return (f"{self.rows_before + self.rows:,}/{self.rows_total:,} rows, "
                f"{self.tokens / elapsed if elapsed else 0:,.0f} tokens/s, "
                f"ETA {_eta(left / rate if rate else None)}, ${self.spent():.4g} spent"
                + (f", ${projected:.4g} projected" if projected is not None else "")
                + (f" [stopping: {self.stopped}]" if self.stopped else ""))

    def _show(self) -> None:
        if self._bar is not None:
            self._bar.update(self.rows_before + self.rows - self._bar.n)
            self._bar.set_postfix_str(self.line().split(", ", 1)[1])
            return
        if self._notebook is not None:
            self._notebook.update(f"spotbatch progress: {self.line()}")
            return
        now = time.monotonic()
        if self.show and now - self._last_log >= LOG_SECONDS:
            self._log(now)

    def _log(self, now: float) -> None:
        self._last_log = now
        self._logged_rows = self.rows
        progress_log.info(self.line())

    def close(self) -> None:
        """The final state: a log shows where the run ended, not its last line before that."""
        if self._bar is not None:
            self._bar.close()
        elif self._notebook is not None:
            self._notebook.update(f"spotbatch progress: {self.line()}", force=True)
        elif self._logged_rows is not None and self._logged_rows != self.rows:
            self._log(time.monotonic())
