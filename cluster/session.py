"""Where a run finds its Ray cluster: one it is given, the local one `spotbatch up` keeps
(cluster/local_ray.py), or a private local one it starts.

A private cluster gets its own temp dir and no dashboard, and is shut down (by the processes
it started, never `ray stop`) when the run ends. A Ray already initialised by the caller (a
notebook) is used as it is and left running.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import ray

from cluster.console import Console
from cluster.local_ray import OBJECT_STORE_BYTES, running

log = logging.getLogger("spotbatch.ray")


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None,
                console: Console | None = None, keep: bool = False) -> Iterator[str]:
    """Yields the address of the cluster in use. With a `console`, the lines Ray forwards from
    the workers go where it says (cluster/console.py). With `keep`, a Ray this starts stays up
    until the process exits, for the warm engines it holds (pipelines/engine/warm_pool.py)."""
    if ray.is_initialized():
        if console is not None:
            console.capture_workers()
        yield ray.get_runtime_context().gcs_address
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if not address and (kept := running()):
        address = kept["address"]
        log.info("Ray: the local one `spotbatch up` started (%s; `spotbatch down` stops it)", address)
    if address:
        ray.init(address=address, log_to_driver=True)
        if console is not None:
            console.capture_workers()
        try:
            yield address
        finally:
            _end(keep)
        return
    # Short path: Ray's socket names must fit in 107 bytes.
    temp_dir = tempfile.mkdtemp(prefix="sb-ray-", dir="/tmp")
    ray.init(
        address="local",
        _temp_dir=temp_dir,
        include_dashboard=False,
        num_cpus=num_cpus or os.cpu_count(),
        object_store_memory=OBJECT_STORE_BYTES,
    )
    if console is not None:
        console.capture_workers()
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        _end(keep, temp_dir)


def _end(keep: bool, temp_dir: str | None = None) -> None:
    def end() -> None:
        ray.shutdown()
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)

    if keep:
        # At exit, before the warm pool's release (atexit runs the last registered first): the
        # pool's actors go with Ray, and the pool then only records their release.
        atexit.register(end)
    else:
        end()
