"""What this driver's earlier runs measured about their engines, so that the compile choice
(pipelines/engine/compile_choice.py) weighs this hardware's eager speed and compile cost instead of a
default: the CPU default is 100 tokens/s eager, and a 2-core Xeon with native bf16 runs SmolLM2
at 265, so a default choice compiled a batch whose decoding was about 50 s, not 819, and lost.

After each run the driver reads its engine actors' records: whether each compiled, how long its
engine took to start (`compile.engine_start_seconds`), and its output tokens over the seconds
its engine was busy (the feeder's figures in its latest beat). Kept per model and engine
shape, in $SPOTBATCH_FACTS or ~/.cache/spotbatch/engine-facts.json: on the machine the driver
runs on (a notebook's, a cluster's head for `ray job submit`, a nightly cron host), which is
where the next run of the same model decides.

  eager_tokens_per_second, compiled_tokens_per_second   the latest measured, each
  eager_start_seconds, compiled_start_seconds           the latest measured, each
  compile_seconds = compiled start - eager start        once both were measured
  on: {instance type: {tokens_per_second, start_seconds, engines, run_id, eager_step_model,
       compiled_step_model, kv_tokens}}
      the latest speed and start measured on each instance type (the actors' own, cluster/
      node_facts.py), for the estimate (pipelines/estimate/); eager_ and compiled_step_model:
      {fixed, per_sequence, b_min, b_max, steps, run_id}, each fitted on its mode's engines
      alone, seconds a step takes against the requests running in it
      (operators/step_model.py); kv_tokens: the KV an engine there holds (the feeder's budget),
      measured by run kv_tokens_run_id; run_overhead_seconds: a calibration run's seconds outside
      its engine's start and steps, of which priced_overhead_seconds the ledger prices and
      before_engine_seconds (Ray's start, the placement) it does not, measured by run
      run_overhead_run_id (pipelines/estimate/overhead.py)
  output_shares: {bins, run_id}
      requests counted by the share of their max_tokens they used (20 bins), for the spread of
      output lengths the estimate simulates
  output_ratio: {ratio, generated_tokens, allowed_tokens, run_id}
      the tokens a whole run generated over the most its rows allowed (Unit.decode_tokens),
      for the estimate's expected output
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from operators.step_model import StepSums, fit_steps
from pipelines.redact import redact_engine_kwargs, redact_url

MIN_BUSY_SECONDS = 5.0  # a speed measured over less is mostly start-up noise


def facts_path() -> Path:
    return Path(os.environ.get("SPOTBATCH_FACTS") or Path.home() / ".cache" / "spotbatch" / "engine-facts.json")


def engine_kind(model) -> str:
    """What decides an engine's speed and compile cost, as the driver knows it before any engine
    starts: the model as named, its dtype setting and its engine arguments. It is this file's
    key, written down: a URL's userinfo and the engine arguments not known to be settings are
    redacted (a token never changed a speed)."""
    return json.dumps([redact_url(model.name), model.revision, model.dtype, model.quantization, model.max_model_len,
                       redact_engine_kwargs(model.engine_kwargs)], sort_keys=True, default=str)


def lookup(model, gpus_per_actor: float, path: Path | None = None) -> dict[str, Any]:
    """The facts measured for this model and engine shape ({} if none)."""
    return _load(path or facts_path()).get(_key(model, gpus_per_actor), {})


def measured(actors: dict[str, dict], run_id: str) -> dict[str, Any]:
    """The figures one run's engine actors recorded (Records.actors(): each with its latest
    beat's engine figures): how long their engines took to start, and their speed while busy."""
    found: dict[str, Any] = {}
    for record in actors.values():
        compile_ = record.get("compile") or {}
        if record.get("run_id") != run_id or record.get("warm") or "enforce_eager" not in compile_:
            continue  # a warm engine did not start for this run
        kind = "eager" if compile_["enforce_eager"] else "compiled"
        if compile_.get("engine_start_seconds"):
            found[f"{kind}_start_seconds"] = compile_["engine_start_seconds"]
        engine = record.get("engine") or {}
        if engine.get("busy_seconds", 0) >= MIN_BUSY_SECONDS and engine.get("completion_tokens"):
            found[f"{kind}_tokens_per_second"] = engine["completion_tokens"] / engine["busy_seconds"]
    return found


