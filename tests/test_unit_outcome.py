"""A unit's outcome travels to the driver as a summary row and is acted on by its kind (Skip),
never by parsing the words it reads as (pipelines/unit/outcome.py)."""

import pyarrow as pa

from pipelines.run import RunSummary
from pipelines.store.output import OutputStore
from pipelines.unit.protocol import SUMMARY_SCHEMA, Skip, UnitContext, UnitProtocol, outcome_from_row, outcome_row
from tests.test_unit_protocol import FakeGenerate, make_spec

ACTOR = {"actor_id": "a", "actor_started_at": 0.0, "actor_usd_per_second": 0.0}


def through_the_stream(outcome):
    """As the driver gets it: a row of the engine stage's Arrow block."""
    return outcome_from_row(pa.Table.from_pylist([outcome_row(outcome, ACTOR)], schema=SUMMARY_SCHEMA).to_pylist()[0])


def test_a_unit_whose_rows_the_storage_would_not_read_is_counted_as_a_storage_error(tmp_path):
    where = (str(tmp_path / "out"), {})
    OutputStore(*where).create_manifest({"fingerprint": "fp"})
    protocol = UnitProtocol(UnitContext(make_spec(where), fingerprint="fp", run_id="r", actor_id="a", node_id="n"),
                            FakeGenerate())
    message = f"storage_error while reading the unit's rows from {tmp_path}/in/shard-0.parquet: OSError('gone')"
    unit = through_the_stream(protocol.unreadable("00000-u", Skip.STORAGE_ERROR, message))
    assert unit.skip is Skip.STORAGE_ERROR and unit.skipped == message and unit.reason == message
    summary = RunSummary(output="out", units_total=1)
    summary.add_unit(unit)
    # not "storage_error while reading the unit's rows from /tmp/...", cut at the first colon
    assert summary.skipped_why == {"storage_error": 1} and summary.units_unfinished == 1
    assert summary.last_fault == message


def test_a_stop_reaches_the_driver_with_its_reason_whatever_the_reason_says():
    from pipelines.unit.protocol import UnitOutcome

    unit = through_the_stream(UnitOutcome.skipped_as("00000-u", Skip.STOP, "deadline: 06:00 passed"))
    assert unit.skip is Skip.STOP and unit.reason == "deadline: 06:00 passed"
    assert unit.skipped == "stop: deadline: 06:00 passed"  # as it always read
    summary = RunSummary(output="out", units_total=1)
    summary.add_unit(unit)
    assert summary.skipped_why == {"stop": 1}
