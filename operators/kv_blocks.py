"""KV held by requests, counted as the engine holds it: whole blocks, a shared prefix once.

vLLM keeps KV in blocks of `block_tokens` tokens, and its prefix cache keeps one copy of a
prompt's full block for every request whose prompt starts with the same tokens. A plain count
of prompt + max_tokens per request counts a shared system prompt once per request: on the
benchmark's shared-system set (a ~600-token system prompt, short questions) it filled a budget
of two KV caches at 144 requests, where the engine held 320 with room to spare.

A request's need: the keys of its prompt's shareable blocks, and its own blocks (the rest of
its prompt, and every token each choice may make: its worst case).

>>> need = kv_need([7] * 300, max_tokens=20, n=1, block_tokens=128)
>>> len(need.shared), need.own_blocks  # 2 full blocks; 44 prompt tokens + 20 new in one block
(2, 1)
>>> held = KVBlocks(block_tokens=128)
>>> held.cost_tokens(need), held.add(need), held.cost_tokens(need)  # the second copy shares both
(384, None, 128)

An engine that keeps no KV blocks (`block_tokens` 0: a pooling engine computes a request whole
in the step that takes it, and has no prefix cache) holds each request's tokens, once each:

>>> held = KVBlocks(block_tokens=0)
>>> held.add(kv_need([7] * 300, max_tokens=0, n=1, block_tokens=0)); held.tokens
300
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KVNeed:
    shared: tuple[int, ...]  # one key per shareable block, naming the whole prefix that ends with it
    own_blocks: int


def kv_need(token_ids: list[int], max_tokens: int, n: int, block_tokens: int) -> KVNeed:
    """Shareable blocks are the full ones before the prompt's last token: vLLM computes that
    token again even when its block is cached, so a prompt never shares its last block. Each
    of the n choices has its own copy of the rest (vLLM runs a choice as a request of its own).
    `block_tokens` 0: no blocks and nothing shared; its need is its tokens."""
    if block_tokens == 0:
        return KVNeed((), n * (len(token_ids) + max_tokens))
    full = (len(token_ids) - 1) // block_tokens if token_ids else 0
    keys, key = [], 0
    for k in range(full):  # chained, as vLLM's block hashes are: a block is shared only after the same prefix
        key = hash((key, tuple(token_ids[k * block_tokens:(k + 1) * block_tokens])))
        keys.append(key)
    rest = len(token_ids) - full * block_tokens + max_tokens
    return KVNeed(tuple(keys), n * -(-rest // block_tokens))


class KVBlocks:
    """The blocks a set of requests holds: each shared block once while any holder remains."""

    def __init__(self, block_tokens: int):
        self.block_tokens = block_tokens
        self._unit = block_tokens or 1  # tokens a "block" counts: 1 where the engine keeps none
        self.blocks = 0
        self._holders: dict[int, int] = {}  # shared block key -> requests holding it

    @property
    def tokens(self) -> int:
        return self.blocks * self._unit

    def cost_tokens(self, need: KVNeed) -> int:
        """What adding this request would add, in tokens."""
        new_shared = sum(1 for key in need.shared if key not in self._holders)
        return (new_shared + need.own_blocks) * self._unit

    def add(self, need: KVNeed) -> None:
        for key in need.shared:
            held = self._holders.get(key, 0)
            self.blocks += held == 0
            self._holders[key] = held + 1
        self.blocks += need.own_blocks

    def remove(self, need: KVNeed) -> None:
        for key in need.shared:
            left = self._holders[key] - 1
            if left:
                self._holders[key] = left
            else:
                del self._holders[key]
                self.blocks -= 1
        self.blocks -= need.own_blocks
