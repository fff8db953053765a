"""A run in the background of a notebook or a long Python process: `start(spec)` returns at
once with a handle, and the kernel stays free while the batch runs.

    handle = start(spec)       # the same arguments as run(), on a thread of this process
    handle                     # <spotbatch run on results/: running, 12/48 rows, 28 tokens/s, ...>
    handle.done()              # finished, stopped or failed
    handle.cancel()            # as `spotbatch cancel`: no new unit, the units in flight committed
    summary = handle.result()  # waits; the RunSummary, or the run's own error raised here

A cancelled run ends with `stopped: cancelled` in its record and in `spotbatch status`, and
`run(spec)` or `start(spec)` again resumes it. Interrupting the kernel does not reach a
background run (signals go to the main thread): `cancel()` and `spotbatch cancel` do. Should
the process end first, the run is a killed driver: what it committed stays, and the same
spec resumes. The run prints no progress of its own (a notebook would show it in whichever
cell runs then); the handle shows it.
"""

from __future__ import annotations

import threading
from typing import Any

from pipelines.redact import redact_url
from pipelines.run import RunSummary, run
from pipelines.spec import PipelineSpec
from pipelines.stops.control import RunControl


class RunHandle:
    """A run on a thread of this process, from `start(spec)` (`spotbatch.start`); its progress() is
    one line: rows, tokens/s, ETA, $ spent and projected.

    >>> handle = start(spec)  # doctest: +SKIP
    >>> line = handle.progress()  # doctest: +SKIP
    >>> handle.cancel(); handle.result(timeout=600).stopped  # doctest: +SKIP
    'cancelled'
    """

    def __init__(self, spec: PipelineSpec, **run_kwargs: Any):
        self.output = redact_url(spec.output.path)
        self._control = RunControl()
        self._summary: RunSummary | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, args=(spec, run_kwargs), name="spotbatch-run",
                                        daemon=True)
        self._thread.start()

    def _main(self, spec: PipelineSpec, run_kwargs: dict[str, Any]) -> None:
        try:
            self._summary = run(spec, control=self._control, **run_kwargs)
        except BaseException as err:  # kept for result(): a thread's own error would only be printed
            self._error = err

    def cancel(self) -> None:
        """Ask the run to stop: it takes no new unit and commits the units in flight. Returns
        at once; `result()` waits for the end."""
        self._control.stop()

    def done(self) -> bool:
        return not self._thread.is_alive()

    def progress(self) -> str | None:
        """The running run's progress line: rows, tokens/s, ETA, $ spent and projected."""
        return self._control.progress()

    def result(self, timeout: float | None = None) -> RunSummary:
        """The run's summary once it has ended (its error, raised, if it failed)."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the run on {self.output} is still running after {timeout} s")
        if self._error is not None:
            raise self._error
        assert self._summary is not None
        return self._summary

    def __repr__(self) -> str:
        if not self.done():
            state = "cancelling" if self._control.asked else "running"
            if (line := self._control.progress()) is not None:
                state += f", {line}"
        elif self._error is not None:
            state = f"failed: {self._error.__class__.__name__}"
        else:
            s = self._summary
            state = ("finished" if s.finished else f"stopped: {s.stopped}" if s.stopped else "not finished")
            state += f", {s.rows:,} rows"
        return f"<spotbatch run on {self.output}: {state}>"


def start(spec: PipelineSpec, **run_kwargs: Any) -> RunHandle:
    """Run (or resume) `spec` on a thread of this process; returns its handle at once.
    `run_kwargs` are run()'s: address, new_run, interactive, verbose."""
    return RunHandle(spec, **run_kwargs)
