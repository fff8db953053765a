"""--new-run: move the run an output holds aside and start over, never while that run works.

`--new-run` always starts over, whether or not the spec changed: the output's results, records
and manifest go under _spotbatch/superseded/ (pipelines/store/output.py), never deleted, and a
new run is planned. It is refused while the engine actors of a run on the output still beat,
or their commits would land beside the new run's.
"""

from __future__ import annotations

import time

from pipelines.store.output import OutputError, OutputStore
from pipelines.store.records import HEARTBEAT_SECONDS, Records, is_fresh


def start_over(store: OutputStore) -> str | None:
    """Move the output's run aside; returns where it went (None: the output holds no run).
    Refused (OutputError) while that run's actors beat."""
    refuse_while_running(store)
    manifest = store.read_manifest()
    if manifest is None:
        return None
    return store.supersede(manifest["fingerprint"])


def refuse_while_running(store: OutputStore) -> None:
    """--new-run moves a run's results aside (and rewrites the input read from batch files):
    never while that run's actors still work on them, or their commits would land under the
    new run's manifest."""
    records = Records(store)
    now = time.time()
    runs = records.runs()
    ended = {r for r, record in runs.items() if record.get("ended_at") is not None}  # actors released with it
    actors = [a for a in records.actors().values()
              if is_fresh(a["last_seen"], now, a.get("beat_seconds")) and a.get("run_id") not in ended]
    live = sorted({a.get("run_id") for a in actors})
    if not live:
        return
    wait = 2 * max(a.get("beat_seconds") or HEARTBEAT_SECONDS for a in actors)
    run = runs.get(live[0]) or {}
    driver = f" (driver pid {run['pid']} on {run['host']})" if run.get("pid") else ""
    raise OutputError(
        f"--new-run refused: run {live[0]}{driver} still has engine actors working on "
        f"{store.url} (their heartbeats are fresh). Stop it first (Ctrl-C in its terminal, "
        f"`kill {run.get('pid', 'PID')}`, or `ray job stop` for a Ray job), wait "
        f"{wait:.0f} s for its actors to stop, then run --new-run again.")
