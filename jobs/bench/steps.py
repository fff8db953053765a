"""A long benchmark says what it is doing: one line a step, its name and size as it starts,
its seconds when it ends (on the same line), so a run that takes minutes is never silent."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class Steps:
    """`with steps("plan: 1,000 units"): ...` prints `scale: plan: 1,000 units ... 0.4 s`."""

    def __init__(self, prefix: str, out: TextIO | None = None):
        self.prefix = prefix
        self.out = out
        self.began = time.monotonic()
        self.done = 0

    @contextmanager
    def __call__(self, what: str) -> Iterator[None]:
        out = self.out or sys.stdout  # looked up now: a test's captured stdout, or the terminal
        print(f"{self.prefix}: {what} ...", end="", flush=True, file=out)
        began = time.monotonic()
        try:
            yield
        except BaseException:
            print(f" failed after {time.monotonic() - began:.1f} s", flush=True, file=out)
            raise
        self.done += 1
        print(f" {time.monotonic() - began:.1f} s", flush=True, file=out)

    def total_seconds(self) -> float:
        return time.monotonic() - self.began
