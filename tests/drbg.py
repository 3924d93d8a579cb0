"""A deterministic byte source for tests (never for production: secrets.token_bytes)."""

from __future__ import annotations

import hashlib
import itertools

from blindsum.types import RandFn


def drbg(seed: bytes) -> RandFn:
    """SHAKE-256 of ``seed`` and a counter: the same seed gives the same bytes."""
    counter = itertools.count()

    def rand(n: int) -> bytes:
        return hashlib.shake_256(seed + next(counter).to_bytes(8, "big")).digest(n)

    return rand
