"""The release step end to end on synthetic data: noise, budget, flags and trends.

Rounds here are simulated in process: every party runs the real pipeline
(party.synthetic -> ingest -> metrics -> vector), adds its distributed-DP share from a
seeded CSPRNG source (party.privacy), and the release step gets the sum. Seeded noise
makes every assertion deterministic.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from aggregator.release import (
    BudgetExhausted,
    ReleaseInput,
    ReleasePolicy,
    build_report,
    noise_plan,
    release_rho,
)
from blindsum.dp.sampler import CsprngSource
from blindsum.model import DpMode, DpSpec, FlagKind, Mode, Report, Severity
from blindsum.schema import Schema
from blindsum.types import U64Vector
from party.pipeline import TicketSource, compute
from party.privacy import add_party_noise
from party.synthetic import TeamProfile, generate_rows, write_rows

SCHEMA = Schema.default()
TEAMS = ("north", "south", "west")
POLICY = ReleasePolicy(dp_mode=DpMode.DISTRIBUTED, rho=0.5, budget_rho=1000.0)
WEEK0 = dt.date(2026, 1, 5)


def _dp(week: int) -> DpSpec:
    return DpSpec(DpMode.DISTRIBUTED, 0.5, len(TEAMS), "support-kpis", f"w{week}")


@cache
def _team_vector(team: int, week: int, incident: bool, root: Path) -> U64Vector:
    profile = TeamProfile(
        name=TEAMS[team],
        tickets_per_region=150,
        failure_region="EMEA" if incident else None,
        escalation_multiplier=4.0,
    )
    rows = generate_rows(profile, seed=1000 * week + team, start=WEEK0 + dt.timedelta(weeks=week))
    path = root / f"{TEAMS[team]}-{week}-{incident}.csv"
    write_rows(rows, path)
    return compute(TicketSource(str(path)), SCHEMA, root / f"{TEAMS[team]}.secret").vector


def _release(
    week: int,
    root: Path,
    *,
    incident: bool = False,
    previous: Sequence[Report] = (),
    drop: int = 0,
) -> tuple[Report, list[int]]:
    """One simulated round: returns the report and the exact (noise-free) totals."""
    dp = _dp(week)
    exact = np.zeros(SCHEMA.vector_length, dtype=np.uint64)
    noisy = np.zeros(SCHEMA.vector_length, dtype=np.uint64)
    included = TEAMS[: len(TEAMS) - drop]
    for i, _ in enumerate(included):
        vector = _team_vector(i, week, incident, root)
        exact += vector
        seed = (week * 100 + i).to_bytes(32, "big")
        noisy += add_party_noise(SCHEMA, dp, vector, CsprngSource.from_seed(seed))
    given = ReleaseInput(
        schema=SCHEMA,
        totals=[int(x) for x in noisy.view(np.int64)],
        round_id=f"w{week}",
        mode=Mode.SECAGG,
        min_contributors=3 - drop,
        included_parties=included,
        released_ms=1_700_000_000_000 + week * 604_800_000,
        dp=dp,
    )
    rng = CsprngSource.from_seed((week * 100 + 99).to_bytes(32, "big"))
    report = build_report(given, POLICY, previous=previous, rng=rng)
    return report, [int(x) for x in exact.view(np.int64)]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("release")


def _breaches(report: Report) -> dict[str, list[str]]:
    return {
        r.region: [f.statistic for f in r.flags if f.severity is Severity.BREACH]
        for r in report.regions
    }


def test_injected_failure_is_flagged_and_healthy_regions_are_not(root: Path) -> None:
    healthy, _ = _release(0, root)
    assert _breaches(healthy) == {"APAC": [], "EMEA": [], "Americas": []}
    incident, _ = _release(1, root, incident=True, previous=[healthy])
    emea = next(r for r in incident.regions if r.region == "EMEA")
    kinds = {(f.kind, f.statistic) for f in emea.flags if f.severity is Severity.BREACH}
    # Escalations x4 (~20 %), CSAT ~3.0 and p90 resolution far above 72 h: the SLOs
    # breach beyond the noise, and the jump from last week is a movement breach too.
    assert (FlagKind.SLO, "resolution_p90") in kinds
    assert (FlagKind.SLO, "csat_mean") in kinds
    assert any(kind is FlagKind.MOVEMENT for kind, _ in kinds)
    assert all("EMEA" not in r.region or r.flags for r in incident.regions)
    assert _breaches(incident)["APAC"] == [] and _breaches(incident)["Americas"] == []
    reasons = " ".join(f.reason for f in emea.flags)
    assert "SLO" in reasons and "previous release" in reasons
    # The trend carries last week's point and this one, in order.
    trend = [t.round_id for t in emea.trend if t.statistic == "escalation_rate"]
    assert trend == ["w0", "w1"]


def test_healthy_regions_over_20_seeded_rounds_stay_within_the_documented_rate(
    root: Path,
) -> None:
    """aggregator/flags.py documents at most (1 - confidence)/2 = 2.5 % false BREACHes per
    check for a region sitting exactly at a threshold (and far less for the healthy
    synthetic regions, which sit well inside every SLO). Over 20 rounds x 3 regions x
    (3 SLO + 5 movement) checks, the count of BREACH flags must not exceed the 99.9 %
    quantile of Binomial(checks, 0.025); with the fixed seeds the count is deterministic
    (0 in practice)."""
    previous: list[Report] = []
    breaches = 0
    checks = 0
    for week in range(20):
        report, _ = _release(week, root, previous=previous[-POLICY.history :])
        for region in report.regions:
            assert not region.suppressed
            breaches += sum(f.severity is Severity.BREACH for f in region.flags)
            checks += len(POLICY.slos) + (len(POLICY.movement) if previous else 0)
        previous.append(report)
    allowed = int(sps.binom.ppf(0.999, checks, 0.025))
    assert breaches <= allowed, (breaches, checks, allowed)
    assert breaches <= 2  # what the fixed seeds give; a regression shows up here first


def test_released_cells_are_the_exact_sum_plus_the_declared_noise(root: Path) -> None:
    """Standardised errors (released - exact) / noise_sd over every unmerged data cell of
    several rounds look standard normal: mean ~0, variance ~1 (z-tests at 1e-4)."""
    z: list[float] = []
    for week in range(4):
        report, exact = _release(week, root)
        for region in report.regions:
            for cell in region.cells:
                if cell.status.value != "released" or cell.value is None:
                    continue
                if cell.lo is None:
                    index = SCHEMA.slot_index(region.region, cell.metric)
                else:
                    metric = SCHEMA.metric(cell.metric)
                    index = SCHEMA.slot_index(
                        region.region, metric.name, metric.edges.index(cell.lo)
                    )
                z.append((cell.value - exact[index]) / cell.noise_sd)
    sample = np.asarray(z)
    n = len(sample)
    assert n > 100
    assert abs(sample.mean()) * math.sqrt(n) < 3.9
    # Var of the sample variance of N(0,1) is 2/(n-1).
    assert abs(sample.var(ddof=1) - 1) / math.sqrt(2 / (n - 1)) < 3.9


def test_dropouts_are_topped_up_for_readers_and_cost_more_against_the_aggregator(
    root: Path,
) -> None:
    full, _ = _release(0, root)
    dropped, _ = _release(0, root, drop=1)
    assert full.dp.rho == pytest.approx(dropped.dp.rho)  # readers: always 3 draws
    assert dropped.dp.noisy_parties == 2 and dropped.dp.expected_parties == 3
    assert dropped.dp.rho_vs_aggregator is not None and full.dp.rho_vs_aggregator is not None
    assert dropped.dp.rho_vs_aggregator > 1.4 * full.dp.rho_vs_aggregator
    assert dropped.dp.epsilon > 0 and dropped.dp.delta == POLICY.delta


def test_budget_refuses_the_release_that_would_exceed_it() -> None:
    policy = ReleasePolicy(dp_mode=DpMode.CENTRAL, rho=0.5, budget_rho=1.0)
    dp = DpSpec(DpMode.CENTRAL, 0.5, 0, "c", "w")
    rho, against = release_rho(noise_plan(SCHEMA, dp), dp, 0)
    assert rho == pytest.approx(0.5) and against is None
    policy.check_budget(dp, rho, spent=0.5)  # exactly fills the budget: allowed
    with pytest.raises(BudgetExhausted, match="privacy budget exhausted") as err:
        policy.check_budget(dp, rho, spent=0.75)
    assert err.value.field == "dp"
    given = ReleaseInput(
        schema=SCHEMA,
        totals=[0] * SCHEMA.vector_length,
        round_id="r",
        mode=Mode.HE,
        min_contributors=1,
        included_parties=("a",),
        released_ms=0,
        dp=dp,
    )
    with pytest.raises(BudgetExhausted):
        build_report(given, policy, spent_before=0.6)


def test_policy_resolves_defaults_and_names_bad_values() -> None:
    policy = ReleasePolicy(window="week")
    # 2026-11-22 12:00 UTC, a Sunday of ISO week 47.
    spec = policy.resolve(None, SCHEMA, 5, 1_795_348_800_000)
    assert (spec.mode, spec.rho, spec.campaign, spec.window) == (
        DpMode.CENTRAL,
        0.5,
        "support-kpis",
        "2026-W47",
    )
    distributed = policy.resolve(DpSpec(DpMode.DISTRIBUTED), SCHEMA, 5, 0)
    assert distributed.expected_parties == 5
    assert ReleasePolicy(window="month").window_of(1_795_348_800_000) == "2026-11"
    with pytest.raises(Exception, match="expected_parties"):
        policy.resolve(DpSpec(DpMode.DISTRIBUTED, 0.5, 9), SCHEMA, 5, 0)
    with pytest.raises(Exception, match="rho must be 0"):
        policy.resolve(DpSpec(DpMode.OFF, 0.5), SCHEMA, 5, 0)
    with pytest.raises(Exception) as err:
        ReleasePolicy(window="fortnight")
    assert getattr(err.value, "field", "") == "release.window"
