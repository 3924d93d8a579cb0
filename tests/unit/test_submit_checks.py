"""party.pipeline's submit checks: an export with nothing, or too little, to submit is
refused with a message that names the quarantine file and the top reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from blindsum.errors import InvalidArgument
from blindsum.schema import Schema
from blindsum.window import parse_week
from party.pipeline import SubmitPolicy, TicketSource, check_submittable, compute, tickets_source

SCHEMA = Schema.default()
HEADER = "ticket_id,created_date,status,region\n"
#: _export writes its tickets in the week of 2026-11-16.
W47 = parse_week("2026-W47")
W48 = parse_week("2026-W48")


def _export(path: Path, good: int, bad_dates: int = 0, bad_regions: int = 0) -> TicketSource:
    rows = [f"G{i},2026-11-16 10:00:00,Resolved,APAC\n" for i in range(good)]
    rows += [f"D{i},yesterday,Resolved,APAC\n" for i in range(bad_dates)]
    rows += [f"R{i},2026-11-16 10:00:00,Resolved,Mars\n" for i in range(bad_regions)]
    path.write_text(HEADER + "".join(rows))
    return TicketSource(str(path))


def _check(source: TicketSource, tmp_path: Path, policy: SubmitPolicy) -> None:
    run = compute(source, SCHEMA, tmp_path / "secret")
    check_submittable(run, source, SCHEMA, policy)


def test_nothing_accepted_is_refused_naming_file_and_top_reason(tmp_path: Path) -> None:
    source = _export(tmp_path / "t.csv", good=0, bad_dates=2, bad_regions=5)
    with pytest.raises(InvalidArgument) as err:
        _check(source, tmp_path, SubmitPolicy(allow_partial=True))  # never overridable
    message = str(err.value)
    assert message.startswith("--tickets: no accepted ticket in any of the round's schema's")
    assert "7 of 7 rows quarantined; top reason unknown_region (5 rows)" in message
    assert str(tmp_path / "t.csv.quarantine.jsonl") in message


def test_an_empty_export_is_refused_without_naming_a_file_that_was_not_written(
    tmp_path: Path,
) -> None:
    source = _export(tmp_path / "t.csv", good=0)
    with pytest.raises(InvalidArgument) as err:
        _check(source, tmp_path, SubmitPolicy())
    assert str(err.value) == "--tickets: the export has no ticket rows; nothing was sent"
    assert not (tmp_path / "t.csv.quarantine.jsonl").exists()


@pytest.mark.parametrize(
    ("good", "bad", "share", "refused"),
    [
        (8, 2, 0.2, False),  # exactly at the limit passes
        (7, 3, 0.2, True),
        (7, 3, 0.3, False),
        (10, 0, 0.0, False),
        (9, 1, 0.0, True),
    ],
)
def test_quarantined_share_limit(
    tmp_path: Path, good: int, bad: int, share: float, refused: bool
) -> None:
    source = _export(tmp_path / "t.csv", good=good, bad_dates=bad)
    policy = SubmitPolicy(max_quarantined_share=share)
    if refused:
        with pytest.raises(InvalidArgument, match="--allow-partial"):
            _check(source, tmp_path, policy)
        _check(source, tmp_path, SubmitPolicy(max_quarantined_share=share, allow_partial=True))
    else:
        _check(source, tmp_path, policy)


def test_a_preflight_run_is_used_once_then_the_export_is_read_again(tmp_path: Path) -> None:
    source = _export(tmp_path / "t.csv", good=4)
    secret = tmp_path / "secret"
    preflight = compute(source, SCHEMA, secret)
    reports: list[int] = []
    vector = tickets_source(
        source,
        secret,
        report=lambda run: reports.append(run.ingest.summary.read),
        preflight=preflight,
    )
    tickets = SCHEMA.slot_index("APAC", "tickets")
    assert int(vector(SCHEMA, None)[tickets]) == 4 and reports == []  # the preflight's vector
    _export(tmp_path / "t.csv", good=6)  # the export changed since
    assert int(vector(SCHEMA, None)[tickets]) == 6 and reports == [6]
    # A later read is checked like the first: an emptied export is refused.
    _export(tmp_path / "t.csv", good=0, bad_regions=3)
    with pytest.raises(InvalidArgument, match="no accepted ticket"):
        vector(SCHEMA, None)


def test_a_preflight_run_is_not_used_for_another_window(tmp_path: Path) -> None:
    source = _export(tmp_path / "t.csv", good=4)
    secret = tmp_path / "secret"
    reports: list[int] = []
    vector = tickets_source(
        source,
        secret,
        report=lambda run: reports.append(run.ingest.summary.outside_window),
        preflight=compute(source, SCHEMA, secret),  # the whole export
    )
    tickets = SCHEMA.slot_index("APAC", "tickets")
    assert int(vector(SCHEMA, W47)[tickets]) == 4 and reports == [0]  # read again
    with pytest.raises(InvalidArgument, match="no ticket of the export was created"):
        vector(SCHEMA, W48)
    assert reports == [0, 4]


def test_tickets_of_regions_the_party_does_not_serve_are_quarantined_not_refused(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.csv"
    rows = [f"A{i},2026-11-16 10:00:00,Resolved,APAC\n" for i in range(3)]
    rows += [f"E{i},2026-11-16 10:00:00,Resolved,emea\n" for i in range(7)]
    path.write_text(HEADER + "".join(rows))
    source = TicketSource(str(path))
    run = compute(source, SCHEMA, tmp_path / "secret", served=("APAC",))
    assert run.ingest.summary.by_reason == {"unserved_region": 7}
    assert int(run.vector[SCHEMA.slot_index("EMEA", "tickets")]) == 0
    assert int(run.vector[SCHEMA.slot_index("APAC", "tickets")]) == 3
    # 70 % of the rows are out of region: left out on purpose, not a broken export.
    check_submittable(run, source, SCHEMA, SubmitPolicy())
    lines = (tmp_path / "t.csv.quarantine.jsonl").read_text().splitlines()
    assert len(lines) == 7 and all("unserved_region" in line for line in lines)


def _two_weeks(path: Path) -> TicketSource:
    """APAC tickets in two weeks: 5 in W47 (one escalated), 3 in W48, and rows a round of
    W47 must not see: a broken row in W48, and tickets of the week before."""
    rows = [f"a{i},2026-11-{16 + i} 09:00:00,Resolved,APAC\n" for i in range(4)]
    rows.append("a4,2026-11-22 23:59:59,Escalated,APAC\n")
    rows += [f"b{i},2026-11-{23 + i} 09:00:00,Resolved,APAC\n" for i in range(3)]
    rows.append("b3,2026-11-24 09:00:00,Resolved,Mars\n")  # broken, but not W47's
    rows += [f"z{i},2026-11-0{8 + i} 09:00:00,Resolved,APAC\n" for i in range(2)]
    path.write_text(HEADER + "".join(rows))
    return TicketSource(str(path))


def test_tickets_outside_the_window_are_left_out_and_counted_not_quarantined(
    tmp_path: Path,
) -> None:
    source = _two_weeks(tmp_path / "t.csv")
    run = compute(source, SCHEMA, tmp_path / "secret", window=W47)
    summary = run.ingest.summary
    assert (summary.read, summary.accepted, summary.quarantined) == (11, 5, 0)
    assert summary.outside_window == 6
    assert run.values["APAC"]["tickets"] == 5 and run.values["APAC"]["escalated"] == 1
    assert not (tmp_path / "t.csv.quarantine.jsonl").exists()
    check_submittable(run, source, SCHEMA, SubmitPolicy(max_quarantined_share=0.0))
    # The next week's round sees the next week's tickets, and its broken row.
    run = compute(source, SCHEMA, tmp_path / "secret", window=W48)
    assert run.values["APAC"]["tickets"] == 3 and run.values["APAC"]["escalated"] == 0
    assert run.ingest.summary.by_reason == {"unknown_region": 1}
    assert run.ingest.summary.outside_window == 7


def test_a_window_without_tickets_is_nothing_to_submit(tmp_path: Path) -> None:
    source = _two_weeks(tmp_path / "t.csv")
    run = compute(source, SCHEMA, tmp_path / "secret", window=parse_week("2026-W40"))
    with pytest.raises(InvalidArgument) as err:
        check_submittable(run, source, SCHEMA, SubmitPolicy(allow_partial=True))
    assert str(err.value) == (
        "--tickets: no ticket of the export was created in the window "
        "2026-09-28 00:00 to 2026-10-05 00:00 UTC (ISO week 2026-W40) "
        "(all 11 rows are outside it); nothing was sent"
    )


def test_the_quarantine_share_counts_the_rows_in_the_window_only(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    rows = [f"G{i},2026-11-16 10:00:00,Resolved,APAC\n" for i in range(8)]
    rows += [f"D{i},,Resolved,APAC\n" for i in range(2)]  # in no window: quarantined
    rows += [f"O{i},2026-11-02 10:00:00,Resolved,APAC\n" for i in range(90)]
    path.write_text(HEADER + "".join(rows))
    source = TicketSource(str(path))
    run = compute(source, SCHEMA, tmp_path / "secret", window=W47)
    assert run.ingest.summary.by_reason == {"missing_created": 2}
    # 2 of the 10 rows in the window (not of all 100): exactly at the 20 % limit.
    check_submittable(run, source, SCHEMA, SubmitPolicy(max_quarantined_share=0.2))
    with pytest.raises(InvalidArgument, match=r"2 of 10 rows in the window \(20%\)"):
        check_submittable(run, source, SCHEMA, SubmitPolicy(max_quarantined_share=0.1))
