"""A run started in the background (`pipelines.background.start`): the caller stays free, its
handle's cancel() stops it as `spotbatch cancel` does, and the same spec resumes exactly."""

import pytest

from pipelines.background import start
from pipelines.planning.inputs import InputError
from pipelines.run import run
from pipelines.spec import PipelineSpec
from pipelines.store.output import OutputStore
from pipelines.store.records import Records
from pipelines.store.status import run_status
from tests.conftest import write_shards
from tests.helpers import wait_until
from tests.test_cancel import slow_job, stopped_run
from tests.test_resume import ROWS, output_ids

pytestmark = pytest.mark.engine


def slow_spec(tmp_path) -> PipelineSpec:
    write_shards(tmp_path / "in", [{"id": i, "text": f"prompt number {i}"} for i in range(ROWS)], shards=3)
    return PipelineSpec.model_validate(slow_job(tmp_path, str(tmp_path / "out")))


def test_a_background_run_cancelled_by_its_handle_commits_what_is_in_flight_and_resumes_exactly(
        tmp_path, ray_cluster, tiny_model):
    spec = slow_spec(tmp_path)
    output = spec.output.path
    handle = start(spec, address=ray_cluster)
    assert not handle.done() and "running" in repr(handle)  # start() returned before the run ended

    def rows_shown() -> bool:  # the handle's line counts the committed units' rows
        return handle.done() or not (handle.progress() or "0/").startswith("0/")

    wait_until(rows_shown, 300, "a committed unit in the handle's progress")
    assert "rows" in repr(handle) and OutputStore(output).committed_units(), repr(handle)
    handle.cancel()
    summary = handle.result(300)
    assert summary.stopped == "cancelled" and not summary.finished, repr(handle)
    assert "stopped: cancelled" in repr(handle)
    assert run_status(output).stopped == "cancelled" and stopped_run(output)["stopped"] == "cancelled"
    again = run(spec, address=ray_cluster)
    assert again.finished and again.stopped is None
    ids = output_ids(output, {})
    assert len(ids) == ROWS and set(ids) == set(range(ROWS))


def test_a_cancel_asked_before_the_engines_start_starts_none(tmp_path, tiny_model):
    spec = slow_spec(tmp_path)
    handle = start(spec, address="127.0.0.1:1")  # no Ray there: reaching it would fail the run
    handle.cancel()
    summary = handle.result(120)
    assert summary.stopped == "cancelled" and summary.units_run == 0
    records = Records(OutputStore(spec.output.path))
    assert not records.actors() and [r["stopped"] for r in records.runs().values()] == ["cancelled"]


def test_a_background_runs_own_error_is_raised_by_result(tmp_path, tiny_model):
    spec = PipelineSpec.model_validate(slow_job(tmp_path, str(tmp_path / "out")))  # no input written
    handle = start(spec)
    with pytest.raises(InputError, match=f"input path does not exist: {tmp_path / 'in'}$"):
        handle.result(120)
    assert handle.done() and "failed" in repr(handle)
