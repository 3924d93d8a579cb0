"""aggregator.stats: derived statistics, their DP intervals, and the guards."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from datetime import date
from statistics import NormalDist
from typing import Any

import numpy as np
import pytest

from aggregator.cells import region_cells
from aggregator.stats import (
    EXACT_NOTE,
    NO_NPS_NOTE,
    STATISTICS,
    derive_stats,
    histogram_total,
    interval_sources,
    is_not_collected,
    z_value,
)
from blindsum.errors import InvalidArgument
from blindsum.model import Cell, CellStatus, Statistic
from blindsum.schema import Metric, MetricKind, Schema, SmallCells
from party.synthetic import TeamProfile, generate_rows

Values = Mapping[str, int | Sequence[int]]

#: A region of the default schema, chosen so that every statistic is easy by hand.
BASE: dict[str, int | list[int]] = {
    "tickets": 500,
    "replied": 450,
    "csat": [10, 10, 20, 40, 20],  # mean 3.5, 60 % satisfied
    "csat_sum": 350,
    # detractors 0-6: 10, passives 7-8: 20, promoters 9-10: 30 -> NPS 100 * 20 / 60
    "nps": [1, 1, 1, 1, 1, 1, 4, 10, 10, 20, 10],
    "escalated": 25,  # 5 %
    "resolved": 100,
    # [0,.5) [.5,1) [1,2) [2,4) [4,8) [8,24) [24,48)
    "first_response_hours": [20, 20, 20, 20, 10, 5, 5],
    # [0,1) [1,4) [4,8) [8,24) [24,48) [48,72) [72,168) [168,336)
    "resolution_hours": [10, 30, 40, 10, 5, 3, 1, 1],
    "resolution_hours_sum": 20000,
}


def _fine_nps(base: Schema) -> Schema:
    """The default schema with one NPS bin per score (0..10), as a custom schema may have
    it; the default keeps only the three NPS groups."""
    metrics = tuple(
        dataclasses.replace(m, edges=tuple(float(e) for e in range(12))) if m.name == "nps" else m
        for m in base.metrics
    )
    return dataclasses.replace(base, metrics=metrics)


def schema(min_cell: int = 0, **changes: Any) -> Schema:
    return dataclasses.replace(_fine_nps(Schema.default()), min_cell=min_cell, **changes)


def totals_of(s: Schema, values: Values, region: str = "APAC") -> list[int]:
    totals = [0] * s.vector_length
    for metric in s.metrics:
        if metric.name not in values:
            continue
        value = values[metric.name]
        if isinstance(value, int):
            totals[s.slot_index(region, metric.name)] = value
        else:
            for b, count in enumerate(value):
                totals[s.slot_index(region, metric.name, b)] = count
    totals[s.contributor_index(region)] = 3
    return totals


def stats_of(
    values: Values,
    sd: float | Mapping[str, float] = 0.0,
    *,
    s: Schema | None = None,
    confidence: float = 0.95,
) -> dict[str, Statistic]:
    s = s or schema()
    sigma = [0.0] * s.vector_length
    for metric in s.metrics:
        metric_sd = sd if isinstance(sd, float | int) else sd.get(metric.name, 0.0)
        for b in range(metric.slots):
            bin_ = b if metric.kind is MetricKind.HISTOGRAM else None
            sigma[s.slot_index("APAC", metric.name, bin_)] = float(metric_sd)
    cells = region_cells(s, "APAC", totals_of(s, values), sigma)
    return {st.name: st for st in derive_stats(s, cells, confidence=confidence)}


def with_values(**changes: int | list[int]) -> dict[str, int | list[int]]:
    return {**BASE, **changes}


# ------------------------------------------------------------------ values


def test_hand_computed_values_without_noise() -> None:
    stats = stats_of(BASE)
    assert list(stats) == [spec.name for spec in STATISTICS]
    expected = {
        "csat_mean": 3.5,
        "pct_satisfied": 60.0,
        "nps": 100 * 20 / 60,
        "escalation_rate": 5.0,
        # target 50: 40 below bin [1,2) of 20 -> 1 + 10/20 * 1
        "first_response_p50": 1.5,
        # target 90: 80 below bin [4,8) of 10 -> 4 + 10/10 * 4, its top edge
        "first_response_p90": 8.0,
        # target 50: 40 below [4,8) of 40 -> 4 + 10/40 * 4
        "resolution_p50": 5.0,
        # target 90: 80 below [8,24) of 10 -> 8 + 10/10 * 16
        "resolution_p90": 24.0,
    }
    for name, value in expected.items():
        stat = stats[name]
        assert stat.value == pytest.approx(value), name
        assert stat.low == stat.high == stat.value, name
        assert stat.note == EXACT_NOTE, name
    assert {n: s.unit for n, s in stats.items()} == {
        "csat_mean": "score",
        "pct_satisfied": "%",
        "nps": "score",
        "escalation_rate": "%",
        "first_response_p50": "hours",
        "first_response_p90": "hours",
        "resolution_p50": "hours",
        "resolution_p90": "hours",
    }


def test_percentile_interpolates_over_a_merged_cell() -> None:
    # min_cell 10 merges the resolution tail [48,72) + [72,168) + [168,336) (3+1+1 = 5)
    # and then with [24,48) (5) into one cell [24,336) of 10.
    s = schema(min_cell=10)
    cells = region_cells(s, "APAC", totals_of(s, BASE), [0.0] * s.vector_length)
    tail = [c for c in cells if c.metric == "resolution_hours"][-1]
    assert (tail.slot, tail.value, tail.status) == (
        "resolution_hours[24,336)",
        10,
        CellStatus.MERGED,
    )
    stats = {st.name: st for st in derive_stats(s, cells)}
    # p90: target 90 is reached at the top of [8,24), the merged cell's lower edge.
    assert stats["resolution_p90"].value == pytest.approx(24.0)
    # More mass in the tail: the p90 lands inside the merged cell.
    heavy = with_values(resolution_hours=[10, 20, 20, 10, 5, 3, 1, 1])  # N = 70, target 63
    stats = {
        st.name: st
        for st in derive_stats(
            s, region_cells(s, "APAC", totals_of(s, heavy), [0.0] * s.vector_length)
        )
    }
    # 60 below the merged [24,336) of 10 -> 24 + 3/10 * 312
    assert stats["resolution_p90"].value == pytest.approx(24 + 0.3 * 312)


def test_percentile_clamps_negative_noisy_counts() -> None:
    values = with_values(resolution_hours=[10, -5, 40, 50, 0, 0, 0, 0])
    stats = stats_of(values)
    # CDF over [10, 0, 40, 50] (N = 100): the p50 target 50 is reached at the top of
    # [4,8); the p90 target 90 is 40 into [8,24) of 50.
    assert stats["resolution_p50"].value == pytest.approx(8.0)
    assert stats["resolution_p90"].value == pytest.approx(8 + 40 / 50 * 16)


def test_csat_mean_counts_merged_bins_at_their_middle_score() -> None:
    s = schema(min_cell=15)  # merges the csat bins 1 and 2 into [1,3): 20 answers
    values = with_values(csat_sum=351)  # differs from the histogram's 350: never used
    stat = stats_of(values, s=s)["csat_mean"]
    # (20 * 1.5 + 20 * 3 + 40 * 4 + 20 * 5) / 100; the true mean (3.5) is covered: the
    # merged answers could average anywhere in [1, 2], i.e. +-0.5 * 20 / 100.
    assert stat.value == pytest.approx(3.5)
    assert stat.low == pytest.approx(3.4) and stat.high == pytest.approx(3.6)
    assert "middle" in stat.note
    # Histogram used as is when every bin is released on its own.
    assert stats_of(values)["csat_mean"].value == pytest.approx(3.5)


def test_csat_mean_interval_uses_the_noise_of_the_cells_used() -> None:
    merged = schema(min_cell=15)
    small = stats_of(BASE, {"csat": 1.0}, s=merged)["csat_mean"]
    large = stats_of(BASE, {"csat": 10.0}, s=merged)["csat_mean"]
    assert _width(large) > 2 * _width(small)
    # From the histogram, csat_sum's noise does not matter.
    a = stats_of(BASE, {"csat": 1.0, "csat_sum": 5.0})["csat_mean"]
    b = stats_of(BASE, {"csat": 1.0, "csat_sum": 50.0})["csat_mean"]
    assert _width(a) == pytest.approx(_width(b))
    # Delta method by hand: gradient (k - mean) / N with N = 100, mean 3.5, sd 1.
    sd = math.sqrt(sum(((k - 3.5) / 100) ** 2 for k in range(1, 6)))
    assert _width(a) == pytest.approx(2 * 1.959963984540054 * sd)


def test_pct_satisfied_none_when_a_merged_bin_straddles_four() -> None:
    values = with_values(csat=[30, 30, 30, 5, 30])  # 5 (score 4) joins 30 (score 3)
    stats = stats_of(values, s=schema(min_cell=10))
    assert stats["pct_satisfied"].value is None
    assert "4" in stats["pct_satisfied"].note
    # [3,5) holds scores 3 and 4 at 3.5: (30 + 60 + 35 * 3.5 + 150) / 125
    assert stats["csat_mean"].value == pytest.approx((30 + 60 + 35 * 3.5 + 150) / 125)


def test_nps_none_when_merged_across_a_group_boundary_or_empty() -> None:
    straddle = stats_of(with_values(nps=[0] * 6 + [20, 2, 20, 20, 20]), s=schema(min_cell=10))
    assert straddle["nps"].value is None
    assert "NPS" in straddle["nps"].note
    for empty in ([0] * 11, [0] * 10 + [-3]):
        stat = stats_of(with_values(nps=empty))["nps"]
        assert (stat.value, stat.note) == (None, NO_NPS_NOTE)
    # A handful of noisy answers is not distinguishable from no answers at all.
    stat = stats_of(with_values(nps=[0] * 10 + [12]), {"nps": 5.0})["nps"]
    assert (stat.value, stat.note) == (None, NO_NPS_NOTE)
    # Too few NPS answers under MERGE: the histogram is withheld.
    stat = stats_of(with_values(nps=[1] * 5 + [0] * 6), s=schema(min_cell=10))["nps"]
    assert (stat.value, stat.note) == (None, NO_NPS_NOTE)


def test_statistics_the_schema_cannot_give_are_listed_as_not_collected() -> None:
    base = _fine_nps(Schema.default())
    s = dataclasses.replace(
        base, min_cell=0, metrics=tuple(m for m in base.metrics if m.name != "nps")
    )
    nps = stats_of(BASE, s=s)["nps"]
    assert (nps.value, nps.low, nps.high) == (None, None, None)
    assert nps.note.startswith("not collected") and "'nps'" in nps.note
    assert is_not_collected(nps)
    s = dataclasses.replace(
        base,
        min_cell=0,
        metrics=tuple(m for m in base.metrics if m.name not in ("escalated", "resolution_hours")),
    )
    got = stats_of(BASE, s=s)
    assert list(got) == [spec.name for spec in STATISTICS]  # every row, in table order
    assert [n for n, st in got.items() if is_not_collected(st)] == [
        "escalation_rate",
        "resolution_p50",
        "resolution_p90",
    ]
    assert "'escalated'" in got["escalation_rate"].note


def test_suppressed_or_empty_is_not_not_collected() -> None:
    """A metric the schema has but whose answers are withheld or absent is not "not
    collected": that is a different thing for a reader."""
    empty = stats_of(with_values(nps=[0] * 11))["nps"]
    assert empty.value is None and not is_not_collected(empty)
    withheld = stats_of(with_values(csat=[1, 1, 1, 1, 1]), s=schema(min_cell=10))["csat_mean"]
    assert withheld.value is None and not is_not_collected(withheld)


