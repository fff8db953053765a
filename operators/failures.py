"""Why a row failed: a small fixed set of classes, each with a message.

Provider batch APIs report a job as total / completed / failed; spotbatch also says which
kind of failure, because the remedy differs: fix the data (bad_input), shorten or truncate
(context_too_long), retry (engine_error, timeout, preempted_exhausted).
"""

from __future__ import annotations

BAD_INPUT = "bad_input"  # no usable prompt: null, empty, not text, refused by the engine
CONTEXT_TOO_LONG = "context_too_long"  # the prompt does not fit the model's context
ENGINE_ERROR = "engine_error"  # the engine failed on its unit on every attempt
TIMEOUT = "timeout"  # the request did not finish within compute.request_timeout_seconds
PREEMPTED_EXHAUSTED = "preempted_exhausted"  # its unit was lost with its node on every attempt
# Why an attempt at a unit failed with no fault of the engine's or the unit's rows; the unit is
# left pending, never committed as errors (pipelines/unit/protocol.py).
STORAGE_ERROR = "storage_error"  # the storage kept failing a step of the unit's commit
INPUT_CHANGED = "input_changed"  # the unit's shard is not the version the run was planned on

CLASSES = (BAD_INPUT, CONTEXT_TOO_LONG, ENGINE_ERROR, TIMEOUT, PREEMPTED_EXHAUSTED)
# Classes worth running again as they are (`spotbatch run --retry-failed`); the others need
# the input or the spec changed first, but are retried too when asked, since the spec may have.
TRANSIENT = (ENGINE_ERROR, TIMEOUT, PREEMPTED_EXHAUSTED)


def classify_rejection(message: str) -> str:
    """The class of a request the engine refused at admission.

    >>> classify_rejection("This model's maximum context length is 2048 tokens. However, ...")
    'context_too_long'
    >>> classify_rejection("token id 70000 out of vocabulary")
    'bad_input'
    """
    lowered = message.lower()
    if "context length" in lowered or "max_model_len" in lowered or "too long" in lowered:
        return CONTEXT_TOO_LONG
    return BAD_INPUT
