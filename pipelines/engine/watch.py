"""What an engine actor watches on its own threads while it serves (pipelines/engine/actor.py):
its beats, its run's stop (to say it is quiet), and a spot termination notice."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from cluster.preemption import check_notice, drain_this_node
from pipelines.engine.binding import RunBinding
from pipelines.engine.in_hand import UnitsInHand
from pipelines.store.record_types import BeatRecord


class Beats:
    """Says the engine is alive; the last beat bounds when a preempted actor stopped costing."""

    def __init__(self, binding: Callable[[], RunBinding], requests: Callable[[], dict[str, int]]):
        self.binding = binding  # the run served now: an earlier run's record stopped at its last beat
        self.requests = requests  # the actor's S3 requests for its current run

    def forever(self, engine_stats: Callable[[], dict[str, Any]]) -> None:
        while True:
            try:
                self.once({"engine": engine_stats()})
            except Exception:  # a missed beat only makes the estimate of its end earlier
                pass
            time.sleep(self.binding().beat_seconds)

    def once(self, info: dict[str, Any]) -> None:
        bound = self.binding()
        bound.records.actor_beat(bound.actor_id, BeatRecord(time=time.time(), period=bound.beat_seconds, **info,
                                                            storage_requests=self.requests()))


def quiet_after_stop(units: UnitsInHand, bound: RunBinding, period: float, serving: Callable[[], RunBinding]) -> None:
    """Once run `bound` is asked to stop and no unit is in hand, say so (pipelines/stops/drain.py):
    from then on this engine claims no unit of it (a claim reads the stop afresh), and the
    driver may leave Ray Data's stream once the rows of the units it held have arrived.
    Watches while `serving()` is still `bound`."""
    while serving() is bound:
        if bound.protocol.stopped():
            held = units.go_quiet(bound.actor_id)
            try:
                bound.records.actor_quiet(bound.run_id, bound.actor_id, held)
            except Exception:  # the driver waits for our beats to stop instead
                pass
            return
        time.sleep(period)


def watch_notice(config: Any, units: UnitsInHand, beats: Beats) -> None:
    """On a spot termination notice (`config`: the spec's compute.preemption_notice): tell Ray
    to place nothing new on this node, finish and commit the units in hand, then leave. Ray
    restarts the actor on another node and sends it the units this one had queued: nothing
    in flight is lost."""
    while (notice := check_notice(config.kind, config.url, beats.binding().node.node_id)) is None:
        time.sleep(config.poll_seconds)
    units.draining = True
    beats.once({"notice": notice.detail})
    drain_this_node(f"spot notice ({notice.source}): {notice.detail}", config.window_seconds)
    with units.idle:
        units.idle.wait_for(lambda: units.count == 0)
        beats.once({"drained": notice.detail})
        os._exit(0)  # not ray.actor.exit_actor(): an intended exit would not be restarted
