"""Compaction of the response cache (pipelines/cache/response_cache.py): entries into shards, and a
shard's small files into larger ones, so lookups stay cheap however large the cache grows.

Run by an actor in the background when entries pile up, or by `spotbatch compact --cache PATH`.
Every step writes before it deletes: entries are deleted only once their answers are in
shard files written whole, and shard files only once a merged file holding them is. A reader
that listed a file since deleted finds it gone and lists again. Two compactions at once
(a lease that went stale) only write the same answers twice, which a later merge folds, or two
whole generations of a run, which readers both read and the next fold merges.

Shard files merge by size class (size-tiered, as LSM stores do): when MERGE_FANIN small files
of a shard are of one class (a factor MERGE_FANIN apart), they become one file of the next, so
a shard holds a few small files a class. A merge that reaches MAX_FILE_ROWS answers is folded
into the shard's run instead (leveled, as LSM stores do past their first levels): the run's
files and the new answers are merged file by file into a new generation of files of
MAX_FILE_ROWS with disjoint key ranges (pipelines/cache/runs.py), then the generation read is
deleted. A key is so in one run file however large the shard grows, and a fold, a merge, a
footer and a filter stay bounded. An answer is rewritten by each later fold of its shard's
run: at 100M answers a run is 8 files, so at most 8 times over the cache's life, 4 on average.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.cache import runs as cache_runs
from pipelines.cache.response_cache import (
    ENTRIES,
    FULL_SUFFIX,
    MAX_FILE_ROWS,
    SHARD_DIGITS,
    SHARDS,
    CacheFiles,
    conform_answers,
)

log = logging.getLogger("spotbatch.cache")

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
    if not files.exists():
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
            log.warning("cache file %s cannot be read, left in place: %r", f, err)
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
    """Merge a shard's small files of one size class into one, while some class has MERGE_FANIN;
    a merge that reaches MAX_FILE_ROWS is folded into the shard's run instead. Returns (files
    written, files merged)."""
    written = merged = 0
    while True:
        sizes = files.parquet_sizes(f"{SHARDS}/{shard}")
        classes: dict[int, list[str]] = {}
        for f, size in sizes.items():
            if f.endswith(FULL_SUFFIX) or cache_runs.parse(f):
                continue
            classes.setdefault(int(math.log(max(size, 1), MERGE_FANIN)), []).append(f)
        full = [fs for _, fs in sorted(classes.items()) if len(fs) >= MERGE_FANIN]
        if not full:
            return written, merged
        group = sorted(full[0])
        try:
            table = _sorted_once(pa.concat_tables([conform_answers(pq.read_table(files.read(f))) for f in group]))
        except FileNotFoundError:  # merged by another compaction meanwhile: look again
            continue
        # named after its newest input, so newest-first order stays true for readers
        name = group[-1].rsplit("/", 1)[-1].replace(".parquet", f"-m{uuid.uuid4().hex[:6]}")
        n = write_shard_files(files, shard, name, table)
        for f in group:
            files.remove(f)
        written, merged = written + n, merged + len(group)


def _sorted_once(table: pa.Table) -> pa.Table:
    """Sorted by key, each key once (the same answer twice: two compactions of one file)."""
    table = table.take(pc.sort_indices(table, [("key", "ascending")]))
    if table.num_rows < 2:
        return table
    first = pc.invert(pc.equal(table.column("key")[1:], table.column("key")[:-1]))
    return table.filter(pa.concat_arrays([pa.array([True]), first.combine_chunks()]))


def write_shard_files(files: CacheFiles, shard: str, name: str, table: pa.Table) -> int:
    """A shard's answers, sorted by key: one small file `name`.parquet, or, at MAX_FILE_ROWS or
    more, folded into the shard's run. Returns how many files were written."""
    if table.num_rows >= MAX_FILE_ROWS:
        return fold_into_run(files, shard, table)
    files.write(f"{SHARDS}/{shard}/{name}.parquet", table, key_filter=True)
    return 1


