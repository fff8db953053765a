"""A run asked to stop (`spotbatch cancel` from another process, an interrupt, a deadline)
takes no new unit, commits the units in flight, exits 4 and says why; the same spec then
finishes with every row exactly once.

The stopped runs are `spotbatch run` processes, as users start them. The resumes run as a
notebook's do: `run(spec)` in this process, on one engine kept warm between them (the first
resume starts it), so an output a stop left behind is shown to resume on an engine another
run kept warm, and the module starts one engine for its resumes instead of one each. The CLI's
own resume is tests/test_resume.py's; a cancel on a warm engine of the same process (the
notebook's cancel-then-resume), tests/test_warm_engines.py's."""

import json
import signal
import time
from pathlib import Path

import pytest
import yaml

from jobs.bench.stop_latency import job as job_of_units
from jobs.bench.stop_latency import stop_written
from pipelines.engine.warm_pool import POOL
from pipelines.run import run
from pipelines.spec import PipelineSpec
from pipelines.stops.stopping import cancel
from pipelines.store.output import OutputStore
from pipelines.store.records import Records
from pipelines.store.status import run_status
from tests.conftest import write_shards
from tests.helpers import committed_ends, spotbatch, start_spotbatch, wait_until, write_spec
from tests.test_resume import ROWS, job, output_ids

pytestmark = pytest.mark.engine
WARM_SECONDS = 900  # outlasts the module's tests; the engine is let go when the module ends


@pytest.fixture(scope="module")
def warm_engine(ray_cluster):
    """The engine the module's resumes share, held by this process (their driver) between them."""
    yield ray_cluster
    POOL.release()


def resumed_exactly(spec: Path, output: str, address: str) -> None:
    """The same spec (the file the stopped run read) resumed on the module's warm engine."""
    data = yaml.safe_load(spec.read_text())
    data["compute"]["keep_warm_seconds"] = WARM_SECONDS  # an engine setting only: the same run resumes
    again = run(PipelineSpec.model_validate(data), address=address)
    assert again.finished and again.stopped is None, again
    assert POOL.held() == 1  # kept warm for the next resume
    ids = output_ids(output, {})
    assert len(ids) == ROWS and set(ids) == set(range(ROWS))
    assert run_status(output).finished and run_status(output).stopped is None


def stopped_run(output: str) -> dict:
    """The stopped run's record; every attempt it started has ended (none left half done)."""
    records = Records(OutputStore(output))
    (record,) = [r for r in records.runs().values() if r.get("stopped")]
    assert all("end" in a for tries in records.attempts().values() for a in tries.values())
    return record


def slow_job(tmp_path, output: str) -> dict:
    """60 units of 5 rows, one in an actor at a time: a run that lasts a while after its first
    commit, so a stop asked then lands mid-run even on a quiet machine."""
    spec = job(tmp_path, str(tmp_path / "in"), output, {})
    spec["compute"].update({"tokens_per_unit": 350, "units_in_flight": 1})
    return spec


@pytest.mark.parametrize("how", ["cancel", "interrupt"])
def test_a_cancelled_run_commits_what_is_in_flight_exits_4_and_resumes_exactly(tmp_path, ray_cluster, tiny_model,
                                                                              warm_engine, how):
    write_shards(tmp_path / "in", [{"id": i, "text": f"prompt number {i}"} for i in range(ROWS)], shards=3)
    output = str(tmp_path / "out")
    spec = write_spec(tmp_path / "spec.yaml", slow_job(tmp_path, output))
    store = OutputStore(output)
    log = tmp_path / "run.log"
    proc = start_spotbatch("run", str(spec), "--address", ray_cluster, log=log)
    try:
        wait_until(lambda: store.committed_units(), 300, "a committed unit", proc, log)
        if how == "interrupt":
            proc.send_signal(signal.SIGINT)
        else:
            assert len(cancel(output)) == 1  # what `spotbatch cancel` does (tests/test_stopping.py), from here
        assert proc.wait(300) == 4, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    console = log.read_text()
    assert "stopped: cancelled" in console, console[-3000:]
    status = run_status(output)
    assert not status.finished, "the run was cancelled too late to test anything"
    assert status.stopped == "cancelled" and stopped_run(output)["stopped"] == "cancelled"
    shown = spotbatch("status", output)
    assert "stopped: cancelled" in shown.stdout, shown.stdout
    assert json.loads(spotbatch("status", output, "--json").stdout)["stopped"] == "cancelled"
    assert spotbatch("cancel", output).stdout.startswith("spotbatch: no run is working on")
    resumed_exactly(spec, output, warm_engine)


