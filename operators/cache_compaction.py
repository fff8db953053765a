"""Compaction of the response cache (operators/response_cache.py): entries into shards, and a
shard's small files into larger ones, so lookups stay cheap however large the cache grows.

Run by an actor in the background when entries pile up, or by `spotbatch compact --cache PATH`.
Every step writes before it deletes: entries are deleted only once their answers are in
shard files written whole, and shard files only once a merged file holding them is. A reader
that listed a file since deleted finds it gone and lists again. Two compactions at once
(a lease that went stale) only write the same answers twice, which a later merge folds.

Shard files merge by size class (size-tiered, as LSM stores do): when MERGE_FANIN files of a
shard are of one class (a factor MERGE_FANIN apart), they become one file of the next. Each
answer is so rewritten about log(cache size) times over the cache's life, not once per
compaction, and a shard holds a few files per class. A file never holds more than
MAX_FILE_ROWS answers: a larger merge is written as several files of disjoint key ranges, and
a full file is never merged again, so a merge, a footer and a filter stay bounded; a large
cache has more full files per shard, each passed over by its filter when it lacks the key.
"""

from __future__ import annotations

import json
import math
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from operators.response_cache import (ENTRIES, FULL_SUFFIX, MAX_FILE_ROWS, SHARD_DIGITS, SHARDS, CacheFiles,
                                      conform_answers)

LEASE = "compacting.json"
LEASE_SECONDS = 900.0  # a lease this old was left by a compaction that died
ORPHAN_SECONDS = 3600.0  # a file still being written after this long belongs to a dead writer
ENTRIES_PER_PASS = 256  # entries files read into memory at once
MERGE_FANIN = 4
NO_CACHE = "no cache at that path"


@dataclass
class CacheCompaction:
    entries_files: int = 0  # entries files moved into shards
    answers: int = 0  # answers in them
    shard_files_written: int = 0
    shard_files_merged: int = 0  # shard files merged into larger ones and removed
    orphans_removed: int = 0  # half-written files of writers killed long ago
    skipped: str | None = None  # why nothing was done (another compaction holds the lease)


def compact_cache(path: str, storage_options: dict[str, Any] | None = None, *,
                  lease_seconds: float = LEASE_SECONDS) -> CacheCompaction:
    files = CacheFiles(path, storage_options)
    done = CacheCompaction()
    if not files.fs.exists(files.root):
        done.skipped = NO_CACHE
        return done
    holder = _take_lease(files, lease_seconds)
    if holder is None:
        done.skipped = "another compaction holds the lease"
        return done
    try:
        entries = files.parquet_files(ENTRIES)
        touched: set[str] = set()
        for start in range(0, len(entries), ENTRIES_PER_PASS):
            batch = entries[start:start + ENTRIES_PER_PASS]
            touched |= _entries_into_shards(files, batch, done)
        for written, merged in files.map(lambda shard: _merge_shard(files, shard), sorted(touched)):
            done.shard_files_written += written
            done.shard_files_merged += merged
        done.orphans_removed = _remove_orphans(files)
    finally:
        _release_lease(files, holder)
    return done


def _entries_into_shards(files: CacheFiles, batch: list[str], done: CacheCompaction) -> set[str]:
    def read(f: str) -> pa.Table | None:
        try:
            return conform_answers(pq.read_table(files.read(f)))
        except FileNotFoundError:  # another compaction took it
            return None
        except (pa.ArrowException, OSError) as err:  # not written by the cache: left where it is
            print(f"spotbatch: cache file {f} cannot be read, left in place: {err!r}", file=sys.stderr)
            return None

    got = dict(zip(batch, files.map(read, batch)))
    read = [f for f, t in got.items() if t is not None]
    tables = [got[f] for f in read]
    if not tables:
        return set()
    table = pa.concat_tables(tables)
    table = table.take(pc.sort_indices(table, [("key", "ascending")]))
    prefixes = pc.utf8_slice_codeunits(table.column("key"), 0, SHARD_DIGITS)
    stamp = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
    shards = pc.unique(prefixes).to_pylist()

    def write(shard: str) -> int:
        return write_shard_files(files, shard, stamp, table.filter(pc.equal(prefixes, shard)))

    done.shard_files_written += sum(files.map(write, shards))
    list(files.map(files.remove, read))  # only now: their answers are in shard files written whole
    done.entries_files += len(read)
    done.answers += table.num_rows
    return set(shards)


