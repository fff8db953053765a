"""Which requests an engine gets, and in what order: token budgets and ordering, no engine.

Plain functions on token counts and token ids, so they are the same for any engine and can
be checked without one.

>>> reqs = [Request("a", [1] * 10, 5), Request("b", [1] * 300, 5), Request("c", [1] * 40, 5)]
>>> [r.key for r in order_for_engine(reqs, block_tokens=128)]
['b', 'c', 'a']
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from operators.kv_blocks import KVBlocks, KVNeed, kv_need


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

    def kv_need(self, block_tokens: int) -> KVNeed:
        """Its KV as the engine holds it: blocks, the shareable prefix apart (kv_blocks.py)."""
        return kv_need(self.token_ids, self.max_tokens, self.n, block_tokens)


def order_for_engine(requests: list[Request], block_tokens: int) -> list[Request]:
    """Prompts that share their first KV block are kept together, so the engine's prefix
    cache still holds that block when the next one comes; groups and requests within a group
    go longest first, so the longest requests start early and the unit's tail is short ones
    (longest-processing-time-first). Stable for equal keys. `block_tokens` 0 (an engine
    without a prefix cache): one group, longest first."""
    groups: dict[Any, list[Request]] = {}
    for r in requests:
        # A prompt shorter than one block shares no cacheable block: it is a group of its own.
        key = tuple(r.token_ids[:block_tokens]) if len(r.token_ids) >= block_tokens else ("alone", r.key)
        groups.setdefault(key, []).append(r)
    ordered_groups = sorted(groups.values(), key=lambda g: -max(r.budget_tokens for r in g))
    return [r for g in ordered_groups for r in sorted(g, key=lambda r: -r.budget_tokens)]


def admit(pending: Iterable[KVNeed], held: KVBlocks, budget: int, engine_idle: bool) -> int:
    """How many of the pending requests (in order) to hand the engine now: as many as fit under
    the token budget with KV counted as the engine holds it (a prefix already held, or shared
    with one admitted just before, costs nothing again), and always one to an idle engine (a
    request larger than the budget must still run). Each one admitted is added to `held`.

    >>> held = KVBlocks(block_tokens=100)
    >>> admit([kv_need([1] * 350, 50, 1, 100)] * 10, held, budget=1000, engine_idle=False)
    7
    >>> held.blocks  # 3 shared blocks once, and one of its own each (50 prompt tokens + 50 new)
    10
    >>> admit([kv_need([2] * 900, 50, 1, 100)], KVBlocks(100), budget=400, engine_idle=True)
    1
    """
    n = 0
    for need in pending:
        if held.tokens + held.cost_tokens(need) > budget and not (engine_idle and n == 0):
            break
        held.add(need)
        n += 1
    return n
