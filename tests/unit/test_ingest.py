"""Ingest: CSV / JSONL files and SQL results through a mapping, bad rows quarantined."""

from __future__ import annotations

import csv
import json
import sqlite3
import stat
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blindsum.errors import ConfigError, InvalidArgument
from blindsum.window import parse_week
from party import ingest as ingest_mod
from party.ingest import (
    IngestResult,
    Quarantined,
    ingest_file,
    ingest_rows,
    ingest_sql,
    write_quarantine,
)
from party.mapping import Mapping, load_mapping, mapping_from_toml
from party.tickets import Status

DATASET_CSV = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "datasets"
    / "support_tickets_4teams.csv"
)

HEADER = (
    "ticket_id,created_date,status,region,csat_score,first_response_minutes,"
    "resolution_hours,resolved_date,requester_name,requester_email,subject,team"
)
GOOD = "T1,2024-10-29 22:00:00,Resolved,APAC,5,90,3.5,2024-10-30 01:30:00,Ann Lee,ann@x.org,Hi,A"

PII = ("Ann Lee", "ann@x.org", "Zed Quux", "zed.quux@example.com", "+1 555 0100", "ORD-99177")


@pytest.fixture(scope="module")
def generic() -> Mapping:
    return load_mapping("generic")


def _csv(tmp_path: Path, *rows: str, header: str = HEADER, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def _check_counts(result: IngestResult) -> None:
    s = result.summary
    assert s.read == s.accepted + s.quarantined + s.outside_window
    assert s.accepted == len(result.tickets)
    assert s.quarantined == len(result.quarantine)
    assert sum(s.by_reason.values()) == s.quarantined


def _only(result: IngestResult) -> Quarantined:
    _check_counts(result)
    assert len(result.quarantine) == 1, result.quarantine
    return result.quarantine[0]


# ---------------------------------------------------------------- the good path


def test_good_row_is_fully_mapped(tmp_path: Path, generic: Mapping) -> None:
    result = ingest_file(_csv(tmp_path, GOOD), generic)
    _check_counts(result)
    assert result.summary.read == 1
    (t,) = result.tickets
    assert t.line == 2
    assert t.ticket_id == "T1"
    assert t.status is Status.RESOLVED
    assert t.region == "APAC"
    assert t.created == datetime(2024, 10, 29, 22, 0, tzinfo=UTC)
    assert t.resolved_at == datetime(2024, 10, 30, 1, 30, tzinfo=UTC)
    assert t.csat == 5
    assert t.first_response_hours == 1.5
    assert t.resolution_hours == 3.5
    assert t.requester_name == "Ann Lee"
    assert t.requester_email == "ann@x.org"
    assert t.subject == "Hi"
    assert t.extras == (("team", "A"),)
    # Mapped optional columns absent from the file are simply empty.
    assert t.requester_phone is None
    assert t.nps is None
    assert t.country is None
    assert "Ann Lee" not in repr(t)


def test_summary_json(tmp_path: Path, generic: Mapping) -> None:
    path = _csv(tmp_path, GOOD, GOOD.replace("T1,", "T2,").replace(",5,", ",7,"))
    summary = json.loads(ingest_file(path, generic).summary.to_json())
    assert summary == {
        "source": str(path),
        "read": 2,
        "accepted": 1,
        "quarantined": 1,
        "by_reason": {"out_of_range": 1},
        "outside_window": 0,
    }


def test_the_dataset_ingests_completely(generic: Mapping) -> None:
    if not DATASET_CSV.is_file():
        pytest.skip(f"dataset absent: {DATASET_CSV.name} lives in the shared workspace only")
    result = ingest_file(DATASET_CSV, generic)
    _check_counts(result)
    assert result.summary.read == 5000
    assert result.summary.accepted == 5000
    with DATASET_CSV.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    by_id = {t.ticket_id: t for t in result.tickets}
    assert len(by_id) == len(rows)
    teams = set()
    for i, row in enumerate(rows):
        t = by_id[row["ticket_id"]]
        assert t.line == i + 2
        assert t.region == row["region"]
        assert t.country == row["country"]
        assert t.channel == row["channel"]
        assert (
            t.status
            is {
                "Resolved": Status.RESOLVED,
                "Escalated": Status.ESCALATED,
                "In Progress": Status.OPEN,
            }[row["status"]]
        )
        assert t.first_response_hours == float(row["first_response_minutes"]) / 60
        assert t.resolution_hours == float(row["resolution_hours"])
        assert t.csat == (int(float(row["csat_score"])) if row["csat_score"] else None)
        assert t.created == datetime.fromisoformat(row["created_date"]).replace(tzinfo=UTC)
        assert (t.resolved_at is None) == (row["resolved_date"] == "")
        assert dict(t.extras)["team"] == row["team"]
        teams.add(row["team"])
    assert teams == {"Team_Alpha", "Team_Beta", "Team_Gamma", "Team_Delta"}


# ---------------------------------------------------------------- bad rows -> quarantine


def test_unparseable_date_is_quarantined_with_row_and_column(
    tmp_path: Path, generic: Mapping
) -> None:
    bad = GOOD.replace("T1,2024-10-29 22:00:00", "T2,29th of Octember")
    result = ingest_file(_csv(tmp_path, GOOD, bad, GOOD.replace("T1,", "T3,")), generic)
    q = _only(result)
    assert q.reason == "bad_date"
    assert q.line == 3
    assert q.column == "created_date"
    assert "line 3" in q.message
    assert "'created_date'" in q.message
    assert [t.ticket_id for t in result.tickets] == ["T1", "T3"]  # nothing else is lost


def test_csat_outside_scale_is_quarantined(tmp_path: Path, generic: Mapping) -> None:
    result = ingest_file(_csv(tmp_path, GOOD.replace(",5,", ",7,")), generic)
    q = _only(result)
    assert q.reason == "out_of_range"
    assert q.column == "csat_score"
    assert "line 2" in q.message
    assert "1..5" in q.message
    assert result.tickets == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2.0", 2), (" 4 ", 4), ("1e0", 1), ("", None), ("N/A", None)],
)
def test_csat_parsing(tmp_path: Path, generic: Mapping, value: str, expected: int | None) -> None:
    result = ingest_file(_csv(tmp_path, GOOD.replace(",5,", f",{value},")), generic)
    _check_counts(result)
    assert [t.csat for t in result.tickets] == [expected]


@pytest.mark.parametrize(
    ("value", "reason"), [("2.5", "bad_number"), ("five", "bad_number"), ("0", "out_of_range")]
)
def test_bad_csat(tmp_path: Path, generic: Mapping, value: str, reason: str) -> None:
    q = _only(ingest_file(_csv(tmp_path, GOOD.replace(",5,", f",{value},")), generic))
    assert q.reason == reason
    assert q.column == "csat_score"


def test_status_vocabulary_and_unknown_status(tmp_path: Path, generic: Mapping) -> None:
    rows = [
        GOOD.replace("T1,", "A,").replace("Resolved", "in progress"),
        GOOD.replace("T1,", "B,").replace("Resolved", " ESCALATED "),
        GOOD.replace("T1,", "C,").replace("Resolved", "Closed"),
        GOOD.replace("T1,", "D,").replace("Resolved", "Archived"),
    ]
    result = ingest_file(_csv(tmp_path, *rows), generic)
    assert [t.status for t in result.tickets] == [Status.OPEN, Status.ESCALATED, Status.RESOLVED]
    q = _only(result)
    assert q.reason == "unknown_status"
    assert q.line == 5
    assert "'Archived'" in q.message  # the status value helps fix the vocabulary
    assert result.tickets[1].escalated


