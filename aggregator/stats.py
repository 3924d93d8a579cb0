"""Derived statistics of one released region, with intervals for the DP noise (pure).

:func:`derive_stats` reads a region's released cells (:func:`aggregator.cells.region_cells`)
and returns the statistics of :data:`STATISTICS` whose metrics the schema has. Names and
units are a stable API: flags, the report JSON schema and the HTML page use them.

Definitions
-----------
- ``csat_mean`` (score): sum of CSAT scores / number of CSAT answers. The number of
  answers is *always* the csat histogram's total (``replied`` counts tickets with a first
  reply, not survey answers, so it is not a denominator for CSAT). The score sum
  is read from the histogram (``sum k * c_k``, a bin ``[k, k+1)`` standing for score
  ``k``). A merged bin ``[lo, hi)`` counts at its middle score and the interval widens by
  the most that can be off (half its score range times its share). ``csat_sum`` is not
  used: under DP its noise is five times a bin's (sensitivity 25 vs 5 per customer in
  the default schema), far more than the merging error.
- ``pct_satisfied`` (%): share of CSAT answers scoring 4 or 5. Its denominator is the
  same number of answers as ``csat_mean``'s, and the same one the HTML page's CSAT chart
  divides by (:func:`histogram_total`), so the chart's 4 and 5 bars add up to it.
- ``nps`` (score, -100..100): % promoters (9-10) minus % detractors (0-6).
- In the CSAT and NPS ratios, as in the percentiles, a negative noisy count counts as 0.
- ``escalation_rate`` (%): escalated / tickets.
- ``first_response_p50/p90``, ``resolution_p50/p90`` (hours): percentiles of the
  histogram, interpolated linearly within bins (the last bin spans up to the last edge,
  the clipping bound; a merged cell interpolates over its whole span). Negative noisy
  counts count as 0.

Intervals (two-sided, at ``confidence``) account for the DP noise only, the cells' noise
being independent with the given standard deviations:

- ratios and means use the delta method: the gradient of the statistic with respect to
  each cell, times the cell's noise sd, gives the statistic's sd; the interval is
  ``value +- z * sd`` clipped to the feasible range (as is the value itself);
- percentiles invert the noisy CDF: the interval spans every ``x`` whose estimated CDF
  ``F(x) = A(x) / (A(x) + B(x))`` (``A``, ``B`` the counts below and above ``x``, partial
  bins included) is within ``z * sd(F(x))`` of ``q``, with ``sd(F(x))`` by the delta
  method over the individual cells (a split bin's noise enters ``A`` and ``B`` with the
  correct correlation). Within one bin that condition is a quadratic inequality, solved
  exactly.

Without noise the interval is the point and the note says "exact (no DP noise)", unless
a merged or withheld bin widens it (the note says which): :func:`interval_sources` reads
back where an interval comes from, for the flags' wording. A value
is None, with a note saying why, when its inputs are withheld, merged across a boundary
the statistic needs, or when its denominator is not clearly positive: below 1, or below
:data:`MIN_DENOMINATOR_SDS` times its own noise sd (then the delta method is unreliable
and the ratio mostly reflects noise).

Withheld bins (``SmallCells.SUPPRESS``) make a histogram's total unknown. A withheld bin
had a released value below ``min_cell``, so its count is taken in ``[0, min_cell - 1]``.
A percentile is given only if no such value can move it into a withheld bin; it is
computed with each withheld bin at the middle of that range, and its interval is widened
to cover every position the withheld bins allow (the note says so). Ratios over a
histogram with a withheld bin are None.

A statistic whose metrics the schema does not have (or has with another kind) is still
listed, with value None and a note starting "not collected" (:func:`is_not_collected`),
so that readers can tell "this campaign does not measure it" from "withheld".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from statistics import NormalDist

from blindsum.errors import InvalidArgument
from blindsum.model import Cell, CellStatus, Statistic
from blindsum.schema import MetricKind, Schema

__all__ = [
    "EXACT_NOTE",
    "MERGED_NOTE",
    "MIN_DENOMINATOR_SDS",
    "NOT_COLLECTED",
    "NO_NPS_NOTE",
    "STATISTICS",
    "WITHHELD_NOTE",
    "StatSpec",
    "derive_stats",
    "histogram_total",
    "interval_sources",
    "is_not_collected",
    "z_value",
]

#: Note of a statistic computed from noise-free cells.
EXACT_NOTE = "exact (no DP noise)"
#: Note of an NPS without (enough) answers.
NO_NPS_NOTE = "no NPS responses"
#: Note of a percentile whose interval was widened to a merged bin's edges.
MERGED_NOTE = "falls in a merged bin: the interval covers the whole bin"
#: Note of a CSAT mean over merged bins (counted at their middle score).
MERGED_CSAT_NOTE = "merged CSAT bins counted at their middle score; the interval covers the rest"
#: Note of a percentile computed with withheld bins at mid-range.
WITHHELD_NOTE = "withheld bins taken at mid-range; the interval covers their possible values"
#: How the note of a statistic the schema cannot give starts.
NOT_COLLECTED = "not collected"
#: A ratio's denominator must exceed this many of its own noise sds (coefficient of
#: variation below 1/3) for the delta method to be meaningful.
MIN_DENOMINATOR_SDS = 3.0

#: CSAT scores from this one up count as satisfied.
_SATISFIED_FROM = 4.0
#: NPS: scores below this are detractors (0-6), from _PROMOTERS_FROM up promoters (9-10).
_DETRACTORS_BELOW = 7.0
_PROMOTERS_FROM = 9.0


@dataclass(frozen=True)
class StatSpec:
    """One derived statistic: its name, unit, the metrics (name, kind) it needs and the
    ones it uses when present. A statistic whose required metrics are not all in the
    schema (with that kind) is skipped."""

    name: str
    unit: str
    metrics: tuple[tuple[str, MetricKind], ...]
    optional: tuple[tuple[str, MetricKind], ...] = ()
    #: Percentiles: the quantile in (0, 1).
    quantile: float | None = None
    #: Plain-language name for readers (flag reasons, tables, the HTML page).
    label: str = ""
    #: Decimals shown to readers: scores 2, percentages, hours and NPS 1.
    decimals: int = 1


_H = MetricKind.HISTOGRAM
_C = MetricKind.COUNT
#: The one table of statistics -> metrics, labels and rounding, in report order.
STATISTICS: tuple[StatSpec, ...] = (
    StatSpec(
        "csat_mean",
        "score",
        (("csat", _H),),
        optional=(("csat_sum", MetricKind.SUM),),
        label="Average CSAT",
        decimals=2,
    ),
    StatSpec(
        "pct_satisfied",
        "%",
        (("csat", _H),),
        label="Share of satisfied customers (CSAT 4-5)",
    ),
    StatSpec("nps", "score", (("nps", _H),), label="NPS"),
    StatSpec("escalation_rate", "%", (("escalated", _C), ("tickets", _C)), label="Escalation rate"),
    StatSpec(
        "first_response_p50",
        "hours",
        (("first_response_hours", _H),),
        quantile=0.5,
        label="Median first-response time",
    ),
    StatSpec(
        "first_response_p90",
        "hours",
        (("first_response_hours", _H),),
        quantile=0.9,
        label="90th-percentile first-response time",
    ),
    StatSpec(
        "resolution_p50",
        "hours",
        (("resolution_hours", _H),),
        quantile=0.5,
        label="Median resolution time",
    ),
    StatSpec(
        "resolution_p90",
        "hours",
        (("resolution_hours", _H),),
        quantile=0.9,
        label="90th-percentile resolution time",
    ),
)
_BY_NAME = {spec.name: spec for spec in STATISTICS}


def label_of(name: str) -> str:
    """The reader-facing name of a statistic (unknown ones: their name, humanised)."""
    spec = _BY_NAME.get(name)
    return spec.label if spec is not None else name.replace("_", " ").capitalize()


def decimals_of(name: str, unit: str = "") -> int:
    """How many decimals readers see (unknown statistics: 2 for scores, else 1)."""
    spec = _BY_NAME.get(name)
    if spec is not None:
        return spec.decimals
    return 2 if unit == "score" else 1


def is_not_collected(stat: Statistic) -> bool:
    """True for a statistic whose metrics the schema lacks (not measured at all), as
    opposed to one that is measured but withheld or too noisy this time."""
    return stat.value is None and stat.note.startswith(NOT_COLLECTED)


def interval_sources(stat: Statistic) -> tuple[str, ...]:
    """Where ``stat``'s interval comes from, in reader words: any of "DP noise",
    "a merged bin" and "withheld bins", in that order; empty for a point (or None).

    Read back from the notes :func:`derive_stats` writes, so it works on statistics
    decoded from a stored report too.
    """
    if stat.value is None or stat.low is None or stat.high is None or stat.high <= stat.low:
        return ()
    sources = []
    if EXACT_NOTE not in stat.note:
        sources.append("DP noise")
    if MERGED_NOTE in stat.note or MERGED_CSAT_NOTE in stat.note:
        sources.append("a merged bin")
    if WITHHELD_NOTE in stat.note:
        sources.append("withheld bins")
    return tuple(sources)


def histogram_total(cells: Sequence[Cell]) -> float:
    """The number a histogram's shares are of: the sum of its released and merged cells
    (negative noisy counts as 0; withheld cells, having no value, add nothing).

    For ``csat`` this is the number of CSAT answers that ``csat_mean`` and
    ``pct_satisfied`` divide by whenever no bin is withheld.
    """
    return math.fsum(max(_value(c), 0.0) for c in cells if c.status is not CellStatus.SUPPRESSED)


def z_value(confidence: float) -> float:
    """The two-sided normal quantile of ``confidence`` (1.96 at 0.95)."""
    if not isinstance(confidence, float | int) or not 0 < confidence < 1:
        raise InvalidArgument("must be a number in (0, 1)", field="confidence")
    return NormalDist().inv_cdf((1 + float(confidence)) / 2)


def derive_stats(
    schema: Schema, cells: Sequence[Cell], *, confidence: float = 0.95
) -> tuple[Statistic, ...]:
    """The statistics of one released region (see the module docstring).

    ``cells`` are the region's released cells; an empty sequence (a withheld region)
    gives no statistics. Raises InvalidArgument when a metric a statistic needs has no
    cells, or ``confidence`` is not in (0, 1).
    """
    z = z_value(confidence)
    if not cells:
        return ()
    by_metric: dict[str, list[Cell]] = {}
    for cell in cells:
        by_metric.setdefault(cell.metric or cell.slot, []).append(cell)
    kinds = {m.name: m.kind for m in schema.metrics}
    out: list[Statistic] = []
    for spec in STATISTICS:
        missing = [name for name, kind in spec.metrics if kinds.get(name) is not kind]
        if missing:
            what = " and ".join(repr(name) for name in missing)
            note = f"{NOT_COLLECTED}: the schema has no {what} metric of the kind it needs"
            out.append(_none(spec, note))
            continue
        for name, _ in spec.metrics:
            if name not in by_metric:
                raise InvalidArgument("no released cells for this metric", field=name)
        present = {name: by_metric[name] for name, _ in spec.metrics}
        for name, kind in spec.optional:
            if kinds.get(name) is kind and name in by_metric:
                present[name] = by_metric[name]
        out.append(_COMPUTE[spec.name](spec, present, _Context(z, schema.min_cell)))
    return tuple(out)


@dataclass(frozen=True)
class _Context:
    z: float
    min_cell: int


@dataclass(frozen=True)
class _Term:
    """One cell in a ratio ``sum(num * x) / sum(den * x)``."""

    num: float
    den: float
    value: float
    sd: float


def _none(spec: StatSpec, note: str) -> Statistic:
    return Statistic(spec.name, None, unit=spec.unit, note=note)


def _clip(value: float, bounds: tuple[float, float]) -> float:
    return min(max(value, bounds[0]), bounds[1])


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def _ratio(
    spec: StatSpec,
    terms: Sequence[_Term],
    ctx: _Context,
    *,
    factor: float,
    bounds: tuple[float, float],
    what: str,
    note: str = "",
) -> Statistic:
    """``factor * sum(num x) / sum(den x)`` with a delta-method interval.

    The gradient with respect to cell ``i`` is ``(num_i - r * den_i) / D``; independent
    noise makes the variance ``sum(gradient_i^2 * sd_i^2)``.
    """
    den = math.fsum(t.den * t.value for t in terms)
    num = math.fsum(t.num * t.value for t in terms)
    den_sd = math.sqrt(math.fsum((t.den * t.sd) ** 2 for t in terms))
    if den <= 0:
        return _none(spec, f"no {what}")
    if den < 1 or den < MIN_DENOMINATOR_SDS * den_sd:
        return _none(spec, f"too few {what} to tell apart from the DP noise")
    ratio = num / den
    sd = factor * math.sqrt(math.fsum(((t.num - ratio * t.den) / den * t.sd) ** 2 for t in terms))
    value = _clip(factor * ratio, bounds)
    if all(t.sd == 0 for t in terms):
        return Statistic(spec.name, value, value, value, spec.unit, _join(note, EXACT_NOTE))
    low = _clip(factor * ratio - ctx.z * sd, bounds)
    high = _clip(factor * ratio + ctx.z * sd, bounds)
    return Statistic(spec.name, value, low, high, spec.unit, note)


def _value(cell: Cell) -> float:
    """The cell's value in the metric's unit; precondition: not withheld."""
    if cell.value is None:  # pragma: no cover - callers check for withheld cells first
        raise InvalidArgument("withheld cell has no value", field=cell.slot)
    return cell.value / cell.scale


def _answers(cell: Cell) -> float:
    """A survey bin's number of answers: its value, a negative noisy count as 0."""
    return max(_value(cell), 0.0)


