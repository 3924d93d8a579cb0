"""Rounds over a ticket window, over real gRPC + mTLS: parties whose exports hold two
weeks of tickets put only the round's week into its totals, and charge their own DP
ledger for every week the window touches."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from aggregator.service import RunningAggregator
from blindsum.bundle import load_bundle
from blindsum.model import DpMode, DpSpec, Mode, OpenRoundSpec, Report, RoundState, RoundView
from blindsum.window import TicketWindow, parse_dates, parse_week
from party.node import LEDGER_FILE, PartyNode
from party.pipeline import TicketSource, tickets_source
from party.privacy import PartyLedger
from tests.conftest import Deployment

PARTIES = ("team-a", "team-b", "team-c")
WEEK_A = parse_week("2026-W46")
WEEK_B = parse_week("2026-W47")
HEADER = "ticket_id,created_date,status,region\n"

#: Per party and week: (APAC tickets, of which escalated, EMEA tickets).
COUNTS = {
    "team-a": {"A": (4, 1, 2), "B": (9, 0, 5)},
    "team-b": {"A": (3, 0, 1), "B": (6, 4, 7)},
    "team-c": {"A": (5, 2, 3), "B": (2, 1, 8)},
}


def _rows(prefix: str, day: str, counts: tuple[int, int, int]) -> list[str]:
    apac, escalated, emea = counts
    rows = [
        f"{prefix}-P{i},{day} 1{i % 10}:00:00,{'Escalated' if i < escalated else 'Resolved'},APAC"
        for i in range(apac)
    ]
    rows += [f"{prefix}-E{i},{day} 09:30:00,Resolved,EMEA" for i in range(emea)]
    return rows


def _write_export(path: Path, name: str) -> TicketSource:
    """One export holding both weeks: week A's tickets on its Wednesday, week B's on its
    Monday (the first day of the window after A's: the end of A is exclusive)."""
    rows = _rows(f"{name}-a", "2026-11-11", COUNTS[name]["A"])
    rows += _rows(f"{name}-b", "2026-11-16", COUNTS[name]["B"])
    path.write_text(HEADER + "\n".join(rows) + "\n")
    return TicketSource(str(path), quarantine=path.with_suffix(".quarantine.jsonl"))


async def _run(
    deployment: Deployment,
    aggregator: RunningAggregator,
    exports: dict[str, TicketSource],
    window: TicketWindow,
    round_id: str,
    dp: DpSpec | None = None,
) -> Report:
    view = await aggregator.manager.open_round(
        OpenRoundSpec(
            mode=Mode.SECAGG,
            parties=PARTIES,
            round_id=round_id,
            window_start_ms=window.start_ms,
            window_end_ms=window.end_ms,
            dp=dp,
        )
    )
    assert (view.window_start_ms, view.window_end_ms) == (window.start_ms, window.end_ms)

    async def one(name: str) -> RoundView:
        bundle = load_bundle(deployment.bundle(name))
        bundle = replace(bundle, config=replace(bundle.config, poll_interval_s=0.05))
        node = PartyNode(bundle, address=f"127.0.0.1:{aggregator.port}")
        source = tickets_source(exports[name], deployment.bundle(name) / "party.secret")
        try:
            return await node.run_round(view.round_id, source)
        finally:
            await node.close()

    results = await asyncio.wait_for(asyncio.gather(*(one(n) for n in PARTIES)), timeout=300)
    assert all(r.state is RoundState.COMPLETE for r in results), results
    return aggregator.manager.report(view.round_id)


def _totals(report: Report, region: str) -> dict[str, int | None]:
    found = next(r for r in report.regions if r.region == region)
    return {c.metric: c.value for c in found.cells if c.metric in ("tickets", "escalated")}


def _expected(week: str, index: int) -> int:
    return sum(COUNTS[name][week][index] for name in PARTIES)


async def test_a_round_counts_only_the_tickets_of_its_window(
    deployment: Deployment, aggregator: RunningAggregator, tmp_path: Path
) -> None:
    exports = {n: _write_export(tmp_path / f"{n}.csv", n) for n in PARTIES}
    report = await _run(deployment, aggregator, exports, WEEK_A, "week-a")
    # DP is off in the tests' config: the totals are exact.
    assert _totals(report, "APAC") == {"tickets": _expected("A", 0), "escalated": 3}
    assert _totals(report, "EMEA") == {"tickets": _expected("A", 2), "escalated": 0}
    # The same exports, the next week's round: only week B's tickets.
    report = await _run(deployment, aggregator, exports, WEEK_B, "week-b")
    assert _totals(report, "APAC") == {"tickets": _expected("B", 0), "escalated": 5}
    assert _totals(report, "EMEA") == {"tickets": _expected("B", 2), "escalated": 0}
    # Rows of the other week were counted, not quarantined.
    assert all(s.quarantine_target.read_text() == "" for s in exports.values())


async def test_a_window_over_two_weeks_counts_both_and_charges_both(
    deployment: Deployment, aggregator: RunningAggregator, tmp_path: Path
) -> None:
    exports = {n: _write_export(tmp_path / f"{n}.csv", n) for n in PARTIES}
    # Thursday of week A to Thursday of week B: both batches of tickets are in it.
    window = parse_dates("2026-11-05", "2026-11-19")
    report = await _run(
        deployment,
        aggregator,
        exports,
        window,
        "two-weeks",
        dp=DpSpec(mode=DpMode.CENTRAL, rho=0.5),
    )
    apac = _totals(report, "APAC")["tickets"]
    assert apac is not None
    noise_sd = next(
        c.noise_sd
        for r in report.regions
        if r.region == "APAC"
        for c in r.cells
        if c.metric == "tickets"
    )
    assert abs(apac - (_expected("A", 0) + _expected("B", 0))) <= 6 * noise_sd
    # The aggregator's ledger takes the week the window starts in; each party charged
    # its own ledger for every ISO week the window overlaps.
    assert report.dp.window == "2026-W45"
    assert window.iso_weeks() == ("2026-W45", "2026-W46", "2026-W47")
    for name in PARTIES:
        ledger = PartyLedger(deployment.bundle(name) / "state" / LEDGER_FILE)
        for week in window.iso_weeks():
            assert ledger.spent(week) == pytest.approx(0.5), (name, week)
