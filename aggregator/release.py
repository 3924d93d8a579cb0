"""Release step: turn decrypted or unmasked totals into the published report.

In order:

1. **k-suppression per region.** A region whose contributor indicator sums to fewer
   than ``min_contributors`` (k) parties is withheld: no cells, no statistics, and only
   the fact "fewer than k" is released. Contributor counts come from the exact indicator
   slots, which carry no noise: which parties contribute to which region is not
   protected by DP (the aggregator learns it anyway, docs/THREAT_MODEL.md).
2. **Differential privacy** (the round's :class:`~blindsum.model.DpSpec`):
   CENTRAL adds an OpenDP discrete Gaussian to the exact totals; DISTRIBUTED totals
   already carry the parties' noise, and the release adds the share of every expected
   party that dropped out (sampled exactly as that party would have), so readers always
   see the noise of ``expected_parties`` draws. The zCDP cost is checked against the
   campaign window's budget before anything is written (:class:`BudgetExhausted`).
3. **Cell rules** (``aggregator.cells``): small histogram bins are merged or
   suppressed, on the released values.
4. **Statistics, intervals and flags** (``aggregator.stats``, ``aggregator.flags``),
   against the campaign's earlier releases for trends and movement.

Everything here is post-processing of the noisy totals except step 2, so the privacy
cost of a release is exactly the rho charged in step 2.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aggregator.cells import region_cells
from aggregator.flags import DEFAULT_MOVEMENT, DEFAULT_SLOS, MovementRule, flag_region
from aggregator.stats import derive_stats, is_not_collected
from blindsum import ANONYMIZATION_RULES, __version__
from blindsum.dp.accounting import epsilon
from blindsum.dp.central import central_noise
from blindsum.dp.plan import NoisePlan, plan_noise, topup_noise
from blindsum.dp.sampler import CsprngSource, RandomSource
from blindsum.errors import FailedPrecondition, Internal, InvalidArgument
from blindsum.model import (
    DpMode,
    DpRelease,
    DpSpec,
    Lineage,
    Mode,
    RegionResult,
    Report,
    Slo,
    SloKind,
    Statistic,
    TrendPoint,
    iso_week,
)
from blindsum.schema import Schema

#: Statistics kept in each region's trend (and shown by the HTML trend chart).
TREND_STATISTICS = ("csat_mean", "pct_satisfied", "escalation_rate", "resolution_p90")
#: Windows the budget ledger can be kept per.
WINDOWS = ("week", "month", "all")
#: Relative slack when comparing rho sums, so float rounding never refuses a release
#: that exactly fills the budget.
_RHO_SLACK = 1e-9
#: Largest rho one round may declare.
_MAX_RHO = 1000.0


class BudgetExhausted(FailedPrecondition):
    """The release would exceed the campaign window's zCDP budget; nothing was released."""