def fold_into_run(files: CacheFiles, shard: str, table: pa.Table) -> int:
    """A new generation of the shard's run: its answers and `table`'s (sorted by key), merged
    file by file (one run file and its slice of `table` in memory at a time) into files of
    MAX_FILE_ROWS; then the generations it read are deleted. Returns the files written."""
    listed = files.parquet_files(f"{SHARDS}/{shard}")
    whole, _ = cache_runs.generations([r for r in map(cache_runs.parse, listed) if r])
    current, older = (whole[0], whole[1:]) if whole else ([], [])
    # Rare, and bounded: a second whole generation (two folds at once) and full files of the
    # layout before runs are merged in through `table`.
    extra = [r.path for g in older for r in g] + [f for f in listed if f.endswith(FULL_SUFFIX)]
    if extra:
        table = pa.concat_tables([table, *(conform_answers(pq.read_table(files.read(f))) for f in extra)])
    table = _sorted_once(table)
    keys = table.column("key").to_pylist()
    generation = cache_runs.new_generation()
    out = _RunWriter(files, shard, generation)
    taken = 0
    for i, run_file in enumerate(current):
        upto = bisect.bisect_left(keys, current[i + 1].lo) if i + 1 < len(current) else len(keys)
        old = conform_answers(pq.read_table(files.read(run_file.path)))
        out.add(_sorted_once(pa.concat_tables([table.slice(taken, upto - taken), old])))
        taken = upto
    out.add(table.slice(taken))
    written = out.close()
    for f in [r.path for r in current] + extra:  # only now: the new generation is whole
        files.remove(f)
    return written


class _RunWriter:
    """Writes sorted tables, in key order, as run files of MAX_FILE_ROWS (the last may be less)."""

    def __init__(self, files: CacheFiles, shard: str, generation: str):
        self.files, self.shard, self.generation = files, shard, generation
        self.pending: list[pa.Table] = []
        self.rows = self.index = 0
        self.last_key: str | None = None

    def add(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.rows += table.num_rows
        while self.rows > MAX_FILE_ROWS:  # keep one part back: the last one is named so
            self._write(MAX_FILE_ROWS, last=False)

    def close(self) -> int:
        self._write(self.rows, last=True)
        return self.index

    def _write(self, n: int, last: bool) -> None:
        table = pa.concat_tables(self.pending) if self.pending else None
        if table is None or n == 0:  # a fold always has answers: never a generation without its last file
            raise ValueError("a run file of no answers")
        part = table.slice(0, n)
        first = part.column("key")[0].as_py()
        lo = self.shard if self.last_key is None else cache_runs.fence(self.last_key, first)
        self.files.write(f"{SHARDS}/{self.shard}/{cache_runs.run_name(self.generation, self.index, last, lo)}",
                         part, key_filter=True)
        self.index += 1
        self.last_key = part.column("key")[-1].as_py()
        self.pending = [table.slice(n)]
        self.rows -= n


def _remove_orphans(files: CacheFiles) -> int:
    """Remove what writers killed long ago left: `.tmp` files (local; an object store shows no
    half-written object) and run generations never made whole (readers never take either)."""
    removed = 0
    now = time.time()
    for run_files in cache_runs.by_shard(files.parquet_files(SHARDS)).values():
        for generation in cache_runs.generations(run_files)[1]:
            if now - cache_runs.generation_time_ns(generation[0].generation) / 1e9 > ORPHAN_SECONDS:
                for r in generation:
                    files.remove(r.path)
                    removed += 1
    for folder in (ENTRIES, SHARDS):
        for f in files.leftovers(folder):
            modified = files.modified(f)
            if modified is not None and now - modified > ORPHAN_SECONDS:  # None: renamed into place since
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
                age = time.time() - json.loads(files.read_bytes(path) or b"")["time"]
            except (ValueError, KeyError):
                age = lease_seconds + 1  # released meanwhile, or left half-written by a dead holder
            if age <= lease_seconds:
                return None
            files.remove(path)  # its holder died: at worst two compactions run, which is harmless
    return None


def _release_lease(files: CacheFiles, holder: str) -> None:
    try:
        if json.loads(files.read_bytes(files.path(LEASE)) or b"")["holder"] == holder:
            files.remove(files.path(LEASE))
    except (ValueError, KeyError):
        pass
