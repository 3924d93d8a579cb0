"""Campaigns: a round spec and a schedule, run by the aggregator itself (issue 13).

A campaign names everything ``open-round`` takes (the parties, mode, DP, k, the
schema) and a schedule such as ``every monday 06:00 Europe/Berlin``. At each of the
schedule's times the aggregator opens that window's round. Exactly once, however
many replicas tick: the round id is the campaign's name and the time it fired
(``weekly-kpis-20261130T0500Z``), and the store refuses a second round with the same
id. After downtime only the latest missed time opens a round: a campaign catches up
once, not once per missed time. Times before the campaign was created never fire.

Schedules (case does not matter; the time zone defaults to UTC):
- ``every day HH:MM [ZONE]``
- ``every monday HH:MM [ZONE]`` (any weekday, or its first three letters)
- ``every month on day N HH:MM [ZONE]`` (N from 1 to 28, so every month has it)

A local time that a daylight-saving change skips fires at the same wall-clock time
read in the offset before the change (an hour later, in practice); one that occurs
twice fires at its first occurrence.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from blindsum import codec
from blindsum.errors import AlreadyExists, BlindsumError, InvalidArgument
from blindsum.log import get_logger
from blindsum.model import OpenRoundSpec
from blindsum.rpc.v1 import admin_pb2

if TYPE_CHECKING:
    from aggregator.store import Store

log = get_logger("blindsum.aggregator.campaigns")

#: A campaign name: it starts the ids of its rounds, so it is kept short and plain.
NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_SCHEDULE_RE = re.compile(
    r"every\s+(?:(?P<day>day)|(?P<weekday>[a-z]+)|month\s+on\s+day\s+(?P<dom>\d{1,2}))"
    r"\s+(?P<hh>\d{1,2}):(?P<mm>\d{2})(?:\s+(?P<tz>\S+))?",
    re.IGNORECASE,
)
#: How long a campaign whose round could not be opened waits before it tries again.
RETRY_MS = 60_000


@dataclass(frozen=True)
class Schedule:
    """When a campaign fires: daily, weekly on ``weekday`` (0 = Monday) or monthly on
    ``day``, at ``hour``:``minute`` in ``zone``."""

    every: str  # "day", "week" or "month"
    hour: int
    minute: int
    zone: str = "UTC"
    weekday: int = 0
    day: int = 1

    @classmethod
    def parse(cls, text: str) -> Schedule:
        """The schedule ``text`` names (see the module doc); InvalidArgument naming
        ``schedule`` otherwise."""
        m = _SCHEDULE_RE.fullmatch(text.strip()) if isinstance(text, str) else None
        if m is None:
            raise InvalidArgument(
                f"{text!r} is not a schedule: use 'every day HH:MM [ZONE]', "
                "'every monday HH:MM [ZONE]' or 'every month on day N HH:MM [ZONE]'",
                field="schedule",
            )
        hour, minute = int(m["hh"]), int(m["mm"])
        if hour > 23 or minute > 59:
            raise InvalidArgument(f"{m['hh']}:{m['mm']} is not a time of day", field="schedule")
        zone = m["tz"] or "UTC"
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidArgument(f"unknown time zone {zone!r}", field="schedule") from None
        if m["day"]:
            return cls("day", hour, minute, zone)
        if m["dom"]:
            day = int(m["dom"])
            if not 1 <= day <= 28:
                raise InvalidArgument("the day of the month must be 1 to 28", field="schedule")
            return cls("month", hour, minute, zone, day=day)
        name = m["weekday"].lower()
        matches = [i for i, w in enumerate(_WEEKDAYS) if w == name or w[:3] == name]
        if not matches:
            raise InvalidArgument(f"{m['weekday']!r} is not a day of the week", field="schedule")
        return cls("week", hour, minute, zone, weekday=matches[0])

    def __str__(self) -> str:
        at = f"{self.hour:02d}:{self.minute:02d} {self.zone}"
        if self.every == "day":
            return f"every day {at}"
        if self.every == "month":
            return f"every month on day {self.day} {at}"
        return f"every {_WEEKDAYS[self.weekday]} {at}"

    def _on(self, d: date) -> int:
        local = datetime.combine(d, time(self.hour, self.minute), tzinfo=ZoneInfo(self.zone))
        return int(local.timestamp() * 1000)

    def _period_start(self, d: date) -> date:
        """The date this schedule fires on in the period (day, week, month) holding d."""
        if self.every == "day":
            return d
        if self.every == "week":
            return d - timedelta(days=(d.weekday() - self.weekday) % 7)
        return d.replace(day=self.day) if d.day >= self.day else _month_back(d, self.day)

    def _step(self, d: date, back: bool) -> date:
        if self.every == "day":
            return d + timedelta(days=-1 if back else 1)
        if self.every == "week":
            return d + timedelta(days=-7 if back else 7)
        return _month_back(d, self.day) if back else _month_ahead(d, self.day)

    def last_fire(self, now_ms: int) -> int:
        """The latest time (UTC ms) at or before ``now_ms`` that this schedule fires."""
        today = datetime.fromtimestamp(now_ms / 1000, ZoneInfo(self.zone)).date()
        d = self._period_start(today)
        while self._on(d) > now_ms:
            d = self._step(d, back=True)
        return self._on(d)

    def next_fire(self, now_ms: int) -> int:
        """The first time (UTC ms) after ``now_ms`` that this schedule fires."""
        d = self._period_start(datetime.fromtimestamp(now_ms / 1000, ZoneInfo(self.zone)).date())
        while self._on(d) <= now_ms:
            d = self._step(d, back=False)
        return self._on(d)


def _month_back(d: date, day: int) -> date:
    first = d.replace(day=1) - timedelta(days=1)
    return first.replace(day=day)


def _month_ahead(d: date, day: int) -> date:
    nxt = (d.replace(day=1) + timedelta(days=32)).replace(day=1)
    return nxt.replace(day=day)


def round_id_for(name: str, fire_ms: int) -> str:
    """The id of campaign ``name``'s round for the time it fired: the same on every
    replica, so the store's key on round ids makes the round exist once."""
    stamp = datetime.fromtimestamp(fire_ms / 1000, UTC).strftime("%Y%m%dT%H%MZ")
    return f"{name}-{stamp}"