def _merge_shard(files: CacheFiles, shard: str) -> tuple[int, int]:
    """Merge a shard's files of one size class into one, while some class has MERGE_FANIN;
    returns (files written, files merged)."""
    written = merged = 0
    while True:
        sizes = files.parquet_sizes(f"{SHARDS}/{shard}")
        classes: dict[int, list[str]] = {}
        for f, size in sizes.items():
            if f.endswith(FULL_SUFFIX):
                continue
            classes.setdefault(int(math.log(max(size, 1), MERGE_FANIN)), []).append(f)
        full = [fs for _, fs in sorted(classes.items()) if len(fs) >= MERGE_FANIN]
        if not full:
            return written, merged
        group = sorted(full[0])
        try:
            tables = []
            for f in group:
                tables.append(conform_answers(pq.read_table(files.read(f))))
        except FileNotFoundError:  # merged by another compaction meanwhile: look again
            continue
        table = pa.concat_tables(tables)
        table = table.take(pc.sort_indices(table, [("key", "ascending")]))
        # the same answer twice (two compactions of one entries file) is kept once
        first = pc.invert(pc.equal(table.column("key")[1:], table.column("key")[:-1])) if table.num_rows > 1 else None
        if first is not None:
            table = table.filter(pa.concat_arrays([pa.array([True]), first.combine_chunks()]))
        # named after its newest input, so newest-first order stays true for readers
        name = group[-1].rsplit("/", 1)[-1].replace(".parquet", f"-m{uuid.uuid4().hex[:6]}")
        n = write_shard_files(files, shard, name, table)
        for f in group:
            files.remove(f)
        written, merged = written + n, merged + len(group)


def write_shard_files(files: CacheFiles, shard: str, name: str, table: pa.Table) -> int:
    """A shard's answers, sorted by key, as files of at most MAX_FILE_ROWS: `name`.parquet, or
    when more, `name`-cNNNN for each part; a part of exactly MAX_FILE_ROWS is marked full.
    Returns how many files."""
    parts = [table.slice(start, MAX_FILE_ROWS) for start in range(0, table.num_rows, MAX_FILE_ROWS)]
    for i, part in enumerate(parts):
        stem = name if len(parts) == 1 else f"{name}-c{i:04d}"
        suffix = FULL_SUFFIX if part.num_rows == MAX_FILE_ROWS else ".parquet"
        files.write(f"{SHARDS}/{shard}/{stem}{suffix}", part, key_filter=True)
    return len(parts)


def _remove_orphans(files: CacheFiles) -> int:
    """Remove `.tmp` files of writers killed mid-write (readers never take them)."""
    if not files.local:
        return 0  # an object store shows no half-written object
    removed = 0
    for folder in (ENTRIES, SHARDS):
        try:
            names = files.fs.find(files.path(folder))
        except FileNotFoundError:
            continue
        for f in names:
            if not f.endswith(".tmp"):
                continue
            try:
                age = time.time() - files.fs.modified(f).timestamp()
            except FileNotFoundError:  # its writer renamed it into place since the listing
                continue
            if age > ORPHAN_SECONDS:
                files.remove(f)
                removed += 1
    return removed


def _take_lease(files: CacheFiles, lease_seconds: float) -> str | None:
    """An exclusive lease on compacting this cache, or None while a live one holds it."""
    holder = uuid.uuid4().hex
    record = json.dumps({"holder": holder, "time": time.time()}).encode()
    path = files.path(LEASE)
    for _ in range(2):
        try:
            files.create(LEASE, record)
            return holder
        except FileExistsError:
            try:
                age = time.time() - json.loads(files.fs.cat_file(path))["time"]
            except (FileNotFoundError, ValueError, KeyError):
                age = lease_seconds + 1  # released meanwhile, or left half-written by a dead holder
            if age <= lease_seconds:
                return None
            files.remove(path)  # its holder died: at worst two compactions run, which is harmless
    return None


def _release_lease(files: CacheFiles, holder: str) -> None:
    try:
        if json.loads(files.fs.cat_file(files.path(LEASE)))["holder"] == holder:
            files.remove(files.path(LEASE))
    except (FileNotFoundError, ValueError, KeyError):
        pass
