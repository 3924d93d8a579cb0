"""zCDP accounting: central and distributed discrete Gaussian, and the (eps, delta) reading."""

from __future__ import annotations

import itertools
import math

import pytest
from scipy import optimize

from blindsum.dp import accounting as acc
from blindsum.dp.central import opendp_rho
from blindsum.errors import InvalidArgument


@pytest.mark.parametrize(
    ("l2", "sigma"), [(1, 1.0), (5, 9.013878188659973), (25, 3.7), (36000, 129799.84), (7, 0.3)]
)
def test_rho_central_matches_opendp(l2: int, sigma: float) -> None:
    assert acc.rho_central(l2, sigma) == pytest.approx(l2 * l2 / (2 * sigma * sigma), rel=1e-15)
    assert acc.rho_central(l2, sigma) == pytest.approx(opendp_rho(l2, sigma), rel=1e-12)


def test_sigma_central_inverts_rho_central() -> None:
    for l2, rho in ((5, 0.1), (36000, 0.0385), (1, 10.0)):
        sigma = acc.sigma_central(l2, rho)
        assert acc.rho_central(l2, sigma) == pytest.approx(rho, rel=1e-14)
    assert acc.sigma_central(0, 1.0) == 0.0


def test_tau_is_zero_for_one_party_and_shrinks_with_sigma() -> None:
    assert acc.tau(0.5, 1) == 0.0
    # The definition, term by term.
    expected = 10 * math.fsum(math.exp(-2 * math.pi**2 * 0.7**2 * k / (k + 1)) for k in range(1, 9))
    assert acc.tau(0.7, 9) == pytest.approx(expected, rel=1e-12)
    assert acc.tau(0.5, 50) > acc.tau(1.0, 50) > acc.tau(2.0, 50) > 0


def test_tau_tail_bound_is_conservative_for_many_parties() -> None:
    """Beyond 2^16 terms the remainder is bounded above, never underestimated."""
    n = (1 << 16) + 1000
    a = 2 * math.pi**2 * 0.5**2
    exact = 10 * math.fsum(math.exp(-a * k / (k + 1)) for k in range(1, n))
    got = acc.tau(0.5, n)
    assert exact <= got <= exact * (1 + 1e-6)


def test_rho_distributed_with_one_party_is_central() -> None:
    for l2, sigma in ((5, 0.5), (25, 3.0), (36000, 1e4)):
        assert acc.rho_distributed(l2, l2, sigma, 1, 7) == pytest.approx(
            acc.rho_central(l2, sigma), rel=1e-15
        )


def test_rho_distributed_tends_to_central_as_sigma_grows() -> None:
    """tau -> 0: the n-party sum behaves like one discrete Gaussian of sd sqrt(n) sigma."""
    n, dim, l1, l2 = 10, 15, 5, 5
    ratios = []
    for sigma in (0.5, 0.75, 1.0, 1.5, 3.0):
        central = acc.rho_central(l2, math.sqrt(n) * sigma)
        ratios.append(acc.rho_distributed(l1, l2, sigma, n, dim) / central)
    assert all(r >= 1 for r in ratios)
    assert ratios == sorted(ratios, reverse=True)
    assert ratios[0] > 2
    assert ratios[-1] == pytest.approx(1.0, rel=1e-12)


def test_rho_distributed_is_the_min_of_the_three_bounds() -> None:
    l1, l2, s, n, d = 40.0, 12.0, 0.6, 20, 9
    t = acc.tau(s, n)
    a = l2 / (math.sqrt(n) * s)
    bounds = (
        a * a / 2 + t * d,
        (a * a + 2 * l1 * t / (math.sqrt(n) * s) + t * t * d) / 2,
        (a + t * math.sqrt(d)) ** 2 / 2,
    )
    assert acc.rho_distributed(l1, l2, s, n, d) == pytest.approx(min(bounds), rel=1e-14)


def test_rho_distributed_needs_sigma_at_least_half() -> None:
    with pytest.raises(InvalidArgument) as info:
        acc.rho_distributed(5, 5, 0.49, 3, 1)
    assert info.value.field == "sigma_party"
    for kwargs, field in (({"parties": 0}, "parties"), ({"dim": 0}, "dim")):
        args = {"l1": 5, "l2": 5, "sigma_party": 1.0, "parties": 3, "dim": 1} | kwargs
        with pytest.raises(InvalidArgument) as info:
            acc.rho_distributed(**args)  # type: ignore[arg-type]
        assert info.value.field == field


