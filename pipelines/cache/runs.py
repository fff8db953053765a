"""A response-cache shard's sorted run: its answers past the small files, in files of disjoint
key ranges, so a key is looked for in one file of it however large the shard grows.

    shards/<kk>/run-<generation>-<i>[L]-<lo>.parquet
      generation  <time_ns:020d>x<6 hex>: a fold (pipelines/cache/compaction.py) writes a whole
                  new generation, then deletes the one it read; newest first, as the small files
      i           the file's place in its generation; L marks the last, so a reader can tell a
                  generation whole (files 0..last all listed) from one still being written
      lo          a fence: every key of file i is >= its lo and < file i+1's lo (file 0's lo is
                  the shard's prefix)
A reader finds a key's file from the listing alone and keeps no index of the run; a file's
footer then tells which row group to read.

>>> fence("ab12ff", "ab1300")
'ab13'
>>> g = [RunFile(f"run-G-0000{i}{'L' if i == 2 else ''}-{lo}.parquet", "G", i, i == 2, lo)
...      for i, lo in enumerate(["ab", "ab4", "ab9c"])]
>>> [file_for(g, k).index for k in ("ab00", "ab3f", "ab40", "ab9b", "ab9c", "abff")]
[0, 0, 1, 1, 2, 2]
"""

from __future__ import annotations

import bisect
import time
import uuid
from typing import NamedTuple

RUN_PREFIX = "run-"
LAST_MARK = "L"


class RunFile(NamedTuple):
    path: str
    generation: str
    index: int
    last: bool
    lo: str


def new_generation() -> str:
    return f"{time.time_ns():020d}x{uuid.uuid4().hex[:6]}"


def run_name(generation: str, index: int, last: bool, lo: str) -> str:
    return f"{RUN_PREFIX}{generation}-{index:05d}{LAST_MARK if last else ''}-{lo}.parquet"


def parse(path: str) -> RunFile | None:
    """The run file `path` names, or None for a shard's small file."""
    name = path.rsplit("/", 1)[-1]
    if not name.startswith(RUN_PREFIX) or not name.endswith(".parquet"):
        return None
    try:
        generation, place, lo = name[len(RUN_PREFIX):-len(".parquet")].split("-")
        last = place.endswith(LAST_MARK)
        return RunFile(path, generation, int(place.rstrip(LAST_MARK)), last, lo)
    except ValueError:  # not a name this module wrote
        return None


def split_by_shard(paths: list[str]) -> tuple[dict[str, list[RunFile]], dict[str, list[str]]]:
    """A listing of `shards/`, by shard: its run files, and its other (small) files. Each name
    is parsed once."""
    runs: dict[str, list[RunFile]] = {}
    others: dict[str, list[str]] = {}
    for path in paths:
        shard = path.rsplit("/", 2)[-2]
        run_file = parse(path)
        if run_file:
            runs.setdefault(shard, []).append(run_file)
        else:
            others.setdefault(shard, []).append(path)
    return runs, others


def by_shard(paths: list[str]) -> dict[str, list[RunFile]]:
    """The run files among a listing of `shards/`, by shard."""
    return split_by_shard(paths)[0]


def generation_time_ns(generation: str) -> int:
    return int(generation.split("x", 1)[0])


def generations(files: list[RunFile]) -> tuple[list[list[RunFile]], list[list[RunFile]]]:
    """(whole generations, newest first, each in key order; generations not whole: being
    written, or left by a fold that died)."""
    by_generation: dict[str, dict[int, RunFile]] = {}
    for f in files:
        by_generation.setdefault(f.generation, {})[f.index] = f
    whole, partial = [], []
    for generation in sorted(by_generation, reverse=True):
        parts = by_generation[generation]
        ends = [i for i, f in parts.items() if f.last]
        if len(ends) == 1 and set(parts) == set(range(ends[0] + 1)):
            whole.append([parts[i] for i in range(ends[0] + 1)])
        else:
            partial.append(sorted(parts.values(), key=lambda f: f.index))
    return whole, partial


def file_for(generation: list[RunFile], key: str) -> RunFile:
    """The one file of a whole generation whose key range holds `key`."""
    return generation[max(0, bisect.bisect_right([f.lo for f in generation], key) - 1)]


def fence(previous_last: str, first: str) -> str:
    """The shortest prefix of `first` still above `previous_last`: file names stay short."""
    for n in range(1, len(first) + 1):
        if first[:n] > previous_last:
            return first[:n]
    return first
