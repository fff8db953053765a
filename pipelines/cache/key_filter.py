"""A Bloom filter over cache keys, kept in each shard file's footer (pipelines/cache/response_cache.py),
so a lookup of a key a file does not hold costs no read of that file once its footer is known.

Keys are SHA-256 hex digests, already uniform: the filter's HASHES bit positions are taken from
the key's own 32-bit words, no hashing needed. BITS_PER_KEY bits per key and 7 positions give
about 1% false positives (a false positive costs one row-group read, never a wrong answer).

A filter is at most MAX_BITS (64 KB), and readers keep it packed (a bit a bit): a shard file
holds at most MAX_FILE_ROWS keys (51,200, pipelines/cache/response_cache.py), which fit at
BITS_PER_KEY; a larger file, written before files were capped, gets more false positives.

>>> keys = [f"{i:064x}" for i in range(0, 10_000, 7)]
>>> f = KeyFilter.of(keys)
>>> all(f.may_hold(keys))
True
>>> sum(f.may_hold([f"{i:064x}" for i in range(1, 10_000, 7)])) < 20
True
>>> KeyFilter.from_bytes(f.to_bytes()).may_hold(keys[:3])
[True, True, True]
>>> big = KeyFilter.of([f"{i:064x}" for i in range(100_000)])
>>> big.nbytes() == MAX_BITS // 8 and all(big.may_hold([f"{i:064x}" for i in range(0, 100_000, 997)]))
True
"""

from __future__ import annotations

import numpy as np

BITS_PER_KEY = 10
HASHES = 7
MAX_BITS = 8 * 64 * 1024
CHUNK_KEYS = 4096
_NIBBLE = np.full(256, 0, np.uint64)
_NIBBLE[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint64)
_NIBBLE[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16, dtype=np.uint64)


def _positions(keys: list[str], bits: int) -> np.ndarray:
    """(len(keys), HASHES) bit positions: the keys' last HASHES 32-bit words, modulo `bits`."""
    raw = np.frombuffer("".join(k[-8 * HASHES:].rjust(8 * HASHES, "0") for k in keys).encode(), np.uint8)
    nibbles = _NIBBLE[raw].reshape(len(keys), HASHES, 8)
    words = (nibbles << (np.arange(7, -1, -1, dtype=np.uint64) * 4)).sum(axis=2)
    return (words % np.uint64(bits)).astype(np.int64)


class KeyFilter:
    def __init__(self, size: int, packed: np.ndarray):
        self.size = size  # bits
        self.packed = packed  # the bits, 8 a byte, first bit highest (np.packbits)

    @classmethod
    def of(cls, keys: list[str]) -> KeyFilter:
        size = min(MAX_BITS, max(64, BITS_PER_KEY * len(keys)))
        bits = np.zeros(size, bool)
        for start in range(0, len(keys), CHUNK_KEYS):  # positions take 448 bytes a key while made
            bits[_positions(keys[start:start + CHUNK_KEYS], size).ravel()] = True
        return cls(size, np.packbits(bits))

    def may_hold(self, keys: list[str]) -> list[bool]:
        if not keys:
            return []
        at = _positions(keys, self.size)
        return ((self.packed[at >> 3] >> (7 - (at & 7)).astype(np.uint8)) & 1).all(axis=1).tolist()

    def to_bytes(self) -> bytes:
        return self.size.to_bytes(8, "little") + self.packed.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyFilter:
        return cls(int.from_bytes(data[:8], "little"), np.frombuffer(data[8:], np.uint8).copy())

    def nbytes(self) -> int:
        return self.packed.nbytes
