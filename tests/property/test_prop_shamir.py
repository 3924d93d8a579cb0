"""Property tests for Shamir sharing: correctness with t shares, secrecy with t-1."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blindsum.crypto import _field, shamir
from blindsum.errors import InvalidArgument
from blindsum.types import RandFn

P = _field.P


def drbg(seed: bytes) -> RandFn:
    counter = itertools.count()

    def rand(n: int) -> bytes:
        return hashlib.shake_256(seed + next(counter).to_bytes(8, "big")).digest(n)

    return rand


def tape(values: Sequence[int]) -> RandFn:
    """A rand that returns the given coefficients, one 80-byte draw each."""
    it = iter(values)

    def rand(n: int) -> bytes:
        return next(it).to_bytes(n, "big")

    return rand


def _poly_mul_linear(poly: list[int], root: int) -> list[int]:
    """poly(x) * (x - root) over GF(P), coefficients low to high."""
    out = [0] * (len(poly) + 1)
    for i, c in enumerate(poly):
        out[i + 1] = (out[i + 1] + c) % P
        out[i] = (out[i] - c * root) % P
    return out


def interpolate(points: Sequence[tuple[int, int]]) -> list[int]:
    """Coefficients (low to high) of the unique polynomial of degree < len(points)."""
    coeffs = [0] * len(points)
    for i, (xi, yi) in enumerate(points):
        basis = [1]
        denom = 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                basis = _poly_mul_linear(basis, xj)
                denom = denom * (xi - xj) % P
        scale = yi * _field.inv(denom) % P
        for k, c in enumerate(basis):
            coeffs[k] = (coeffs[k] + c * scale) % P
    return coeffs


secrets_st = st.binary(min_size=1, max_size=64)


@st.composite
def setups(draw: st.DrawFn) -> tuple[bytes, int, list[int]]:
    secret = draw(secrets_st)
    n = draw(st.integers(min_value=1, max_value=9))
    xs = draw(
        st.lists(st.integers(min_value=1, max_value=1 << 32), min_size=n, max_size=n, unique=True)
    )
    threshold = draw(st.integers(min_value=1, max_value=n))
    return secret, threshold, xs


@settings(max_examples=150, deadline=None)
@given(setups(), st.data(), st.binary(min_size=1, max_size=8))
def test_any_t_shares_reconstruct(
    setup: tuple[bytes, int, list[int]], data: st.DataObject, seed: bytes
) -> None:
    secret, threshold, xs = setup
    shares = shamir.split(secret, threshold=threshold, xs=xs, rand=drbg(seed))
    subset = data.draw(
        st.lists(st.sampled_from(xs), min_size=threshold, max_size=len(xs), unique=True)
    )
    got = shamir.reconstruct(
        [shares[x] for x in subset], threshold=threshold, secret_len=len(secret)
    )
    assert got == secret


@settings(max_examples=60, deadline=None)
@given(setups(), st.data(), st.binary(min_size=1, max_size=8))
def test_fewer_than_t_shares_are_refused(
    setup: tuple[bytes, int, list[int]], data: st.DataObject, seed: bytes
) -> None:
    secret, threshold, xs = setup
    shares = shamir.split(secret, threshold=threshold, xs=xs, rand=drbg(seed))
    subset = data.draw(st.lists(st.sampled_from(xs), max_size=threshold - 1, unique=True))
    with pytest.raises(InvalidArgument):
        shamir.reconstruct([shares[x] for x in subset], threshold=threshold, secret_len=len(secret))


@settings(max_examples=100, deadline=None)
@given(
    setups().filter(lambda s: s[1] >= 2),
    secrets_st,
    st.binary(min_size=1, max_size=8),
    st.data(),
)
def test_t_minus_one_shares_are_consistent_with_every_secret(
    setup: tuple[bytes, int, list[int]], other: bytes, seed: bytes, data: st.DataObject
) -> None:
    """Perfect secrecy, structurally: for any t-1 observed shares of ``secret`` and any
    candidate ``other``, exactly one random tape makes split(other) emit the same t-1
    shares. So the tape -> shares map is a bijection for every secret and the
    distribution of any t-1 shares does not depend on the secret."""
    secret, threshold, xs = setup
    shares = shamir.split(secret, threshold=threshold, xs=xs, rand=drbg(seed))
    seen = data.draw(
        st.lists(st.sampled_from(xs), min_size=threshold - 1, max_size=threshold - 1, unique=True)
    )
    other_int = int.from_bytes(other, "big")
    coeffs = interpolate([(0, other_int)] + [(x, shares[x].y) for x in seen])
    assert coeffs[0] == other_int
    forged = shamir.split(other, threshold=threshold, xs=xs, rand=tape(coeffs[1:]))
    for x in seen:
        assert forged[x] == shares[x]
    # The forged sharing is a valid sharing of the other secret.
    assert (
        shamir.reconstruct(list(forged.values()), threshold=threshold, secret_len=len(other))
        == other
    )


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=1 << 32), min_size=1, max_size=12, unique=True))
def test_lagrange_weights_sum_to_one(xs: list[int]) -> None:
    # Interpolating the constant polynomial 1 gives 1.
    assert sum(shamir.lagrange_weights(tuple(xs))) % P == 1
