"""A model's pending units through Ray Data: unit descriptors in blocks, read into rows, through
the engine actors' pool, and the stream left early once the run stops and its actors hold no unit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from pipelines.engine.actor import EngineActor
from pipelines.stops.drain import CHECK_SECONDS, StopDrain
from pipelines.store.output import OutputStore
from pipelines.store.records import Records, beat_seconds
from pipelines.stream.unit_blocks import block_sizes, group
from pipelines.stream.unit_rows import UNITS, read_units

if TYPE_CHECKING:
    from pipelines.stream.model_feed import ModelFeed

LEAVE_STREAM_SECONDS = 30.0  # at most, for Ray Data's thread to hand over the block it fetches


def unit_dataset(descriptors: list[dict], slots: int, sizes: list[int] | None = None):
    """The run's first dataset: unit descriptors in blocks (pipelines/stream/unit_blocks.py cuts them,
    unless `sizes` says how)."""
    import ray.data

    sizes = block_sizes(len(descriptors), slots) if sizes is None else sizes
    units = ray.data.from_items([{UNITS: g} for g in group(descriptors, sizes)], override_num_blocks=len(sizes))
    # A block of units is one block all the way to its engine actor: never split by size (Ray
    # Data splits a UDF's output above target_max_block_size, 128 MiB by default, and makes one
    # output block per input block without it), or a unit's halves could reach two actors and
    # neither could commit it whole. Units are bounded by compute.tokens_per_unit, blocks by
    # pipelines/stream/unit_blocks.py.
    units.context.target_max_block_size = None
    return units


def rows_through_ray_data(feed: ModelFeed, stopped: Callable[[], bool]) -> Iterator[dict]:
    """The summary rows of `feed`'s units, through Ray Data's pool of engine actors. Once
    `stopped()`, the stream is left as soon as its actors hold no unit (pipelines/stops/drain.py)."""
    spec, resources, run_id = feed.spec, feed.resources, feed.engine_args["run_id"]
    units = unit_dataset(feed.descriptors, resources.max_actors * resources.units_in_flight)
    unit_rows = units.map_batches(read_units, fn_kwargs={"spec_data": feed.spec_data, "run_id": run_id},
                                  batch_size=1, batch_format="pyarrow")
    results = unit_rows.map_batches(
        EngineActor,
        fn_constructor_kwargs=feed.engine_args,
        batch_size=None,
        batch_format="pyarrow",
        **resources.map_batches_options(),
    )
    drain = StopDrain(Records(OutputStore(spec.output.path, spec.output.storage_options)), run_id,
                      check_seconds=max(CHECK_SECONDS, beat_seconds(resources.max_actors) / 5))
    others = fetching_threads()  # a user's own Ray Data iterations in this process, say
    rows = iter(results.iter_rows())
    for row in rows:
        drain.seen(row)
        yield row
        if stopped() and drain.may_leave():  # the units Ray Data still holds would only be skipped
            leave_stream(rows, fetching_threads() - others)
            return


def fetching_threads() -> set[threading.Thread]:
    """Ray Data's threads that fetch an iteration's blocks (ray.data's block_batching/util.py)."""
    return {t for t in threading.enumerate() if t.name == "iter_threaded"}


def leave_stream(rows, threads: set[threading.Thread]) -> None:
    """Leave Ray Data's stream before its end: close it (Ray Data shuts its execution down, with
    its actors), then wait for its fetching `threads`, which would otherwise touch Ray after the
    session ends (and Ray ends the process, exit 1)."""
    rows.close()
    for thread in threads:
        thread.join(timeout=LEAVE_STREAM_SECONDS)
