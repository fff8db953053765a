"""spotbatch's own lines go through the `spotbatch` logger (children "spotbatch.run", ...), so
a job's or notebook's logging configuration routes or silences them.

The library configures no logger but its own, and that only when nobody else has: importing it
adds a NullHandler to "spotbatch" (the convention for a library). The entry points decide:
- the CLI (`jobs/cli.py`) owns its process: `cli_console()` shows every line as the console
  always has, "spotbatch: ..." lines at INFO on stdout, warnings and errors on stderr;
- a run from Python (`pipelines.run.run`, a notebook) calls `console()`: when logging is
  unconfigured (no handler on "spotbatch" nor on the root logger) it attaches the same console
  handler and sets "spotbatch" to INFO if no level was set, so a notebook still sees its lines;
  otherwise the user's configuration applies as it stands. Ray and vLLM do the same for theirs.
  `logging.getLogger("spotbatch").setLevel(logging.WARNING)` keeps the warnings and silences the
  rest, the progress bar and the notebook's progress line included (pipelines/progress.py).
- an engine actor calls `console()` too: in a Ray worker nothing is configured, so its lines
  reach the worker's stdout/stderr as "spotbatch: ...", Ray forwards them to the driver, and the
  driver logs them again through its own "spotbatch" logger (cluster/console.py).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

NAME = "spotbatch"
PROGRESS = "spotbatch.progress"  # its lines read "spotbatch progress: ..." on the console

logging.getLogger(NAME).addHandler(logging.NullHandler())


class ConsoleFormatter(logging.Formatter):
    """The console's text: "spotbatch: <message>", progress lines "spotbatch progress: <...>".
    Blank lines a message starts with (after a ^C, say) come before the prefix."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        body = text.lstrip("\n")
        prefix = "spotbatch progress: " if record.name == PROGRESS else "spotbatch: "
        return text[:len(text) - len(body)] + prefix + body


class ConsoleHandler(logging.Handler):
    """INFO and below to stdout, WARNING and above to stderr. The streams are looked up at each
    line, not kept: a run's console (cluster/console.py) swaps sys.stderr while it holds fd 2,
    and a test's captured streams or a notebook's cell streams change under it. A progress bar
    on the terminal is cleared for the line and drawn again after it."""

    def __init__(self, level: int = logging.NOTSET):
        super().__init__(level)
        self.setFormatter(ConsoleFormatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            text = self.format(record) + "\n"
            bars = sys.modules.get("tqdm")
            if bars is None or not getattr(bars.tqdm, "_instances", None):
                self._write(stream, text)
                return
            with bars.tqdm.external_write_mode(file=stream):
                self._write(stream, text)
        except Exception:  # noqa: BLE001 - logging's own rule: a line that cannot be shown never stops the run
            self.handleError(record)

    @staticmethod
    def _write(stream, text: str) -> None:
        stream.write(text)
        stream.flush()


def _configured() -> bool:
    """Whether anyone gave "spotbatch" or the root logger a handler (a NullHandler is no one)."""
    ours = [h for h in logging.getLogger(NAME).handlers if not isinstance(h, logging.NullHandler)]
    return bool(ours or logging.getLogger().handlers)


def console() -> None:
    """Show spotbatch's lines on the console if logging is unconfigured (see the module's
    docstring); otherwise leave the user's configuration as it is. Safe to call again."""
    if _configured():
        return
    logger = logging.getLogger(NAME)
    logger.addHandler(ConsoleHandler())
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


@contextmanager
def cli_console() -> Iterator[None]:
    """The CLI's console while it runs a command: every spotbatch line from INFO up, shown as
    the console always showed it, and only there (not again through a root handler Ray or a
    test harness may have). The logger is left as it was found."""
    logger = logging.getLogger(NAME)
    handler = ConsoleHandler()
    before = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before[0])
        logger.propagate = before[1]
