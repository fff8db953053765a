"""Whether an engine compiles its model (vLLM's torch.compile and graphs) or runs eager, when
the spec leaves it open (`model.enforce_eager` unset).

Compiling costs once per engine start (33-49 s measured on this project's CPU runs, against
about 1 s eager) and makes every later step faster (+18% tokens/s measured). So it pays for an
engine with a long night ahead and is ruinous for a 50-row batch. The rule: compile when the
decode work ahead of each engine, at the eager speed, is long enough that the gain repays the
cost:

    seconds_ahead * gain / (1 + gain) > compile_seconds

The work ahead is the pending rows times their max_tokens (an upper bound: answers often stop
sooner), spread over the engines; the eager speed is `model.eager_tokens_per_second`, else a
figure per device; the compile cost is `model.compile_seconds`, else a figure per device. Each
engine records what was chosen and why.
"""

from __future__ import annotations

from dataclasses import dataclass

COMPILE_GAIN = 0.18  # tokens/s compiled over eager, measured (README, "Measured")
DEFAULT_COMPILE_SECONDS = {"cpu": 45.0, "gpu": 60.0}  # measured on CPU (33-49 s); GPU: vLLM's usual order
DEFAULT_EAGER_TOKENS_PER_SECOND = {"cpu": 100.0, "gpu": 2000.0}  # SmolLM2 on 2 cores; an 8B model on one GPU


@dataclass(frozen=True)
class CompileChoice:
    enforce_eager: bool
    reason: str

    def to_json(self) -> dict:
        return {"enforce_eager": self.enforce_eager, "reason": self.reason}


def for_run(spec, rows: int, engines: int) -> CompileChoice:
    """The choice for `rows` pending rows of a run's model (`spec.model`) on `engines` engines."""
    m = spec.model
    return choose(m.enforce_eager, rows=rows, max_tokens=spec.sampling.max_tokens, engines=engines,
                  gpu=spec.compute.gpus_per_actor > 0, compile_seconds=m.compile_seconds,
                  eager_tokens_per_second=m.eager_tokens_per_second)


def choose(told: bool | None, *, rows: int, max_tokens: int, engines: int, gpu: bool,
           compile_seconds: float | None = None, eager_tokens_per_second: float | None = None) -> CompileChoice:
    """The choice for one run's engines.

    >>> choose(None, rows=50, max_tokens=256, engines=1, gpu=False).enforce_eager
    True
    >>> choose(None, rows=100_000, max_tokens=256, engines=4, gpu=False).enforce_eager
    False
    >>> choose(True, rows=100_000, max_tokens=256, engines=4, gpu=False).reason
    'model.enforce_eager: true in the spec'
    """
    if told is not None:
        return CompileChoice(told, f"model.enforce_eager: {str(told).lower()} in the spec")
    device = "gpu" if gpu else "cpu"
    cost = compile_seconds if compile_seconds is not None else DEFAULT_COMPILE_SECONDS[device]
    speed, source = ((eager_tokens_per_second, "model.eager_tokens_per_second") if eager_tokens_per_second
                     else (DEFAULT_EAGER_TOKENS_PER_SECOND[device], f"the {device} default"))
    ahead = rows * max_tokens / max(1, engines) / speed
    saved = ahead * COMPILE_GAIN / (1 + COMPILE_GAIN)
    compile_ = saved > cost
    return CompileChoice(not compile_, (
        f"{'compile' if compile_ else 'eager'}: about {ahead:,.0f} s of decoding ahead of each engine "
        f"(at {speed:,.0f} tokens/s, {source}) would save {saved:,.0f} s compiled, against a "
        f"{cost:,.0f} s compile"))
