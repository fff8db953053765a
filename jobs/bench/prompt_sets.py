"""The benchmark's prompts: made here from a fixed seed, so every run and machine sees the same.

long_tail        prompt lengths and max_tokens from long-tailed (log-normal) distributions:
                 most requests are short and a few are long, the mix that stalls fixed batches
shared_system    one long system prompt (several KV blocks) before short questions: what
                 the engine's prefix cache is for
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

WORDS = (
    "market river engine silver garden winter signal harbor quiet method paper orange window "
    "battery planet village crystal doctor thunder bridge marble copper lantern forest velvet "
    "rocket shadow meadow anchor violin glacier pepper castle ticket harvest compass museum "
    "canyon falcon ribbon tunnel island mirror saddle pillow cotton desert lemon basket beacon "
    "feather summit cabinet orbit carpet ladder puzzle sparrow timber wagon zephyr kettle "
    "report budget customer delivery invoice shipment contract warranty schedule inventory "
    "meeting project deadline supplier quality response account balance transfer review"
).split()


@dataclass
class PromptSet:
    name: str
    prompts: list[str]
    max_tokens: list[int]
    system_prompt: str | None = None
    notes: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prompts)


def _text(rng: random.Random, words: int) -> str:
    sentences, left = [], words
    while left > 0:
        n = min(left, rng.randint(6, 14))
        sentence = " ".join(rng.choice(WORDS) for _ in range(n))
        sentences.append(sentence[0].upper() + sentence[1:] + ".")
        left -= n
    return " ".join(sentences)


def _lognormal_int(rng: random.Random, median: float, sigma: float, low: int, high: int) -> int:
    return max(low, min(high, int(round(rng.lognormvariate(math.log(median), sigma)))))


def long_tail(n: int, seed: int = 7) -> PromptSet:
    rng = random.Random(seed)  # our own generator: libraries seed the global one
    prompts, max_tokens = [], []
    for _ in range(n):
        words = _lognormal_int(rng, median=40, sigma=1.0, low=5, high=700)
        prompts.append(f"Summarize these notes in a few sentences: {_text(rng, words)}")
        max_tokens.append(_lognormal_int(rng, median=40, sigma=0.8, low=8, high=256))
    return PromptSet("long_tail", prompts, max_tokens, notes={"prompt_words": "lognormal median 40, 5..700",
                                                               "max_tokens": "lognormal median 40, 8..256"})


def shared_system(n: int, seed: int = 11) -> PromptSet:
    rng = random.Random(seed)
    system = ("You are the support assistant of a logistics company. Follow this handbook. "
              + _text(rng, 450))
    prompts = [f"Question {i}: {_text(rng, rng.randint(8, 30))} What should I do?" for i in range(n)]
    return PromptSet("shared_system", prompts, [48] * n, system_prompt=system,
                     notes={"system_prompt_words": 460, "max_tokens": 48})


SETS = {"long_tail": long_tail, "shared_system": shared_system}