def _csat_withheld(cells: Sequence[Cell]) -> str | None:
    """Why a CSAT ratio cannot be computed, or None if no CSAT bin is withheld."""
    if all(c.status is CellStatus.SUPPRESSED for c in cells):
        return "too few CSAT answers to release (histogram withheld)"
    if any(c.status is CellStatus.SUPPRESSED for c in cells):
        return "some CSAT bins withheld, so the number of answers is unknown"
    return None


def _bounds_of(cell: Cell) -> tuple[float, float]:
    if cell.lo is None or cell.hi is None:
        raise InvalidArgument("histogram cell without bounds", field=cell.slot)
    return cell.lo, cell.hi


def _straddles(cells: Sequence[Cell], *cuts: float) -> bool:
    return any(lo < cut < hi for c in cells for lo, hi in [_bounds_of(c)] for cut in cuts)


def _csat_mean(spec: StatSpec, cells: Mapping[str, list[Cell]], ctx: _Context) -> Statistic:
    csat = cells["csat"]
    why = _csat_withheld(csat)
    if why is not None:
        return _none(spec, why)
    bounds = (_bounds_of(csat[0])[0], _bounds_of(csat[-1])[0])  # scores of first/last bin
    if all(c.status is CellStatus.RELEASED for c in csat):
        terms = [_Term(_bounds_of(c)[0], 1.0, _answers(c), c.noise_sd) for c in csat]
        return _ratio(spec, terms, ctx, factor=1.0, bounds=bounds, what="CSAT answers")
    # _csat_withheld ruled out withheld bins, so some bins are merged.
    return _csat_mean_merged(spec, csat, ctx, bounds)