@dataclass(frozen=True)
class Campaign:
    """A stored campaign. ``spec`` is the OpenRoundRequest every round starts from."""

    name: str
    schedule: Schedule
    spec: OpenRoundSpec
    paused: bool = False
    created_ms: int = 0
    updated_ms: int = 0

    def round_spec(self, fire_ms: int) -> OpenRoundSpec:
        """The spec of the round for ``fire_ms``: its deterministic id, and the DP ledger
        campaign defaulting to this campaign's name (the ticket window is the default,
        the last complete week before the round opens)."""
        dp = self.spec.dp
        if dp is not None and not dp.campaign:
            dp = replace(dp, campaign=self.name)
        return replace(self.spec, round_id=round_id_for(self.name, fire_ms), dp=dp)

    def spec_bytes(self) -> bytes:
        return codec.open_round_to_pb(self.spec).SerializeToString()


@dataclass(frozen=True)
class CampaignStatus:
    """A campaign as ``campaign list`` shows it."""

    campaign: Campaign
    #: When the next round opens (UTC ms; 0 while paused).
    next_run_ms: int
    #: The round for the latest time the schedule fired, if it exists, and its state.
    last_round_id: str = ""
    last_round_state: str = ""


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidArgument(
            "must be 1 to 40 of a-z, 0-9 and '-', starting with a letter or digit",
            field="campaign",
        )
    return name


