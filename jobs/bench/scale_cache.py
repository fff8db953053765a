"""The scale simulation's cache figures (jobs/bench/scale.py): a compacted cache of N synthetic
answers, built as compaction lays it out, one unit's lookup against it, and one fold of new
answers into a shard's run. Each probe runs in a fresh process (jobs/bench/scale_probes.py)."""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

LOOKUP_HITS = LOOKUP_MISSES = 100  # one unit's keys


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def probe_cache(path: str, size: int) -> dict[str, Any]:
    """A unit's lookup against a compacted cache of `size` answers: cold (a fresh reader) and
    warm (its row-group key ranges kept), with the files it opened."""
    from pipelines.cache.response_cache import CacheFiles, ResponseCache

    keys = pq.read_table(f"{path}/probe_keys.parquet").column(0).to_pylist()
    opened: list[str] = []
    real_open = CacheFiles.open
    CacheFiles.open = lambda self, p: opened.append(p) or real_open(self, p)
    cache = ResponseCache(path, compact_after=None)
    figures: dict[str, Any] = {}
    per_lookup = LOOKUP_HITS + LOOKUP_MISSES
    for label, batch in (("cold", keys[:per_lookup]), ("warm", keys[per_lookup:])):
        opened.clear()
        started = time.monotonic()
        found = cache.lookup(batch)
        figures[f"{label}_seconds"] = time.monotonic() - started
        figures[f"{label}_files_opened"] = len(opened)
        assert len(found) == LOOKUP_HITS, (label, len(found))
    return {"answers": size, **figures, "keys_in_memory": cache.memory_keys(), "footer_bytes": cache.footer_bytes(),
            "peak_rss_mb": peak_rss_mb(), "rss_trimmed_mb": rss_trimmed_mb()}


def probe_fold(path: str, size: int) -> dict[str, Any]:
    """One fold of MAX_FILE_ROWS new answers into shard 00's run, on a copy of the shard (the
    cache stays as built): its seconds, and its peak memory (Arrow's, in a fresh process)."""
    import shutil

    import numpy as np

    from pipelines.cache import runs as cache_runs
    from pipelines.cache.compaction import fold_into_run
    from pipelines.cache.response_cache import MAX_FILE_ROWS, SHARDS, CacheFiles, answer_table

    work = Path(tempfile.mkdtemp(prefix="fold-", dir=Path(path).parent))
    try:
        shutil.copytree(Path(path) / SHARDS / "00", work / SHARDS / "00")
        run_before = len(cache_runs.by_shard(CacheFiles(str(work)).parquet_files(SHARDS)).get("00", []))
        tail = np.frombuffer(b"0123456789abcdef", np.uint8)[np.random.default_rng(7).integers(
            0, 16, size=(MAX_FILE_ROWS, 62))].tobytes()
        keys = sorted("00" + tail[i * 62:(i + 1) * 62].decode() for i in range(MAX_FILE_ROWS))
        table = answer_table(keys, {"output": ["a new answer"] * len(keys), "prompt_tokens": [20] * len(keys),
                                    "completion_tokens": [6] * len(keys), "finish_reason": ["stop"] * len(keys)})
        before = peak_rss_mb()
        started = time.monotonic()
        written = fold_into_run(CacheFiles(str(work)), "00", table)
        seconds = time.monotonic() - started
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # Arrow's own peak is what the fold held; RSS also keeps what the allocator was handed back
    return {"answers": size, "fold_answers": len(keys), "fold_seconds": seconds, "run_files_before": run_before,
            "run_files_after": written, "fold_added_peak_mb": peak_rss_mb() - before,
            "fold_arrow_peak_mb": pa.default_memory_pool().max_memory() / 1e6}


def rss_trimmed_mb() -> float | None:
    """This process's RSS once glibc has handed its freed memory back: what it still holds
    (a peak counts memory freed but kept by the allocator's per-thread arenas)."""
    import ctypes

    import psutil

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        return None
    return psutil.Process().memory_info().rss / 1e6


def build_cache(path: Path, size: int) -> None:
    """A compacted cache of `size` synthetic answers, laid out as compaction lays it out (a
    shard's answers in one small file below MAX_FILE_ROWS, in its run above; not the few small
    files a live shard also has, MERGE_FANIN - 1 a size class at most), and the keys a probe
    looks up (half in the cache, half not)."""
    import numpy as np

    from pipelines.cache.compaction import write_shard_files
    from pipelines.cache.response_cache import CacheFiles, answer_table

    if (path / "probe_keys.parquet").exists():
        return
    rng = np.random.default_rng(size)
    hexdigits = np.frombuffer(b"0123456789abcdef", np.uint8)
    files = CacheFiles(str(path))
    shards = 16 ** 2
    hits: list[str] = []
    for s in range(shards):
        n = size // shards + (1 if s < size % shards else 0)
        tail = hexdigits[rng.integers(0, 16, size=(n, 62))].tobytes()
        keys = sorted(f"{s:02x}" + tail[i * 62:(i + 1) * 62].decode() for i in range(n))
        write_shard_files(files, f"{s:02x}", f"{0:020d}-synthetic", answer_table(keys, {
            "output": ["an answer of a few words"] * n, "prompt_tokens": [20] * n, "completion_tokens": [6] * n,
            "finish_reason": ["stop"] * n}))
        hits.extend(keys[:: max(1, n // 2)][:2])
    picked = [hits[i] for i in rng.choice(len(hits), 2 * LOOKUP_HITS, replace=False)]
    misses = ["".join(rng.choice(list("0123456789abcdef"), 64)) for _ in range(2 * LOOKUP_MISSES)]
    probe = picked[:LOOKUP_HITS] + misses[:LOOKUP_MISSES] + picked[LOOKUP_HITS:] + misses[LOOKUP_MISSES:]
    pq.write_table(pa.table({"key": probe}), path / "probe_keys.parquet")

