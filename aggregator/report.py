"""Render a released report: terminal table, CSV, JSON (the documented document), HTML.

Rendering is pure: the same :class:`~blindsum.model.Report` always gives the same
text. The aggregator CLI renders reports it reads from its own store; report readers
render the ones they fetch over gRPC.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from datetime import UTC, datetime

from aggregator.stats import STATISTICS, decimals_of
from blindsum import reportdoc
from blindsum.errors import InvalidArgument
from blindsum.model import Cell, CellStatus, DpMode, Report, Statistic
from blindsum.tables import text_table

FORMATS = ("table", "json", "csv", "html")


def render(report: Report, fmt: str) -> str:
    """Render ``report``; the terminal formats drop control characters from every string
    (a fetched report comes from the network and must not move the cursor)."""
    if fmt in ("table", "csv"):
        report = _printable(report)
    if fmt == "json":
        return json.dumps(reportdoc.to_doc(report), indent=2, sort_keys=True) + "\n"
    if fmt == "csv":
        return _csv(report)
    if fmt == "table":
        return _table(report)
    if fmt == "html":
        from aggregator.report_html import render_html  # noqa: PLC0415 - only for html

        return render_html(report)
    raise InvalidArgument(f"must be one of {', '.join(FORMATS)}", field="--format")


def _clean(text: str) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def _printable(report: Report) -> Report:
    regions = tuple(
        replace(
            r,
            region=_clean(r.region),
            cells=tuple(replace(c, slot=_clean(c.slot)) for c in r.cells),
            flags=tuple(replace(f, reason=_clean(f.reason)) for f in r.flags),
        )
        for r in report.regions
    )
    return replace(
        report,
        round_id=_clean(report.round_id),
        included_parties=tuple(_clean(p) for p in report.included_parties),
        regions=regions,
        dp=replace(report.dp, campaign=_clean(report.dp.campaign), window=_clean(report.dp.window)),
    )


def summary_line(report: Report) -> str:
    when = datetime.fromtimestamp(report.released_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"round {report.round_id} ({report.mode.value}), released {when}, "
        f"schema {report.schema_id[:12]}, {len(report.included_parties)} parties included, "
        f"k = {report.min_contributors}"
    )


def dp_line(report: Report) -> str:
    dp = report.dp
    if dp.mode is DpMode.OFF:
        return "differential privacy: off (released totals are exact)"
    against = (
        "the aggregator sees exact totals"
        if dp.rho_vs_aggregator is None
        else f"rho vs the aggregator {dp.rho_vs_aggregator:.4g}"
    )
    return (
        f"differential privacy: {dp.mode.value}, rho {dp.rho:.4g} "
        f"(epsilon {dp.epsilon:.3g} at delta {dp.delta:g}); {against}; "
        f"budget {dp.campaign}/{dp.window}: {dp.spent_rho:.4g} of {dp.budget_rho:.4g} spent, "
        f"{dp.remaining_rho:.4g} left"
    )


def format_stat(stat: Statistic) -> str:
    if stat.value is None:
        return "n/a"
    digits = decimals_of(stat.name, stat.unit)
    text = f"{stat.value:.{digits}f}"
    if stat.low is not None and stat.high is not None and stat.high > stat.low:
        text += f" [{stat.low:.{digits}f}, {stat.high:.{digits}f}]"
    return text


def _cell_text(cell: Cell | None) -> str:
    if cell is None:
        return ""
    if cell.status is CellStatus.SUPPRESSED:
        return "suppressed"
    text = str(cell.display)
    return text + " (merged)" if cell.status is CellStatus.MERGED else text


def _table(report: Report) -> str:
    out = [summary_line(report), dp_line(report), ""]
    flagged = [(r.region, f) for r in report.regions for f in r.flags]
    out.append("FLAGS" if flagged else "FLAGS: no service failures flagged")
    for name, flag in flagged:
        out.append(f"  [{flag.severity.value.upper()}] {name}: {flag.reason}")
    out.append("")
    header = ["statistic", *[r.region for r in report.regions]]
    rows = [
        [
            "contributors",
            *[
                f"<{report.min_contributors} (suppressed)" if r.suppressed else str(r.contributors)
                for r in report.regions
            ],
        ]
    ]
    for spec in STATISTICS:
        by_region = [{s.name: s for s in r.stats}.get(spec.name) for r in report.regions]
        if all(s is None for s in by_region):
            continue
        label = spec.label + {"%": " (%)", "hours": " (h)"}.get(spec.unit, "")
        rows.append([label, *["" if s is None else format_stat(s) for s in by_region]])
    out.append(text_table(header, rows))
    # Rows in schema order: by metric (first appearance), then by bin; merged bins differ
    # between regions, so each region shows only the rows it released.
    order: dict[str, int] = {}
    keyed: dict[str, tuple[int, float, float]] = {}
    for region in report.regions:
        for c in region.cells:
            order.setdefault(c.metric, len(order))
            keyed.setdefault(c.slot, (order[c.metric], c.lo or 0.0, c.hi or 0.0))
    slots = sorted(keyed, key=keyed.__getitem__)
    cell_rows = [
        [slot, *[_cell_text({c.slot: c for c in r.cells}.get(slot)) for r in report.regions]]
        for slot in slots
    ]
    if cell_rows:
        out.append(text_table(["cell", *[r.region for r in report.regions]], cell_rows))
    return "\n".join(out)


def _csv(report: Report) -> str:
    """One row per released cell and per statistic, long format (easy to pivot)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(
        ["round_id", "region", "kind", "name", "status", "value", "low", "high", "noise_sd", "unit"]
    )
    for r in report.regions:
        if r.suppressed:
            writer.writerow(
                [
                    report.round_id,
                    r.region,
                    "region",
                    "contributors",
                    "suppressed",
                    "",
                    "",
                    "",
                    "",
                    "",
                ]
            )
            continue
        writer.writerow(
            [report.round_id, r.region, "region", "contributors", "released", r.contributors]
            + [""] * 4
        )
        for s in r.stats:
            writer.writerow(
                [
                    report.round_id,
                    r.region,
                    "statistic",
                    s.name,
                    "released" if s.value is not None else "unavailable",
                    _num(s.value),
                    _num(s.low),
                    _num(s.high),
                    "",
                    s.unit,
                ]
            )
        for c in r.cells:
            writer.writerow(
                [
                    report.round_id,
                    r.region,
                    "cell",
                    c.slot,
                    c.status.value,
                    "" if c.display is None else c.display,
                    "",
                    "",
                    _num(c.noise_sd / c.scale if c.scale else c.noise_sd),
                    "",
                ]
            )
    return buf.getvalue()


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"
