"""Noise plans: sensitivities from the schema, the rho split, party/top-up/central noise."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import pytest
from scipy import stats

from blindsum.dp.accounting import rho_distributed, sigma_central
from blindsum.dp.central import central_noise
from blindsum.dp.plan import (
    NoisePlan,
    noise_bound,
    party_noise,
    plan_noise,
    topup_noise,
)
from blindsum.dp.sampler import CsprngSource, discrete_gaussian_variance
from blindsum.errors import Internal, InvalidArgument
from blindsum.model import DpMode, MetricNoise
from blindsum.schema import Schema

SCHEMA = Schema.default()
CONTRIBUTORS = frozenset(SCHEMA.contributor_index(r) for r in SCHEMA.regions)


def _rng(tag: int) -> CsprngSource:
    return CsprngSource.from_seed(bytes([tag]) * 32)


def _metric(plan: NoisePlan, name: str) -> tuple[int, int, float, float]:
    m = next(m for m in plan.metrics if m.metric == name)
    return m.l1, m.l2, m.sigma, m.sigma_party


# ------------------------------------------------------------------- sensitivity


def test_sensitivities_come_from_the_schema() -> None:
    plan = plan_noise(SCHEMA, DpMode.CENTRAL, 1.0, 0)
    cap = SCHEMA.per_customer_cap * SCHEMA.max_parties_per_customer
    assert cap == 5
    assert _metric(plan, "csat_sum")[:2] == (25, 25)  # 5 tickets * clip 5 * scale 1
    assert _metric(plan, "resolution_hours_sum")[:2] == (5 * 7200, 5 * 7200)  # 720 h * 10
    for name in ("tickets", "csat", "nps", "resolution_hours"):
        assert _metric(plan, name)[:2] == (5, 5)
    assert [m.metric for m in plan.metrics] == [m.name for m in SCHEMA.metrics]


def test_slots_cover_every_region_and_never_contributors() -> None:
    plan = plan_noise(SCHEMA, DpMode.DISTRIBUTED, 1.0, 4)
    seen: list[int] = []
    for m, metric in zip(plan.metrics, SCHEMA.metrics, strict=True):
        assert len(m.slots) == metric.slots * len(SCHEMA.regions)
        names = [SCHEMA.slot_names[i] for i in m.slots]
        assert all(n.split("/", 1)[1].startswith(metric.name) for n in names)
        seen += m.slots
    assert sorted(seen) == [i for i in range(SCHEMA.vector_length) if i not in CONTRIBUTORS]
    assert plan.vector_length == SCHEMA.vector_length == 90


@pytest.mark.parametrize("field", ["per_customer_cap", "max_parties_per_customer"])
def test_doubling_the_customer_cap_doubles_l2_and_sigma(field: str) -> None:
    doubled = dataclasses.replace(SCHEMA, **{field: 2 * getattr(SCHEMA, field)})
    for mode, n, rel in ((DpMode.CENTRAL, 0, 1e-12), (DpMode.DISTRIBUTED, 5, 1e-7)):
        base = plan_noise(SCHEMA, mode, 0.5, n)
        twice = plan_noise(doubled, mode, 0.5, n)
        for a, b in zip(base.metrics, twice.metrics, strict=True):
            assert (b.l1, b.l2) == (2 * a.l1, 2 * a.l2)
            assert b.sigma == pytest.approx(2 * a.sigma, rel=rel)
            assert b.rho == a.rho


def test_weights_split_rho() -> None:
    plan = plan_noise(SCHEMA, DpMode.CENTRAL, 0.65, 0)
    total_weight = sum(m.dp_weight for m in SCHEMA.metrics)
    assert math.fsum(m.rho for m in plan.metrics) == pytest.approx(0.65, rel=1e-14)
    for m, metric in zip(plan.metrics, SCHEMA.metrics, strict=True):
        assert m.rho == pytest.approx(0.65 * metric.dp_weight / total_weight, rel=1e-14)
        assert m.sigma == pytest.approx(sigma_central(m.l2, m.rho), rel=1e-14)
        assert m.sigma_party == 0.0
    tickets, csat_sum = plan.metrics[0], plan.metrics[3]
    assert tickets.rho == pytest.approx(8 * csat_sum.rho)  # dp_weight 2 vs 0.25


# ------------------------------------------------------------------------- rho_with


def test_rho_with_expected_parties_is_the_plan_rho() -> None:
    for n in (1, 5, 40):
        plan = plan_noise(SCHEMA, DpMode.DISTRIBUTED, 1.0, n)
        assert plan.rho_with(n) <= plan.rho
        assert plan.rho_with(n) == pytest.approx(plan.rho, rel=1e-7)
        if n > 1:
            assert plan.rho_with(n - 1) > plan.rho
            assert plan.rho_with(1) > plan.rho_with(n - 1)
        assert plan.rho_with(n + 3) < plan.rho
        assert plan.rho_with(0) == math.inf


def test_rho_with_fewer_parties_follows_the_distributed_bound() -> None:
    plan = plan_noise(SCHEMA, DpMode.DISTRIBUTED, 1.0, 5)
    expected = math.fsum(
        rho_distributed(m.l1, m.l2, m.sigma_party, 3, len(m.slots)) for m in plan.metrics
    )
    assert plan.rho_with(3) == pytest.approx(expected, rel=1e-14)
    # Noise far from the clamp: the sum of squares scales like 1/n.
    assert plan.rho_with(3) == pytest.approx(plan.rho * 5 / 3, rel=1e-6)


def test_rho_with_in_central_and_off_mode() -> None:
    central = plan_noise(SCHEMA, DpMode.CENTRAL, 0.3, 0)
    assert central.rho_with(0) == pytest.approx(0.3, rel=1e-12)
    assert central.rho_with(7) == central.rho_with(0)
    off = plan_noise(SCHEMA, DpMode.OFF, 0.0, 0)
    assert off.rho_with(3) == 0.0
    with pytest.raises(InvalidArgument) as info:
        central.rho_with(-1)
    assert info.value.field == "parties"


# ------------------------------------------------------------- per-slot views


def test_slot_views_and_report_noise() -> None:
    plan = plan_noise(SCHEMA, DpMode.DISTRIBUTED, 1.0, 5)
    sigma2s = plan.slot_sigma2_party()
    sigmas = plan.slot_sigma()
    assert len(sigma2s) == len(sigmas) == SCHEMA.vector_length
    for i in CONTRIBUTORS:
        assert sigma2s[i] is None
        assert sigmas[i] == 0.0
    for m in plan.metrics:
        assert m.sigma == pytest.approx(m.sigma_party * math.sqrt(5), rel=1e-15)
        for i in m.slots:
            assert sigma2s[i] == Fraction(m.sigma_party) ** 2
            assert sigmas[i] == m.sigma
    assert plan.noise() == tuple(
        MetricNoise(metric=m.metric, l1=m.l1, l2=m.l2, sigma=m.sigma, rho=m.rho)
        for m in plan.metrics
    )
    central = plan_noise(SCHEMA, DpMode.CENTRAL, 1.0, 5)
    assert central.slot_sigma2_party() == [None] * SCHEMA.vector_length


def test_off_plan_has_no_noise() -> None:
    plan = plan_noise(SCHEMA, DpMode.OFF, 0.0, 3)
    assert plan.slot_sigma() == [0.0] * SCHEMA.vector_length
    assert all(m.rho == m.sigma == m.sigma_party == 0 for m in plan.metrics)
    assert noise_bound(plan) == 0
    assert plan.noise()[0].l2 == 5


def test_noise_bound_is_twelve_sigmas() -> None:
    plan = plan_noise(SCHEMA, DpMode.DISTRIBUTED, 1.0, 5)
    top = max(m.sigma for m in plan.metrics)
    assert top == _metric(plan, "resolution_hours_sum")[2]
    assert noise_bound(plan) == math.ceil(12 * top) + 1
    SCHEMA.check_overflow(SCHEMA.max_parties, noise_bound=noise_bound(plan))


# -------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("mode", "rho", "parties", "field"),
    [
        (DpMode.CENTRAL, 0.0, 3, "rho"),
        (DpMode.CENTRAL, -1.0, 3, "rho"),
        (DpMode.DISTRIBUTED, math.inf, 3, "rho"),
        (DpMode.DISTRIBUTED, math.nan, 3, "rho"),
        (DpMode.OFF, 0.5, 3, "rho"),
        (DpMode.DISTRIBUTED, 1.0, 0, "expected_parties"),
        (DpMode.CENTRAL, 1.0, -1, "expected_parties"),
        ("central", 1.0, 3, "mode"),
    ],
)
def test_plan_validation_names_the_field(
    mode: DpMode, rho: float, parties: int, field: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        plan_noise(SCHEMA, mode, rho, parties)
    assert info.value.field == field


def test_party_and_topup_noise_need_a_distributed_plan() -> None:
    for mode, rho in ((DpMode.CENTRAL, 1.0), (DpMode.OFF, 0.0)):
        plan = plan_noise(SCHEMA, mode, rho, 3)
        with pytest.raises(InvalidArgument) as info:
            party_noise(plan, _rng(1))
        assert info.value.field == "mode"
        with pytest.raises(InvalidArgument) as info:
            topup_noise(plan, 0, _rng(1))
        assert info.value.field == "mode"
    plan = plan_noise(SCHEMA, DpMode.DISTRIBUTED, 1.0, 3)
    with pytest.raises(InvalidArgument) as info:
        topup_noise(plan, -1, _rng(1))
    assert info.value.field == "missing"


# ------------------------------------------------------------------ party noise


def _variance_pvalue(draws: list[list[int]], plan: NoisePlan, parties: int) -> tuple[float, float]:
    """Two-sided p-values of the pooled variance and mean of noise-sum ``draws``.

    Each metric slot is standardized by sqrt(parties * Var N_Z(0, sigma_party^2)); under
    the null the sum of squares of the N standardized values is chi-square with N degrees
    of freedom and their sum is N(0, N). Both are normal approximations of a sum of at
    least 5 discrete Gaussians with sigma_party >= 4, whose moments match the normal's to
    better than 1e-9 relative, so the stated rates hold to that precision.
    """
    sd = {
        i: math.sqrt(parties * discrete_gaussian_variance(m.sigma_party**2))
        for m in plan.metrics
        for i in m.slots
    }
    z = [row[i] / s for row in draws for i, s in sd.items()]
    n = len(z)
    ss = math.fsum(v * v for v in z)
    var_p = 2 * min(stats.chi2.cdf(ss, n), stats.chi2.sf(ss, n))
    mean_p = 2 * stats.norm.sf(abs(math.fsum(z)) / math.sqrt(n))
    return float(var_p), float(mean_p)


def test_sum_of_party_noise_has_the_planned_variance() -> None:
    """40 rounds of 5 parties: variance (chi-square) and mean (z) tests on 4,440 pooled
    standardized slot values, each rejecting at p < 1e-4 (false-failure rate 1e-4 each,
    deterministic with the fixed seeds)."""
    plan = plan_noise(SCHEMA, DpMode.DISTRIBUTED, 1.0, 5)
    rngs = [_rng(10 + p) for p in range(5)]
    draws = []
    for _ in range(40):
        vectors = [party_noise(plan, rng) for rng in rngs]
        for v in vectors:
            assert all(v[i] == 0 for i in CONTRIBUTORS)
        draws.append([sum(col) for col in zip(*vectors, strict=True)])
    var_p, mean_p = _variance_pvalue(draws, plan, 5)
    assert var_p > 1e-4
    assert mean_p > 1e-4


def test_topup_noise_is_a_sum_of_party_draws() -> None:
    """topup_noise(plan, 5) has the variance of 5 party draws: same tests and rates as
    above, on 40 top-ups."""
    plan = plan_noise(SCHEMA, DpMode.DISTRIBUTED, 1.0, 5)
    rng = _rng(20)
    draws = [topup_noise(plan, 5, rng) for _ in range(40)]
    assert all(row[i] == 0 for row in draws for i in CONTRIBUTORS)
    var_p, mean_p = _variance_pvalue(draws, plan, 5)
    assert var_p > 1e-4
    assert mean_p > 1e-4
    assert topup_noise(plan, 0, rng) == [0] * SCHEMA.vector_length


def test_party_noise_is_reproducible_with_a_seed() -> None:
    plan = plan_noise(SCHEMA, DpMode.DISTRIBUTED, 1.0, 5)
    assert party_noise(plan, _rng(3)) == party_noise(plan, _rng(3))
    assert party_noise(plan, _rng(3)) != party_noise(plan, _rng(4))
    # Two draws from one stream add up like a top-up of 2 from the same seed.
    rng = _rng(5)
    a, b = party_noise(plan, rng), party_noise(plan, rng)
    assert topup_noise(plan, 2, _rng(5)) == [x + y for x, y in zip(a, b, strict=True)]


# ----------------------------------------------------------------- central noise


def _totals() -> list[int]:
    out = [(37 * i) % 1000 for i in range(SCHEMA.vector_length)]
    for i in CONTRIBUTORS:
        out[i] = 3
    return out


def test_central_noise_has_the_planned_variance() -> None:
    """100 releases, 11,100 standardized noise values (OpenDP samples from the OS CSPRNG,
    so this test is not seeded). The sum of squares is checked against the chi-square
    (11,100 df) 5e-8 and 1 - 5e-8 quantiles (rate 1e-7) and the sum against +-5.45 sd
    (rate 5e-8): false-failure rate about 1.5e-7 in all, below 1e-6 with room for the
    normal approximation (sigma >= 9 here, where the discrete Gaussian's moments match
    the normal's to far better than 1e-9)."""
    plan = plan_noise(SCHEMA, DpMode.CENTRAL, 1.0, 0)
    totals = _totals()
    sds = {i: m.sigma for m in plan.metrics for i in m.slots}
    z: list[float] = []
    for _ in range(100):
        out = central_noise(plan, totals)
        assert all(out[i] == totals[i] for i in CONTRIBUTORS)
        assert all(type(v) is int for v in out)
        z += [(out[i] - totals[i]) / s for i, s in sds.items()]
    n = len(z)
    ss = math.fsum(v * v for v in z)
    assert stats.chi2.ppf(5e-8, n) < ss < stats.chi2.isf(5e-8, n)
    assert abs(math.fsum(z)) < 5.45 * math.sqrt(n)


def test_central_noise_validation() -> None:
    plan = plan_noise(SCHEMA, DpMode.CENTRAL, 1.0, 0)
    for other in (
        plan_noise(SCHEMA, DpMode.DISTRIBUTED, 1.0, 3),
        plan_noise(SCHEMA, DpMode.OFF, 0.0, 3),
    ):
        with pytest.raises(InvalidArgument) as info:
            central_noise(other, _totals())
        assert info.value.field == "mode"
    with pytest.raises(InvalidArgument) as info:
        central_noise(plan, _totals()[:-1])
    assert info.value.field == "totals"
    too_big = _totals()
    too_big[3] = 1 << 63
    with pytest.raises(InvalidArgument) as info:
        central_noise(plan, too_big)
    assert info.value.field == "totals[3]"
    signed = _totals()
    signed[0] = -(1 << 40)
    assert abs(central_noise(plan, signed)[0] + (1 << 40)) < noise_bound(plan)


def test_central_noise_refuses_a_plan_opendp_does_not_back() -> None:
    """A plan whose sigma is too small for its rho is a bug: OpenDP's map catches it."""
    plan = plan_noise(SCHEMA, DpMode.CENTRAL, 1.0, 0)
    first = dataclasses.replace(plan.metrics[0], sigma=plan.metrics[0].sigma / 2)
    broken = dataclasses.replace(plan, metrics=(first, *plan.metrics[1:]))
    with pytest.raises(Internal) as info:
        central_noise(broken, _totals())
    assert info.value.field == "tickets"
