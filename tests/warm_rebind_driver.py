"""A warm engine bound to a second run while a unit of the first is held in flight, and bound
again to resume the first's output (tests/test_warm_rebind.py). The real EngineHost, its real
EngineActor and a real engine, hosted in this process (a driver of the Ray cluster at
RAY_ADDRESS, which the generator asks about its node); only the hunger wait is held, so a unit
of run A is in the engine's hands, not yet generated, when run B's call arrives. argv[1]: a
folder; writes argv[1]/result.json."""

import json
import os
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import ray

from operators.feeder import EngineFeeder
from pipelines.engine.host import EngineHost
from pipelines.planning.units import SINGLE_MODEL
from pipelines.run import prepare
from pipelines.spec import PipelineSpec

HELD = threading.Event()  # a unit of run A waits in the hunger wait
RELEASE = threading.Event()


def hold_the_first_unit() -> None:
    wait = EngineFeeder.wait_until_hungry
    first = threading.Lock()

    def held(self):
        if first.acquire(blocking=False):  # the first unit to get here: run A's
            HELD.set()
            RELEASE.wait(120)
        return wait(self)

    EngineFeeder.wait_until_hungry = held


def context(here: Path, name: str, ids: list[int], template: str, run_id: str) -> tuple[dict, list[dict]]:
    if not (here / name).exists():  # a resume reads the same file: rewritten, it would be another input
        (here / name).mkdir()
        pq.write_table(pa.table({"id": ids, "text": [f"question {i}" for i in ids]}),
                       here / name / "shard-000.parquet")
    spec = PipelineSpec.model_validate({
        "input": {"paths": str(here / name), "template": template},
        "model": {"name": "tiny-random", "max_model_len": 256, "enforce_eager": True},
        "sampling": {"max_tokens": 4}, "output": {"path": str(here / f"out-{name}")}})
    _, plan = prepare(spec)
    data = spec.model_dump(mode="json")
    return ({"spec_data": data, "read_spec_data": data, "route_name": None, "model_source": plan.models[SINGLE_MODEL],
             "fingerprint": plan.fingerprint, "run_id": run_id, "tensor_parallel_size": 1, "retry": False,
             "compile_choice": {"enforce_eager": True, "reason": "the test's"}},
            [u.descriptor() for u in plan.units])


def main() -> None:
    here = Path(sys.argv[1])
    ray.init(address=os.environ["RAY_ADDRESS"])
    hold_the_first_unit()
    a, a_units = context(here, "a", [0, 1, 2], "A: {text}", "run-a")
    b, b_units = context(here, "b", [100, 101, 102], "B: {text}", "run-b")
    host = EngineHost()
    outcomes: dict[str, list] = {}
    first = threading.Thread(target=lambda: outcomes.setdefault("a", host.run_units(a, a_units).to_pylist()))
    first.start()
    HELD.wait(300)
    second = threading.Thread(target=lambda: outcomes.setdefault("b", host.run_units(b, b_units).to_pylist()))
    second.start()
    time.sleep(2)  # run B's call is in: bound at once, or waiting for run A's unit
    RELEASE.set()
    first.join(300)
    second.join(300)
    (here / "result.json").write_text(json.dumps(outcomes, default=str))
    # the notebook's flow: run A again on its own output (a resume, as after a cancel)
    again, _ = context(here, "a", [0, 1, 2], "A: {text}", "run-a2")
    outcomes["a2"] = host.run_units(again, a_units).to_pylist()
    (here / "result.json").write_text(json.dumps(outcomes, default=str))


if __name__ == "__main__":
    main()
