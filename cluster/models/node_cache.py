"""The node's model cache: folders that appear whole or not at all.

Every engine actor on a node may be the first to need a model. One takes a file lock and
fills a staging folder, which is renamed into place only when complete; the others wait on
the lock and then find the finished folder. A process killed mid-fill leaves only a staging
folder, which is never loaded and is swept by the next one to take the lock.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

STAGING = ".staging-"


def models_dir() -> Path:
    """The node's model cache: $SPOTBATCH_MODELS, else ~/.cache/spotbatch/models."""
    return Path(os.environ.get("SPOTBATCH_MODELS", Path.home() / ".cache" / "spotbatch" / "models"))


@contextmanager
def node_lock(path: Path) -> Iterator[None]:
    """An exclusive lock among the processes of one node (released if the holder dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def fill_once(dest: Path, fill: Callable[[Path], None], complete: str = "config.json") -> bool:
    """Make `dest` by `fill(staging)` unless a finished one is there; True if this call filled it."""
    if (dest / complete).exists():
        return False
    with node_lock(dest.parent / f".{dest.name}.lock"):
        if (dest / complete).exists():  # another process filled it while we waited
            return False
        for stale in dest.parent.glob(f"{STAGING}{dest.name}-*"):  # left by a killed filler; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{STAGING}{dest.name}-", dir=dest.parent))
        try:
            fill(staging)
            if not (staging / complete).exists():
                raise RuntimeError(f"filling {dest} left no {complete}")
            staging.rename(dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return True
