"""Shared test fixtures: a private Ray cluster, the offline models, Parquet input makers.

Ray test clusters follow shared/ENVIRONMENT.md: their own short temp dir, token auth off,
an explicit address (never "auto"), and teardown of exactly the processes they started.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.ray_nodes import LocalCluster

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    from operators.model_store import prepare_model

    return prepare_model("tiny-random")


@pytest.fixture(scope="session")
def smollm2() -> Path:
    from operators.model_store import prepare_model

    return prepare_model("smollm2-135m")


@pytest.fixture(scope="session")
def ray_cluster():
    """A one-node Ray cluster for the session, this process its driver; yields its address."""
    import ray

    cluster = LocalCluster(head_cpus=4)
    try:
        ray.init(address=cluster.address)
        yield cluster.address
    finally:
        ray.shutdown()
        cluster.shutdown()


def write_shards(folder: Path, rows: list[dict], shards: int, schema: pa.Schema | None = None) -> list[Path]:
    """Rows dealt round-robin into `shards` Parquet files; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(shards):
        path = folder / f"shard-{s:03d}.parquet"
        pq.write_table(pa.Table.from_pylist(rows[s::shards], schema=schema), path)
        paths.append(path)
    return paths
