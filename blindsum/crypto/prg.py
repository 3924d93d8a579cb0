"""Pseudo-random generator for masks: HKDF-SHA256 key, AES-256-CTR keystream.

``expand(seed, dst, n)`` derives a 32-byte AES key with HKDF-SHA256
(``salt=None, info=dst``) and returns the AES-256-CTR keystream (initial counter
block all zero) of ``8 * n`` bytes read as little-endian ``uint64`` words. The
key is used for exactly one keystream, so the fixed counter block is safe.
Every caller passes a domain-separation string built with
:func:`blindsum.crypto.encoding.format_dst`.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from blindsum.crypto.encoding import format_dst
from blindsum.errors import InvalidArgument
from blindsum.types import U64Vector

#: Minimum seed length in bytes (128 bits of entropy).
MIN_SEED_BYTES = 16

_ZERO_BLOCK = bytes(16)
_CHUNK_WORDS = 1 << 20  # 8 MiB of keystream per encrypt call bounds the scratch buffer


def _check_int(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument("must be an integer", field=field)
    return value


def expand(seed: bytes, dst: bytes, length: int) -> U64Vector:
    """Expand ``seed`` into ``length`` uniformly random uint64 words.

    Preconditions: ``seed`` is bytes of length >= 16 (secret, high entropy);
    ``dst`` is a domain-separation string; ``length >= 0``.
    """
    if not isinstance(seed, bytes) or len(seed) < MIN_SEED_BYTES:
        raise InvalidArgument(f"must be at least {MIN_SEED_BYTES} bytes", field="seed")
    if not isinstance(dst, bytes):
        raise InvalidArgument("must be bytes", field="dst")
    length = _check_int(length, "length")
    if length < 0:
        raise InvalidArgument("must be non-negative", field="length")
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=dst).derive(seed)
    encryptor = Cipher(algorithms.AES256(key), modes.CTR(_ZERO_BLOCK)).encryptor()
    total = 8 * length
    out = bytearray(total + 15)  # update_into needs block_size - 1 bytes of slack
    view = memoryview(out)
    zeros = bytes(min(total, 8 * _CHUNK_WORDS))
    done = 0
    while done < total:
        step = min(total - done, len(zeros))
        done += encryptor.update_into(zeros[:step] if step != len(zeros) else zeros, view[done:])
    encryptor.finalize()
    words = np.frombuffer(out, dtype="<u8", count=length)
    return words.astype(np.uint64, copy=words.dtype != np.uint64)


def self_mask(seed: bytes, *, round_id: str, party: str, length: int) -> U64Vector:
    """The self mask PRG(b_u) of ``party`` in ``round_id``. ``seed`` is the 32-byte b_u."""
    return expand(seed, format_dst("mask/self", round_id, party), length)


def pair_mask(shared_secret: bytes, *, round_id: str, a: str, b: str, length: int) -> U64Vector:
    """The pairwise mask PRG(s_ab) for parties ``a`` and ``b`` (symmetric in ``a``, ``b``).

    ``shared_secret`` is the raw X25519 agreement of the two parties' s keys.
    The caller applies the sign (+ for the lower-index party, - for the higher).
    """
    lo, hi = (a, b) if a <= b else (b, a)
    return expand(shared_secret, format_dst("mask/pair", round_id, lo, hi), length)