@pytest.mark.parametrize(
    ("l1", "l2", "rho", "n", "dim"),
    [(5, 5, 0.15, 5, 3), (5, 5, 0.077, 200, 33), (36000, 36000, 0.04, 50, 3), (3, 3, 0.5, 1, 1)],
)
def test_sigma_party_achieves_rho(l1: int, l2: int, rho: float, n: int, dim: int) -> None:
    sigma = acc.sigma_party(l1, l2, rho, n, dim)
    assert sigma > acc.MIN_SIGMA_PARTY
    achieved = acc.rho_distributed(l1, l2, sigma, n, dim)
    assert achieved <= rho
    assert achieved == pytest.approx(rho, rel=1e-7)
    assert acc.rho_distributed(l1, l2, sigma * (1 - 1e-6), n, dim) > rho


def test_sigma_party_clamps_at_half_for_a_large_rho() -> None:
    sigma = acc.sigma_party(5, 5, 1e4, 5, 3)
    assert sigma == acc.MIN_SIGMA_PARTY
    assert acc.rho_distributed(5, 5, sigma, 5, 3) < 1e4


def test_sigma_party_validation() -> None:
    for rho in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(InvalidArgument) as info:
            acc.sigma_party(5, 5, rho, 5, 3)
        assert info.value.field == "rho"
    with pytest.raises(InvalidArgument) as info:
        acc.sigma_party(5, 5, 0.5, 0, 3)
    assert info.value.field == "parties"


# ------------------------------------------------------------------------ epsilon


def _independent_epsilon(rho: float, delta: float) -> float:
    """[CKS20] Corollary 13 in its delta form, inverted numerically.

    delta(eps) = min over alpha > 1 of exp((alpha-1)(alpha rho - eps)) / (alpha-1)
    * (1-1/alpha)^alpha (in logs); the answer is the eps where delta(eps) = delta.
    """

    def log_delta(eps: float) -> float:
        def f(alpha: float) -> float:
            return (
                (alpha - 1) * (alpha * rho - eps)
                - math.log(alpha - 1)
                + alpha * math.log1p(-1 / alpha)
            )

        return float(optimize.minimize_scalar(f, bounds=(1 + 1e-9, 1e4), method="bounded").fun)

    return float(optimize.brentq(lambda e: log_delta(e) - math.log(delta), 1e-6, 100, xtol=1e-12))


def test_epsilon_known_value() -> None:
    eps = acc.epsilon(0.5, 1e-6)
    assert eps == pytest.approx(_independent_epsilon(0.5, 1e-6), rel=1e-6)
    assert eps == pytest.approx(5.2215, abs=1e-4)
    assert eps < 0.5 + 2 * math.sqrt(0.5 * math.log(1e6))


@pytest.mark.parametrize(("rho", "delta"), [(0.01, 1e-9), (0.1, 1e-6), (2.0, 1e-5)])
def test_epsilon_matches_independent_computation(rho: float, delta: float) -> None:
    assert acc.epsilon(rho, delta) == pytest.approx(_independent_epsilon(rho, delta), rel=1e-6)


def test_epsilon_is_monotone_and_below_the_classic_bound() -> None:
    rhos = [0.0, 1e-6, 1e-4, 0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 10.0, 100.0]
    for delta in (1e-9, 1e-6, 0.01):
        eps = [acc.epsilon(r, delta) for r in rhos]
        assert eps[0] == 0.0
        # Non-decreasing; strictly increasing once positive (a tiny rho with a large
        # delta needs no epsilon at all).
        assert all(a < b or a == b == 0 for a, b in itertools.pairwise(eps))
        assert eps[-1] > 0
        for r, e in zip(rhos, eps, strict=True):
            assert e <= r + 2 * math.sqrt(r * math.log(1 / delta)) + 1e-12


def test_epsilon_validation() -> None:
    for delta in (0.0, 1.0, -0.1, 2.0):
        with pytest.raises(InvalidArgument) as info:
            acc.epsilon(0.5, delta)
        assert info.value.field == "delta"
    with pytest.raises(InvalidArgument) as info:
        acc.epsilon(-0.1, 1e-6)
    assert info.value.field == "rho"
