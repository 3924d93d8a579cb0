"""The self-contained HTML report: content, escaping, offline-ness and determinism.

``build_sample_report`` is a hand-built but realistic release (three regions, one of them
suppressed, distributed DP with noise sds, flags with a breach, merged and suppressed
bins, a three-round trend, lineage); the browser test renders the same report.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest

from aggregator.release import ReleaseInput, ReleasePolicy, build_report
from aggregator.report import headline, render
from aggregator.report_html import CHARTS, render_html
from aggregator.stats import derive_stats
from blindsum import reportdoc
from blindsum.errors import InvalidArgument
from blindsum.model import (
    Cell,
    CellStatus,
    DpMode,
    DpRelease,
    DpSpec,
    Flag,
    FlagKind,
    Lineage,
    MetricNoise,
    Mode,
    RegionResult,
    Report,
    Severity,
    Slo,
    SloKind,
    Statistic,
    TrendPoint,
)
from blindsum.schema import Schema

HOSTILE_PARTY = "acme <script>alert(1)</script> & co"
BREACH_REASON = (
    "Escalation rate 21.4% (95% interval 19.8-23.0%) is above the 15% SLO <by> 6.4 points"
    " & more than the noise explains."
)
WATCH_REASON = (
    "CSAT mean fell to 3.92 from 4.31 (mean of the last 2 releases), -0.39; more than the"
    " 0.3 tolerance but within the DP noise (\u00b10.12)."
)
SCHEMA_ID = "3f1c9a0e5b7d2c4a6e8f0b1d3c5a7e9f2b4d6c8a0e1f3b5d7c9a2e4f6b8d0c1a"

_CSAT_EDGES = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)
_FIRST_RESPONSE_EDGES = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 24.0, 48.0)
_RESOLUTION_EDGES = (0.0, 1.0, 4.0, 8.0, 24.0, 48.0, 72.0, 168.0, 336.0)


def _g(x: float) -> str:
    return f"{x:g}"


def _histogram(
    metric: str,
    edges: Sequence[float],
    values: Sequence[int],
    sd: float,
    *,
    merged: Sequence[tuple[int, int]] = (),
    suppressed: Sequence[int] = (),
) -> list[Cell]:
    """Cells of one histogram after the cell rule: ``merged`` are (first, last) bin
    indices joined into one MERGED cell; ``suppressed`` bins are withheld."""
    cells: list[Cell] = []
    i = 0
    spans = {first: last for first, last in merged}
    while i < len(values):
        last = spans.get(i, i)
        lo, hi = edges[i], edges[last + 1]
        label = f"{metric}[{_g(lo)},{_g(hi)})"
        if last > i:
            value = sum(values[i : last + 1])
            noise = sd * (last - i + 1) ** 0.5
            cells.append(Cell(label, value, 1, noise, CellStatus.MERGED, metric, lo, hi))
        elif i in suppressed:
            cells.append(Cell(label, None, 1, sd, CellStatus.SUPPRESSED, metric, lo, hi))
        else:
            cells.append(Cell(label, values[i], 1, sd, CellStatus.RELEASED, metric, lo, hi))
        i = last + 1
    return cells


def _counts(**values: int) -> list[Cell]:
    return [Cell(name, v, 1, 4.2, CellStatus.RELEASED, name) for name, v in values.items()]


def _trend(stat: str, points: Sequence[tuple[float, float, float]]) -> list[TrendPoint]:
    rounds = (
        ("round-2026-w42", 1792400400000, "2026-W43"),
        ("round-2026-w43", 1793005200000, "2026-W44"),
        ("round-2026-w44", 1793610000000, "2026-W45"),
    )
    return [
        TrendPoint(rid, ms, stat, value, low, high, window)
        for (rid, ms, window), (value, low, high) in zip(rounds, points, strict=True)
    ]


def _apac() -> RegionResult:
    cells = _counts(tickets=1840, replied=612)
    cells += _histogram(
        "csat", _CSAT_EDGES, [4, 7, 58, 201, 342], 4.2, merged=[(0, 1)]
    )  # 1 and 2 merged: 4 < min_cell
    cells.append(Cell("csat_sum", 2530, 1, 10.5, CellStatus.RELEASED, "csat_sum"))
    cells += _counts(escalated=166, resolved=1702)
    cells += _histogram(
        "first_response_hours", _FIRST_RESPONSE_EDGES, [420, 510, 380, 260, 150, 90, 30], 4.2
    )
    cells += _histogram(
        "resolution_hours",
        _RESOLUTION_EDGES,
        [160, 410, 380, 420, 190, 90, 48, 4],
        4.2,
        merged=[(6, 7)],
    )
    cells.append(
        Cell(
            "resolution_hours_sum", 312455, 10, 4100.0, CellStatus.RELEASED, "resolution_hours_sum"
        )
    )
    stats = (
        Statistic("csat_mean", 4.1341, 4.1012, 4.1670, "score"),
        Statistic("pct_satisfied", 88.73, 86.1, 91.2, "%"),
        Statistic("nps", None, unit="score", note="no NPS responses"),
        Statistic("escalation_rate", 9.02, 8.4, 9.7, "%"),
        Statistic("first_response_p50", 1.18, 1.1, 1.27, "hours"),
        Statistic("first_response_p90", 7.64, 7.1, 8.3, "hours"),
        Statistic("resolution_p50", 12.3, 11.4, 13.1, "hours"),
        Statistic("resolution_p90", 58.2, 54.0, 63.7, "hours"),
    )
    flags = (Flag(FlagKind.MOVEMENT, Severity.WATCH, "csat_mean", 4.13, 0.3, WATCH_REASON),)
    trend = _trend("escalation_rate", [(8.1, 7.4, 8.8), (8.6, 7.9, 9.3), (9.02, 8.4, 9.7)])
    trend += _trend("csat_mean", [(4.31, 4.27, 4.35), (4.3, 4.26, 4.34), (4.1341, 4.1012, 4.167)])
    return RegionResult("APAC", False, 4, tuple(cells), stats, flags, tuple(trend))


def _emea() -> RegionResult:
    cells = _counts(tickets=2210, replied=803)
    cells += _histogram(
        "csat", _CSAT_EDGES, [6, 9, 120, 301, 367], 4.2, suppressed=[0, 1]
    )  # SUPPRESS rule with complementary suppression
    cells.append(Cell("csat_sum", 3150, 1, 10.5, CellStatus.RELEASED, "csat_sum"))
    cells += _counts(escalated=473, resolved=2050)
    cells += _histogram(
        "first_response_hours", _FIRST_RESPONSE_EDGES, [380, 560, 520, 390, 220, 110, 30], 4.2
    )
    cells += _histogram(
        "resolution_hours", _RESOLUTION_EDGES, [120, 300, 350, 520, 330, 230, 170, 30], 4.2
    )
    cells.append(
        Cell(
            "resolution_hours_sum", 712040, 10, 4100.0, CellStatus.RELEASED, "resolution_hours_sum"
        )
    )
    stats = (
        Statistic("csat_mean", 3.9221, 3.89, 3.95, "score"),
        Statistic("pct_satisfied", 83.1, 80.5, 85.6, "%"),
        Statistic("nps", 31.25, 24.0, 38.5, "score"),
        Statistic("escalation_rate", 21.403, 19.8, 23.0, "%"),
        Statistic("first_response_p50", 1.4, 1.3, 1.5, "hours"),
        Statistic("first_response_p90", 9.1, 8.4, 9.9, "hours"),
        Statistic("resolution_p50", 22.9, 21.6, 24.1, "hours"),
        Statistic("resolution_p90", 131.5, 120.0, 144.0, "hours"),
    )
    flags = (
        Flag(FlagKind.SLO, Severity.BREACH, "escalation_rate", 21.403, 15.0, BREACH_REASON),
        Flag(
            FlagKind.SLO,
            Severity.BREACH,
            "resolution_p90",
            131.5,
            72.0,
            "Resolution time, 90th percentile 131.5 h (95% interval 120.0-144.0 h) is above"
            " the 72 h SLO.",
        ),
    )
    trend = _trend("escalation_rate", [(12.2, 11.3, 13.1), (15.9, 14.8, 17.0), (21.403, 19.8, 23)])
    trend += _trend("csat_mean", [(4.02, 3.99, 4.05), (3.98, 3.95, 4.01), (3.9221, 3.89, 3.95)])
    return RegionResult("EMEA", False, 5, tuple(cells), stats, flags, tuple(trend))


def build_sample_report() -> Report:
    """A realistic released report exercising every section of the HTML page."""
    noise = (
        MetricNoise("tickets", 5, 5, 4.2, 0.0625),
        MetricNoise("csat", 5, 5, 4.2, 0.0625),
        MetricNoise("csat_sum", 25, 25, 10.5, 0.0156),
        MetricNoise("resolution_hours_sum", 36000, 36000, 4100.0, 0.0156),
    )
    return Report(
        round_id="round-2026-w44",
        schema_id=SCHEMA_ID,
        mode=Mode.SECAGG,
        regions=(_apac(), _emea(), RegionResult("Americas", True, 0)),
        min_contributors=3,
        included_parties=("team-alpha", "team-beta", HOSTILE_PARTY, "team-delta", "team-gamma"),
        released_ms=1793610000000,
        dp=DpRelease(
            mode=DpMode.DISTRIBUTED,
            rho=0.25,
            epsilon=4.1732,
            delta=1e-6,
            rho_vs_aggregator=0.3125,
            campaign="support-kpis",
            window="2026-W45",
            budget_rho=2.0,
            spent_rho=0.75,
            expected_parties=5,
            noisy_parties=4,
            noise=noise,
        ),
        lineage=Lineage(
            software_version="0.1.0",
            anonymization_rules="anon-rules-v3",
            schema_name="support-kpis",
            schema_version=1,
            min_cell=10,
            confidence=0.95,
        ),
        slos=(
            Slo("escalation_rate", SloKind.MAX, 15.0),
            Slo("resolution_p90", SloKind.MAX, 72.0),
            Slo("csat_mean", SloKind.MIN, 3.5),
        ),
    )


# --------------------------------------------------------------------------- helpers

_VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "wbr", "source"}
_SVG_LEAVES = {"line", "rect", "circle", "polygon", "polyline", "path"}


class _TagChecker(HTMLParser):
    """Records tags, attributes and nesting errors of a document."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.attrs: list[tuple[str, str, str]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.attrs += [(tag, k, v or "") for k, v in attrs]
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.attrs += [(tag, k, v or "") for k, v in attrs]

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> (open: {self.stack[-3:]})")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: str) -> _TagChecker:
    checker = _TagChecker()
    checker.feed(page)
    checker.close()
    return checker


