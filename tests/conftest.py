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


@pytest.fixture(autouse=True)
def engine_facts_of_its_own(tmp_path, monkeypatch):
    """What earlier runs measured moves the compile choice (pipelines/engine/facts.py): each test
    keeps its own, never this machine's or another test's."""
    monkeypatch.setenv("SPOTBATCH_FACTS", str(tmp_path / "engine-facts.json"))


@pytest.fixture(autouse=True)
def no_kept_local_ray(tmp_path, monkeypatch):
    """A run with no address joins the local Ray `spotbatch up` keeps (cluster/local_ray.py): a
    developer's own must never capture a test's runs."""
    monkeypatch.setenv("SPOTBATCH_LOCAL_RAY", str(tmp_path / "local-ray.json"))


@pytest.fixture(autouse=True)
def niceness_is_left_alone():
    """A test that renices the test process (`spotbatch run` in process, say) would leave every
    later test at that niceness, and the CPU-priority tests would then check nothing."""
    before = os.getpriority(os.PRIO_PROCESS, 0)
    yield
    after = os.getpriority(os.PRIO_PROCESS, 0)
    assert after == before, f"the test changed the test process's niceness from {before} to {after}"


@pytest.fixture
def cli_console():
    """spotbatch's lines shown as the CLI shows them (pipelines/log.py: INFO on stdout, warnings
    on stderr), for a test that calls library code directly and reads the console with capsys."""
    from pipelines.log import cli_console

    with cli_console():
        yield


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    from cluster.models.builtin import prepare_model

    return prepare_model("tiny-random")


@pytest.fixture(scope="session")
def smollm2() -> Path:
    from cluster.models.builtin import prepare_model

    return prepare_model("smollm2-135m")


@pytest.fixture(scope="session")
def minilm() -> Path:
    """The built-in embedding model (sentence-transformers' all-MiniLM-L6-v2 folder)."""
    from cluster.models.builtin import prepare_model

    return prepare_model("all-minilm-l6-v2")


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


def commit_by_hand(store, plan, units=None) -> None:
    """Results committed for `units` (default: all of the plan's) without an engine, as a run
    whose engine answered "a" to every row would have committed them; the input's ids are its
    row numbers (one shard of ids 0, 1, 2, ...)."""
    from operators.generate import RESULT_SCHEMA, empty_results

    for unit in plan.units if units is None else units:
        ids = pa.array(range(unit.start, unit.stop), pa.int64())
        n = len(ids)
        cols = {**empty_results([None] * n), "output": ["a"] * n, "prompt_tokens": [1] * n,
                "completion_tokens": [1] * n, "finish_reason": ["stop"] * n, "served_from": ["engine"] * n}
        table = pa.table({"id": ids, **{f.name: pa.array(cols[f.name], f.type) for f in RESULT_SCHEMA},
                          "model": ["m"] * n, "spec_fingerprint": [plan.fingerprint] * n})
        store.commit(unit.unit_id, table, {"rows": n})


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 endpoint on loopback (moto_server), stopped by PID; yields fsspec options."""
    from jobs.bench.s3_requests import moto_server, storage_options

    with moto_server() as endpoint:
        yield storage_options(endpoint)


FTP_USER, FTP_PASSWORD = "spotbatch", "ftp-Password-Secret-0123456789"


@pytest.fixture
def ftp_server(tmp_path):
    """A real FTP server on loopback (pyftpdlib, in a thread of this process) serving a folder
    of this test's, for user FTP_USER with password FTP_PASSWORD; yields (root folder, the URL
    of that root with the user and password in it, as fsspec reads them)."""
    import threading

    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import ThreadedFTPServer

    root = tmp_path / "ftp"
    root.mkdir()
    authorizer = DummyAuthorizer()
    authorizer.add_user(FTP_USER, FTP_PASSWORD, str(root), perm="elr")  # read only
    handler = type("Handler", (FTPHandler,), {"authorizer": authorizer})
    server = ThreadedFTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"timeout": 0.5, "handle_exit": False},
                              daemon=True)
    thread.start()
    try:
        yield root, f"ftp://{FTP_USER}:{FTP_PASSWORD}@127.0.0.1:{server.socket.getsockname()[1]}"
    finally:
        server.close_all()
        thread.join(timeout=10)
