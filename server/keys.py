"""API keys: `Authorization: Bearer <key>`, checked against sha256 hashes (a file of them, one a
line, `#` comments; or SPOTBATCH_API_KEY_HASHES, comma-separated), or one clear key in
SPOTBATCH_API_KEY for a quick start. A key is never written anywhere: its tenant (the folder its
files and batches live in) is named by its hash. Compared in constant time (hmac.compare_digest).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from spotbatch.errors import SpecError

CLEAR_KEY = "SPOTBATCH_API_KEY"
HASHES = "SPOTBATCH_API_KEY_HASHES"


def key_hash(key: str) -> str:
    """The sha256 of a key, in hex: what a keys file holds.

    >>> key_hash("sk-test")[:16]
    'f3abf2a6cc4f0098'
    """
    return hashlib.sha256(key.encode()).hexdigest()


class Keys:
    """The hashes of the keys this server accepts."""

    def __init__(self, hashes: list[str]):
        self._hashes = hashes

    @classmethod
    def load(cls, keys_file: str | None) -> Keys:
        hashes = []
        if keys_file:
            try:
                text = Path(keys_file).read_text()
            except OSError as err:
                raise SpecError(f"api_keys_file {keys_file}: {err.strerror}") from None
            hashes += [line.split("#")[0].strip() for line in text.splitlines()]
        hashes += [h.strip() for h in os.environ.get(HASHES, "").split(",")]
        if os.environ.get(CLEAR_KEY):  # out of the environment, so Ray and vLLM started here never see it
            hashes.append(key_hash(os.environ.pop(CLEAR_KEY)))
        hashes = [h.lower() for h in hashes if h]
        bad = [n for n, h in enumerate(hashes, 1) if len(h) != 64 or any(c not in "0123456789abcdef" for c in h)]
        if bad:
            raise SpecError(f"API key hashes: entry {bad[0]} is not a sha256 in hex (64 characters); make one "
                            f"with `spotbatch serve --hash-key`")
        if not hashes:
            raise SpecError(f"no API keys: give api_keys_file in serve.yaml (sha256 hashes), {HASHES}, or "
                            f"{CLEAR_KEY} for one key")
        return cls(hashes)

    def tenant(self, authorization: str | None) -> str | None:
        """The tenant of the key in an Authorization header (its hash's first 32 hex digits),
        or None for a missing or unknown key. Every stored hash is compared, in constant time."""
        scheme, _, key = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return None
        presented = key_hash(key.strip())
        found = False
        for h in self._hashes:
            found |= hmac.compare_digest(presented, h)
        return presented[:32] if found else None
