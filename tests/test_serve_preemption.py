"""A spot node taken away for real under a served batch: `spotbatch serve` (a process of its own,
tests/test_serve_kill.py's) runs a batch on a cluster whose engines may only run on spot nodes
(tests/test_preemption.py's), and the node with a unit in flight is killed with every process
it started. The batch completes, every custom_id exactly once, and its cost counts the lost
attempt as wasted."""


import pytest
import yaml

from pipelines.store.output import OutputStore
from pipelines.store.status import run_status
from server.keys import key_hash
from tests.helpers import wait_until
from tests.serving import answered_ids, chat_line, client, jsonl, wait_for
from tests.test_preemption import freeze_unit_in_flight, spot_cluster  # noqa: F401 (a fixture)
from tests.test_serve_kill import KEY, free_port, start_server

pytestmark = [pytest.mark.engine, pytest.mark.cluster]

REQUESTS = 160


def serve_config() -> dict:
    """tiny-random, eager, on the spot nodes only: units of ~10 requests, each seconds long, so
    the kill lands inside one."""
    return {"models": {"gpt-4o-mini": {
        "model": {"name": "tiny-random", "max_model_len": 512, "enforce_eager": True},
        "compute": {"actors": 2, "spot_resource": "spot", "engine_threads": 1, "tokens_per_unit": 1500,
                    "units_in_flight": 2},
        "sampling": {"max_tokens": 128}}}}


def test_a_spot_node_killed_under_a_served_batch_loses_nothing(tmp_path, spot_cluster, tiny_model):  # noqa: F811
    cluster, spot_nodes = spot_cluster
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(serve_config()))
    port = free_port()
    server = start_server(tmp_path, cluster.address, port, "serve.log")
    log = tmp_path / "serve.log"
    try:
        c = client(f"http://127.0.0.1:{port}/v1", KEY)
        lines = [chat_line(f"s{i}", content=f"Tell a story about the number {i}.") for i in range(REQUESTS)]
        up = c.files.create(file=("batch.jsonl", jsonl(lines)), purpose="batch")
        batch = c.batches.create(input_file_id=up.id, endpoint="/v1/chat/completions", completion_window="24h")
        run = tmp_path / "store" / "runs" / key_hash(KEY)[:32] / batch.id
        store = OutputStore(str(run))
        wait_until(lambda: len(store.committed_units()) >= 2, 300, "two committed units", server, log)
        node = wait_until(lambda: freeze_unit_in_flight(store, cluster, spot_nodes), 120, "a unit in flight",
                          server, log)
        node.kill()
        cluster.add_node(cpus=1, resources={"spot": 1})  # the replacement a spot fleet brings
        batch = wait_for(c, batch.id, 600)
        answered = answered_ids(c, batch)
    finally:
        server.terminate()
        server.wait(60)
    assert batch.status == "completed", (batch.errors, log.read_text()[-4000:])
    assert sorted(answered) == sorted(line["custom_id"] for line in lines)  # each exactly once
    counts = batch.request_counts
    assert (counts.total, counts.completed + counts.failed) == (REQUESTS, REQUESTS) and counts.completed > 0
    status = run_status(str(run))
    assert status.attempts_lost >= 1, status  # the kill did land on work in flight
    assert 1 <= status.units_retried <= 2, status  # redone: what the lost engine held (units_in_flight: 2)
    cost = batch.model_extra["spotbatch"]
    assert cost["breakdown_usd"]["wasted"] > 0  # the lost attempt, priced and shown on the batch
    assert sum(cost["breakdown_usd"].values()) == pytest.approx(cost["cost_usd"], rel=1e-9)