def _section(page: str, heading: str) -> str:
    """The page's text from ``<h2>heading</h2>`` to the next h2."""
    start = page.index(f"<h2>{heading}</h2>")
    end = page.find("<h2>", start + 1)
    return page[start : end if end != -1 else len(page)]


# --------------------------------------------------------------------------- tests


def test_page_is_well_formed_html5_with_sections_in_order() -> None:
    page = render_html(build_sample_report())
    assert page.startswith("<!DOCTYPE html>\n")
    checker = _parse(page)
    assert checker.errors == []
    assert checker.stack == []
    positions = [
        page.index(h)
        for h in (
            "<h1>",
            '<p class="headline">',
            '<p class="intervals">',
            '<p class="summary">',
            "<h2>Flags</h2>",
            "<h2>Key statistics</h2>",
            "<h2>Charts</h2>",
            "<h2>Released cells</h2>",
            "<h2>Lineage</h2>",
        )
    ]
    assert positions == sorted(positions)


def test_summary_line_names_round_mode_time_parties_and_k() -> None:
    page = render_html(build_sample_report())
    summary = page[page.index('<p class="summary">') :].split("</p>", 1)[0]
    assert "round-2026-w44" in summary
    assert "mode secagg" in summary
    assert "released 2026-11-02 09:00 UTC" in summary
    assert "5 parties included" in summary
    assert "team-alpha" in summary
    assert "k = 3" in summary