@pytest.mark.parametrize(("column", "index"), [("ticket_id", 0), ("status", 2), ("region", 3)])
def test_missing_required_value(tmp_path: Path, generic: Mapping, column: str, index: int) -> None:
    cells = GOOD.split(",")
    cells[index] = "  "
    q = _only(ingest_file(_csv(tmp_path, ",".join(cells)), generic))
    assert q.reason == "missing_required"
    assert q.column == column


def test_duplicate_ticket_id(tmp_path: Path, generic: Mapping) -> None:
    result = ingest_file(_csv(tmp_path, GOOD, GOOD.replace(",5,", ",4,")), generic)
    q = _only(result)
    assert q.reason == "duplicate_id"
    assert q.line == 3
    assert "line 2" in q.message
    assert result.tickets[0].csat == 5


def test_durations_given_derived_and_negative(tmp_path: Path) -> None:
    mapping = mapping_from_toml(
        """
[mapping]
name = "d"
[columns]
ticket_id = "id"
region = "region"
status = "status"
created = "created"
first_response_at = "responded"
resolved_at = "resolved"
resolution_hours = { column = "res_secs", unit = "seconds" }
"""
    )
    header = "id,region,status,created,responded,resolved,res_secs"
    rows = [
        "a,EMEA,resolved,2024-01-01T10:00:00,2024-01-01T10:30:00,2024-01-02T10:00:00,",
        "b,EMEA,resolved,2024-01-01T10:00:00,,2024-01-01T12:00:00,5400",
        "c,EMEA,resolved,2024-01-01T10:00:00,,,01:45:00",
        "d,EMEA,resolved,2024-01-01T10:00:00,2024-01-01T09:00:00,,",
        "e,EMEA,resolved,2024-01-01T10:00:00,,,-60",
        "f,EMEA,resolved,2024-01-02T10:00:00,,2024-01-01T10:00:00,",
    ]
    result = ingest_file(_csv(tmp_path, *rows, header=header), mapping)
    _check_counts(result)
    got = {t.ticket_id: (t.first_response_hours, t.resolution_hours) for t in result.tickets}
    assert got == {"a": (0.5, 24.0), "b": (None, 1.5), "c": (None, 1.75)}
    assert [(q.line, q.reason, q.column) for q in result.quarantine] == [
        (5, "bad_duration", "responded"),
        (6, "bad_duration", "res_secs"),
        (7, "bad_duration", "resolved"),
    ]


def test_day_first_dates_and_time_zone(tmp_path: Path) -> None:
    mapping = mapping_from_toml(
        """
[mapping]
name = "eu"
[source]
delimiter = ";"
[dates]
formats = ["%d/%m/%Y %H:%M", "%d/%m/%Y"]
timezone = "Europe/Berlin"
[columns]
ticket_id = "id"
region = "region"
status = "status"
created = "created"
resolved_at = "resolved"
"""
    )
    rows = [
        "1;EMEA;open;03/02/2024 10:00;",  # 3 February, CET (+01:00)
        "2;EMEA;open;03/07/2024;2024-07-04T00:00:00Z",  # 3 July, CEST (+02:00); ISO not listed
        "3;EMEA;open;2024-07-03 10:00;",
    ]
    result = ingest_file(_csv(tmp_path, *rows, header="id;region;status;created;resolved"), mapping)
    t1 = result.tickets[0]
    assert t1.created == datetime(2024, 2, 3, 9, 0, tzinfo=UTC)
    assert [(q.line, q.reason, q.column) for q in result.quarantine] == [
        (3, "bad_date", "resolved"),
        (4, "bad_date", "created"),
    ]
    assert "formats:" in result.quarantine[0].message


def test_auto_dates_day_first_versus_month_first(tmp_path: Path) -> None:
    base = """
[mapping]
name = "auto"
[dates]
formats = ["auto"]
dayfirst = {dayfirst}
[columns]
ticket_id = "id"
region = "region"
status = "status"
created = "created"
"""
    path = _csv(
        tmp_path,
        "1,APAC,open,03/02/2024 10:00",
        "2,APAC,open,2024-02-03T10:00:00+05:00",
        "3,APAC,open,3 Feb 2024",
        header="id,region,status,created",
    )
    dayfirst = ingest_file(path, mapping_from_toml(base.format(dayfirst="true")))
    monthfirst = ingest_file(path, mapping_from_toml(base.format(dayfirst="false")))
    assert [t.created for t in dayfirst.tickets] == [
        datetime(2024, 2, 3, 10, 0, tzinfo=UTC),
        datetime(2024, 2, 3, 5, 0, tzinfo=UTC),
        datetime(2024, 2, 3, tzinfo=UTC),
    ]
    assert monthfirst.tickets[0].created == datetime(2024, 3, 2, 10, 0, tzinfo=UTC)


def test_quarantine_messages_never_contain_pii(tmp_path: Path) -> None:
    mapping = mapping_from_toml(
        """
[mapping]
name = "pii"
[columns]
ticket_id = "id"
region = "region"
status = "status"
created = "created"
csat = "csat"
requester_name = "name"
requester_email = "email"
requester_phone = "phone"
order_id = "order"
subject = "subject"
description = "description"
optional = ["subject"]
[extras]
birth = "birth"
"""
    )
    lines = [
        {"id": "Zed Quux", "region": "EMEA", "status": "open", "name": "Zed Quux"},
        {"id": "x1", "region": "EMEA", "status": "open", "created": "zed.quux@example.com"},
        {"id": "x2", "region": "EMEA", "status": "open", "email": ["zed.quux@example.com"]},
        {"id": "x3", "region": "EMEA", "status": "open", "phone": {"n": "+1 555 0100"}},
        {"id": "x4", "region": "EMEA", "status": "open", "csat": 9, "order": "ORD-99177"},
        {"id": "x5", "region": "EMEA", "status": "open", "description": ["Ann Lee"]},
        {"id": "x6", "region": "EMEA", "status": "open", "birth": {"d": "ann@x.org"}},
        {"id": "Zed Quux", "region": "EMEA", "status": "open"},
    ]
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    qpath = tmp_path / "q.jsonl"
    result = ingest_file(path, mapping, quarantine_path=qpath)
    _check_counts(result)
    assert [(q.reason, q.column) for q in result.quarantine] == [
        ("bad_date", "created"),
        ("bad_value", "email"),
        ("bad_value", "phone"),
        ("out_of_range", "csat"),
        ("bad_value", "description"),
        ("bad_value", "birth"),
        ("duplicate_id", "id"),
    ]
    written = qpath.read_text(encoding="utf-8")
    for entry in result.quarantine:
        for secret in (*PII, "Zed", "ORD-", "zed.quux"):
            assert secret not in entry.message  # not even an e-mail in a date column
    for secret in ("Zed Quux", "+1 555 0100", "ORD-99177", "Ann Lee", "ann@x.org"):
        assert secret not in written


