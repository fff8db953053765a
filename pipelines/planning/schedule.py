"""Scheduled runs: a `{date}` in the spec's paths names the night's run.

A nightly job re-run after a failure resolves to the same date, so it resumes that night's
run; the next night resolves to a new output and starts a new run.

>>> spec = PipelineSpec(input={"paths": "s3://logs/{date}/", "prompt_column": "text"},
...                     output={"path": "s3://results/nightly/{date}/"})
>>> with_run_date(spec, "2026-11-21").output.path
's3://results/nightly/2026-11-21/'
"""

from __future__ import annotations

import datetime as dt

from pipelines.spec import PipelineSpec, SpecError

PLACEHOLDER = "{date}"


def parse_run_date(value: str | None, now: dt.datetime | None = None) -> str:
    """YYYY-MM-DD; today in UTC when not given (cron and Kubernetes CronJobs run in UTC)."""
    if value is None:
        return (now or dt.datetime.now(dt.UTC)).date().isoformat()
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        raise SpecError(f"--date must be YYYY-MM-DD, got {value!r}") from None


def uses_run_date(spec: PipelineSpec) -> bool:
    return PLACEHOLDER in spec.output.path or any(PLACEHOLDER in p for p in spec.input.paths)


def with_run_date(spec: PipelineSpec, date: str) -> PipelineSpec:
    """A copy with `{date}` in the input and output paths replaced."""
    out = spec.model_copy(deep=True)
    out.input.paths = [p.replace(PLACEHOLDER, date) for p in spec.input.paths]
    out.output.path = spec.output.path.replace(PLACEHOLDER, date)
    return out