def test_escalation_rate_guards_tiny_and_clips() -> None:
    stat = stats_of(with_values(tickets=0, escalated=0))["escalation_rate"]
    assert stat.value is None and "no tickets" in stat.note
    stat = stats_of(with_values(tickets=-4, escalated=1), 3.0)["escalation_rate"]
    assert stat.value is None and "no tickets" in stat.note
    stat = stats_of(with_values(tickets=8, escalated=1), 5.0)["escalation_rate"]
    assert stat.value is None and "DP noise" in stat.note
    # Noise can push escalated above tickets; the value and interval stay in [0, 100].
    stat = stats_of(with_values(tickets=100, escalated=104), 2.0)["escalation_rate"]
    assert stat.value == 100.0 and stat.high == 100.0
    assert stat.low is not None and stat.low < 100.0


def test_withheld_histograms() -> None:
    s = schema(min_cell=10, metrics=_with_suppress(_fine_nps(Schema.default())))
    values = with_values(
        csat=[3, 20, 20, 40, 20],  # one small bin -> 3 and the smallest other withheld
        resolution_hours=[10, 30, 40, 10, 12, 12, 1, 1],  # the tail is withheld
        first_response_hours=[20, 20, 3, 20, 10, 12, 12],  # a bin at p50 is withheld
    )
    stats = stats_of(values, s=s)
    assert stats["csat_mean"].value is None and "withheld" in stats["csat_mean"].note
    assert stats["pct_satisfied"].value is None
    # The resolution p50 is in [4,8) whatever the withheld tail bins hold (0..9 each).
    p50 = stats["resolution_p50"]
    assert p50.value is not None and 4 <= p50.value <= 8
    assert "withheld" in p50.note
    assert p50.low is not None and p50.high is not None
    assert 4 <= p50.low < p50.value < p50.high <= 8
    # The first-response p50 can fall in the withheld [1,2) bin.
    assert stats["first_response_p50"].value is None
    assert "withheld" in stats["first_response_p50"].note
    # Everything small: whole histogram withheld.
    stats = stats_of(with_values(resolution_hours=[1] * 8), s=s)
    assert stats["resolution_p90"].value is None
    assert "withheld" in stats["resolution_p90"].note