def test_quarantine_file_is_private_jsonl(tmp_path: Path, generic: Mapping) -> None:
    path = _csv(tmp_path, GOOD, "T2,broken", GOOD.replace("T1", "T3").replace("APAC", ""))
    qpath = tmp_path / "q.jsonl"
    qpath.write_text("old content\n")
    qpath.chmod(0o644)
    result = ingest_file(path, generic, quarantine_path=qpath)
    assert stat.S_IMODE(qpath.stat().st_mode) == 0o600
    entries = [json.loads(line) for line in qpath.read_text().splitlines()]
    assert entries == [q.to_dict() for q in result.quarantine]
    assert [(e["line"], e["reason"]) for e in entries] == [
        (3, "malformed_row"),
        (4, "missing_required"),
    ]
    assert set(entries[0]) == {"line", "reason", "column", "message"}


def test_write_quarantine_creates_0600(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    write_quarantine([Quarantined(4, "bad_date", "c", "line 4: x")], path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {
        "line": 4,
        "reason": "bad_date",
        "column": "c",
        "message": "line 4: x",
    }
    with pytest.raises(InvalidArgument, match="cannot write quarantine"):
        write_quarantine([], tmp_path / "missing-dir" / "q.jsonl")


# ---------------------------------------------------------------- malformed CSV structure


def test_wrong_field_count_is_quarantined(tmp_path: Path, generic: Mapping) -> None:
    result = ingest_file(
        _csv(tmp_path, GOOD, "T2,only,three", GOOD.replace("T1,", "T3,") + ",extra"), generic
    )
    _check_counts(result)
    assert [t.ticket_id for t in result.tickets] == ["T1"]
    assert [(q.line, q.reason, q.column) for q in result.quarantine] == [
        (3, "malformed_row", None),
        (4, "malformed_row", None),
    ]
    assert "3 fields, header has 12" in result.quarantine[0].message


def test_unclosed_quote_loses_only_its_own_row(tmp_path: Path, generic: Mapping) -> None:
    bad = GOOD.replace("T1,", "T2,").replace(",Hi,", ',"Hi there,')
    rows = [GOOD, bad, *(GOOD.replace("T1,", f"T{i},") for i in range(3, 7))]
    result = ingest_file(_csv(tmp_path, *rows), generic)
    _check_counts(result)
    assert [t.ticket_id for t in result.tickets] == ["T1", "T3", "T4", "T5", "T6"]
    assert [t.line for t in result.tickets] == [2, 4, 5, 6, 7]
    q = _only(result)
    assert (q.line, q.reason) == (3, "malformed_row")


def test_stray_quote_is_quarantined(tmp_path: Path, generic: Mapping) -> None:
    bad = GOOD.replace("T1,", "T2,").replace(",Hi,", ',"Hi" there,')
    result = ingest_file(_csv(tmp_path, GOOD, bad, GOOD.replace("T1,", "T3,")), generic)
    q = _only(result)
    assert (q.line, q.reason) == (3, "malformed_row")
    assert [t.ticket_id for t in result.tickets] == ["T1", "T3"]


def test_multiline_quoted_text_keeps_line_numbers(tmp_path: Path, generic: Mapping) -> None:
    multi = GOOD.replace("T1,", "T2,").replace(",Hi,", ',"Hi,\nsecond line\nthird",')
    result = ingest_file(_csv(tmp_path, GOOD, multi, "", GOOD.replace("T1,", "T3,")), generic)
    _check_counts(result)
    assert [(t.ticket_id, t.line) for t in result.tickets] == [("T1", 2), ("T2", 3), ("T3", 7)]
    assert result.tickets[1].subject == "Hi,\nsecond line\nthird"


def test_byte_order_mark_and_crlf(tmp_path: Path, generic: Mapping) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + f"{HEADER}\r\n{GOOD}\r\n".encode())
    result = ingest_file(path, generic)
    _check_counts(result)
    assert result.tickets[0].ticket_id == "T1"
    assert result.tickets[0].extras == (("team", "A"),)


def test_header_case_insensitive_fallback(tmp_path: Path, generic: Mapping) -> None:
    result = ingest_file(_csv(tmp_path, GOOD, header=HEADER.upper()), generic)
    _check_counts(result)
    assert result.tickets[0].region == "APAC"


# ---------------------------------------------------------------- whole-file failures


def test_empty_file(tmp_path: Path, generic: Mapping) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(InvalidArgument) as info:
        ingest_file(path, generic)
    assert str(info.value) == f"{path}: empty file"
    blank = tmp_path / "blank.csv"
    blank.write_text("\n\n  \n")
    with pytest.raises(InvalidArgument, match="no header row"):
        ingest_file(blank, generic)


def test_header_only_file_has_no_rows(tmp_path: Path, generic: Mapping) -> None:
    result = ingest_file(_csv(tmp_path), generic)
    assert (result.summary.read, result.tickets, result.quarantine) == (0, [], [])


def test_non_utf8_file_names_line_and_byte(tmp_path: Path, generic: Mapping) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(
        f"{HEADER}\n{GOOD}\n".encode()
        + GOOD.replace("Ann", "Jos\xe9").replace("T1,", "T2,").encode("latin-1")
    )
    with pytest.raises(InvalidArgument) as info:
        ingest_file(path, generic)
    message = str(info.value)
    offset = len(f"{HEADER}\n{GOOD}\n".encode()) + GOOD.index("Ann") + 3
    assert message.startswith(f"{path}: line 3: not valid utf-8 at byte offset {offset}")
    assert "\n" not in message
    latin = mapping_from_toml(
        """
[mapping]
name = "latin"
[source]
encoding = "latin-1"
[columns]
ticket_id = "ticket_id"
region = "region"
status = "status"
requester_name = "requester_name"
"""
    )
    result = ingest_file(path, latin)
    assert [t.requester_name for t in result.tickets] == ["Ann Lee", "José Lee"]


def test_csv_without_header(tmp_path: Path, generic: Mapping) -> None:
    path = tmp_path / "nohead.csv"
    path.write_text(f"{GOOD}\n{GOOD.replace('T1,', 'T2,')}\n")
    with pytest.raises(InvalidArgument) as info:
        ingest_file(path, generic)
    assert "none of the mapping's columns" in str(info.value)
    assert "line 1" in str(info.value)


def test_required_column_missing_from_header(tmp_path: Path, generic: Mapping) -> None:
    path = _csv(tmp_path, "T1,APAC", header="ticket_id,region")
    with pytest.raises(InvalidArgument) as info:
        ingest_file(path, generic)
    assert str(info.value) == (
        f"{path}: mapping column 'status' (columns.status) not in file header (line 1)"
    )


def test_duplicate_mapped_header_column(tmp_path: Path, generic: Mapping) -> None:
    path = _csv(tmp_path, "T1,APAC,open,EMEA", header="ticket_id,region,status,region")
    with pytest.raises(InvalidArgument, match="'region' appears 2 times"):
        ingest_file(path, generic)


def test_unknown_column_in_mapping_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text(
        '[mapping]\nname = "x"\n[columns]\nticket_id = "id"\nregion = "r"\nstatus = "s"\n'
        'satisfaction = "csat"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_mapping(path)
    assert str(info.value).startswith(f"{path}: unknown key columns.satisfaction")


def test_missing_unreadable_and_oversized(
    tmp_path: Path, generic: Mapping, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InvalidArgument, match="file not found"):
        ingest_file(tmp_path / "nope.csv", generic)
    folder = tmp_path / "dir.csv"
    folder.mkdir()
    with pytest.raises(InvalidArgument, match="not a regular file"):
        ingest_file(folder, generic)
    path = _csv(tmp_path, GOOD)
    monkeypatch.setattr(ingest_mod, "MAX_FILE_BYTES", 10)
    with pytest.raises(InvalidArgument, match="larger than 10 bytes"):
        ingest_file(path, generic)


def test_format_from_extension_or_mapping(tmp_path: Path, generic: Mapping) -> None:
    path = _csv(tmp_path, GOOD, name="export.txt")
    with pytest.raises(InvalidArgument, match="cannot tell the format"):
        ingest_file(path, generic)
    forced = mapping_from_toml(
        '[mapping]\nname = "x"\n[source]\nformat = "csv"\n'
        '[columns]\nticket_id = "ticket_id"\nregion = "region"\nstatus = "status"\n'
    )
    assert [t.ticket_id for t in ingest_file(path, forced).tickets] == ["T1"]
    sql = mapping_from_toml(
        '[mapping]\nname = "db"\n[source]\nformat = "sql"\n'
        '[columns]\nticket_id = "ticket_id"\nregion = "region"\nstatus = "status"\n'
    )
    with pytest.raises(InvalidArgument, match="SQL source"):
        ingest_file(path, sql)


# ---------------------------------------------------------------- JSONL


def test_jsonl(tmp_path: Path, generic: Mapping) -> None:
    records = [
        {
            "ticket_id": 17,
            "status": "Resolved",
            "region": "EMEA",
            "csat_score": 4.0,
            "first_response_minutes": 30,
            "nps_score": None,
            "requester_email": "a@b.c",
        },
        "not json {",
        [1, 2],
        {"ticket_id": "x", "status": "Resolved", "region": "EMEA", "csat_score": 2.5},
    ]
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    lines.insert(1, "")
    lines.append('{"ticket_id": "y", "status": "open", "region": "APAC", "csat_score": NaN}')
    path = tmp_path / "t.ndjson"
    path.write_text("\n".join(lines) + "\n")
    result = ingest_file(path, generic)
    _check_counts(result)
    (t,) = result.tickets
    assert (t.ticket_id, t.line, t.csat, t.first_response_hours, t.nps) == ("17", 1, 4, 0.5, None)
    assert t.requester_email == "a@b.c"
    assert t.extras == (("team", ""),)
    assert [(q.line, q.reason) for q in result.quarantine] == [
        (3, "malformed_row"),
        (4, "malformed_row"),
        (5, "bad_number"),
        (6, "malformed_row"),
    ]
    assert "NaN" in result.quarantine[3].message


def test_jsonl_required_column_never_present(tmp_path: Path, generic: Mapping) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"ticket_id": "a", "region": "EMEA", "state": "open"}\n')
    with pytest.raises(InvalidArgument) as info:
        ingest_file(path, generic)
    assert "mapping column 'status' (columns.status) not in any record" in str(info.value)
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n \n")
    with pytest.raises(InvalidArgument, match="no records"):
        ingest_file(blank, generic)


def test_ingest_rows(generic: Mapping) -> None:
    rows = [
        {"ticket_id": "a", "status": "Escalated", "region": "EMEA", "team": "Team_X"},
        {"ticket_id": "b", "status": "Resolved", "region": "EMEA", "csat_score": "9"},
    ]
    result = ingest_rows(rows, generic, source="synthetic")
    assert result.summary.source == "synthetic"
    assert [t.line for t in result.tickets] == [1]
    assert result.tickets[0].extras == (("team", "Team_X"),)
    assert _only(result).reason == "out_of_range"
    with pytest.raises(InvalidArgument, match=r"'region' \(columns\.region\) not in any record"):
        ingest_rows([{"ticket_id": "a", "status": "open"}], generic)


# ---------------------------------------------------------------- presets on sample exports


def test_zendesk_like_export(tmp_path: Path) -> None:
    header = (
        "Id,Requester,Requester email,Subject,Description,Status,Via,Priority,Created at,"
        "Solved at,Satisfaction Score,First reply time in minutes,"
        "Full resolution time in minutes,Region,Organization"
    )
    rows = [
        '101,Ann Lee,ann@x.org,Login,"Cannot log in, help",Solved,Web,high,'
        "2024-10-29 22:00:00 +0100,29/10/2024 23:30,Good,45,90,EMEA,Acme",
        "102,Bo,bo@y.org,Refund,Where is it,On-hold,Email,low,30/10/2024 08:00,,Offered,,,APAC,",
        "103,Cy,cy@z.org,Other,Hm,Pending,Email,low,31/10/2024 08:00,,Bad,10,,Americas,",
    ]
    result = ingest_file(_csv(tmp_path, *rows, header=header), load_mapping("zendesk"))
    _check_counts(result)
    assert result.summary.accepted == 3
    t1, t2, t3 = result.tickets
    assert t1.created == datetime(2024, 10, 29, 21, 0, tzinfo=UTC)
    assert t1.resolved_at == datetime(2024, 10, 29, 23, 30, tzinfo=UTC)
    assert (t1.status, t1.csat, t1.first_response_hours, t1.resolution_hours) == (
        Status.RESOLVED,
        5,
        0.75,
        1.5,
    )
    assert t1.extras == (("organization", "Acme"),)
    assert (t2.status, t2.csat, t2.created) == (
        Status.OPEN,
        None,
        datetime(2024, 10, 30, 8, 0, tzinfo=UTC),
    )
    assert t3.csat == 1


def test_freshdesk_like_export(tmp_path: Path) -> None:
    header = (
        "Ticket ID,Subject,Description,Status,Priority,Source,Type,Created time,Resolved time,"
        "First response time (in hrs),Resolution time (in hrs),Contact,Email,Phone,"
        "Survey results,Region,Company Name"
    )
    rows = [
        "9,Broken,It broke,Closed,Urgent,Portal,Incident,2024-10-29 10:00:00,"
        "2024-10-29 14:00:00,00:30:00,4.0,Dee,dee@x.org,+44 20 7946 0000,Awesome,EMEA,Initech",
        "10,Slow,Slow,Waiting on Customer,Low,Email,Question,29-10-2024 10:00,,1.25,,Eve,"
        "eve@x.org,,Not Good,APAC,",
    ]
    result = ingest_file(_csv(tmp_path, *rows, header=header), load_mapping("freshdesk"))
    _check_counts(result)
    t1, t2 = result.tickets
    assert (t1.status, t1.csat, t1.first_response_hours, t1.resolution_hours) == (
        Status.RESOLVED,
        5,
        0.5,
        4.0,
    )
    assert t1.requester_phone == "+44 20 7946 0000"
    assert (t2.status, t2.csat, t2.first_response_hours) == (Status.OPEN, 1, 1.25)
    assert t2.created == datetime(2024, 10, 29, 10, 0, tzinfo=UTC)


# ---------------------------------------------------------------- property: nothing is lost


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(
            st.sampled_from(
                [
                    "T1",
                    "T2",
                    "",
                    "APAC",
                    "open",
                    "Resolved",
                    "7",
                    "2.0",
                    '"',
                    "x,y",
                    "2024-01-02",
                    "2024-01-09 10:00",
                    "\n",
                    "zz",
                ]
            ),
            min_size=1,
            max_size=6,
        ),
        max_size=12,
    )
)
def test_every_row_is_counted(rows: list[list[str]]) -> None:
    import tempfile

    mapping = mapping_from_toml(
        '[mapping]\nname = "p"\n[columns]\nticket_id = "id"\nregion = "region"\n'
        'status = "status"\ncsat = "csat"\ncreated = "created"\n'
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.csv"
        body = "\n".join(",".join(r) for r in rows)
        path.write_text(f"id,region,status,csat,created\n{body}\n", encoding="utf-8")
        result = ingest_file(path, mapping)
        # The same rows for a round whose window is the week of 2024-01-08: still every
        # row counted once, as accepted, quarantined or outside the window.
        windowed = ingest_file(path, mapping, window=parse_week("2024-W02"))
    for each in (result, windowed):
        _check_counts(each)
        assert {q.reason for q in each.quarantine} <= set(ingest_mod.REASONS)
        assert all(q.line >= 2 for q in each.quarantine)
        assert all(t.line >= 2 for t in each.tickets)
    assert result.summary.outside_window == 0
    assert all(t.created is not None and t.created.day == 9 for t in windowed.tickets)


# ---------------------------------------------------------------- SQL sources


SQL_ROWS = [
    ("s1", "APAC", "Resolved", "2024-10-29 22:00:00", 5, 90.0, "Ann Lee", "T_A"),
    ("s2", "EMEA", "Escalated", "2024-10-30 08:00:00", None, None, "Bo", "T_A"),
    ("s3", "EMEA", "Resolved", "2024-10-31 08:00:00", 7, 10.0, "Cy", "T_B"),
    ("s4", "EMEA", "Resolved", "not a date", 3, 10.0, "Di", "T_B"),
]
SQL_QUERY = (
    "SELECT ticket_id, region, status, created_date, csat_score, first_response_minutes, "
    "requester_name, team FROM {table} ORDER BY ticket_id"
)


def _check_sql_result(result: IngestResult) -> None:
    _check_counts(result)
    assert result.summary.read == 4
    assert [(t.line, t.ticket_id) for t in result.tickets] == [(1, "s1"), (2, "s2")]
    s1, s2 = result.tickets
    assert s1.created == datetime(2024, 10, 29, 22, 0, tzinfo=UTC)
    assert (s1.csat, s1.first_response_hours, s1.requester_name) == (5, 1.5, "Ann Lee")
    assert s1.extras == (("team", "T_A"),)
    assert (s2.status, s2.csat, s2.first_response_hours) == (Status.ESCALATED, None, None)
    assert [(q.line, q.reason, q.column) for q in result.quarantine] == [
        (3, "out_of_range", "csat_score"),
        (4, "bad_date", "created_date"),
    ]


def test_sql_sqlite(tmp_path: Path, generic: Mapping) -> None:
    db = tmp_path / "tickets.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE tickets (ticket_id TEXT, region TEXT, status TEXT, created_date TEXT, "
            "csat_score INTEGER, first_response_minutes REAL, requester_name TEXT, team TEXT)"
        )
        conn.executemany("INSERT INTO tickets VALUES (?,?,?,?,?,?,?,?)", SQL_ROWS)
    conn.close()
    qpath = tmp_path / "q.jsonl"
    result = ingest_sql(
        f"sqlite:///{db}", SQL_QUERY.format(table="tickets"), generic, quarantine_path=qpath
    )
    _check_sql_result(result)
    assert result.summary.source == f"sqlite:///{db}"
    assert len(qpath.read_text().splitlines()) == 2


