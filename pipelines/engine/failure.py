"""A run whose engines cannot start ends with EngineStartError (an EngineFailed) and the
engine's reason, whatever shape Ray gave the error on its way to the driver.

An engine actor raises EngineStartError (operators/feeder.py). Where Ray keeps the exception
(a task's RayTaskError: its `cause`, or `as_instanceof_cause()`; an exception's chain) it is
found by class. Only where Ray keeps nothing but text, an error in an actor's constructor
(Ray's ActorDiedError, or Ray Data's wrapper of it), is the reason found in the traceback's
text, by the class name it printed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from spotbatch.errors import EngineStartError

# The traceback's last line, as an actor raised it (EngineFailed: before EngineStartError was).
DID_NOT_START = re.compile(r"(?:EngineStartError|EngineFailed): the engine did not start: ?")
ADVICE = "Committed units are kept: fix the model's settings and run the same command again."


def engine_start_failure(err: BaseException) -> EngineStartError | None:
    r"""EngineStartError with the reason, when `err` ended a run because no engine actor could
    load its engine (a bad model setting, too little memory); None for any other error.

    >>> print(engine_start_failure(RuntimeError("x\nEngineFailed: the engine did not start: bad\n  why\nmore")))
    the engine did not start: bad; why
      Committed units are kept: fix the model's settings and run the same command again.
    >>> engine_start_failure(RuntimeError("the node died")) is None
    True
    """
    for cause in _causes(err):
        if isinstance(cause, EngineStartError):
            return EngineStartError(_two_lines(cause.reason), ADVICE)
    text = str(err)
    found = list(DID_NOT_START.finditer(text))
    if not found:
        return None
    return EngineStartError(_two_lines(text[found[-1].end():]), ADVICE)


def _causes(err: BaseException) -> Iterator[BaseException]:
    """`err` and what it wraps: its chain, and a Ray task error's cause."""
    seen: set[int] = set()
    todo = [err]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen or not isinstance(e, BaseException):
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__, getattr(e, "cause", None)]


def _two_lines(reason: str) -> str:
    """The first two lines of the engine's reason, on one line (a traceback follows them)."""
    return "; ".join(line.strip() for line in reason.splitlines()[:2] if line.strip())
