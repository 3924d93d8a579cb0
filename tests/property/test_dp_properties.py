"""Property tests for blindsum.dp: sampler contracts and accounting inverses."""

from __future__ import annotations

import math
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from blindsum.dp import accounting as acc
from blindsum.dp.sampler import (
    CsprngSource,
    bernoulli,
    bernoulli_exp,
    discrete_gaussian_vector,
)

seeds = st.binary(min_size=32, max_size=32)
l2s = st.integers(min_value=1, max_value=10**7)
rhos = st.floats(min_value=1e-6, max_value=1e3)


@settings(max_examples=200, deadline=None)
@given(seeds, st.integers(min_value=1, max_value=1 << 300))
def test_randbelow_stays_in_range(seed: bytes, n: int) -> None:
    rng = CsprngSource.from_seed(seed)
    assert all(0 <= rng.randbelow(n) < n for _ in range(5))


@settings(max_examples=50, deadline=None)
@given(seeds)
def test_certain_events(seed: bytes) -> None:
    rng = CsprngSource.from_seed(seed)
    assert bernoulli_exp(Fraction(0), rng) is True
    assert bernoulli(Fraction(1), rng) is True
    assert bernoulli(Fraction(0), rng) is False


@settings(max_examples=50, deadline=None)
@given(
    seeds,
    st.lists(
        st.one_of(st.none(), st.fractions(min_value=Fraction(1, 100), max_value=10**8)), max_size=20
    ),
)
def test_vector_shape_and_unnoised_slots(seed: bytes, sigma2s: list[Fraction | None]) -> None:
    out = discrete_gaussian_vector(sigma2s, CsprngSource.from_seed(seed))
    assert len(out) == len(sigma2s)
    assert all(type(v) is int for v in out)
    assert all(v == 0 for v, s in zip(out, sigma2s, strict=True) if s is None)


@given(l2s, rhos)
def test_sigma_central_and_rho_central_are_inverse(l2: int, rho: float) -> None:
    sigma = acc.sigma_central(l2, rho)
    assert math.isclose(acc.rho_central(l2, sigma), rho, rel_tol=1e-12)
    assert math.isclose(acc.sigma_central(l2, acc.rho_central(l2, sigma)), sigma, rel_tol=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    l2s,
    st.integers(min_value=1, max_value=4),
    rhos,
    st.integers(min_value=1, max_value=500),
    st.integers(min_value=1, max_value=200),
)
def test_sigma_party_meets_the_bound_minimally(
    l2: int, l1_factor: int, rho: float, parties: int, dim: int
) -> None:
    l1 = l2 * l1_factor
    sigma = acc.sigma_party(l1, l2, rho, parties, dim)
    assert sigma >= acc.MIN_SIGMA_PARTY
    assert acc.rho_distributed(l1, l2, sigma, parties, dim) <= rho
    if sigma > acc.MIN_SIGMA_PARTY * (1 + 1e-6):
        # Minimal up to the bisection's relative precision.
        assert acc.rho_distributed(l1, l2, sigma * (1 - 1e-6), parties, dim) > rho