def _csat_mean_merged(
    spec: StatSpec, csat: Sequence[Cell], ctx: _Context, bounds: tuple[float, float]
) -> Statistic:
    """CSAT mean when some bins are merged: a merged bin's answers count at its middle
    score, and the interval widens by the most that can be off.

    Scores are whole numbers, so bin ``[lo, hi)`` holds scores ``lo .. hi - 1``; its
    answers average somewhere in that range. Taking the middle is off by at most half
    the range times the bin's share, which is far less than the noise of ``csat_sum``
    (its sensitivity is five times a bin's).
    """
    terms = []
    slack_num = 0.0
    for c in csat:
        lo, hi = _bounds_of(c)
        top = max(lo, hi - 1)
        terms.append(_Term((lo + top) / 2, 1.0, _answers(c), c.noise_sd))
        slack_num += (top - lo) / 2 * _answers(c)
    note = MERGED_CSAT_NOTE
    stat = _ratio(spec, terms, ctx, factor=1.0, bounds=bounds, what="CSAT answers", note=note)
    if stat.value is None or stat.low is None or stat.high is None:
        return stat
    den = math.fsum(max(t.value, 0.0) for t in terms)
    slack = slack_num / den if den > 0 else 0.0
    low, high = _clip(stat.low - slack, bounds), _clip(stat.high + slack, bounds)
    return Statistic(spec.name, stat.value, low, high, spec.unit, stat.note)


