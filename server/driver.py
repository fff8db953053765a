"""The batch driver: one thread of the server that takes batches in the order they were created
and runs each as a spotbatch run (pipelines/run.py), in this process.

Why a thread of the server and not a Ray job per batch: the engines stay warm between batches
only in the driver that started them (pipelines/engine/warm_pool.py), a cancel reaches the run
at once through its RunControl, and a run's driver is cheap (it plans and feeds units; the
engines work on the cluster). Nothing is lost when the server dies: the batch objects and the
runs are in the store, and a server started again resumes every batch that was running
(resume_all), each run committing only what is left, every request exactly once.

A batch is validated as soon as it is created (on a thread of its own), then waits its turn
in_progress. One batch runs at a time: engines of one model are not started twice over, and a queued batch's
model starts only when its turn comes (warm engines of the model before are reused, or let go
after keep_warm_seconds). A batch waiting its turn ends at its expires_at all the same (a
thread of its own watches the queue, server/waiting.py): `expired`, or `cancelled` if a cancel
came first.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from server.anthropic_finish import finish_message_batch
from server.anthropic_objects import is_message_batch
from server.config import ServeConfig
from server.finish import result_files
from server.objects import RUNNING, error_entry
from server.redact import for_client
from server.state import State
from server.validate import check_file
from server.waiting import Waiting

log = logging.getLogger("spotbatch.serve")


class Driver:
    def __init__(self, state: State, config: ServeConfig, address: str | None = None):
        self.state, self.config, self.address = state, config, address
        self._queue: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._current: tuple[str, str, Any] | None = None  # tenant, batch id, its RunControl
        self._stopping = False  # the server is shutting down: a run stopped now is resumed, not cancelled
        self._thread = threading.Thread(target=self._loop, name="spotbatch-serve-driver", daemon=True)
        # Validation on a thread of its own: a bad file is told at once, even while a long batch runs.
        self._checks: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self._checker = threading.Thread(target=self._check_loop, name="spotbatch-serve-validate", daemon=True)
        self._waiting = Waiting(self._expire)  # the queued batches, each ended at its expiry if still there

    def start(self) -> None:
        self.resume_all()
        self._thread.start()
        self._checker.start()
        self._waiting.start()

    def stop(self, timeout: float | None = None) -> None:
        """Cancel the batch running (it commits what is in flight; its batch object stays as it is,
        so the next server resumes it) and end the thread."""
        self._queue.put(None)
        self._checks.put(None)
        self._waiting.stop()
        with self._lock:
            self._stopping = True
            if self._current is not None:
                self._current[2].stop()
        self._thread.join(timeout)

    def resume_all(self) -> None:
        """Every batch the store says is not ended, oldest first: a server started again on its store."""
        unended = [(b["created_at"], b["id"], t, b["expires_at"]) for t in self.state.tenants()
                   for b in self.state.batches(t) if b["status"] in RUNNING]
        for _, batch_id, tenant, expires_at in sorted(unended):
            log.info("resuming batch %s", batch_id)
            self._enqueue(tenant, batch_id, expires_at)

    def _enqueue(self, tenant: str, batch_id: str, expires_at: float) -> None:
        self._waiting.add(tenant, batch_id, expires_at)
        self._queue.put((tenant, batch_id))

    def submit(self, tenant: str, batch_id: str) -> None:
        """A new batch: validated at once, then queued to run (in_progress while it waits, as at OpenAI)."""
        self._checks.put((tenant, batch_id))

    def _check_loop(self) -> None:
        while (item := self._checks.get()) is not None:
            tenant, batch_id = item
            try:
                batch = self.state.batch(tenant, batch_id)
                if self._ended_unvalidated(tenant, batch):
                    continue
                if batch["status"] == "validating" and not self._validate(tenant, batch):
                    continue
                if self._ended_with_nothing_to_run(tenant, batch):
                    continue
            except Exception as err:
                log.exception("batch %s could not be validated", batch_id)
                self._fail(tenant, batch_id, _message(err))
                continue
            self._enqueue(tenant, batch_id, batch["expires_at"])

    def cancel(self, tenant: str, batch_id: str) -> None:
        """The batch object says `cancelling` already; the run, if it is this one, stops now."""
        with self._lock:
            if self._current is not None and self._current[:2] == (tenant, batch_id):
                self._current[2].stop()

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            tenant, batch_id = item
            if not self._waiting.take(tenant, batch_id):
                continue  # ended at its expiry while it waited
            try:
                self._drive(tenant, batch_id)
            except Exception as err:  # the batch fails, with why; the server goes on with the next
                log.exception("batch %s failed", batch_id)
                self._fail(tenant, batch_id, _message(err))

    def _expire(self, tenant: str, batch_id: str) -> None:
        """A queued batch past its window ends as its turn would have ended it: `expired` (`cancelled`
        if a cancel came first). One not validated yet (resumed so) is left to its turn."""
        try:
            batch = self.state.batch(tenant, batch_id)
            if batch is None or "spotbatch" not in batch or not self._waiting.take(tenant, batch_id):
                return
            if batch["status"] in RUNNING:
                cancelled = self.state.batch(tenant, batch_id)["status"] == "cancelling"
                self._finish(tenant, batch_id, end_status(None, cancelled))
        except Exception as err:
            log.exception("batch %s failed", batch_id)
            self._fail(tenant, batch_id, _message(err))

    def _fail(self, tenant: str, batch_id: str, why: str) -> None:
        """The batch ends `failed`, saying why. A Message Batch keeps what its run committed
        (Anthropic has no failed batch): those requests succeeded, the rest are errored."""
        fields: dict[str, Any] = {}
        batch = self.state.batch(tenant, batch_id)
        why = why if batch is None else for_client(why, self.state, self.config, tenant, batch)  # no server path
        if is_message_batch(batch):
            try:
                fields = finish_message_batch(self.state, tenant, batch, "failed", why)
            except Exception:  # no results file: results_lines errors every request, saying why
                log.exception("batch %s: its results could not be written", batch_id)
        self._end(tenant, batch_id, "failed", errors=[error_entry(why, None, "server_error")], **fields)

    def _drive(self, tenant: str, batch_id: str) -> None:
        batch = self.state.batch(tenant, batch_id)
        if batch is None or batch["status"] not in RUNNING or self._ended_unvalidated(tenant, batch):
            return
        if batch["status"] == "validating" and not self._validate(tenant, batch):
            return
        if self._ended_with_nothing_to_run(tenant, batch):
            return
        from pipelines.run import run
        from pipelines.stops.control import RunControl

        control = RunControl()
        with self._lock:
            self._current = (tenant, batch_id, control)
        try:
            batch = self.state.batch(tenant, batch_id)
            if batch["status"] == "cancelling":  # asked before its turn came
                control.stop()
            summary = None
            if time.time() < batch["expires_at"]:
                summary = run(batch_spec(self.state, self.config, tenant, batch), address=self.address,
                              interactive=False, control=control)
        finally:
            with self._lock:
                self._current = None
        if self._stopping and not (summary and summary.finished):
            return  # stopped by the server's shutdown: the next server resumes it
        self._finish(tenant, batch_id, end_status(summary, control.asked))

    def _ended_unvalidated(self, tenant: str, batch: dict[str, Any]) -> bool:
        """A batch cancelled before its file was validated ends `cancelled` at once: nothing ran, so
        it has no result files and no requests counted (its models are not known either)."""
        if batch["status"] != "cancelling" or "spotbatch" in batch:
            return False
        self._end(tenant, batch["id"], "cancelled", output_file_id=None, error_file_id=None)
        return True

    def _ended_with_nothing_to_run(self, tenant: str, batch: dict[str, Any]) -> bool:
        """A Message Batch whose every request was errored at create runs nothing: it ends at once,
        without waiting its turn (`cancelled` if a cancel came first), its results those errors."""
        if batch.get("spotbatch", {}).get("models", True):
            return False
        cancelled = self.state.batch(tenant, batch["id"])["status"] == "cancelling"  # as it is now
        self._finish(tenant, batch["id"], "cancelled" if cancelled else "completed")
        return True

    def _validate(self, tenant: str, batch: dict[str, Any]) -> bool:
        with self.state.open_content(tenant, batch["input_file_id"]) as fh:
            checked = check_file(fh, batch["endpoint"], self.config.models,
                                 self.config.max_requests_per_file)
        if checked.errors:
            self._end(tenant, batch["id"], "failed", errors=checked.errors)
            return False

        def in_progress(b: dict[str, Any]) -> None:
            if b["status"] == "validating":  # not if a cancel came meanwhile
                b.update(status="in_progress", in_progress_at=int(time.time()))
            b.update(request_counts={"total": checked.total, "completed": 0, "failed": 0},
                     model=checked.models[0], spotbatch={"models": checked.models})

        self.state.update_batch(tenant, batch["id"], in_progress)
        return True

    def _finish(self, tenant: str, batch_id: str, status: str) -> None:
        """The batch's results written, and the batch ended `status`."""

        def finalizing(b: dict[str, Any]) -> None:  # read and set under the store's lock: a cancel stays
            if b["status"] != "cancelling":
                b.update(status="finalizing", finalizing_at=int(time.time()))

        batch = self.state.update_batch(tenant, batch_id, finalizing)
        if is_message_batch(batch):
            fields = finish_message_batch(self.state, tenant, batch, status)
        else:
            fields = result_files(self.state, tenant, batch, status == "expired")
        self._end(tenant, batch_id, status, **fields)

    def _end(self, tenant: str, batch_id: str, status: str, errors: list | None = None, **fields: Any) -> None:
        figures = _figures(self.state, tenant, batch_id)

        def ended(b: dict[str, Any]) -> None:
            b.update(status=status, **fields, **{f"{status}_at": int(time.time())})  # failed_at, completed_at...
            if errors:
                b["errors"] = {"object": "list", "data": errors}
            if figures is not None:
                b["usage"] = figures[0]
                b["spotbatch"] = {**b.get("spotbatch", {}), **figures[1]}

        self.state.update_batch(tenant, batch_id, ended)
        log.info("batch %s %s", batch_id, status)


