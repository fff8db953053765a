"""Versions of a local file for put-if-version: a token that no later version shares, and a
lock that lets one compare-and-replace of a name run at a time. Both live in a hidden
`.staging/` folder beside the file (readers of a folder of Parquet skip hidden names; an
output's compaction sweeps what a killed writer left there, but never these two)."""

from __future__ import annotations

import fcntl
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

SIDE = ".staging"
VERSION_READ_TRIES = 20  # a file replaced during every read of it gives up after this
NONCE = ".version"  # the name of the nonce beside a file: the sweep keeps it
LOCK = ".lock"  # the name of the lock beside a file: the sweep keeps it too


def side_path(path: str, suffix: str) -> str:
    return f"{os.path.dirname(path)}/{SIDE}/{os.path.basename(path)}{suffix}"


def nonce(path: str) -> str:
    """The nonce the last put-if-version gave `path` ("" before any)."""
    try:
        with open(side_path(path, NONCE)) as fh:
            return fh.read()
    except FileNotFoundError:
        return ""


def renew_nonce(path: str) -> None:
    """A new nonce, written under the lock after each replace: an inode number, a time and a
    size can all repeat, a nonce does not."""
    side = side_path(path, NONCE)
    os.makedirs(os.path.dirname(side), exist_ok=True)
    staged = f"{side}.{uuid.uuid4().hex}.tmp"
    with open(staged, "w") as fh:
        fh.write(uuid.uuid4().hex)
    os.replace(staged, side)


def version_of(path: str, stat: os.stat_result, seen_nonce: str | None = None) -> str:
    found = nonce(path) if seen_nonce is None else seen_nonce
    return f"{stat.st_ino}-{stat.st_mtime_ns}-{stat.st_ctime_ns}-{stat.st_size}-{found}"


@contextmanager
def locked(path: str) -> Iterator[None]:
    """One holder at a time, across processes and threads: an OS lock (flock) on a lock file in
    `.staging/`, which the kernel releases when its holder dies, so a dead merger never leaves
    it held and no waiter ever has to judge a lock stale. The file stays (empty, one per merged
    name): removing it while a waiter has it open would let two holders in."""
    lock = side_path(path, LOCK)
    os.makedirs(os.path.dirname(lock), exist_ok=True)
    with _in_process(lock):  # flock may not exclude two threads of one process everywhere (NFS)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock


_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _in_process(lock: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(lock, threading.Lock())
