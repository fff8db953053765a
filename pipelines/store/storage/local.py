"""A local (or mounted network) file system: exclusive create is a hard link from a staged file
(a link refuses an existing name), put is a staged file renamed over the final name."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from fsspec.implementations.local import LocalFileSystem

from pipelines.store.storage.base import STAGED, Storage

LOCK_STALE_SECONDS = 60.0  # a version lock older than this was left by a writer that died holding it


class LocalStorage(Storage):
    def __init__(self, root: str, fs: LocalFileSystem | None = None):
        self.fs = fs or LocalFileSystem()
        self.root = root.rstrip("/")

    # -- writes -----------------------------------------------------------------------------
    def create(self, path: str, data: bytes) -> None:
        with self.create_staged(path) as fh:
            fh.write(data)

    @contextmanager
    def create_staged(self, path: str, stage_in: str | None = None) -> Iterator[IO[bytes]]:
        folder = stage_in or os.path.dirname(path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.makedirs(folder, exist_ok=True)
        staged = f"{folder}/{os.path.basename(path)}.{uuid.uuid4().hex}{STAGED}"
        try:
            with open(staged, "wb") as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.link(staged, path)  # atomic, and refuses an existing name
        finally:
            _unlink(staged)

    def put(self, path: str, data: bytes) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        staged = f"{path}.{uuid.uuid4().hex}{STAGED}"
        try:
            with open(staged, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(staged, path)  # readers see the old or the new, never half
        finally:
            _unlink(staged)

    def put_from(self, path: str, local_file: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        staged = f"{path}.{uuid.uuid4().hex}{STAGED}"
        try:
            shutil.copyfile(local_file, staged)
            os.replace(staged, path)
        finally:
            _unlink(staged)

    def put_if_version(self, path: str, data: bytes, version: str) -> bool:
        """Compare and replace under a lock file of the name's own, held for that moment only."""
        with self._locked(path):
            try:
                if _version(os.stat(path)) != version:
                    return False
            except FileNotFoundError:
                return False
            self.put(path, data)
            return True

    @contextmanager
    def _locked(self, path: str) -> Iterator[None]:
        """A hidden name beside `path` (readers of a folder of Parquet skip names starting with .),
        created exclusively; broken when older than any holder could take."""
        lock = f"{os.path.dirname(path)}/.{os.path.basename(path)}.lock"
        while True:
            try:
                os.close(os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
                break
            except FileExistsError:
                modified = self.modified(lock)
                if modified is not None and time.time() - modified > LOCK_STALE_SECONDS:
                    _unlink(lock)  # its holder died holding it
                time.sleep(0.005)
        try:
            yield
        finally:
            _unlink(lock)

    # -- reads ------------------------------------------------------------------------------
    def read_versioned(self, path: str) -> tuple[bytes, str] | None:
        try:
            with open(path, "rb") as fh:  # the version of exactly the file opened: put renames, never rewrites
                return fh.read(), _version(os.fstat(fh.fileno()))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def read(self, path: str) -> bytes | None:
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def open(self, path: str) -> IO[bytes]:
        return open(path, "rb")

    def list(self, folder: str) -> list[str]:
        """Names only: fsspec's listing stats each file (ten times the time, and every lookup lists)."""
        try:
            return sorted(os.listdir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def find(self, folder: str) -> list[str]:
        return sorted(_files_below(folder))

    def sizes(self, folder: str) -> dict[str, int]:
        sizes = {}
        for f in _files_below(folder):
            try:
                sizes[f] = os.stat(f).st_size
            except FileNotFoundError:  # removed since the listing
                pass
        return sizes

    def modified(self, path: str) -> float | None:
        try:
            return self.fs.modified(path).timestamp()
        except FileNotFoundError:
            return None

    def leftovers(self, folder: str) -> list[str]:
        return [f for f in self.find(folder) if f.endswith(STAGED)]

    def move(self, src: str, dest: str) -> None:
        if not os.path.lexists(src):
            return
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        self.fs.mv(src, dest, recursive=True)


def _version(stat: os.stat_result) -> str:
    return f"{stat.st_ino}-{stat.st_mtime_ns}-{stat.st_size}"


def _files_below(folder: str) -> Iterator[str]:
    """The files below a folder, by name alone (no stat: a directory entry knows its type)."""
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from _files_below(entry.path)
        else:
            yield entry.path


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