def test_nothing_can_be_loaded_from_outside() -> None:
    page = render_html(build_sample_report())
    assert "http://" not in page
    assert "https://" not in page
    assert "//" not in page.replace("<!DOCTYPE", "")  # no protocol-relative URLs either
    for tag, name, value in _parse(page).attrs:
        if name in ("src", "href", "xlink:href", "action", "srcset"):
            assert value.startswith("data:"), (tag, name, value)
    assert "<script" not in page.lower()
    assert "<link" not in page.lower()
    assert "@import" not in page
    assert "@font-face" not in page
    # Every url(...) is a same-document pattern reference.
    assert all(ref.startswith("#") for ref in re.findall(r"url\(([^)]*)\)", page))
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', page)
    assert csp is not None
    policy = csp.group(1)
    assert "default-src 'none'" in policy
    assert "style-src 'unsafe-inline'" in policy
    assert "img-src data:" in policy
    assert page.index("Content-Security-Policy") < page.index("<style>")


def _chart(page: str, name: str, layout: str = "wide") -> str:
    found = re.search(rf'data-chart="{name}" data-layout="{layout}".*?</svg>', page, re.S)
    assert found is not None, (name, layout)
    return found.group(0)


def test_four_charts_each_drawn_for_a_wide_and_a_narrow_screen() -> None:
    page = render_html(build_sample_report())
    svgs = re.findall(r'<svg class="chart" data-chart="([^"]+)" data-layout="(\w+)"', page)
    assert [n for n, layout in svgs if layout == "wide"] == list(CHARTS)
    assert [n for n, layout in svgs if layout == "narrow"] == list(CHARTS)
    for name in CHARTS:
        for layout, width in (("wide", 960), ("narrow", 340)):
            body = re.search(
                rf'<svg class="chart" data-chart="{name}" data-layout="{layout}".*?</svg>',
                page,
                re.S,
            )
            assert body is not None
            svg = body.group(0)
            assert f'width="{width}"' in svg and f'viewBox="0 0 {width} ' in svg
            assert re.search(r"^<svg[^>]*>\n<title>[^<]+</title>", svg), name
            assert svg.count("<text") >= 10, name
            # No text drawn under 11 units (shown at >= 10 px: see the browser test).
            sizes = [int(size) for size in re.findall(r'<text [^>]*font-size="(\d+)"', svg)]
            assert min(sizes) >= 11, (name, layout)
            # Pattern ids are unique per layout: a fill never points into the other one.
            for ref in re.findall(r"url\(#([^)]*)\)", svg):
                assert ref.startswith(f"{name}-{layout}-"), ref
    csat = _chart(page, "csat-distribution")
    assert "CSAT score" in csat
    assert "share of CSAT answers (%)" in csat
    assert "suppressed (too few tickets)" in csat  # legend


