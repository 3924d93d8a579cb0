"""Ticket windows: which tickets a round covers.

A round covers the tickets *created* in ``[start, end)``, in UTC milliseconds. The
aggregator stores the window with the round, every party computes its metrics from
that window's tickets only, and a party's own DP ledger charges every ISO week the
window overlaps. ``(0, 0)`` on the wire means "no window" (rounds of an aggregator
older than windows): such a round covers the whole export.

The default window of a round is the last complete ISO week (Monday 00:00 UTC to the
next Monday) before the round opens (:func:`last_complete_week`).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from blindsum.errors import InvalidArgument
from blindsum.model import iso_week

DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
#: Longest window a round may cover.
MAX_WINDOW_DAYS = 366

_WEEK = re.compile(r"(\d{4})-W(\d{2})")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_MS = dt.timedelta(milliseconds=1)


def _utc(ms: int) -> dt.datetime:
    return _EPOCH + ms * _ONE_MS


def _ms(when: dt.datetime) -> int:
    """Milliseconds since 1970 (UTC), exactly; a naive time is read as UTC."""
    if when.tzinfo is None or when.utcoffset() is None:
        when = when.replace(tzinfo=dt.UTC)
    return (when - _EPOCH) // _ONE_MS


def week_start_ms(when_ms: int) -> int:
    """Monday 00:00 UTC of the ISO week that ``when_ms`` falls in."""
    day = when_ms - when_ms % DAY_MS
    return day - _utc(day).weekday() * DAY_MS


@dataclass(frozen=True)
class TicketWindow:
    """Tickets created at or after ``start_ms`` and before ``end_ms`` (UTC ms)."""

    start_ms: int
    end_ms: int

    def __post_init__(self) -> None:
        if not 0 < self.start_ms < self.end_ms:
            raise InvalidArgument(
                f"start {self.start_ms} must be positive and before end {self.end_ms}",
                field="window",
            )

    def contains(self, when: dt.datetime) -> bool:
        """Whether a ticket created at ``when`` is in the window (a naive time is UTC)."""
        return self.start_ms <= _ms(when) < self.end_ms

    def iso_weeks(self) -> tuple[str, ...]:
        """Every ISO week (UTC) the window overlaps, in order: ``("2026-W47",)`` for a
        week, two labels for a window from a Thursday to the next Thursday."""
        weeks = []
        monday = week_start_ms(self.start_ms)
        while monday < self.end_ms:
            weeks.append(iso_week(monday))
            monday += WEEK_MS
        return tuple(weeks)

    @property
    def is_iso_week(self) -> bool:
        """Exactly one ISO week, Monday 00:00 to Monday 00:00 UTC."""
        return self.start_ms == week_start_ms(self.start_ms) and (
            self.end_ms - self.start_ms == WEEK_MS
        )

    def describe(self) -> str:
        """``2026-11-16 00:00 to 2026-11-23 00:00 UTC (ISO week 2026-W47)``."""
        fmt = "%Y-%m-%d %H:%M" if (self.start_ms % 60_000, self.end_ms % 60_000) == (0, 0) else None
        start, end = _utc(self.start_ms), _utc(self.end_ms)
        if fmt is None:
            text = f"{start.isoformat()} to {end.isoformat()}"
        else:
            text = f"{start.strftime(fmt)} to {end.strftime(fmt)} UTC"
        weeks = self.iso_weeks()
        which = f"ISO weeks {weeks[0]} to {weeks[-1]}" if len(weeks) > 1 else f"ISO week {weeks[0]}"
        return f"{text} ({which})"

    def to_json(self) -> dict[str, object]:
        return {
            "start_unix_ms": self.start_ms,
            "end_unix_ms": self.end_ms,
            "start": _utc(self.start_ms).isoformat().replace("+00:00", "Z"),
            "end": _utc(self.end_ms).isoformat().replace("+00:00", "Z"),
            "iso_weeks": list(self.iso_weeks()),
        }


def check_window(
    start_ms: int,
    end_ms: int,
    *,
    start_field: str = "window_start_unix_ms",
    end_field: str = "window_end_unix_ms",
) -> TicketWindow | None:
    """The window ``[start_ms, end_ms)``, or None when both are 0 (no window given).

    Raises InvalidArgument naming the field at fault when only one bound is set, a
    bound is negative, the start is not before the end, or the window is longer than
    :data:`MAX_WINDOW_DAYS` days."""
    if start_ms == 0 and end_ms == 0:
        return None
    if start_ms <= 0:
        raise InvalidArgument(
            f"must be a positive time in ms since 1970 (UTC) when {end_field} is set",
            field=start_field,
        )
    if end_ms <= 0:
        raise InvalidArgument(
            f"must be a positive time in ms since 1970 (UTC) when {start_field} is set",
            field=end_field,
        )
    if end_ms <= start_ms:
        raise InvalidArgument(
            f"must be after {start_field} (the end is exclusive)", field=end_field
        )
    if end_ms - start_ms > MAX_WINDOW_DAYS * DAY_MS:
        raise InvalidArgument(
            f"the window is {(end_ms - start_ms) / DAY_MS:g} days long, more than "
            f"{MAX_WINDOW_DAYS}",
            field=end_field,
        )
    return TicketWindow(start_ms, end_ms)


def last_complete_week(now_ms: int) -> TicketWindow:
    """The last ISO week that is over at ``now_ms``: Monday 00:00 UTC to the next
    Monday, ending at or before ``now_ms``."""
    end = week_start_ms(now_ms)
    return TicketWindow(end - WEEK_MS, end)


def round_window(start_ms: int, end_ms: int, now_ms: int, *, allow_future: bool) -> TicketWindow:
    """The window a round opened at ``now_ms`` covers: ``[start_ms, end_ms)`` checked
    (:func:`check_window`), or by default (both 0) the last complete ISO week.

    A window that is not over at ``now_ms`` is refused (InvalidArgument naming
    ``window_end_unix_ms``) unless ``allow_future``: the parties' exports do not hold
    its later tickets yet, so its report would be partial."""
    window = check_window(start_ms, end_ms)
    if window is None:
        return last_complete_week(now_ms)
    if window.end_ms > now_ms and not allow_future:
        now = _utc(now_ms).strftime("%Y-%m-%d %H:%M UTC")
        raise InvalidArgument(
            f"the window {window.describe()} is not over at the aggregator's time ({now}), "
            "so its report would miss the tickets still to come; open the round once the "
            "window has ended ([release] allow_window_override = true allows it, for "
            "replays and tests)",
            field="window_end_unix_ms",
        )
    return window


def parse_week(text: str, *, field: str = "--week") -> TicketWindow:
    """An ISO week label, ``2026-W47``, as its window (Monday to Monday, UTC)."""
    match = _WEEK.fullmatch(text.strip())
    if match is None:
        raise InvalidArgument(f"{text!r} is not an ISO week like 2026-W47", field=field)
    try:
        monday = dt.date.fromisocalendar(int(match[1]), int(match[2]), 1)
    except ValueError:
        raise InvalidArgument(f"{text!r}: no such ISO week", field=field) from None
    start = _ms(dt.datetime(monday.year, monday.month, monday.day, tzinfo=dt.UTC))
    return TicketWindow(start, start + WEEK_MS)


def parse_date(text: str, *, field: str) -> int:
    """An ISO date, ``2026-11-16``, as midnight UTC in ms."""
    stripped = text.strip()
    try:
        if _DATE.fullmatch(stripped) is None:
            raise ValueError
        day = dt.date.fromisoformat(stripped)
    except ValueError:
        raise InvalidArgument(f"{text!r} is not a date like 2026-11-16", field=field) from None
    if day.year < 1971:
        raise InvalidArgument(f"{text!r} is before 1971", field=field)
    return _ms(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC))


def parse_dates(start: str, end: str) -> TicketWindow:
    """``--from`` and ``--to`` ISO dates (UTC, ``--to`` exclusive) as a window."""
    window = check_window(
        parse_date(start, field="--from"),
        parse_date(end, field="--to"),
        start_field="--from",
        end_field="--to",
    )
    if window is None:  # pragma: no cover - parse_date never returns 0
        raise InvalidArgument("a window needs --from and --to", field="--from")
    return window
