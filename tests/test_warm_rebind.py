"""A warm engine serves one run at a time, and each unit with its own run's context, end to end:
a unit of run A held in flight while the engine is bound to run B is committed into A's output
under A's fingerprint, never into B's; and the engine can resume the output it just served
(tests/warm_rebind_driver.py runs the real EngineHost and engine in a process of its own)."""

import json
import subprocess
import sys

import pyarrow.dataset as ds
import pytest

from pipelines.store.output import OutputStore
from pipelines.store.records import Records
from tests.helpers import ROOT, spotbatch_env

pytestmark = pytest.mark.engine


def test_a_unit_held_across_a_rebind_is_committed_under_its_own_run(tmp_path, ray_cluster, tiny_model):
    done = subprocess.run([sys.executable, "-m", "tests.warm_rebind_driver", str(tmp_path)], cwd=ROOT,
                          env={**spotbatch_env(), "RAY_ADDRESS": ray_cluster}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    outcomes = json.loads((tmp_path / "result.json").read_text())
    assert [o["committed"] for o in outcomes["a"] + outcomes["b"]] == [True, True]
    for name, ids in (("a", [0, 1, 2]), ("b", [100, 101, 102])):
        store = OutputStore(str(tmp_path / f"out-{name}"))
        table = ds.dataset(str(tmp_path / f"out-{name}")).to_table()
        assert sorted(table.column("id").to_pylist()) == ids  # its own rows, none of the other run's
        assert set(table.column("spec_fingerprint").to_pylist()) == {store.fingerprint()}
    # one engine, a record in each run's output; the resume of A got a record of its own
    a_actors = Records(OutputStore(str(tmp_path / "out-a"))).actors()
    b_actors = Records(OutputStore(str(tmp_path / "out-b"))).actors()
    assert sorted(r["run_id"] for r in a_actors.values()) == ["run-a", "run-a2"]
    assert [r["run_id"] for r in b_actors.values()] == ["run-b"]
    assert len({r["engine_id"] for r in [*a_actors.values(), *b_actors.values()]}) == 1
    assert [o["skipped"] for o in outcomes["a2"]] == ["committed"]
