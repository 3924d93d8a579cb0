"""aggregator.flags: SLO and movement flags, their severity against the DP noise, and
the plain-language reasons."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aggregator.flags import DEFAULT_MOVEMENT, DEFAULT_SLOS, MovementRule, flag_region
from aggregator.stats import EXACT_NOTE, MERGED_NOTE, WITHHELD_NOTE, z_value
from blindsum.errors import InvalidArgument
from blindsum.model import Flag, FlagKind, Severity, Slo, SloKind, Statistic

Z = z_value(0.95)


def stat(name: str, value: float | None, sd: float = 0.0, unit: str = "") -> Statistic:
    """A statistic with a symmetric interval of ``sd`` (the point without noise)."""
    unit = unit or {"escalation_rate": "%", "pct_satisfied": "%", "csat_mean": "score"}.get(
        name, "hours"
    )
    if value is None:
        return Statistic(name, None, unit=unit, note="withheld")
    return Statistic(name, value, value - Z * sd, value + Z * sd, unit)


def slo_flags(*stats: Statistic, slos: tuple[Slo, ...] = DEFAULT_SLOS) -> tuple[Flag, ...]:
    return flag_region(stats, slos=slos, movement=(), previous=())


def moves(
    now: Statistic, before: list[Statistic], rule: MovementRule | None = None
) -> tuple[Flag, ...]:
    rule = rule or MovementRule(now.name, "up", 5.0)
    return flag_region([now], slos=(), movement=(rule,), previous=[{s.name: s} for s in before])


# ----------------------------------------------------------------------- SLO


def test_defaults() -> None:
    assert (
        Slo("escalation_rate", SloKind.MAX, 15.0),
        Slo("resolution_p90", SloKind.MAX, 72.0),
        Slo("csat_mean", SloKind.MIN, 3.5),
    ) == DEFAULT_SLOS
    assert {(r.statistic, r.worse) for r in DEFAULT_MOVEMENT} >= {
        ("escalation_rate", "up"),
        ("csat_mean", "down"),
        ("resolution_p90", "up"),
    }


def test_slo_breach_without_noise_is_always_a_breach() -> None:
    (flag,) = slo_flags(stat("escalation_rate", 15.1))
    assert (flag.kind, flag.severity, flag.statistic) == (
        FlagKind.SLO,
        Severity.BREACH,
        "escalation_rate",
    )
    assert (flag.value, flag.threshold) == (15.1, 15.0)
    assert flag.reason == "Escalation rate 15.1% (exact) is above the 15% SLO."


def test_slo_at_or_inside_the_threshold_is_no_flag() -> None:
    assert slo_flags(stat("escalation_rate", 15.0)) == ()
    assert slo_flags(stat("escalation_rate", 14.0, sd=2.0)) == ()
    assert slo_flags(stat("csat_mean", 3.5)) == ()
    assert slo_flags(stat("csat_mean", 3.9, sd=0.5)) == ()


def test_slo_with_noise_breach_and_watch() -> None:
    # 21.4 +- 1.6: the whole interval is above 15 -> BREACH.
    (flag,) = slo_flags(Statistic("escalation_rate", 21.4, 19.8, 23.0, "%"))
    assert flag.severity is Severity.BREACH
    assert flag.reason == ("Escalation rate 21.4% (95% interval 19.8-23.0%) is above the 15% SLO.")
    # 16.0 +- 2.1: point above, interval reaches 15 -> WATCH.
    (flag,) = slo_flags(Statistic("escalation_rate", 16.0, 13.9, 18.1, "%"))
    assert flag.severity is Severity.WATCH
    assert flag.reason == (
        "Escalation rate 16.0% (95% interval 13.9-18.1%) is above the 15% SLO, "
        "but within the DP noise."
    )


def test_slo_min_kind() -> None:
    (flag,) = slo_flags(Statistic("csat_mean", 3.2, 3.05, 3.35, "score"))
    assert (flag.severity, flag.threshold) == (Severity.BREACH, 3.5)
    assert flag.reason == "Average CSAT 3.20 (95% interval 3.05-3.35) is below the 3.5 SLO."
    (flag,) = slo_flags(Statistic("csat_mean", 3.4, 3.2, 3.6, "score"))
    assert flag.severity is Severity.WATCH


def test_slo_reason_for_hours() -> None:
    (flag,) = slo_flags(Statistic("resolution_p90", 80.04, 74.0, 86.0, "hours"))
    assert flag.severity is Severity.BREACH
    assert "90th-percentile resolution time 80.0 h" in flag.reason
    assert "72-hour SLO" in flag.reason


def test_slo_skips_missing_and_none_statistics_and_keeps_slo_order() -> None:
    assert slo_flags(stat("escalation_rate", None), stat("resolution_p50", 500.0)) == ()
    flags = slo_flags(stat("csat_mean", 2.0), stat("escalation_rate", 30.0))
    assert [f.statistic for f in flags] == ["escalation_rate", "csat_mean"]


def test_slo_breach_rate_from_noise_alone_at_the_threshold() -> None:
    """A region whose true escalation rate is exactly the 15 % SLO, measured with noise
    sd 1: BREACH in about (1 - 0.95) / 2 = 2.5 % of 4000 seeded draws.

    False-failure rate of the 1.5-3.5 % band: Binomial(4000, 0.025) has sd 0.25 %, so
    the band is +-4 sd (about 6e-5); the seed makes it deterministic.
    """
    rng = np.random.default_rng(7)
    breaches = watches = 0
    for noise in rng.normal(0.0, 1.0, 4000):
        flags = slo_flags(stat("escalation_rate", 15.0 + float(noise), sd=1.0))
        breaches += any(f.severity is Severity.BREACH for f in flags)
        watches += any(f.severity is Severity.WATCH for f in flags)
    assert 0.015 <= breaches / 4000 <= 0.035
    assert 0.44 <= (breaches + watches) / 4000 <= 0.56  # point beyond in half the draws


# ------------------------------------------------------------------ movement


def test_movement_needs_history() -> None:
    assert moves(stat("escalation_rate", 30.0), []) == ()
    assert moves(stat("escalation_rate", 30.0), [stat("escalation_rate", None)]) == ()


def test_movement_up_without_noise() -> None:
    before = [stat("escalation_rate", v) for v in (4.0, 5.0, 6.6)]
    (flag,) = moves(stat("escalation_rate", 21.4), before)
    assert (flag.kind, flag.severity, flag.statistic, flag.value) == (
        FlagKind.MOVEMENT,
        Severity.BREACH,
        "escalation_rate",
        21.4,
    )
    assert flag.threshold == pytest.approx(5.2 + 5.0)
    assert flag.reason == (
        "Escalation rate rose to 21.4% from 5.2% (mean of the last 3 releases), "
        "+16.2 points; more than the 5-point tolerance (no DP noise)."
    )


def test_movement_within_tolerance_or_in_the_better_direction_is_no_flag() -> None:
    before = [stat("escalation_rate", 5.0)]
    assert moves(stat("escalation_rate", 10.0), before) == ()  # exactly the tolerance
    assert moves(stat("escalation_rate", 9.9), before) == ()
    assert moves(stat("escalation_rate", 0.0), before) == ()  # better


def test_movement_down() -> None:
    rule = MovementRule("csat_mean", "down", 0.3)
    before = [stat("csat_mean", 4.2), stat("csat_mean", None), stat("csat_mean", 4.0)]
    (flag,) = moves(stat("csat_mean", 3.5), before, rule)
    assert flag.severity is Severity.BREACH
    assert flag.threshold == pytest.approx(4.1 - 0.3)
    assert flag.reason == (
        "Average CSAT fell to 3.50 from 4.10 (mean of the last 2 releases), -0.60; "
        "more than the 0.3 tolerance (no DP noise)."
    )
    assert moves(stat("csat_mean", 4.9), before, rule) == ()  # rose: better


def test_movement_noise_decides_breach_or_watch() -> None:
    """sd_d = sqrt(sd_now^2 + sum(sd_i^2) / n^2); BREACH needs d > tol + z * sd_d."""
    before = [stat("escalation_rate", 5.0, sd=1.0), stat("escalation_rate", 5.0, sd=1.0)]
    sd_d = math.sqrt(1.5**2 + (1.0 + 1.0) / 4)
    noise = Z * sd_d
    (watch,) = moves(stat("escalation_rate", 5.0 + 5.0 + noise - 0.1, sd=1.5), before)
    assert watch.severity is Severity.WATCH
    assert "but within the DP noise" in watch.reason
    assert f"(±{noise:.1f})" in watch.reason
    (breach,) = moves(stat("escalation_rate", 5.0 + 5.0 + noise + 0.1, sd=1.5), before)
    assert breach.severity is Severity.BREACH
    assert breach.reason.endswith(
        f"more than the 5-point tolerance plus the DP noise (±{noise:.1f})."
    )
    assert "(mean of the last 2 releases)" in breach.reason


def test_movement_against_one_previous_release_and_hours() -> None:
    rule = MovementRule("resolution_p90", "up", 24.0)
    (flag,) = moves(stat("resolution_p90", 100.0), [stat("resolution_p90", 60.0)], rule)
    assert flag.reason == (
        "90th-percentile resolution time rose to 100.0 h from 60.0 h (the previous "
        "release), +40.0 h; more than the 24-hour tolerance (no DP noise)."
    )


def test_slo_and_movement_flags_together_in_order() -> None:
    now = [stat("escalation_rate", 21.0), stat("csat_mean", 3.0)]
    before = [
        {"escalation_rate": stat("escalation_rate", 5.0), "csat_mean": stat("csat_mean", 4.2)}
    ]
    flags = flag_region(now, slos=DEFAULT_SLOS, movement=DEFAULT_MOVEMENT, previous=before)
    assert [(f.kind, f.statistic) for f in flags] == [
        (FlagKind.SLO, "escalation_rate"),
        (FlagKind.SLO, "csat_mean"),
        (FlagKind.MOVEMENT, "escalation_rate"),
        (FlagKind.MOVEMENT, "csat_mean"),
    ]


def test_every_reason_names_statistic_number_and_threshold() -> None:
    now = [
        Statistic("escalation_rate", 18.25, 16.0, 20.5, "%"),
        Statistic("resolution_p90", 90.0, 85.0, 95.0, "hours"),
        Statistic("csat_mean", 3.1, 3.0, 3.2, "score"),
    ]
    flags = flag_region(now, previous=[])
    assert len(flags) == 3
    for flag, label, number, threshold in zip(
        flags,
        ("Escalation rate", "resolution time", "Average CSAT"),
        ("18.2%", "90.0 h", "3.10"),
        ("15%", "72-hour", "3.5"),
        strict=True,
    ):
        assert label in flag.reason
        assert number in flag.reason
        assert threshold in flag.reason
        assert flag.reason.endswith(".") and flag.reason.count(". ") == 0


def test_movement_rule_is_validated() -> None:
    for kwargs, field in (
        ({"statistic": "", "worse": "up", "min_change": 1.0}, "movement.statistic"),
        ({"statistic": "x", "worse": "sideways", "min_change": 1.0}, "movement.worse"),
        ({"statistic": "x", "worse": "up", "min_change": -1.0}, "movement.min_change"),
        ({"statistic": "x", "worse": "up", "min_change": math.inf}, "movement.min_change"),
    ):
        with pytest.raises(InvalidArgument) as info:
            MovementRule(**kwargs)  # type: ignore[arg-type]
        assert info.value.field == field


def test_confidence_is_validated() -> None:
    with pytest.raises(InvalidArgument) as info:
        flag_region([], confidence=1.0)
    assert info.value.field == "confidence"


# ------------------------------------------------------- where an interval comes from


def _p90(low: float, high: float, note: str) -> Statistic:
    return Statistic("resolution_p90", 80.0, low, high, "hours", note)


def test_slo_watch_names_noise_merged_bin_or_both() -> None:
    noise = _p90(70.0, 90.0, "")
    merged = _p90(48.0, 168.0, f"{EXACT_NOTE}; {MERGED_NOTE}")
    both = _p90(45.0, 170.0, MERGED_NOTE)
    (flag,) = slo_flags(noise)
    assert flag.severity is Severity.WATCH
    assert flag.reason.endswith(
        "(95% interval 70.0-90.0 h) is above the 72-hour SLO, but within the DP noise."
    )
    (flag,) = slo_flags(merged)
    assert flag.severity is Severity.WATCH
    assert "DP noise" not in flag.reason
    assert "95%" not in flag.reason  # a merged bin's range has no confidence level
    assert flag.reason.endswith(
        "(interval 48.0-168.0 h) is above the 72-hour SLO, but within the range of a merged bin."
    )
    (flag,) = slo_flags(both)
    assert flag.reason.endswith("but within the DP noise and the range of a merged bin.")
    withheld = _p90(60.0, 95.0, f"{EXACT_NOTE}; {WITHHELD_NOTE}")
    (flag,) = slo_flags(withheld)
    assert flag.reason.endswith("but within the possible values of withheld bins.")


def test_movement_watch_names_where_the_spread_comes_from() -> None:
    rule = MovementRule("resolution_p90", "up", 24.0)
    before = Statistic("resolution_p90", 40.0, 40.0, 40.0, "hours", EXACT_NOTE)
    merged_now = Statistic(
        "resolution_p90", 70.0, 48.0, 168.0, "hours", f"{EXACT_NOTE}; {MERGED_NOTE}"
    )
    (flag,) = moves(merged_now, [before], rule)
    assert flag.severity is Severity.WATCH
    assert "DP noise" not in flag.reason
    assert "but within the range of a merged bin (±" in flag.reason
    noisy_before = Statistic("resolution_p90", 40.0, 36.0, 44.0, "hours", "")
    (flag,) = moves(merged_now, [noisy_before], rule)
    assert "but within the DP noise and the range of a merged bin (±" in flag.reason
    noisy_now = Statistic("resolution_p90", 70.0, 60.0, 80.0, "hours", "")
    (flag,) = moves(noisy_now, [noisy_before], rule)
    assert "but within the DP noise (±" in flag.reason