def test_a_second_interrupt_abandons_only_the_units_in_flight_and_the_same_spec_resumes_exactly(
        tmp_path, ray_cluster, tiny_model, warm_engine):
    write_shards(tmp_path / "in", [{"id": i, "text": f"prompt number {i}"} for i in range(ROWS)], shards=3)
    output = str(tmp_path / "out")
    data = slow_job(tmp_path, output)
    data["compute"]["tokens_per_unit"] = 3500  # 6 units of 50 rows: one is in flight for seconds
    spec = write_spec(tmp_path / "spec.yaml", data)
    store = OutputStore(output)
    log = tmp_path / "run.log"
    proc = start_spotbatch("run", str(spec), "--address", ray_cluster, log=log)
    try:
        wait_until(lambda: store.committed_units(), 300, "a committed unit", proc, log)
        proc.send_signal(signal.SIGINT)
        wait_until(lambda: "interrupt again to abandon" in log.read_text(), 30, "the first interrupt heard", proc, log)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) not in (0, 4), log.read_text()[-3000:]  # abandoned: neither finished nor stopped
    finally:
        if proc.poll() is None:
            proc.kill()
    # what was abandoned: the units in flight (one actor, one unit at a time), never committed half
    attempts = Records(store).attempts()
    open_ = [u for u, tries in attempts.items() for t in tries.values() if "end" not in t]
    assert len(open_) <= 1 and not set(open_) & store.committed_units()
    resumed_exactly(spec, output, warm_engine)


def test_a_run_past_its_deadline_exits_4_and_resumes_exactly(tmp_path, ray_cluster, tiny_model, warm_engine):
    write_shards(tmp_path / "in", [{"id": i, "text": f"prompt number {i}"} for i in range(ROWS)], shards=3)
    output = str(tmp_path / "out")
    spec = write_spec(tmp_path / "spec.yaml", slow_job(tmp_path, output))
    first = spotbatch("run", str(spec), "--address", ray_cluster, "--set", "compute.deadline=1s")
    assert first.returncode == 4, first.stdout[-2000:] + first.stderr[-3000:]
    assert "stopped: deadline" in first.stdout, first.stdout[-2000:]
    record = stopped_run(output)
    assert record["stopped"] == "deadline" and record["deadline"] == pytest.approx(record["started_at"] + 1)
    assert not run_status(output).finished
    resumed_exactly(spec, output, warm_engine)


def test_a_deadline_that_lands_mid_run_takes_no_unit_that_would_end_past_it(tmp_path, ray_cluster, tiny_model):
    """A deadline 25 s after the start lands while units run (the engine is up in about 12 s,
    the job of 240 units takes about a minute): no unit is started that would end past it, the
    units in flight are committed, and the run ends by the deadline plus one unit's time."""
    rows = 4 * ROWS
    write_shards(tmp_path / "in", [{"id": i, "text": f"prompt number {i}"} for i in range(rows)], shards=3)
    output = str(tmp_path / "out")
    spec = write_spec(tmp_path / "spec.yaml", slow_job(tmp_path, output))
    first = spotbatch("run", str(spec), "--address", ray_cluster, "--set", "compute.deadline=25s")
    assert first.returncode == 4, first.stdout[-2000:] + first.stderr[-3000:]
    record = stopped_run(output)
    ends = committed_ends(output)
    assert ends, "the engine was not up 25 s after the start: nothing ran before the deadline"
    longest = max(e["engine_seconds"] for e in ends)
    assert max(e["time"] for e in ends) <= record["deadline"] + longest + 2
    assert record["ended_at"] <= record["deadline"] + longest + 5, (record["ended_at"] - record["deadline"], longest)
    # Resuming a run stopped mid-way is the cancel tests' (a minute each): here, what it left.
    ids = output_ids(output, {})
    assert 0 < len(ids) < rows and len(set(ids)) == len(ids) and set(ids) <= set(range(rows))


def test_a_cancel_with_many_units_left_ends_the_run_within_about_a_units_time(tmp_path, ray_cluster, tiny_model):
    """1,500 one-row units, cancelled after the first commits: the run leaves Ray Data's stream
    once its actor is quiet, instead of pushing every unit left through it to be skipped (35 s
    here before pipelines/stops/drain.py; `python -m jobs.bench.stop_latency` is the figure)."""
    spec = job_of_units(tmp_path, 1500)
    output = str(tmp_path / "out")
    log = tmp_path / "run.log"
    proc = start_spotbatch("run", str(spec), "--address", ray_cluster, log=log)
    try:
        wait_until(lambda: len(OutputStore(output).committed_units()) >= 5, 300, "five committed units", proc, log)
        assert len(cancel(output)) == 1
        assert proc.wait(300) == 4, log.read_text()[-3000:]
        exited = time.time()
    finally:
        if proc.poll() is None:
            proc.kill()
    stopped_run(output)  # every attempt it started has ended: leaving early abandoned no unit
    asked = stop_written(Path(output))
    longest = max(e["engine_seconds"] for e in committed_ends(output))
    # the stop is heard within two polls (driver and actor, 2 s each), then Ray Data and the driver shut down
    assert exited - asked <= longest + 12, (exited - asked, longest)
    assert len(OutputStore(output).committed_units()) < 1500


def test_a_deadline_that_is_not_a_time_is_refused_by_name(tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", job(tmp_path, str(tmp_path / "in"), str(tmp_path / "out"), {}))
    refused = spotbatch("run", str(spec), "--set", "compute.deadline=6am")
    assert refused.returncode == 2 and "deadline" in refused.stderr and "6am" in refused.stderr, refused.stderr
    assert not (tmp_path / "out").exists()
