"""Every error spotbatch raises to its caller, in one place; catch them by class, never by text.

Two kinds, which differ in what to do next:
- `UserError`: something you wrote or named cannot run (the spec, the input, the output path, the
  model, a price). Found before any engine starts, or before anything is overwritten; fix it and
  run again. The CLI prints the message and exits 2.
- `RunFailed`: a run that was fine could not finish (its engines would not start, the storage
  kept failing). What it committed is kept: the same command or call resumes. The CLI exits 1.

Each class keeps the built-in base it had before it moved here (ValueError, OSError,
RuntimeError), so code that catches those still catches it. The class decides the CLI's exit
code through `exit_code`:

>>> from spotbatch.errors import SpecError, SpotbatchError, StorageError
>>> issubclass(SpecError, ValueError), SpecError.exit_code, StorageError.exit_code
(True, 2, 1)
>>> try:
...     raise SpecError("sampling.max_tokens must be > 0, got -3")
... except SpotbatchError as err:
...     print(err.exit_code, err)
2 sampling.max_tokens must be > 0, got -3

Signals that never reach a caller stay beside the code that raises and catches them, each
turned into one of these or into an error record where it is caught: NotJSON
(pipelines/formats/json_text.py), RowRejected (operators/engine.py), InputChanged
(pipelines/stream/unit_rows.py), StorageFault (pipelines/unit/protocol.py). tests/test_layout.py
keeps that list true.

This module imports nothing, so any process (the CLI, a Ray worker, a notebook) can import it
cheaply.
"""

from __future__ import annotations


class SpotbatchError(Exception):
    """Raised (as one of its subclasses) when spotbatch stops on purpose; the base of every error
    it raises to its caller. `exit_code` is the CLI's exit status when it ends a command."""

    exit_code = 1


class UserError(SpotbatchError):
    """Raised when something the user wrote or named cannot run; the message names the file,
    field or path at fault. Nothing was started or overwritten."""

    exit_code = 2


class SpecError(UserError, ValueError):
    """Raised when a spec cannot run (a bad field, an unknown one, a YAML file that cannot be read,
    a `--set` that names no field); the message names every problem found."""


class InputError(UserError, ValueError):
    """Raised when the input cannot run: no files at a path, a missing column, duplicate ids; the
    message names the path or column at fault."""


class BatchFileError(InputError):
    """Raised when a request line of an OpenAI or Anthropic batch file cannot run as written (not
    JSON, a field of the wrong type, a field spotbatch cannot honour, a custom_id used twice); the
    message names the file, the line and the field. Every line is checked before anything is
    written."""


class OutputError(UserError, ValueError):
    """Raised when a run or an export must not write where it was told to: an output holding
    another spec's run, a folder that is not spotbatch's, an export destination that exists, an
    output with no run."""


class ModelError(UserError, ValueError):
    """Raised (as one of its subclasses) when something is wrong with a spec's model; found
    before anything is written."""


class ModelNotFoundError(ModelError):
    """Raised when a spec names a model that cannot be found: a name of no known form, a hub repo
    not in the cache while offline, a URL folder that does not exist or holds no config.json."""


class ModelChangedError(ModelError):
    """Raised when the weights at a model's name or path are not the ones the run was planned
    with (its output pins them), or a warm engine loaded another dtype than the output's."""


class PriceError(UserError, ValueError):
    """Raised when the price catalog cannot price an instance type or market (a spec's
    `compute.instance_type`, `compute.market`)."""


class RunFailed(SpotbatchError):
    """Raised (as one of its subclasses) when a run could not finish for a reason other than its
    spec or input. What it committed is kept; running the same spec again resumes."""

    exit_code = 1


class EngineFailed(RunFailed, RuntimeError):
    """Raised when an engine failed as a whole (it did not start, died, ran out of memory). Inside
    an engine actor it fails the requests in the engine; a run whose engines cannot start raises
    it to its caller, with the engine's reason (often a model setting, such as max_model_len)."""


class EngineStartError(EngineFailed):
    """Raised when an engine could not start (a bad model setting such as max_model_len, too
    little memory), so no unit ran on it. `reason` is the engine's own error; `advice` what to
    do next (the driver adds it). Picklable with both, so the driver catches it by class where
    Ray keeps the exception (pipelines/engine/failure.py).

    >>> import pickle
    >>> err = pickle.loads(pickle.dumps(EngineStartError("ValueError('too long')", "fix it")))
    >>> print(err); print(err.reason)
    the engine did not start: ValueError('too long')
      fix it
    ValueError('too long')
    """

    def __init__(self, reason: str, advice: str = ""):
        self.reason = reason
        self.advice = advice
        super().__init__(f"the engine did not start: {reason}" + (f"\n  {advice}" if advice else ""))

    def __reduce__(self):
        return type(self), (self.reason, self.advice)


class StorageError(RunFailed, OSError):
    """Raised when the storage kept failing (or kept changing under) an operation that must
    succeed: a merge of retried rows, a record read while others write it, a conditional create
    that kept conflicting."""
