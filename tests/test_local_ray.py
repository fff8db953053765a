"""`spotbatch up` keeps a local Ray that later runs join with no address; `spotbatch down`
stops exactly its processes; a stale record never sends a run to a dead cluster."""

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from cluster import local_ray
from tests.helpers import spotbatch, write_spec
from tests.test_console import job


def ray_node_ids(address: str) -> list[str]:
    code = f"import ray; ray.init(address={address!r}); print(*[n['NodeID'] for n in ray.nodes()])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return out.stdout.split()


@pytest.mark.engine
def test_runs_join_the_kept_ray_and_down_stops_only_its_processes(tmp_path, tiny_model):
    started = spotbatch("up", "--num-cpus", "2")
    assert started.returncode == 0, started.stderr[-3000:]
    state = json.loads(local_ray.state_path().read_text())
    try:
        assert state["address"] in started.stdout and "is up" in started.stdout
        again = spotbatch("up")
        assert "was already up" in again.stdout and json.loads(local_ray.state_path().read_text()) == state
        (node,) = ray_node_ids(state["address"])

        for name in ("first", "second"):  # each run a fresh process with no address, as from cron
            spec = write_spec(tmp_path / f"{name}.yaml", job(tmp_path, name))
            ran = spotbatch("run", str(spec))
            assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-3000:]
            assert f"the local one `spotbatch up` started ({state['address']}" in ran.stdout
            from pipelines.store.output import OutputStore
            from pipelines.store.records import Records

            actors = Records(OutputStore(str(tmp_path / name))).actors().values()
            assert {a["node_id"] for a in actors} == {node}  # its engines ran on the kept Ray
        assert local_ray.running() == state  # a run that joined leaves it up
        processes = [psutil.Process(state["pid"]), *psutil.Process(state["pid"]).children(recursive=True)]
        assert any("gcs_server" in " ".join(p.cmdline()) for p in processes)
    finally:
        stopped = spotbatch("down")
    assert stopped.returncode == 0 and state["address"] in stopped.stdout, stopped.stderr[-2000:]
    gone, alive = psutil.wait_procs(processes, timeout=15)
    assert not alive, [p.cmdline() for p in alive]
    assert not local_ray.state_path().exists() and not Path(state["temp_dir"]).exists()
    assert "no local Ray" in spotbatch("down").stdout


def test_a_stale_record_is_dropped_not_joined(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = tmp_path / "sb-ray-up-gone"
    folder.mkdir()
    local_ray.state_path().write_text(json.dumps({"address": "127.0.0.1:1", "pid": dead.pid, "pid_started": 0.0,
                                                  "temp_dir": str(folder), "num_cpus": 1, "started_at": 0}))
    assert local_ray.running() is None
    assert not local_ray.state_path().exists() and not folder.exists()
    assert local_ray.down() is None


def test_a_live_process_that_is_not_ours_is_not_joined(tmp_path):
    """The PID was reused (a reboot): the start time tells, and nothing is signalled."""
    me = psutil.Process()
    record = json.dumps({"address": "127.0.0.1:1", "pid": me.pid, "pid_started": me.create_time() - 1,
                         "temp_dir": "", "num_cpus": 1, "started_at": 0})
    local_ray.state_path().write_text(record)
    assert local_ray.running() is None and not local_ray.state_path().exists()
    local_ray.state_path().write_text(record)
    assert local_ray.down()["pid"] == me.pid and me.is_running()
    assert not local_ray.state_path().exists()
