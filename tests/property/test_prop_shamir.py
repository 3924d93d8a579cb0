"""Property tests for Shamir sharing: correctness with t shares, secrecy with t-1, and
recover() with bad shares: the verified secret, the bad shares named, or Aborted."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from blindsum.crypto import _field, shamir
from blindsum.errors import Aborted, InvalidArgument
from blindsum.types import RandFn
from tests.drbg import drbg

P = _field.P


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


@st.composite
def corrupted_sharings(
    draw: st.DrawFn,
) -> tuple[bytes, int, list[shamir.Share], frozenset[int]]:
    """A sharing among m >= t + e holders (x in random order) with e shares moved off
    the polynomial by offsets drawn from a DRBG: random corruption, not offsets chosen
    to cancel (see test_crypto_shamir for that case)."""
    secret = draw(secrets_st)
    t = draw(st.integers(min_value=1, max_value=6))
    e = draw(st.integers(min_value=0, max_value=4))
    m = t + e + draw(st.integers(min_value=0, max_value=3))
    xs = draw(
        st.lists(st.integers(min_value=1, max_value=1 << 32), min_size=m, max_size=m, unique=True)
    )
    seed = draw(st.binary(min_size=1, max_size=8))
    shares = shamir.split(secret, threshold=t, xs=xs, rand=drbg(seed))
    bad = frozenset(draw(st.lists(st.sampled_from(xs), min_size=e, max_size=e, unique=True)))
    offsets = drbg(seed + b"offsets")
    out = []
    for x in xs:
        share = shares[x]
        if x in bad:
            delta = 1 + int.from_bytes(offsets(80), "big") % (P - 1)
            share = shamir.Share(x, (share.y + delta) % P)
        out.append(share)
    return secret, t, out, bad


@settings(max_examples=150, deadline=None)
@given(corrupted_sharings())
def test_recover_returns_the_secret_and_never_names_a_good_share(
    case: tuple[bytes, int, list[shamir.Share], frozenset[int]],
) -> None:
    """With e bad shares among m >= t + e, recover returns the verified secret and names
    only bad shares. It compares every share unless the t smallest x and the next one
    agree; when it does, and m > t + 2e - 2 (the sharing polynomial is then the only
    one that most shares agree with), it names all e."""
    secret, t, shares, bad = case
    e = len(bad)
    m = len(shares)
    got = shamir.recover(
        shares,
        threshold=t,
        secret_len=len(secret),
        verify=lambda s: s == secret,
        max_attempts=sum(math.comb(m, j) for j in range(e + 1)),
    )
    xs = sorted(s.x for s in shares)
    assert got.secret == secret
    assert set(got.bad) <= bad
    assert list(got.bad) == sorted(got.bad)
    if set(got.checked) != set(xs):
        assert got.bad == ()
        assert got.checked == tuple(xs[: t + 1])
    if bad & set(xs[: t + 1]) and m > t + 2 * e - 2:
        assert set(got.bad) == bad
    event(f"{e} bad, all checked: {set(got.checked) == set(xs)}, named {len(got.bad)}")


@settings(max_examples=100, deadline=None)
@given(corrupted_sharings().filter(lambda c: len(c[3]) >= 1), st.data())
def test_recover_aborts_when_fewer_than_t_shares_are_good(
    case: tuple[bytes, int, list[shamir.Share], frozenset[int]], data: st.DataObject
) -> None:
    """Keep fewer than t good shares (and at least t shares): nothing verifies."""
    secret, t, shares, bad = case
    good = [s for s in shares if s.x not in bad]
    kept_good = data.draw(st.integers(min_value=0, max_value=min(t - 1, len(good))))
    kept = [s for s in shares if s.x in bad] + good[:kept_good]
    assume(len(kept) >= t)
    with pytest.raises(Aborted):
        shamir.recover(kept, threshold=t, secret_len=len(secret), verify=lambda s: s == secret)


@settings(max_examples=60, deadline=None)
@given(setups(), st.data(), st.binary(min_size=1, max_size=8))
def test_recover_refuses_two_values_for_one_x(
    setup: tuple[bytes, int, list[int]], data: st.DataObject, seed: bytes
) -> None:
    secret, threshold, xs = setup
    shares = shamir.split(secret, threshold=threshold, xs=xs, rand=drbg(seed))
    x = data.draw(st.sampled_from(xs))
    delta = data.draw(st.integers(min_value=1, max_value=P - 1))
    twin = shamir.Share(x, (shares[x].y + delta) % P)
    listed = list(shares.values())
    listed.insert(data.draw(st.integers(min_value=0, max_value=len(listed))), twin)
    with pytest.raises(InvalidArgument, match="conflicting") as info:
        shamir.recover(listed, threshold=threshold, secret_len=len(secret), verify=lambda s: True)
    assert info.value.field == "shares"
