"""Privacy accounting in zero-concentrated DP (zCDP), and its (epsilon, delta) reading.

blindsum states every guarantee as rho-zCDP because zCDP composes by adding rho (across
metrics, and across the rounds of a budget window) and the discrete Gaussian's guarantee
is exact in it. Two noise placements are accounted:

* central: the release adds one N_Z(0, sigma^2) per slot to exact totals;
* distributed: each of n parties adds its own N_Z(0, sigma_party^2) before masking, and
  the sum of discrete Gaussians is *not* a discrete Gaussian, so the bound of Kairouz,
  Liu and Steinke applies instead (see :func:`rho_distributed`).

References:

* [CKS20] C. Canonne, G. Kamath, T. Steinke. The Discrete Gaussian for Differential
  Privacy. NeurIPS 2020, arXiv:2004.00010.
* [KLS21] P. Kairouz, Z. Liu, T. Steinke. The Distributed Discrete Gaussian Mechanism
  for Federated Learning with Secure Aggregation. ICML 2021, arXiv:2102.06387.
"""

from __future__ import annotations

import math

import numpy as np

from blindsum.errors import InvalidArgument

__all__ = [
    "MIN_SIGMA_PARTY",
    "epsilon",
    "rho_central",
    "rho_distributed",
    "sigma_central",
    "sigma_party",
    "tau",
]

#: Smallest per-party sigma for which [KLS21] Proposition 14 holds.
MIN_SIGMA_PARTY = 0.5

_SIGMA_RTOL = 1e-9  # relative precision of the sigma_party bisection
_MAX_SIGMA = 1e300  # beyond this no finite noise reaches the target
_TAU_EXACT_TERMS = 1 << 16  # tau terms summed one by one; the rest are bounded above