def measured_on(actors: dict[str, dict], run_id: str) -> dict[str, dict[str, Any]]:
    """Per instance type, what one run's engines measured there: the mean of each engine's
    output tokens/s while busy, the longest engine start (a fleet waits for its slowest), the
    step model fitted on all its engines' steps (operators/step_model.py; none from too few
    steps or one running count), and the most KV an engine there held (its token budget)."""
    found: dict[str, dict[str, Any]] = {}
    for record in actors.values():
        compile_ = record.get("compile") or {}
        engine = record.get("engine") or {}
        if record.get("run_id") != run_id or record.get("warm") or not record.get("instance_type"):
            continue
        mine = found.setdefault(record["instance_type"], {"rates": [], "starts": [], "kv": 0,
                                                          "sums": {"eager": StepSums(), "compiled": StepSums()}})
        if engine.get("busy_seconds", 0) >= MIN_BUSY_SECONDS and engine.get("completion_tokens"):
            mine["rates"].append(engine["completion_tokens"] / engine["busy_seconds"])
        if compile_.get("engine_start_seconds"):
            mine["starts"].append(compile_["engine_start_seconds"])
        if "enforce_eager" in compile_:  # a compiled engine's steps are faster: never pooled with an eager one's
            kind = "eager" if compile_["enforce_eager"] else "compiled"
            mine["sums"][kind] = mine["sums"][kind].merge(StepSums.from_json(engine.get("step_sums")))
        mine["kv"] = max(mine["kv"], engine.get("token_budget") or 0)
    return {itype: _type_figures(m, run_id) for itype, m in found.items() if m["rates"] or m["starts"]}


def _type_figures(mine: dict[str, Any], run_id: str) -> dict[str, Any]:
    fits = {f"{kind}_step_model": {**fit.to_json(), "run_id": run_id}
            for kind, sums in mine["sums"].items() if (fit := fit_steps(sums))}
    return {**fits, **({"tokens_per_second": sum(mine["rates"]) / len(mine["rates"]), "engines": len(mine["rates"])}
               if mine["rates"] else {}),
            **({"start_seconds": max(mine["starts"])} if mine["starts"] else {}),
            **({"kv_tokens": mine["kv"], "kv_tokens_run_id": run_id} if mine["kv"] else {}), "run_id": run_id}


def output_ratio(generated: int, allowed: int, run_id: str) -> dict[str, Any] | None:
    """The share of its rows' max_tokens a run used (None when nothing was allowed)."""
    if allowed <= 0:
        return None
    return {"ratio": generated / allowed, "generated_tokens": generated, "allowed_tokens": allowed, "run_id": run_id}


def output_shares(actors: dict[str, dict], run_id: str) -> dict[str, Any] | None:
    """How the run's requests spread over the share of their max_tokens they used: the engines'
    bins added (operators/feeder.py FeederStats.output_shares); None where none finished."""
    bins: list[int] = []
    for record in actors.values():
        mine = (record.get("engine") or {}).get("output_shares") if record.get("run_id") == run_id else None
        if mine:
            bins = [a + b for a, b in zip(bins or [0] * len(mine), mine, strict=True)]
    return {"bins": bins, "run_id": run_id} if sum(bins) else None


def remember_run(spec, actors: dict[str, dict], run_id: str, path: Path | None = None,
                 ratio: dict[str, Any] | None = None) -> None:
    """After a run: keep what its engines measured, per model (a routed run's each); `ratio`
    (output_ratio) is the run's own, kept for its model (an unrouted run's)."""
    by_model: dict[str, dict[str, dict]] = {}
    for actor_id, record in actors.items():
        by_model.setdefault(record.get("model") or spec.model.name, {})[actor_id] = record
    for name, mine in by_model.items():
        model = spec.for_model(name).model if spec.routed and name in spec.models else spec.model
        figures = measured(mine, run_id)
        on = measured_on(mine, run_id)
        if on:
            figures["on"] = on
        if ratio is not None and not spec.routed:
            figures["output_ratio"] = ratio
        shares = output_shares(mine, run_id)
        if shares:
            figures["output_shares"] = shares
        remember(model, spec.compute.gpus_per_actor, figures, run_id, path)


def remember(model, gpus_per_actor: float, figures: dict[str, Any], run_id: str, path: Path | None = None) -> None:
    """Keep a run's figures beside what earlier runs measured (the latest of each wins)."""
    if not figures:
        return
    path = path or facts_path()
    facts = _load(path)
    before = facts.get(_key(model, gpus_per_actor), {})
    if "on" in figures:  # per instance type: a run on one type keeps what others measured on theirs, and
        # what it did not measure there itself (a short run fits no step model: the last one stays)
        was = before.get("on", {})
        figures = {**figures, "on": {**was, **{t: {**was.get(t, {}), **f} for t, f in figures["on"].items()}}}
    mine = {**before, **figures}
    # run_id and measured_at date the engine figures; `on` and `output_ratio` carry their own
    # run_id, so a warm run that measured only its output ratio does not re-date the others.
    if set(figures) - {"on", "output_ratio", "output_shares"}:
        mine.update(run_id=run_id, measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    if "compiled_start_seconds" in mine and "eager_start_seconds" in mine:
        mine["compile_seconds"] = max(0.0, mine["compiled_start_seconds"] - mine["eager_start_seconds"])
    facts[_key(model, gpus_per_actor)] = mine
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as fh:
        json.dump(facts, fh, indent=1)
    os.replace(fh.name, path)  # whole, for another driver reading it at the same time


def _key(model, gpus_per_actor: float) -> str:
    return f"{'gpu' if gpus_per_actor else 'cpu'} {gpus_per_actor:g} {engine_kind(model)}"


def _load(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # none yet, or unreadable: the defaults decide
        return {}