def test_sql_errors(tmp_path: Path, generic: Mapping) -> None:
    with pytest.raises(InvalidArgument, match="not a valid SQLAlchemy"):
        ingest_sql("not a url", "SELECT 1", generic)
    with pytest.raises(InvalidArgument, match="database file not found"):
        ingest_sql(f"sqlite:///{tmp_path / 'missing.db'}", "SELECT 1", generic)
    assert not (tmp_path / "missing.db").exists()
    db = tmp_path / "e.db"
    sqlite3.connect(db).close()
    with pytest.raises(InvalidArgument) as info:
        ingest_sql(f"sqlite:///{db}", "SELECT * FROM nope", generic)
    assert "query failed (no such table: nope)" in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(InvalidArgument, match=r"columns\.status\) not in query result"):
        ingest_sql(f"sqlite:///{db}", "SELECT 'a' AS ticket_id, 'EMEA' AS region", generic)
    with pytest.raises(InvalidArgument) as info:
        ingest_sql("postgresql://u:s3cr3t@127.0.0.1:1/x", "SELECT 1", generic)
    assert "s3cr3t" not in str(info.value)
    assert "***" in str(info.value)


@pytest.fixture
def pg_table(pg_url: str) -> Iterator[tuple[str, str]]:
    """(database URL, table) in a database made for this test alone."""
    import psycopg

    table = f"blindsum_ingest_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url) as conn:
        conn.execute(
            f"CREATE TABLE {table} (ticket_id TEXT, region TEXT, status TEXT, "
            "created_date TEXT, csat_score NUMERIC, first_response_minutes DOUBLE PRECISION, "
            "requester_name TEXT, team TEXT, created_ts TIMESTAMPTZ)"
        )
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {table} VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                [
                    (*row, datetime(2024, 10, 29, 23, 0, tzinfo=UTC) if i == 0 else None)
                    for i, row in enumerate(SQL_ROWS)
                ],
            )
    yield pg_url, table