def _with_suppress(base: Schema) -> tuple[Metric, ...]:
    return tuple(
        dataclasses.replace(m, small_cells=SmallCells.SUPPRESS)
        if m.kind is MetricKind.HISTOGRAM
        else m
        for m in base.metrics
    )


# --------------------------------------------------------------- intervals


def _width(stat: Statistic) -> float:
    assert stat.low is not None and stat.high is not None
    return stat.high - stat.low


def test_zero_noise_interval_is_the_point() -> None:
    for stat in stats_of(BASE).values():
        assert stat.low == stat.high == stat.value
        assert stat.note == EXACT_NOTE


def test_width_grows_with_noise_sd() -> None:
    big = {k: [10 * x for x in v] if isinstance(v, list) else 10 * v for k, v in BASE.items()}
    narrow = stats_of(big, 2.0)
    wide = stats_of(big, 8.0)
    for name in narrow:
        assert narrow[name].note == "", name
        assert _width(wide[name]) > _width(narrow[name]) > 0, name
        assert narrow[name].low <= narrow[name].value <= narrow[name].high  # type: ignore[operator]


def test_confidence_changes_z_and_is_validated() -> None:
    assert z_value(0.95) == pytest.approx(1.959963984540054)
    big = {k: [10 * x for x in v] if isinstance(v, list) else 10 * v for k, v in BASE.items()}
    at90 = stats_of(big, 4.0, confidence=0.9)["escalation_rate"]
    at99 = stats_of(big, 4.0, confidence=0.99)["escalation_rate"]
    assert _width(at99) / _width(at90) == pytest.approx(z_value(0.99) / z_value(0.9))
    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(InvalidArgument) as info:
            stats_of(BASE, confidence=bad)
        assert info.value.field == "confidence"


