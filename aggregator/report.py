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

from aggregator.stats import STATISTICS, decimals_of, is_not_collected, label_of
from blindsum import reportdoc
from blindsum.errors import InvalidArgument
from blindsum.model import (
    Cell,
    CellStatus,
    DpMode,
    Flag,
    FlagKind,
    RegionResult,
    Report,
    Severity,
    Statistic,
)
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


#: What a statistic the schema has no metric for shows, in every format.
NOT_COLLECTED_TEXT = "not collected"


def rule_name(flag: Flag) -> str:
    """The flag's badge: which rule it is and how bad ("SLO breach", "change watch")."""
    rule = "SLO" if flag.kind is FlagKind.SLO else "change"
    return f"{rule} {flag.severity.value}"


def _lower_label(name: str) -> str:
    """A statistic's label inside a sentence: "escalation rate", but "CSAT", "NPS"."""
    label = label_of(name)
    return label if label[1:2].isupper() else label[:1].lower() + label[1:]


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _unique_labels(flags: list[Flag]) -> list[str]:
    out: list[str] = []
    for flag in flags:
        label = _lower_label(flag.statistic)
        if label not in out:
            out.append(label)
    return out


def _region_clause(region: RegionResult) -> str:
    """What the region's flags say, as one clause: "EMEA breaches the escalation rate SLO"."""
    slo = [f for f in region.flags if f.kind is FlagKind.SLO and f.severity is Severity.BREACH]
    change = [
        f for f in region.flags if f.kind is FlagKind.MOVEMENT and f.severity is Severity.BREACH
    ]
    watch = [f for f in region.flags if f.severity is Severity.WATCH]
    pieces = []
    if slo:
        labels = _unique_labels(slo)
        pieces.append(f"breaches the {_and(labels)} SLO{'s' if len(labels) > 1 else ''}")
    if change:
        pieces.append(f"has a change breach in {_and(_unique_labels(change))}")
    if watch:
        pieces.append(f"is on watch for {_and(_unique_labels(watch))}")
    return f"{region.region} {' and '.join(pieces)}"


def headline(report: Report) -> str:
    """One sentence a reader sees first: how many regions were released, which breach
    what, which are suppressed, or plainly that nothing was released."""
    k = report.min_contributors
    released = [r for r in report.regions if not r.suppressed]
    suppressed = [r.region for r in report.regions if r.suppressed]
    if not released:
        if not suppressed:
            return "Nothing released: the report has no regions."
        return (
            f"Nothing released: every region ({_and(suppressed)}) had fewer than {k}"
            " contributing parties, so no statistics were computed and no flags checked."
        )
    parts = [f"{len(released)} of {len(report.regions)} regions released"]
    flagged = [r for r in released if r.flags]
    # Regions with a breach first, then those only on watch; otherwise report order.
    flagged.sort(key=lambda r: all(f.severity is Severity.WATCH for f in r.flags))
    parts += [_region_clause(r) for r in flagged]
    if not flagged:
        parts.append("no service failures flagged")
    if suppressed:
        parts.append(f"{_and(suppressed)} suppressed (fewer than {k} parties)")
    return "; ".join(parts) + "."


def intervals_line(report: Report) -> str:
    """What the intervals next to the values mean, for this report's DP mode."""
    level = f"{(report.lineage.confidence if report.lineage else 0.95) * 100:g}%"
    merged = (
        "where a percentile or a CSAT mean rests on a merged histogram bin, the interval"
        " also covers that bin's whole range"
    )
    if report.dp.mode is DpMode.OFF:
        return (
            "Intervals: differential privacy is off, so released numbers are exact and an"
            f" interval is just the value, except that {merged}."
        )
    return (
        f"Intervals: each value has a {level} interval (low-high) for the privacy noise"
        " added to protect customers, not for week-to-week variation in the tickets"
        f" themselves; {merged}."
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
    if is_not_collected(stat):
        return NOT_COLLECTED_TEXT
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


def _not_collected(report: Report) -> set[str]:
    """Statistics the report's schema cannot give (the same in every released region)."""
    return {s.name for r in report.regions for s in r.stats if is_not_collected(s)}


def _table(report: Report) -> str:
    out = [headline(report), summary_line(report), dp_line(report), intervals_line(report), ""]
    flagged = [(r.region, f) for r in report.regions for f in r.flags]
    if all(r.suppressed for r in report.regions):
        out.append("FLAGS: none checked, because nothing was released")
    else:
        out.append("FLAGS" if flagged else "FLAGS: no service failures flagged")
    for name, flag in flagged:
        out.append(f"  [{rule_name(flag).upper()}] {name}: {flag.reason}")
    out.append("")
    missing = _not_collected(report)
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
        row = [label]
        for region, stat in zip(report.regions, by_region, strict=True):
            if spec.name in missing:
                row.append(NOT_COLLECTED_TEXT)
            elif region.suppressed:
                row.append("suppressed")
            else:
                row.append("" if stat is None else format_stat(stat))
        rows.append(row)
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
                    _stat_status(s),
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


def _stat_status(stat: Statistic) -> str:
    """A statistic's CSV status: released, unavailable (measured but not computable this
    time: withheld or too noisy), or not_collected (the schema has no metric for it)."""
    if is_not_collected(stat):
        return "not_collected"
    return "released" if stat.value is not None else "unavailable"


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"