def _number(value: object, field: str, *, positive: bool = False) -> float:
    """``float(value)`` if it is a finite real >= 0 (> 0 with ``positive``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument("must be a number", field=field)
    number = float(value)
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        raise InvalidArgument(f"must be finite and {'>' if positive else '>='} 0", field=field)
    return number


def _count(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgument("must be an integer >= 1", field=field)
    return value


def rho_central(l2: float, sigma: float) -> float:
    """zCDP rho of adding N_Z(0, sigma^2) to each coordinate of an integer query with L2
    sensitivity ``l2``: ``l2^2 / (2 sigma^2)``.

    [CKS20] show this is exactly the continuous Gaussian's rho (their Theorem 4 and its
    multivariate form), so discretizing costs nothing.
    """
    l2 = _number(l2, "l2")
    sigma = _number(sigma, "sigma", positive=True)
    return l2 * l2 / (2 * sigma * sigma)


def sigma_central(l2: float, rho: float) -> float:
    """The sigma with ``rho_central(l2, sigma) == rho``: ``l2 / sqrt(2 rho)``."""
    l2 = _number(l2, "l2")
    rho = _number(rho, "rho", positive=True)
    return l2 / math.sqrt(2 * rho)


def tau(sigma_party: float, parties: int) -> float:
    """[KLS21]'s tau = 10 * sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 k / (k+1)).

    It measures how far the sum of n discrete Gaussians is from a discrete Gaussian.
    For very many parties the first 2^16 terms are summed exactly and each remaining
    term is bounded by the first of them (the terms decrease in k), so the
    result is never below the true tau (the accounting stays conservative).
    """
    sigma = _number(sigma_party, "sigma_party", positive=True)
    n = _count(parties, "parties")
    a = 2 * math.pi**2 * sigma * sigma
    exact = min(n - 1, _TAU_EXACT_TERMS)
    k = np.arange(1, exact + 1, dtype=np.float64)
    total = float(np.exp(-a * k / (k + 1)).sum())
    rest = n - 1 - exact
    if rest > 0:
        total += rest * math.exp(-a * (exact + 1) / (exact + 2))
    return 10 * total


def rho_distributed(l1: float, l2: float, sigma_party: float, parties: int, dim: int) -> float:
    """zCDP rho of the sum of ``parties`` independent N_Z(0, sigma_party^2) per coordinate.

    [KLS21] Proposition 14 (as used in the authors' accounting code): for sigma >= 1/2,
    n parties, a d-dimensional integer query with sensitivities Delta_1 = ``l1`` and
    Delta_2 = ``l2``, and every alpha >= 1, the Renyi divergence is at most

        min{ alpha/2 * D2^2/(n s^2) + tau d,
             alpha/2 * (D2^2/(n s^2) + 2 D1 tau/(sqrt(n) s) + tau^2 d),
             alpha/2 * (D2/(sqrt(n) s) + tau sqrt(d))^2 }.

    Each term is at most rho * alpha for the rho below (the additive tau*d of the first
    is at most alpha*tau*d since alpha >= 1), and the minimum of valid bounds is valid,
    so the mechanism is rho-zCDP with

        rho = min{ D2^2/(2 n s^2) + tau d, (D2^2/(n s^2) + 2 D1 tau/(sqrt(n) s) + tau^2 d)/2,
                   (D2/(sqrt(n) s) + tau sqrt(d))^2 / 2 }.

    With one party tau = 0 and this is :func:`rho_central`.
    """
    l1 = _number(l1, "l1")
    l2 = _number(l2, "l2")
    s = _number(sigma_party, "sigma_party")
    if s < MIN_SIGMA_PARTY:
        raise InvalidArgument(
            f"must be >= {MIN_SIGMA_PARTY} ([KLS21] Proposition 14)", field="sigma_party"
        )
    n = _count(parties, "parties")
    d = _count(dim, "dim")
    t = tau(s, n)
    root_n_s = math.sqrt(n) * s
    a2 = (l2 / root_n_s) ** 2
    first = a2 / 2 + t * d
    second = (a2 + 2 * l1 * t / root_n_s + t * t * d) / 2
    third = (l2 / root_n_s + t * math.sqrt(d)) ** 2 / 2
    return min(first, second, third)


def sigma_party(l1: float, l2: float, rho: float, parties: int, dim: int) -> float:
    """The smallest per-party sigma (>= 0.5, to a relative 1e-9) with
    ``rho_distributed(l1, l2, sigma, parties, dim) <= rho``.

    rho_distributed decreases in sigma, so bisection finds it. The result always
    satisfies the bound (the upper end of the final bracket is returned). When even
    sigma = 0.5 meets the target (a very large rho or a tiny sensitivity), 0.5 is
    returned: the proposition needs sigma >= 1/2, and the achieved rho is then *lower*
    than the target (see :func:`rho_distributed` for the value).
    """
    l1 = _number(l1, "l1")
    l2 = _number(l2, "l2")
    rho = _number(rho, "rho", positive=True)
    n = _count(parties, "parties")
    d = _count(dim, "dim")

    def ok(sigma: float) -> bool:
        return rho_distributed(l1, l2, sigma, n, d) <= rho

    lo = MIN_SIGMA_PARTY
    if ok(lo):
        return lo
    # Without tau the answer would be l2 / sqrt(2 n rho); start there and double.
    hi = max(2 * lo, l2 / math.sqrt(2 * n * rho))
    while not ok(hi):
        lo, hi = hi, 2 * hi
        if hi > _MAX_SIGMA:
            raise InvalidArgument("no finite sigma reaches this rho", field="rho")
    while hi - lo > _SIGMA_RTOL * hi:
        mid = (lo + hi) / 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _cks_epsilon(rho: float, log_inv_delta: float) -> float:
    """[CKS20] Corollary 13 optimized over alpha > 1.

    Corollary 13: rho-zCDP (so (alpha, alpha*rho)-RDP for every alpha > 1) implies
    (eps, delta)-DP for delta = exp((alpha-1)(alpha rho - eps)) / (alpha-1)
    * (1 - 1/alpha)^alpha. Solved for eps:

        eps(alpha) = alpha rho + (ln(1/delta) + (alpha-1) ln(1-1/alpha) - ln alpha)/(alpha-1).

    Its derivative simplifies to rho - (ln(1/delta) - ln alpha)/(alpha-1)^2, which is
    increasing in alpha, negative near 1 and positive at alpha = 2 + sqrt(ln(1/delta)/rho),
    so the unique minimizer is found by bisection on the derivative.
    """

    def derivative(alpha: float) -> float:
        return rho - (log_inv_delta - math.log(alpha)) / (alpha - 1) ** 2

    lo, hi = 1.0, 2.0 + math.sqrt(log_inv_delta / rho)
    for _ in range(200):
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        if derivative(mid) < 0:
            lo = mid
        else:
            hi = mid
    alpha = hi
    return alpha * rho + (
        log_inv_delta + (alpha - 1) * math.log1p(-1 / alpha) - math.log(alpha)
    ) / (alpha - 1)


def epsilon(rho: float, delta: float) -> float:
    """epsilon such that rho-zCDP implies (epsilon, delta)-DP.

    The smaller of the classic conversion rho + 2 sqrt(rho ln(1/delta)) (Bun and Steinke
    2016, Proposition 1.3) and the tighter [CKS20] Corollary 13, optimized over alpha.
    ``rho == 0`` gives 0. ``delta`` must be in (0, 1).
    """
    rho = _number(rho, "rho")
    if isinstance(delta, bool) or not isinstance(delta, int | float):
        raise InvalidArgument("must be a number", field="delta")
    if not 0 < float(delta) < 1:
        raise InvalidArgument("must be in (0, 1)", field="delta")
    if rho == 0:
        return 0.0
    log_inv_delta = -math.log(float(delta))
    classic = rho + 2 * math.sqrt(rho * log_inv_delta)
    return max(0.0, min(classic, _cks_epsilon(rho, log_inv_delta)))
