"""`ray job submit` on a running cluster, as users run it; re-submitting resumes."""

import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from tests.conftest import write_shards
from tests.helpers import ROOT, spotbatch_env, write_spec
from tests.ray_nodes import LocalCluster

pytestmark = pytest.mark.engine

RAY = str(Path(sys.executable).with_name("ray"))


@pytest.fixture
def head_with_dashboard():
    cluster = LocalCluster(head_cpus=4, dashboard=True)
    try:
        yield cluster
    finally:
        cluster.shutdown()


def submit(cluster: LocalCluster, spec: Path, *args: str) -> subprocess.CompletedProcess:
    """From a checkout, shipped with `--working-dir`."""
    cmd = [RAY, "job", "submit", "--address", cluster.dashboard_url, "--working-dir", ".",
           "--", "python", "-m", "jobs.run", str(spec), *args]
    return subprocess.run(cmd, cwd=ROOT, env=spotbatch_env(), capture_output=True, text=True, timeout=600)


def submit_installed(cluster: LocalCluster, spec: Path, *args: str) -> subprocess.CompletedProcess:
    """The installed package's command, from a folder that is not the checkout, no `--working-dir`:
    as on a cluster image built with `pip install spotbatch`."""
    cmd = [RAY, "job", "submit", "--address", cluster.dashboard_url, "--", "spotbatch", "run", str(spec), *args]
    return subprocess.run(cmd, cwd=spec.parent, env=spotbatch_env(), capture_output=True, text=True, timeout=600)


def test_ray_job_submit_runs_the_batch_and_resubmitting_resumes(tmp_path, head_with_dashboard, tiny_model):
    write_shards(tmp_path / "in", [{"id": i, "text": f"prompt number {i}"} for i in range(40)], shards=2)
    spec = write_spec(tmp_path / "spec.yaml", {
        "input": {"paths": str(tmp_path / "in"), "prompt_column": "text"},
        "model": {"name": "tiny-random", "max_model_len": 512, "enforce_eager": True},
        "sampling": {"max_tokens": 16},
        "output": {"path": str(tmp_path / "out" / "{date}")},
    })
    first = submit_installed(head_with_dashboard, spec, "--date", "2026-11-21")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "succeeded" in first.stdout
    assert "finished: 40 rows" in first.stdout
    ids = ds.dataset(str(tmp_path / "out" / "2026-11-21")).to_table().column("id").to_pylist()
    assert sorted(ids) == list(range(40))

    again = submit(head_with_dashboard, spec, "--date", "2026-11-21")
    assert again.returncode == 0 and "nothing to do" in again.stdout
