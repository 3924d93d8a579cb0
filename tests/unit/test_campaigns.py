"""Campaigns (issue 13, item 1): schedules, and the aggregator opening each window's
round exactly once, with an injected clock (no test waits for a schedule)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aggregator.campaigns import Schedule, round_id_for
from aggregator.rounds import RoundManager
from aggregator.store import Store, open_store
from blindsum.errors import AlreadyExists, InvalidArgument, NotFound
from blindsum.model import DpMode, DpSpec, Mode, OpenRoundSpec, RoundState

PARTIES = ("a", "b", "c")
SPEC = OpenRoundSpec(mode=Mode.HE, parties=PARTIES, dp=DpSpec(mode=DpMode.CENTRAL, rho=0.1))


def ms(text: str) -> int:
    """UTC ms of an ISO time with its offset, e.g. '2026-11-30T06:00+01:00'."""
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def utc(at_ms: int) -> str:
    return datetime.fromtimestamp(at_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%MZ")


# ------------------------------------------------------------------ schedules


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("every monday 06:00 Europe/Berlin", "every monday 06:00 Europe/Berlin"),
        ("Every MON 6:00 Europe/Berlin", "every monday 06:00 Europe/Berlin"),
        ("every day 02:30", "every day 02:30 UTC"),
        ("every month on day 1 06:00 UTC", "every month on day 1 06:00 UTC"),
        ("  every sunday 23:59 America/New_York ", "every sunday 23:59 America/New_York"),
    ],
)
def test_schedules_parse_to_one_canonical_form(text: str, canonical: str) -> None:
    parsed = Schedule.parse(text)
    assert str(parsed) == canonical
    assert Schedule.parse(canonical) == parsed


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("weekly", "is not a schedule"),
        ("every funday 06:00", "is not a day of the week"),
        ("every day 24:00", "is not a time of day"),
        ("every day 06:61", "is not a time of day"),
        ("every month on day 31 06:00", "1 to 28"),
        ("every day 06:00 Mars/Olympus", "unknown time zone"),
    ],
)
def test_bad_schedules_are_refused_by_name(text: str, why: str) -> None:
    with pytest.raises(InvalidArgument, match=why) as err:
        Schedule.parse(text)
    assert err.value.field == "schedule"


def test_weekly_fire_times_follow_the_local_clock_across_dst() -> None:
    s = Schedule.parse("every monday 06:00 Europe/Berlin")
    # Winter: 06:00 CET is 05:00 UTC. Summer: 06:00 CEST is 04:00 UTC.
    assert utc(s.last_fire(ms("2026-12-02T12:00+00:00"))) == "2026-11-30T05:00Z"
    assert utc(s.next_fire(ms("2026-12-02T12:00+00:00"))) == "2026-12-07T05:00Z"
    assert utc(s.last_fire(ms("2026-06-03T12:00+00:00"))) == "2026-06-01T04:00Z"
    # The Monday after clocks go forward (29 March 2026).
    assert utc(s.next_fire(ms("2026-03-28T12:00+00:00"))) == "2026-03-30T04:00Z"
    # Exactly at the time: that time is the last fire, the next is a week on.
    at = ms("2026-11-30T06:00+01:00")
    assert s.last_fire(at) == at
    assert s.next_fire(at) == at + 7 * 86_400_000


def test_daily_and_monthly_fire_times() -> None:
    day = Schedule.parse("every day 02:30")
    assert utc(day.last_fire(ms("2026-12-01T02:29+00:00"))) == "2026-11-30T02:30Z"
    assert utc(day.next_fire(ms("2026-12-01T02:29+00:00"))) == "2026-12-01T02:30Z"
    month = Schedule.parse("every month on day 1 06:00 UTC")
    assert utc(month.last_fire(ms("2026-01-01T05:00+00:00"))) == "2025-12-01T06:00Z"
    assert utc(month.next_fire(ms("2026-12-15T00:00+00:00"))) == "2027-01-01T06:00Z"
    assert utc(month.last_fire(ms("2026-03-01T06:00+00:00"))) == "2026-03-01T06:00Z"


# ------------------------------------------------------------------ the runner


class Clock:
    def __init__(self, at: int) -> None:
        self.now = at

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store("sqlite:///db.sqlite", base_dir=tmp_path, create=True)
    for name in PARTIES:
        s.enroll(name, b"not read when a round opens")
    yield s
    s.close()


def manager(store: Store, clock: Clock) -> RoundManager:
    return RoundManager(store, ca_cert_pem=b"", clock_ms=clock)


def tick(m: RoundManager) -> None:
    asyncio.run(m.tick())


def test_a_campaign_opens_each_windows_round_once(store: Store) -> None:
    clock = Clock(ms("2026-11-25T10:00+00:00"))  # a Wednesday
    m = manager(store, clock)
    status = asyncio.run(m.save_campaign("weekly-kpis", "every monday 06:00 Europe/Berlin", SPEC))
    assert utc(status.next_run_ms) == "2026-11-30T05:00Z"
    assert status.last_round_id == ""  # Monday 23 Nov fired before it existed
    tick(m)
    assert store.rounds() == []
    clock.now = ms("2026-11-30T05:00+00:00")
    tick(m)
    rid = "weekly-kpis-20261130T0500Z"
    view = m.view(rid)
    assert view.state is RoundState.OPEN and view.parties == PARTIES
    assert view.dp.campaign == "weekly-kpis"  # the ledger is the campaign's
    listed = asyncio.run(m.list_campaigns())
    assert [(c.campaign.name, c.last_round_id, c.last_round_state) for c in listed] == [
        ("weekly-kpis", rid, "open")
    ]
    # Later ticks, and ticks long after (when the round has timed out), open nothing
    # more for that window.
    for later in ("2026-11-30T05:00:01+00:00", "2026-12-06T23:59+00:00"):
        clock.now = ms(later)
        tick(m)
    assert [r.round_id for r in store.rounds()] == [rid]
    assert m.view(rid).state is RoundState.ABORTED


def test_replicas_open_a_window_once(store: Store) -> None:
    """Two managers on one store (replicas) tick the same window: one round."""
    clock = Clock(ms("2026-11-29T10:00+00:00"))
    a, b = manager(store, clock), manager(store, clock)
    asyncio.run(a.save_campaign("daily", "every day 06:00 UTC", SPEC))
    clock.now = ms("2026-11-30T06:00+00:00")

    async def both() -> None:
        await asyncio.gather(a.run_campaigns(), b.run_campaigns())

    asyncio.run(both())
    tick(b)
    tick(a)
    assert [r.round_id for r in store.rounds()] == ["daily-20261130T0600Z"]


def test_after_downtime_only_the_latest_missed_window_opens(store: Store) -> None:
    clock = Clock(ms("2026-11-01T00:00+00:00"))
    m = manager(store, clock)
    asyncio.run(m.save_campaign("daily", "every day 06:00 UTC", SPEC))
    clock.now = ms("2026-11-05T12:00+00:00")  # four windows passed while it was down
    tick(m)
    assert [r.round_id for r in store.rounds()] == ["daily-20261105T0600Z"]


def test_pause_resume_and_delete(store: Store) -> None:
    clock = Clock(ms("2026-11-29T10:00+00:00"))
    m = manager(store, clock)
    asyncio.run(m.save_campaign("daily", "every day 06:00 UTC", SPEC))
    paused = asyncio.run(m.set_campaign_paused("daily", True))
    assert paused.campaign.paused and paused.next_run_ms == 0
    clock.now = ms("2026-11-30T07:00+00:00")
    tick(m)
    assert store.rounds() == []
    asyncio.run(m.set_campaign_paused("daily", False))
    clock.now += 1_000
    tick(m)  # resumed: this window's round, once
    assert [r.round_id for r in store.rounds()] == ["daily-20261130T0600Z"]
    asyncio.run(m.delete_campaign("daily"))
    clock.now = ms("2026-12-01T07:00+00:00")
    tick(m)
    assert len(store.rounds()) == 1  # deleted: no new rounds; the old one stays
    with pytest.raises(NotFound, match="campaign 'daily' does not exist"):
        asyncio.run(m.delete_campaign("daily"))
    events = [e[2] for e in store.audit_log("")]
    assert events == [
        "campaign_saved",
        "campaign_paused",
        "campaign_resumed",
        "campaign_deleted",
    ]


def test_a_campaign_is_checked_when_saved(store: Store) -> None:
    m = manager(store, Clock(ms("2026-11-29T10:00+00:00")))
    asyncio.run(m.save_campaign("x", "every day 06:00", SPEC))
    with pytest.raises(AlreadyExists):
        asyncio.run(m.save_campaign("x", "every day 07:00", SPEC))
    changed = asyncio.run(m.save_campaign("x", "every day 07:00", SPEC, overwrite=True))
    assert str(changed.campaign.schedule) == "every day 07:00 UTC"
    for name, schedule, spec, field in [
        ("Bad Name", "every day 06:00", SPEC, "campaign"),
        ("y", "sometimes", SPEC, "schedule"),
        ("y", "every day 06:00", OpenRoundSpec(mode=Mode.HE, parties=("a", "zz")), "parties"),
        ("y", "every day 06:00", OpenRoundSpec(mode=Mode.HE, parties=PARTIES, round_id="r"), ""),
    ]:
        with pytest.raises((InvalidArgument, NotFound)) as err:
            asyncio.run(m.save_campaign(name, schedule, spec))
        if field:
            assert err.value.field in (field, "party"), err.value
    assert [c.campaign.name for c in asyncio.run(m.list_campaigns())] == ["x"]


def test_a_round_that_cannot_open_is_audited_and_retried_later(store: Store) -> None:
    clock = Clock(ms("2026-11-29T10:00+00:00"))
    m = manager(store, clock)
    asyncio.run(m.save_campaign("daily", "every day 06:00 UTC", SPEC))
    store.revoke("b")
    clock.now = ms("2026-11-30T06:00+00:00")
    tick(m)
    rid = round_id_for("daily", clock.now)
    failed = [e for e in store.audit_log(rid) if e[2] == "campaign_open_failed"]
    assert len(failed) == 1 and "revoked" in failed[0][3]["reason"]
    clock.now += 10_000
    tick(m)  # within the retry pause: not tried again
    assert len([e for e in store.audit_log(rid) if e[2] == "campaign_open_failed"]) == 1
    assert store.rounds() == []


def test_replicas_on_postgresql_open_a_window_once(pg_url: str) -> None:
    """Two replicas, each with its own connections to one PostgreSQL database, open
    the same window at the same moment, many times over: one round each time. The
    loser is refused by the database's key on round ids, whichever check it passed."""
    stores = [open_store(pg_url, create=True), open_store(pg_url)]
    try:
        for name in PARTIES:
            stores[0].enroll(name, b"not read when a round opens")
        clock = Clock(ms("2026-11-01T00:00+00:00"))
        a, b = (manager(s, clock) for s in stores)
        asyncio.run(a.save_campaign("daily", "every day 06:00 UTC", SPEC))
        for day in range(2, 12):
            clock.now = ms(f"2026-11-{day:02d}T06:00+00:00")

            async def both(x: RoundManager = a, y: RoundManager = b) -> list[list[str]]:
                return list(await asyncio.gather(x.run_campaigns(), y.run_campaigns()))

            opened = asyncio.run(both())
            assert sorted(len(o) for o in opened) == [0, 1], opened
        ids = sorted(r.round_id for r in stores[1].rounds())
        assert ids == [f"daily-202611{day:02d}T0600Z" for day in range(2, 12)]
    finally:
        for s in stores:
            s.close()


def test_a_failing_window_is_audited_once_however_often_it_is_retried(store: Store) -> None:
    clock = Clock(ms("2026-11-29T10:00+00:00"))
    m = manager(store, clock)
    asyncio.run(m.save_campaign("daily", "every day 06:00 UTC", SPEC))
    store.revoke("b")
    clock.now = ms("2026-11-30T06:00+00:00")
    for _ in range(5):
        tick(m)
        clock.now += 61_000  # past the retry pause each time
    rid = round_id_for("daily", ms("2026-11-30T06:00+00:00"))
    assert len([e for e in store.audit_log(rid) if e[2] == "campaign_open_failed"]) == 1
