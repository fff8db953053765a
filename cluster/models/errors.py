"""What can be wrong with a spec's model, found before anything is written (exit 2): the classes
live in spotbatch/errors.py, with every other error, and are importable from here as before."""

from spotbatch.errors import ModelChangedError, ModelError, ModelNotFoundError

__all__ = ["ModelChangedError", "ModelError", "ModelNotFoundError"]
