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
    def create(self, path: str, data: bytes, durable: bool = False) -> None:
        """Create `path` holding `data`, or raise FileExistsError when another writer's object
        is there. A write that failed but is found there afterwards as ours (the very file we
        linked; on an object store, our exact bytes) succeeded: its answer was lost.
        `durable`: on the disk before this returns (a file system syncs the file and its
        folder; an object store's every write is)."""

    @abstractmethod
    def create_staged(self, path: str, stage_in: str | None = None,
                      durable: bool = False) -> AbstractContextManager[IO[bytes]]:
        """A binary file to write; on leaving the block it becomes `path` whole, or raises
        FileExistsError when another writer's `path` exists (ours, its answer lost, is success,
        as in `create`). A failure leaves nothing under `path`. `stage_in`: the folder for the
        file being written, where that matters (readers of the final folder must not see it);
        the same folder as `path` when None. On an object store the bytes are spooled here, so
        a conditional write that meets a 409 can send them again."""

    def create_streamed(self, path: str) -> AbstractContextManager[IO[bytes]]:
        """`create_staged` for a file nobody will resend (an export): on an object store the
        upload streams as it is written, nothing spooled, discarded on an error; a 409 or a
        lost answer is the caller's error. Durable on a file system."""
        return self.create_staged(path, durable=True)

    @abstractmethod
    def put(self, path: str, data: bytes, durable: bool = False) -> None:
        """Write `path` whole, replacing what was there: readers see the old or the new.
        `durable` as in `create`."""

    @abstractmethod
    def put_from(self, path: str, local_file: str, durable: bool = False) -> None:
        """`put` of a file on this machine's disk, without holding it in memory."""

    @abstractmethod
    def put_if_version(self, path: str, data: bytes, version: str) -> bool:
        """Write `path` whole and durably unless it changed since `read_versioned` returned
        `version`; False (nothing written) when it did. A version is never repeated."""

    def replaces_if_version(self) -> bool:
        """Whether this store offers `put_if_version` (asked at planning, before a merge needs it)."""
        return True

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

    @abstractmethod
    def get_to(self, path: str, local_file: str) -> None:
        """Copy `path` to a file on this machine's disk, without holding it in memory."""

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

