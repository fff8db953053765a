"""Identical requests answered once: a response cache shared across runs (the request key
that says which requests are identical is pipelines/cache/answers.py).

The cache is a folder (local or s3://) of Parquet files, each written once and never changed,
so writers on many nodes never conflict and readers never wait for them. Levels, as in an LSM
tree:
    entries/<writer>.parquet          what one committed unit added (one PUT per unit)
    shards/<kk>/<time>-<id>.parquet   compacted answers whose key starts with the hex digits kk,
                                      sorted by key, in row groups of ROW_GROUP_ROWS: a few
                                      small files, merged by size class
    shards/<kk>/run-....parquet       the shard's run: the rest of its answers, in files of
                                      MAX_FILE_ROWS with disjoint key ranges named in their
                                      file names (pipelines/cache/runs.py)
Compaction (pipelines/cache/compaction.py) moves entries into shards, merges a shard's small
files into larger ones and folds one that reaches MAX_FILE_ROWS into the run; it writes before
it deletes, so an answer is always in one level or another (or briefly two: the same answer
twice is harmless).

A reader keeps in memory only the keys of the entries not yet compacted (bounded by
compaction) and, of the shard files it has read lately, their row groups' key ranges and their
Bloom filters (pipelines/cache/key_filter.py, 64 KB at most): FOOTER_BYTES_KEPT at most. Not the
parsed footers: pyarrow holds one in about 6 times its size on disk, so a read parses its
file's footer again (a few ms). A lookup lists `entries/` (and `shards/` when keys are left),
and reads, of the shards of the keys asked for, the small files whose filter may hold a key and
the one run file whose range holds it, and of those only the row groups whose key range holds
one: its cost grows with the keys looked up, not with the cache.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
import uuid
from collections import OrderedDict
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.cache import runs as cache_runs
from pipelines.cache.answers import ANSWER_COLUMNS, SCHEMA, answer_table, conform_answers, request_key  # noqa: F401
from pipelines.cache.files import FILTER_KEY, PARALLEL_REQUESTS, ROW_GROUP_ROWS, CacheFiles  # noqa: F401 (importable from here)
from pipelines.cache.key_filter import KeyFilter

log = logging.getLogger("spotbatch.cache")

ENTRIES = "entries"
SHARDS = "shards"
SHARD_DIGITS = 2  # 256 shards: at 100M answers, ~400k per shard
# A shard file holds at most this many answers: its footer, its filter (10 bits a key: 64 KB)
# and what a merge or a fold holds in memory stay the same size however large the cache grows.
MAX_FILE_ROWS = 25 * ROW_GROUP_ROWS
FULL_SUFFIX = "-full.parquet"  # a capped file of the layout before runs: folded into the run
FOOTER_BYTES_KEPT = 64 * 1024**2  # what a reader keeps of footers, least recently used out first
# Entries files that make an actor start a compaction in the background. An entries file lives
# until COMPACT_AFTER more are written and a compaction has moved it, and an actor reads the new
# ones each time its lookup looks (ENTRIES_READ_PER_LOOK at most).
COMPACT_AFTER = 64
ENTRIES_READ_PER_LOOK = 64  # new entries files a lookup reads at most: what bounds the fleet's reads
LOOKUP_TRIES = 10  # a file compacted away between a listing and its read: list again


class Footer(NamedTuple):
    """What a reader keeps of a shard file's footer."""
    los: list[str]  # each row group's smallest key
    his: list[str]  # and largest
    filter: KeyFilter | None  # of its keys (None: a file written without one)
    nbytes: int  # what keeping it costs, about


def shard_of(key: str) -> str:
    return key[:SHARD_DIGITS]


