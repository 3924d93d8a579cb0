from __future__ import annotations

import pytest

from blindsum.crypto import kex
from blindsum.crypto.encoding import format_dst
from blindsum.errors import InvalidArgument
from tests.drbg import drbg

# RFC 7748, section 6.1.
ALICE_PRIVATE = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
ALICE_PUBLIC = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
BOB_PRIVATE = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
BOB_PUBLIC = bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
SHARED = bytes.fromhex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")

# Small-order points on Curve25519 (encodings of the identity and order-2/4/8 points).
LOW_ORDER_POINTS = [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
]


def test_rfc7748_vector() -> None:
    alice = kex.KeyPair.from_private(ALICE_PRIVATE)
    bob = kex.KeyPair.from_private(BOB_PRIVATE)
    assert alice.public == ALICE_PUBLIC
    assert bob.public == BOB_PUBLIC
    assert kex.agree(ALICE_PRIVATE, BOB_PUBLIC) == SHARED
    assert kex.agree(BOB_PRIVATE, ALICE_PUBLIC) == SHARED


def test_generate_uses_rand_and_agrees() -> None:
    a = kex.KeyPair.generate(drbg(b"a"))
    a_again = kex.KeyPair.generate(drbg(b"a"))
    b = kex.KeyPair.generate(drbg(b"b"))
    assert a == a_again
    assert a.public != b.public
    assert kex.agree(a.private, b.public) == kex.agree(b.private, a.public)


def test_private_key_not_in_repr() -> None:
    pair = kex.KeyPair.from_private(ALICE_PRIVATE)
    text = repr(pair) + str(pair)
    assert ALICE_PRIVATE.hex() not in text
    assert str(ALICE_PRIVATE) not in text
    assert "private" not in text


@pytest.mark.parametrize("point", LOW_ORDER_POINTS)
def test_agree_rejects_low_order_points(point: bytes) -> None:
    with pytest.raises(InvalidArgument) as info:
        kex.agree(ALICE_PRIVATE, point)
    assert info.value.field == "public_key"
    with pytest.raises(InvalidArgument) as info:
        kex.validate_public(point)
    assert info.value.field == "public_key"


def test_validate_public_accepts_real_key() -> None:
    kex.validate_public(ALICE_PUBLIC)  # must not raise
    kex.validate_public(kex.KeyPair.generate(drbg(b"x")).public)


@pytest.mark.parametrize("bad", [b"", bytes(31), bytes(33), "x" * 32])
def test_agree_rejects_wrong_length_public(bad: object) -> None:
    with pytest.raises(InvalidArgument) as info:
        kex.agree(ALICE_PRIVATE, bad)  # type: ignore[arg-type]  # wrong type on purpose
    assert info.value.field == "public_key"


def test_agree_and_from_private_reject_wrong_length_private() -> None:
    with pytest.raises(InvalidArgument) as info:
        kex.agree(bytes(31), BOB_PUBLIC)
    assert info.value.field == "private_key"
    with pytest.raises(InvalidArgument):
        kex.KeyPair.from_private(bytes(33))


def test_derive_key_is_hkdf_and_separated() -> None:
    a = kex.derive_key(SHARED, format_dst("test/a"))
    assert len(a) == 32
    assert a == kex.derive_key(SHARED, format_dst("test/a"))
    assert a != kex.derive_key(SHARED, format_dst("test/b"))
    long = kex.derive_key(SHARED, format_dst("test/a"), 64)
    assert len(long) == 64
    assert long[:32] == a  # HKDF-Expand output is prefix-consistent


@pytest.mark.parametrize("length", [0, -1, 255 * 32 + 1])
def test_derive_key_rejects_bad_length(length: int) -> None:
    with pytest.raises(InvalidArgument) as info:
        kex.derive_key(SHARED, format_dst("test"), length)
    assert info.value.field == "length"
