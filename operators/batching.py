"""Which requests an engine gets, and in what order: token budgets and ordering, no engine.

Plain functions on token counts and token ids, so they are the same for any engine and can
be checked without one.

>>> reqs = [Request("a", [1] * 10, 5), Request("b", [1] * 300, 5), Request("c", [1] * 40, 5)]
>>> [r.key for r in order_for_engine(reqs, block_tokens=128)]
['b', 'c', 'a']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Request:
    key: Any  # the caller's name for it (a row index)
    token_ids: list[int]
    max_tokens: int
    sampling: dict[str, Any] | None = None  # the row's own, over the operator's
    n: int = 1  # choices

    @property
    def budget_tokens(self) -> int:
        """Tokens it can hold in the KV cache at most: its prompt (shared by its choices) and
        every token each choice may make."""
        return len(self.token_ids) + self.n * self.max_tokens


def order_for_engine(requests: list[Request], block_tokens: int) -> list[Request]:
    """Prompts that share their first KV block are kept together, so the engine's prefix
    cache still holds that block when the next one comes; groups and requests within a group
    go longest first, so the longest requests start early and the unit's tail is short ones
    (longest-processing-time-first). Stable for equal keys."""
    groups: dict[Any, list[Request]] = {}
    for r in requests:
        # A prompt shorter than one block shares no cacheable block: it is a group of its own.
        key = tuple(r.token_ids[:block_tokens]) if len(r.token_ids) >= block_tokens else ("alone", r.key)
        groups.setdefault(key, []).append(r)
    ordered_groups = sorted(groups.values(), key=lambda g: -max(r.budget_tokens for r in g))
    return [r for g in ordered_groups for r in sorted(g, key=lambda r: -r.budget_tokens)]


def admit(pending_tokens: list[int], in_flight_tokens: int, budget: int, engine_idle: bool) -> int:
    """How many of the pending requests (their budget tokens, in order) to hand the engine now:
    as many as fit under the token budget, in order, and always one to an idle engine (a
    request larger than the budget must still run).

    >>> admit([100, 100, 100], in_flight_tokens=150, budget=400, engine_idle=False)
    2
    >>> admit([900], in_flight_tokens=0, budget=400, engine_idle=True)
    1
    """
    n, used = 0, in_flight_tokens
    for tokens in pending_tokens:
        if used + tokens > budget and not (engine_idle and n == 0):
            break
        used += tokens
        n += 1
    return n
