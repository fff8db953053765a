"""An estimate as the CLI prints it: the work, the options cheapest first, the providers, and
the recommendation, each figure with where it came from."""

from __future__ import annotations

from pipelines.estimate import Estimate, duration_text, usd_text

SHOWN_OPTIONS = 12  # the cheapest; --json has them all


def format_estimate(est: Estimate) -> str:
    w = est.work
    read = ("every pending row read: exact" if w.exact else
            f"{w.rows_read:,} of {w.rows_pending:,} pending rows read (sampled): +/-{w.prompt_tokens_error:,} "
            f"at 95%")
    lines = [] if est.calibration is None else [calibration_text(est.calibration), ""]
    lines += [
        (f"work: {w.rows:,} rows in {w.units:,} units"
         + (f" ({w.units_done:,} committed already; {w.rows_pending:,} rows left)" if w.units_done else "")),
        f"  prompt tokens: {w.prompt_tokens:,} with the model's tokenizer and chat template ({read})",
        (f"  the engine gets {w.engine_prompt_tokens:,} of them: {w.duplicate_rows:,} duplicate rows"
         + (" among the rows read" if not w.exact else "") + " answered by the dedup"
         + (f"; {w.rows_refused:,} rows would be error records" if w.rows_refused else "")),
        (f"  output tokens expected: {w.output_tokens:,} ({w.output_ratio:.0%} of the {w.allowed_output_tokens:,} "
         f"the rows' max_tokens allow; {w.output_ratio_source})" if w.allowed_output_tokens
         else f"  output tokens expected: {w.output_tokens:,} ({w.output_ratio_source})"),
        "",
        (f"{'instance type':<14} {'market':<10} {'engines':>7} {'tok/s/eng':>9} {'time':>8} {'$ total':>10} "
         f"{'$/1M in':>8} {'$/1M out':>8}  time from"),
    ]
    for o in est.options[:SHOWN_OPTIONS]:
        lines.append(f"{o.instance_type:<14} {o.market:<10} {o.engines:>7} {o.tokens_per_second:>9,.0f} "
                     f"{duration_text(o.seconds):>8} {usd_text(o.usd):>10} {_money(o.usd_per_1m_input_tokens):>8} "
                     f"{_money(o.usd_per_1m_output_tokens):>8}  {o.seconds_from}")
    if len(est.options) > SHOWN_OPTIONS:
        lines.append(f"... {len(est.options) - SHOWN_OPTIONS} more (--json shows them all)")
    lines += [f"not estimated: {why}" for why in est.left_out]
    for r in est.references:
        lines.append(f"{r.price.name} batch ({r.price.provider}): ${usd_text(r.usd)} "
                     f"at ${r.price.usd_per_1m_input_tokens:g} / ${r.price.usd_per_1m_output_tokens:g} per 1M in/out "
                     f"({r.price.source}, {r.price.as_of})")
    lines += ["", f"recommendation: {est.recommendation.says}"]
    lines += [f"assumed: {a}" for a in est.assumptions]
    return "\n".join(lines)


def calibration_text(c) -> str:
    return (f"calibrated: {c.rows:,} sampled rows run on one engine in {duration_text(c.seconds)} (start included), "
            f"{c.output_tokens:,} output tokens, ${usd_text(c.usd)}; its speed and output length are this "
            f"model's figures below where they say measured")


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:,.3f}"