def test_csat_chart_spans_merged_bins_and_marks_suppressed_ones() -> None:
    page = render_html(build_sample_report())
    chart = _chart(page, "csat-distribution")
    # APAC: bins 1 and 2 merged into one hatched bar: 11 of 612 answers = 1.8%.
    assert "<title>1-3: 1.8% (merged)</title>" in chart
    assert 'fill="url(#csat-distribution-wide-merged)"' in chart
    # EMEA: two suppressed bins, each drawn as a hatched column with the word.
    assert chart.count(">suppressed</text>") == 2
    # Americas: the whole region is suppressed.
    assert ">suppressed: fewer than</text>" in chart  # on two lines in a panel
    assert ">3 contributing parties</text>" in chart
    # Shares are of the CSAT answers (the histogram's total): 342 of 612 = 55.9%.
    assert ">55.9%</text>" in chart


ROOT = Path(__file__).resolve().parents[2]


def _panel_shares(chart: str, regions: Sequence[str]) -> dict[str, list[float]]:
    """Each region panel's bar shares, read from the bars' tooltips."""
    bounds = [chart.index(f">{region}</text>") for region in regions] + [len(chart)]
    return {
        region: [float(x) for x in re.findall(r"<title>[^<:]+: ([\d.]+)%", chart[a:b])]
        for region, a, b in zip(regions, bounds, bounds[1:], strict=False)
    }


def test_csat_chart_shares_are_of_csat_answers_and_add_up_to_100_per_region() -> None:
    report = build_sample_report()
    # Tickets with a first reply are not survey answers: changing them changes nothing.
    regions = tuple(
        replace(
            r,
            cells=tuple(
                replace(c, value=5000) if c.metric in ("replied", "responses") else c
                for c in r.cells
            ),
        )
        for r in report.regions
    )
    for page in (render_html(report), render_html(replace(report, regions=regions))):
        for layout in ("wide", "narrow"):
            shares = _panel_shares(_chart(page, "csat-distribution", layout), ("APAC", "EMEA"))
            assert shares["APAC"] == [1.8, 9.5, 32.8, 55.9]
            assert shares["EMEA"] == [15.2, 38.2, 46.6]  # of 788 released answers
            for region, values in shares.items():
                assert abs(sum(values) - 100.0) <= 0.15, region
        # Bins 4 and 5 are the satisfied share, as derive_stats computes it from the
        # same released cells for the statistics table.
        apac = _panel_shares(_chart(page, "csat-distribution"), ("APAC", "EMEA"))["APAC"]
        assert apac[-2:] == [32.8, 55.9]
        apac_region = next(r for r in report.regions if r.region == "APAC")
        # The sample has no NPS cells: derive with the default schema minus its NPS metric.
        toml = (ROOT / "blindsum" / "schemas" / "default.toml").read_text()
        no_nps = Schema.from_toml(
            re.sub(r'\[\[metrics\]\]\nname = "nps"\n(?:[^\[].*\n)*', "", toml)
        )
        derived = {st.name: st for st in derive_stats(no_nps, apac_region.cells)}
        satisfied = derived["pct_satisfied"].value
        assert satisfied is not None and abs(sum(apac[-2:]) - satisfied) <= 0.1
        resolution = _panel_shares(_chart(page, "resolution-distribution"), ("APAC", "EMEA"))
        for region, values in resolution.items():
            assert abs(sum(values) - 100.0) <= 0.25, region


