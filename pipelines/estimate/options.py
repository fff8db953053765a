"""Ways to run an estimated work: each instance type of the price catalog (and the spec's own
cost.prices) in each market, with the engines that fit one node, the engine speed (measured on
that type by earlier runs of the model where known, else the catalog's figure, which names its
source or says it is a guess), the time, and the $ with the engines' load and spot's waste.

Time = a run's overhead (where a calibration measured it) + the slowest engine start + an
engine's seconds on its share of the output tokens; $ prices only what the ledger prices of it,
an engine actor from its start to its release (pipelines/estimate/overhead.py). Where
an earlier run measured a step model on the type (seconds a step takes against the requests
running in it, pipelines/engine/facts.py), those seconds are a simulation of continuous
batching on the rows read (batching.py): a speed measured on a small sample, whose engine held
few requests at once and decoded a long tail alone, said little about a whole run (a 48-row
calibration put the long-tail set at +96% of its time). Else they are output tokens / tokens/s,
the measured figure (output tokens over busy seconds, prefill included) or the catalog's.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from cluster.prices import MARKETS, PriceCatalog
from operators.step_model import StepModel
from pipelines.engine import facts as engine_facts
from pipelines.estimate import overhead
from pipelines.estimate.batching import Engine, Row, engine_seconds_peak, expected_lengths
from pipelines.planning.units import VLLM_MAX_NUM_SEQS
from pipelines.redact import redact_url
from pipelines.spec import PipelineSpec

SPOT_WASTE = 0.05  # an assumption: the share of spot node time lost to preemptions and redone


@dataclass
class Speed:
    tokens_per_second: float
    start_seconds: float
    source: str  # where tokens/s came from; "measured: ..." or the catalog's source (a guess says so)
    start_source: str
    measured: bool
    step: StepModel | None = None  # measured on this type: the engine's time is simulated with it
    step_source: str = ""
    kv_tokens: int | None = None  # an engine's KV capacity there, as its feeder's budget counted it
    kv_source: str = ""  # the run that measured kv_tokens
    overhead_seconds: float = 0.0  # a run's time outside its engines' start and steps, where measured
    priced_overhead_seconds: float = 0.0  # of it, what the ledger prices (pipelines/estimate/overhead.py)
    overhead_source: str = ""


@dataclass
class Option:
    instance_type: str
    market: str
    engines: int
    engines_per_node: int
    nodes: int
    tokens_per_second: float  # per engine
    seconds: float  # the run's wall time
    priced_seconds: float  # of it, an engine's seconds the ledger prices: from its actor's start to its release
    usd: float
    usd_per_hour: float  # per node
    usd_per_1m_input_tokens: float | None
    usd_per_1m_output_tokens: float | None
    speed_source: str
    price_source: str
    measured: bool  # the speed was measured on this instance type
    seconds_from: str  # the model that gave the engine's seconds: a measured step model, or tokens/s

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def engines_per_node(spec: PipelineSpec, entry: dict[str, Any]) -> tuple[int, float]:
    """Engines one node holds, and the GPUs each takes: the spec's gpus_per_actor on a GPU type
    (a CPU spec on a GPU type: one GPU each); one engine with every core on a CPU type."""
    gpus = int(entry.get("gpus") or 0)
    if gpus == 0:
        return (0, 0.0) if spec.compute.gpus_per_actor else (1, 0.0)
    each = spec.compute.gpus_per_actor or 1.0
    return int(gpus // each), each


def engine_speed(spec: PipelineSpec, instance_type: str, entry: dict[str, Any], gpus: float,
                 mode: str = "eager") -> Speed | None:
    """Measured on this type by an earlier run of the model, else the catalog's figure; None
    where neither is known (a type only the spec prices). A routed spec's rows go to several
    models, and what one model's runs measured does not time another's rows: the catalog's.
    `mode`: eager or compiled, as the run's engines will be (compile_mode); the step model
    measured in that mode."""
    on = {} if spec.routed else engine_facts.lookup(spec.model, gpus).get("on", {}).get(instance_type, {})
    fallback_start = float(entry.get("engine_start_seconds") or 0)
    start_source = entry.get("engine_start_seconds_source", "")
    if on.get("start_seconds"):
        fallback_start, start_source = on["start_seconds"], f"measured by run {on['run_id']} on {instance_type}"
    if on.get("tokens_per_second"):
        return Speed(on["tokens_per_second"], fallback_start,
                     f"measured: {on.get('engines', 1)} engine(s) of run {on['run_id']} on {instance_type}",
                     start_source, True, *_step_model(on, instance_type, mode), *overhead.from_facts(on))
    if not entry.get("engine_tokens_per_second"):
        return None
    source = str(entry.get("engine_tokens_per_second_source", ""))
    figures_for = entry.get("engine_figures_model")
    if spec.routed:
        source = (f"guess for the routed models {', '.join(redact_url(m.name) for m in spec.models.values())}: "
                  f"the catalog's figure{f' for {figures_for}' if figures_for else ''} ({source}); a routed spec "
                  f"is not timed by any one model's measurements")
    elif figures_for and figures_for != spec.model.name:
        source = f"guess for {redact_url(spec.model.name)}: the catalog's figure is for {figures_for} ({source})"
    return Speed(float(entry["engine_tokens_per_second"]), fallback_start, source, start_source, False)


def compile_mode(spec: PipelineSpec, work, working: int) -> str:
    """eager or compiled: what the run's engines will be (pipelines/engine/compile_choice.py),
    for the decoding its pending rows allow at most."""
    from pipelines.engine.compile_choice import for_run

    return "eager" if for_run(spec, work.allowed_output_tokens, working).enforce_eager else "compiled"


def _step_model(on: dict[str, Any], instance_type: str, mode: str
                ) -> tuple[StepModel | None, str, int | None, str]:
    kept = on.get(f"{mode}_step_model")
    measured_by = f"run {on['kv_tokens_run_id']}" if on.get("kv_tokens_run_id") else "an earlier run"
    kv_source = f"measured by {measured_by} on {instance_type}"
    if not kept:
        return None, "", on.get("kv_tokens"), kv_source
    model = StepModel(**{k: kept[k] for k in StepModel.__dataclass_fields__ if k in kept})
    return model, (f"step model measured on {instance_type} by run {kept['run_id']} ({mode} engines), fitted on "
                   f"b={model.b_min}.."
                   f"{model.b_max} ({model.steps:,} steps): {model.fixed * 1e3:.1f} ms + "
                   f"{model.per_sequence * 1e3:.2f} ms a running request + {model.per_prompt_token * 1e3:.3f} ms "
                   f"a prompt token"), on.get("kv_tokens"), kv_source


def engine_time(spec: PipelineSpec, speed: Speed, work, working: int) -> tuple[float, float, str]:
    """An engine's seconds on its share of the work's output tokens, the tokens/s that makes,
    and the model that gave them."""
    each = work.output_tokens / working
    if speed.step is None or not work.row_shapes:
        where = "" if speed.measured else ", a guess" if "guess" in speed.source else " from the catalog"
        return each / speed.tokens_per_second, speed.tokens_per_second, f"tokens/s{where}: {speed.source}"
    shares = engine_facts.lookup(spec.model, spec.compute.gpus_per_actor).get("output_shares") or {}
    told = spec.model.engine_kwargs.get("max_num_seqs")
    seqs = int(told or VLLM_MAX_NUM_SEQS)
    seqs_source = (f"max_num_seqs {seqs} (model.engine_kwargs)" if told
                   else f"max_num_seqs {seqs} (vLLM's default, assumed)")
    lengths = expected_lengths([m for _, m, _ in work.row_shapes], work.output_ratio, shares.get("bins"),
                               [n for _, _, n in work.row_shapes])
    rows = [Row(length, prompt + n * m, prompt, n) for (prompt, m, n), length in zip(work.row_shapes, lengths,
                                                                                     strict=True)]
    engine = Engine(speed.step, seqs, spec.compute.max_tokens_in_flight or speed.kv_tokens)
    seconds, peak = engine_seconds_peak(rows, each, engine)
    return seconds, each / seconds if seconds else 0.0, speed.step_source + _simulation_labels(
        spec, speed, shares, seqs_source, peak)


def _simulation_labels(spec: PipelineSpec, speed: Speed, shares: dict[str, Any], seqs_source: str, peak: int) -> str:
    """Where each figure the simulation used came from, and where it is a guess."""
    kv = spec.compute.max_tokens_in_flight
    labels = [f"output lengths spread as run {shares['run_id']} measured" if shares.get("bins")
              else "output lengths all at the expected share (no run measured their spread)",
              f"KV of {kv:,} tokens (compute.max_tokens_in_flight)" if kv
              else f"KV of {speed.kv_tokens:,} tokens ({speed.kv_source})" if speed.kv_tokens
              else "KV unknown (only max_num_seqs limits)", seqs_source]
    if peak > speed.step.b_max:
        labels.append(f"a guess beyond b={speed.step.b_max}: up to {peak} sequences run at once")
    return "; " + "; ".join(labels)


def fleet_engines(spec: PipelineSpec) -> int:
    c = spec.compute
    return c.max_actors if c.max_actors is not None else c.actors or 1


def options(spec: PipelineSpec, work, instance_types: list[str] | None = None) -> tuple[list[Option], list[str]]:
    """Every (instance type, market) the catalog prices for `work` (work.py), cheapest first,
    and why the types left out were left out. `instance_types`: only these (an unknown one is a
    PriceError). An engine works on whole units, so no more engines than the units left
    generate at once (the fleet's nodes are paid for all the same)."""
    input_tokens, output_tokens, units = work.engine_prompt_tokens, work.output_tokens, work.units - work.units_done
    catalog = PriceCatalog.load(overrides=spec.cost.prices)
    names = instance_types or sorted(catalog.entries)
    for name in names:
        if name not in catalog.entries:
            catalog.quote(name, "on_demand")  # a PriceError naming it and the types the catalog knows
    if spec.task == "embed":
        return [], ["every instance type: no embedding speed is known to time and price the run by (the "
                    "catalog's engine_tokens_per_second is generation's output tokens/s; an embedding makes none)"]
    found, left_out = [], []
    engines = fleet_engines(spec)
    working = engines if units is None else max(1, min(engines, units))
    mode = compile_mode(spec, work, working)
    for name in names:
        entry = catalog.entries[name]
        per_node, gpus = engines_per_node(spec, entry)
        if per_node == 0:
            left_out.append(f"{name}: no engine fits ({spec.compute.gpus_per_actor:g} GPUs each, the type has "
                            f"{entry.get('gpus') or 0})")
            continue
        speed = engine_speed(spec, name, entry, gpus, mode)
        if speed is None:
            left_out.append(f"{name}: no engine speed is known for it: no run measured one there, and the "
                            f"catalog has no engine_tokens_per_second")
            continue
        nodes = math.ceil(engines / per_node)
        decoding, tokens_per_second, seconds_from = engine_time(spec, speed, work, working)
        seconds = speed.overhead_seconds + speed.start_seconds + decoding
        priced = speed.priced_overhead_seconds + speed.start_seconds + decoding  # the ledger's spans only
        seconds_from += speed.overhead_source
        for market in MARKETS:
            if entry.get(market) is None:
                continue
            quote = catalog.quote(name, market)
            usd = nodes * quote.usd_per_hour * priced / 3600 * (1 + SPOT_WASTE if market == "spot" else 1)
            found.append(Option(
                name, market, engines, per_node, nodes, tokens_per_second, seconds, priced, usd,
                quote.usd_per_hour, usd / input_tokens * 1e6 if input_tokens else None,
                usd / output_tokens * 1e6 if output_tokens else None,
                speed.source, quote.source, speed.measured, seconds_from))
    return sorted(found, key=lambda o: (o.usd, o.seconds)), left_out