def new_campaign(name: str, schedule: str, spec: OpenRoundSpec, *, now_ms: int) -> Campaign:
    """Check and build a campaign (the spec is checked again when each round opens)."""
    check_name(name)
    if spec.round_id:
        raise InvalidArgument("a campaign names its rounds itself", field="round_id")
    if spec.window_start_ms or spec.window_end_ms:
        raise InvalidArgument(
            "a campaign's rounds cover the last complete week before each opens",
            field="window",
        )
    if spec.dp is not None and spec.dp.window:
        raise InvalidArgument(
            "a campaign's ledger windows are its rounds' weeks", field="dp.window"
        )
    return Campaign(name, Schedule.parse(schedule), spec, created_ms=now_ms, updated_ms=now_ms)


def campaign_from_row(row: tuple[object, ...]) -> Campaign:
    """A campaign from its stored row (name, schedule, spec, paused, created, updated)."""
    name, schedule, spec, paused, created_ms, updated_ms = row
    assert isinstance(spec, bytes | bytearray | memoryview)
    req = admin_pb2.OpenRoundRequest.FromString(bytes(spec))
    return Campaign(
        str(name),
        Schedule.parse(str(schedule)),
        codec.open_round_from_pb(req),
        paused=bool(paused),
        created_ms=int(str(created_ms)),
        updated_ms=int(str(updated_ms)),
    )


def campaigns(store: Store) -> list[Campaign]:
    """Every stored campaign, by name."""
    return [campaign_from_row(row) for row in store.campaign_rows()]


OpenRound = Callable[..., object]


class CampaignRunner:
    """Opens the rounds campaigns are due, on the aggregator's tick.

    ``open_round`` is the round manager's (sync) open; ``clock_ms`` its clock. A due
    round whose id already exists was opened by this or another replica: nothing is
    done. A round that cannot be opened (a party revoked since, a bad spec) is logged
    (audited once per round and reason), and tried again after :data:`RETRY_MS`.
    """

    def __init__(self, store: Store, open_round: OpenRound, clock_ms: Callable[[], int]) -> None:
        self.store = store
        self._open = open_round
        self._clock_ms = clock_ms
        self._retry_at: dict[str, int] = {}
        #: (round id, reason) already audited: a failure is audited once, logged each try.
        self._audited: set[tuple[str, str]] = set()

    def due(self) -> list[tuple[Campaign, int]]:
        """(campaign, fire time) of each active campaign whose latest time has come and
        whose round for it does not exist yet."""
        now = self._clock_ms()
        out = []
        for c in campaigns(self.store):
            if c.paused:
                continue
            fire = c.schedule.last_fire(now)
            if fire < c.created_ms or self.store.round_exists(round_id_for(c.name, fire)):
                continue
            out.append((c, fire))
        return out

    def run(self, due: list[tuple[Campaign, int]], he_context: str = "") -> list[str]:
        """Open the ``due`` rounds (from :meth:`due`, on a worker thread); the ids opened
        here. An he round gets ``he_context``, the custodian's current context hash."""
        opened = []
        now = self._clock_ms()
        # Forget windows that are no longer due (opened, or a later time came).
        live = {round_id_for(c.name, f) for c, f in due}
        self._retry_at = {r: t for r, t in self._retry_at.items() if r in live}
        self._audited = {a for a in self._audited if a[0] in live}
        for campaign, fire in due:
            rid = round_id_for(campaign.name, fire)
            if self._retry_at.get(rid, 0) > now:
                continue
            try:
                self._open(campaign.round_spec(fire), he_context=he_context)
            except AlreadyExists:
                continue  # another replica opened it first
            except BlindsumError as exc:
                self._retry_at[rid] = now + RETRY_MS
                log.error("campaign_open_failed", campaign=campaign.name, round_id=rid, exc=exc)
                if (rid, exc.message) not in self._audited:
                    self._audited.add((rid, exc.message))
                    self.store.audit(
                        rid, "campaign_open_failed", campaign=campaign.name, reason=exc.message
                    )
                continue
            self._retry_at.pop(rid, None)
            log.info("campaign_opened", campaign=campaign.name, round_id=rid)
            opened.append(rid)
        return opened
