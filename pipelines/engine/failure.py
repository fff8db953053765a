"""A run whose engines cannot start ends with EngineFailed and the engine's reason, whatever
shape Ray gave the error on its way to the driver.

An error in an engine actor's constructor reaches the driver as Ray's ActorDiedError (or Ray
Data's wrapper of it), which keeps only the text of the actor's traceback, not the exception:
so the reason is found in that text, and raised again as the class callers catch.
"""

from __future__ import annotations

from spotbatch.errors import EngineFailed

DID_NOT_START = "EngineFailed: the engine did not start:"  # operators/feeder.py raises it so
ADVICE = "Committed units are kept: fix the model's settings and run the same command again."


def engine_start_failure(err: BaseException) -> EngineFailed | None:
    r"""EngineFailed with the reason, when `err` ended a run because no engine actor could load
    its engine (a bad model setting, too little memory); None for any other error.

    >>> print(engine_start_failure(RuntimeError("x\nEngineFailed: the engine did not start: bad\n  why\nmore")))
    the engine did not start: bad; why
      Committed units are kept: fix the model's settings and run the same command again.
    >>> engine_start_failure(RuntimeError("the node died")) is None
    True
    """
    text = str(err)
    at = text.rfind(DID_NOT_START)
    if at < 0:
        return None
    lines = text[at + len("EngineFailed: "):].splitlines()[:2]
    reason = "; ".join(line.strip() for line in lines if line.strip())
    return EngineFailed(f"{reason}\n  {ADVICE}")
