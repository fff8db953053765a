import datetime as dt

import pytest

from pipelines.planning.schedule import parse_run_date, uses_run_date, with_run_date
from pipelines.spec import PipelineSpec, SpecError

SPEC = PipelineSpec(input={"paths": ["s3://logs/{date}/*.parquet"], "prompt_column": "text"},
                    output={"path": "s3://results/nightly/{date}/"})


def test_the_same_night_resolves_to_the_same_run_and_the_next_to_a_new_one():
    night = dt.datetime(2026, 11, 21, 2, 0, tzinfo=dt.UTC)
    first = with_run_date(SPEC, parse_run_date(None, now=night))
    retry = with_run_date(SPEC, parse_run_date(None, now=night + dt.timedelta(hours=3)))
    tomorrow = with_run_date(SPEC, parse_run_date(None, now=night + dt.timedelta(days=1)))
    assert first.output.path == retry.output.path == "s3://results/nightly/2026-11-21/"
    assert first.input.paths == ["s3://logs/2026-11-21/*.parquet"]
    assert tomorrow.output.path == "s3://results/nightly/2026-11-22/"
    assert uses_run_date(SPEC) and not uses_run_date(first)
    assert SPEC.output.path.endswith("{date}/")  # the caller's spec is left alone


def test_bad_dates_are_named():
    assert parse_run_date("2026-11-21") == "2026-11-21"
    with pytest.raises(SpecError, match="--date must be YYYY-MM-DD, got '21/11/2026'"):
        parse_run_date("21/11/2026")