def _pct_satisfied(spec: StatSpec, cells: Mapping[str, list[Cell]], ctx: _Context) -> Statistic:
    csat = cells["csat"]
    why = _csat_withheld(csat)
    if why is not None:
        return _none(spec, why)
    if _straddles(csat, _SATISFIED_FROM):
        return _none(spec, "a merged CSAT bin spans scores on both sides of 4")
    terms = [
        _Term(1.0 if _bounds_of(c)[0] >= _SATISFIED_FROM else 0.0, 1.0, _answers(c), c.noise_sd)
        for c in csat
    ]
    return _ratio(spec, terms, ctx, factor=100.0, bounds=(0.0, 100.0), what="CSAT answers")


def _nps(spec: StatSpec, cells: Mapping[str, list[Cell]], ctx: _Context) -> Statistic:
    nps = cells["nps"]
    if all(c.status is CellStatus.SUPPRESSED for c in nps):
        return _none(spec, NO_NPS_NOTE)
    if any(c.status is CellStatus.SUPPRESSED for c in nps):
        return _none(spec, "some NPS bins withheld, so their total is unknown")
    if _straddles(nps, _DETRACTORS_BELOW, _PROMOTERS_FROM):
        return _none(spec, "a merged NPS bin spans promoters, passives or detractors")

    def sign(cell: Cell) -> float:
        lo, hi = _bounds_of(cell)
        if lo >= _PROMOTERS_FROM:
            return 1.0
        return -1.0 if hi <= _DETRACTORS_BELOW else 0.0

    terms = [_Term(sign(c), 1.0, _answers(c), c.noise_sd) for c in nps]
    stat = _ratio(spec, terms, ctx, factor=100.0, bounds=(-100.0, 100.0), what="NPS answers")
    return stat if stat.value is not None else _none(spec, NO_NPS_NOTE)


