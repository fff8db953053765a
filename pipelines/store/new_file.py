"""A file written whole under a name nobody has, or not at all: for exports, which must never
overwrite anything and never leave half a file where a reader could take it for a whole one."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from pipelines.store.storage import storage_for


@contextmanager
def new_file(fs, path: str, text: bool = True) -> Iterator[IO]:
    """Write `path`, which must not exist, atomically: the storage layer's streamed create (of
    two racing writers one wins and the other gets FileExistsError; on an object store the
    upload streams as it is written, nothing is spooled to this machine's disk). A failure
    leaves nothing under `path`."""
    with storage_for(fs).create_streamed(path) as raw:
        if not text:
            yield raw
            return
        fh = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
        try:
            yield fh
            fh.flush()
        finally:
            fh.detach()  # the wrapper must not close the file: leaving the create lands it