def test_percentile_interval_matches_brute_force_inversion() -> None:
    """The closed-form per-bin solution equals a direct scan of the definition: every x
    whose F(x) is within z * sd(F(x)) of q, sd from a numerical gradient."""
    counts = np.array([10.0, 30.0, 40.0, 10.0, 5.0, 3.0, 1.0, 1.0]) * 6
    sds = np.array([3.0, 5.0, 4.0, 6.0, 2.0, 3.0, 1.0, 2.0])
    edges = np.array(Schema.default().metric("resolution_hours").edges)
    values = with_values(resolution_hours=[int(c) for c in counts])
    s = schema()
    sigma = [0.0] * s.vector_length
    for b, sd in enumerate(sds):
        sigma[s.slot_index("APAC", "resolution_hours", b)] = float(sd)
    cells = region_cells(s, "APAC", totals_of(s, values), sigma)
    stats = {st.name: st for st in derive_stats(s, cells)}
    z = z_value(0.95)

    grid = np.linspace(edges[0], edges[-1], 33601)  # steps of 0.01 h
    frac = np.clip((grid[:, None] - edges[:-1]) / (edges[1:] - edges[:-1]), 0.0, 1.0)

    def cdf(c: np.ndarray) -> np.ndarray:
        return np.asarray(frac @ c / c.sum())

    f = cdf(counts)
    h = 1e-4
    grad = np.stack([(cdf(counts + np.eye(8)[i] * h) - f) / h for i in range(8)], axis=1)
    sd_f = np.sqrt(((grad * sds) ** 2).sum(axis=1))
    for name, q in (("resolution_p50", 0.5), ("resolution_p90", 0.9)):
        inside = grid[np.abs(f - q) <= z * sd_f]
        assert stats[name].low == pytest.approx(inside.min(), abs=0.01), name
        assert stats[name].high == pytest.approx(inside.max(), abs=0.01), name


