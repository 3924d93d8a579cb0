"""party.metrics: tickets -> per-region values, clipping, the per-customer cap, and the
dataset check against an independent pandas computation."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from blindsum.errors import ConfigError, InvalidArgument
from blindsum.schema import CONTRIBUTORS_KEY, Schema
from party.ingest import ingest_file
from party.mapping import load_mapping
from party.metrics import MetricsSummary, compute_metrics, metrics_vector
from party.tickets import Status, Ticket

T0 = datetime(2024, 10, 28, 9, 0, tzinfo=UTC)

DATASET = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "datasets"
    / "support_tickets_4teams.csv"
)


def by_id(ticket: Ticket) -> str:
    return ticket.ticket_id


def tk(line: int, region: str = "APAC", status: Status = Status.OPEN, **kw: Any) -> Ticket:
    kw.setdefault("created", T0 + timedelta(minutes=line))
    return Ticket(line=line, ticket_id=f"T{line}", region=region, status=status, **kw)


@pytest.fixture(scope="module")
def schema() -> Schema:
    return Schema.default()


def small_schema(max_tickets: int = 100000, cap: int = 5, nps_optional: bool = True) -> Schema:
    return Schema.from_toml(
        f"""
[campaign]
name = "small"
version = 1
max_parties = 10
max_tickets_per_region = {max_tickets}
per_customer_cap = {cap}
regions = ["APAC", "EMEA"]

[[metrics]]
name = "tickets"
kind = "count"

[[metrics]]
name = "escalated"
kind = "count"

