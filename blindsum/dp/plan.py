"""Sensitivity and noise plan of a round: which slots get how much noise, and why.

Pure functions over the schema; no OpenDP and no randomness except the injected
:class:`~blindsum.dp.sampler.RandomSource` of :func:`party_noise` / :func:`topup_noise`.

Unit of privacy: one customer per round. A customer has at most
``c = per_customer_cap * max_parties_per_customer`` tickets in a round, and each ticket
adds at most ``metric.abs_bound`` to one slot of each metric (counts and histogram bins:
1; sums: the clipped value in fixed point). In the worst case all of a customer's tickets
land in the same slot, so over all of a metric's slots (every region)
``l1 = l2 = c * abs_bound``.

Contributor slots are never noised: which parties contributed to a region is not
protected by the DP guarantee (the threat model documents this).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction

from blindsum.dp.accounting import rho_central, rho_distributed, sigma_central, sigma_party
from blindsum.dp.sampler import RandomSource, discrete_gaussian_vector
from blindsum.errors import InvalidArgument
from blindsum.model import DpMode, MetricNoise
from blindsum.schema import Metric, MetricKind, Schema

__all__ = [
    "NOISE_BOUND_SIGMAS",
    "MetricPlan",
    "NoisePlan",
    "noise_bound",
    "party_noise",
    "plan_noise",
    "topup_noise",
]

#: Multiplier of :func:`noise_bound`; see its docstring for the tail bound behind it.
NOISE_BOUND_SIGMAS = 12


@dataclass(frozen=True)
class MetricPlan:
    """Noise of one metric's slots in every region (never the contributor slots).

    ``l1``/``l2``: sensitivity to one customer over all those slots. ``rho``: this
    metric's share of the round's budget. ``sigma``: standard deviation of the total
    noise per slot. ``sigma_party``: per-party sigma in DISTRIBUTED mode, else 0.0.
    """

    metric: str
    slots: tuple[int, ...]
    l1: int
    l2: int
    rho: float
    sigma: float
    sigma_party: float


@dataclass(frozen=True)
class NoisePlan:
    """The round's DP noise: one :class:`MetricPlan` per schema metric, in schema order."""

    mode: DpMode
    rho: float
    expected_parties: int
    metrics: tuple[MetricPlan, ...]
    vector_length: int

    def slot_sigma2_party(self) -> list[Fraction | None]:
        """Per slot, the exact per-party variance parameter sigma_party^2 for the sampler.

        ``Fraction(sigma_party) ** 2`` is the exact square of the float the accounting
        used, so the sampled distribution is the accounted one. None at contributor slots
        and everywhere unless the plan is DISTRIBUTED.
        """
        out: list[Fraction | None] = [None] * self.vector_length
        if self.mode is not DpMode.DISTRIBUTED:
            return out
        for m in self.metrics:
            sigma2 = Fraction(m.sigma_party) ** 2
            for i in m.slots:
                out[i] = sigma2
        return out

    def slot_sigma(self) -> list[float]:
        """Per slot, the standard deviation of the total noise (0.0 where there is none)."""
        out = [0.0] * self.vector_length
        for m in self.metrics:
            for i in m.slots:
                out[i] = m.sigma
        return out

    def rho_with(self, parties: int) -> float:
        """The release's rho if ``parties`` parties' noise is in the sum.

        DISTRIBUTED: the sum over metrics of :func:`rho_distributed` with that many noisy
        parties. This is the guarantee against the aggregator when parties drop out after
        adding noise (readers get top-up noise to ``expected_parties``); zero noisy
        parties means no guarantee (``inf``). CENTRAL: the sum of :func:`rho_central`
        (independent of ``parties``). OFF: 0.
        """
        if isinstance(parties, bool) or not isinstance(parties, int) or parties < 0:
            raise InvalidArgument("must be an integer >= 0", field="parties")
        if self.mode is DpMode.OFF:
            return 0.0
        if self.mode is DpMode.CENTRAL:
            return math.fsum(rho_central(m.l2, m.sigma) for m in self.metrics)
        if parties == 0:
            return math.inf
        return math.fsum(
            rho_distributed(m.l1, m.l2, m.sigma_party, parties, len(m.slots)) for m in self.metrics
        )

    def in_sum(self, parties: int) -> NoisePlan:
        """The plan as released when ``parties`` parties' draws are in the sum.

        DISTRIBUTED: every party that submitted added its draw, and the release tops up
        to ``expected_parties``, so the total noise per slot has sd ``sigma_party`` times
        sqrt(max(parties, expected_parties)), more than the planned ``sigma`` when more
        parties than expected submitted. Intervals and the reported sd must use this.
        Other modes: the plan itself.
        """
        if self.mode is not DpMode.DISTRIBUTED or parties <= self.expected_parties:
            return self
        draws = math.sqrt(parties)
        return replace(
            self,
            metrics=tuple(replace(m, sigma=m.sigma_party * draws) for m in self.metrics),
        )

    def noise(self) -> tuple[MetricNoise, ...]:
        """Per metric, what the report's lineage section shows."""
        return tuple(
            MetricNoise(metric=m.metric, l1=m.l1, l2=m.l2, sigma=m.sigma, rho=m.rho)
            for m in self.metrics
        )


def _metric_slots(schema: Schema, metric: Metric) -> tuple[int, ...]:
    """Indices of ``metric``'s slots in every region, in layout order."""
    if metric.kind is not MetricKind.HISTOGRAM:
        return tuple(schema.slot_index(region, metric.name) for region in schema.regions)
    return tuple(
        schema.slot_index(region, metric.name, b)
        for region in schema.regions
        for b in range(metric.slots)
    )


