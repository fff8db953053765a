"""Whether an engine compiles its model (vLLM's torch.compile and graphs) or runs eager, when
the spec leaves it open (`model.enforce_eager` unset).

Compiling costs once per engine start (33-49 s measured on this project's CPU runs, against
about 1 s eager) and makes every later step faster (+18% tokens/s measured). So it pays for an
engine with a long night ahead and is ruinous for a 50-row batch. The rule: compile when the
decode work ahead of each engine, at the eager speed, is long enough that the gain repays the
cost:

    seconds_ahead * gain / (1 + gain) > compile_seconds

The work ahead is the most tokens the pending rows may generate, each by its own limit (a row
without one runs to the context, as at the providers), as planning summed them per unit
(pipelines/engine/decode_work.py): an upper bound, answers often stop sooner. It is spread over the
engines. The eager speed, the compile cost and the gain are, each: what
the spec tells (`model.eager_tokens_per_second`, `model.compile_seconds`), else what this
driver's earlier runs of the model measured (pipelines/engine/facts.py), else a figure per
device. Each engine records what was chosen and why.
"""

from __future__ import annotations

from dataclasses import dataclass

COMPILE_GAIN = 0.18  # tokens/s compiled over eager, measured (docs/benchmarks.md)
DEFAULT_COMPILE_SECONDS = {"cpu": 45.0, "gpu": 60.0}  # measured on CPU (33-49 s); GPU: vLLM's usual order
DEFAULT_EAGER_TOKENS_PER_SECOND = {"cpu": 100.0, "gpu": 2000.0}  # SmolLM2 on 2 cores; an 8B model on one GPU


@dataclass(frozen=True)
class CompileChoice:
    enforce_eager: bool
    reason: str

    def to_json(self) -> dict:
        return {"enforce_eager": self.enforce_eager, "reason": self.reason}


@dataclass(frozen=True)
class Told:
    """What the spec tells of compiling (its `model` section); None: left to the choice."""

    enforce_eager: bool | None = None
    """Compile (false) or not (true), as the spec says; None: chosen here."""
    compile_seconds: float | None = None
    """What compiling costs an engine at start, if the spec knows."""
    eager_tokens_per_second: float | None = None
    """An eager engine's output tokens/s, if the spec knows."""

    @classmethod
    def from_model(cls, model) -> Told:
        """What a spec's ModelSpec tells."""
        return cls(model.enforce_eager, model.compile_seconds, model.eager_tokens_per_second)


def for_run(spec, tokens: int, engines: int) -> CompileChoice:
    """The choice for a run's model (`spec.model`) with `tokens` to decode at most
    (pipelines/engine/decode_work.py's tokens_ahead) on `engines` engines."""
    from pipelines.engine import facts as engine_facts

    m = spec.model
    facts = engine_facts.lookup(m, spec.compute.gpus_per_actor) if m.enforce_eager is None else {}
    return choose(Told.from_model(m), tokens=tokens, engines=engines, gpu=spec.compute.gpus_per_actor > 0,
                  measured=facts)


def choose(told: Told, *, tokens: int, engines: int, gpu: bool, measured: dict | None = None) -> CompileChoice:
    """The choice for one run's engines, with `tokens` to decode at most among them; `told` is
    what the spec says, `measured` what earlier runs measured (pipelines/engine/facts.py).

    >>> choose(Told(), tokens=50 * 256, engines=1, gpu=False).enforce_eager
    True
    >>> choose(Told(), tokens=100_000 * 256, engines=4, gpu=False).enforce_eager
    False
    >>> choose(Told(enforce_eager=True), tokens=100_000 * 256, engines=4, gpu=False).reason
    'model.enforce_eager: true in the spec'
    """
    compile_seconds, eager_tokens_per_second = told.compile_seconds, told.eager_tokens_per_second
    if told.enforce_eager is not None:
        eager = told.enforce_eager
        return CompileChoice(eager, f"model.enforce_eager: {str(eager).lower()} in the spec")
    device = "gpu" if gpu else "cpu"
    m = measured or {}
    was = f"measured {m.get('measured_at', '')[:10]}".strip()
    cost, cost_source = ((compile_seconds, "model.compile_seconds") if compile_seconds is not None
                         else (m["compile_seconds"], was) if m.get("compile_seconds") is not None
                         else (DEFAULT_COMPILE_SECONDS[device], f"the {device} default"))
    speed, source = ((eager_tokens_per_second, "model.eager_tokens_per_second") if eager_tokens_per_second
                     else (m["eager_tokens_per_second"], was) if m.get("eager_tokens_per_second")
                     else (DEFAULT_EAGER_TOKENS_PER_SECOND[device], f"the {device} default"))
    gain, gain_source = ((m["compiled_tokens_per_second"] / m["eager_tokens_per_second"] - 1, was)
                         if m.get("compiled_tokens_per_second") and m.get("eager_tokens_per_second")
                         else (COMPILE_GAIN, "measured here once"))
    ahead = tokens / max(1, engines) / speed
    saved = ahead * gain / (1 + gain) if gain > 0 else 0.0
    compile_ = saved > cost
    return CompileChoice(not compile_, (
        f"{'compile' if compile_ else 'eager'}: about {ahead:,.0f} s of decoding ahead of each engine "
        f"(at {speed:,.0f} tokens/s, {source}) would save {saved:,.0f} s compiled (at {gain:+.0%}, "
        f"{gain_source}), against a {cost:,.0f} s compile ({cost_source})"))
