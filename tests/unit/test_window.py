"""Ticket windows (blindsum/window.py): the default week, parsing and validation, and
how the CLI shows a round's window."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from blindsum.errors import InvalidArgument
from blindsum.model import Mode, Phase, RoundState, RoundView
from blindsum.window import (
    DAY_MS,
    WEEK_MS,
    TicketWindow,
    check_window,
    last_complete_week,
    parse_dates,
    parse_week,
)
from blindsum_app.cli.common import format_status, view_json


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    when = dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)
    return int(when.timestamp()) * 1000


W47 = TicketWindow(ms(2026, 11, 16), ms(2026, 11, 23))


@pytest.mark.parametrize(
    "now",
    [
        ms(2026, 11, 23),  # the very first millisecond of the next week
        ms(2026, 11, 25, 13, 5),  # a Wednesday
        ms(2026, 11, 29, 23, 59, 59) + 999,  # the last millisecond of the next week
    ],
)
def test_the_default_window_is_the_last_complete_iso_week(now: int) -> None:
    window = last_complete_week(now)
    assert window == W47
    assert window.is_iso_week and window.iso_weeks() == ("2026-W47",)
    assert window.end_ms <= now


def test_the_default_window_across_a_year_boundary() -> None:
    # 2021-01-01 is a Friday in ISO week 2020-W53.
    window = last_complete_week(ms(2021, 1, 5))
    assert window.iso_weeks() == ("2020-W53",)
    assert window == parse_week("2020-W53")


def test_week_labels_parse_to_monday_to_monday_utc() -> None:
    assert parse_week("2026-W47") == W47
    assert parse_week(" 2026-W01 ").start_ms == ms(2025, 12, 29)
    for bad in ("2026-47", "2026-W7", "W47", "2026-W47-1", ""):
        with pytest.raises(InvalidArgument, match="not an ISO week like 2026-W47") as err:
            parse_week(bad)
        assert err.value.field == "--week"
    with pytest.raises(InvalidArgument, match="no such ISO week"):
        parse_week("2021-W53")


def test_dates_are_utc_midnights_and_the_end_is_exclusive() -> None:
    window = parse_dates("2026-11-19", "2026-11-26")
    assert (window.start_ms, window.end_ms) == (ms(2026, 11, 19), ms(2026, 11, 26))
    assert window.iso_weeks() == ("2026-W47", "2026-W48")
    assert not window.is_iso_week
    assert window.contains(dt.datetime(2026, 11, 25, 23, 59, 59, 999999, tzinfo=dt.UTC))
    assert not window.contains(dt.datetime(2026, 11, 26, tzinfo=dt.UTC))
    assert window.contains(dt.datetime(2026, 11, 19, tzinfo=dt.UTC))
    assert not window.contains(dt.datetime(2026, 11, 18, 23, 59, tzinfo=dt.UTC))
    # A ticket stamped in another zone is compared in UTC.
    tokyo = dt.timezone(dt.timedelta(hours=9))
    assert window.contains(dt.datetime(2026, 11, 19, 8, 0, tzinfo=tokyo)) is False
    assert window.contains(dt.datetime(2026, 11, 19, 9, 0, tzinfo=tokyo)) is True


@pytest.mark.parametrize(
    ("start", "end", "field", "needle"),
    [
        ("2026-11-19", "2026-11-19", "--to", "must be after --from"),
        ("2026-11-20", "2026-11-19", "--to", "must be after --from"),
        ("2026-01-01", "2027-01-03", "--to", "367 days long, more than 366"),
        ("2026-11-31", "2026-12-01", "--from", "not a date like 2026-11-16"),
        ("2026-11-19", "20261126", "--to", "not a date like 2026-11-16"),
        ("1970-01-01", "1970-01-08", "--from", "before 1971"),
    ],
)
def test_bad_dates_name_the_option(start: str, end: str, field: str, needle: str) -> None:
    with pytest.raises(InvalidArgument, match=needle) as err:
        parse_dates(start, end)
    assert err.value.field == field


def test_check_window_on_the_wire_fields() -> None:
    assert check_window(0, 0) is None
    assert check_window(W47.start_ms, W47.end_ms) == W47
    for start, end, field in (
        (0, W47.end_ms, "window_start_unix_ms"),
        (W47.start_ms, 0, "window_end_unix_ms"),
        (-5, W47.end_ms, "window_start_unix_ms"),
        (W47.end_ms, W47.start_ms, "window_end_unix_ms"),
        (W47.start_ms, W47.start_ms + 367 * DAY_MS, "window_end_unix_ms"),
    ):
        with pytest.raises(InvalidArgument) as err:
            check_window(start, end)
        assert err.value.field == field, (start, end)
    # 366 days is the longest window.
    assert check_window(W47.start_ms, W47.start_ms + 366 * DAY_MS) is not None


def test_iso_weeks_lists_every_week_a_window_touches() -> None:
    assert TicketWindow(W47.start_ms, W47.end_ms + 1).iso_weeks() == ("2026-W47", "2026-W48")
    assert TicketWindow(W47.end_ms - 1, W47.end_ms).iso_weeks() == ("2026-W47",)
    four = TicketWindow(W47.start_ms - DAY_MS, W47.start_ms + 3 * WEEK_MS)
    assert four.iso_weeks() == ("2026-W46", "2026-W47", "2026-W48", "2026-W49")


def test_describe_and_json() -> None:
    assert W47.describe() == "2026-11-16 00:00 to 2026-11-23 00:00 UTC (ISO week 2026-W47)"
    two = parse_dates("2026-11-19", "2026-11-26")
    assert two.describe().endswith("(ISO weeks 2026-W47 to 2026-W48)")
    assert W47.to_json() == {
        "start_unix_ms": W47.start_ms,
        "end_unix_ms": W47.end_ms,
        "start": "2026-11-16T00:00:00Z",
        "end": "2026-11-23T00:00:00Z",
        "iso_weeks": ["2026-W47"],
    }
    with pytest.raises(InvalidArgument):
        TicketWindow(W47.end_ms, W47.start_ms)


def test_status_and_json_views_show_the_window() -> None:
    view = RoundView(
        round_id="w47",
        mode=Mode.HE,
        state=RoundState.COMPLETE,
        phase=Phase.DONE,
        schema_id="ab" * 32,
        schema_toml="",
        parties=("a", "b", "c"),
        threshold=3,
        min_contributors=3,
        phase_deadline_ms=0,
        submitted=(),
        abort_reason="",
        vector_length=1,
        created_ms=W47.end_ms,
        graph_degree=0,
        window_start_ms=W47.start_ms,
        window_end_ms=W47.end_ms,
    )
    assert f"  tickets: created {W47.describe()}" in format_status(view).splitlines()
    assert view_json(view)["window"] == W47.to_json()
    # A round from an aggregator older than windows covers each party's whole export.
    older = replace(view, window_start_ms=0, window_end_ms=0)
    assert "  tickets: no window (each party's whole export)" in format_status(older)
    assert view_json(older)["window"] is None