@pytest.mark.postgres
def test_sql_postgres(pg_table: tuple[str, str], generic: Mapping) -> None:
    url, table = pg_table
    result = ingest_sql(url, SQL_QUERY.format(table=table), generic)
    _check_sql_result(result)
    assert result.summary.source == url
    # Native timestamps and numerics from the driver are handled too.
    native = ingest_sql(
        url,
        f"SELECT ticket_id, region, status, created_ts AS created_date, csat_score "
        f"FROM {table} WHERE ticket_id = 's1'",
        generic,
    )
    _check_counts(native)
    (t,) = native.tickets
    assert t.created == datetime(2024, 10, 29, 23, 0, tzinfo=UTC)
    assert t.csat == 5


# ---------------------------------------------------------------- review 3: JSONL parse failures


def test_jsonl_deep_nesting_and_other_parse_failures_are_quarantined(
    tmp_path: Path, generic: Mapping
) -> None:
    good = {"ticket_id": "J1", "region": "EMEA", "status": "Resolved"}
    lines = [
        json.dumps(good),
        "[" * 100_000,
        '{"ticket_id": ' * 50_000,
        '{"ticket_id": "J9", "region": "EMEA", "status": "open", "csat_score": ' + "7" * 5000 + "}",
        json.dumps(dict(good, ticket_id="J2")),
    ]
    path = tmp_path / "deep.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    qpath = tmp_path / "q.jsonl"
    result = ingest_file(path, generic, quarantine_path=qpath)
    _check_counts(result)
    assert [(t.ticket_id, t.line) for t in result.tickets] == [("J1", 1), ("J2", 5)]
    assert [(q.line, q.reason, q.message) for q in result.quarantine] == [
        (2, "malformed_row", "line 2: not valid JSON (nested too deeply)"),
        (3, "malformed_row", "line 3: not valid JSON (nested too deeply)"),
        (4, "malformed_row", "line 4: not valid JSON (unreadable value)"),
    ]
    assert "7777" not in qpath.read_text(encoding="utf-8")


# ---------------------------------------------------------------- review 3: no PII in messages

NAME, PHONE = "John Smith", "555-1234"