[[metrics]]
name = "nps"
kind = "histogram"
edges = [0, 7, 9, 11]
optional = {"true" if nps_optional else "false"}
"""
    )


# ------------------------------------------------------------ every metric


def test_every_metric_on_hand_built_tickets(schema: Schema) -> None:
    tickets = [
        # resolved, responded after 0.25 h, resolved in 3 h, csat 5
        tk(1, status=Status.RESOLVED, first_response_hours=0.25, resolution_hours=3.0, csat=5),
        # escalated, responded after 1.5 h, no resolution, csat 2
        tk(2, status=Status.ESCALATED, first_response_hours=1.5, csat=2),
        # open, never responded
        tk(3),
        # open but escalated_at set -> counts as escalated
        tk(4, escalated_at=T0 + timedelta(hours=2), first_response_hours=30.0),
        # resolved, durations derived from timestamps: response 0.75 h, resolution 50 h
        tk(
            5,
            status=Status.RESOLVED,
            created=T0,
            first_response_at=T0 + timedelta(minutes=45),
            resolved_at=T0 + timedelta(hours=50),
            csat=4,
        ),
        # another region
        tk(6, region="EMEA", status=Status.RESOLVED, first_response_hours=5.0,
           resolution_hours=200.0, csat=3),
    ]  # fmt: skip
    values, summary = compute_metrics(tickets, schema, customer_of=by_id)

    assert set(values) == {"APAC", "EMEA"}  # Americas had no tickets: absent
    assert values["APAC"] == {
        "tickets": 5,
        "replied": 4,
        "csat": [0, 1, 0, 1, 1],
        "csat_sum": 11,
        "escalated": 2,
        "resolved": 2,
        # edges 0, .5, 1, 2, 4, 8, 24, 48: 0.25, 0.75, 1.5, 30
        "first_response_hours": [1, 1, 1, 0, 0, 0, 1],
        # edges 0, 1, 4, 8, 24, 48, 72, 168, 336: 3, 50
        "resolution_hours": [0, 1, 0, 0, 0, 1, 0, 0],
        "resolution_hours_sum": 53.0,
    }
    assert values["EMEA"] == {
        "tickets": 1,
        "replied": 1,
        "csat": [0, 0, 1, 0, 0],
        "csat_sum": 3,
        "escalated": 0,
        "resolved": 1,
        "first_response_hours": [0, 0, 0, 0, 1, 0, 0],
        "resolution_hours": [0, 0, 0, 0, 0, 0, 0, 1],
        "resolution_hours_sum": 200.0,
    }
    assert "nps" not in values["APAC"]  # no ticket has an NPS score
    assert isinstance(values["APAC"]["csat_sum"], int)
    assert isinstance(values["APAC"]["resolution_hours_sum"], float)
    assert summary == MetricsSummary(
        tickets_in=6,
        tickets_used=6,
        capped=0,
        unknown_region=0,
        clipped={
            "csat": 0,
            "csat_sum": 0,
            "nps": 0,
            "first_response_hours": 0,
            "resolution_hours": 0,
            "resolution_hours_sum": 0,
        },
        per_region={"APAC": 5, "EMEA": 1, "Americas": 0},
    )


def test_nps_histogram_when_any_ticket_has_nps(schema: Schema) -> None:
    tickets = [tk(1, nps=0), tk(2, nps=10), tk(3, nps=9), tk(4, region="EMEA")]
    values, _ = compute_metrics(tickets, schema, customer_of=by_id)
    # Bins: detractors 0-6, passives 7-8, promoters 9-10.
    assert values["APAC"]["nps"] == [1, 0, 2]
    # Given for every present region, zeros where nobody answered.
    assert values["EMEA"]["nps"] == [0] * 3


def test_required_nps_is_always_given() -> None:
    values, _ = compute_metrics([tk(1)], small_schema(nps_optional=False), customer_of=by_id)
    assert values["APAC"]["nps"] == [0, 0, 0]


# ------------------------------------------------- which tickets a metric counts


def test_resolution_metrics_count_resolved_tickets_only(schema: Schema) -> None:
    tickets = [
        # resolved in 3 h: counts
        tk(1, status=Status.RESOLVED, resolution_hours=3.0),
        # in progress (status open) with its age so far as resolution_hours: left out
        tk(2, status=Status.OPEN, resolution_hours=30.0),
        # escalated and still open, with hours: left out
        tk(3, status=Status.ESCALATED, resolution_hours=100.0),
        # reopened: an old resolved_at but status open: left out
        tk(4, created=T0, resolved_at=T0 + timedelta(hours=10)),
        # resolved after an escalation (escalated_at set): counts, and is escalated
        tk(
            5,
            status=Status.RESOLVED,
            created=T0,
            escalated_at=T0 + timedelta(hours=1),
            resolved_at=T0 + timedelta(hours=50),
        ),
        # resolved without any resolution time: counted as resolved, not in the bins
        tk(6, status=Status.RESOLVED),
    ]
    values, summary = compute_metrics(tickets, schema, customer_of=by_id)
    apac = values["APAC"]
    # edges 0, 1, 4, 8, 24, 48, 72, 168, 336: 3 h and 50 h only
    assert apac["resolution_hours"] == [0, 1, 0, 0, 0, 1, 0, 0]
    assert apac["resolution_hours_sum"] == 53.0
    assert apac["resolved"] == 3
    assert apac["escalated"] == 2
    assert apac["tickets"] == 6
    # Nothing was clipped: the 100 h and 30 h of unresolved tickets were never read.
    assert summary.clipped["resolution_hours"] == 0
    assert summary.clipped["resolution_hours_sum"] == 0


def test_unresolved_hours_beyond_the_clip_are_not_counted_as_clipped(schema: Schema) -> None:
    tickets = [
        tk(1, status=Status.ESCALATED, resolution_hours=5000.0),
        tk(2, status=Status.OPEN, resolution_hours=-1.0),
    ]
    values, summary = compute_metrics(tickets, schema, customer_of=by_id)
    assert values["APAC"]["resolution_hours"] == [0] * 8
    assert values["APAC"]["resolution_hours_sum"] == 0.0
    assert summary.clipped["resolution_hours"] == summary.clipped["resolution_hours_sum"] == 0


def test_status_words_of_the_mapping_decide_what_is_resolved(
    schema: Schema, tmp_path: Path
) -> None:
    # The generic preset: "Resolved", "Solved", "Closed" are resolved; "In Progress",
    # "Pending" are open; "Escalated" is escalated.
    export = tmp_path / "export.csv"
    export.write_text(
        "ticket_id,region,status,resolution_hours,first_response_minutes\n"
        "1,APAC,Resolved,2,30\n"
        "2,APAC,Closed,5,\n"
        "3,APAC,Solved,10,90\n"
        "4,APAC,In Progress,20,15\n"
        "5,APAC,Pending,30,\n"
        "6,APAC,Escalated,40,45\n",
        encoding="utf-8",
    )
    result = ingest_file(export, load_mapping("generic"))
    assert result.summary.quarantined == 0, result.summary.by_reason
    values, _ = compute_metrics(result.tickets, schema, customer_of=by_id)
    apac = values["APAC"]
    assert apac["resolved"] == 3
    # [1,4) [4,8) [8,24): 2 h, 5 h, 10 h; the 20, 30 and 40 h of open/escalated rows are out
    assert apac["resolution_hours"] == [0, 1, 1, 1, 0, 0, 0, 0]
    assert apac["resolution_hours_sum"] == 17.0
    # replied: a first-response time, whatever the status (rows 1, 3, 4, 6)
    assert apac["replied"] == 4
    first = apac["first_response_hours"]
    assert isinstance(first, list)
    assert sum(first) == 4


def test_resolution_histogram_total_never_exceeds_resolved(schema: Schema) -> None:
    statuses = list(Status)
    tickets = [
        tk(
            i,
            status=statuses[i % 3],
            resolution_hours=float(i % 11) * 7.5 if i % 4 else None,
            first_response_hours=0.3 * (i % 5) if i % 2 else None,
        )
        for i in range(1, 61)
    ]
    values, _ = compute_metrics(tickets, schema, customer_of=by_id)
    apac = values["APAC"]
    bins = apac["resolution_hours"]
    assert isinstance(bins, list)
    resolved_with_hours = [
        t for t in tickets if t.status is Status.RESOLVED and t.resolution_hours is not None
    ]
    resolved = apac["resolved"]
    assert isinstance(resolved, int)
    assert sum(bins) == len(resolved_with_hours) <= resolved
    assert apac["resolution_hours_sum"] == pytest.approx(
        sum(t.resolution_hours or 0.0 for t in resolved_with_hours)
    )
    first = apac["first_response_hours"]
    assert isinstance(first, list)
    assert sum(first) == apac["replied"]  # every replied ticket here has a created time


# ----------------------------------------------------------------- clipping


def test_histogram_values_are_clipped_into_the_edges_and_counted(schema: Schema) -> None:
    done = Status.RESOLVED
    tickets = [
        tk(1, first_response_hours=-1.0),  # below the first edge -> first bin
        tk(2, first_response_hours=0.0),  # on the first edge: not clipped
        tk(3, first_response_hours=47.99),  # last bin, not clipped
        tk(4, first_response_hours=48.0),  # == last edge -> last bin, clipped
        tk(5, first_response_hours=math.inf),  # clipped
        tk(6, status=done, resolution_hours=336.0),  # == last edge: last bin, clipped; sum not
        tk(7, status=done, resolution_hours=1000.0),  # last bin and sum clipped to 720
        tk(8, status=done, resolution_hours=-2.0),  # first bin, sum clipped to 0
        tk(9, csat=7),  # bad scale slipped through: last bin + sum clipped to 5
        tk(10, csat=0),  # first bin + sum clipped to 1
    ]
    values, summary = compute_metrics(tickets, schema, customer_of=by_id)
    apac = values["APAC"]
    assert apac["first_response_hours"] == [2, 0, 0, 0, 0, 0, 3]
    assert apac["resolution_hours"] == [1, 0, 0, 0, 0, 0, 0, 2]
    assert apac["resolution_hours_sum"] == 336.0 + 720.0 + 0.0
    assert apac["csat"] == [1, 0, 0, 0, 1]
    assert apac["csat_sum"] == 6
    assert apac["replied"] == 5
    assert summary.clipped == {
        "csat": 2,
        "csat_sum": 2,
        "nps": 0,
        "first_response_hours": 3,
        "resolution_hours": 3,
        "resolution_hours_sum": 2,
    }


def test_value_on_an_inner_edge_goes_to_the_upper_bin(schema: Schema) -> None:
    tickets = [tk(i, first_response_hours=h) for i, h in enumerate([0.5, 1.0, 24.0], 1)]
    values, summary = compute_metrics(tickets, schema, customer_of=by_id)
    assert values["APAC"]["first_response_hours"] == [0, 1, 1, 0, 0, 0, 1]
    assert summary.clipped["first_response_hours"] == 0


def test_nan_value_names_the_line(schema: Schema) -> None:
    with pytest.raises(InvalidArgument, match="line 7"):
        compute_metrics(
            [tk(7, status=Status.RESOLVED, resolution_hours=math.nan)], schema, customer_of=by_id
        )


# ----------------------------------------------------------- region handling


def test_unknown_region_is_counted_and_excluded(schema: Schema) -> None:
    tickets = [tk(1), tk(2, region="Mars", status=Status.ESCALATED), tk(3, region="apac")]
    values, summary = compute_metrics(tickets, schema, customer_of=by_id)
    assert set(values) == {"APAC"}
    assert values["APAC"]["tickets"] == 1
    assert values["APAC"]["escalated"] == 0
    assert summary.unknown_region == 2
    assert summary.tickets_used == 1
    assert summary.tickets_in == 3


def test_empty_input_gives_no_regions(schema: Schema) -> None:
    values, summary = compute_metrics([], schema, customer_of=by_id)
    assert values == {}
    assert summary.tickets_in == 0
    vector = metrics_vector([], schema, customer_of=by_id)
    assert not vector.any()


def test_per_party_bound_is_enforced_naming_region_and_metric() -> None:
    tight = small_schema(max_tickets=2)
    compute_metrics([tk(1), tk(2), tk(3, region="EMEA")], tight, customer_of=by_id)
    with pytest.raises(InvalidArgument) as info:
        compute_metrics([tk(1), tk(2), tk(3)], tight, customer_of=by_id)
    assert info.value.field == "APAC.tickets"


# ------------------------------------------------------------ per-customer cap


def test_cap_keeps_the_earliest_tickets_of_a_customer(schema: Schema) -> None:
    def customer(ticket: Ticket) -> str:
        return "alice" if ticket.line < 10 else ticket.ticket_id

    tickets = [
        # Listed out of order: the cap sorts by (created, line).
        tk(1, created=T0 + timedelta(hours=3), status=Status.ESCALATED),
        tk(2, created=T0 + timedelta(hours=1), status=Status.RESOLVED),
        tk(3, created=None, status=Status.ESCALATED),  # undated sorts last
        tk(4, created=T0 + timedelta(hours=1), csat=1),  # same time as 2, later line
        tk(5, created=T0, first_response_hours=0.1),
        tk(10, region="EMEA"),
        tk(11, region="EMEA"),
    ]
    values, summary = compute_metrics(tickets, schema, customer_of=customer, cap=3)
    # alice keeps 5 (T0), 2 (T0+1h, line 2), 4 (T0+1h, line 4); 1 and 3 are capped.
    assert values["APAC"]["tickets"] == 3
    assert values["APAC"]["escalated"] == 0  # both escalations were capped away
    assert values["APAC"]["resolved"] == 1
    assert values["APAC"]["replied"] == 1
    assert values["APAC"]["csat"] == [1, 0, 0, 0, 0]
    assert values["EMEA"]["tickets"] == 2
    assert summary.capped == 2
    assert summary.tickets_used == 5
    assert summary.per_region == {"APAC": 3, "EMEA": 2, "Americas": 0}


def test_cap_defaults_to_the_schema_and_spans_regions() -> None:
    capped_schema = small_schema(cap=2)
    tickets = [tk(1), tk(2, region="EMEA"), tk(3), tk(4, region="EMEA")]
    values, summary = compute_metrics(tickets, capped_schema, customer_of=lambda t: "bob")
    # The cap is per customer per round, across regions: lines 1 and 2 are kept.
    assert values == {
        "APAC": {"tickets": 1, "escalated": 0},
        "EMEA": {"tickets": 1, "escalated": 0},
    }
    assert summary.capped == 2
    # An explicit cap overrides the schema's.
    _, summary = compute_metrics(tickets, capped_schema, customer_of=lambda t: "bob", cap=4)
    assert summary.capped == 0


def test_cap_applies_after_unknown_regions_are_dropped() -> None:
    tickets = [tk(1, region="Mars"), tk(2), tk(3)]
    values, summary = compute_metrics(tickets, small_schema(), customer_of=lambda t: "c", cap=2)
    assert values["APAC"]["tickets"] == 2
    assert (summary.unknown_region, summary.capped, summary.tickets_used) == (1, 0, 2)


@pytest.mark.parametrize("cap", [0, -1, True, 2.0])
def test_bad_cap_is_rejected(schema: Schema, cap: Any) -> None:
    with pytest.raises(InvalidArgument) as info:
        compute_metrics([tk(1)], schema, customer_of=by_id, cap=cap)
    assert info.value.field == "cap"


def test_customer_of_must_return_a_string(schema: Schema) -> None:
    with pytest.raises(InvalidArgument, match="customer_of"):
        compute_metrics([tk(1)], schema, customer_of=lambda t: 42)  # type: ignore[arg-type,return-value]  # deliberately wrong


# ------------------------------------------------------------ schema handling


def test_unknown_required_metric_is_a_config_error() -> None:
    text = small_schema().to_toml() + '\n[[metrics]]\nname = "refunds"\nkind = "count"\n'
    with pytest.raises(ConfigError) as info:
        compute_metrics([tk(1)], Schema.from_toml(text), customer_of=by_id)
    assert info.value.field == "metrics.refunds"


def test_unknown_optional_metric_is_omitted() -> None:
    text = small_schema().to_toml() + (
        '\n[[metrics]]\nname = "refunds"\nkind = "count"\noptional = true\n'
    )
    values, _ = compute_metrics([tk(1)], Schema.from_toml(text), customer_of=by_id)
    assert values == {"APAC": {"tickets": 1, "escalated": 0}}


def test_known_metric_with_the_wrong_kind_is_a_config_error() -> None:
    text = small_schema().to_toml().replace('name = "escalated"\nkind = "count"', "X")
    text = text.replace("X", 'name = "escalated"\nkind = "sum"\nclip = [0, 1]')
    with pytest.raises(ConfigError) as info:
        compute_metrics([tk(1)], Schema.from_toml(text), customer_of=by_id)
    assert info.value.field == "metrics.escalated"


# --------------------------------------------------------- vector and summary


def test_metrics_vector_encodes_the_values(schema: Schema) -> None:
    tickets = [
        tk(1, status=Status.RESOLVED, first_response_hours=0.2, resolution_hours=2.25, csat=4),
        tk(2, region="Americas", status=Status.ESCALATED, nps=3),
    ]
    values, _ = compute_metrics(tickets, schema, customer_of=by_id)
    vector = metrics_vector(tickets, schema, customer_of=by_id)
    assert vector.dtype == np.uint64
    assert np.array_equal(vector, schema.encode(values))
    decoded = schema.decode(vector)
    assert decoded["APAC"][CONTRIBUTORS_KEY] == 1
    assert decoded["Americas"][CONTRIBUTORS_KEY] == 1
    assert decoded["EMEA"][CONTRIBUTORS_KEY] == 0
    assert decoded["APAC"]["resolution_hours_sum"] == 2.3  # tenths of an hour, half up
    assert decoded["Americas"]["nps"] == [1, 0, 0]
    assert decoded["Americas"]["escalated"] == 1


def test_summary_json_holds_only_counts(schema: Schema) -> None:
    tickets = [
        replace(tk(1, first_response_hours=99.0), requester_email="alice@example.com"),
        tk(2, region="Mars"),
    ]
    _, summary = compute_metrics(tickets, schema, customer_of=lambda t: t.requester_email or "")
    text = summary.to_json()
    data = json.loads(text)
    assert data["tickets_in"] == 2
    assert data["unknown_region"] == 1
    assert data["clipped"]["first_response_hours"] == 1
    assert data["per_region"]["APAC"] == 1
    assert "alice" not in text
    assert "T1" not in text
    assert "\n" not in text


# ---------------------------------------------------------------- the dataset


def _split_by_team(source: Path, out_dir: Path) -> dict[str, Path]:
    """One export per team (each team is a party), written with the csv module."""
    with source.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fieldnames = list(reader.fieldnames or [])
        rows_by_team: dict[str, list[dict[str, str]]] = {}
        for row in reader:
            rows_by_team.setdefault(row["team"], []).append(row)
    paths: dict[str, Path] = {}
    for team, rows in rows_by_team.items():
        path = out_dir / f"{team}.csv"
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)
        paths[team] = path
    return paths


@pytest.fixture(scope="module")
def team_exports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    if not DATASET.is_file():
        pytest.skip(f"dataset not present: ../shared/datasets/{DATASET.name} (beside the repo)")
    yield _split_by_team(DATASET, tmp_path_factory.mktemp("teams"))


def _pandas_expected(df: Any, schema: Schema) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    """The same metrics, computed independently with pandas from the raw columns."""
    import pandas as pd

    def binned(values: Any, edges: tuple[float, ...]) -> list[int]:
        # Open-ended outer bins express the clipping: < first edge -> first bin,
        # >= last edge -> last bin.
        outer = [-math.inf, *edges[1:-1], math.inf]
        cut = pd.cut(values, bins=outer, right=False)
        return [int(n) for n in cut.value_counts(sort=False).tolist()]

    def n_outside(values: Any, lo: float, hi: float, *, hi_open: bool) -> int:
        above = values >= hi if hi_open else values > hi
        return int(((values < lo) | above).sum())

    csat_m = schema.metric("csat")
    csat_sum_m = schema.metric("csat_sum")
    frt_m = schema.metric("first_response_hours")
    res_m = schema.metric("resolution_hours")
    res_sum_m = schema.metric("resolution_hours_sum")
    assert csat_sum_m.clip is not None and res_sum_m.clip is not None

    expected: dict[str, dict[str, Any]] = {}
    clipped = dict.fromkeys(
        ["csat", "csat_sum", "nps", "first_response_hours", "resolution_hours"], 0
    )
    clipped["resolution_hours_sum"] = 0
    for region, g in df.groupby("region"):
        csat = g["csat_score"].dropna()
        frt = g["first_response_minutes"].dropna() / 60.0
        # Resolution metrics count resolved tickets only ("Resolved" is the dataset's
        # one resolved status); its in-progress and escalated rows carry hours too.
        res = g.loc[g["status"] == "Resolved", "resolution_hours"].dropna()
        expected[str(region)] = {
            "tickets": len(g),
            "replied": int(g["first_response_minutes"].notna().sum()),
            "csat": binned(csat, csat_m.edges),
            "csat_sum": float(csat.clip(*csat_sum_m.clip).sum()),
            "escalated": int((g["status"] == "Escalated").sum()),
            "resolved": int((g["status"] == "Resolved").sum()),
            "first_response_hours": binned(frt, frt_m.edges),
            "resolution_hours": binned(res, res_m.edges),
            "resolution_hours_sum": float(res.clip(*res_sum_m.clip).sum()),
        }
        clipped["csat"] += n_outside(csat, csat_m.edges[0], csat_m.edges[-1], hi_open=True)
        clipped["csat_sum"] += n_outside(csat, *csat_sum_m.clip, hi_open=False)
        clipped["first_response_hours"] += n_outside(
            frt, frt_m.edges[0], frt_m.edges[-1], hi_open=True
        )
        clipped["resolution_hours"] += n_outside(res, res_m.edges[0], res_m.edges[-1], hi_open=True)
        clipped["resolution_hours_sum"] += n_outside(res, *res_sum_m.clip, hi_open=False)
    return expected, clipped


def test_dataset_metrics_match_pandas(team_exports: dict[str, Path], schema: Schema) -> None:
    pd = pytest.importorskip("pandas")
    mapping = load_mapping("generic")
    full = pd.read_csv(DATASET)
    assert sorted(team_exports) == sorted(full["team"].unique())
    assert len(team_exports) == 4
    for team, path in sorted(team_exports.items()):
        result = ingest_file(path, mapping)
        df = full[full["team"] == team]
        assert result.summary.quarantined == 0, (team, result.summary.by_reason)
        assert result.summary.accepted == len(df)

        values, summary = compute_metrics(result.tickets, schema, customer_of=lambda t: t.ticket_id)
        expected, expected_clipped = _pandas_expected(df, schema)

        assert set(values) == set(expected), team
        assert summary.tickets_used == len(df)
        assert (summary.capped, summary.unknown_region) == (0, 0)
        assert summary.clipped == expected_clipped, team
        for region, want in expected.items():
            got = values[region]
            assert "nps" not in got  # the dataset has no NPS column
            assert set(got) == set(want), (team, region)
            for name, value in want.items():
                if name.endswith("_sum"):
                    assert got[name] == pytest.approx(value, rel=1e-12, abs=1e-9), (
                        team,
                        region,
                        name,
                    )
                else:
                    assert got[name] == value, (team, region, name)
        # The encoded vector carries the same numbers (sums in fixed point).
        decoded = schema.decode(metrics_vector(result.tickets, schema, customer_of=by_id))
        for region in schema.regions:
            assert decoded[region][CONTRIBUTORS_KEY] == (1 if region in expected else 0)
            if region in expected:
                assert decoded[region]["tickets"] == expected[region]["tickets"]
                assert decoded[region]["resolution_hours"] == expected[region]["resolution_hours"]
                assert decoded[region]["resolution_hours_sum"] == pytest.approx(
                    expected[region]["resolution_hours_sum"], abs=0.05 + 1e-9
                )