def test_resolution_chart_uses_labelled_equal_width_categories() -> None:
    page = render_html(build_sample_report())
    chart = _chart(page, "resolution-distribution")
    for label in ("0\u20131", "1\u20134", "24\u201348", "168+"):
        assert f">{label}</text>" in chart
    assert "<title>72-336: 3.1% (merged)</title>" in chart  # (48 + 4) / 1702 binned


def test_escalation_chart_has_slo_line_whiskers_and_values() -> None:
    page = render_html(build_sample_report())
    chart = _chart(page, "escalation-vs-slo")
    assert 'stroke-dasharray="7 4"' in chart
    assert "SLO \u2264 15.0%" in chart
    assert ">21.4%</text>" in chart
    assert ">9.0%</text>" in chart
    # The flag under EMEA names its rule; no bare "breach / breach".
    assert ">SLO breach</text>" in chart
    assert ">breach</text>" not in chart and " / " not in chart


def test_trend_chart_draws_a_line_per_region_with_three_points() -> None:
    page = render_html(build_sample_report())
    chart = _chart(page, "trend")
    assert chart.count("<polyline") == 4  # 2 regions x 2 statistics
    assert "Only one release so far" not in chart
    assert "EMEA, 2026-W43 (round round-2026-w42): 12.2%" in chart
    assert "APAC, 2026-W45 (round round-2026-w44): 4.13" in chart
    # The caption says which round and date each tick of the x axis is.
    assert "2026-W43: round round-2026-w42, released 2026-10-19 09:00 UTC" in page
    assert "2026-W45 (this release): round round-2026-w44, released 2026-11-02" in page


def _axis_labels(chart: str) -> list[str]:
    """The trend's x tick labels: texts right under a panel, in order, per panel."""
    return re.findall(r">(\d{4}-(?:W\d\d|Q\d)(?: \d\d-\d\d)?)</text>", chart)


def test_trend_axis_names_each_release_by_its_window() -> None:
    page = render_html(build_sample_report())
    for layout in ("wide", "narrow"):
        chart = _chart(page, "trend", layout)
        weeks = ["2026-W43", "2026-W44", "2026-W45"]
        assert _axis_labels(chart) == weeks + weeks  # one axis per panel
        assert ">this</text>" not in chart and ">#1</text>" not in chart
        assert ">release (DP window)</text>" in chart


def test_trend_axis_without_windows_uses_iso_weeks_then_dates() -> None:
    report = build_sample_report()
    old = tuple(
        replace(r, trend=tuple(replace(p, window=None) for p in r.trend)) for r in report.regions
    )
    # Trends stored before windows were recorded: the ISO week of each release date.
    chart = _chart(render_html(replace(report, regions=old)), "trend")
    assert _axis_labels(chart)[:3] == ["2026-W43", "2026-W44", "2026-W45"]
    # Two releases in one window: the date tells them apart.
    same = tuple(
        replace(r, trend=tuple(replace(p, window="2026-Q4") for p in r.trend))
        for r in report.regions
    )
    chart = _chart(render_html(replace(report, regions=same)), "trend")
    assert _axis_labels(chart)[:3] == ["2026-Q4 10-19", "2026-Q4 10-26", "2026-Q4 11-02"]


def test_trend_with_one_round_says_so() -> None:
    report = build_sample_report()
    regions = tuple(
        replace(r, trend=tuple(p for p in r.trend if p.round_id == report.round_id))
        for r in report.regions
    )
    page = render_html(replace(report, regions=regions))
    assert "Only one release so far" in page
    assert "<polyline" not in page


def test_flags_show_severity_kind_and_escaped_reasons() -> None:
    page = render_html(build_sample_report())
    flags = _section(page, "Flags")
    assert "Escalation rate 21.4% (95% interval 19.8-23.0%) is above the 15% SLO &lt;by&gt;" in (
        flags
    )
    assert "&amp; more than the noise explains." in flags
    assert "CSAT mean fell to 3.92 from 4.31" in flags
    # Every badge names its rule: never a bare "BREACH" a reader cannot place.
    assert flags.count('class="badge breach">SLO breach</span>') == 2
    assert flags.count('class="badge watch">change watch</span>') == 1
    assert ">BREACH<" not in flags and ">WATCH<" not in flags
    assert "No service failures flagged." not in flags
    emea = flags[flags.index("<h3>EMEA</h3>") :]
    assert emea.index("SLO breach") < emea.index("<h3>Americas</h3>")
    assert "suppressed: fewer than 3 contributing parties" in flags


