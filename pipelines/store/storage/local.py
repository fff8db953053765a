"""A local (or mounted network) file system: exclusive create is a hard link from a staged file
(a link refuses an existing name), put is a staged file renamed over the final name."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from fsspec.implementations.local import LocalFileSystem

from pipelines.store.storage.base import STAGED, Storage
from pipelines.store.storage.local_version import VERSION_READ_TRIES, locked, nonce, renew_nonce, version_of
from spotbatch.errors import StorageError


class LocalStorage(Storage):
    def __init__(self, root: str, fs: LocalFileSystem | None = None):
        self.fs = fs or LocalFileSystem()
        self.root = root.rstrip("/")

    # -- writes -----------------------------------------------------------------------------
    def create(self, path: str, data: bytes, durable: bool = False) -> None:
        with self.create_staged(path, durable=durable) as fh:
            fh.write(data)

    @contextmanager
    def create_staged(self, path: str, stage_in: str | None = None, durable: bool = False) -> Iterator[IO[bytes]]:
        folder = stage_in or os.path.dirname(path)
        _make_folder(os.path.dirname(path), durable)
        os.makedirs(folder, exist_ok=True)
        staged = f"{folder}/{os.path.basename(path)}.{uuid.uuid4().hex}{STAGED}"
        try:
            with open(staged, "wb") as fh:
                yield fh
                if durable:
                    _sync(fh)
            _link(staged, path)
            if durable:
                _sync_folder(os.path.dirname(path))  # the new name itself, not only its bytes
        finally:
            _unlink(staged)

    def put(self, path: str, data: bytes, durable: bool = False) -> None:
        _make_folder(os.path.dirname(path), durable)
        staged = f"{path}.{uuid.uuid4().hex}{STAGED}"
        try:
            with open(staged, "wb") as fh:
                fh.write(data)
                if durable:
                    _sync(fh)
            os.replace(staged, path)  # readers see the old or the new, never half
            if durable:
                _sync_folder(os.path.dirname(path))
        finally:
            _unlink(staged)

    def put_from(self, path: str, local_file: str, durable: bool = False) -> None:
        _make_folder(os.path.dirname(path), durable)
        staged = f"{path}.{uuid.uuid4().hex}{STAGED}"
        try:
            shutil.copyfile(local_file, staged)
            if durable:
                with open(staged, "rb+") as fh:
                    _sync(fh)
            os.replace(staged, path)
            if durable:
                _sync_folder(os.path.dirname(path))
        finally:
            _unlink(staged)

    def put_if_version(self, path: str, data: bytes, version: str) -> bool:
        """Compare and replace (durably: it replaces a unit's only copy) under the name's lock,
        then give the new version a nonce of its own, so no later version shares its token."""
        with locked(path):
            try:
                if version_of(path, os.stat(path)) != version:
                    return False
            except FileNotFoundError:
                return False
            self.put(path, data, durable=True)
            renew_nonce(path)
            return True

    # -- reads ------------------------------------------------------------------------------
    def read_versioned(self, path: str) -> tuple[bytes, str] | None:
        """The bytes of exactly the file opened (put renames, never rewrites), with the nonce
        seen unchanged across the read."""
        for _ in range(VERSION_READ_TRIES):
            before = nonce(path)
            try:
                with open(path, "rb") as fh:
                    data, stat = fh.read(), os.fstat(fh.fileno())
            except (FileNotFoundError, NotADirectoryError):
                return None
            if nonce(path) == before:
                return data, version_of(path, stat, before)
        raise StorageError(f"{path} kept changing while being read")

    def read(self, path: str) -> bytes | None:
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def open(self, path: str) -> IO[bytes]:
        return open(path, "rb")

    def get_to(self, path: str, local_file: str) -> None:
        shutil.copyfile(path, local_file)

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


def _link(staged: str, path: str) -> None:
    """Give the staged file its name: atomic, and refuses an existing name. A link that failed
    but finds our very file there (a network file system's lost reply, or its retransmitted
    link refused as existing) succeeded; any other file there is another writer's."""
    try:
        os.link(staged, path)
    except OSError as err:
        if _same_file(staged, path):
            return
        if isinstance(err, FileExistsError) or os.path.lexists(path):
            raise FileExistsError(f"{path} exists") from err
        raise


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _sync(fh: IO[bytes]) -> None:
    fh.flush()
    os.fsync(fh.fileno())


def _make_folder(folder: str, durable: bool) -> None:
    """`folder` and any missing parent; with `durable`, each new folder's name is synced into its
    parent, so a durable file in a folder made for it survives a power loss with its path."""
    missing, at = [], folder
    while at and not os.path.isdir(at):
        missing.append(at)
        at = os.path.dirname(at)
    os.makedirs(folder, exist_ok=True)
    if durable:
        for made in reversed(missing):
            _sync_folder(os.path.dirname(made))


def _sync_folder(folder: str) -> None:
    """A new name is durable once its folder is: fsync of the file alone leaves the name to chance."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