def test_coverage_of_95_percent_intervals() -> None:
    """2000 noisy releases of one region (independent rounded-Gaussian noise, sd 10 per
    slot, seeded): every statistic's 95 % interval covers its noise-free value in 93-97 %
    of them.

    False-failure rate: for an interval with exactly 95 % coverage, the hit count is
    Binomial(2000, 0.95) (sd 9.7, i.e. 0.49 %), and 93-97 % is +-4.1 sd: about 4e-5 per
    statistic, 3e-4 for all eight. The seed makes the test deterministic; a failure after
    a change means the coverage really moved (or that seed is the rare one).
    """
    values: dict[str, int | list[int]] = {
        "tickets": 800,
        "replied": 700,
        "csat": [30, 40, 80, 200, 250],
        "csat_sum": 30 + 80 + 240 + 800 + 1250,
        "nps": [5, 5, 5, 8, 10, 15, 20, 40, 60, 80, 70],
        "escalated": 40,
        "resolved": 600,
        "first_response_hours": [150, 150, 200, 120, 80, 60, 40],
        "resolution_hours": [40, 100, 120, 150, 100, 50, 30, 10],
        "resolution_hours_sum": 90000,
    }
    s = schema()
    exact = totals_of(s, values)
    truth = {
        st.name: st.value
        for st in derive_stats(s, region_cells(s, "APAC", exact, [0.0] * s.vector_length))
    }
    sd = 10.0
    sigma = [sd] * s.vector_length
    rng = np.random.default_rng(20240601)
    hits = dict.fromkeys(truth, 0)
    draws = 2000
    for _ in range(draws):
        noise = np.rint(rng.normal(0.0, sd, s.vector_length)).astype(np.int64)
        noisy = [int(t + n) for t, n in zip(exact, noise, strict=True)]
        for stat in derive_stats(s, region_cells(s, "APAC", noisy, sigma)):
            assert stat.low is not None and stat.high is not None, stat
            hits[stat.name] += stat.low <= truth[stat.name] <= stat.high  # type: ignore[operator]
    rates = {name: hit / draws for name, hit in hits.items()}
    assert all(0.93 <= rate <= 0.97 for rate in rates.values()), rates


# --------------------------------------------------------- synthetic data


