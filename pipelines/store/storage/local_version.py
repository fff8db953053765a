"""Versions of a local file for put-if-version: a token that no later version shares, and a
lock that lets one compare-and-replace of a name run at a time. Both live in a hidden
`.staging/` folder beside the file (readers of a folder of Parquet skip hidden names; an
output's compaction sweeps what a killed writer left there)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

SIDE = ".staging"
# a lock this old was left by a writer that died holding it (a merge writes a whole unit under it)
LOCK_STALE_SECONDS = 600.0
VERSION_READ_TRIES = 20  # a file replaced during every read of it gives up after this
NONCE = ".version"  # the name of the nonce beside a file: the sweep keeps it


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
    """One holder at a time: a lock file created exclusively, broken when stale."""
    lock = side_path(path, ".lock")
    os.makedirs(os.path.dirname(lock), exist_ok=True)
    while True:
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            break
        except FileExistsError:
            break_if_stale(lock)
            time.sleep(0.005)
    ours = os.fstat(fd).st_ino
    os.close(fd)
    try:
        yield
    finally:
        try:
            if os.stat(lock).st_ino == ours:  # a breaker may have given the name to another
                os.unlink(lock)
        except FileNotFoundError:
            pass


def break_if_stale(lock: str) -> None:
    """Break a lock whose holder died. It is renamed away to a name of our own, so of two
    waiters breaking it only one takes it; one that took a fresh lock instead (another waiter
    broke the stale one and locked again in between) gives it back."""
    try:
        seen = os.stat(lock)
    except FileNotFoundError:
        return
    if time.time() - seen.st_mtime <= LOCK_STALE_SECONDS:
        return
    away = f"{lock}.{uuid.uuid4().hex}.stale"
    try:
        os.rename(lock, away)
    except FileNotFoundError:
        return  # another waiter broke it
    taken = os.stat(away)
    if (taken.st_ino, taken.st_mtime_ns) != (seen.st_ino, seen.st_mtime_ns):
        try:
            os.link(away, lock)  # a live holder's lock: give it back
        except FileExistsError:
            pass
    os.unlink(away)
