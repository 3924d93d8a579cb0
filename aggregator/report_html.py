"""Self-contained HTML page for one released report, for a customer-ops lead.

The page must work as a single file attached to an email or opened from a share:
every style is inline, every chart is inline SVG drawn here in Python, and there is
no JavaScript at all. A Content-Security-Policy meta tag forbids loading anything
(``default-src 'none'``), so even a string that slipped through unescaped could not
fetch or run anything. Every string that comes from the report (region, party and
round names, flag reasons, notes) passes through :func:`html.escape`, because those
come from configs and from the network.

The output is a pure function of the :class:`~blindsum.model.Report`: no clock, no
randomness, stable iteration order, fixed number formatting. Tests compare it byte for
byte, and the published page of a round can be regenerated identically.

Colours are the Okabe-Ito palette (safe for the common colour-vision deficiencies), and
nothing depends on colour alone: regions also differ by marker and dash pattern, bin
statuses by hatching and text, and flag severities are written out.
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from aggregator.stats import STATISTICS, decimals_of, label_of
from blindsum.model import (
    Cell,
    CellStatus,
    DpMode,
    Flag,
    FlagKind,
    RegionResult,
    Report,
    Severity,
    Slo,
    SloKind,
    Statistic,
    TrendPoint,
)

__all__ = ["CHARTS", "render_html"]

#: The ``data-chart`` names of the page's charts, in page order.
CHARTS = ("csat-distribution", "escalation-vs-slo", "resolution-distribution", "trend")

#: Okabe & Ito (2008), "Color Universal Design": distinguishable with every common
#: colour-vision deficiency. One colour per region, in region order.
_PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000")
#: Second cue per region for grayscale prints: marker shape and line dash pattern.
_MARKERS = ("circle", "square", "triangle", "diamond")
_DASHES = ("", "7 4", "2 3", "9 3 2 3")
_SLO_COLOUR = "#D55E00"
_INK = "#222222"
_GRID = "#dddddd"
_MUTED = "#666666"

_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "base-uri 'none'; form-action 'none'"
)

_DEFAULT_CONFIDENCE = 0.95


# --------------------------------------------------------------------------- formatting


def _e(text: str) -> str:
    """Escape a report string for HTML text and attribute values (quotes included)."""
    return html.escape(text, quote=True)


@dataclass(frozen=True)
class _StatInfo:
    label: str
    decimals: int
    suffix: str


_STATS = {spec.name: spec for spec in STATISTICS}


def _stat_info(name: str, unit: str = "") -> _StatInfo:
    """Display rules for a statistic: its label and rounding from aggregator.stats (the
    one table of statistics), the unit suffix from its unit."""
    spec = _STATS.get(name)
    unit = spec.unit if spec is not None else unit
    suffix = {"%": "%", "hours": " h"}.get(unit, "")
    return _StatInfo(label_of(name), decimals_of(name, unit), suffix)


def _num(value: float, decimals: int) -> str:
    """Round for display; never shows "-0.0"."""
    text = f"{value:.{decimals}f}"
    if float(text) == 0.0:
        text = f"{0.0:.{decimals}f}"
    return text


def _fmt(value: float, info: _StatInfo) -> str:
    return _num(value, info.decimals) + info.suffix


def _interval_text(low: float | None, high: float | None, info: _StatInfo) -> str:
    """The interval as "low-high" in display units; "exact" for a point; "" if none."""
    if low is None or high is None:
        return ""
    lo, hi = _num(low, info.decimals), _num(high, info.decimals)
    if lo == hi:
        return "exact"
    return f"{lo}&#8211;{hi}{info.suffix}"


def _edge(value: float) -> str:
    """A bin edge as its shortest exact text (1, 0.5, 168)."""
    return f"{value:g}"


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _percent_level(confidence: float) -> str:
    return f"{confidence * 100:g}%"


def _confidence(report: Report) -> float:
    return report.lineage.confidence if report.lineage is not None else _DEFAULT_CONFIDENCE


def _slo_text(slo: Slo) -> str:
    info = _stat_info(slo.statistic)
    sign = "\u2264" if slo.kind is SloKind.MAX else "\u2265"
    return f"SLO {sign} {_fmt(slo.threshold, info)}"


def _slo_for(report: Report, statistic: str) -> Slo | None:
    for slo in report.slos:
        if slo.statistic == statistic:
            return slo
    return None


def _finite(value: float | None) -> float | None:
    """None for a missing or non-finite number: NaN must not reach an SVG coordinate."""
    return value if value is not None and math.isfinite(value) else None


def _stat(region: RegionResult, name: str) -> Statistic | None:
    """The region's statistic ``name``, with non-finite numbers treated as missing."""
    for stat in region.stats:
        if stat.name == name:
            return replace(
                stat, value=_finite(stat.value), low=_finite(stat.low), high=_finite(stat.high)
            )
    return None


def _trend_points(region: RegionResult, name: str) -> list[TrendPoint]:
    """The region's trend of ``name``, non-finite numbers treated as missing."""
    return [
        replace(p, value=_finite(p.value), low=_finite(p.low), high=_finite(p.high))
        for p in region.trend
        if p.statistic == name
    ]


def _suppressed_note(report: Report) -> str:
    return f"suppressed: fewer than {report.min_contributors} contributing parties"


# --------------------------------------------------------------------------- page


