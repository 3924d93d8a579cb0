"""The `blindsum` command: a manual deployment driven only through the CLI, and its errors."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from blindsum.bundle import BUNDLE_CONFIG, PartyConfig
from blindsum.config import dump_config, load_config
from blindsum.schema import Schema
from blindsum_app.cli import main

CLI = [sys.executable, "-m", "blindsum_app.cli"]


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def write_csv_metrics(path: Path, schema: Schema, scale: int) -> None:
    """A metrics file in the long CSV format, every metric of APAC and EMEA."""
    lines = ["region,metric,bin,value"]
    for region in ("APAC", "EMEA"):
        for m in schema.metrics:
            if m.kind.value == "histogram":
                lines += [f"{region},{m.name},{i},{scale * (i + 1)}" for i in range(m.slots)]
            elif m.kind.value == "sum":
                lines.append(f"{region},{m.name},,{scale * 2.5}")
            else:
                lines.append(f"{region},{m.name},,{scale * 10}")
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Path]:
    agg = tmp_path / "agg"
    assert run("aggregator", "init", str(agg), "--listen", "127.0.0.1:0").returncode == 0
    for name in ("north", "south", "west"):
        res = run("aggregator", "enroll", str(agg), name, "-o", str(tmp_path / name))
        assert res.returncode == 0, res.stderr
        # The manual round below runs without DP (exact totals): the parties consent.
        party_toml = tmp_path / name / BUNDLE_CONFIG
        cfg = load_config(party_toml, PartyConfig)
        party_toml.write_text(dump_config(replace(cfg, allow_dp_off=True)))
    server = subprocess.Popen(
        [*CLI, "aggregator", "serve", str(agg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert "listening on port" in line
        yield agg
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)


def test_manual_round_through_the_cli(served: Path, tmp_path: Path) -> None:
    agg = served
    address = (agg / "aggregator.addr").read_text().strip()
    schema = Schema.default()
    opened = run(
        "aggregator",
        "open-round",
        str(agg),
        "--parties",
        "north,south,west",
        "--min-contributors",
        "3",
        "--phase-timeout",
        "300",  # every party comes, so a phase ends when the last one submits
        "--round-id",
        "week-47",
        "--dp",
        "off",
        "--week",
        "2020-W10",  # long over, whatever the clock says
    )
    assert opened.returncode == 0, opened.stderr
    assert "waiting for: north, south, west" in opened.stdout
    week = "2020-03-02 00:00 to 2020-03-09 00:00 UTC (ISO week 2020-W10)"
    assert f"tickets: created {week}" in opened.stdout
    submit = [*CLI, "party", "submit", "--metrics"]
    for i, name in enumerate(("north", "south", "west")):
        write_csv_metrics(tmp_path / f"{name}.csv", schema, i + 1)
    # A metrics file given for another week is not sent to this week's round.
    wrong = run(
        "party",
        "submit",
        "--metrics",
        str(tmp_path / "west.csv"),
        "--bundle",
        str(tmp_path / "west"),
        "--aggregator",
        address,
        "--week",
        "2020-W11",
    )
    assert wrong.returncode == 2, wrong.stderr
    assert "--week: the round covers the tickets created 2020-03-02" in wrong.stderr
    assert "but this input was given for 2020-03-09 00:00" in wrong.stderr
    procs = []
    for name, declared in (("north", []), ("south", []), ("west", ["--week", "2020-W10"])):
        procs.append(
            subprocess.Popen(
                [
                    *submit,
                    str(tmp_path / f"{name}.csv"),
                    "--bundle",
                    str(tmp_path / name),
                    "--aggregator",
                    address,
                    *declared,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for proc, noted in zip(procs, (True, True, False), strict=True):
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "round complete" in err
        # A metrics file cannot be filtered: unless it was declared for the round's
        # window, the party is told that its numbers go in as they are.
        assert (f"note: the round covers the tickets created {week}" in err) is noted
    status = run("aggregator", "status", str(agg), "week-47", "--json")
    assert json.loads(status.stdout)[0]["state"] == "complete"
    assert json.loads(status.stdout)[0]["window"]["iso_weeks"] == ["2020-W10"]
    as_csv = run("report", "show", str(agg), "week-47", "--format", "csv")
    rows = {(r[1], r[3]): r for r in csv.reader(io.StringIO(as_csv.stdout))}
    assert [rows[(region, "contributors")][4:6] for region in ("APAC", "EMEA")] == [
        ["released", "3"],
        ["released", "3"],
    ]
    assert rows[("Americas", "contributors")][4] == "suppressed"
    assert rows[("APAC", "tickets")][5] == "60"  # 10 + 20 + 30
    assert rows[("EMEA", "resolution_hours_sum")][5] == "15.0"  # 2.5 * (1 + 2 + 3)
    as_json = json.loads(run("report", "show", str(agg), "week-47", "--format", "json").stdout)
    cells = {c["slot"]: c for c in as_json["regions"][0]["cells"]}
    assert cells["csat[5,6)"]["value"] == 5 * 6
    assert as_json["dp"]["mode"] == "off"
    table = run("report", "show", str(agg), "week-47").stdout
    assert "differential privacy: off" in table
    html = tmp_path / "week-47.html"
    shown = run("report", "show", str(agg), "week-47", "--format", "html", "-o", str(html))
    assert shown.returncode == 0, shown.stderr
    assert html.read_text().startswith("<!DOCTYPE html>")


def test_init_twice_is_refused_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["aggregator", "init", str(tmp_path / "a"), "--listen", "127.0.0.1:0"]) == 0
    capsys.readouterr()
    assert main(["aggregator", "init", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("blindsum: error:") and "already holds an aggregator" in err
    assert "\n" not in err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["aggregator", "enroll", "{agg}", "Bad Name!", "-o", "{tmp}/x"], "name"),
        (["report", "show", "{agg}", "no-such-round"], "does not exist"),
        (["aggregator", "status", "{agg}", "no-such-round"], "does not exist"),
        (["party", "submit", "--bundle", "{tmp}/missing", "--metrics", "m.json"], "--bundle"),
    ],
)
def test_bad_input_exits_2_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    agg = tmp_path / "agg"
    assert main(["aggregator", "init", str(agg), "--listen", "127.0.0.1:0"]) == 0
    capsys.readouterr()
    code = main([a.format(agg=agg, tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert needle in err and err.count("\n") == 0


def test_open_round_without_a_server_is_unavailable(tmp_path: Path) -> None:
    agg = tmp_path / "agg"
    assert run("aggregator", "init", str(agg), "--listen", "127.0.0.1:1").returncode == 0
    res = run("aggregator", "open-round", str(agg), "--parties", "a,b,c", timeout=120)
    assert res.returncode == 4, res.stderr
    assert "AdminService.OpenRound" in res.stderr


def test_init_with_an_existing_ca_and_server_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from blindsum.transport.pki import (
        Identity,
        Role,
        create_ca,
        issue_tls_cert,
        verify_identity_cert,
    )

    ca = create_ca("Acme support CA")
    server = issue_tls_cert(
        ca, Identity(Role.AGGREGATOR, "agg"), dns_names=("blindsum-aggregator",)
    )
    other = issue_tls_cert(create_ca("other"), Identity(Role.AGGREGATOR, "agg"))
    files = {}
    for name, data in {
        "ca.crt": ca.cert_pem,
        "ca.key": ca.key_pem,
        "srv.crt": server.cert_pem,
        "srv.key": server.key_pem,
        "other.crt": other.cert_pem,
        "other.key": other.key_pem,
    }.items():
        files[name] = tmp_path / name
        files[name].write_bytes(data)
    agg = tmp_path / "agg"
    argv = [
        "aggregator",
        "init",
        str(agg),
        "--ca-cert",
        str(files["ca.crt"]),
        "--ca-key",
        str(files["ca.key"]),
    ]
    # A server certificate from another CA is refused, and nothing is half-written.
    bad = tmp_path / "bad"
    assert (
        main(
            [
                *argv[:2],
                str(bad),
                *argv[3:],
                "--cert",
                str(files["other.crt"]),
                "--key",
                str(files["other.key"]),
            ]
        )
        == 2
    )
    assert "blindsum: error:" in capsys.readouterr().err
    assert not bad.exists()
    assert main([*argv, "--cert", str(files["srv.crt"]), "--key", str(files["srv.key"])]) == 0
    assert (agg / "ca" / "ca.crt").read_bytes() == ca.cert_pem
    assert (agg / "tls" / "server.crt").read_bytes() == server.cert_pem
    assert (agg / "ca" / "ca.key").stat().st_mode & 0o077 == 0
    assert main(["aggregator", "enroll", str(agg), "acme-emea", "-o", str(tmp_path / "b")]) == 0
    identity, _ = verify_identity_cert((tmp_path / "b" / "identity.crt").read_bytes(), ca.cert_pem)
    assert identity == Identity(Role.PARTY, "acme-emea")


def test_party_pipeline_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    export = tmp_path / "tickets.csv"
    assert (
        main(
            [
                "party",
                "synthetic",
                "--team",
                "north",
                "--seed",
                "7",
                "--start",
                "2026-11-16",
                "-o",
                str(export),
            ]
        )
        == 0
    )
    raw = export.read_text()
    # Append rows that must be quarantined, not dropped: a CSAT of 7 and a bad date.
    header = raw.splitlines()[0].split(",")
    bad = dict.fromkeys(header, "")
    bad.update(
        ticket_id="BAD-1",
        region="APAC",
        status="Resolved",
        created_date="2026-11-17",
        csat_score="7",
    )
    bad2 = dict(bad, ticket_id="BAD-2", csat_score="", created_date="17/31/2026 25:00")
    export.write_text(
        raw + ",".join(bad[h] for h in header) + "\n" + ",".join(bad2[h] for h in header) + "\n"
    )
    secret = tmp_path / "secret"
    quarantine = tmp_path / "q.jsonl"
    capsys.readouterr()
    assert (
        main(
            [
                "party",
                "metrics",
                "--tickets",
                str(export),
                "--secret",
                str(secret),
                "--quarantine",
                str(quarantine),
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["ingest"]["quarantined"] == 2
    assert out["ingest"]["read"] == out["ingest"]["accepted"] + 2
    assert set(out["ingest"]["by_reason"]) == {"out_of_range", "bad_date"}
    lines = [json.loads(x) for x in quarantine.read_text().splitlines()]
    assert {q["column"] for q in lines} == {"csat_score", "created_date"}
    assert all(q["line"] > 1 for q in lines)
    assert out["values"]["APAC"]["tickets"] > 0
    assert secret.stat().st_mode & 0o077 == 0
    # Without --quarantine, rejected rows land next to the export (nothing is lost).
    assert main(["party", "metrics", "--tickets", str(export), "--secret", str(secret)]) == 0
    default_q = tmp_path / "tickets.csv.quarantine.jsonl"
    assert len(default_q.read_text().splitlines()) == 2
    assert str(default_q) in capsys.readouterr().err

    anon = tmp_path / "anon.jsonl"
    assert main(["party", "anonymize", str(export), "-o", str(anon), "--secret", str(secret)]) == 0
    text = anon.read_text()
    for row in csv.DictReader(io.StringIO(raw)):
        for col in ("requester_email", "requester_phone", "order_id"):
            if row[col]:
                assert row[col] not in text
    lineage = json.loads((tmp_path / "anon.jsonl.lineage.json").read_text())
    assert lineage["rows_in"] == out["ingest"]["accepted"]
    assert lineage["entities"]["EMAIL"] > 0


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "empty"),
        (b"ticket_id,region,status\nT1,APAC,Resolved\n\xff\xfe broken\n", "line 3"),
        (b"ticket_id,region\nT1,APAC\n", "status"),
    ],
)
def test_unreadable_exports_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, needle: str
) -> None:
    export = tmp_path / "bad.csv"
    export.write_bytes(content)
    code = main(["party", "metrics", "--tickets", str(export), "--secret", str(tmp_path / "s")])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("blindsum: error:") and needle in err and "\n" not in err


def test_tickets_in_unknown_regions_are_quarantined_not_lost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "t.csv"
    export.write_text(
        "ticket_id,created_date,status,region\n"
        "T1,2026-11-16 10:00:00,Resolved,emea\n"  # case differs: matched to EMEA
        "T2,2026-11-16 11:00:00,Resolved,Atlantis\n"
        "T3,2026-11-16 12:00:00,Escalated,APAC\n"
    )
    capsys.readouterr()
    assert (
        main(
            [
                "party",
                "metrics",
                "--tickets",
                str(export),
                "--secret",
                str(tmp_path / "s"),
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["ingest"]["by_reason"] == {"unknown_region": 1}
    assert out["ingest"]["read"] == 3 and out["ingest"]["accepted"] == 2
    assert out["values"]["EMEA"]["tickets"] == 1 and out["values"]["APAC"]["escalated"] == 1
    entry = json.loads((tmp_path / "t.csv.quarantine.jsonl").read_text())
    assert (entry["line"], entry["reason"], entry["column"]) == (3, "unknown_region", "region")


def test_party_check_and_metrics_for_a_window(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "two-weeks.csv"
    argv = ["party", "synthetic", "--team", "north", "--start", "2026-11-09", "--days", "14"]
    assert main([*argv, "-o", str(export)]) == 0
    check = ["party", "check", "--tickets", str(export), "--secret", str(tmp_path / "s")]
    capsys.readouterr()
    assert main([*check, "--week", "2026-W47"]) == 0
    out, err = capsys.readouterr()
    assert "read 600, accepted 300, quarantined 0 (none), outside the window 300" in err
    assert "window: tickets created 2026-11-16 00:00 to 2026-11-23 00:00 UTC" in err
    assert out.startswith("ok: 300 of the 300 rows in the window usable for schema")
    # The two ways to name a window agree; a window with no ticket is nothing to submit.
    assert main([*check, "--from", "2026-11-16", "--to", "2026-11-23", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["window"]["iso_weeks"] == ["2026-W47"]
    assert (doc["ingest"]["accepted"], doc["ingest"]["outside_window"]) == (300, 300)
    assert main([*check, "--week", "2026-W45"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("blindsum: error: --tickets: no ticket of the export was created")
    # A window over both weeks counts them all, in both ISO weeks.
    metrics = ["party", "metrics", "--tickets", str(export), "--secret", str(tmp_path / "s")]
    assert main([*metrics, "--from", "2026-11-12", "--to", "2026-11-19", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["window"]["iso_weeks"] == ["2026-W46", "2026-W47"]
    assert doc["ingest"]["accepted"] + doc["ingest"]["outside_window"] == 600
    assert sum(doc["values"][r]["tickets"] for r in doc["values"]) == doc["ingest"]["accepted"]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--from", "2026-11-16"], "--from: needs --to"),
        (["--to", "2026-11-23"], "--to: needs --from"),
        (["--week", "2026-W47", "--from", "2026-11-16"], "--week: give --week, or --from"),
        (["--week", "47"], "--week: '47' is not an ISO week like 2026-W47"),
        (["--from", "16/11/2026", "--to", "2026-11-23"], "--from: '16/11/2026' is not a date"),
        (["--from", "2026-11-23", "--to", "2026-11-16"], "--to: must be after --from"),
    ],
)
def test_bad_window_options_exit_2_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], needle: str
) -> None:
    export = tmp_path / "t.csv"
    export.write_text("ticket_id,created_date,status,region\nT1,2026-11-16 10:00,Resolved,APAC\n")
    assert main(["party", "check", "--tickets", str(export), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"blindsum: error: {needle}") and "\n" not in err, err


def test_a_metrics_file_cannot_be_checked_for_a_window(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics = tmp_path / "m.csv"
    write_csv_metrics(metrics, Schema.default(), 1)
    assert main(["party", "check", "--metrics", str(metrics), "--week", "2026-W47"]) == 2
    assert "a metrics file cannot be filtered by window" in capsys.readouterr().err


def test_serve_refuses_a_missing_empty_or_foreign_store(tmp_path: Path) -> None:
    """Only `aggregator init` makes a store (issue 12, item 4). A 0-byte
    aggregator.sqlite used to be re-initialised without a word, losing rounds,
    enrolments and the DP ledger; now every command that opens the store exits 2
    with one line, and leaves the file as it found it."""
    import sqlite3

    agg = tmp_path / "agg"
    assert run("aggregator", "init", str(agg), "--listen", "127.0.0.1:0").returncode == 0
    store = agg / "aggregator.sqlite"
    cases: dict[str, bytes | None] = {"empty file": b"", "no store at": None}
    foreign = tmp_path / "foreign.sqlite"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()
    cases["holds no blindsum store"] = foreign.read_bytes()
    for expected, content in cases.items():
        store.unlink(missing_ok=True)
        for side in ("-wal", "-shm"):
            (agg / f"aggregator.sqlite{side}").unlink(missing_ok=True)
        if content is not None:
            store.write_bytes(content)
        for args in (("serve", str(agg)), ("enroll", str(agg), "x", "-o", str(tmp_path / "x"))):
            res = run("aggregator", *args, timeout=60)
            assert res.returncode == 2, (expected, args, res.stderr)
            lines = res.stderr.strip().splitlines()
            assert len(lines) == 1 and expected in lines[0], (expected, res.stderr)
            assert "store.url" in lines[0]
        if content is None:
            assert not store.exists()
        else:
            assert store.read_bytes() == content


def test_create_store_makes_only_what_is_missing(tmp_path: Path) -> None:
    agg = tmp_path / "agg"
    assert run("aggregator", "init", str(agg), "--listen", "127.0.0.1:0").returncode == 0
    res = run("aggregator", "create-store", str(agg))
    assert res.returncode == 0, res.stderr
    assert "store.url: already a blindsum store" in res.stdout
    res = run("aggregator", "check", str(agg))
    assert res.returncode == 0 and "store ok: 0 rounds" in res.stdout, res.stdout + res.stderr
    (agg / "aggregator.sqlite").unlink()
    res = run("aggregator", "create-store", str(agg))
    assert res.returncode == 0, res.stderr
    assert "store.url: created" in res.stdout
    enrolled = run("aggregator", "enroll", str(agg), "north", "-o", str(tmp_path / "north"))
    assert enrolled.returncode == 0, enrolled.stderr
    # An empty file is a lost store: create-store does not paper over it, and check
    # says so (exit 3, one problem line and a summary).
    (agg / "aggregator.sqlite").write_bytes(b"")
    res = run("aggregator", "create-store", str(agg))
    assert res.returncode == 2 and "restore a backup" in res.stderr
    res = run("aggregator", "check", str(agg))
    assert res.returncode == 3
    assert res.stdout.splitlines()[0].startswith("problem: store.url: the store")


def test_campaign_commands(served: Path) -> None:
    """Issue 13: create, list, pause, resume and delete a campaign on a running
    aggregator (the unit tests drive the schedule itself with an injected clock)."""
    agg = str(served)
    created = run(
        "campaign",
        "create",
        agg,
        "weekly-kpis",
        "--schedule",
        "every Monday 06:00 Europe/Berlin",
        "--parties",
        "north,south,west",
        "--dp",
        "central",
        "--json",
    )
    assert created.returncode == 0, created.stderr
    doc = json.loads(created.stdout)
    assert doc["schedule"] == "every monday 06:00 Europe/Berlin"
    assert doc["parties"] == ["north", "south", "west"] and doc["dp"] == "central"
    assert doc["next_run_unix_ms"] > 0 and not doc["paused"]
    again = run(
        "campaign",
        "create",
        agg,
        "weekly-kpis",
        "--schedule",
        "every day 06:00",
        "--parties",
        "north,south,west",
    )
    assert again.returncode != 0
    assert again.stderr.count("\n") == 1 and "already exists" in again.stderr
    listed = run("campaign", "list", agg)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("weekly-kpis: every monday 06:00 Europe/Berlin; secagg, 3")
    assert "next round 20" in listed.stdout
    paused = run("campaign", "pause", agg, "weekly-kpis")
    assert paused.returncode == 0 and "paused" in paused.stdout
    resumed = run("campaign", "resume", agg, "weekly-kpis", "--json")
    assert resumed.returncode == 0 and json.loads(resumed.stdout)["paused"] is False
    bad = run(
        "campaign",
        "create",
        agg,
        "other",
        "--schedule",
        "every funday 06:00",
        "--parties",
        "north,south,west",
    )
    assert bad.returncode == 2
    assert bad.stderr.strip() == (
        "blindsum: error: AdminService.SaveCampaign: schedule: 'funday' is not a day of the week"
    )
    stranger = run(
        "campaign",
        "create",
        agg,
        "other",
        "--schedule",
        "every day 06:00",
        "--parties",
        "north,nobody",
    )
    assert stranger.returncode != 0 and "nobody" in stranger.stderr
    deleted = run("campaign", "delete", agg, "weekly-kpis")
    assert deleted.returncode == 0 and "deleted weekly-kpis" in deleted.stdout
    assert run("campaign", "list", agg).stdout.strip() == "no campaigns yet"
    gone = run("campaign", "pause", agg, "weekly-kpis")
    assert gone.returncode != 0 and "does not exist" in gone.stderr


def test_audit_command_prints_and_verifies_the_log(served: Path) -> None:
    """Issue 13: `aggregator audit DIR --verify` prints both stores' logs and checks
    their chains; a row edited in the database makes it exit 3 naming the row."""
    agg = str(served)
    ok = run("aggregator", "audit", agg, "--verify")
    assert ok.returncode == 0, ok.stderr
    assert "party_enrolled" in ok.stdout and "party=north" in ok.stdout
    assert "aggregator chain head: hmac:" in ok.stdout
    assert ok.stdout.rstrip().endswith("audit chain ok")
    doc = json.loads(run("aggregator", "audit", agg, "--json").stdout)
    first = next(r for r in doc["rows"] if r["store"] == "aggregator")
    with sqlite3.connect(served / "aggregator.sqlite") as db:
        db.execute("UPDATE audit SET detail_json = '{}' WHERE id = ?", (first["id"],))
    bad = run("aggregator", "audit", agg, "--verify")
    assert bad.returncode == 3
    assert f"problem: aggregator store: audit row {first['id']} ({first['event']})" in bad.stdout
    check = run("aggregator", "check", agg)
    assert check.returncode == 3 and f"audit row {first['id']}" in check.stdout