def _escalation_rate(spec: StatSpec, cells: Mapping[str, list[Cell]], ctx: _Context) -> Statistic:
    (escalated,) = cells["escalated"]
    (tickets,) = cells["tickets"]
    terms = [
        _Term(1.0, 0.0, _value(escalated), escalated.noise_sd),
        _Term(0.0, 1.0, _value(tickets), tickets.noise_sd),
    ]
    return _ratio(spec, terms, ctx, factor=100.0, bounds=(0.0, 100.0), what="tickets")


# ------------------------------------------------------------------ percentiles


@dataclass(frozen=True)
class _Bin:
    lo: float
    hi: float
    count: float
    sd: float


def _quantile(bins: Sequence[_Bin], q: float) -> float:
    """The ``q`` quantile, linear within bins; precondition: total count > 0."""
    target = q * math.fsum(b.count for b in bins)
    below = 0.0
    for b in bins:
        if b.count > 0 and below + b.count >= target:
            return b.lo + (target - below) / b.count * (b.hi - b.lo)
        below += b.count
    return bins[-1].hi  # pragma: no cover - unreachable for 0 < q < 1


def _square(a: float, b: float) -> tuple[float, float, float]:
    """Coefficients of ``(a + b t)^2``."""
    return (a * a, 2 * a * b, b * b)