def test_no_flags_says_no_service_failures_flagged() -> None:
    report = build_sample_report()
    regions = tuple(replace(r, flags=()) for r in report.regions)
    flags = _section(render_html(replace(report, regions=regions)), "Flags")
    assert '<p class="ok">No service failures flagged.</p>' in flags
    assert "BREACH" not in flags.replace("<strong>Breach</strong>", "")


def test_key_statistics_are_rounded_with_intervals() -> None:
    table = _section(render_html(build_sample_report()), "Key statistics")
    assert "4.13" in table and "4.10&#8211;4.17" in table  # score: 2 decimals
    assert "21.4%" in table and "19.8&#8211;23.0%" in table  # percent: 1 decimal
    assert "131.5 h" in table and "120.0&#8211;144.0 h" in table  # hours: 1 decimal
    assert "31.2" in table  # NPS: 1 decimal
    assert "no NPS responses" in table
    assert "SLO \u2264 15.0%" in table and "SLO \u2265 3.50" in table
    assert table.count("suppressed: fewer than 3 contributing parties") == 1
    assert "4.1341" not in table


def test_released_cells_table_marks_every_status_and_noise() -> None:
    report = build_sample_report()
    cells = _section(render_html(report), "Released cells")
    total = sum(len(r.cells) for r in report.regions)
    assert cells.count("<tr class=") == total
    assert '<tr class="merged"><td>csat</td><td>csat[1,3)</td><td class="num">11</td>' in cells
    assert "<td>merged: 1&#8211;3</td>" in cells
    assert "<td>merged: 72&#8211;336</td>" in cells
    assert (
        '<tr class="suppressed"><td>csat</td><td>csat[1,2)</td>'
        '<td class="num">&#8212;</td><td>suppressed</td>'
    ) in cells
    assert "<th>Noise sd</th>" in cells
    # Sums are shown in their unit: tenths of an hour -> hours, sd likewise.
    assert '<td class="num">31245.5</td><td>released</td><td class="num">410.0</td>' in cells
    assert "Americas" in cells and "no cells released" in cells


def test_without_dp_there_is_no_noise_column() -> None:
    report = replace(build_sample_report(), dp=DpRelease(DpMode.OFF))
    page = render_html(report)
    assert "<th>Noise sd</th>" not in page
    lineage = _section(page, "Lineage")
    assert "off: released totals are exact" in lineage
    assert "Noise per metric" not in lineage


def test_lineage_lists_provenance_and_privacy_accounting() -> None:
    lineage = _section(render_html(build_sample_report()), "Lineage")
    for expected in (
        SCHEMA_ID,
        "round-2026-w44",
        "secagg",
        "support-kpis v1",
        "APAC 4, EMEA 5, Americas fewer than 3 (suppressed)",
        "distributed",
        "<dd>0.25</dd>",  # rho charged
        "(4.173, 1e-06)",  # (epsilon, delta)
        "rho = 0.3125",  # against the aggregator
        "4 of 5 expected",
        "campaign support-kpis, window 2026-W45: spent 0.75 of 2, left 1.25",
        '<td>resolution_hours_sum</td><td class="num">36000</td><td class="num">4100.0</td>',
        "anon-rules-v3",
        "0.1.0",
        "<dd>95%</dd>",
        "Minimum tickets per bin</dt><dd>10</dd>",
    ):
        assert expected in lineage, expected


def test_central_dp_says_the_aggregator_sees_exact_totals() -> None:
    report = build_sample_report()
    dp = replace(report.dp, mode=DpMode.CENTRAL, rho_vs_aggregator=None)
    lineage = _section(render_html(replace(report, dp=dp)), "Lineage")
    assert "none: in central mode the aggregator sees the exact totals" in lineage
    assert "expected</dd>" not in lineage


def test_hostile_strings_are_escaped_everywhere() -> None:
    report = build_sample_report()
    hostile = '"><script>alert(2)</script>&amp;'
    report = replace(
        report,
        round_id=hostile,
        regions=(replace(report.regions[0], region=hostile), *report.regions[1:]),
        lineage=replace(
            report.lineage or Lineage("", "", "", 1, 0, 0.95), software_version=hostile
        ),
    )
    page = render_html(report)
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page  # the party name
    assert "&quot;&gt;&lt;script&gt;alert(2)&lt;/script&gt;&amp;amp;" in page
    checker = _parse(page)
    assert checker.errors == [] and checker.stack == []
    assert "alert(2)" in "".join(checker.text)  # shown as text, not markup


def test_output_is_deterministic() -> None:
    first = render_html(build_sample_report())
    assert render_html(build_sample_report()) == first
    assert render_html(build_sample_report()) == render_html(build_sample_report())


