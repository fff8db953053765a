"""How a run's summary and its cost read in a terminal or a job log."""

from __future__ import annotations

from operators.cost import BUCKETS, CostSummary
from pipelines.run import RunSummary
from pipelines.stops.stopping import describe_stop
from pipelines.store.startup import format_startup


def usd(x: float | None) -> str:
    """Dollars readable at any size: $1,234.56, $0.8123, $0.000474."""
    if x is None:
        return "-"
    if abs(x) >= 1:
        return f"${x:,.2f}"
    return f"${x:.4f}" if abs(x) >= 0.01 else f"${x:.6f}"


def format_cost(c: CostSummary) -> str:
    split = ", ".join(
        f"{b} {usd(c.breakdown_usd[b])} ({c.breakdown_usd[b] / c.total_usd:.0%})" if c.total_usd else f"{b} $0"
        for b in BUCKETS
    )
    lines = [
        f"cost: {usd(c.total_usd)} over {c.actors} engine actor(s): {split}; "
        f"on-demand would have been {usd(c.on_demand_usd)}",
        f"per 1M tokens, all-in: {usd(c.usd_per_1m_input_tokens)} input, {usd(c.usd_per_1m_output_tokens)} output",
    ]
    if len(c.by_model) > 1:
        for model, m in c.by_model.items():
            per_1m = f", {usd(m['usd_per_1m_output_tokens'])} per 1M output tokens" if m["output_tokens"] else ""
            lines.append(f"  model {model}: {usd(m['usd'])} over {m['actors']} actor(s), "
                         f"{m['input_tokens']:,} input and {m['output_tokens']:,} output tokens{per_1m}")
    for adapter, a in c.by_adapter.items():  # the run's cost split by the tokens each adapter's rows made
        per_1m = f", {usd(a['usd_per_1m_output_tokens'])} per 1M output tokens" if a["output_tokens"] else ""
        lines.append(f"  adapter {adapter}: {usd(a['usd'])} for {a['input_tokens']:,} input and "
                     f"{a['output_tokens']:,} output tokens{per_1m}")
    if c.storage and c.storage["requests"]:
        counts = ", ".join(f"{kind} {n:,}" for kind, n in c.storage["requests"].items())
        lines.append(f"storage: {sum(c.storage['requests'].values()):,} S3 requests ({counts}), "
                     f"{usd(c.storage['usd'])} at S3's request prices as of {c.storage['as_of']} "
                     "(not in the total above)")
    if c.reference:
        r = c.reference
        lines.append(
            f"vs {r['name']} (as of {r['as_of']}): {usd(r['usd'])} for the same tokens"
            + (f", this run cost {r['ratio']:.2f}x that" if r["ratio"] is not None else "")
        )
    return "\n".join(lines)


def format_summary(s: RunSummary) -> str:
    if s.finished:
        state = "finished"
    elif s.stopped:
        state = describe_stop(s.stopped)
    else:
        state = "NOT finished (re-run the same command to resume)"
        if s.left_to_others:
            state += (f"; {s.left_to_others} unit(s) were still held by another run on this output "
                      f"when this one stopped waiting for them (compute.wait_for_other_runs_seconds)")
        if s.skipped_why:
            state += "; units not committed by this run: " + ", ".join(
                f"{why} {n}" for why, n in sorted(s.skipped_why.items()))
        if s.units_unfinished:
            state += (f"; {s.units_unfinished} unit(s) left pending (the storage kept failing them, or "
                      f"their input changed), last: {s.last_fault[:300]}")
    if s.units_run == 0 and s.finished:
        text = f"nothing to do: all {s.units_total} units of {s.output} are committed ({state})"
    else:
        failed = ", ".join(f"{c} {n:,}" for c, n in sorted(s.errors_by_class.items()))
        reused = (f"; {s.reused_rows:,} rows ({s.reused_completion_tokens:,} completion tokens) answered by a "
                  f"duplicate or the cache at no engine cost" if s.reused_rows else "")
        text = (
            f"{state}: {s.rows:,} rows in {s.units_run} of {s.units_total} units: "
            f"{s.rows - s.errors:,} completed, {s.errors:,} failed" + (f" ({failed})" if failed else "") + "\n"
            f"tokens: {s.prompt_tokens:,} prompt + {s.completion_tokens:,} completion"
            + (f" ({s.reasoning_tokens:,} of them reasoning)" if s.reasoning_tokens else "") + "; "
            f"{s.tokens_per_second:,.0f} completion tokens/s over {s.wall_seconds:,.1f} s wall "
            f"({s.engine_seconds:,.1f} engine-seconds){reused}\n"
            f"results: {s.output}  (pyarrow.dataset.dataset(path) reads them)"
        )
    if s.startup:
        text += "\n" + format_startup(s.startup)
    if s.cost is not None and s.cost.actors:
        text += "\n" + format_cost(s.cost)
    return text
