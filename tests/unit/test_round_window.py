"""The ticket window a round is opened with (aggregator/rounds.py): the default week,
the checks, the ledger window it implies, and where it is recorded. The manager runs
on a fixed clock, so nothing here depends on today's date."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aggregator.release import ReleasePolicy
from aggregator.rounds import RoundManager, RoundSettings
from aggregator.store import open_store
from blindsum.errors import InvalidArgument
from blindsum.model import DpMode, DpSpec, Mode, OpenRoundSpec, RoundView
from blindsum.window import DAY_MS, WEEK_MS, parse_dates, parse_week

PARTIES = ("a", "b", "c")
W47 = parse_week("2026-W47")
#: Wednesday of ISO week 2026-W48, 13:05 UTC.
WEDNESDAY_W48 = W47.end_ms + 2 * DAY_MS + (13 * 60 + 5) * 60_000


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[RoundManager]:
    store = open_store("sqlite:///db.sqlite", base_dir=tmp_path, create=True)
    for name in PARTIES:
        store.enroll(name, b"not used by open_round")
    yield RoundManager(store, ca_cert_pem=b"", clock_ms=lambda: WEDNESDAY_W48)
    store.close()


def _with_release(
    manager: RoundManager, *, window: str = "week", allow_window_override: bool = False
) -> None:
    release = ReleasePolicy(window=window, allow_window_override=allow_window_override)
    manager.settings = RoundSettings(release=release)


def _open(
    manager: RoundManager, start: int = 0, end: int = 0, *, dp: DpSpec | None = None
) -> RoundView:
    spec = OpenRoundSpec(
        mode=Mode.HE, parties=PARTIES, window_start_ms=start, window_end_ms=end, dp=dp
    )
    return manager._open_round(spec)


def test_the_default_window_is_the_last_complete_week_and_is_recorded(
    manager: RoundManager,
) -> None:
    view = _open(manager)
    assert (view.window_start_ms, view.window_end_ms) == (W47.start_ms, W47.end_ms)
    # The ledger is charged for the week whose tickets the round covers, not the week
    # the round was opened in.
    assert view.dp.window == "2026-W47"
    rec = manager.store.round(view.round_id)
    assert (rec.window_start_ms, rec.window_end_ms) == (W47.start_ms, W47.end_ms)
    [(_, _, event, detail)] = manager.store.audit_log(view.round_id)
    assert event == "round_opened"
    assert detail["window"] == "2026-W47"
    assert detail["ticket_window"] == W47.to_json()


def test_a_given_window_is_kept_and_names_the_ledger_window_of_its_start(
    manager: RoundManager,
) -> None:
    thursday = parse_dates("2026-11-12", "2026-11-19")  # 2026-W46 Thursday to W47 Thursday
    view = _open(manager, thursday.start_ms, thursday.end_ms)
    assert (view.window_start_ms, view.window_end_ms) == (thursday.start_ms, thursday.end_ms)
    assert view.dp.window == "2026-W46"


def test_a_monthly_ledger_takes_the_month_of_the_window(manager: RoundManager) -> None:
    _with_release(manager, window="month")
    assert _open(manager).dp.window == "2026-11"


@pytest.mark.parametrize(
    ("start", "end", "field", "needle"),
    [
        (W47.start_ms, 0, "window_end_unix_ms", "when window_start_unix_ms is set"),
        (0, W47.end_ms, "window_start_unix_ms", "when window_end_unix_ms is set"),
        (-1, W47.end_ms, "window_start_unix_ms", "positive"),
        (W47.end_ms, W47.start_ms, "window_end_unix_ms", "must be after"),
        (W47.start_ms, W47.start_ms, "window_end_unix_ms", "must be after"),
        (W47.end_ms - 367 * DAY_MS, W47.end_ms, "window_end_unix_ms", "more than 366"),
    ],
)
def test_bad_windows_are_refused_naming_the_field(
    manager: RoundManager, start: int, end: int, field: str, needle: str
) -> None:
    with pytest.raises(InvalidArgument, match=needle) as err:
        _open(manager, start, end)
    assert err.value.field == field
    assert manager.store.rounds() == []


def test_a_window_that_is_not_over_is_refused_unless_the_operator_allows_it(
    manager: RoundManager,
) -> None:
    this_week = (W47.end_ms, W47.end_ms + WEEK_MS)  # ends next Monday, after the clock
    with pytest.raises(InvalidArgument) as err:
        _open(manager, *this_week)
    assert err.value.field == "window_end_unix_ms"
    assert "is not over at the aggregator's time (2026-11-25 13:05 UTC)" in str(err.value)
    assert "2026-11-23 00:00 to 2026-11-30 00:00 UTC (ISO week 2026-W48)" in str(err.value)
    # A window that ends exactly now is over.
    assert _open(manager, W47.start_ms, WEDNESDAY_W48).window_end_ms == WEDNESDAY_W48
    # Replays and tests may open one ([release] allow_window_override, as the demo does).
    _with_release(manager, allow_window_override=True)
    assert _open(manager, *this_week).window_start_ms == this_week[0]


def test_the_ledger_label_flag_still_works_with_the_override(manager: RoundManager) -> None:
    labelled = DpSpec(mode=DpMode.CENTRAL, window="backfill-1")
    with pytest.raises(InvalidArgument, match="allow_window_override") as err:
        _open(manager, dp=labelled)
    assert err.value.field == "dp.window"
    _with_release(manager, allow_window_override=True)
    assert _open(manager, dp=labelled).dp.window == "backfill-1"