def plan_noise(schema: Schema, mode: DpMode, rho: float, expected_parties: int) -> NoisePlan:
    """Split ``rho`` across the schema's metrics (by ``dp_weight``) and size the noise.

    CENTRAL: ``sigma = l2 / sqrt(2 rho_m)``. DISTRIBUTED: ``sigma_party`` is the smallest
    per-party sigma whose n-party sum (n = ``expected_parties``, dim = the metric's slot
    count) meets ``rho_m``, and ``sigma = sigma_party * sqrt(n)``. OFF: ``rho`` must be 0
    and nothing is noised. Raises InvalidArgument naming the field.
    """
    if not isinstance(schema, Schema):
        raise InvalidArgument("must be a Schema", field="schema")
    if not isinstance(mode, DpMode):
        raise InvalidArgument("must be a DpMode", field="mode")
    if isinstance(rho, bool) or not isinstance(rho, int | float):
        raise InvalidArgument("must be a number", field="rho")
    rho = float(rho)
    if isinstance(expected_parties, bool) or not isinstance(expected_parties, int):
        raise InvalidArgument("must be an integer", field="expected_parties")
    if expected_parties < 0:
        raise InvalidArgument("must be >= 0", field="expected_parties")
    if mode is DpMode.OFF:
        if rho != 0:
            raise InvalidArgument("must be 0 when DP is off", field="rho")
    elif not (math.isfinite(rho) and rho > 0):
        raise InvalidArgument(f"must be finite and > 0 in {mode.value} mode", field="rho")
    if mode is DpMode.DISTRIBUTED and expected_parties < 1:
        raise InvalidArgument("must be >= 1 in distributed mode", field="expected_parties")

    customer_tickets = schema.per_customer_cap * schema.max_parties_per_customer
    total_weight = math.fsum(m.dp_weight for m in schema.metrics)
    plans: list[MetricPlan] = []
    for metric in schema.metrics:
        slots = _metric_slots(schema, metric)
        l1 = l2 = customer_tickets * metric.abs_bound
        share = rho * metric.dp_weight / total_weight
        sigma = s_party = 0.0
        if mode is DpMode.CENTRAL:
            sigma = sigma_central(l2, share)
        elif mode is DpMode.DISTRIBUTED:
            s_party = sigma_party(l1, l2, share, expected_parties, len(slots))
            sigma = s_party * math.sqrt(expected_parties)
        plans.append(MetricPlan(metric.name, slots, l1, l2, share, sigma, s_party))
    return NoisePlan(
        mode=mode,
        rho=rho,
        expected_parties=expected_parties,
        metrics=tuple(plans),
        vector_length=schema.vector_length,
    )


def _require_distributed(plan: NoisePlan) -> None:
    if not isinstance(plan, NoisePlan):
        raise InvalidArgument("must be a NoisePlan", field="plan")
    if plan.mode is not DpMode.DISTRIBUTED:
        raise InvalidArgument(
            f"parties add noise only in distributed mode, not {plan.mode.value}", field="mode"
        )


def party_noise(plan: NoisePlan, rng: RandomSource) -> list[int]:
    """One party's signed noise vector: N_Z(0, sigma_party^2) per metric slot, 0 at
    contributor slots. DISTRIBUTED plans only."""
    _require_distributed(plan)
    return discrete_gaussian_vector(plan.slot_sigma2_party(), rng)


def topup_noise(plan: NoisePlan, missing: int, rng: RandomSource) -> list[int]:
    """The sum of ``missing`` independent party-noise vectors.

    The release step adds it for parties that dropped out after the noise plan was
    fixed, so readers always see exactly ``expected_parties`` draws per slot (the sum of
    discrete Gaussians is not a discrete Gaussian, so it is drawn party by party).
    ``missing == 0`` gives zeros. DISTRIBUTED plans only.
    """
    _require_distributed(plan)
    if isinstance(missing, bool) or not isinstance(missing, int) or missing < 0:
        raise InvalidArgument("must be an integer >= 0", field="missing")
    sigma2s = plan.slot_sigma2_party()
    total = [0] * plan.vector_length
    for _ in range(missing):
        for i, value in enumerate(discrete_gaussian_vector(sigma2s, rng)):
            total[i] += value
    return total


def noise_bound(plan: NoisePlan) -> int:
    """A per-slot magnitude the total noise exceeds with probability below 2^-60.

    N_Z(0, s^2) is s^2-subgaussian ([CKS20]: E[exp(tX)] <= exp(t^2 s^2 / 2)), and a sum of
    independent subgaussians is subgaussian with the summed variance proxy, so the total
    noise of a slot (one central draw, or ``expected_parties`` party draws) is
    sigma^2-subgaussian with the plan's ``sigma``. Hence
    ``P[|X| >= k sigma] <= 2 exp(-k^2 / 2)``: k = 12 gives 2 e^-72 < 2^-102 per slot,
    below 2^-82 even for the largest vector (2^20 slots) by a union bound; the 2^-60
    target needs only k >= 9.2. The result is ``ceil(12 * max sigma) + 1`` (0 when OFF).
    With more noisy parties than ``expected_parties`` the noise is larger: callers that
    allow that must size the bound for their party count.
    """
    if not isinstance(plan, NoisePlan):
        raise InvalidArgument("must be a NoisePlan", field="plan")
    if plan.mode is DpMode.OFF:
        return 0
    top = max((m.sigma for m in plan.metrics), default=0.0)
    return math.ceil(NOISE_BOUND_SIGMAS * top) + 1
