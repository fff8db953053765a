"""A spot node is killed for real mid-run; the run goes on and the output is exact.

Several Ray nodes on this machine: a head for reading, and spot nodes (custom resource
`spot`) that alone may host engine actors. The node killed is one with a unit in flight, and
every process it started dies at once, as on a preempted instance.
"""

import pyarrow.dataset as ds
import pytest

from jobs.summary import format_cost
from pipelines.ledger import compute_ledger
from pipelines.output import OutputStore
from pipelines.records import Records
from pipelines.status import format_status, run_status
from tests.conftest import write_shards
from tests.helpers import start_spotbatch, wait_until, write_spec
from tests.ray_nodes import LocalCluster

pytestmark = pytest.mark.engine

ROWS = 400


@pytest.fixture
def spot_cluster():
    cluster = LocalCluster(head_cpus=2)
    spot_nodes = [cluster.add_node(cpus=1, resources={"spot": 1}) for _ in range(2)]
    try:
        yield cluster, spot_nodes
    finally:
        cluster.shutdown()


def in_flight(store: OutputStore) -> list[dict]:
    """Start records of attempts that have not ended."""
    return [a["start"] for tries in Records(store).attempts().values() for a in tries.values() if "end" not in a]


def test_killing_a_spot_node_mid_run_loses_nothing_and_redoes_only_its_unit(tmp_path, spot_cluster, tiny_model):
    cluster, spot_nodes = spot_cluster
    write_shards(tmp_path / "in", [{"id": i, "text": f"prompt number {i}"} for i in range(ROWS)], shards=3)
    spec = write_spec(tmp_path / "spec.yaml", {
        "input": {"paths": str(tmp_path / "in"), "prompt_column": "text"},
        "model": {"name": "tiny-random", "max_model_len": 512, "enforce_eager": True},
        "sampling": {"max_tokens": 128},
        # 20 units of 20 rows, seconds each, so the kill lands inside one, not between two
        "compute": {"actors": 2, "spot_resource": "spot", "engine_threads": 1, "tokens_per_unit": 2700},
        "output": {"path": str(tmp_path / "out")},
    })
    log = tmp_path / "run.log"
    proc = start_spotbatch("run", str(spec), "--address", cluster.address, log=log)
    store = OutputStore(str(tmp_path / "out"))
    try:
        wait_until(lambda: len(store.committed_units()) >= 2, 300, "two committed units", proc, log)

        def victim():
            # a spot node whose engine actor is inside a unit right now
            pids = {a["pid"] for a in in_flight(store)}
            head = {p.pid for p in cluster.head.processes()}
            assert not pids & head, "an engine actor ran on the head, which is not a spot node"
            for node in spot_nodes:
                if pids & {p.pid for p in node.processes()}:
                    return node
            return None

        node = wait_until(victim, 120, "a unit in flight on a spot node", proc, log)
        node.kill()
        cluster.add_node(cpus=1, resources={"spot": 1})  # the replacement a spot fleet brings
        assert proc.wait(600) == 0, log.read_text()[-4000:]
    finally:
        proc.kill()

    ids = ds.dataset(str(tmp_path / "out")).to_table().column("id").to_pylist()
    assert len(ids) == ROWS and set(ids) == set(range(ROWS))  # each id exactly once
    status = run_status(str(tmp_path / "out"))
    print(format_status(status))
    assert status.finished and status.rows_done == ROWS
    assert status.attempts_lost >= 1  # the kill did land on work in flight
    # redone work is bounded by what was in flight on the lost node: its one engine actor
    assert status.units_retried <= 1, status

    # the lost attempt shows as waste, priced at spot, and the report still adds up
    ledger = compute_ledger(OutputStore(str(tmp_path / "out")))
    print(format_cost(ledger.summary))
    assert ledger.summary.breakdown_usd["wasted"] > 0
    assert sum(ledger.summary.breakdown_usd.values()) == pytest.approx(ledger.summary.total_usd, rel=1e-9)
    assert sum(ledger.actors.column("usd_total").to_pylist()) == pytest.approx(ledger.summary.total_usd, rel=1e-9)
    assert set(ledger.actors.column("market").to_pylist()) == {"spot"}
    assert ledger.summary.on_demand_usd > ledger.summary.total_usd
