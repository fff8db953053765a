"""The engine comes first on a node's CPU: the driver and the local Ray it starts yield to it."""

import os
import subprocess
import sys

import pytest

from cluster.cpu_priority import DRIVER_NICENESS, can_raise_priority
from pipelines.store.output import OutputStore
from pipelines.store.records import Records
from tests.conftest import write_shards
from tests.helpers import ROOT, spotbatch, write_spec

CHILD = """
import os, threading
from cluster.cpu_priority import yield_to_engines
now = yield_to_engines()
seen = []
t = threading.Thread(target=lambda: seen.append(os.getpriority(os.PRIO_PROCESS, 0)))
t.start(); t.join()
print(now, seen[0])
"""


def test_the_driver_yields_only_where_the_engine_can_take_its_priority_back():
    before = os.getpriority(os.PRIO_PROCESS, 0)
    start = 0 if can_raise_priority() else before  # the child starts at full priority where it may
    out = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True, text=True, check=True,
                         preexec_fn=lambda: os.setpriority(os.PRIO_PROCESS, 0, start))
    now, thread = map(int, out.stdout.split())
    expected = DRIVER_NICENESS if can_raise_priority() else before
    assert now == expected and thread == now  # threads started later inherit it


@pytest.mark.engine
@pytest.mark.skipif(not can_raise_priority(), reason="needs CAP_SYS_NICE, as the engine does to restore its priority")
def test_under_a_yielding_driver_the_engine_runs_at_full_priority(tmp_path, tiny_model):
    # no --address: the run starts its own Ray, whose workers start at the driver's niceness + 15
    write_shards(tmp_path / "in", [{"id": i, "text": f"hi {i}"} for i in range(6)], shards=1)
    spec = write_spec(tmp_path / "spec.yaml", {
        "input": {"paths": str(tmp_path / "in"), "prompt_column": "text"},
        "model": {"name": "tiny-random", "max_model_len": 512, "enforce_eager": True},
        "sampling": {"max_tokens": 8},
        "output": {"path": str(tmp_path / "out")},
    })
    proc = spotbatch("run", str(spec), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    actors = Records(OutputStore(str(tmp_path / "out"))).actors().values()
    assert actors and all(a["niceness"] == 0 for a in actors)
