"""How a run's summary reads in a terminal or a job log."""

from __future__ import annotations

from pipelines.run import RunSummary


def format_summary(s: RunSummary) -> str:
    state = "finished" if s.finished else "NOT finished (re-run the same command to resume)"
    if s.units_run == 0 and s.finished:
        return f"nothing to do: all {s.units_total} units of {s.output} are committed ({state})"
    return (
        f"{state}: {s.rows:,} rows in {s.units_run} of {s.units_total} units, {s.errors:,} with errors\n"
        f"tokens: {s.prompt_tokens:,} prompt + {s.completion_tokens:,} completion; "
        f"{s.tokens_per_second:,.0f} completion tokens/s over {s.wall_seconds:,.1f} s wall "
        f"({s.engine_seconds:,.1f} engine-seconds)\n"
        f"results: {s.output}  (pyarrow.dataset.dataset(path) reads them)"
    )