def _nonpositive_span(p: tuple[float, float, float]) -> tuple[float, float] | None:
    """Smallest and largest ``t`` in [0, 1] with ``p0 + p1 t + p2 t^2 <= 0``, or None."""
    p0, p1, p2 = p

    def at(t: float) -> float:
        return p0 + t * (p1 + t * p2)

    scale = max(abs(p0), abs(p1), abs(p2), 1e-300)
    roots: list[float] = []
    if abs(p2) > 1e-12 * scale:
        disc = p1 * p1 - 4 * p2 * p0
        if disc >= 0:
            root = math.sqrt(disc)
            # Numerically stable pair of roots.
            w = -0.5 * (p1 + math.copysign(root, p1))
            roots = [w / p2] + ([p0 / w] if w != 0 else [])
    elif abs(p1) > 1e-12 * scale:
        roots = [-p0 / p1]
    points = sorted({0.0, 1.0, *(r for r in roots if 0 < r < 1)})
    inside: list[float] = [t for t in points if at(t) <= 1e-9 * scale]
    inside += [t for t in roots if 0 < t < 1]  # boundary points
    for a, b in pairwise(points):
        if at((a + b) / 2) <= 0:
            inside += [a, b]
    if not inside:
        return None
    return min(inside), max(inside)


def _cdf_interval(bins: Sequence[_Bin], q: float, z: float) -> tuple[float, float]:
    """The hull of ``{x : |F(x) - q| <= z sd(F(x))}`` (see the module docstring).

    In bin ``i`` at ``x = lo + t (hi - lo)``: ``A = L + c t`` with ``L`` the counts below
    the bin and ``c`` its count, ``F = A / N``, and the gradient of ``F`` is ``(N - A)/N^2``
    for bins below, ``-A / N^2`` above, ``(t (N - c) - L) / N^2`` for bin ``i``. Multiplied
    by ``N^2``, ``(F - q)^2 <= z^2 Var F`` is a quadratic inequality in ``t``.
    """
    total = math.fsum(b.count for b in bins)
    z2 = z * z
    low, high = math.inf, -math.inf
    below = 0.0
    var_below = 0.0
    var_above = math.fsum(b.sd * b.sd for b in bins)
    for b in bins:
        var_above -= b.sd * b.sd
        c = b.count
        dev = _square(below - q * total, c)  # (A - qN)^2
        gap = _square(total - below, -c)  # (N - A)^2
        acc = _square(below, c)  # A^2
        own = _square(-below, total - c)  # (t (N - c) - L)^2
        coeff = tuple(
            dev[k]
            - z2
            * (gap[k] * var_below + acc[k] * max(var_above, 0.0) + own[k] * b.sd * b.sd)
            / (total * total)
            for k in range(3)
        )
        span = _nonpositive_span((coeff[0], coeff[1], coeff[2]))
        if span is not None:
            low = min(low, b.lo + span[0] * (b.hi - b.lo))
            high = max(high, b.lo + span[1] * (b.hi - b.lo))
        below += c
        var_below += b.sd * b.sd
    return low, high


