"""A quiet console: a run's terminal (or notebook cell) shows spotbatch's own lines and its
progress bar; Ray's and vLLM's log lines go to a file whose path is printed first.

Three sources are caught while the run holds the console:
- the engine actors' output (vLLM's logs, Ray worker lines), which Ray forwards to the driver:
  written to the file, except lines that matter to the user (spotbatch's own, out of memory,
  an engine that cannot start), which are shown too;
- Ray's and Ray Data's Python loggers in the driver (the execution plan, "Started a local Ray
  instance"): their console handlers are silenced, a handler to the file is added;
- what Ray's C++ core worker writes straight to the driver's stderr: in a terminal or a job
  log (stderr is fd 2) that fd goes to the file, and sys.stderr keeps the console. In a
  notebook those lines never reach the cell anyway.

`verbose` (`--verbose`, SPOTBATCH_VERBOSE=1) leaves everything as Ray prints it.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

LOG_DIR_ENV = "SPOTBATCH_LOG_DIR"
# A run's log file is kept KEEP_LOG_DAYS, and only the newest KEEP_LOGS of them: a nightly
# schedule or a notebook's many runs would otherwise fill the disk over months.
KEEP_LOG_DAYS = 30
KEEP_LOGS = 200
LOG_NAME = re.compile(r"\d{8}T\d{6}Z-.+\.log")  # what this module names its files; nothing else is touched
VERBOSE_ENV = "SPOTBATCH_VERBOSE"
RAY_LOGGERS = ("ray", "ray.data")
# Lines from the actors that are shown as well as filed: spotbatch's own, and faults a user
# must see to act on (the engine's, and Ray's out-of-memory killer's).
OWN = "spotbatch:"
FAULTS = re.compile(r"out of memory|OutOfMemory|low on memory|CUDA error|EngineFailed|engine did not start|"
                    r"No CUDA GPUs", re.IGNORECASE)

# Ray Data's usage poller logs at DEBUG from a daemon thread, also while the interpreter shuts
# down, when its handler's stream is gone: the logging error prints a traceback on stderr.
logging.getLogger("ray.data._internal.usage").setLevel(logging.WARNING)

log = logging.getLogger("spotbatch.console")
worker_log = logging.getLogger("spotbatch.worker")  # the engine actors' own lines, shown in the driver


def verbose_default() -> bool:
    return os.environ.get(VERBOSE_ENV, "").lower() in ("1", "true", "yes")


def log_dir() -> Path:
    return Path(os.environ.get(LOG_DIR_ENV) or Path.home() / ".cache" / "spotbatch" / "logs")


def prune_logs(directory: Path, now: float | None = None) -> int:
    """Remove this module's log files older than KEEP_LOG_DAYS or past the newest KEEP_LOGS;
    returns how many. Other files in the folder are never touched."""
    now = time.time() if now is None else now
    ours = []
    for entry in os.scandir(directory):
        if entry.is_file(follow_symlinks=False) and LOG_NAME.fullmatch(entry.name):
            try:
                ours.append((entry.stat().st_mtime, entry.path))
            except FileNotFoundError:  # another run pruned it
                pass
    ours.sort(reverse=True)
    removed = 0
    for n, (mtime, path) in enumerate(ours):
        if n >= KEEP_LOGS or now - mtime > KEEP_LOG_DAYS * 86400:
            try:
                os.unlink(path)
                removed += 1
            except FileNotFoundError:
                pass
    return removed


class Console:
    """Holds the console for one run (a context manager); `capture_workers()` once Ray is up."""

    def __init__(self, name: str, verbose: bool | None = None):
        self.verbose = verbose_default() if verbose is None else verbose
        self.name = name
        self.path: Path | None = None
        self._file = None
        self._levels: list[tuple[logging.Handler, int]] = []
        self._handler: logging.Handler | None = None
        self._stderr_fd: int | None = None
        self._stderr = None
        self._dispatch: list | None = None

    def __enter__(self) -> Console:
        if self.verbose:
            return self
        directory = log_dir()
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{self.name}.log"
        self._file = open(self.path, "a", buffering=1, encoding="utf-8", errors="replace")
        prune_logs(directory)  # this run's file counts among the newest
        log.info("Ray's and vLLM's logs: %s (--verbose shows them here)", self.path)
        self._handler = logging.StreamHandler(self._file)
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        for name in RAY_LOGGERS:
            if name == "ray.data":  # its import sets up its loggers' handlers (and logs, to "ray"'s)
                importlib.import_module("ray.data")
            logger = logging.getLogger(name)
            for handler in logger.handlers:
                if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                    self._levels.append((handler, handler.level))
                    handler.setLevel(logging.CRITICAL + 1)
            logger.addHandler(self._handler)
        self._take_stderr_fd()
        return self

    def _take_stderr_fd(self) -> None:
        try:
            if sys.stderr.fileno() != 2:
                return
        except (AttributeError, OSError, ValueError):  # a notebook's stream has no fd
            return
        sys.stderr.flush()
        self._stderr_fd = os.dup(2)
        self._stderr = sys.stderr
        sys.stderr = open(self._stderr_fd, "w", buffering=1, closefd=False)
        os.dup2(self._file.fileno(), 2)

    def capture_workers(self) -> None:
        """Route the lines Ray forwards from the actors to the file (Ray is initialised)."""
        if self.verbose or self._dispatch is not None:
            return
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

        with dispatcher._lock:
            self._dispatch = dispatcher.handlers
            dispatcher.handlers = [("spotbatch_console", self._worker_lines)]

    def _worker_lines(self, data: dict[str, Any]) -> None:
        who = data.get("actor_name") or data.get("task_name") or ""
        prefix = f"({who} pid={data.get('pid')})"
        for line in data.get("lines", []):
            self._file.write(f"{prefix} {line}\n")
            text = line.strip()
            # Logged again here, in the driver, where the user's logging configuration applies:
            # an actor's own lines at the level its stream implies (pipelines/log.py sends
            # warnings to stderr), the faults it shows as warnings.
            if text.startswith(OWN):
                level = logging.WARNING if data.get("is_err", True) else logging.INFO
                worker_log.log(level, text.removeprefix(OWN).lstrip(), extra={"actor": prefix})
            elif FAULTS.search(text):
                worker_log.warning("an engine actor says: %s", text[:500], extra={"actor": prefix})

    def __exit__(self, *exc) -> None:
        if self.verbose:
            return
        if self._dispatch is not None:
            import ray
            from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

            with dispatcher._lock:
                # A Ray the caller keeps (a notebook's) prints its workers' lines again; one shut
                # down with the run cleared its own handler, and a new ray.init adds it afresh.
                dispatcher.handlers = self._dispatch if ray.is_initialized() else []
        if self._stderr_fd is not None:
            sys.stderr.flush()
            os.dup2(self._stderr_fd, 2)
            sys.stderr = self._stderr
            os.close(self._stderr_fd)
        for handler, level in self._levels:
            handler.setLevel(level)
        for name in RAY_LOGGERS:
            logging.getLogger(name).removeHandler(self._handler)
        self._file.close()
