"""The storage interface: the few promises exactly-once rests on, whatever the store.

Paths are the store's own (fsspec's, without the protocol): `root` and `path(name)` build them.
Every write lands whole or not at all; nothing here keeps a listing cache, so what one writer
committed is what the next reader lists."""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from typing import IO, Any

STAGED = ".tmp"  # a file being written beside its final name; listings of records skip it


class Storage(ABC):
    """One store (a local folder, or a bucket through fsspec) and its promises."""

    fs: Any  # the fsspec file system, for readers such as pyarrow.dataset
    root: str

    def path(self, name: str) -> str:
        return f"{self.root}/{name}" if name else self.root

    # -- writes -----------------------------------------------------------------------------
    @abstractmethod
    def create(self, path: str, data: bytes) -> None:
        """Create `path` holding `data`, or raise FileExistsError when it exists (also when the
        object there is our own write whose response was lost: read it to tell)."""

    @abstractmethod
    def create_staged(self, path: str, stage_in: str | None = None) -> AbstractContextManager[IO[bytes]]:
        """A binary file to write; on leaving the block it becomes `path` whole, or raises
        FileExistsError when `path` exists. A failure leaves nothing under `path`. `stage_in`:
        the folder for the file being written, where that matters (readers of the final folder
        must not see it); the same folder as `path` when None."""

    @abstractmethod
    def put(self, path: str, data: bytes) -> None:
        """Write `path` whole, replacing what was there: readers see the old or the new."""

    @abstractmethod
    def put_from(self, path: str, local_file: str) -> None:
        """`put` of a file on this machine's disk, without holding it in memory."""

    @abstractmethod
    def put_if_version(self, path: str, data: bytes, version: str) -> bool:
        """Write `path` whole unless it changed since `read_versioned` returned `version`;
        False (nothing written) when it did."""

    # -- reads ------------------------------------------------------------------------------
    @abstractmethod
    def read_versioned(self, path: str) -> tuple[bytes, str] | None:
        """The bytes at `path` and a token of exactly that version; None when absent."""

    @abstractmethod
    def read(self, path: str) -> bytes | None:
        """The whole file in one request; None when absent."""

    def read_many(self, paths: list[str]) -> dict[str, bytes]:
        """Several small files at once (concurrently on an object store); absent ones omitted."""
        return self.fs.cat(paths, on_error="omit") if paths else {}

    def open(self, path: str) -> IO[bytes]:
        """For reading parts of a file (a Parquet footer, row groups)."""
        return self.fs.open(path, "rb")

    def exists(self, path: str) -> bool:
        return self.fs.exists(path)

    def isdir(self, path: str) -> bool:
        return self.fs.isdir(path)

    @abstractmethod
    def list(self, folder: str) -> list[str]:
        """The names (not paths) directly under `folder`; [] when there is none."""

    @abstractmethod
    def find(self, folder: str) -> list[str]:
        """The paths of every file below `folder`, sorted; [] when there is none."""

    @abstractmethod
    def sizes(self, folder: str) -> dict[str, int]:
        """The files below `folder` and their sizes."""

    @abstractmethod
    def modified(self, path: str) -> float | None:
        """When `path` was last written (seconds since the epoch); None when absent."""

    @abstractmethod
    def leftovers(self, folder: str) -> list[str]:
        """Files below `folder` that writers left half made (a staged name; a writer killed
        before its rename), for a cleaner to remove once old enough."""

    # -- moves and removals -----------------------------------------------------------------
    @abstractmethod
    def move(self, src: str, dest: str) -> None:
        """Move a file or a folder; a move that was interrupted is finished by doing it again."""

    def delete(self, path: str, recursive: bool = False) -> None:
        """Remove `path` (a folder with `recursive`); one already gone is fine."""
        try:
            self.fs.rm(path, recursive=recursive)
        except FileNotFoundError:
            pass