def render_html(report: Report) -> str:
    """Render ``report`` as one self-contained, offline HTML5 document.

    Sections, in order: summary, flags, key statistics, charts, released cells, lineage.
    The result depends only on ``report`` (deterministic), loads nothing and runs no
    script.
    """
    title = f"Support KPI report: round {_e(report.round_id)}"
    body = "\n".join(
        (
            f"<h1>{title}</h1>",
            _summary(report),
            _flags_section(report),
            _stats_section(report),
            _charts_section(report),
            _cells_section(report),
            _lineage_section(report),
        )
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="referrer" content="no-referrer">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


_STYLE = """
body{margin:0;background:#fff;color:#222;font:15px/1.45 system-ui,-apple-system,"Segoe UI",
Roboto,"DejaVu Sans","Liberation Sans",Arial,sans-serif}
main{max-width:1000px;margin:0 auto;padding:24px}
h1{font-size:1.6em;margin:0 0 .3em}h2{font-size:1.25em;margin:1.6em 0 .5em;
border-bottom:2px solid #0072B2;padding-bottom:.2em}h3{font-size:1.05em;margin:1em 0 .3em}
.summary{color:#444;margin:0 0 1em}.muted{color:#666}.small{font-size:.85em}
table{border-collapse:collapse;margin:.4em 0 1em;font-variant-numeric:tabular-nums}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f2f2f2}td.num{text-align:right;white-space:nowrap}
.iv{display:block;color:#555;font-size:.85em}
.badge{display:inline-block;font-size:.75em;font-weight:bold;padding:0 .4em;
border-radius:3px;margin-right:.3em;letter-spacing:.03em}
.breach{background:#D55E00;color:#fff;border:2px solid #000}
.watch{background:#fff;color:#000;border:2px dashed #000}
.kind{background:#eee;color:#222;border:1px solid #999}
ul.flags{margin:.2em 0 .8em;padding-left:1.2em}ul.flags li{margin:.25em 0}
.ok{color:#009E73;font-weight:bold}.supp{color:#666;font-style:italic}
figure{margin:1em 0 1.6em}figcaption{font-size:.85em;color:#555;margin-top:.3em}
svg.chart{max-width:100%;height:auto;display:block}
svg.chart text{font-family:inherit;fill:#222}
dl.lineage{display:grid;grid-template-columns:max-content 1fr;gap:.25em 1em}
dl.lineage dt{font-weight:bold}dl.lineage dd{margin:0}
code{font-size:.85em;word-break:break-all}
details summary{cursor:pointer;margin:.3em 0}
tr.merged td{background:#f4f8fc}tr.suppressed td{background:#f6f6f6;color:#555}
""".strip()


def _summary(report: Report) -> str:
    parties = ", ".join(_e(p) for p in report.included_parties) or "none"
    released = sum(1 for r in report.regions if not r.suppressed)
    return (
        '<p class="summary">'
        f"Round <strong>{_e(report.round_id)}</strong> &#183; mode {_e(report.mode.value)}"
        f" &#183; released {_utc(report.released_ms)}"
        f" &#183; {len(report.included_parties)} parties included ({parties})"
        f" &#183; k = {report.min_contributors} (regions with fewer contributing parties"
        f" are suppressed) &#183; {released} of {len(report.regions)} regions released"
        "</p>"
    )


# --------------------------------------------------------------------------- flags


def _flag_item(flag: Flag) -> str:
    severity = "breach" if flag.severity is Severity.BREACH else "watch"
    kind = "SLO" if flag.kind is FlagKind.SLO else "movement"
    return (
        f'<li><span class="badge {severity}">{severity.upper()}</span>'
        f'<span class="badge kind">{kind}</span>{_e(flag.reason)}</li>'
    )


def _flags_section(report: Report) -> str:
    parts = ["<h2>Flags</h2>"]
    if not any(r.flags for r in report.regions):
        parts.append('<p class="ok">No service failures flagged.</p>')
    parts.append(
        '<p class="small muted"><strong>Breach</strong>: beyond the threshold by more than'
        " the privacy noise explains. <strong>Watch</strong>: the estimate is beyond the"
        " threshold, but within the noise.</p>"
    )
    for region in report.regions:
        parts.append(f"<h3>{_e(region.region)}</h3>")
        if region.suppressed:
            parts.append(f'<p class="supp">{_suppressed_note(report)}; no flags computed.</p>')
        elif not region.flags:
            parts.append("<p>No service failures flagged.</p>")
        else:
            items = "".join(_flag_item(f) for f in _ordered_flags(region.flags))
            parts.append(f'<ul class="flags">{items}</ul>')
    return "\n".join(parts)


def _ordered_flags(flags: Sequence[Flag]) -> list[Flag]:
    """Breaches first, then watches; otherwise the release's own order."""
    return sorted(flags, key=lambda f: 0 if f.severity is Severity.BREACH else 1)


# --------------------------------------------------------------------------- statistics


def _stat_names(report: Report) -> list[str]:
    """Known statistics in their fixed order, then any others in order of appearance."""
    present: list[str] = []
    for region in report.regions:
        for stat in region.stats:
            if stat.name not in present:
                present.append(stat.name)
    known = [name for name in _STATS if name in present]
    return known + [name for name in present if name not in _STATS]


def _stat_cell(region: RegionResult, name: str) -> str:
    stat = _stat(region, name)
    if stat is None:
        return '<td class="num muted">n/a</td>'
    info = _stat_info(name, stat.unit)
    badges = "".join(
        f'<span class="badge {f.severity.value}">{f.severity.value.upper()}</span>'
        for f in _ordered_flags(region.flags)
        if f.statistic == name
    )
    if stat.value is None:
        note = f'<span class="iv">{_e(stat.note)}</span>' if stat.note else ""
        return f'<td class="num">{badges}&#8212;{note}</td>'
    interval = _interval_text(stat.low, stat.high, info)
    iv = f'<span class="iv">{interval}</span>' if interval else ""
    return f'<td class="num">{badges}{_fmt(stat.value, info)}{iv}</td>'


def _stats_section(report: Report) -> str:
    names = _stat_names(report)
    level = _percent_level(_confidence(report))
    head = "".join(f"<th>{_e(r.region)}</th>" for r in report.regions)
    rows = []
    contributors = "".join(
        f'<td class="num">{r.contributors}</td>'
        if not r.suppressed
        else f'<td class="supp">{_suppressed_note(report)}</td>'
        for r in report.regions
    )
    rows.append(f"<tr><th>Contributing parties</th>{contributors}</tr>")
    for name in names:
        info = _stat_info(name)
        slo = _slo_for(report, name)
        slo_note = f'<span class="iv">{_e(_slo_text(slo))}</span>' if slo is not None else ""
        cells = "".join(
            '<td class="supp">suppressed</td>' if r.suppressed else _stat_cell(r, name)
            for r in report.regions
        )
        rows.append(f"<tr><th>{_e(info.label)}{slo_note}</th>{cells}</tr>")
    return (
        "<h2>Key statistics</h2>\n"
        f'<p class="small muted">Each value is shown with its {level} interval'
        " (low&#8211;high) for the privacy noise.</p>\n"
        f"<table><thead><tr><th>Statistic</th>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


# --------------------------------------------------------------------------- SVG helpers


def _n(value: float) -> str:
    """A coordinate: one decimal is sub-pixel, and keeps the output stable."""
    return _num(value, 1)


class _Svg:
    """Accumulates the elements of one chart."""

    def __init__(self, chart: str, width: int, height: int, title: str, desc: str) -> None:
        self.chart = chart
        self.width = width
        self.height = height
        self.parts: list[str] = [f"<title>{_e(title)}</title>", f"<desc>{_e(desc)}</desc>"]

    def add(self, element: str) -> None:
        self.parts.append(element)

    def text(
        self,
        x: float,
        y: float,
        text: str,
        *,
        anchor: str = "start",
        size: int = 12,
        weight: str = "normal",
        rotate: float | None = None,
        colour: str = _INK,
    ) -> None:
        transform = ""
        if rotate is not None:
            transform = f' transform="rotate({_n(rotate)} {_n(x)} {_n(y)})"'
        self.add(
            f'<text x="{_n(x)}" y="{_n(y)}" font-size="{size}" text-anchor="{anchor}"'
            f' font-weight="{weight}" style="fill:{colour}"{transform}>{_e(text)}</text>'
        )

    def line(
        self,
        x1: float,
        y1: float,
        x2: float,
        y2: float,
        *,
        colour: str = _INK,
        width: float = 1.0,
        dash: str = "",
    ) -> None:
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        self.add(
            f'<line x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}"'
            f' stroke="{colour}" stroke-width="{_n(width)}"{dashes}/>'
        )

    def rect(
        self,
        x: float,
        y: float,
        w: float,
        h: float,
        *,
        fill: str,
        stroke: str = "none",
        dash: str = "",
    ) -> None:
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        self.add(
            f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(max(w, 0.0))}"'
            f' height="{_n(max(h, 0.0))}" fill="{fill}" stroke="{stroke}"{dashes}/>'
        )

    def render(self) -> str:
        body = "\n".join(self.parts)
        return (
            f'<svg class="chart" data-chart="{self.chart}" role="img"'
            f' width="{self.width}" height="{self.height}"'
            f' viewBox="0 0 {self.width} {self.height}">\n{body}\n</svg>'
        )


def _hatch_defs(svg: _Svg) -> tuple[str, str]:
    """Add the chart's two hatch patterns; return (merged, suppressed) fill references.

    Ids are prefixed with the chart name because all SVGs share one document.
    """
    merged = f"{svg.chart}-merged"
    suppressed = f"{svg.chart}-suppressed"
    svg.add(
        "<defs>"
        f'<pattern id="{merged}" width="6" height="6" patternUnits="userSpaceOnUse"'
        ' patternTransform="rotate(45)"><rect width="6" height="6" fill="#56B4E9"/>'
        '<line x1="0" y1="0" x2="0" y2="6" stroke="#0072B2" stroke-width="2"/></pattern>'
        f'<pattern id="{suppressed}" width="8" height="8" patternUnits="userSpaceOnUse"'
        ' patternTransform="rotate(-45)"><rect width="8" height="8" fill="#ffffff"/>'
        '<line x1="0" y1="0" x2="0" y2="8" stroke="#999999" stroke-width="1.5"/></pattern>'
        "</defs>"
    )
    return f"url(#{merged})", f"url(#{suppressed})"


def _nice_step(span: float, ticks: int = 5) -> float:
    """A 1/2/2.5/5 x 10^k tick step giving about ``ticks`` intervals over ``span``."""
    raw = span / ticks if span > 0 else 1.0
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if m * magnitude >= raw * (1 - 1e-9):
            return m * magnitude
    return 10.0 * magnitude  # pragma: no cover - the loop always returns


def _nice_range(low: float, high: float, *, floor_zero: bool = False) -> tuple[float, float, float]:
    """Axis (min, max, step) covering [low, high] on round tick values."""
    if floor_zero:
        low = min(0.0, low)
    if high <= low:
        high = low + 1.0
    step = _nice_step(high - low)
    return math.floor(low / step) * step, math.ceil(high / step) * step, step


def _decimals_for(step: float) -> int:
    """The fewest decimals that show every multiple of ``step`` exactly (2.5 -> 1)."""
    for decimals in range(4):
        if abs(round(step, decimals) - step) < 1e-9:
            return decimals
    return 4


@dataclass(frozen=True)
class _Plot:
    """A plot area in SVG pixels and the value range of its y axis."""

    left: float
    right: float
    top: float
    bottom: float
    y_lo: float = 0.0
    y_hi: float = 1.0
    step: float = 0.2

    @classmethod
    def fit(
        cls, box: tuple[float, float, float, float], low: float, high: float, *, floor_zero: bool
    ) -> _Plot:
        """A plot over ``box`` (left, right, top, bottom) with a nice axis for [low, high]."""
        y_lo, y_hi, step = _nice_range(low, high, floor_zero=floor_zero)
        return cls(*box, y_lo=y_lo, y_hi=y_hi, step=step)

    @property
    def middle_y(self) -> float:
        return (self.top + self.bottom) / 2

    @property
    def middle_x(self) -> float:
        return (self.left + self.right) / 2

    def y(self, value: float) -> float:
        """Pixel row of ``value``, clamped into the plot."""
        clamped = min(max(value, self.y_lo), self.y_hi)
        return self.bottom - (clamped - self.y_lo) / (self.y_hi - self.y_lo) * (
            self.bottom - self.top
        )

    def slot_x(self, index: int, count: int) -> float:
        """Centre of the ``index``-th of ``count`` equal-width categories."""
        return self.left + (index + 0.5) * (self.right - self.left) / max(count, 1)

    def draw_axes(self, svg: _Svg, label: str, *, label_x: float) -> None:
        """Gridlines, tick labels, both axis lines and the rotated y-axis label."""
        decimals = _decimals_for(self.step)
        count = round((self.y_hi - self.y_lo) / self.step)
        for i in range(count + 1):
            value = self.y_lo + i * self.step
            y = self.y(value)
            svg.line(self.left, y, self.right, y, colour=_GRID)
            svg.text(self.left - 5, y + 4, _num(value, decimals), anchor="end", size=11)
        svg.line(self.left, self.top, self.left, self.bottom)
        svg.line(self.left, self.bottom, self.right, self.bottom)
        svg.text(label_x, self.middle_y, label, anchor="middle", size=11, rotate=-90.0)


def _marker(svg: _Svg, shape: str, x: float, y: float, *, colour: str, tip: str = "") -> None:
    """A region's point marker; the shape tells regions apart without colour."""
    title = f"<title>{_e(tip)}</title>" if tip else ""
    style = f'fill="{colour}" stroke="#000000" stroke-width="1"'
    if shape == "square":
        svg.add(
            f'<rect x="{_n(x - 4)}" y="{_n(y - 4)}" width="8" height="8" {style}>{title}</rect>'
        )
    elif shape == "triangle":
        points = f"{_n(x)},{_n(y - 5)} {_n(x + 5)},{_n(y + 4)} {_n(x - 5)},{_n(y + 4)}"
        svg.add(f'<polygon points="{points}" {style}>{title}</polygon>')
    elif shape == "diamond":
        points = f"{_n(x)},{_n(y - 5)} {_n(x + 5)},{_n(y)} {_n(x)},{_n(y + 5)} {_n(x - 5)},{_n(y)}"
        svg.add(f'<polygon points="{points}" {style}>{title}</polygon>')
    else:
        svg.add(f'<circle cx="{_n(x)}" cy="{_n(y)}" r="4.5" {style}>{title}</circle>')


def _whisker(svg: _Svg, x: float, y_low: float, y_high: float, *, cap: float = 5.0) -> None:
    svg.line(x, y_low, x, y_high, colour="#000000", width=1.5)
    svg.line(x - cap, y_low, x + cap, y_low, colour="#000000", width=1.5)
    svg.line(x - cap, y_high, x + cap, y_high, colour="#000000", width=1.5)


@dataclass(frozen=True)
class _LegendEntry:
    label: str
    kind: str  # "box", "line" or "whisker"
    fill: str = _INK
    dash: str = ""
    marker: str = ""


def _legend(svg: _Svg, x: float, y: float, entries: Sequence[_LegendEntry]) -> None:
    """One row of legend entries starting at (x, y), the row's text baseline."""
    for entry in entries:
        if entry.kind == "box":
            svg.rect(x, y - 10, 14, 12, fill=entry.fill, stroke="#000000")
        elif entry.kind == "line":
            svg.line(x, y - 4, x + 22, y - 4, colour=entry.fill, width=2, dash=entry.dash)
            if entry.marker:
                _marker(svg, entry.marker, x + 11, y - 4, colour=entry.fill)
        elif entry.kind == "whisker":
            _whisker(svg, x + 7, y + 1, y - 11, cap=4)
        swatch = 28 if entry.kind == "line" else 20
        svg.text(x + swatch, y, entry.label, size=12)
        x += swatch + 7 * len(entry.label) + 18


# --------------------------------------------------------------------------- histograms

#: The count whose value is the denominator of a histogram's shares (each bin counts
#: tickets with that count's property). Falls back to the released bins' sum.
_HIST_TOTAL = {"csat": "responses", "nps": "responses", "resolution_hours": "resolved"}


@dataclass(frozen=True)
class _Bar:
    start: int  # first category index covered
    stop: int  # one past the last
    share: float | None  # percent of the histogram's total; None when suppressed
    status: CellStatus
    lo: float
    hi: float

    @property
    def height(self) -> float:
        """Share per covered category, so a merged bar's area is its share."""
        return (self.share or 0.0) / (self.stop - self.start)


def _hist_cells(region: RegionResult, metric: str) -> list[Cell]:
    return [c for c in region.cells if c.metric == metric and c.lo is not None and c.hi is not None]


def _hist_edges(report: Report, metric: str) -> list[float]:
    """The finest bin edges seen in any released region: one category per base bin."""
    edges: set[float] = set()
    for region in report.regions:
        for cell in _hist_cells(region, metric):
            edges.update((float(cell.lo or 0.0), float(cell.hi or 0.0)))
    return sorted(edges)


def _hist_total(region: RegionResult, metric: str, cells: Sequence[Cell]) -> float:
    count_name = _HIST_TOTAL.get(metric)
    for cell in region.cells:
        if cell.slot == count_name and cell.value is not None and cell.value > 0:
            return float(cell.value)
    return float(sum(max(c.value, 0) for c in cells if c.value is not None))


def _hist_bars(region: RegionResult, metric: str, edges: Sequence[float]) -> list[_Bar]:
    cells = _hist_cells(region, metric)
    total = _hist_total(region, metric, cells)
    index = {edge: i for i, edge in enumerate(edges)}
    bars = []
    for cell in cells:
        lo, hi = float(cell.lo or 0.0), float(cell.hi or 0.0)
        share: float | None = None
        if cell.value is not None and cell.status is not CellStatus.SUPPRESSED:
            share = 100.0 * max(cell.value, 0) / total if total > 0 else 0.0
        bars.append(_Bar(index[lo], index[hi], share, cell.status, lo, hi))
    return bars


def _category_labels(metric: str, edges: Sequence[float]) -> list[str]:
    """Scores for unit-width integer bins (CSAT 1..5), else "lo-hi" ranges.

    The last edge is the schema's clipping bound (larger values count in the last bin),
    so a range histogram's last category reads "lo+".
    """
    pairs = list(itertools.pairwise(edges))
    if metric in ("csat", "nps") and all(
        float(lo).is_integer() and hi - lo == 1 for lo, hi in pairs
    ):
        return [_edge(lo) for lo, _ in pairs]
    labels = [f"{_edge(lo)}\u2013{_edge(hi)}" for lo, hi in pairs]
    if labels:
        labels[-1] = f"{_edge(pairs[-1][0])}+"
    return labels


@dataclass(frozen=True)
class _HistSpec:
    chart: str
    metric: str
    title: str
    x_label: str
    y_label: str
    #: What the bars are shares of, for the chart's description.
    of_what: str


def _histogram_chart(report: Report, spec: _HistSpec) -> str:
    """Small multiples, one panel per region, on a shared y scale.

    Bins are equal-width categories labelled with their range (bin widths differ, so
    drawing them to scale would make wide bins look big). A merged bin is one bar over
    every category it covers, its height the share per covered category, labelled with
    its total share; a suppressed bin is a hatched column marked "suppressed".
    """
    edges = _hist_edges(report, spec.metric)
    regions = report.regions
    columns = max(1, min(3, len(regions)))
    rows = max(1, math.ceil(len(regions) / columns))
    width, panel_h, top_pad = 960, 250, 50
    svg = _Svg(
        spec.chart,
        width,
        top_pad + rows * panel_h + 20,
        spec.title,
        f"{spec.title}. One panel per region; bars are the share of {spec.of_what} in each bin.",
    )
    merged_fill, suppressed_fill = _hatch_defs(svg)
    svg.text(12, 20, spec.title, size=15, weight="bold")
    _legend(
        svg,
        12,
        40,
        (
            _LegendEntry("released bin", "box", fill=_PALETTE[0]),
            _LegendEntry("merged bins (one bar over the bins it covers)", "box", fill=merged_fill),
            _LegendEntry("suppressed (too few tickets)", "box", fill=suppressed_fill),
        ),
    )
    all_bars = {r.region: _hist_bars(r, spec.metric, edges) for r in regions if not r.suppressed}
    peak = max((b.height for bars in all_bars.values() for b in bars), default=0.0)
    labels = _category_labels(spec.metric, edges)
    panel_w = width / columns
    for i, region in enumerate(regions):
        px = (i % columns) * panel_w
        py = top_pad + (i // columns) * panel_h
        box = (px + 58, px + panel_w - 14, py + 34, py + panel_h - 62)
        plot = _Plot.fit(box, 0.0, max(peak * 1.15, 1.0), floor_zero=True)
        svg.text(plot.middle_x, py + 22, region.region, anchor="middle", size=13, weight="bold")
        if region.suppressed or not edges:
            note = _suppressed_note(report) if region.suppressed else "no histogram released"
            _empty_panel(svg, plot, note, fill=suppressed_fill)
            continue
        plot.draw_axes(svg, spec.y_label, label_x=px + 16)
        cat_w = (plot.right - plot.left) / max(len(labels), 1)
        for bar in all_bars[region.region]:
            _draw_bar(svg, plot, bar, cat_w=cat_w, fills=(merged_fill, suppressed_fill))
        for j, label in enumerate(labels):
            cx = plot.slot_x(j, len(labels))
            if len(labels) > 5:
                svg.text(cx + 3, plot.bottom + 12, label, anchor="end", size=10, rotate=-40.0)
            else:
                svg.text(cx, plot.bottom + 15, label, anchor="middle", size=11)
        svg.text(plot.middle_x, py + panel_h - 12, spec.x_label, anchor="middle", size=11)
    return svg.render()


def _empty_panel(svg: _Svg, plot: _Plot, note: str, *, fill: str) -> None:
    svg.rect(plot.left, plot.top, plot.right - plot.left, plot.bottom - plot.top, fill=fill)
    svg.rect(plot.left + 8, plot.middle_y - 16, plot.right - plot.left - 16, 24, fill="#ffffff")
    svg.text(plot.middle_x, plot.middle_y, note, anchor="middle", size=11)


def _draw_bar(svg: _Svg, plot: _Plot, bar: _Bar, *, cat_w: float, fills: tuple[str, str]) -> None:
    """One histogram bar: released solid, merged hatched and labelled, suppressed marked."""
    merged_fill, suppressed_fill = fills
    x = plot.left + bar.start * cat_w + 3
    w = (bar.stop - bar.start) * cat_w - 6
    if bar.share is None:
        svg.rect(
            x,
            plot.top,
            w,
            plot.bottom - plot.top,
            fill=suppressed_fill,
            stroke="#999999",
            dash="3 2",
        )
        svg.text(x + w / 2 + 4, plot.middle_y, "suppressed", anchor="middle", size=10, rotate=-90.0)
        return
    merged = bar.status is CellStatus.MERGED
    top = plot.y(bar.height)
    tip = f"{_edge(bar.lo)}-{_edge(bar.hi)}: {_num(bar.share, 1)}%{' (merged)' * merged}"
    svg.add(f"<g><title>{_e(tip)}</title>")
    svg.rect(
        x, top, w, plot.bottom - top, fill=merged_fill if merged else _PALETTE[0], stroke="#000000"
    )
    svg.add("</g>")
    svg.text(x + w / 2, top - 4, f"{_num(bar.share, 1)}%", anchor="middle", size=10)
    if merged:
        svg.text(x + w / 2, top - 16, "merged", anchor="middle", size=10)


# --------------------------------------------------------------------------- escalation


def _escalation_chart(report: Report) -> str:
    """One bar per region with its interval whisker, against the dashed SLO line."""
    level = _percent_level(_confidence(report))
    slo = _slo_for(report, "escalation_rate")
    width, height = 960, 330
    title = "Escalation rate per region against the SLO"
    svg = _Svg(
        "escalation-vs-slo",
        width,
        height,
        title,
        f"{title}: bars are estimates, whiskers {level} intervals, the dashed line the SLO.",
    )
    svg.text(12, 20, title, size=15, weight="bold")
    entries = [
        _LegendEntry("estimate", "box", fill=_PALETTE[0]),
        _LegendEntry(f"{level} interval", "whisker"),
        _LegendEntry(
            _slo_text(slo) if slo is not None else "no SLO configured",
            "line",
            fill=_SLO_COLOUR if slo is not None else _GRID,
            dash="7 4",
        ),
    ]
    _legend(svg, 12, 42, entries)
    stats = {r.region: _stat(r, "escalation_rate") for r in report.regions if not r.suppressed}
    values = [
        v for s in stats.values() if s is not None for v in (s.value, s.high) if v is not None
    ]
    if slo is not None:
        values.append(slo.threshold)
    plot = _Plot.fit(
        (70, width - 30, 60, height - 70),
        0.0,
        max(max(values, default=1.0) * 1.1, 1.0),
        floor_zero=True,
    )
    plot.draw_axes(svg, "escalation rate (%)", label_x=18)
    count = len(report.regions)
    bar_w = min(80.0, (plot.right - plot.left) / max(count, 1) * 0.4)
    for i, region in enumerate(report.regions):
        cx = plot.slot_x(i, count)
        svg.text(cx, plot.bottom + 18, region.region, anchor="middle", size=12, weight="bold")
        stat = stats.get(region.region)
        if region.suppressed or stat is None or stat.value is None:
            why = "suppressed" if region.suppressed else "not available"
            svg.text(cx, plot.bottom - 10, why, anchor="middle", size=11, colour=_MUTED)
            continue
        top = plot.y(stat.value)
        colour = _PALETTE[i % len(_PALETTE)]
        svg.rect(cx - bar_w / 2, top, bar_w, plot.bottom - top, fill=colour, stroke="#000000")
        label_y = top
        if stat.low is not None and stat.high is not None and stat.high > stat.low:
            _whisker(svg, cx, plot.y(stat.low), plot.y(stat.high))
            label_y = plot.y(stat.high)
        svg.text(cx + bar_w / 2 + 6, label_y + 4, f"{_num(stat.value, 1)}%", weight="bold")
        severities = [f.severity.value for f in region.flags if f.statistic == "escalation_rate"]
        if severities:
            svg.text(cx, plot.bottom + 34, " / ".join(severities), anchor="middle", size=11)
    if slo is not None:
        _slo_line(svg, plot, slo)
    return svg.render()


def _slo_line(svg: _Svg, plot: _Plot, slo: Slo) -> None:
    y = plot.y(slo.threshold)
    svg.line(plot.left, y, plot.right, y, colour=_SLO_COLOUR, width=2, dash="7 4")
    svg.text(plot.right, y - 5, _slo_text(slo), anchor="end", size=11, colour=_SLO_COLOUR)


# --------------------------------------------------------------------------- trend

#: The trend chart's statistics and their y-axis labels.
_TREND_STATS = {"escalation_rate": "escalation rate (%)", "csat_mean": "mean CSAT score (1-5)"}


def _trend_rounds(report: Report) -> list[tuple[int, str]]:
    """Distinct (released_ms, round_id) over every region's trend, oldest first."""
    rounds = {(p.released_ms, p.round_id) for r in report.regions for p in r.trend}
    return sorted(rounds)


def _trend_chart(report: Report) -> str:
    """Escalation rate and mean CSAT over the campaign's releases, one line per region."""
    level = _percent_level(_confidence(report))
    rounds = _trend_rounds(report)
    width, height = 960, 360
    title = "Trend over past releases"
    svg = _Svg(
        "trend",
        width,
        height,
        title,
        f"{title}: escalation rate and mean CSAT per region, with {level} intervals.",
    )
    svg.text(12, 20, title, size=15, weight="bold")
    entries = [
        _LegendEntry(
            r.region,
            "line",
            fill=_PALETTE[i % len(_PALETTE)],
            dash=_DASHES[i % len(_DASHES)],
            marker=_MARKERS[i % len(_MARKERS)],
        )
        for i, r in enumerate(report.regions)
        if r.trend
    ]
    entries.append(_LegendEntry(f"{level} interval", "whisker"))
    entries.append(_LegendEntry("SLO", "line", fill=_SLO_COLOUR, dash="7 4"))
    _legend(svg, 12, 42, entries)
    if len(rounds) <= 1:
        note = "Only one release so far: the trend lines start with the next round."
        svg.text(width / 2, 64, note, anchor="middle", size=12, colour=_MUTED)
    panel_w = width / 2
    for k, name in enumerate(_TREND_STATS):
        px = k * panel_w
        box = (px + 64, px + panel_w - 20, 90.0, height - 60.0)
        plot = _trend_panel(svg, report, name, box, label_x=px + 16)
        for i in range(len(rounds)):
            label = "this" if i == len(rounds) - 1 else f"#{i + 1}"
            svg.text(plot.slot_x(i, len(rounds)), plot.bottom + 16, label, anchor="middle", size=11)
        svg.text(plot.middle_x, plot.bottom + 36, "release", anchor="middle", size=11)
    return svg.render()


def _trend_panel(
    svg: _Svg, report: Report, name: str, box: tuple[float, float, float, float], *, label_x: float
) -> _Plot:
    """Draw one statistic's axes, SLO, lines, whiskers and markers; return its plot."""
    slo = _slo_for(report, name)
    values = [
        v
        for r in report.regions
        for p in _trend_points(r, name)
        for v in (p.value, p.low, p.high)
        if v is not None
    ]
    if slo is not None:
        values.append(slo.threshold)
    plot = _Plot.fit(
        box,
        min(values, default=0.0),
        max(values, default=1.0),
        floor_zero=name == "escalation_rate",
    )
    svg.text(
        plot.middle_x, plot.top - 8, _stat_info(name).label, anchor="middle", size=13, weight="bold"
    )
    plot.draw_axes(svg, _TREND_STATS[name], label_x=label_x)
    if slo is not None:
        _slo_line(svg, plot, slo)
    rounds = _trend_rounds(report)
    position = {key: i for i, key in enumerate(rounds)}
    info = _stat_info(name)
    for i, region in enumerate(report.regions):
        colour = _PALETTE[i % len(_PALETTE)]
        dodge = (i - (len(report.regions) - 1) / 2) * 7.0
        points = sorted(
            _trend_points(region, name), key=lambda p: position[(p.released_ms, p.round_id)]
        )
        placed = [
            (plot.slot_x(position[(p.released_ms, p.round_id)], len(rounds)) + dodge, p)
            for p in points
        ]
        _trend_line(svg, plot, placed, colour=colour, dash=_DASHES[i % len(_DASHES)])
        for x, p in placed:
            if p.value is None:
                continue
            if p.low is not None and p.high is not None and p.high > p.low:
                _whisker(svg, x, plot.y(p.low), plot.y(p.high), cap=3)
            tip = f"{region.region}, round {p.round_id}: {_fmt(p.value, info)}"
            _marker(svg, _MARKERS[i % len(_MARKERS)], x, plot.y(p.value), colour=colour, tip=tip)
    return plot


def _trend_line(
    svg: _Svg,
    plot: _Plot,
    placed: Sequence[tuple[float, TrendPoint]],
    *,
    colour: str,
    dash: str,
) -> None:
    """Polyline segments through consecutive points; a missing value breaks the line."""
    segments: list[list[str]] = [[]]
    for x, p in placed:
        if p.value is None:
            segments.append([])
        else:
            segments[-1].append(f"{_n(x)},{_n(plot.y(p.value))}")
    dashes = f' stroke-dasharray="{dash}"' if dash else ""
    for seg in segments:
        if len(seg) >= 2:
            svg.add(
                f'<polyline points="{" ".join(seg)}" fill="none" stroke="{colour}"'
                f' stroke-width="2.5"{dashes}/>'
            )


def _trend_caption(report: Report) -> str:
    rounds = _trend_rounds(report)
    if not rounds:
        return "No earlier releases of this campaign."
    items = [
        f"{'this release' if i == len(rounds) - 1 else f'#{i + 1}'}: round {_e(rid)} ({_utc(ms)})"
        for i, (ms, rid) in enumerate(rounds)
    ]
    return "Releases: " + "; ".join(items) + "."


def _charts_section(report: Report) -> str:
    level = _percent_level(_confidence(report))
    csat = _histogram_chart(
        report,
        _HistSpec(
            "csat-distribution",
            "csat",
            "CSAT distribution per region",
            "CSAT score",
            "share of responses (%)",
            "survey responses",
        ),
    )
    resolution = _histogram_chart(
        report,
        _HistSpec(
            "resolution-distribution",
            "resolution_hours",
            "Resolution time per region",
            "resolution time (hours)",
            "share of resolved tickets (%)",
            "resolved tickets",
        ),
    )
    figures = (
        (csat, "Share of survey responses per CSAT score."),
        (
            _escalation_chart(report),
            f"Escalated tickets as a share of all tickets, with the {level} interval for"
            " the privacy noise.",
        ),
        (
            resolution,
            "Bins have different widths, so they are drawn as equal-width categories"
            " labelled with their range in hours; the last bin also holds longer times.",
        ),
        (_trend_chart(report), _trend_caption(report)),
    )
    return "<h2>Charts</h2>\n" + "\n".join(
        f"<figure>{svg}<figcaption>{caption}</figcaption></figure>" for svg, caption in figures
    )


# --------------------------------------------------------------------------- cells


def _cell_value(cell: Cell) -> str:
    shown = cell.display
    if shown is None:
        return "&#8212;"
    if cell.scale == 1:
        return str(shown)
    return _num(float(shown), max(0, math.ceil(math.log10(cell.scale))))


def _cell_status(cell: Cell) -> str:
    if cell.status is CellStatus.MERGED:
        span = ""
        if cell.lo is not None and cell.hi is not None:
            span = f": {_edge(cell.lo)}&#8211;{_edge(cell.hi)}"
        return f"merged{span}"
    return str(cell.status.value)


def _cells_section(report: Report) -> str:
    dp_on = report.dp.mode is not DpMode.OFF
    minimum = (
        f"fewer than {report.lineage.min_cell} tickets"
        if report.lineage is not None
        else "too few tickets"
    )
    noise = " Noise sd is the standard deviation of the privacy noise in each value." * dp_on
    parts = [
        "<h2>Released cells</h2>",
        '<p class="small muted">Every released total. Histogram bins with'
        f" {minimum} are merged with a neighbour (the range shows which) or suppressed"
        f" (withheld).{noise}</p>",
    ]
    for region in report.regions:
        if region.suppressed:
            parts.append(
                f"<h3>{_e(region.region)}</h3>"
                f'<p class="supp">{_suppressed_note(report)}: no cells released.</p>'
            )
            continue
        merged = sum(1 for c in region.cells if c.status is CellStatus.MERGED)
        withheld = sum(1 for c in region.cells if c.status is CellStatus.SUPPRESSED)
        sd_head = "<th>Noise sd</th>" if dp_on else ""
        rows = []
        for cell in region.cells:
            sd = f'<td class="num">{_num(cell.noise_sd / cell.scale, 1)}</td>' if dp_on else ""
            rows.append(
                f'<tr class="{cell.status.value}"><td>{_e(cell.metric)}</td>'
                f'<td>{_e(cell.slot)}</td><td class="num">{_cell_value(cell)}</td>'
                f"<td>{_cell_status(cell)}</td>{sd}</tr>"
            )
        parts.append(
            f"<details><summary><strong>{_e(region.region)}</strong>: {len(region.cells)}"
            f" cells ({merged} merged, {withheld} suppressed)</summary>"
            f"<table><thead><tr><th>Metric</th><th>Cell</th><th>Value</th><th>Status</th>"
            f"{sd_head}</tr></thead><tbody>{''.join(rows)}</tbody></table></details>"
        )
    return "\n".join(parts)


# --------------------------------------------------------------------------- lineage


def _g(value: float) -> str:
    """A privacy parameter: 4 significant digits."""
    return f"{value:.4g}"


def _dp_rows(report: Report) -> list[tuple[str, str]]:
    dp = report.dp
    if dp.mode is DpMode.OFF:
        return [("Differential privacy", "off: released totals are exact")]
    who = (
        "the release step adds noise to the exact totals (central)"
        if dp.mode is DpMode.CENTRAL
        else "each party adds its share of the noise before aggregation (distributed)"
    )
    rows = [
        ("Differential privacy", f"{dp.mode.value}: {who}"),
        ("Privacy cost charged (rho, zCDP)", _g(dp.rho)),
        ("As (epsilon, delta)", f"({_g(dp.epsilon)}, {dp.delta:.3g})"),
    ]
    if dp.rho_vs_aggregator is None:
        against = "none: in central mode the aggregator sees the exact totals"
    else:
        against = f"rho = {_g(dp.rho_vs_aggregator)}"
    rows.append(("Against the aggregator", against))
    if dp.mode is DpMode.DISTRIBUTED:
        rows.append(("Noisy parties", f"{dp.noisy_parties} of {dp.expected_parties} expected"))
    rows.append(
        (
            "Budget",
            f"campaign {_e(dp.campaign)}, window {_e(dp.window)}: spent {_g(dp.spent_rho)}"
            f" of {_g(dp.budget_rho)}, left {_g(dp.remaining_rho)}",
        )
    )
    return rows


def _noise_table(report: Report) -> str:
    if report.dp.mode is DpMode.OFF or not report.dp.noise:
        return ""
    rows = "".join(
        f'<tr><td>{_e(n.metric)}</td><td class="num">{n.l2}</td>'
        f'<td class="num">{_num(n.sigma, 1)}</td><td class="num">{_g(n.rho)}</td></tr>'
        for n in report.dp.noise
    )
    return (
        "<h3>Noise per metric</h3>"
        "<table><thead><tr><th>Metric</th><th>L2 sensitivity</th>"
        "<th>Noise sd per cell (sigma)</th><th>Share of rho</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
        '<p class="small muted">Sensitivity is the most one customer can change a metric;'
        " sigma is in cell units (fixed point for sums).</p>"
    )


def _lineage_section(report: Report) -> str:
    lineage = report.lineage
    confidence = _confidence(report)
    level = _percent_level(confidence)
    contributors = ", ".join(
        f"{_e(r.region)} fewer than {report.min_contributors} (suppressed)"
        if r.suppressed
        else f"{_e(r.region)} {r.contributors}"
        for r in report.regions
    )
    rows: list[tuple[str, str]] = [
        ("Round", _e(report.round_id)),
        ("Mode", _e(report.mode.value)),
        ("Released", _utc(report.released_ms)),
        ("Schema id", f"<code>{_e(report.schema_id)}</code>"),
    ]
    if lineage is not None:
        rows.append(("Schema", f"{_e(lineage.schema_name)} v{lineage.schema_version}"))
    rows += [
        ("Parties included", ", ".join(_e(p) for p in report.included_parties) or "none"),
        ("Contributing parties per region", contributors),
        ("Minimum contributing parties (k)", str(report.min_contributors)),
    ]
    if lineage is not None:
        rows.append(("Minimum tickets per bin", str(lineage.min_cell)))
    rows += _dp_rows(report)
    if lineage is not None:
        rows += [
            ("Anonymization rules", _e(lineage.anonymization_rules)),
            ("Software version", _e(lineage.software_version)),
        ]
    rows.append(("Confidence level", level))
    items = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    if report.dp.mode is DpMode.OFF:
        meaning = (
            "Without differential privacy the released numbers are exact, so each interval"
            " is just the value."
        )
    else:
        meaning = (
            f"Each interval would contain the exact value in {level} of releases: it"
            " covers the privacy noise added to protect customers, not week-to-week"
            " variation in the tickets themselves."
        )
    return (
        "<h2>Lineage</h2>\n"
        f'<dl class="lineage">{items}</dl>\n'
        f"{_noise_table(report)}\n"
        f"<p><strong>What the intervals mean.</strong> {meaning}</p>"
    )