def test_region_without_stats_or_histograms_still_renders() -> None:
    report = replace(
        build_sample_report(),
        regions=(RegionResult("APAC", False, 3), RegionResult("EMEA", True, 0)),
        slos=(),
        lineage=None,
    )
    page = render_html(report)
    checker = _parse(page)
    assert checker.errors == [] and checker.stack == []
    found = re.findall(r'data-chart="([^"]+)" data-layout="wide"', page)
    assert tuple(found) == CHARTS
    assert "no SLO configured" in page
    assert "No earlier releases of this campaign." in page


def test_non_finite_numbers_never_reach_the_charts() -> None:
    report = build_sample_report()
    nan, inf = float("nan"), float("inf")
    apac = report.regions[0]
    stats = tuple(
        replace(s, value=nan, low=-inf, high=inf) if s.name == "escalation_rate" else s
        for s in apac.stats
    )
    trend = tuple(
        replace(p, value=nan) if p.round_id == "round-2026-w43" else p for p in apac.trend
    )
    report = replace(report, regions=(replace(apac, stats=stats, trend=trend), *report.regions[1:]))
    page = render_html(report)
    assert "nan" not in page.lower()
    assert "inf" not in re.sub(r"info|inferred", "", page.lower())
    assert ">not available</text>" in _chart(page, "escalation-vs-slo")


# ------------------------------------------------------------------ the headline first


def test_headline_opens_the_page_and_the_intervals_follow() -> None:
    page = render_html(build_sample_report())
    after_title = page[page.index("</h1>") + len("</h1>") :].lstrip("\n")
    expected = (
        '<p class="headline">2 of 3 regions released; EMEA breaches the escalation rate and'
        " 90th-percentile resolution time SLOs; APAC is on watch for average CSAT; Americas"
        " suppressed (fewer than 3 parties).</p>"
    )
    assert after_title.startswith(expected)
    rest = after_title[len(expected) :].lstrip("\n")
    assert rest.startswith('<p class="intervals"><strong>What the intervals mean.</strong>')
    assert "95% interval" in rest.split("</p>", 1)[0]
    assert "privacy noise" in rest.split("</p>", 1)[0]
    # Without DP the intervals are the values, except where a merged bin widens them.
    page = render_html(replace(build_sample_report(), dp=DpRelease(DpMode.OFF)))
    intervals = page[page.index('<p class="intervals">') :].split("</p>", 1)[0]
    assert "Differential privacy is off" in intervals and "merged" in intervals


def test_text_report_opens_with_the_headline_and_names_rules() -> None:
    text = render(build_sample_report(), "table")
    lines = text.splitlines()
    assert lines[0] == headline(build_sample_report())
    assert lines[0].startswith("2 of 3 regions released; EMEA breaches")
    assert any(line.startswith("Intervals: each value has a 95% interval") for line in lines)
    assert "[SLO BREACH] EMEA: Escalation rate 21.4%" in text
    assert "[CHANGE WATCH] APAC: CSAT mean fell" in text


def test_headline_with_no_flags_and_with_change_breaches() -> None:
    report = build_sample_report()
    calm = replace(report, regions=tuple(replace(r, flags=()) for r in report.regions))
    assert headline(calm) == (
        "2 of 3 regions released; no service failures flagged; Americas suppressed"
        " (fewer than 3 parties)."
    )
    jump = Flag(FlagKind.MOVEMENT, Severity.BREACH, "escalation_rate", 21.4, 13.0, "jumped")
    apac = replace(report.regions[0], flags=(jump,))
    assert headline(replace(calm, regions=(apac, *calm.regions[1:]))).startswith(
        "2 of 3 regions released; APAC has a change breach in escalation rate;"
    )


# ------------------------------------------------------------------ nothing released


def _nothing_released() -> Report:
    report = build_sample_report()
    return replace(report, regions=tuple(RegionResult(r.region, True, 0) for r in report.regions))


def test_text_report_says_plainly_when_nothing_was_released() -> None:
    text = render(_nothing_released(), "table")
    assert text.splitlines()[0] == (
        "Nothing released: every region (APAC, EMEA and Americas) had fewer than 3"
        " contributing parties, so no statistics were computed and no flags checked."
    )
    assert "FLAGS: none checked, because nothing was released" in text
    assert "no service failures flagged" not in text.lower()


def test_html_says_plainly_when_nothing_was_released() -> None:
    page = render_html(_nothing_released())
    assert '<p class="headline">Nothing released: every region' in page
    flags = _section(page, "Flags")
    assert "Nothing was released" in flags and "no flags were checked" in flags
    assert "No service failures flagged" not in page
    assert "No charts: nothing was released" in _section(page, "Charts")
    checker = _parse(page)
    assert checker.errors == [] and checker.stack == []


