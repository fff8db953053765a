"""A file written whole under a name nobody has, or not at all: for exports, which must never
overwrite anything and never leave half a file where a reader could take it for a whole one."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from fsspec.implementations.local import LocalFileSystem


@contextmanager
def new_file(fs, path: str, text: bool = True) -> Iterator[IO]:
    """Write `path`, which must not exist, atomically. On a file system: a temporary name beside
    it, hard-linked to `path` when complete (a link refuses an existing name, so of two racing
    writers one wins and the other gets FileExistsError). Elsewhere (S3): an exclusive create,
    which lands whole when closed or not at all. A failure leaves nothing under `path`."""
    if isinstance(fs, LocalFileSystem):
        staged = f"{path}.{uuid.uuid4().hex}.tmp"
        try:
            with open(staged, "w" if text else "wb") as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.link(staged, path)
        finally:
            if os.path.exists(staged):
                os.unlink(staged)
        return
    raw = fs.open(path, "xb")
    try:
        if text:
            fh = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
            yield fh
            fh.flush()
            fh.detach()  # the wrapper must not close the file: the close below lands it
        else:
            yield raw
    except BaseException:
        raw.discard()  # nothing lands (closing would upload what was written so far)
        raise
    raw.close()
