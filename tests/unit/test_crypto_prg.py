from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from blindsum.crypto import prg
from blindsum.crypto.encoding import format_dst
from blindsum.errors import InvalidArgument

SEED = bytes(range(32))


def _reference(seed: bytes, dst: bytes, length: int) -> list[int]:
    """Independent re-statement of the PRG definition, word by word."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=dst).derive(seed)
    stream = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(bytes(8 * length))
    return [int.from_bytes(stream[8 * i : 8 * i + 8], "little") for i in range(length)]


def test_expand_matches_definition() -> None:
    dst = format_dst("test/prg")
    out = prg.expand(SEED, dst, 37)
    assert out.dtype == np.uint64
    assert out.shape == (37,)
    assert [int(v) for v in out] == _reference(SEED, dst, 37)


def test_expand_is_deterministic_and_prefix_consistent() -> None:
    dst = format_dst("test/prg")
    a = prg.expand(SEED, dst, 100)
    b = prg.expand(SEED, dst, 100)
    assert np.array_equal(a, b)
    assert np.array_equal(prg.expand(SEED, dst, 10), a[:10])


def test_expand_across_chunk_boundary() -> None:
    dst = format_dst("test/prg/long")
    n = (1 << 20) + 3  # one more than the internal chunk size
    out = prg.expand(SEED, dst, n)
    assert out.shape == (n,)
    tail_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=dst).derive(SEED)
    enc = Cipher(algorithms.AES(tail_key), modes.CTR(bytes(16))).encryptor()
    stream = enc.update(bytes(8 * n))
    expected = np.frombuffer(stream, dtype="<u8")
    assert np.array_equal(out, expected)


def test_expand_output_is_writable() -> None:
    out = prg.expand(SEED, format_dst("test/prg"), 4)
    out += np.uint64(1)  # callers accumulate into PRG output in place
    assert out.flags.writeable


def test_expand_zero_length() -> None:
    out = prg.expand(SEED, format_dst("test/prg"), 0)
    assert out.shape == (0,)
    assert out.dtype == np.uint64


def test_domain_separation() -> None:
    a = prg.expand(SEED, format_dst("test/a"), 16)
    b = prg.expand(SEED, format_dst("test/b"), 16)
    c = prg.expand(bytes(reversed(SEED)), format_dst("test/a"), 16)
    assert not np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_self_mask_separates_round_and_party() -> None:
    base = prg.self_mask(SEED, round_id="r1", party="alice", length=8)
    assert np.array_equal(base, prg.expand(SEED, format_dst("mask/self", "r1", "alice"), 8))
    assert not np.array_equal(base, prg.self_mask(SEED, round_id="r2", party="alice", length=8))
    assert not np.array_equal(base, prg.self_mask(SEED, round_id="r1", party="bob", length=8))


def test_pair_mask_is_order_insensitive_and_separated() -> None:
    ab = prg.pair_mask(SEED, round_id="r1", a="alice", b="bob", length=8)
    ba = prg.pair_mask(SEED, round_id="r1", a="bob", b="alice", length=8)
    assert np.array_equal(ab, ba)
    assert np.array_equal(ab, prg.expand(SEED, format_dst("mask/pair", "r1", "alice", "bob"), 8))
    assert not np.array_equal(ab, prg.pair_mask(SEED, round_id="r2", a="alice", b="bob", length=8))
    assert not np.array_equal(
        ab, prg.pair_mask(SEED, round_id="r1", a="alice", b="carol", length=8)
    )
    # The pair mask and the self mask of the same seed never coincide.
    assert not np.array_equal(ab, prg.self_mask(SEED, round_id="r1", party="alice", length=8))


@pytest.mark.parametrize("seed", [b"", bytes(15), "a" * 32])
def test_rejects_short_or_non_bytes_seed(seed: object) -> None:
    with pytest.raises(InvalidArgument) as info:
        prg.expand(seed, format_dst("test"), 4)  # type: ignore[arg-type]  # wrong type on purpose
    assert info.value.field == "seed"


@pytest.mark.parametrize("length", [-1, 2.0, True])
def test_rejects_bad_length(length: object) -> None:
    with pytest.raises(InvalidArgument) as info:
        prg.expand(SEED, format_dst("test"), length)  # type: ignore[arg-type]  # wrong type on purpose
    assert info.value.field == "length"


def test_rejects_non_bytes_dst() -> None:
    with pytest.raises(InvalidArgument) as info:
        prg.expand(SEED, "dst", 4)  # type: ignore[arg-type]  # wrong type on purpose
    assert info.value.field == "dst"
