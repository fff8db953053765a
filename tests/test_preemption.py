"""Spot nodes taken away for real mid-run: the run goes on and the output is exact.

Several Ray nodes on this machine: a head for reading, and spot nodes (custom resource
`spot`) that alone may host engine actors. The node taken is one with a unit in flight, and
every process it started dies at once, as on a preempted instance; with a termination notice
served first, its actor drains instead, and nothing in flight is lost.
"""

import http.server
import signal
import threading

import psutil
import pyarrow.dataset as ds
import pytest

from jobs.summary import format_cost
from pipelines.store.ledger import compute_ledger
from pipelines.store.output import OutputStore
from pipelines.store.records import Records
from pipelines.store.status import format_status, run_status
from tests.conftest import write_shards
from tests.helpers import start_spotbatch, wait_until, write_spec
from tests.ray_nodes import LocalCluster

pytestmark = [pytest.mark.engine, pytest.mark.cluster]

ROWS = 400


@pytest.fixture
def spot_cluster():
    cluster = LocalCluster(head_cpus=2)
    spot_nodes = [cluster.add_node(cpus=1, resources={"spot": 1}) for _ in range(2)]
    try:
        yield cluster, spot_nodes
    finally:
        cluster.shutdown()


@pytest.fixture
def notice_server():
    """Answers /notice/<node id> with 200 for the nodes in `noticed`, 404 for the others."""
    noticed: set[str] = set()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            node = self.path.rsplit("/", 1)[-1]
            self.send_response(200 if node in noticed else 404)
            self.end_headers()
            if node in noticed:
                self.wfile.write(b"terminate")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/notice/{{node_id}}", noticed
    server.shutdown()


def start_run(tmp_path, cluster, **compute):
    write_shards(tmp_path / "in", [{"id": i, "text": f"prompt number {i}"} for i in range(ROWS)], shards=3)
    spec = write_spec(tmp_path / "spec.yaml", {
        "input": {"paths": str(tmp_path / "in"), "prompt_column": "text"},
        "model": {"name": "tiny-random", "max_model_len": 512, "enforce_eager": True},
        "sampling": {"max_tokens": 128},
        # 20 units of 20 rows, seconds each, so the event lands inside one, not between two
        "compute": {"actors": 2, "spot_resource": "spot", "engine_threads": 1, "tokens_per_unit": 2700,
                    "units_in_flight": 2, **compute},
        "output": {"path": str(tmp_path / "out")},
    })
    log = tmp_path / "run.log"
    return start_spotbatch("run", str(spec), "--address", cluster.address, log=log), log


def unit_in_flight(store, cluster, spot_nodes):
    """(unit, attempt, start record, node) of an attempt under way on a spot node, or None."""
    open_attempts = [(unit, attempt, a["start"]) for unit, tries in Records(store).attempts().items()
                     for attempt, a in tries.items() if "end" not in a]
    head = {p.pid for p in cluster.head.processes()}
    assert not {s["pid"] for _, _, s in open_attempts} & head, "an engine actor ran on the head, not a spot node"
    for unit, attempt, start in open_attempts:
        for node in spot_nodes:
            if start["pid"] in {p.pid for p in node.processes()}:
                return unit, attempt, start, node
    return None


def freeze_unit_in_flight(store, cluster, spot_nodes):
    """The node of an attempt under way, frozen (SIGSTOP) while the attempt is still open, or None.

    Seen open is not enough: the unit may end between that look and the kill, and then the kill
    lands on nothing (a CI run caught it). A frozen node writes nothing more, so a second look
    settles it."""
    found = unit_in_flight(store, cluster, spot_nodes)
    if not found:
        return None
    unit, attempt, _, node = found
    node.kill(signal.SIGSTOP)
    if "end" in Records(store).unit_attempts(unit).get(attempt, {}):
        node.kill(signal.SIGCONT)
        return None
    return node


def check_output(tmp_path):
    ids = ds.dataset(str(tmp_path / "out")).to_table().column("id").to_pylist()
    assert len(ids) == ROWS and set(ids) == set(range(ROWS))  # each id exactly once
    status = run_status(str(tmp_path / "out"))
    ledger = compute_ledger(OutputStore(str(tmp_path / "out")))
    print(format_status(status))
    print(format_cost(ledger.summary))
    assert status.finished and status.rows_done == ROWS
    assert sum(ledger.summary.breakdown_usd.values()) == pytest.approx(ledger.summary.total_usd, rel=1e-9)
    assert sum(ledger.actors.column("usd_total").to_pylist()) == pytest.approx(ledger.summary.total_usd, rel=1e-9)
    assert set(ledger.actors.column("market").to_pylist()) == {"spot"}
    return status, ledger


def test_killing_a_spot_node_mid_run_loses_nothing_and_redoes_only_its_unit(tmp_path, spot_cluster, tiny_model):
    cluster, spot_nodes = spot_cluster
    proc, log = start_run(tmp_path, cluster)
    store = OutputStore(str(tmp_path / "out"))
    try:
        wait_until(lambda: len(store.committed_units()) >= 2, 300, "two committed units", proc, log)
        node = wait_until(lambda: freeze_unit_in_flight(store, cluster, spot_nodes), 120, "a unit in flight",
                          proc, log)
        node.kill()
        cluster.add_node(cpus=1, resources={"spot": 1})  # the replacement a spot fleet brings
        assert proc.wait(600) == 0, log.read_text()[-4000:]
    finally:
        proc.kill()
    status, ledger = check_output(tmp_path)
    assert status.attempts_lost >= 1  # the kill did land on work in flight
    # redone work is bounded by what was in flight on the lost node: its one engine actor holds
    # compute.units_in_flight (set to 2 here) units, the next one fed while the last one's tail decodes
    assert status.units_retried <= 2, status
    assert ledger.summary.breakdown_usd["wasted"] > 0  # the lost attempt, priced at spot
    assert ledger.summary.on_demand_usd > ledger.summary.total_usd


def test_a_termination_notice_drains_the_node_and_loses_nothing(tmp_path, spot_cluster, notice_server, tiny_model):
    cluster, spot_nodes = spot_cluster
    url, noticed = notice_server
    proc, log = start_run(tmp_path, cluster, preemption_notice={"kind": "url", "url": url, "poll_seconds": 0.5,
                                                                "window_seconds": 60})
    store = OutputStore(str(tmp_path / "out"))
    try:
        wait_until(lambda: len(store.committed_units()) >= 2, 300, "two committed units", proc, log)
        _, _, start, node = wait_until(lambda: unit_in_flight(store, cluster, spot_nodes), 120,
                                       "a unit in flight", proc, log)
        noticed.add(start["node"])  # the cloud announces this node's termination
        # within the notice window the actor commits the unit in hand, then leaves the node
        wait_until(lambda: not psutil.pid_exists(start["pid"]), 60, "the noticed actor to drain", proc, log)
        node.kill()  # the end of the window: the instance is taken
        cluster.add_node(cpus=1, resources={"spot": 1})
        assert proc.wait(600) == 0, log.read_text()[-4000:]
    finally:
        proc.kill()
    status, ledger = check_output(tmp_path)
    assert status.attempts_lost == 0 and status.units_retried == 0, status  # nothing in flight was lost
    assert ledger.summary.breakdown_usd["wasted"] == 0  # where a plain kill wastes the unit in flight
