"""Service-failure flags of one released region (pure).

:func:`flag_region` compares a region's statistics (:mod:`aggregator.stats`) with the
configured SLOs and with the region's own recent history, and explains every flag in one
plain-language sentence.

SLO flags
---------
A flag is a **BREACH** when the whole interval lies beyond the threshold (MAX:
``low > threshold``; MIN: ``high < threshold``), i.e. beyond it by more than the DP
noise explains. It is a **WATCH** when only the point estimate is beyond the threshold.
Without noise the interval is the point, so every breach is a BREACH, unless a merged
(or withheld) histogram bin widens the interval: a percentile in a merged bin can be
anywhere in it. Every reason says where its interval comes from (the DP noise, the
range of a merged bin, or both; :func:`aggregator.stats.interval_sources`), so a WATCH
with DP off never blames the noise.

Movement flags
--------------
The baseline is the mean of the statistic in the region's earlier releases (None values
ignored; no baseline, no flag). ``d`` is the change in the *worse* direction, and its
noise sd combines this release's and the baseline's (the variance of a mean:
``sum(sd_i^2) / n^2``), each sd read back from an interval as ``(high - low) / (2 z)``.
``d > min_change + z * sd_d`` is a BREACH; ``d > min_change`` alone is a WATCH.

False flags from DP noise
-------------------------
The tests are one-sided at ``z`` of the two-sided ``confidence``. For a region whose
true value sits exactly at an SLO threshold, DP noise alone makes a BREACH with
probability at most ``(1 - confidence) / 2`` per check (2.5 % at 95 %). For a region
three noise sds inside the threshold, even a WATCH (point beyond the threshold) has
probability ``P(Z > 3) < 0.15 %``, and a BREACH ``P(Z > 3 + z) ~ 4e-7`` at 95 %. The same
holds for a movement flag whose true change is exactly ``min_change`` (BREACH <= 2.5 %)
or three sds below it. These rates are per check and approximate (normal approximation
of the delta-method sds, intervals read back as symmetric); a report checks several
statistics in several regions, so the chance of *some* false BREACH grows with the
number of checks (at most their sum). DP noise is the only variation accounted for:
the weekly sampling variation of real tickets is what ``min_change`` is for.

Movement tolerances (:data:`DEFAULT_MOVEMENT`)
----------------------------------------------
Chosen from the natural week-to-week variation of the synthetic data
(``party.synthetic``, no failure region, no DP): 12 seeded weeks, regions of 3 teams x
120 tickets (360 a week) and 5 teams x 140 (700 a week). Standard deviation of the
weekly value (the sd of a change between two weeks is about 1.4 times this):

================== =============== ================
statistic          360 tickets/wk  700 tickets/wk
================== =============== ================
escalation_rate    1.0 points      0.8 points
csat_mean          0.10            0.05
pct_satisfied      3.3 points      1.9 points
resolution_p90     8.3 h           4.9 h
first_response_p90 2.2 h           0.24 h
================== =============== ================

Each tolerance is roughly three sds of the week-to-week change of a 360-ticket region
or more (first_response_p90 jumps when merged tail bins widen its last bin), so ordinary
weeks rarely trip even a WATCH, while the synthetic service failure (escalations x3,
resolution median 14 h -> 40 h, CSAT mean 4.2 -> 3.0 in the failing team) moves a
region whose tickets mostly come from the failing team well beyond them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from aggregator.stats import decimals_of, interval_sources, label_of, z_value
from blindsum.errors import InvalidArgument
from blindsum.model import Flag, FlagKind, Severity, Slo, SloKind, Statistic

__all__ = [
    "DEFAULT_MOVEMENT",
    "DEFAULT_SLOS",
    "MovementRule",
    "flag_region",
]

#: Default service-level objectives.
DEFAULT_SLOS: tuple[Slo, ...] = (
    Slo("escalation_rate", SloKind.MAX, 15.0),
    Slo("resolution_p90", SloKind.MAX, 72.0),
    Slo("csat_mean", SloKind.MIN, 3.5),
)


@dataclass(frozen=True)
class MovementRule:
    """Flag ``statistic`` when it moves in the ``worse`` direction by more than
    ``min_change`` (in the statistic's unit; points for percentages) from its baseline."""

    statistic: str
    worse: Literal["up", "down"]
    min_change: float

    def __post_init__(self) -> None:
        if not isinstance(self.statistic, str) or not self.statistic:
            raise InvalidArgument("must be a statistic name", field="movement.statistic")
        if self.worse not in ("up", "down"):
            raise InvalidArgument("must be 'up' or 'down'", field="movement.worse")
        if (
            isinstance(self.min_change, bool)
            or not isinstance(self.min_change, int | float)
            or not math.isfinite(self.min_change)
            or self.min_change < 0
        ):
            raise InvalidArgument("must be a finite number >= 0", field="movement.min_change")


#: Default movement rules; see the module docstring for how they were chosen.
DEFAULT_MOVEMENT: tuple[MovementRule, ...] = (
    MovementRule("escalation_rate", "up", 5.0),
    MovementRule("csat_mean", "down", 0.3),
    MovementRule("pct_satisfied", "down", 10.0),
    MovementRule("resolution_p90", "up", 24.0),
    MovementRule("first_response_p90", "up", 4.0),
)


def flag_region(
    stats: Sequence[Statistic],
    *,
    slos: Sequence[Slo] = DEFAULT_SLOS,
    movement: Sequence[MovementRule] = DEFAULT_MOVEMENT,
    previous: Sequence[Mapping[str, Statistic]] = (),
    confidence: float = 0.95,
) -> tuple[Flag, ...]:
    """SLO flags (in ``slos`` order), then movement flags (in ``movement`` order).

    ``stats`` are this release's statistics of one region; ``previous`` the region's
    statistics in the campaign's earlier releases (most recent last; may be empty).
    Statistics that are missing or None raise no flag.
    """
    z = z_value(confidence)
    current = {s.name: s for s in stats}
    flags: list[Flag] = []
    for slo in slos:
        stat = current.get(slo.statistic)
        if stat is not None and stat.value is not None:
            flag = _slo_flag(slo, stat, confidence)
            if flag is not None:
                flags.append(flag)
    for rule in movement:
        stat = current.get(rule.statistic)
        if stat is None or stat.value is None:
            continue
        history = [
            p[rule.statistic]
            for p in previous
            if rule.statistic in p and p[rule.statistic].value is not None
        ]
        if history:
            flag = _movement_flag(rule, stat, history, z)
            if flag is not None:
                flags.append(flag)
    return tuple(flags)


def _slo_flag(slo: Slo, stat: Statistic, confidence: float) -> Flag | None:
    value = stat.value
    if value is None:  # pragma: no cover - the caller skips None values
        return None
    low = value if stat.low is None else stat.low
    high = value if stat.high is None else stat.high
    if slo.kind is SloKind.MAX:
        if not value > slo.threshold:
            return None
        breach, side = low > slo.threshold, "above"
    else:
        if not value < slo.threshold:
            return None
        breach, side = high < slo.threshold, "below"
    name = label_of(stat.name)
    shown = _fmt(value, stat.unit, stat.name)
    sources = interval_sources(stat)
    if low == high:
        spread = "(exact)"
    else:
        # A confidence level belongs to noise; a merged bin's range is certain.
        level = f"{_pct(confidence)} " if "DP noise" in sources else ""
        spread = (
            f"({level}interval {_fmt(low, stat.unit, stat.name, suffix=False)}"
            f"-{_fmt(high, stat.unit, stat.name)})"
        )
    threshold = _threshold(slo.threshold, stat.unit)
    reason = f"{name} {shown} {spread} is {side} the {threshold} SLO"
    reason += "." if breach else f", but within {_uncertainty(sources)}."
    return Flag(
        kind=FlagKind.SLO,
        severity=Severity.BREACH if breach else Severity.WATCH,
        statistic=stat.name,
        value=value,
        threshold=slo.threshold,
        reason=reason,
    )


def _movement_flag(
    rule: MovementRule, stat: Statistic, history: Sequence[Statistic], z: float
) -> Flag | None:
    """Movement against the mean of ``history`` (non-empty, no None values).

    The flag's threshold is the value the statistic had to pass: baseline +- min_change.
    """
    value = stat.value
    if value is None:  # pragma: no cover - the caller skips None values
        return None
    values = [h.value for h in history if h.value is not None]
    baseline = math.fsum(values) / len(values)
    sign = 1.0 if rule.worse == "up" else -1.0
    change = sign * (value - baseline)
    if not change > rule.min_change:
        return None
    var_now = _sd(stat, z) ** 2
    var_base = math.fsum(_sd(h, z) ** 2 for h in history) / len(history) ** 2
    noise = z * math.sqrt(var_now + var_base)
    breach = change > rule.min_change + noise

    unit = stat.unit
    name = label_of(stat.name)
    moved = "rose" if value > baseline else "fell"
    since = (
        "the previous release" if len(values) == 1 else f"mean of the last {len(values)} releases"
    )
    delta = _change(value - baseline, unit, stat.name)
    tolerance = _tolerance(rule.min_change, unit)
    sources = _union(interval_sources(s) for s in (*history, stat))
    if noise == 0:
        tail = f"more than the {tolerance} tolerance (no DP noise)."
    elif breach:
        tail = (
            f"more than the {tolerance} tolerance plus {_uncertainty(sources)} "
            f"(±{_fmt(noise, unit, stat.name, suffix=False)})."
        )
    else:
        tail = (
            f"more than the {tolerance} tolerance, but within {_uncertainty(sources)} "
            f"(±{_fmt(noise, unit, stat.name, suffix=False)})."
        )
    reason = (
        f"{name} {moved} to {_fmt(value, unit, stat.name)} from "
        f"{_fmt(baseline, unit, stat.name)} ({since}), {delta}; {tail}"
    )
    return Flag(
        kind=FlagKind.MOVEMENT,
        severity=Severity.BREACH if breach else Severity.WATCH,
        statistic=stat.name,
        value=value,
        threshold=baseline + sign * rule.min_change,
        reason=reason,
    )


def _sd(stat: Statistic, z: float) -> float:
    """The noise sd read back from the statistic's interval (0 without one)."""
    if stat.low is None or stat.high is None:
        return 0.0
    return max(stat.high - stat.low, 0.0) / (2 * z)


# ---------------------------------------------------------------- wording

#: How a flag reason names each source of an interval (aggregator.stats words).
_SOURCE_WORDS = {
    "DP noise": "the DP noise",
    "a merged bin": "the range of a merged bin",
    "withheld bins": "the possible values of withheld bins",
}


def _union(groups: Iterable[Sequence[str]]) -> tuple[str, ...]:
    """The sources named in any group, in :data:`_SOURCE_WORDS` order."""
    seen = {source for group in groups for source in group}
    return tuple(source for source in _SOURCE_WORDS if source in seen)


def _uncertainty(sources: Sequence[str]) -> str:
    """ "the DP noise", "the range of a merged bin", or both joined with "and"."""
    words = [_SOURCE_WORDS.get(source, source) for source in sources]
    if not words:  # pragma: no cover - an interval always has a source
        return "the interval"
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _pct(confidence: float) -> str:
    return f"{confidence * 100:g}%"


def _fmt(value: float, unit: str, name: str, *, suffix: bool = True) -> str:
    """``value`` rounded for a reader: percent and hours 1 decimal, scores 2 (NPS 1)."""
    text = f"{value:.{decimals_of(name, unit)}f}"
    if not suffix:
        return text
    if unit == "%":
        return f"{text}%"
    if unit == "hours":
        return f"{text} h"
    return text


def _threshold(threshold: float, unit: str) -> str:
    text = f"{threshold:g}"
    if unit == "%":
        return f"{text}%"
    if unit == "hours":
        return f"{text}-hour"
    return text


def _tolerance(min_change: float, unit: str) -> str:
    text = f"{min_change:g}"
    if unit == "%":
        return f"{text}-point"
    if unit == "hours":
        return f"{text}-hour"
    return text


def _change(delta: float, unit: str, name: str) -> str:
    text = f"{delta:+.{decimals_of(name, unit)}f}"
    if unit == "%":
        return f"{text} points"
    if unit == "hours":
        return f"{text} h"
    return text
