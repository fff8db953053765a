"""What the three benchmark runners share: the engine settings, the environment, the result."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from typing import Any

# Every runner gets the same engine: these settings, and the CPU environment from
# ENVIRONMENT.md (all cores, bound; KV cache space; one process).
SEED = 0
MAX_MODEL_LEN = 2048


def engine_settings(model_path: str, dtype: str, enforce_eager: bool) -> dict[str, Any]:
    return {"model": model_path, "dtype": dtype, "max_model_len": MAX_MODEL_LEN,
            "enforce_eager": enforce_eager, "seed": SEED}


COMPILE_MODES = ("eager", "compiled", "default")


def compile_for(mode: str, model_path: str, dtype: str, rows: int, max_tokens: int,
                engines: int = 1) -> tuple[bool, bool | None, str]:
    """(eager, spotbatch's model.enforce_eager, why) for a bench's `--compile` mode. `default`
    is what a user gets who leaves it unset: spotbatch decides (pipelines/engine/compile_choice.py,
    with what earlier runs of this model measured), and the other runners are given the same
    choice, so the comparison is of the tools."""
    import torch

    from pipelines.engine import facts as engine_facts
    from pipelines.engine.compile_choice import Told, choose
    from pipelines.spec import ModelSpec

    if mode != "default":
        return mode == "eager", mode == "eager", f"--compile {mode}"
    gpu = torch.cuda.is_available()
    model = ModelSpec(name=model_path, dtype=dtype, max_model_len=MAX_MODEL_LEN)  # as the runners' specs say
    choice = choose(Told(), tokens=rows * max_tokens, engines=engines, gpu=gpu,
                    measured=engine_facts.lookup(model, 0.0))  # the runners' specs set no gpus_per_actor
    return choice.enforce_eager, None, choice.reason


def chat_texts(tokenizer: Any, prompts: list[str], system_prompt: str | None) -> list[str]:
    """The prompts as plain vLLM is given them: each in the model's chat template."""
    from operators.prompts import chat_messages

    return [tokenizer.apply_chat_template(chat_messages(p, system_prompt), tokenize=False, add_generation_prompt=True)
            for p in prompts]


def cpu_env() -> dict[str, str]:
    """The environment an engine on all of this machine's cores wants (GPU engines ignore it)."""
    import torch

    from operators.engine import engine_env

    return engine_env(1.0 if torch.cuda.is_available() else 0.0, None)


@dataclass
class RunnerResult:
    """One runner on one prompt set. Times are seconds; tokens are the engine's counts."""

    runner: str
    requests: int
    prompt_tokens: int
    output_tokens: int
    first_request_at: float  # wall clock: the first request reached the engine
    last_result_at: float  # wall clock: the last result came out
    busy_fraction: float | None = None  # of the generate window, time the engine was stepping
    notes: str = ""

    @property
    def generate_seconds(self) -> float:
        """The steady-state window: first request in to last result out."""
        return self.last_result_at - self.first_request_at

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def write_result(path: str, result: RunnerResult) -> None:
    with open(path, "w") as fh:
        json.dump(result.to_json(), fh)


def runner_args(extra: list[tuple[str, dict[str, Any]]] = ()) -> argparse.Namespace:
    """The command line every subprocess runner takes: PROMPTS.json OUT.json and the engine."""
    p = argparse.ArgumentParser()
    p.add_argument("prompts")
    p.add_argument("out")
    p.add_argument("--model", required=True)
    p.add_argument("--dtype", required=True)
    p.add_argument("--enforce-eager", action="store_true")
    for flag, options in extra:
        p.add_argument(flag, **options)
    return p.parse_args()