@dataclass(frozen=True)
class ReleasePolicy:
    """Aggregator-wide release settings (``[release]`` in aggregator.toml)."""

    #: DP for rounds opened without explicit DP parameters.
    dp_mode: DpMode = DpMode.CENTRAL
    #: zCDP rho one release costs by default.
    rho: float = 0.5
    #: zCDP budget per campaign and window.
    budget_rho: float = 2.0
    window: str = "week"
    #: delta of the (epsilon, delta) conversion shown in reports.
    delta: float = 1e-6
    #: Two-sided confidence level of every interval and of the flag tests.
    confidence: float = 0.95
    slos: tuple[Slo, ...] = DEFAULT_SLOS
    movement: tuple[MovementRule, ...] = DEFAULT_MOVEMENT
    #: Earlier releases of the campaign used for trends and movement flags.
    history: int = 8
    #: Let OpenRound name the ledger window, and open a round whose ticket window is not
    #: over yet (tests, replays, the demo). Off by default: a fresh window name is a
    #: fresh budget, and a window not over gives a partial report.
    allow_window_override: bool = False

    def __post_init__(self) -> None:
        if self.window not in WINDOWS:
            raise InvalidArgument(f"must be one of {', '.join(WINDOWS)}", field="release.window")
        for name in ("rho", "budget_rho"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise InvalidArgument("must be a finite number >= 0", field=f"release.{name}")
        if not 0 < self.delta < 1:
            raise InvalidArgument("must be in (0, 1)", field="release.delta")
        if not 0.5 <= self.confidence < 1:
            raise InvalidArgument("must be in [0.5, 1)", field="release.confidence")
        if not 0 <= self.history <= 1000:
            raise InvalidArgument("must be in [0, 1000]", field="release.history")

    def window_of(self, when_ms: int) -> str:
        """The ledger window that the time ``when_ms`` belongs to (UTC): a round is
        charged to the window of its ticket window's start."""
        when = datetime.fromtimestamp(when_ms / 1000, tz=UTC)
        if self.window == "week":
            return iso_week(when)
        if self.window == "month":
            return f"{when.year}-{when.month:02d}"
        return "all"

    def resolve(
        self, spec: DpSpec | None, schema: Schema, threshold: int, window_start_ms: int
    ) -> DpSpec:
        """Fill the defaults of a round's DP parameters and validate them.

        The ledger window defaults to the one ``window_start_ms`` falls in: the start of
        the round's ticket window, so the ledger is charged for the week whose tickets
        the round covers.

        ``threshold`` is the fewest parties a round can complete with (secagg t, he
        receipts): distributed noise is sized for that many draws by default, and never
        for more, because an aggregator that drops parties down to the threshold would
        otherwise see less noise than the declared rho implies.
        """
        spec = spec or DpSpec(mode=self.dp_mode)
        if (
            spec.mode is not DpMode.OFF
            and spec.rho
            and not (math.isfinite(spec.rho) and 0 < spec.rho <= _MAX_RHO)
        ):
            raise InvalidArgument(f"must be a number in (0, {_MAX_RHO}]", field="dp.rho")
        if spec.window and not self.allow_window_override:
            raise InvalidArgument(
                "the ledger window is the week or month of the round's ticket window; "
                "naming another one needs "
                "[release] allow_window_override = true",
                field="dp.window",
            )
        rho = 0.0 if spec.mode is DpMode.OFF else (spec.rho or self.rho)
        resolved = DpSpec(
            mode=spec.mode,
            rho=rho,
            expected_parties=(spec.expected_parties or threshold)
            if spec.mode is DpMode.DISTRIBUTED
            else 0,
            campaign=spec.campaign or schema.name,
            window=spec.window or self.window_of(window_start_ms),
        )
        if spec.mode is DpMode.OFF and spec.rho:
            raise InvalidArgument("rho must be 0 when DP is off", field="dp.rho")
        if resolved.mode is DpMode.DISTRIBUTED and resolved.expected_parties > threshold:
            raise InvalidArgument(
                f"expected_parties {resolved.expected_parties} exceeds the round's threshold "
                f"{threshold}: the round can complete with only that many parties' noise",
                field="dp.expected_parties",
            )
        for name, value in (("campaign", resolved.campaign), ("window", resolved.window)):
            if not 1 <= len(value) <= 64 or not value.isprintable():
                raise InvalidArgument("must be 1..64 printable characters", field=f"dp.{name}")
        return resolved

    def check_budget(self, dp: DpSpec, rho: float, spent: float) -> None:
        """Raise BudgetExhausted unless ``spent + rho`` fits the window's budget."""
        if dp.mode is DpMode.OFF:
            return
        if spent + rho > self.budget_rho * (1 + _RHO_SLACK):
            raise BudgetExhausted(
                f"privacy budget exhausted for campaign {dp.campaign!r}, window {dp.window!r}: "
                f"this release costs rho = {rho:.4g}, {spent:.4g} of {self.budget_rho:.4g} is "
                f"already spent",
                field="dp",
            )


@dataclass(frozen=True)
class ReleaseInput:
    """What the round produced: signed per-slot totals (schema layout order)."""

    schema: Schema
    totals: Sequence[int]
    round_id: str
    mode: Mode
    min_contributors: int
    included_parties: tuple[str, ...]
    released_ms: int
    dp: DpSpec = field(default_factory=DpSpec)


def policy_from_config(
    *,
    dp: str,
    rho: float,
    budget_rho: float,
    window: str,
    delta: float,
    confidence: float,
    slo_escalation_rate_max_pct: float,
    slo_resolution_p90_max_hours: float,
    slo_csat_mean_min: float,
    history: int,
    allow_window_override: bool = False,
) -> ReleasePolicy:
    """Build the policy from the ``[release]`` section's plain values."""
    try:
        mode = DpMode(dp)
    except ValueError:
        raise InvalidArgument(
            "must be one of off, central, distributed", field="release.dp"
        ) from None
    slos = []
    for statistic, kind, threshold in (
        ("escalation_rate", SloKind.MAX, slo_escalation_rate_max_pct),
        ("resolution_p90", SloKind.MAX, slo_resolution_p90_max_hours),
        ("csat_mean", SloKind.MIN, slo_csat_mean_min),
    ):
        if not math.isfinite(threshold):
            raise InvalidArgument("must be a finite number", field=f"release.slo_{statistic}")
        if threshold >= 0:
            slos.append(Slo(statistic, kind, threshold))
    return ReleasePolicy(
        dp_mode=mode,
        rho=rho,
        budget_rho=budget_rho,
        window=window,
        delta=delta,
        confidence=confidence,
        slos=tuple(slos),
        history=history,
        allow_window_override=allow_window_override,
    )


def noise_plan(schema: Schema, dp: DpSpec) -> NoisePlan:
    """The round's noise plan (also what every party computes in DISTRIBUTED mode)."""
    return plan_noise(schema, dp.mode, dp.rho, dp.expected_parties)


def release_rho(plan: NoisePlan, dp: DpSpec, noisy_parties: int) -> tuple[float, float | None]:
    """(rho charged for readers, rho against the aggregator itself).

    CENTRAL: the aggregator sees exact totals, so it gets no guarantee (None).
    DISTRIBUTED: readers see ``max(expected, noisy)`` party draws (the release tops up
    the missing ones); the aggregator saw only the ``noisy_parties`` that submitted.
    """
    if dp.mode is DpMode.OFF:
        return 0.0, None
    if dp.mode is DpMode.CENTRAL:
        return plan.rho_with(0), None
    readers = plan.rho_with(max(dp.expected_parties, noisy_parties))
    if noisy_parties == 0:
        return readers, None
    return readers, plan.rho_with(noisy_parties)


def build_report(
    given: ReleaseInput,
    policy: ReleasePolicy,
    *,
    spent_before: float = 0.0,
    previous: Sequence[Report] = (),
    rng: RandomSource | None = None,
) -> Report:
    """Noise, suppress, derive and flag. Raises BudgetExhausted before sampling any noise
    when the release does not fit the budget."""
    schema, dp = given.schema, given.dp
    if len(given.totals) != schema.vector_length:
        raise Internal(
            f"aggregate has {len(given.totals)} slots, schema {schema.schema_id[:12]} has "
            f"{schema.vector_length}"
        )
    plan = noise_plan(schema, dp)
    noisy_parties = len(given.included_parties) if dp.mode is DpMode.DISTRIBUTED else 0
    rho, rho_vs_aggregator = release_rho(plan, dp, noisy_parties)
    policy.check_budget(dp, rho, spent_before)

    totals = [int(t) for t in given.totals]
    if dp.mode is DpMode.CENTRAL:
        totals = central_noise(plan, totals)
    elif dp.mode is DpMode.DISTRIBUTED and noisy_parties < dp.expected_parties:
        extra = topup_noise(plan, dp.expected_parties - noisy_parties, rng or CsprngSource())
        totals = [t + e for t, e in zip(totals, extra, strict=True)]
    # The noise actually in the sum: with more parties than expected, more than planned.
    released = plan.in_sum(noisy_parties)
    sigma = released.slot_sigma()

    history = _history_by_region(previous)
    regions = []
    for region in schema.regions:
        contributors = int(given.totals[schema.contributor_index(region)])
        if contributors < given.min_contributors:
            regions.append(RegionResult(region=region, suppressed=True, contributors=0))
            continue
        cells = region_cells(schema, region, totals, sigma)
        stats = derive_stats(schema, cells, confidence=policy.confidence)
        earlier = history.get(region, [])
        flags = flag_region(
            stats,
            slos=policy.slos,
            movement=policy.movement,
            previous=[{s.name: s for s in e.stats} for e in earlier],
            confidence=policy.confidence,
        )
        this = _Earlier(given.round_id, given.released_ms, dp.window or None, stats)
        trend = [
            TrendPoint(e.round_id, e.released_ms, s.name, s.value, s.low, s.high, e.window)
            for e in [*earlier, this]
            for s in e.stats
            if s.name in TREND_STATISTICS and not is_not_collected(s)
        ]
        regions.append(
            RegionResult(
                region=region,
                suppressed=False,
                contributors=contributors,
                cells=cells,
                stats=stats,
                flags=flags,
                trend=tuple(trend),
            )
        )
    release = DpRelease(
        mode=dp.mode,
        rho=rho,
        epsilon=epsilon(rho, policy.delta) if rho > 0 else 0.0,
        delta=policy.delta if rho > 0 else 0.0,
        rho_vs_aggregator=rho_vs_aggregator,
        campaign=dp.campaign,
        window=dp.window,
        budget_rho=policy.budget_rho if dp.mode is not DpMode.OFF else 0.0,
        spent_rho=spent_before + rho,
        expected_parties=dp.expected_parties,
        noisy_parties=noisy_parties,
        noise=released.noise(),
    )
    return Report(
        round_id=given.round_id,
        schema_id=schema.schema_id,
        mode=given.mode,
        regions=tuple(regions),
        min_contributors=given.min_contributors,
        included_parties=given.included_parties,
        released_ms=given.released_ms,
        dp=release,
        lineage=Lineage(
            software_version=__version__,
            anonymization_rules=ANONYMIZATION_RULES,
            schema_name=schema.name,
            schema_version=schema.version,
            min_cell=schema.min_cell,
            confidence=policy.confidence,
        ),
        slos=policy.slos,
    )


@dataclass(frozen=True)
class _Earlier:
    """One release's statistics of one region, and what names the release."""

    round_id: str
    released_ms: int
    #: The release's DP budget window (its ISO week or month), None if it had none.
    window: str | None
    stats: tuple[Statistic, ...]


def _history_by_region(previous: Sequence[Report]) -> Mapping[str, list[_Earlier]]:
    """Earlier releases' statistics per region, oldest first (suppressed regions skipped)."""
    out: dict[str, list[_Earlier]] = {}
    for report in sorted(previous, key=lambda r: (r.released_ms, r.round_id)):
        for region in report.regions:
            if not region.suppressed:
                out.setdefault(region.region, []).append(
                    _Earlier(
                        report.round_id, report.released_ms, report.dp.window or None, region.stats
                    )
                )
    return out