def _percentile(spec: StatSpec, cells: Mapping[str, list[Cell]], ctx: _Context) -> Statistic:
    q = spec.quantile
    if q is None:  # pragma: no cover - the table gives every percentile a quantile
        raise InvalidArgument("not a percentile", field=spec.name)
    (metric,) = (name for name, _ in spec.metrics)
    hist = cells[metric]
    if all(c.status is CellStatus.SUPPRESSED for c in hist):
        return _none(spec, "too few tickets to release (histogram withheld)")
    withheld = [i for i, c in enumerate(hist) if c.status is CellStatus.SUPPRESSED]
    cap = float(max(ctx.min_cell - 1, 0))

    middle = _bins(hist, {i: cap / 2 for i in withheld})
    total = math.fsum(b.count for b in middle)
    total_sd = math.sqrt(math.fsum(b.sd * b.sd for b in middle))
    if total < 1:
        return _none(spec, "no tickets with this time")
    if total < MIN_DENOMINATOR_SDS * total_sd:
        return _none(spec, "too few tickets with this time to tell from the DP noise")
    value = _quantile(middle, q)
    note = ""
    reach = (value, value)
    if withheld:
        reach = _withheld_reach(hist, withheld, cap, q)
        # Open overlap: a withheld bin that merely touches the reach is fine.
        if any(
            lo < reach[1] and hi > reach[0] for lo, hi in (_bounds_of(hist[i]) for i in withheld)
        ):
            return _none(spec, "the percentile may fall in withheld bins")
        note = WITHHELD_NOTE
    if all(b.sd == 0 for b in middle):
        low, high = value, value
        note = _join(note, EXACT_NOTE)
    else:
        low, high = _cdf_interval(middle, q, ctx.z)
    low, high = min(low, value, reach[0]), max(high, value, reach[1])
    # Linear interpolation assumes tickets spread evenly inside a bin. A merged bin can
    # span a decade of hours with most tickets at its low end, so where the percentile
    # or an end of its interval lands in a merged bin, the interval covers that whole
    # bin: within it the data says nothing about where the percentile is.
    for cell in hist:
        lo, hi = _bounds_of(cell)
        if cell.status is CellStatus.MERGED and any(lo <= x <= hi for x in (low, value, high)):
            low, high = min(low, lo), max(high, hi)
            note = _join(note, MERGED_NOTE)
    return Statistic(spec.name, value, low, high, spec.unit, note)


def _bins(hist: Sequence[Cell], fills: Mapping[int, float]) -> list[_Bin]:
    """The histogram's bins with negative noisy counts at 0 and withheld bin ``i`` at
    ``fills[i]`` (no noise sd: its uncertainty is the range it is taken from)."""
    return [
        _Bin(*_bounds_of(c), fills[i], 0.0)
        if c.status is CellStatus.SUPPRESSED
        else _Bin(*_bounds_of(c), max(_value(c), 0.0), c.noise_sd)
        for i, c in enumerate(hist)
    ]


def _withheld_reach(
    hist: Sequence[Cell], withheld: Sequence[int], cap: float, q: float
) -> tuple[float, float]:
    """Lowest and highest position of the percentile over every count of the withheld
    bins in ``[0, cap]``.

    Adding mass to a bin moves a quantile towards that bin, so the lowest position has
    the withheld bins left of it full and those right of it empty, the highest the
    reverse: both extremes are among the ``k + 1`` threshold assignments of each kind.
    """
    lows: list[float] = []
    highs: list[float] = []
    for j in range(len(withheld) + 1):
        left = set(withheld[:j])
        for full, out in ((left, lows), (set(withheld) - left, highs)):
            candidate = _bins(hist, {i: cap if i in full else 0.0 for i in withheld})
            if math.fsum(b.count for b in candidate) > 0:
                out.append(_quantile(candidate, q))
    if not lows or not highs:  # pragma: no cover - the caller checked the total
        return (_bounds_of(hist[0])[0], _bounds_of(hist[-1])[1])
    return min(lows), max(highs)


_COMPUTE: dict[str, Callable[[StatSpec, Mapping[str, list[Cell]], _Context], Statistic]] = {
    "csat_mean": _csat_mean,
    "pct_satisfied": _pct_satisfied,
    "nps": _nps,
    "escalation_rate": _escalation_rate,
    "first_response_p50": _percentile,
    "first_response_p90": _percentile,
    "resolution_p50": _percentile,
    "resolution_p90": _percentile,
}