class ResponseCache:
    def __init__(self, path: str, storage_options: dict[str, Any] | None = None, *,
                 compact_after: int | None = COMPACT_AFTER):
        self.files = CacheFiles(path, storage_options)
        self.storage_options = storage_options
        self.path = path
        self.compact_after = compact_after  # None: never start a compaction from here
        self._entries: dict[str, list[str]] = {}  # entries file -> its keys, for the files not yet compacted
        self._index: dict[str, tuple[str, int]] = {}  # key -> (entries file, row)
        self._footers: OrderedDict[str, Footer] = OrderedDict()  # shard file -> its footer, least recent first
        self._footer_bytes = 0
        self._unreadable: set[str] = set()
        self._lock = threading.Lock()
        self._compacting: threading.Thread | None = None

    # -- reading --------------------------------------------------------------------------
    def lookup(self, keys: list[str | None]) -> dict[str, dict[str, Any]]:
        """Cached answers for those keys that have one: key -> {output, prompt_tokens, ...}."""
        wanted = {k for k in keys if k is not None}
        answers: dict[str, dict[str, Any]] = {}
        for n in range(LOOKUP_TRIES):
            try:
                self._lookup(wanted - answers.keys(), answers)
                return answers
            except FileNotFoundError:  # compacted away since it was listed: list again, for the rest
                time.sleep(0.01 * n)
        return answers

    def _lookup(self, wanted: set[str], answers: dict[str, dict[str, Any]]) -> None:
        """Into `answers`: entries first, then shards. Compaction writes a shard before it
        deletes the entries, so an answer gone from the first listing is in the second, and a
        file deleted between its listing and its read raises FileNotFoundError: the keys still
        wanted are looked up again."""
        if not wanted:
            return
        with self._lock:
            self._refresh_entries()
            in_entries = {k: self._index[k] for k in wanted if k in self._index}
        by_file: dict[str, list[tuple[str, int]]] = {}
        for key, (f, row) in in_entries.items():
            by_file.setdefault(f, []).append((key, row))
        for f, rows in by_file.items():
            answers.update(self._read_rows(f, rows))
        if wanted <= answers.keys():
            return
        shards = self._list_shards()  # one listing: a few small files per shard, and its run
        by_shard: dict[str, list[str]] = {}
        for key in sorted(wanted - answers.keys()):
            by_shard.setdefault(shard_of(key), []).append(key)

        def in_shard(shard: str) -> None:  # what it finds is kept, should a later read fail
            small, runs = shards[shard]
            keys = by_shard[shard]
            for f in small:  # newest first
                keys = [k for k in keys if k not in answers]
                if not keys:
                    return
                answers.update(self._lookup_file(f, keys))
            for generation in runs:  # newest first; one, but for a moment after two folds at once
                by_file: dict[str, list[str]] = {}
                for k in keys:
                    if k not in answers:
                        by_file.setdefault(cache_runs.file_for(generation, k).path, []).append(k)
                for f, in_file in by_file.items():
                    answers.update(self._lookup_file(f, in_file))

        list(self.files.map(in_shard, [s for s in by_shard if s in shards]))

    def _refresh_entries(self) -> None:
        """Read the keys of entries files new since the last look, ENTRIES_READ_PER_LOOK at
        most; forget compacted ones. A fleet writes entries files faster than one actor's units
        start, and every actor would read every one: the cap bounds what a unit's start reads
        however large the fleet. A file left unread is read at a later look, or its answers are
        found in the shards once compacted; a key asked meanwhile is a miss, answered again,
        never a wrong answer."""
        files = set(self.files.parquet_files(ENTRIES)) - self._unreadable
        gone = self._entries.keys() - files
        if gone:  # compacted into shards: their answers are there now
            for f in gone:
                del self._entries[f]
            self._index = {}
            for f in sorted(self._entries):
                for row, key in enumerate(self._entries[f]):
                    self._index.setdefault(key, (f, row))
        for f in sorted(files - self._entries.keys())[:ENTRIES_READ_PER_LOOK]:  # uuid names: any few
            try:
                keys = pq.read_table(self.files.read(f), columns=["key"]).column(0).to_pylist()
            except FileNotFoundError:
                continue  # compacted between the listing and the read
            except (pa.ArrowException, OSError) as err:  # not Parquet: never written by us whole
                log.warning("cache file %s cannot be read, skipped: %r", f, err)
                self._unreadable.add(f)
                continue
            self._entries[f] = keys
            for row, key in enumerate(keys):
                self._index.setdefault(key, (f, row))

    def _list_shards(self) -> dict[str, tuple[list[str], list[list[cache_runs.RunFile]]]]:
        """Per shard: its small files, newest first, and its run's whole generations."""
        runs, small = cache_runs.split_by_shard(self.files.parquet_files(SHARDS))
        return {s: (sorted(small.get(s, []), reverse=True), cache_runs.generations(runs.get(s, []))[0])
                for s in small.keys() | runs.keys()}

    def _read_rows(self, f: str, rows: list[tuple[str, int]]) -> dict[str, dict[str, Any]]:
        pf = pq.ParquetFile(self.files.read(f))  # files written before a column was added lack it: null
        table = pf.read(columns=[c for c in ANSWER_COLUMNS if c in pf.schema_arrow.names])
        return {key: {c: table.column(c)[row].as_py() if c in table.column_names else None
                      for c in ANSWER_COLUMNS} for key, row in rows}

    def _lookup_file(self, f: str, keys: list[str]) -> dict[str, dict[str, Any]]:
        """The answers in one sorted shard file, reading only the row groups that may hold them."""
        footer = self._footer(f)
        if footer.filter is not None:  # the filter says which keys it cannot hold: no read for them
            keys = [k for k, maybe in zip(keys, footer.filter.may_hold(keys)) if maybe]
        groups = sorted({i for k in keys for i in _groups_holding(footer, k)})
        if not groups:
            return {}
        with self.files.open(f) as fh:
            pf = pq.ParquetFile(fh)
            table = pf.read_row_groups(groups, columns=["key"])
            mask = pc.is_in(table.column("key"), value_set=pa.array(keys, pa.string()))
            if not pc.any(mask).as_py():
                return {}
            hit_groups, offset = [], 0
            for g in groups:  # only the row groups with a hit are read whole
                n = pf.metadata.row_group(g).num_rows
                if pc.any(mask.slice(offset, n)).as_py():
                    hit_groups.append(g)
                offset += n
            names = [c for c in ANSWER_COLUMNS if c in pf.schema_arrow.names]
            found = pf.read_row_groups(hit_groups, columns=["key", *names])
        found = found.filter(pc.is_in(found.column("key"), value_set=pa.array(keys, pa.string())))
        return {row["key"]: {c: row.get(c) for c in ANSWER_COLUMNS} for row in found.to_pylist()}

    def _footer(self, f: str) -> Footer:
        with self._lock:
            if f in self._footers:
                self._footers.move_to_end(f)
                return self._footers[f]
        with self.files.open(f) as fh:
            meta = pq.ParquetFile(fh).metadata
        key = meta.schema.names.index("key")
        stats = [meta.row_group(g).column(key).statistics for g in range(meta.num_row_groups)]
        stored = (meta.metadata or {}).get(FILTER_KEY)
        key_filter = KeyFilter.from_bytes(stored) if stored else None
        los, his = [s.min for s in stats], [s.max for s in stats]
        footer = Footer(los, his, key_filter, (key_filter.nbytes() if key_filter else 0)
                        + sum(len(k) + 50 for k in los + his))  # a str object costs about 50 bytes more
        with self._lock:
            if f not in self._footers:
                self._footers[f] = footer
                self._footer_bytes += footer.nbytes
            while self._footer_bytes > FOOTER_BYTES_KEPT and len(self._footers) > 1:
                self._footer_bytes -= self._footers.popitem(last=False)[1].nbytes
        return footer

    def footer_bytes(self) -> int:
        """What the kept footers cost, about (FOOTER_BYTES_KEPT at most)."""
        with self._lock:
            return self._footer_bytes

    def memory_keys(self) -> int:
        """Keys held in memory (the entries not yet compacted): what bounds a reader's memory."""
        return len(self._index)

    # -- writing --------------------------------------------------------------------------
    def add(self, keys: list[str], answers: dict[str, list[Any]]) -> str | None:
        """Write answers (columns of ANSWER_COLUMNS, aligned with keys; one not given is null)
        as one new entries file, sorted by key."""
        if not keys:
            return None
        table = answer_table(keys, answers)
        table = table.take(pc.sort_indices(table, [("key", "ascending")]))
        written = self.files.write(f"{ENTRIES}/{uuid.uuid4().hex}.parquet", table)
        self._maybe_compact()
        return written

    def _maybe_compact(self) -> None:
        """Start a compaction in the background when the entries pile up (one per process,
        and one per cache at a time: pipelines/cache/compaction.py takes a lease)."""
        if self.compact_after is None or len(self._entries) < self.compact_after:
            return
        with self._lock:
            if self._compacting is not None and self._compacting.is_alive():
                return
            from pipelines.cache.compaction import compact_cache

            def work():
                try:
                    compact_cache(self.path, self.storage_options)
                except Exception as err:  # the cache stays as it was: only lookups cost more
                    log.warning("compacting the response cache failed: %r", err)

            self._compacting = threading.Thread(target=work, daemon=True, name="cache-compaction")
            self._compacting.start()


def _groups_holding(footer: Footer, key: str) -> list[int]:
    """The row groups of a sorted file whose key range holds `key` (a key may straddle two)."""
    los, his = footer.los, footer.his
    found = []
    for g in range(bisect.bisect_left(his, key), len(his)):
        if los[g] > key:
            break
        found.append(g)
    return found
