"""Differential privacy for released totals: exact sampling, zCDP accounting, noise plans.

* :mod:`blindsum.dp.sampler`: exact discrete Gaussian (and Laplace) sampling from a
  CSPRNG, integer arithmetic only.
* :mod:`blindsum.dp.accounting`: rho for central and distributed discrete Gaussian
  noise, the sigma for a target rho, and the (epsilon, delta) reading of rho.
* :mod:`blindsum.dp.plan`: per-metric sensitivity and noise of a round, and the noise a
  party (or the release step's top-up) adds.
* :mod:`blindsum.dp.central`: central noise through OpenDP. It is not imported here so
  that parties, which never add central noise, do not load OpenDP; import it directly.
"""

from blindsum.dp.accounting import (
    epsilon,
    rho_central,
    rho_distributed,
    sigma_central,
    sigma_party,
)
from blindsum.dp.plan import (
    MetricPlan,
    NoisePlan,
    noise_bound,
    party_noise,
    plan_noise,
    topup_noise,
)
from blindsum.dp.sampler import CsprngSource, RandomSource

__all__ = [
    "CsprngSource",
    "MetricPlan",
    "NoisePlan",
    "RandomSource",
    "epsilon",
    "noise_bound",
    "party_noise",
    "plan_noise",
    "rho_central",
    "rho_distributed",
    "sigma_central",
    "sigma_party",
    "topup_noise",
]
