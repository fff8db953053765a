"""A chaos trial: two spot nodes killed at random points of a run, each replaced, then the
driver killed, and the same command run again. Every id must come back exactly once, and
every unit be committed once (real engine, real Ray nodes, real kills)."""

import os
import random
import signal

import pytest

from pipelines.store.output import OutputStore
from pipelines.store.records import Records
from pipelines.store.status import run_status
from tests.helpers import spotbatch, wait_until
from tests.test_preemption import check_output, spot_cluster, start_run  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.engine, pytest.mark.cluster]


# One seed in the suite (a minute each); SPOTBATCH_CHAOS_SEEDS="7,2026,..." runs more.
SEEDS = [int(s) for s in os.environ.get("SPOTBATCH_CHAOS_SEEDS", "7").split(",")]


@pytest.mark.parametrize("seed", SEEDS)
def test_random_node_kills_then_a_driver_kill_then_the_same_command_gives_every_id_once(
        tmp_path, spot_cluster, tiny_model, seed):  # noqa: F811
    rng = random.Random(seed)
    cluster, spot_nodes = spot_cluster
    proc, log = start_run(tmp_path, cluster)  # 20 units, 2 engine actors on 2 spot nodes
    store = OutputStore(str(tmp_path / "out"))
    live = list(spot_nodes)
    done = 0
    try:
        for _ in range(2):
            done += rng.randint(1, 4)
            wait_until(lambda n=done: len(store.committed_units()) >= n, 300, f"{done} committed units", proc, log)
            victim = live.pop(rng.randrange(len(live)))
            victim.kill()
            live.append(cluster.add_node(cpus=1, resources={"spot": 1}))  # the fleet replaces it
            print(f"seed {seed}: killed a spot node after {done} units")
        done += rng.randint(1, 3)
        wait_until(lambda: len(store.committed_units()) >= done, 300, f"{done} committed units", proc, log)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        print(f"seed {seed}: killed the driver after {done} units")
    finally:
        proc.kill()
    assert not run_status(str(tmp_path / "out")).finished, "the driver was killed too late to test anything"

    again = spotbatch("run", str(tmp_path / "spec.yaml"), "--address", cluster.address, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    status, _ = check_output(tmp_path)  # each id exactly once, the ledger adds up
    # an attempt killed between its commit and its end record is known by the unit's footer
    outcomes = [a["end"]["outcome"] for tries in Records(store).settled_attempts().values()
                for a in tries.values() if "end" in a]
    assert outcomes.count("committed") == status.units_total  # each unit committed by exactly one attempt