def _assert_no_name_or_phone(result: IngestResult, qpath: Path) -> None:
    written = qpath.read_text(encoding="utf-8") + result.summary.to_json()
    written += "".join(q.message for q in result.quarantine)
    for needle in ("John", "Smith", "555", "1234", "0100", "Ann", "Lee"):
        assert needle not in written, needle


def test_no_name_or_phone_from_any_quarantined_cell(tmp_path: Path) -> None:
    mapping = mapping_from_toml(
        """
[mapping]
name = "pii"
[columns]
ticket_id = "id"
region = "region"
status = "status"
created = "created"
resolved_at = "resolved"
first_response_hours = { column = "frt", unit = "minutes" }
csat = "csat"
nps = "nps"
requester_name = "name"
[extras]
team = "team"
"""
    )
    header = "id,region,status,created,resolved,frt,csat,nps,name,team"
    ok = ["EMEA", "open", "2024-10-01", "", "", "", "", "x", "T"]
    cells = {
        "status": f"Please call {NAME} at {PHONE}",
        "created": NAME,
        "resolved": PHONE,
        "frt": f"{PHONE}",
        "csat": "John",
        "nps": "+1 555 0100",
    }
    rows = []
    names = header.split(",")
    for i, (column, value) in enumerate(cells.items()):
        row = dict(zip(names[1:], ok, strict=True))
        row[column] = value
        rows.append(",".join([f"R{i}", *(row[n] for n in names[1:])]))
    rows.append(",".join(["R8", *ok[:5], "5551234", *ok[6:]]))  # csat: a phone as a number
    rows.append(",".join(["R9", *ok[:5], "", "12345678", *ok[7:]]))  # nps: out of range
    # The reviewer's resync case: a continuation line lands in the status column.
    rows.append('R10,EMEA,open,2024-10-01,,,,,"Hello')
    rows.append(f'A1,EMEA,Please call {NAME} at {PHONE},2024-10-01,,,,,F,G"')
    path = _csv(tmp_path, *rows, header=header)
    qpath = tmp_path / "q.jsonl"
    result = ingest_file(path, mapping, quarantine_path=qpath)
    _check_counts(result)
    assert result.tickets == []
    assert {q.reason for q in result.quarantine} == {
        "unknown_status",
        "bad_date",
        "bad_number",
        "out_of_range",
        "malformed_row",
    }
    _assert_no_name_or_phone(result, qpath)
    status = next(q for q in result.quarantine if q.reason == "unknown_status")
    assert "a value of 34 characters: letters, digits, spaces, punctuation" in status.message


def test_sql_name_in_score_column_is_not_echoed(tmp_path: Path, generic: Mapping) -> None:
    db = tmp_path / "t.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (ticket_id, region, status, created_date, csat_score)")
        conn.executemany(
            "INSERT INTO t VALUES (?,?,?,?,?)",
            [
                (1, "EMEA", "Resolved", "2024-10-01", "Ann Lee"),
                (2, "EMEA", "Resolved", "2024-10-01", b"\x01"),
                (3, "EMEA", "Resolved", 5551234, 4),
                (4, "EMEA", "John Smith", "2024-10-01", 4),
            ],
        )
    conn.close()
    qpath = tmp_path / "q.jsonl"
    result = ingest_sql(f"sqlite:///{db}", "SELECT * FROM t", generic, quarantine_path=qpath)
    _check_counts(result)
    assert [q.reason for q in result.quarantine] == [
        "bad_number",
        "bad_number",
        "bad_date",
        "unknown_status",
    ]
    assert "(a binary value of 1 byte)" in result.quarantine[1].message
    _assert_no_name_or_phone(result, qpath)


def test_jsonl_name_in_status_is_not_echoed(tmp_path: Path, generic: Mapping) -> None:
    path = tmp_path / "t.jsonl"
    records = [
        {"ticket_id": "a", "region": "EMEA", "status": NAME},
        {"ticket_id": "b", "region": "EMEA", "status": "open", "created_date": PHONE},
        {"ticket_id": "c", "region": "EMEA", "status": "open", "csat_score": 5551234},
    ]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    qpath = tmp_path / "q.jsonl"
    result = ingest_file(path, generic, quarantine_path=qpath)
    assert [q.reason for q in result.quarantine] == ["unknown_status", "bad_date", "out_of_range"]
    _assert_no_name_or_phone(result, qpath)


@pytest.mark.parametrize(
    ("column", "value", "shown"),
    [
        ("created_date", "2024-13-45", "'2024-13-45'"),
        ("created_date", "31/02/2024 10:00", "'31/02/2024 10:00'"),
        ("created_date", "2024-10-29 22:00:00 +0100x", "(a value of 26 characters:"),
        ("created_date", "12-34-5678", "(a value of 10 characters: digits, punctuation)"),
        ("status", "Archived", "'Archived'"),
        ("status", "Waiting on Third Party", "'Waiting on Third Party'"),
        ("status", "Smith", "(a value of 5 characters: letters)"),
        ("csat_score", "4.5", "'4.5'"),
        ("csat_score", "12345", "(a value of 5 characters: digits)"),
        ("csat_score", "Not Great", "'Not Great'"),
    ],
)
def test_bad_values_quoted_only_in_safe_shapes(
    tmp_path: Path, generic: Mapping, column: str, value: str, shown: str
) -> None:
    row = {"ticket_id": "T1", "region": "EMEA", "status": "open", column: value}
    header = ",".join(row)
    q = _only(ingest_file(_csv(tmp_path, ",".join(row.values()), header=header), generic))
    assert shown in q.message


def test_out_of_range_shows_only_short_numbers(tmp_path: Path, generic: Mapping) -> None:
    header = "ticket_id,region,status,csat_score"
    result = ingest_file(
        _csv(tmp_path, "a,EMEA,open,7", "b,EMEA,open,5551234", header=header), generic
    )
    assert [q.message for q in result.quarantine] == [
        "line 2, column 'csat_score' (csat): 7 is outside the scale 1..5",
        "line 3, column 'csat_score' (csat): (a value of 7 characters: digits) is outside "
        "the scale 1..5",
    ]


# ---------------------------------------------------------------- review 3: CSV recovery


PHANTOM_HEADER = "ticket_id,created_date,region,status,csat_score,requester_name,description"


def test_phantom_row_inside_a_quoted_field_is_not_accepted(
    tmp_path: Path, generic: Mapping
) -> None:
    # The reviewer's bad/phantom.csv: T1 lacks a field; its quoted description
    # holds a line that looks like a ticket row.
    rows = ['T1,2024-10-01,EMEA,5,Ann Lee,"Hello', 'T9,2024-10-01,EMEA,Resolved,5,F,G"']
    result = ingest_file(_csv(tmp_path, *rows, header=PHANTOM_HEADER), generic)
    q = _only(result)
    assert result.tickets == []
    assert result.summary.read == 1
    assert (q.line, q.reason, q.message) == (
        2,
        "malformed_row",
        "lines 2-3: 6 fields, header has 7",
    )


