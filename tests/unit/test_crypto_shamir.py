from __future__ import annotations

import hashlib
import itertools

import pytest

from blindsum.crypto import _field, shamir
from blindsum.errors import InvalidArgument
from blindsum.types import RandFn


def drbg(seed: bytes) -> RandFn:
    counter = itertools.count()

    def rand(n: int) -> bytes:
        return hashlib.shake_256(seed + next(counter).to_bytes(8, "big")).digest(n)

    return rand


def test_share_bytes_is_field_size() -> None:
    assert shamir.SHARE_BYTES == 66
    assert _field.P.bit_length() == 521


def test_split_reconstruct_basic() -> None:
    secret = bytes(range(32))
    shares = shamir.split(secret, threshold=3, xs=[1, 2, 3, 4, 5], rand=drbg(b"s"))
    assert sorted(shares) == [1, 2, 3, 4, 5]
    assert shamir.reconstruct([shares[5], shares[2], shares[4]], threshold=3, secret_len=32) == (
        secret
    )


def test_leading_zero_bytes_survive() -> None:
    secret = bytes(31) + b"\x01"
    shares = shamir.split(secret, threshold=2, xs=[7, 9], rand=drbg(b"z"))
    assert shamir.reconstruct(list(shares.values()), threshold=2, secret_len=32) == secret


def test_threshold_one_shares_are_the_secret() -> None:
    secret = b"\x05" * 16
    shares = shamir.split(secret, threshold=1, xs=[1, 2], rand=drbg(b"t"))
    assert all(s.y == int.from_bytes(secret, "big") for s in shares.values())


def test_share_bytes_round_trip_and_validation() -> None:
    share = shamir.split(b"k" * 32, threshold=2, xs=[1, 2], rand=drbg(b"b"))[2]
    data = share.to_bytes()
    assert len(data) == 66
    assert shamir.Share.from_bytes(2, data) == share
    with pytest.raises(InvalidArgument):
        shamir.Share.from_bytes(2, data[:-1])
    with pytest.raises(InvalidArgument):
        shamir.Share.from_bytes(2, _field.P.to_bytes(66, "big"))
    for bad_x in (0, -1, (1 << 32) + 1):
        with pytest.raises(InvalidArgument):
            shamir.Share.from_bytes(bad_x, data)


def test_share_value_hidden_from_repr() -> None:
    share = shamir.Share(x=3, y=123456789123456789)
    assert "123456789123456789" not in repr(share)


@pytest.mark.parametrize(
    ("secret", "threshold", "xs", "field"),
    [
        (b"", 1, [1], "secret"),
        (bytes(65), 1, [1], "secret"),
        (b"s", 0, [1], "threshold"),
        (b"s", 3, [1, 2], "threshold"),
        (b"s", 2, [1, 1, 2], "xs"),
        (b"s", 1, [0, 1], "xs"),
        (b"s", 1, [1 << 33], "xs"),
    ],
)
def test_split_validation(secret: bytes, threshold: int, xs: list[int], field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        shamir.split(secret, threshold=threshold, xs=xs, rand=drbg(b"v"))
    assert info.value.field == field


def test_reconstruct_needs_threshold_distinct_shares() -> None:
    shares = shamir.split(b"q" * 32, threshold=3, xs=[1, 2, 3], rand=drbg(b"r"))
    with pytest.raises(InvalidArgument) as info:
        shamir.reconstruct([shares[1], shares[2], shares[2]], threshold=3, secret_len=32)
    assert info.value.field == "shares"


def test_reconstruct_rejects_conflicting_duplicates() -> None:
    shares = shamir.split(b"q" * 32, threshold=2, xs=[1, 2, 3], rand=drbg(b"r"))
    forged = shamir.Share(x=1, y=(shares[1].y + 1) % _field.P)
    with pytest.raises(InvalidArgument):
        shamir.reconstruct([shares[1], forged, shares[2]], threshold=2, secret_len=32)


def test_reconstruct_rejects_oversized_result() -> None:
    shares = shamir.split(b"\xff" * 32, threshold=2, xs=[1, 2], rand=drbg(b"o"))
    with pytest.raises(InvalidArgument) as info:
        shamir.reconstruct(list(shares.values()), threshold=2, secret_len=16)
    assert info.value.field == "secret"


def test_reconstruct_uses_smallest_xs_and_caches_weights() -> None:
    shares = shamir.split(b"c" * 32, threshold=3, xs=range(1, 9), rand=drbg(b"c"))
    shamir.lagrange_weights.cache_clear()
    for subset in ([8, 1, 2, 3, 7], [3, 2, 1], [1, 2, 3, 4, 5, 6]):
        got = shamir.reconstruct([shares[x] for x in subset], threshold=3, secret_len=32)
        assert got == b"c" * 32
    info = shamir.lagrange_weights.cache_info()
    assert info.misses == 1
    assert info.hits == 2


def test_lagrange_weights_interpolate_constant_term() -> None:
    xs = (2, 5, 11)
    weights = shamir.lagrange_weights(xs)
    # f(x) = 7 + 3x + 2x^2
    values = [(7 + 3 * x + 2 * x * x) % _field.P for x in xs]
    assert sum(w * v for w, v in zip(weights, values, strict=True)) % _field.P == 7
    with pytest.raises(InvalidArgument):
        shamir.lagrange_weights((1, 1))
    with pytest.raises(InvalidArgument):
        shamir.lagrange_weights(())


def test_field_helpers() -> None:
    a, b = _field.P - 1, 5
    assert _field.add(a, b) == 4
    assert _field.sub(b, a) == 6
    assert _field.mul(_field.inv(b), b) == 1
    assert _field.poly_eval([1, 2, 3], 2) == 17
    with pytest.raises(ZeroDivisionError):
        _field.inv(_field.P)
