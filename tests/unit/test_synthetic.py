"""party.synthetic: seeded, realistic ticket exports in the generic preset's columns."""

from __future__ import annotations

import csv
import json
import statistics
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from blindsum.errors import InvalidArgument
from blindsum.schema import Schema
from party.ingest import ingest_file
from party.mapping import load_mapping
from party.metrics import compute_metrics
from party.synthetic import COLUMNS, NPS_COLUMN, TeamProfile, generate_rows, write_rows

START = date(2024, 10, 28)


@pytest.fixture(scope="module")
def big_rows() -> list[dict[str, str]]:
    """Enough tickets per region for the rates to be stable (deterministic seed)."""
    profile = TeamProfile("Team_Big", tickets_per_region=2500, failure_region="EMEA")
    return generate_rows(profile, seed=7, start=START)


def _by_region(rows: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        out.setdefault(row["region"], []).append(row)
    return out


def test_deterministic_per_seed() -> None:
    profile = TeamProfile("Team_Alpha", tickets_per_region=40)
    first = generate_rows(profile, seed=1, start=START)
    assert first == generate_rows(profile, seed=1, start=START)
    assert first != generate_rows(profile, seed=2, start=START)
    # The team name is part of the seed: two teams with one demo seed still differ.
    other = generate_rows(TeamProfile("Team_Beta", tickets_per_region=40), seed=1, start=START)
    assert [r["requester_email"] for r in first] != [r["requester_email"] for r in other]


def test_shape_of_the_export() -> None:
    profile = TeamProfile("Team_Alpha", regions=("APAC", "EMEA"), tickets_per_region=50)
    rows = generate_rows(profile, seed=3, start=START, days=3)
    assert len(rows) == 100
    assert all(tuple(row) == COLUMNS for row in rows)
    assert all(isinstance(v, str) for row in rows for v in row.values())
    assert Counter(r["region"] for r in rows) == {"APAC": 50, "EMEA": 50}
    assert {r["team"] for r in rows} == {"Team_Alpha"}
    ids = [r["ticket_id"] for r in rows]
    assert len(set(ids)) == len(ids)
    created = [datetime.strptime(r["created_date"], "%Y-%m-%d %H:%M:%S") for r in rows]
    assert created == sorted(created)  # ids follow creation order
    begin = datetime(2024, 10, 28)
    assert all(begin <= c < begin + timedelta(days=3) for c in created)
    for row in rows:
        # Resolved tickets have a resolution; CSAT only comes from resolved tickets.
        assert (row["status"] == "Resolved") == (row["resolution_hours"] != "")
        assert (row["resolved_date"] != "") == (row["resolution_hours"] != "")
        if row["csat_score"]:
            assert row["status"] == "Resolved"
            assert 1 <= int(row["csat_score"]) <= 5
        if row["nps_score"]:
            assert 0 <= int(row["nps_score"]) <= 10
        assert float(row["first_response_minutes"]) > 0
        assert row["status"] in {"Open", "In Progress", "Pending", "Escalated", "Resolved"}


def test_nps_column_is_omitted_when_rate_is_zero() -> None:
    rows = generate_rows(TeamProfile("T", tickets_per_region=10, nps_rate=0.0), seed=1, start=START)
    assert all(NPS_COLUMN not in row for row in rows)
    assert all(len(row) == len(COLUMNS) - 1 for row in rows)


def test_failure_region_escalates_about_three_times_as_often(
    big_rows: list[dict[str, str]],
) -> None:
    rates = {
        region: sum(r["status"] == "Escalated" for r in rows) / len(rows)
        for region, rows in _by_region(big_rows).items()
    }
    normal = (rates["APAC"] + rates["Americas"]) / 2
    assert 0.03 <= rates["APAC"] <= 0.07
    assert 0.03 <= rates["Americas"] <= 0.07
    assert 2.3 <= rates["EMEA"] / normal <= 3.8


def test_failure_region_has_worse_csat_and_longer_resolutions(
    big_rows: list[dict[str, str]],
) -> None:
    regions = _by_region(big_rows)

    def csat(region: str) -> list[int]:
        return [int(r["csat_score"]) for r in regions[region] if r["csat_score"]]

    def resolution(region: str) -> list[float]:
        return [float(r["resolution_hours"]) for r in regions[region] if r["resolution_hours"]]

    assert statistics.mean(csat("EMEA")) + 0.5 < statistics.mean(csat("APAC"))
    assert statistics.median(resolution("EMEA")) > 2 * statistics.median(resolution("APAC"))


def test_distributions_are_skewed_and_long_tailed(big_rows: list[dict[str, str]]) -> None:
    apac = _by_region(big_rows)["APAC"]
    scores = Counter(int(r["csat_score"]) for r in apac if r["csat_score"])
    total = sum(scores.values())
    assert (scores[4] + scores[5]) / total > 0.65  # mostly happy
    assert scores[1] > 0  # but not only
    hours = [float(r["resolution_hours"]) for r in apac if r["resolution_hours"]]
    median = statistics.median(hours)
    assert statistics.mean(hours) > 1.3 * median  # right-skewed
    assert max(hours) > 10 * median  # a long tail
    assert min(hours) > 0


def test_repeat_customers(big_rows: list[dict[str, str]]) -> None:
    per_customer = Counter(r["requester_email"] for r in big_rows)
    repeats = [n for n in per_customer.values() if n >= 2]
    assert len(repeats) > 0.05 * len(per_customer)
    assert max(per_customer.values()) >= 3
    # Most customers still file a single ticket.
    assert sum(1 for n in per_customer.values() if n == 1) > len(per_customer) / 2


def test_pii_is_embedded_in_the_free_text() -> None:
    rows = generate_rows(TeamProfile("Team_PII", tickets_per_region=100), seed=11, start=START)
    found: Counter[str] = Counter()
    for row in rows:
        text = (row["subject"] + " " + row["description"]).lower()
        kinds = [
            kind
            for kind in ("requester_name", "requester_email", "requester_phone",
                         "requester_username", "order_id")
            if row[kind].lower() in text
        ]  # fmt: skip
        assert kinds, row["ticket_id"]  # every ticket leaks something
        found.update(kinds)
    # Each kind of identifier shows up in many tickets' text.
    for kind in ("requester_name", "requester_email", "requester_phone", "requester_username"):
        assert found[kind] > len(rows) / 10, kind
    assert found["order_id"] > len(rows) / 3
    # Sometimes in another case than the structured value.
    assert any(
        r["requester_email"].upper() in r["description"] and r["requester_email"] != ""
        for r in rows
    )


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_write_rows_round_trips(tmp_path: Path, suffix: str) -> None:
    rows = generate_rows(TeamProfile("Team_IO", tickets_per_region=5), seed=5, start=START)
    path = tmp_path / f"export{suffix}"
    write_rows(rows, path)
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            assert tuple(reader.fieldnames or ()) == COLUMNS
            back = list(reader)
    else:
        back = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert back == rows


def test_write_rows_rejects_bad_input(tmp_path: Path) -> None:
    rows = generate_rows(TeamProfile("T", tickets_per_region=2), seed=5, start=START)
    with pytest.raises(InvalidArgument, match=r"\.csv or \.jsonl"):
        write_rows(rows, tmp_path / "export.xlsx")
    broken = [rows[0], {k: v for k, v in rows[1].items() if k != "subject"}]
    with pytest.raises(InvalidArgument) as info:
        write_rows(broken, tmp_path / "export.csv")
    assert info.value.field == "rows[1]"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"failure_region": "Mars"}, "profile.failure_region"),
        ({"tickets_per_region": -1}, "profile.tickets_per_region"),
        ({"regions": ()}, "profile.regions"),
        ({"regions": ("APAC", "APAC")}, "profile.regions"),
        ({"escalation_multiplier": 0.0}, "profile.escalation_multiplier"),
        ({"escalation_multiplier": 50.0}, "profile.escalation_multiplier"),
        ({"nps_rate": 1.5}, "profile.nps_rate"),
    ],
)
def test_profile_validation(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        TeamProfile("T", **kwargs)  # type: ignore[arg-type]  # values chosen per case
    assert info.value.field == field


def test_generate_rows_validation() -> None:
    profile = TeamProfile("T", tickets_per_region=1)
    with pytest.raises(InvalidArgument) as info:
        generate_rows(profile, seed=1, start=START, days=0)
    assert info.value.field == "days"


def test_generated_export_goes_through_ingest_and_metrics(tmp_path: Path) -> None:
    profile = TeamProfile("Team_Pipe", tickets_per_region=60, failure_region="APAC")
    rows = generate_rows(profile, seed=9, start=START)
    path = tmp_path / "export.csv"
    write_rows(rows, path)
    result = ingest_file(path, load_mapping("generic"))
    assert result.summary.quarantined == 0, result.summary.by_reason
    assert result.summary.accepted == len(rows)

    values, summary = compute_metrics(
        result.tickets, Schema.default(), customer_of=lambda t: t.ticket_id
    )
    assert summary.tickets_used == len(rows)
    for region, region_rows in _by_region(rows).items():
        assert values[region]["tickets"] == len(region_rows)
        assert values[region]["escalated"] == sum(r["status"] == "Escalated" for r in region_rows)
        assert values[region]["resolved"] == sum(r["status"] == "Resolved" for r in region_rows)
        csat = values[region]["csat"]
        assert isinstance(csat, list)
        assert sum(csat) == sum(1 for r in region_rows if r["csat_score"])
        assert "nps" in values[region]
