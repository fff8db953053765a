"""The names inside an output folder (pipelines/store/output.py describes the layout)."""

from __future__ import annotations

import re

MANIFEST = "_spotbatch/manifest.json"
# The run's records (pipelines/store/records.py writes them); they move with their results.
ATTEMPTS, ACTORS, RUNS, STOP = "_spotbatch/attempts", "_spotbatch/actors", "_spotbatch/runs", "_spotbatch/stop"
FOLDED = "_spotbatch/folded"  # records of ended runs, folded into one file per compaction
LOADED = "_spotbatch/loaded"  # per model, the dtype the run's first engine loaded: every later one loads it too
SUPERSEDED = "_spotbatch/superseded"
SUPERSEDING = "_spotbatch/superseding.json"  # a --new-run's move in progress: where it goes
FINGERPRINT = "_spotbatch/fingerprint"  # the manifest's fingerprint alone, read before each commit
REPLACED = "_spotbatch/replaced"  # unit results replaced by a merge of retried rows
STAGING = ".staging"
PART_PREFIX = "part-"
STATS_KEY = b"spotbatch.unit"
PROBE = "_spotbatch/probe"  # markers of the exclusive-create check, removed after it
UNIT_ID = re.compile(r"[A-Za-z0-9_.-]+")  # what a unit id may be: it names files


def part_name(unit_id: str) -> str:
    return f"{PART_PREFIX}{unit_id}.parquet"