def test_rows_after_broken_quoting_are_in_doubt(tmp_path: Path, generic: Mapping) -> None:
    rows = [
        'T1,2024-10-01,EMEA,Resolved,5,Ann,"Hello',  # quote closed on the next line ...
        'T9,2024-10-01,EMEA,Resolved,5,F,G"x',  # ... then text after it: broken quoting
        "T2,2024-10-01,EMEA,Resolved,5,Bo,ok",
        'T3,2024-10-01,EMEA,Resolved,5,Cy,"quoted, fine"',
    ]
    result = ingest_file(_csv(tmp_path, *rows, header=PHANTOM_HEADER), generic)
    _check_counts(result)
    assert [t.ticket_id for t in result.tickets] == ["T2", "T3"]
    assert [(q.line, q.reason, q.message) for q in result.quarantine] == [
        (2, "malformed_row", "lines 2-3: malformed CSV (',' expected after '\"')"),
        (3, "malformed_row", "line 3: follows a malformed record (line 2); not trusted"),
    ]


def test_in_doubt_row_with_a_quote_or_several_lines_is_not_trusted(
    tmp_path: Path, generic: Mapping
) -> None:
    rows = [
        'T1,2024-10-01,EMEA,Resolved,5,"Ann,x"y',  # broken on one line
        'T2,2024-10-01,EMEA,Resolved,5,"Bo",ok',  # the line right after it: in doubt, quoted
        "T3,2024-10-01,EMEA,Resolved,5,Cy,ok",
    ]
    result = ingest_file(_csv(tmp_path, *rows, header=PHANTOM_HEADER), generic)
    _check_counts(result)
    assert [t.ticket_id for t in result.tickets] == ["T3"]
    assert [(q.line, q.message) for q in result.quarantine] == [
        (2, "line 2: malformed CSV (',' expected after '\"')"),
        (3, "line 3: follows a malformed record (line 2); not trusted"),
    ]


def test_long_fields_are_accepted_and_records_counted_once(
    tmp_path: Path, generic: Mapping
) -> None:
    # The reviewer's bad/huge.csv: 200 KB and 140 KB fields (over csv's default
    # 128 KiB limit); 6 records must give read == 6.
    thread = "x" * 200_000
    rows = [
        f"T1,2024-10-01,EMEA,Resolved,5,Ann,{thread}",
        'T2,2024-10-01,EMEA,Resolved,5,Bo,"multi\nline\ndesc, with, commas"',
        f'T3,2024-10-01,EMEA,Resolved,5,Cy,"{"y" * 140_000}\nmore"',
        "T4,2024-10-01,emea,Resolved,5,Di,lowercase region",
        "T5,2024-10-01,EMEA,resolved ,5.0,Ed,score 5.0",
        "T6,2024-10-01,EMEA,Resolved,4.5,Ed,score 4.5",
    ]
    result = ingest_file(_csv(tmp_path, *rows, header=PHANTOM_HEADER), generic)
    _check_counts(result)
    assert result.summary.read == 6
    assert [t.ticket_id for t in result.tickets] == ["T1", "T2", "T3", "T4", "T5"]
    assert result.tickets[0].description == thread
    assert _only(result).reason == "bad_number"


