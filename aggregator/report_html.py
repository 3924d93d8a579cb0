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

The page works from a 390 px phone to a desktop. It opens with one summary sentence
(how many regions were released, who breaches what, who is suppressed) and what the
intervals mean. Wide tables scroll inside their own box, never the page. Every chart is
drawn twice, for a wide and a narrow layout, and CSS shows the one that fits (media
queries, no script), so chart text is never scaled below its drawn size by much: at
least 11 units, shown at no less than 10 px.

Colours are the Okabe-Ito palette (safe for the common colour-vision deficiencies), and
nothing depends on colour alone: regions also differ by marker and dash pattern, bin
statuses by hatching and text, and flag severities are written out.
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from aggregator.report import (
    NOT_COLLECTED_TEXT,
    headline,
    intervals_line,
    rule_name,
)
from aggregator.stats import STATISTICS, decimals_of, histogram_total, is_not_collected, label_of
from blindsum.model import (
    Cell,
    CellStatus,
    DpMode,
    Flag,
    RegionResult,
    Report,
    Severity,
    Slo,
    SloKind,
    Statistic,
    TrendPoint,
    iso_week,
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

    Sections, in order: the headline (one sentence) and what the intervals mean, the
    round's details, flags, key statistics, charts, released cells, lineage. The result
    depends only on ``report`` (deterministic), loads nothing and runs no script.
    """
    title = f"Support KPI report: round {_e(report.round_id)}"
    body = "\n".join(
        (
            f"<h1>{title}</h1>",
            f'<p class="headline">{_e(headline(report))}</p>',
            f'<p class="intervals">{_intervals_text(report)}</p>',
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


#: Below this viewport width the charts switch to their narrow layout: the wide ones
#: (960 units) would be shown under 91 % of their size, their 11-unit text under 10 px.
_NARROW_BELOW_PX = 960

_STYLE = f"""
body{{margin:0;background:#fff;color:#222;font:15px/1.45 system-ui,-apple-system,"Segoe UI",
Roboto,"DejaVu Sans","Liberation Sans",Arial,sans-serif}}
main{{max-width:1000px;margin:0 auto;padding:24px}}
h1{{font-size:1.6em;margin:0 0 .3em}}h2{{font-size:1.25em;margin:1.6em 0 .5em;
border-bottom:2px solid #0072B2;padding-bottom:.2em}}h3{{font-size:1.05em;margin:1em 0 .3em}}
h1,h2,h3,p,li,dd,summary{{overflow-wrap:anywhere}}
.headline{{font-size:1.1em;font-weight:bold;margin:0 0 .4em}}
.intervals{{margin:0 0 .8em}}
.summary{{color:#444;margin:0 0 1em}}.muted{{color:#666}}.small{{font-size:.85em}}
.scroll{{overflow-x:auto;max-width:100%}}
table{{border-collapse:collapse;margin:.4em 0 1em;font-variant-numeric:tabular-nums}}
th,td{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}}
th{{background:#f2f2f2}}td.num{{text-align:right;white-space:nowrap}}
table.stats th:first-child{{position:sticky;left:0;z-index:1;min-width:8em;max-width:14em}}
.iv{{display:block;color:#555;font-size:.85em;white-space:normal}}
.badge{{display:inline-block;font-size:.75em;font-weight:bold;padding:0 .4em;
border-radius:3px;margin-right:.3em;letter-spacing:.03em;white-space:nowrap}}
.breach{{background:#D55E00;color:#fff;border:2px solid #000}}
.watch{{background:#fff;color:#000;border:2px dashed #000}}
ul.flags{{margin:.2em 0 .8em;padding-left:1.2em}}ul.flags li{{margin:.25em 0}}
.ok{{color:#009E73;font-weight:bold}}.supp{{color:#666;font-style:italic}}
figure{{margin:1em 0 1.6em}}figcaption{{font-size:.85em;color:#555;margin-top:.3em}}
.layout{{overflow-x:auto;max-width:100%}}.layout-narrow{{display:none}}
svg.chart{{display:block;height:auto}}
.layout-wide svg.chart{{width:100%;max-width:960px;min-width:873px}}
.layout-narrow svg.chart{{width:100%;max-width:520px;min-width:310px}}
svg.chart text{{font-family:inherit;fill:#222}}
dl.lineage{{display:grid;grid-template-columns:max-content 1fr;gap:.25em 1em}}
dl.lineage dt{{font-weight:bold}}dl.lineage dd{{margin:0;min-width:0}}
code{{font-size:.85em;word-break:break-all}}
details summary{{cursor:pointer;margin:.3em 0}}
tr.merged td{{background:#f4f8fc}}tr.suppressed td{{background:#f6f6f6;color:#555}}
@media (max-width:{_NARROW_BELOW_PX - 1}px){{.layout-wide{{display:none}}
.layout-narrow{{display:block}}}}
@media (max-width:600px){{main{{padding:12px}}body{{font-size:14px}}
dl.lineage{{grid-template-columns:1fr}}dl.lineage dd{{margin-bottom:.4em}}}}
""".strip()


def _intervals_text(report: Report) -> str:
    """What the intervals mean, right under the headline (HTML)."""
    text = intervals_line(report).removeprefix("Intervals: ")
    return f"<strong>What the intervals mean.</strong> {_e(text[:1].upper() + text[1:])}"


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


def _nothing_released(report: Report) -> bool:
    return all(r.suppressed for r in report.regions)


# --------------------------------------------------------------------------- flags


def _badge(flag: Flag) -> str:
    """The flag's badge, naming its rule: "SLO breach", "change watch"."""
    return f'<span class="badge {flag.severity.value}">{rule_name(flag)}</span>'


def _flag_item(flag: Flag) -> str:
    return f"<li>{_badge(flag)}{_e(flag.reason)}</li>"


def _flags_section(report: Report) -> str:
    parts = ["<h2>Flags</h2>"]
    if _nothing_released(report):
        parts.append(
            '<p class="supp">Nothing was released: every region had fewer than'
            f" {report.min_contributors} contributing parties, so no flags were checked.</p>"
        )
        return "\n".join(parts)
    if not any(r.flags for r in report.regions):
        parts.append('<p class="ok">No service failures flagged.</p>')
    parts.append(
        '<p class="small muted"><strong>SLO</strong> flags compare a statistic with its'
        " service-level objective; <strong>change</strong> flags compare it with the"
        " region's earlier releases. <strong>Breach</strong>: beyond the threshold by more"
        " than the interval explains. <strong>Watch</strong>: the estimate is beyond the"
        " threshold, but the interval reaches back across it.</p>"
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


def _not_collected(report: Report) -> set[str]:
    """Statistics the schema cannot give: the same for every region, suppressed or not."""
    return {s.name for r in report.regions for s in r.stats if is_not_collected(s)}


def _stat_cell(region: RegionResult, name: str) -> str:
    stat = _stat(region, name)
    if stat is None:
        return '<td class="num muted">n/a</td>'
    if is_not_collected(stat):
        return f'<td class="muted" title="{_e(stat.note)}">{NOT_COLLECTED_TEXT}</td>'
    info = _stat_info(name, stat.unit)
    badges = "".join(_badge(f) for f in _ordered_flags(region.flags) if f.statistic == name)
    if stat.value is None:
        note = f'<span class="iv">{_e(stat.note)}</span>' if stat.note else ""
        return f'<td class="num">{badges}&#8212;{note}</td>'
    interval = _interval_text(stat.low, stat.high, info)
    iv = f'<span class="iv">{interval}</span>' if interval else ""
    return f'<td class="num">{badges}{_fmt(stat.value, info)}{iv}</td>'


def _stats_section(report: Report) -> str:
    names = _stat_names(report)
    missing = _not_collected(report)
    level = _percent_level(_confidence(report))
    head = "".join(
        f'<th scope="col" data-region="{_e(r.region)}">{_e(r.region)}</th>' for r in report.regions
    )
    rows = []
    contributors = "".join(
        f'<td class="num">{r.contributors}</td>'
        if not r.suppressed
        else f'<td class="supp">{_suppressed_note(report)}</td>'
        for r in report.regions
    )
    rows.append(f'<tr><th scope="row">Contributing parties</th>{contributors}</tr>')
    for name in names:
        info = _stat_info(name)
        slo = _slo_for(report, name)
        slo_note = f'<span class="iv">{_e(_slo_text(slo))}</span>' if slo is not None else ""
        cells = "".join(
            f'<td class="muted">{NOT_COLLECTED_TEXT}</td>'
            if name in missing
            else '<td class="supp">suppressed</td>'
            if r.suppressed
            else _stat_cell(r, name)
            for r in report.regions
        )
        rows.append(f'<tr><th scope="row">{_e(info.label)}{slo_note}</th>{cells}</tr>')
    return (
        "<h2>Key statistics</h2>\n"
        f'<p class="small muted">Each value is shown with its {level} interval'
        " (low&#8211;high); see what the intervals mean at the top. <em>Not collected</em>:"
        " this campaign's schema does not measure it; <em>suppressed</em>: too few"
        " contributing parties.</p>\n"
        f'<div class="scroll"><table class="stats"><thead><tr><th scope="col">Statistic</th>'
        f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


# --------------------------------------------------------------------------- SVG helpers


def _n(value: float) -> str:
    """A coordinate: one decimal is sub-pixel, and keeps the output stable."""
    return _num(value, 1)


#: Smallest font size of any chart text, in SVG units. CSS never shows a chart below
#: 10/11 of its drawn width (min-width), so this is never under 10 px on screen.
_MIN_FONT = 11
#: Average advance of a character, as a share of the font size (system sans-serif).
_CHAR_WIDTH = 0.6


def _text_width(text: str, size: int) -> float:
    """About how wide ``text`` is at ``size``, for layout (legends, wrapping, labels)."""
    return _CHAR_WIDTH * max(size, _MIN_FONT) * len(text)


@dataclass(frozen=True)
class _Layout:
    """One of the two drawings of every chart: CSS shows the wide one on wide screens."""

    name: str
    width: int
    #: Histogram panels per row, at most.
    columns: int


_WIDE = _Layout("wide", 960, 3)
_NARROW = _Layout("narrow", 340, 1)
_LAYOUTS = (_WIDE, _NARROW)


class _Svg:
    """Accumulates the elements of one chart (``height`` may grow while drawing)."""

    def __init__(self, chart: str, layout: _Layout, height: float, title: str, desc: str) -> None:
        self.chart = chart
        self.layout = layout
        self.width = layout.width
        self.height = height
        self.parts: list[str] = [f"<title>{_e(title)}</title>", f"<desc>{_e(desc)}</desc>"]

    @property
    def ids(self) -> str:
        """Prefix of element ids: unique per chart and layout in the one document."""
        return f"{self.chart}-{self.layout.name}"

    def heading(self, text: str, *, y: float = 20, size: int = 15) -> float:
        """The chart's title from the top left, wrapped to the width; returns the
        baseline of its last line."""
        lines: list[str] = []
        for word in text.split():
            if lines and _text_width(f"{lines[-1]} {word}", size) <= self.width - 24:
                lines[-1] += f" {word}"
            else:
                lines.append(word)
        for i, line in enumerate(lines):
            self.text(12, y + i * (size + 4), line, size=size, weight="bold")
        return y + (len(lines) - 1) * (size + 4)

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
        size = max(size, _MIN_FONT)
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
            f'<svg class="chart" data-chart="{self.chart}" data-layout="{self.layout.name}"'
            f' role="img" width="{self.width}" height="{_n(self.height)}"'
            f' viewBox="0 0 {self.width} {_n(self.height)}">\n{body}\n</svg>'
        )


def _hatch_defs(svg: _Svg) -> tuple[str, str]:
    """Add the chart's two hatch patterns; return (merged, suppressed) fill references.

    Ids are prefixed with the chart and layout names because all SVGs share one
    document (a fill must not point into the hidden layout's SVG).
    """
    merged = f"{svg.ids}-merged"
    suppressed = f"{svg.ids}-suppressed"
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


def _legend(svg: _Svg, x: float, y: float, entries: Sequence[_LegendEntry]) -> float:
    """Legend entries from (x, y), the first row's text baseline, wrapping onto more rows
    at the chart's width; returns the last row's baseline."""
    start = x
    for entry in entries:
        swatch = 28 if entry.kind == "line" else 20
        advance = swatch + _text_width(entry.label, 12) + 18
        if x > start and x + advance - 18 > svg.width - 8:
            x, y = start, y + 20
        if entry.kind == "box":
            svg.rect(x, y - 10, 14, 12, fill=entry.fill, stroke="#000000")
        elif entry.kind == "line":
            svg.line(x, y - 4, x + 22, y - 4, colour=entry.fill, width=2, dash=entry.dash)
            if entry.marker:
                _marker(svg, entry.marker, x + 11, y - 4, colour=entry.fill)
        elif entry.kind == "whisker":
            _whisker(svg, x + 7, y + 1, y - 11, cap=4)
        svg.text(x + swatch, y, entry.label, size=12)
        x += advance
    return y


# --------------------------------------------------------------------------- histograms


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
        return (self.share or 0.0) / max(self.stop - self.start, 1)


def _hist_cells(region: RegionResult, metric: str) -> list[Cell]:
    return [c for c in region.cells if c.metric == metric and c.lo is not None and c.hi is not None]


def _hist_edges(report: Report, metric: str) -> list[float]:
    """The finest bin edges seen in any released region: one category per base bin."""
    edges: set[float] = set()
    for region in report.regions:
        for cell in _hist_cells(region, metric):
            edges.update((float(cell.lo or 0.0), float(cell.hi or 0.0)))
    return sorted(edges)


def _hist_bars(region: RegionResult, metric: str, edges: Sequence[float]) -> list[_Bar]:
    """The region's bars; shares are of the histogram's own released total
    (:func:`aggregator.stats.histogram_total`), so they add up to 100 %. For CSAT that
    total is the number of answers the satisfied share and the mean divide by."""
    cells = _hist_cells(region, metric)
    total = histogram_total(cells)
    index = {edge: i for i, edge in enumerate(edges)}
    bars = []
    for cell in cells:
        lo, hi = float(cell.lo or 0.0), float(cell.hi or 0.0)
        share: float | None = None
        if cell.value is not None and cell.status is not CellStatus.SUPPRESSED:
            share = 100.0 * max(cell.value / cell.scale, 0.0) / total if total > 0 else 0.0
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


def _histogram_chart(report: Report, spec: _HistSpec, layout: _Layout) -> str:
    """Small multiples, one panel per region, on a shared y scale (panels side by side
    in the wide layout, stacked in the narrow one).

    Bins are equal-width categories labelled with their range (bin widths differ, so
    drawing them to scale would make wide bins look big). A merged bin is one bar over
    every category it covers, its height the share per covered category, labelled with
    its total share; a suppressed bin is a hatched column marked "suppressed".
    """
    edges = _hist_edges(report, spec.metric)
    regions = report.regions
    columns = max(1, min(layout.columns, len(regions)))
    rows = max(1, math.ceil(len(regions) / columns))
    panel_h = 250
    svg = _Svg(
        spec.chart,
        layout,
        0,
        spec.title,
        f"{spec.title}. One panel per region; bars are the share of {spec.of_what} in each"
        " bin and add up to 100% per region; a merged bar spans the bins it covers.",
    )
    merged_fill, suppressed_fill = _hatch_defs(svg)
    y = svg.heading(spec.title)
    y = _legend(
        svg,
        12,
        y + 20,
        (
            _LegendEntry("released bin", "box", fill=_PALETTE[0]),
            _LegendEntry("merged bins (one bar)", "box", fill=merged_fill),
            _LegendEntry("suppressed (too few tickets)", "box", fill=suppressed_fill),
        ),
    )
    top_pad = y + 10
    svg.height = top_pad + rows * panel_h + 20
    all_bars = {r.region: _hist_bars(r, spec.metric, edges) for r in regions if not r.suppressed}
    peak = max((b.height for bars in all_bars.values() for b in bars), default=0.0)
    labels = _category_labels(spec.metric, edges)
    panel_w = layout.width / columns
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
                svg.text(cx + 3, plot.bottom + 12, label, anchor="end", rotate=-40.0)
            else:
                svg.text(cx, plot.bottom + 15, label, anchor="middle")
        svg.text(plot.middle_x, py + panel_h - 12, spec.x_label, anchor="middle")
    return svg.render()


def _empty_panel(svg: _Svg, plot: _Plot, note: str, *, fill: str) -> None:
    svg.rect(plot.left, plot.top, plot.right - plot.left, plot.bottom - plot.top, fill=fill)
    # Long notes (narrow panels) go on two lines.
    words = note.split()
    lines = [note]
    if _text_width(note, _MIN_FONT) > plot.right - plot.left - 24 and len(words) > 1:
        half = len(words) // 2
        lines = [" ".join(words[:half]), " ".join(words[half:])]
    height = 10 + 15 * len(lines)
    top = plot.middle_y - height / 2
    svg.rect(plot.left + 8, top, plot.right - plot.left - 16, height, fill="#ffffff")
    for k, line in enumerate(lines):
        svg.text(plot.middle_x, top + 17 + 15 * k, line, anchor="middle")


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
        svg.text(x + w / 2 + 4, plot.middle_y, "suppressed", anchor="middle", rotate=-90.0)
        return
    merged = bar.status is CellStatus.MERGED
    top = plot.y(bar.height)
    tip = f"{_edge(bar.lo)}-{_edge(bar.hi)}: {_num(bar.share, 1)}%{' (merged)' * merged}"
    svg.add(f"<g><title>{_e(tip)}</title>")
    svg.rect(
        x, top, w, plot.bottom - top, fill=merged_fill if merged else _PALETTE[0], stroke="#000000"
    )
    svg.add("</g>")
    # The share over the bar; without its % sign (the axis says it) where bars are narrow.
    label = f"{_num(bar.share, 1)}%"
    if _text_width(label, _MIN_FONT) > w + 4:
        label = _num(bar.share, 1) if _text_width(label[:-1], _MIN_FONT) <= w + 4 else ""
        label = label or _num(bar.share, 0)
    svg.text(x + w / 2, top - 4, label, anchor="middle")
    if merged:
        svg.text(x + w / 2, top - 17, "merged", anchor="middle")


# --------------------------------------------------------------------------- escalation


def _escalation_chart(report: Report, layout: _Layout) -> str:
    """One bar per region with its interval whisker, against the dashed SLO line."""
    level = _percent_level(_confidence(report))
    slo = _slo_for(report, "escalation_rate")
    title = "Escalation rate per region against the SLO"
    svg = _Svg(
        "escalation-vs-slo",
        layout,
        0,
        title,
        f"{title}: bars are estimates, whiskers {level} intervals, the dashed line the SLO.",
    )
    y = svg.heading(title)
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
    y = _legend(svg, 12, y + 22, entries)
    stats = {r.region: _stat(r, "escalation_rate") for r in report.regions if not r.suppressed}
    flags = {
        r.region: [f for f in _ordered_flags(r.flags) if f.statistic == "escalation_rate"]
        for r in report.regions
    }
    badge_lines = max((len(f) for f in flags.values()), default=0)
    values = [
        v for s in stats.values() if s is not None for v in (s.value, s.high) if v is not None
    ]
    if slo is not None:
        values.append(slo.threshold)
    top = y + 18
    bottom = top + 200
    svg.height = bottom + 34 + 15 * badge_lines + 6
    narrow = layout is _NARROW
    plot = _Plot.fit(
        (56 if narrow else 70, layout.width - (16 if narrow else 30), top, bottom),
        0.0,
        max(max(values, default=1.0) * 1.1, 1.0),
        floor_zero=True,
    )
    plot.draw_axes(svg, "escalation rate (%)", label_x=16)
    count = len(report.regions)
    bar_w = min(80.0, (plot.right - plot.left) / max(count, 1) * 0.4)
    for i, region in enumerate(report.regions):
        cx = plot.slot_x(i, count)
        svg.text(cx, plot.bottom + 18, region.region, anchor="middle", size=12, weight="bold")
        for k, flag in enumerate(flags[region.region]):
            svg.text(cx, plot.bottom + 34 + 15 * k, rule_name(flag), anchor="middle")
        stat = stats.get(region.region)
        if region.suppressed or stat is None or stat.value is None:
            why = "suppressed" if region.suppressed else "not available"
            svg.text(cx, plot.bottom - 10, why, anchor="middle", colour=_MUTED)
            continue
        bar_top = plot.y(stat.value)
        colour = _PALETTE[i % len(_PALETTE)]
        svg.rect(
            cx - bar_w / 2, bar_top, bar_w, plot.bottom - bar_top, fill=colour, stroke="#000000"
        )
        label_y = bar_top
        if stat.low is not None and stat.high is not None and stat.high > stat.low:
            _whisker(svg, cx, plot.y(stat.low), plot.y(stat.high))
            label_y = plot.y(stat.high)
        svg.text(cx + bar_w / 2 + 6, label_y + 4, f"{_num(stat.value, 1)}%", weight="bold")
    if slo is not None:
        _slo_line(svg, plot, slo)
    return svg.render()


def _slo_line(svg: _Svg, plot: _Plot, slo: Slo) -> None:
    y = plot.y(slo.threshold)
    svg.line(plot.left, y, plot.right, y, colour=_SLO_COLOUR, width=2, dash="7 4")
    svg.text(plot.right, y - 5, _slo_text(slo), anchor="end", colour=_SLO_COLOUR)


# --------------------------------------------------------------------------- trend

#: The trend chart's statistics and their y-axis labels.
_TREND_STATS = {"escalation_rate": "escalation rate (%)", "csat_mean": "mean CSAT score (1-5)"}


@dataclass(frozen=True)
class _Release:
    """One release on the trend's x axis."""

    released_ms: int
    round_id: str
    #: What the axis calls it: the release's DP window (its ISO week), else the ISO week
    #: of its release date, else (when two releases share that) its date.
    label: str

    @property
    def key(self) -> tuple[int, str]:
        return (self.released_ms, self.round_id)


def _trend_rounds(report: Report) -> list[_Release]:
    """Distinct releases over every region's trend, oldest first, with axis labels."""
    windows: dict[tuple[int, str], str | None] = {}
    for region in report.regions:
        for p in region.trend:
            key = (p.released_ms, p.round_id)
            if windows.get(key) is None:
                windows[key] = p.window or None
    keys = sorted(windows)
    labels = [windows[key] or iso_week(key[0]) for key in keys]
    if len(set(labels)) < len(labels):
        labels = [
            f"{label} {_utc(ms)[5:10]}" if labels.count(label) > 1 else label
            for label, (ms, _) in zip(labels, keys, strict=True)
        ]
    if len(set(labels)) < len(labels):
        labels = [_utc(ms)[:16] for ms, _ in keys]
    return [_Release(ms, rid, label) for (ms, rid), label in zip(keys, labels, strict=True)]


def _trend_chart(report: Report, layout: _Layout) -> str:
    """Escalation rate and mean CSAT over the campaign's releases, one line per region;
    the x axis names each release by its DP window (ISO week)."""
    level = _percent_level(_confidence(report))
    rounds = _trend_rounds(report)
    title = "Trend over past releases"
    svg = _Svg(
        "trend",
        layout,
        0,
        title,
        f"{title}: escalation rate and mean CSAT per region, with {level} intervals,"
        " per release window.",
    )
    y = svg.heading(title)
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
    y = _legend(svg, 12, y + 22, entries)
    if len(rounds) <= 1:
        note = "Only one release so far: the trend lines start with the next one."
        y += 22
        svg.text(12, y, note, colour=_MUTED)
    narrow = layout is _NARROW
    panel_w = layout.width if narrow else layout.width / 2
    plot_w = panel_w - 84
    rotate = any(_text_width(r.label, _MIN_FONT) + 6 > plot_w / max(len(rounds), 1) for r in rounds)
    longest = max((_text_width(r.label, _MIN_FONT) for r in rounds), default=0.0)
    under = (longest * 0.6 + 16) if rotate else 18.0  # room for the tick labels
    panel_h = 40 + 200 + under + 30
    top = y + 10
    for k, name in enumerate(_TREND_STATS):
        px, py = (0.0, top + k * panel_h) if narrow else (k * panel_w, top)
        box = (px + 64, px + panel_w - 20, py + 40, py + 240)
        plot = _trend_panel(svg, report, name, box, label_x=px + 16)
        for i, release in enumerate(rounds):
            x = plot.slot_x(i, len(rounds))
            if rotate:
                svg.text(x + 4, plot.bottom + 14, release.label, anchor="end", rotate=-35.0)
            else:
                svg.text(x, plot.bottom + 16, release.label, anchor="middle")
        svg.text(plot.middle_x, plot.bottom + under + 14, "release (DP window)", anchor="middle")
    svg.height = top + (2 if narrow else 1) * panel_h
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
        plot.middle_x,
        plot.top - 10,
        _stat_info(name).label,
        anchor="middle",
        size=13,
        weight="bold",
    )
    plot.draw_axes(svg, _TREND_STATS[name], label_x=label_x)
    if slo is not None:
        _slo_line(svg, plot, slo)
    rounds = _trend_rounds(report)
    position = {release.key: i for i, release in enumerate(rounds)}
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
            label = rounds[position[(p.released_ms, p.round_id)]].label
            tip = f"{region.region}, {label} (round {p.round_id}): {_fmt(p.value, info)}"
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
        f"{_e(r.label)}{' (this release)' if i == len(rounds) - 1 else ''}: round"
        f" {_e(r.round_id)}, released {_utc(r.released_ms)}"
        for i, r in enumerate(rounds)
    ]
    return "Releases: " + "; ".join(items) + "."


def _charts_section(report: Report) -> str:
    if _nothing_released(report):
        return '<h2>Charts</h2>\n<p class="supp">No charts: nothing was released in this round.</p>'
    level = _percent_level(_confidence(report))
    csat = _HistSpec(
        "csat-distribution",
        "csat",
        "CSAT distribution per region",
        "CSAT score",
        "share of CSAT answers (%)",
        "CSAT answers",
    )
    resolution = _HistSpec(
        "resolution-distribution",
        "resolution_hours",
        "Resolution time per region",
        "resolution time (hours)",
        "share of resolved tickets (%)",
        "resolved tickets with a resolution time",
    )
    figures: tuple[tuple[Callable[[_Layout], str], str], ...] = (
        (
            lambda layout: _histogram_chart(report, csat, layout),
            "Share of CSAT answers per score. Each region's bars add up to 100% of its"
            " released CSAT answers, the same count the satisfied share in the table"
            " divides by.",
        ),
        (
            lambda layout: _escalation_chart(report, layout),
            f"Escalated tickets as a share of all tickets, with the {level} interval for"
            " the privacy noise. Under each region: its escalation-rate flags.",
        ),
        (
            lambda layout: _histogram_chart(report, resolution, layout),
            "Bins have different widths, so they are drawn as equal-width categories"
            " labelled with their range in hours; the last bin also holds longer times."
            " Each region's bars add up to 100%.",
        ),
        (lambda layout: _trend_chart(report, layout), _trend_caption(report)),
    )
    return "<h2>Charts</h2>\n" + "\n".join(
        "<figure>"
        + "".join(
            f'<div class="layout layout-{layout.name}" data-layout="{layout.name}">'
            f"{draw(layout)}</div>"
            for layout in _LAYOUTS
        )
        + f"<figcaption>{caption}</figcaption></figure>"
        for draw, caption in figures
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
            '<div class="scroll"><table><thead><tr><th>Metric</th><th>Cell</th><th>Value</th>'
            f"<th>Status</th>{sd_head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
            "</details>"
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
        '<div class="scroll"><table><thead><tr><th>Metric</th><th>L2 sensitivity</th>'
        "<th>Noise sd per cell (sigma)</th><th>Share of rho</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div>"
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
    return f'<h2>Lineage</h2>\n<dl class="lineage">{items}</dl>\n{_noise_table(report)}'
