"""DP promises an operator cannot dodge (issue 10): a party's own budget per ISO week of
the tickets a round covers, whatever the campaign or window is called, and no DP-off
round without the party's consent."""

from __future__ import annotations

import json
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from aggregator.service import RunningAggregator
from blindsum.bundle import BUNDLE_CONFIG, PartyConfig
from blindsum.config import dump_config, load_config
from blindsum.errors import FailedPrecondition, InvalidArgument
from blindsum.model import DpMode, DpSpec, RoundState, RoundView, iso_week
from blindsum.window import parse_dates, parse_week
from party.node import LEDGER_FILE
from party.privacy import PartyLedger, check_round_privacy
from tests.conftest import PARTIES, Deployment
from tests.integration.test_rounds_grpc import open_round, party_vector, run_parties


def _withdraw_dp_off_consent(deployment: Deployment) -> None:
    for name in PARTIES:
        path = deployment.bundle(name) / BUNDLE_CONFIG
        path.write_text(dump_config(replace(load_config(path, PartyConfig), allow_dp_off=False)))


async def test_a_renamed_campaign_does_not_reset_the_parties_budget(
    deployment: Deployment, aggregator: RunningAggregator
) -> None:
    """The aggregator's ledger is per campaign and window, both named by the operator;
    each party's own ledger counts the week, so a second campaign name gets nothing."""
    vectors = {n: party_vector(i) for i, n in enumerate(PARTIES)}
    first = await open_round(
        aggregator, dp=DpSpec(mode=DpMode.CENTRAL, rho=1.5, campaign="weekly", window="w1")
    )
    results = await run_parties(deployment, aggregator.port, first.round_id, vectors)
    assert all(
        isinstance(r, RoundView) and r.state is RoundState.COMPLETE for r in results.values()
    )
    renamed = await open_round(
        aggregator, dp=DpSpec(mode=DpMode.CENTRAL, rho=1.5, campaign="weekly-v2", window="w9")
    )
    results = await run_parties(deployment, aggregator.port, renamed.round_id, vectors)
    for name, result in results.items():
        assert isinstance(result, FailedPrecondition), name
        assert "max_rho_per_window 2" in str(result) and result.field == "dp.rho"
    # Refused before anything was sent: not even a key advertisement.
    assert aggregator.manager.view(renamed.round_id).advertised == ()
    # Each party charged the first round once, in the week of the tickets it covers (the
    # default window: the last complete week before the round opened).
    ledger = PartyLedger(deployment.bundle("team-a") / "state" / LEDGER_FILE)
    week = iso_week(aggregator.manager.view(first.round_id).window_start_ms)
    assert ledger.spent(week) == pytest.approx(1.5)


async def test_a_dp_off_round_needs_every_partys_consent(
    deployment: Deployment, aggregator: RunningAggregator
) -> None:
    _withdraw_dp_off_consent(deployment)
    view = await open_round(aggregator, dp=DpSpec(mode=DpMode.OFF))
    vectors = {n: party_vector(i) for i, n in enumerate(PARTIES)}
    results = await run_parties(deployment, aggregator.port, view.round_id, vectors)
    for result in results.values():
        assert isinstance(result, FailedPrecondition)
        assert "allow_dp_off" in str(result)
    assert aggregator.manager.view(view.round_id).advertised == ()


def test_consent_is_checked_before_anything_else() -> None:
    off = DpSpec(mode=DpMode.OFF)
    with pytest.raises(FailedPrecondition, match="allow_dp_off"):
        check_round_privacy(off, min_dp=DpMode.OFF, max_rho=0.0, threshold=3)
    check_round_privacy(off, min_dp=DpMode.OFF, max_rho=0.0, threshold=3, allow_dp_off=True)
    # min_dp still wins over consent.
    with pytest.raises(FailedPrecondition, match="at least central"):
        check_round_privacy(off, min_dp=DpMode.CENTRAL, max_rho=0.0, threshold=3, allow_dp_off=True)


def test_the_ledger_charges_a_round_once_and_refuses_past_the_limit(tmp_path: Path) -> None:
    ledger = PartyLedger(tmp_path / "state" / LEDGER_FILE)
    ledger.charge(round_id="r1", weeks=["2026-W49"], rho=0.5, limit=1.0)
    ledger.charge(round_id="r1", weeks=["2026-W49"], rho=0.5, limit=1.0)  # a retry: no-op
    ledger.charge(round_id="r2", weeks=["2026-W49"], rho=0.5, limit=1.0)  # exactly the limit
    with pytest.raises(FailedPrecondition, match=r"to 1\.5, over its max_rho_per_window 1"):
        ledger.charge(round_id="r3", weeks=["2026-W49"], rho=0.5, limit=1.0)
    ledger.charge(round_id="r4", weeks=["2026-W50"], rho=0.5, limit=1.0)  # a new week
    ledger.charge(round_id="r5", weeks=["2026-W50"], rho=9.0, limit=0.0)  # 0: no cap
    assert ledger.spent("2026-W49") == 1.0 and ledger.spent("2026-W50") == 9.5
    path = tmp_path / "state" / LEDGER_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [e["round_id"] for e in json.loads(path.read_text())["entries"]] == [
        "r1",
        "r2",
        "r4",
        "r5",
    ]
    path.write_text("{not json")
    with pytest.raises(InvalidArgument, match="corrupt"):
        ledger.spent("2026-W49")


def test_a_window_across_two_weeks_charges_both(tmp_path: Path) -> None:
    """A round whose ticket window overlaps two ISO weeks charges its rho to each, so a
    window shifted by a day cannot buy a fresh budget over mostly the same tickets."""
    ledger = PartyLedger(tmp_path / "state" / LEDGER_FILE)
    ledger.charge(round_id="w47", weeks=["2026-W47"], rho=1.0, limit=2.0)
    thursday_to_thursday = parse_dates("2026-11-19", "2026-11-26")
    assert thursday_to_thursday.iso_weeks() == ("2026-W47", "2026-W48")
    ledger.charge(round_id="shifted", weeks=thursday_to_thursday.iso_weeks(), rho=1.0, limit=2.0)
    assert ledger.spent("2026-W47") == 2.0 and ledger.spent("2026-W48") == 1.0
    # W47 is full: a round over W48 alone still fits, one that touches W47 does not, and
    # a refused round charges none of its weeks.
    with pytest.raises(FailedPrecondition) as err:
        ledger.charge(
            round_id="again",
            weeks=parse_dates("2026-11-22", "2026-11-29").iso_weeks(),
            rho=0.5,
            limit=2.0,
        )
    assert "spend in 2026-W47 to 2.5" in str(err.value)
    assert "its tickets span 2026-W47, 2026-W48, and each of those weeks is charged" in str(
        err.value
    )
    assert ledger.spent("2026-W48") == 1.0
    ledger.charge(round_id="w48", weeks=parse_week("2026-W48").iso_weeks(), rho=1.0, limit=2.0)
    assert ledger.spent("2026-W48") == 2.0
    # Charged once per round: a retry of the two-week round is a no-op.
    ledger.charge(round_id="shifted", weeks=thursday_to_thursday.iso_weeks(), rho=1.0, limit=2.0)
    entries = json.loads((tmp_path / "state" / LEDGER_FILE).read_text())["entries"]
    assert [(e["round_id"], e["window"]) for e in entries] == [
        ("w47", "2026-W47"),
        ("shifted", "2026-W47"),
        ("shifted", "2026-W48"),
        ("w48", "2026-W48"),
    ]