def test_field_over_the_limit_is_quarantined_and_what_follows_is_in_doubt(
    tmp_path: Path, generic: Mapping, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [
        f'T1,2024-10-01,EMEA,Resolved,5,Ann,"{"x" * 3000}',
        'more"',
        "T2,2024-10-01,EMEA,Resolved,5,Bo,ok",
    ]
    path = _csv(tmp_path, *rows, header=PHANTOM_HEADER)
    limit = csv.field_size_limit()
    monkeypatch.setattr(ingest_mod, "CSV_FIELD_LIMIT", 1000)
    try:
        result = ingest_file(path, generic)
    finally:
        csv.field_size_limit(limit)
    _check_counts(result)
    assert [t.ticket_id for t in result.tickets] == ["T2"]
    assert [(q.line, q.message) for q in result.quarantine] == [
        (2, "line 2: malformed CSV (field larger than field limit (1000))"),
        (3, "line 3: follows a malformed record (line 2); not trusted"),
    ]


def test_re_reading_after_broken_quotes_is_bounded(
    tmp_path: Path, generic: Mapping, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [
        'T1,2024-10-01,EMEA,Resolved,5,Ann,"unclosed',
        *(f"T{i},2024-10-01,EMEA,Resolved,5,Bo,ok" for i in range(2, 50)),
    ]
    path = _csv(tmp_path, *rows, header=PHANTOM_HEADER)
    result = ingest_file(path, generic)
    _check_counts(result)
    assert len(result.tickets) == 48  # one return to line 3 recovers every row
    monkeypatch.setattr(ingest_mod, "CSV_REREAD_FACTOR", 0)
    with pytest.raises(InvalidArgument, match="too many malformed multi-line records"):
        ingest_file(path, generic)


# ---------------------------------------------------------------- review 3: mapped columns


MINIMAL_TOML = (
    '[mapping]\nname = "m"\n[columns]\nticket_id = "id"\nregion = "region"\nstatus = "status"\n'
)

TYPO = """
[mapping]
name = "typo"
[columns]
ticket_id = "ticket_id"
region = "region"
status = "status"
csat = "csat_scroe"
nps = "nps_score"
{optional}
"""


def test_misspelled_column_is_an_error_naming_key_and_column(tmp_path: Path) -> None:
    path = _csv(tmp_path, "T1,EMEA,open,5", header="ticket_id,region,status,csat_score")
    with pytest.raises(InvalidArgument) as info:
        ingest_file(path, mapping_from_toml(TYPO.format(optional="")))
    assert str(info.value) == (
        f"{path}: mapping column 'csat_scroe' (columns.csat) not in file header (line 1), "
        "which has 'csat_score': a typo in the mapping? (1 more mapped column missing too)"
    )
    # Declared optional, an absent column is fine -- but a near-miss is still a typo.
    optional = mapping_from_toml(TYPO.format(optional='optional = ["csat", "nps"]'))
    with pytest.raises(InvalidArgument, match="which has 'csat_score': a typo"):
        ingest_file(path, optional)
    fixed = mapping_from_toml(
        TYPO.format(optional='optional = ["nps"]').replace("csat_scroe", "csat_score")
    )
    assert [t.csat for t in ingest_file(path, fixed).tickets] == [5]


def test_absent_column_not_optional_is_an_error(tmp_path: Path) -> None:
    path = _csv(tmp_path, "T1,EMEA,open", header="ticket_id,region,status")
    mapping = mapping_from_toml(TYPO.format(optional='optional = ["csat"]'))
    with pytest.raises(InvalidArgument) as info:
        ingest_file(path, mapping)
    message = str(info.value)
    assert message == (
        f"{path}: mapping column 'nps_score' (columns.nps) not in file header (line 1); "
        "fix the name, or list nps in columns.optional"
    )
    both = mapping_from_toml(TYPO.format(optional='optional = ["csat", "nps"]'))
    (t,) = ingest_file(path, both).tickets
    assert (t.csat, t.nps) == (None, None)


def test_absent_extra_must_be_optional(tmp_path: Path) -> None:
    text = MINIMAL_TOML + '[extras]\nteam = "Team"\n'
    path = _csv(tmp_path, "T1,EMEA,open", header="id,region,status")
    with pytest.raises(InvalidArgument, match=r"'Team' \(extras\.team\).*list team in columns"):
        ingest_file(path, mapping_from_toml(text))
    lenient = mapping_from_toml(text.replace("[extras]", 'optional = ["team"]\n[extras]'))
    assert ingest_file(path, lenient).tickets[0].extras == (("team", ""),)


def test_reviewer_typo_mapping_against_the_dataset_header(tmp_path: Path) -> None:
    import importlib.resources

    text = importlib.resources.files("party").joinpath("mappings", "generic.toml").read_text()
    typo = mapping_from_toml(text.replace('csat = "csat_score"', 'csat = "csat_scroe"'))
    header = (
        "ticket_id,created_date,channel,category,priority,agent,team,first_response_minutes,"
        "resolution_hours,status,resolved_date,csat_score,region,country,response_sla_met,"
        "resolution_sla_met,month,week,day_of_week,hour_of_day"
    )
    row = (
        "TKT-1,2024-10-29 22:00:00,Chat,Account Access,Low,Agent_022,Team_Beta,261.3,17.2,"
        "Resolved,2024-10-30 15:15:11,2.0,APAC,Australia,False,True,2024-10,w,Tuesday,22"
    )
    path = _csv(tmp_path, row, header=header)
    with pytest.raises(InvalidArgument, match=r"'csat_scroe' \(columns\.csat\).*'csat_score'"):
        ingest_file(path, typo)
    assert ingest_file(path, load_mapping("generic")).tickets[0].csat == 2


def test_jsonl_mapped_keys_are_checked_over_the_whole_file(tmp_path: Path) -> None:
    mapping = mapping_from_toml(
        TYPO.format(optional='optional = ["nps"]').replace("_scroe", "_score")
    )
    path = tmp_path / "t.jsonl"
    records: list[dict[str, object]] = [
        {"ticket_id": "a", "region": "EMEA", "status": "open"},
        {"ticket_id": "b", "region": "EMEA", "status": "open", "csat_score": 4},
    ]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    # csat_score appears only on line 2: fine; nps_score never: fine (optional).
    assert [t.csat for t in ingest_file(path, mapping).tickets] == [None, 4]
    path.write_text(json.dumps(records[0]) + "\n")
    with pytest.raises(InvalidArgument) as info:
        ingest_file(path, mapping)
    assert str(info.value) == (
        f"{path}: mapping column 'csat_score' (columns.csat) not in any record; "
        "fix the name, or list csat in columns.optional"
    )
    path.write_text(json.dumps(dict(records[0], csat_scroe=4)) + "\n")
    with pytest.raises(InvalidArgument, match="which has 'csat_scroe': a typo"):
        ingest_file(path, mapping)


def test_sql_result_columns_are_checked(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    sqlite3.connect(db).close()
    mapping = mapping_from_toml(TYPO.format(optional='optional = ["nps"]'))
    with pytest.raises(InvalidArgument) as info:
        ingest_sql(
            f"sqlite:///{db}",
            "SELECT 'a' AS ticket_id, 'EMEA' AS region, 'open' AS status, 4 AS csat",
            mapping,
        )
    assert "mapping column 'csat_scroe' (columns.csat) not in query result" in str(info.value)
    assert "\n" not in str(info.value)


def test_rows_with_a_never_seen_mapped_key_are_refused() -> None:
    strict = mapping_from_toml(MINIMAL_TOML + 'csat = "csat"\n')
    with pytest.raises(InvalidArgument, match=r"'csat' \(columns\.csat\) not in any record"):
        ingest_rows([{"id": "a", "region": "EMEA", "status": "open"}], strict)


# ---------------------------------------------------------------- a round's window


WINDOW_ROWS = (
    "w1,2024-10-28 00:00:00,Resolved,APAC,",  # the window's first instant
    "w2,2024-11-03 23:59:59,Resolved,APAC,",  # its last second
    "b1,2024-10-27 23:59:59,Resolved,APAC,",  # the week before
    "a1,2024-11-04 00:00:00,Resolved,APAC,",  # the window's end is exclusive
    "a2,2024-11-04 09:00:00,Resolved,MARS,9",  # bad, but outside: not this round's row
    "q1,,Resolved,APAC,",  # no created time: in no window
    "q2,someday,Resolved,APAC,",  # an unreadable one
    "q3,2024-10-30 10:00:00,Resolved,APAC,9",  # bad and inside: quarantined as before
)


def test_a_window_keeps_its_tickets_and_counts_the_others(tmp_path: Path, generic: Mapping) -> None:
    path = _csv(tmp_path, *WINDOW_ROWS, header="ticket_id,created_date,status,region,csat_score")
    result = ingest_file(path, generic, window=parse_week("2024-W44"))
    _check_counts(result)
    assert [t.ticket_id for t in result.tickets] == ["w1", "w2"]
    assert result.summary.outside_window == 3
    assert result.summary.in_window == 5
    assert [(q.line, q.reason, q.column) for q in result.quarantine] == [
        (7, "missing_created", "created_date"),
        (8, "bad_date", "created_date"),
        (9, "out_of_range", "csat_score"),
    ]
    assert "cannot be placed in the round's window" in result.quarantine[0].message
    assert json.loads(result.summary.to_json())["outside_window"] == 3
    # Without a window nothing is outside it, and a ticket without a created time is
    # accepted as before.
    whole = ingest_file(path, generic)
    _check_counts(whole)
    assert whole.summary.outside_window == 0
    assert {t.ticket_id for t in whole.tickets} == {"w1", "w2", "b1", "a1", "q1"}


def test_a_window_in_another_zone_is_read_in_utc(tmp_path: Path) -> None:
    mapping = mapping_from_toml(
        '[mapping]\nname = "tokyo"\n[columns]\nticket_id = "id"\nregion = "region"\n'
        'status = "status"\ncreated = "created"\n[dates]\ntimezone = "Asia/Tokyo"\n'
    )
    path = _csv(
        tmp_path,
        "t1,2024-10-28 08:59:00,Resolved,APAC",  # 2024-10-27 23:59 UTC: the week before
        "t2,2024-10-28 09:00:00,Resolved,APAC",  # 2024-10-28 00:00 UTC: in
        header="id,created,status,region",
    )
    result = ingest_file(path, mapping, window=parse_week("2024-W44"))
    assert [t.ticket_id for t in result.tickets] == ["t2"]
    assert result.summary.outside_window == 1


def test_a_window_needs_a_created_column(tmp_path: Path) -> None:
    mapping = mapping_from_toml(
        '[mapping]\nname = "undated"\n[columns]\nticket_id = "id"\nregion = "region"\n'
        'status = "status"\n'
    )
    path = _csv(tmp_path, "t1,APAC,Resolved", header="id,region,status")
    assert ingest_file(path, mapping).summary.accepted == 1
    with pytest.raises(InvalidArgument, match="maps no created column") as err:
        ingest_file(path, mapping, window=parse_week("2024-W44"))
    assert err.value.field == mapping.origin


def test_sql_rows_are_windowed_too(tmp_path: Path, generic: Mapping) -> None:
    db = tmp_path / "t.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (ticket_id TEXT, region TEXT, status TEXT, created_date TEXT)")
        conn.executemany(
            "INSERT INTO t VALUES (?, ?, ?, ?)",
            [
                ("s1", "APAC", "Resolved", "2024-10-29 22:00:00"),
                ("s2", "APAC", "Resolved", "2024-11-05 08:00:00"),
            ],
        )
    result = ingest_sql(
        f"sqlite:///{db}",
        "SELECT * FROM t ORDER BY ticket_id",
        generic,
        window=parse_week("2024-W44"),
    )
    assert [t.ticket_id for t in result.tickets] == ["s1"]
    assert (result.summary.read, result.summary.outside_window) == (2, 1)