def _histogram(edges: Sequence[float], values: Sequence[float]) -> list[int]:
    """numpy.histogram with the schema's clipping: values >= the last edge count in the
    last bin (numpy's own last bin is closed, and would drop values above it)."""
    clipped = np.clip(np.asarray(values, dtype=float), edges[0], edges[-1])
    counts, _ = np.histogram(clipped, bins=np.asarray(edges, dtype=float))
    return [int(c) for c in counts]


@pytest.mark.parametrize("seed", [3, 11, 29])
def test_percentiles_from_bins_match_synthetic_data_within_one_bin(seed: int) -> None:
    """Percentiles derived from the released (noise-free, default min_cell merges) bins
    lie within one bin width of numpy's exact percentile of the raw ticket times: the
    width of the (possibly merged) cell that contains the exact percentile."""
    rows = generate_rows(
        TeamProfile("Team_Stats", regions=("APAC",), tickets_per_region=600, nps_rate=0),
        seed=seed,
        start=date(2024, 10, 28),
    )
    raw = {
        "first_response_hours": [float(r["first_response_minutes"]) / 60 for r in rows],
        "resolution_hours": [float(r["resolution_hours"]) for r in rows if r["resolution_hours"]],
    }
    s = Schema.default()
    values: dict[str, int | list[int]] = {
        name: _histogram(s.metric(name).edges, data) for name, data in raw.items()
    }
    cells = region_cells(s, "APAC", totals_of(s, values), [0.0] * s.vector_length)
    stats = {st.name: st for st in derive_stats(s, cells)}
    for stat_name, metric, q in (
        ("first_response_p50", "first_response_hours", 50),
        ("first_response_p90", "first_response_hours", 90),
        ("resolution_p50", "resolution_hours", 50),
        ("resolution_p90", "resolution_hours", 90),
    ):
        exact = float(np.percentile(raw[metric], q))
        cell = _cell_containing([c for c in cells if c.metric == metric], exact)
        assert cell.lo is not None and cell.hi is not None
        derived = stats[stat_name].value
        assert derived is not None, stat_name
        assert abs(derived - exact) <= cell.hi - cell.lo, (stat_name, derived, exact, cell)


def _cell_containing(cells: Sequence[Cell], x: float) -> Cell:
    for cell in cells:
        assert cell.lo is not None and cell.hi is not None
        if cell.lo <= x < cell.hi:
            return cell
    return cells[-1]


# ------------------------------------------------------------- validation


def test_empty_cells_give_no_statistics() -> None:
    assert derive_stats(Schema.default(), ()) == ()


def test_missing_cells_of_a_needed_metric_are_an_error() -> None:
    s = schema()
    cells = region_cells(s, "APAC", totals_of(s, BASE), [0.0] * s.vector_length)
    without = tuple(c for c in cells if c.metric != "tickets")
    with pytest.raises(InvalidArgument) as info:
        derive_stats(s, without)
    assert info.value.field == "tickets"


def test_z_value_is_the_two_sided_normal_quantile() -> None:
    for confidence in (0.8, 0.9, 0.95, 0.99):
        z = z_value(confidence)
        assert NormalDist().cdf(z) - NormalDist().cdf(-z) == pytest.approx(confidence)


def test_statistics_table_names_are_stable() -> None:
    assert [(s.name, s.unit) for s in STATISTICS] == [
        ("csat_mean", "score"),
        ("pct_satisfied", "%"),
        ("nps", "score"),
        ("escalation_rate", "%"),
        ("first_response_p50", "hours"),
        ("first_response_p90", "hours"),
        ("resolution_p50", "hours"),
        ("resolution_p90", "hours"),
    ]


def test_cells_of_other_kinds_are_ignored_when_the_schema_kind_differs() -> None:
    """A custom schema whose ``tickets`` is a histogram has no escalation rate."""
    base = _fine_nps(Schema.default())
    metrics = tuple(
        Metric("tickets", MetricKind.HISTOGRAM, edges=(0, 1, 2)) if m.name == "tickets" else m
        for m in base.metrics
    )
    s = dataclasses.replace(base, min_cell=0, metrics=metrics)
    values = with_values(tickets=[250, 250])
    assert is_not_collected(stats_of(values, s=s)["escalation_rate"])


