"""The bill before the run (`spotbatch estimate`, `spotbatch.estimate`): the work a spec holds
(work.py), what each way of running it costs and takes (options.py), the providers' batch
prices on the same tokens, and the cheapest way that meets the deadline.

Nothing is written to the output and no engine or Ray starts: the plan is made in memory, the
prompts are rendered and tokenized on this machine. With `calibrate`, a sample of the rows is
run on a real engine first, apart from the output (calibrate.py), and its measurements decide.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from cluster.prices import BatchPrice, batch_price
from pipelines.estimate.calibrate import Calibration, calibrate
from pipelines.estimate.options import SPOT_WASTE, Option, options
from pipelines.estimate.work import SAMPLE_ROWS, Work, measure_work, with_measured_ratio
from pipelines.spec import PipelineSpec


@dataclass
class Reference:
    price: BatchPrice
    usd: float

    def to_json(self) -> dict[str, Any]:
        return {"name": self.price.name, "provider": self.price.provider, "usd": self.usd,
                "usd_per_1m_input_tokens": self.price.usd_per_1m_input_tokens,
                "usd_per_1m_output_tokens": self.price.usd_per_1m_output_tokens,
                "as_of": self.price.as_of, "source": self.price.source}


@dataclass
class Recommendation:
    option: Option | None  # None: nothing meets the deadline
    deadline: str | None
    seconds_allowed: float | None
    saves_usd: float | None  # against the next cheapest option that meets the deadline
    next_best: Option | None
    says: str

    def to_json(self) -> dict[str, Any]:
        pick = self.option
        return {"instance_type": pick.instance_type if pick else None, "market": pick.market if pick else None,
                "usd": pick.usd if pick else None, "seconds": pick.seconds if pick else None,
                "deadline": self.deadline, "seconds_allowed": self.seconds_allowed, "saves_usd": self.saves_usd,
                "next_best": {"instance_type": self.next_best.instance_type, "market": self.next_best.market,
                              "usd": self.next_best.usd} if self.next_best else None,
                "says": self.says}


@dataclass
class Estimate:
    work: Work
    options: list[Option]
    left_out: list[str]
    references: list[Reference]
    recommendation: Recommendation
    assumptions: list[str] = field(default_factory=list)
    calibration: Calibration | None = None  # the sample run on a real engine, when asked for

    def to_json(self) -> dict[str, Any]:
        return {"work": self.work.to_json(), "options": [o.to_json() for o in self.options],
                "left_out": self.left_out, "references": [r.to_json() for r in self.references],
                "recommendation": self.recommendation.to_json(), "assumptions": self.assumptions,
                "calibration": self.calibration.to_json() if self.calibration else None}


@dataclass(frozen=True)
class Ask:
    """What an estimate is asked beside the spec."""

    by: str | None = None  # a deadline (as compute.deadline: "06:00" UTC, "3h") instead of the spec's
    references: tuple[str, ...] = ()  # provider models to price the same tokens at (no price: a PriceError)
    instance_types: tuple[str, ...] = ()  # only these (an unknown one is a PriceError); () for every one
    sample_rows: int = SAMPLE_ROWS  # read every row up to this many, else a sample of about this many
    calibrate_rows: int | None = None  # run about this many sampled rows on one real engine first
    address: str | None = None  # the Ray cluster the calibration runs on (None: as `run` finds one)


def estimate(spec: PipelineSpec, ask: Ask = Ask()) -> Estimate:
    """What running `spec` would take and cost, each way the catalog prices, before any GPU is
    bought (`ask`: the deadline, references, instance types, sampling and calibration)."""
    from pipelines.stops.deadline import check_deadline
    from spotbatch.errors import SpecError

    by = ask.by
    if by is not None:
        try:
            check_deadline(by)
        except ValueError as err:
            raise SpecError(f"--by: {err}") from None
    if spec.input.kind != "parquet":  # `run` reads those into Parquet in the output folder first
        raise SpecError(f"input.kind {spec.input.kind}: the estimate reads Parquet inputs only, and would have to "
                        f"write the batch file's Parquet into the output; not built yet")
    prices = [batch_price(name) for name in ask.references]  # refused by name before any work is read
    work = measure_work(spec, ask.sample_rows)  # a spec or input at fault fails here, before an engine starts
    measured = calibrate(spec, ask.calibrate_rows, ask.address) if ask.calibrate_rows is not None else None
    if measured is not None:
        work = with_measured_ratio(work, spec)  # the output length the sample measured
    found, left_out = options(spec, work, list(ask.instance_types) or None)
    # A provider's batch API bills every row: the tokens before the dedup.
    billed_output = round(work.allowed_output_tokens * work.output_ratio)
    refs = [Reference(p, (p.usd_per_1m_input_tokens * work.prompt_tokens
                          + p.usd_per_1m_output_tokens * billed_output) / 1e6) for p in prices]
    assumptions = [f"output tokens: {work.output_ratio_source}",
                   f"spot: {SPOT_WASTE:.0%} of node time lost to preemptions and redone (an assumption)",
                   "provider prices are on this model's token counts of every row (a provider bills duplicates "
                   "too); a provider's tokenizer counts differently"]
    return Estimate(work, found, left_out, refs, recommend(found, by or spec.compute.deadline), assumptions,
                    measured)


def recommend(found: list[Option], deadline: str | None, now: float | None = None) -> Recommendation:
    """The cheapest option that ends by the deadline (any, without one), and what it saves
    against the next cheapest that does."""
    from pipelines.stops.deadline import deadline_at

    now = time.time() if now is None else now
    allowed = deadline_at(deadline, now) - now if deadline else None
    meets = [o for o in found if allowed is None or o.seconds <= allowed]
    if not found:
        return Recommendation(None, deadline, allowed, None, None, "no option could be estimated (see what was not)")
    if not meets:
        fastest = min(found, key=lambda o: o.seconds, default=None)
        says = (f"no option meets the deadline {deadline!r} ({duration_text(allowed or 0)} from now)"
                + (f": the fastest, {fastest.instance_type} {fastest.market}, takes {duration_text(fastest.seconds)}"
                   if fastest else ": no option could be estimated"))
        return Recommendation(None, deadline, allowed, None, None, says)
    pick, rest = meets[0], meets[1:]
    nxt = next((o for o in rest if (o.instance_type, o.market) != (pick.instance_type, pick.market)), None)
    saves = nxt.usd - pick.usd if nxt else None
    says = (f"{pick.instance_type} {pick.market}: ${usd_text(pick.usd)}, {duration_text(pick.seconds)}"
            + (f", by the deadline {deadline!r}" if deadline else "")
            + (f"; saves ${usd_text(saves)} against {nxt.instance_type} {nxt.market} (${usd_text(nxt.usd)})"
               if nxt else ""))
    return Recommendation(pick, deadline, allowed, saves, nxt, says)


def usd_text(value: float) -> str:
    """Cents for large sums; small ones keep four decimals, so options a cent apart still differ."""
    return f"{value:,.2f}" if value >= 10 else f"{value:.4f}"


def duration_text(seconds: float) -> str:
    seconds = max(0, round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"