# ------------------------------------------------------------------ not collected


def _without_nps() -> Report:
    """The sample as a schema without NPS releases it: the statistic is listed as not
    collected in every released region."""
    report = build_sample_report()
    note = "not collected: the schema has no 'nps' metric of the kind it needs"
    regions = tuple(
        replace(
            r,
            stats=tuple(
                Statistic("nps", None, unit="score", note=note) if s.name == "nps" else s
                for s in r.stats
            ),
        )
        for r in report.regions
    )
    return replace(report, regions=regions)


def test_metric_not_in_the_schema_shows_not_collected_not_suppressed() -> None:
    report = _without_nps()
    table = _section(render_html(report), "Key statistics")
    row = table[table.index(">NPS") :].split("</tr>", 1)[0]
    assert row.count(">not collected</td>") == 3  # Americas too: it is the schema's
    assert "suppressed" not in row
    # A statistic measured but withheld in a region still says so.
    escalation = table[table.index(">Escalation rate") :].split("</tr>", 1)[0]
    assert '<td class="supp">suppressed</td>' in escalation
    text = render(report, "table")
    nps_line = next(line for line in text.splitlines() if line.startswith("NPS"))
    assert nps_line.split()[1:] == ["not", "collected"] * 3
    rows = list(csv.reader(io.StringIO(render(report, "csv"))))
    status = {(r[1], r[3]): r[4] for r in rows[1:]}
    assert status[("APAC", "nps")] == status[("EMEA", "nps")] == "not_collected"
    assert status[("APAC", "csat_mean")] == "released"
    doc = json.loads(render(report, "json"))
    nps = next(s for s in doc["regions"][0]["stats"] if s["name"] == "nps")
    assert nps["value"] is None and nps["note"].startswith("not collected")
    # "No NPS answers" in a schema that has NPS is a different thing.
    sample = _section(render_html(build_sample_report()), "Key statistics")
    assert "not collected" not in sample.replace("<em>Not collected</em>", "")


# ------------------------------------------------------------------ trend windows


def test_trend_windows_round_trip_and_old_documents_read_as_null() -> None:
    report = build_sample_report()
    data = reportdoc.encode(report)
    assert reportdoc.decode(data) == report
    doc = json.loads(data)
    assert doc["regions"][0]["trend"][0]["window"] == "2026-W43"
    for point in doc["regions"][0]["trend"]:
        del point["window"]  # as stored before the key existed
    old = reportdoc.decode(json.dumps(doc).encode())
    assert all(p.window is None for p in old.regions[0].trend)
    doc["regions"][0]["trend"][0]["window"] = 7
    with pytest.raises(InvalidArgument) as err:
        reportdoc.decode(json.dumps(doc).encode())
    assert err.value.field == "report.regions[0].trend[0].window"
    doc["regions"][0]["trend"][0]["window"] = None
    doc["regions"][0]["trend"][0]["weekday"] = "monday"
    with pytest.raises(InvalidArgument, match="unknown key 'weekday'"):
        reportdoc.decode(json.dumps(doc).encode())


def test_release_records_each_releases_window_in_the_trend() -> None:
    schema = Schema.default()
    totals = [0] * schema.vector_length
    for region in schema.regions:
        totals[schema.contributor_index(region)] = 3
        totals[schema.slot_index(region, "tickets")] = 200
        totals[schema.slot_index(region, "escalated")] = 20
        for b, count in enumerate([10, 20, 30, 60, 80]):
            totals[schema.slot_index(region, "csat", b)] = count

    def release(week: int, previous: Sequence[Report]) -> Report:
        given = ReleaseInput(
            schema=schema,
            totals=totals,
            round_id=f"r{week}",
            mode=Mode.SECAGG,
            min_contributors=3,
            included_parties=("a", "b", "c"),
            released_ms=1_793_610_000_000 + week * 604_800_000,
            dp=DpSpec(DpMode.OFF, 0.0, 0, "support-kpis", f"2026-W{45 + week}"),
        )
        return build_report(given, ReleasePolicy(dp_mode=DpMode.OFF), previous=previous)

    first = release(0, ())
    second = release(1, [first])
    trend = second.regions[0].trend
    assert {(p.round_id, p.window) for p in trend} == {("r0", "2026-W45"), ("r1", "2026-W46")}
    chart = _chart(render_html(second), "trend")
    assert _axis_labels(chart)[:2] == ["2026-W45", "2026-W46"]
    # The schema's optional NPS is measured (no answers here), so it is not "not collected".
    assert all(p.statistic != "nps" for p in trend)