def test_unknown_metric_cells_do_not_matter() -> None:
    extra = (Cell("other", 5, metric="other"),)
    s = schema()
    cells = region_cells(s, "APAC", totals_of(s, BASE), [0.0] * s.vector_length)
    assert derive_stats(s, cells + extra) == derive_stats(s, cells)


# ------------------------------------------------------------- one denominator for CSAT


def test_satisfied_share_divides_by_the_csat_histogram_total_not_replied() -> None:
    """``pct_satisfied`` is (bins 4 + 5) / the sum of the CSAT bins: the number of tickets
    with a first reply is not a number of survey answers."""
    s = schema(min_cell=10)
    # Bins 1 and 2 merge; BASE has 450 tickets with a first reply, which must not matter.
    values = with_values(csat=[4, 7, 58, 201, 342], tickets=1840)
    cells = region_cells(s, "APAC", totals_of(s, values), [0.0] * s.vector_length)
    csat = [c for c in cells if c.metric == "csat"]
    assert histogram_total(csat) == 612.0  # 4 + 7 + 58 + 201 + 342
    got = {st.name: st for st in derive_stats(s, cells)}
    assert got["pct_satisfied"].value == pytest.approx(100 * (201 + 342) / 612)
    # The same denominator gives every bin's share, and the shares add up to 100 %.
    shares = [100 * max(c.value or 0, 0) / histogram_total(csat) for c in csat]
    assert math.fsum(shares) == pytest.approx(100.0)
    assert shares[-2] + shares[-1] == pytest.approx(got["pct_satisfied"].value)


def test_negative_noisy_csat_bins_count_as_zero_answers() -> None:
    cells = [
        Cell(f"csat[{k},{k + 1})", v, 1, 3.0, CellStatus.RELEASED, "csat", k, k + 1)
        for k, v in zip(range(1, 6), [-4, 20, 30, 100, 50], strict=True)
    ]
    assert histogram_total(cells) == 200.0
    withheld = [
        *cells[:-1],
        dataclasses.replace(cells[-1], value=None, status=CellStatus.SUPPRESSED),
    ]
    assert histogram_total(withheld) == 150.0
    s = schema()
    got = stats_of(with_values(csat=[-4, 20, 30, 100, 50]), 3.0, s=s)
    assert got["pct_satisfied"].value == pytest.approx(75.0)  # 150 / 200


def test_interval_sources_say_noise_merged_bin_or_both() -> None:
    resolution = [100, 100, 100, 100, 100, 100, 3, 3]  # the two tail bins merge at min_cell 10
    tail = with_values(resolution_hours=resolution)
    exact = stats_of(tail, s=schema(min_cell=10))["resolution_p90"]
    assert exact.low is not None and exact.high is not None and exact.low < exact.high
    noisy = stats_of(tail, 2.0, s=schema(min_cell=10))["resolution_p90"]
    plain = stats_of(BASE, 2.0)["escalation_rate"]
    point = stats_of(BASE)["escalation_rate"]
    # p90 of 606 tickets sits in the merged [48, 336) bin: the interval is the bin.
    assert interval_sources(exact) == ("a merged bin",)
    assert interval_sources(noisy) == ("DP noise", "a merged bin")
    assert interval_sources(plain) == ("DP noise",)
    assert interval_sources(point) == ()
    merged_csat = stats_of(with_values(csat=[2, 3, 40, 40, 40]), s=schema(min_cell=10))
    assert interval_sources(merged_csat["csat_mean"]) == ("a merged bin",)
    withheld = stats_of(
        with_values(resolution_hours=[100, 100, 100, 100, 100, 100, 100, 2]),
        s=schema(min_cell=10, metrics=_suppress_resolution()),
    )["resolution_p50"]
    assert interval_sources(withheld) == ("withheld bins",)


def _suppress_resolution() -> tuple[Metric, ...]:
    return tuple(
        dataclasses.replace(m, small_cells=SmallCells.SUPPRESS)
        if m.name == "resolution_hours"
        else m
        for m in _fine_nps(Schema.default()).metrics
    )
