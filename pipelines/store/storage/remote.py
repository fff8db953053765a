"""An object store through fsspec (S3, GCS, ...): exclusive create is a conditional write
(If-None-Match: s3fs's mode "xb"), a put is one PUT (or a multipart upload, visible only once
complete), and there is no rename: a move copies, then deletes."""

from __future__ import annotations

import io
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

from pipelines.store.storage.base import Storage
from pipelines.store.storage.exists import already_exists
from spotbatch.errors import StorageError

CONFLICT_RETRIES = 3  # a 409 from a conditional write is looked at and tried again this often
VERSION_READ_TRIES = 20  # an object rewritten during every read of it gives up after this
SPOOL_BYTES = 64 * 1024**2  # a staged file is held in memory up to this, on local disk beyond
COMPARE_BYTES = 8 * 1024**2  # an object compared with our bytes is read this much at a time


class FsspecStorage(Storage):
    def __init__(self, fs: Any, root: str):
        self.fs = fs
        self.root = root.rstrip("/")
        protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
        # s3fs asks an object's size (a HEAD) to read large ones in parts, unless told not to
        self._one_request = {"max_concurrency": 1} if {"s3", "s3a"} & set(protocols) else {}

    # -- writes -----------------------------------------------------------------------------
    def create(self, path: str, data: bytes, durable: bool = False) -> None:
        """`durable` is every write's on an object store."""
        self._create_resending(path, lambda: io.BytesIO(data))

    @contextmanager
    def create_staged(self, path: str, stage_in: str | None = None, durable: bool = False) -> Iterator[IO[bytes]]:
        """Spooled here (memory, then local disk), then created at once: a conditional write
        that meets a 409 can be sent again, and a failure sends nothing."""
        with tempfile.SpooledTemporaryFile(SPOOL_BYTES) as spool:
            yield spool

            def again() -> IO[bytes]:
                spool.seek(0)
                return spool
            self._create_resending(path, again)

    @contextmanager
    def create_streamed(self, path: str) -> Iterator[IO[bytes]]:
        """An exclusive upload written as it goes (nothing spooled): it lands whole on leaving
        the block, or is discarded on an error. Nothing can be sent again, so a 409 or a lost
        answer is an error for the caller (FileExistsError only when the store said exists)."""
        raw = self.fs.open(path, "xb")
        try:
            yield raw
        except BaseException:
            raw.discard()  # closing would upload what was written so far
            raw.closed = True  # discarded: nothing left to close (its collection would try)
            raise
        try:
            raw.close()
        except Exception as err:
            try:  # a multipart upload that failed to complete must not keep its parts stored
                raw.discard()
            except Exception:
                pass
            if already_exists(err) and self.fs.exists(path):
                raise FileExistsError(f"{path} exists") from err
            raise

    def _create_resending(self, path: str, body: Callable[[], IO[bytes]]) -> None:
        """The conditional write, sent again after a 409. When the write fails and the object is
        there, its bytes tell whose it is: ours (a lost answer, or a retry of a write that had
        landed, refused with 412) is a create that succeeded; another's is FileExistsError."""
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                with self.fs.open(path, "xb") as fh:
                    shutil.copyfileobj(body(), fh, 8 * 1024**2)
                return
            except Exception as err:
                if isinstance(err, StorageError):
                    raise
                if self.fs.exists(path):
                    if self._holds(path, body()):
                        return
                    raise FileExistsError(f"{path} exists") from err
                if not already_exists(err):
                    raise
                # 409 ConditionalRequestConflict: another conditional write to the name was in
                # flight and did not land (yet): try again.
                time.sleep(0.2 * 2**attempt)
        raise StorageError(f"conditional create of {path} kept conflicting with other writers")

    def _holds(self, path: str, ours: IO[bytes]) -> bool:
        """Whether the object at `path` holds exactly the bytes of `ours`, read side by side."""
        with self.fs.open(path, "rb") as there:
            while True:
                mine, theirs = ours.read(COMPARE_BYTES), there.read(COMPARE_BYTES)
                if mine != theirs:
                    return False
                if not mine:
                    return True

    def put(self, path: str, data: bytes, durable: bool = False) -> None:
        self.fs.pipe_file(path, data)

    def put_from(self, path: str, local_file: str, durable: bool = False) -> None:
        self.fs.put_file(local_file, path)  # one PUT, or a multipart upload visible once complete

    def replaces_if_version(self) -> bool:
        return hasattr(self.fs, "call_s3")  # s3fs: PUT with If-Match; gcsfs and others offer none here

    def put_if_version(self, path: str, data: bytes, version: str) -> bool:
        if not self.replaces_if_version():
            raise StorageError(f"{path}: this store offers no conditional replace (If-Match)")
        bucket, key, _ = self.fs.split_path(path)
        try:
            self.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, IfMatch=version)
        except Exception as err:
            if already_exists(err):  # 412: the ETag is not the one read
                return False
            if isinstance(err, FileNotFoundError):  # deleted since: not the version read either
                return False
            raise
        return True

    # -- reads ------------------------------------------------------------------------------
    def read_versioned(self, path: str) -> tuple[bytes, str] | None:
        """The ETag read before and after the bytes: unchanged across, these bytes are that version."""
        for _ in range(VERSION_READ_TRIES):
            try:
                etag = self.fs.info(path)["ETag"]
                data = self.fs.cat_file(path, **self._one_request)
                if self.fs.info(path)["ETag"] == etag:
                    return data, etag
            except FileNotFoundError:
                return None
        raise StorageError(f"{path} kept changing while being read")

    def read(self, path: str) -> bytes | None:
        """One request (a GET, where a plain read would first ask the size)."""
        try:
            return self.fs.cat_file(path, **self._one_request)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def get_to(self, path: str, local_file: str) -> None:
        self.fs.get_file(path, local_file)

    def list(self, folder: str) -> list[str]:
        try:
            listed = self.fs.ls(folder, detail=False)
        except FileNotFoundError:  # none yet; on S3 also a prefix whose only object just went
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in listed)

    def find(self, folder: str) -> list[str]:
        try:
            return sorted(self.fs.find(folder))
        except FileNotFoundError:
            return []

    def sizes(self, folder: str) -> dict[str, int]:
        try:
            found = self.fs.find(folder, detail=True)
        except FileNotFoundError:
            return {}
        return {f: int(info.get("size") or 0) for f, info in found.items()}

    def modified(self, path: str) -> float | None:
        try:
            info = self.fs.info(path)
        except FileNotFoundError:
            return None
        stamp = info.get("LastModified") or info.get("mtime") or info.get("updated")
        return stamp.timestamp() if hasattr(stamp, "timestamp") else float(stamp or 0.0)

    def leftovers(self, folder: str) -> list[str]:
        return []  # an object store shows no object before its upload completes

    def move(self, src: str, dest: str) -> None:
        """No rename: each object is copied, then deleted. A folder has no object of its own to
        move (s3fs's recursive move copies a key for the folder itself and fails), so each
        object under it moves on its own; one moved already is simply no longer there."""
        if not self.fs.isdir(src):
            if self.fs.exists(src):
                self.fs.mv(src, dest)
            return
        for path in self.fs.find(src):
            self.fs.mv(path, dest + path[len(src):])