def end_status(summary, cancelled: bool) -> str:
    """How a batch ends after its run's `summary` (None: it did not run), `cancelled` if asked."""
    if summary is not None and summary.stopped == "cancelled" or summary is None and cancelled:
        return "cancelled"
    if summary is None or summary.stopped == "deadline":
        return "expired"
    if summary.finished:
        return "completed"
    raise RuntimeError(f"the run stopped unfinished ({summary.stopped or 'units left'})")


def _figures(state: State, tenant: str, batch_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    from server.finish import run_figures

    try:
        return run_figures(state, tenant, batch_id)
    except Exception:  # a run that broke before its records were whole: the batch ends all the same
        log.exception("batch %s: its run's figures could not be read", batch_id)
        return None


def batch_spec(state: State, config: ServeConfig, tenant: str, batch: dict[str, Any]):
    """The spotbatch spec a batch runs: its file as OpenAI batch input (a Message Batch's as
    Anthropic's), each model it names routed to the served model (serve.yaml), the first model's
    compute and sampling, and its window's end as the deadline."""
    kind = "anthropic_batch" if is_message_batch(batch) else "openai_batch"
    return served_spec(config, batch["spotbatch"]["models"], kind,
                       (state.url_of(state.content_name(tenant, batch["input_file_id"])),
                        state.run_url(tenant, batch["id"]), state.storage_options),
                       max(1, int(batch["expires_at"] - time.time())))


def served_spec(config: ServeConfig, names: list[str], kind: str, where: tuple[str, str, dict[str, Any]],
                deadline_seconds: int):
    """The spec of a batch file of `kind` naming the served models `names`: each routed to its
    serve.yaml model, the first one's compute and sampling. `where`: (the file, the run's output,
    the store's options)."""
    from pipelines.spec import PipelineSpec

    path, output, options = where
    first = config.models[names[0]]
    return PipelineSpec.model_validate({
        "input": {"kind": kind, "storage_options": options, "paths": [path]},
        "models": {name: config.models[name].model for name in names},
        "sampling": first.sampling,
        "compute": {**first.compute, "deadline": f"{deadline_seconds}s", "keep_warm_seconds": config.keep_warm_seconds},
        "output": {"path": output, "storage_options": options}})


def _message(err: Exception) -> str:
    from spotbatch.errors import SpotbatchError

    return str(err) if isinstance(err, SpotbatchError) else f"{type(err).__name__}: the server could not run it"
