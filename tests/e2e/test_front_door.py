"""The first hour of a new user: the party refuses to submit nothing, the CLI explains
itself, waits for a server that is starting, says what to run when none answers, and a
secagg party loads none of the heavy libraries."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from aggregator.service import RunningAggregator
from blindsum.bundle import BUNDLE_CONFIG, PartyConfig, load_bundle
from blindsum.config import dump_config, load_config
from blindsum.model import Mode, OpenRoundSpec, Phase, RoundState, RoundView
from blindsum.window import parse_week
from blindsum_app.cli import build_parser, main
from blindsum_app.cli.common import Progress
from party.node import PartyNode
from tests.conftest import Deployment
from tests.integration.test_rounds_grpc import party_vector

CLI = [sys.executable, "-m", "blindsum_app.cli"]
ROOT = Path(__file__).resolve().parents[2]
METRICS = ROOT / "deploy" / "examples" / "metrics"


def run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _fast_fail(bundle: Path) -> None:
    """One attempt per RPC, so a test of an unreachable server does not sit in backoff."""
    path = bundle / BUNDLE_CONFIG
    cfg = load_config(path, PartyConfig)
    path.write_text(dump_config(replace(cfg, max_attempts=1, rpc_timeout_s=10.0)))


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP port that accepts connections but never answers: any connection attempt by
    the code under test shows up in its accept queue."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


def _connections(sock: socket.socket) -> int:
    count = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


# -- the party refuses to submit nothing ------------------------------------------------


def test_all_rows_quarantined_exits_2_without_contacting_the_aggregator(
    deployment: Deployment,
    listener: socket.socket,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    export = tmp_path / "tickets.csv"
    # Exported by a tool whose regions are city names: no row is in a schema region.
    export.write_text(
        "ticket_id,created_date,status,region\n"
        + "".join(f"T{i},2026-11-16 10:00:00,Resolved,Springfield\n" for i in range(40))
    )
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    code = main(
        [
            "party",
            "submit",
            "--bundle",
            str(deployment.bundle("team-a")),
            "--tickets",
            str(export),
            "--aggregator",
            address,
            "--round",
            "week-47",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("blindsum: error: --tickets: no accepted ticket")
    assert "unknown_region (40 rows)" in last and "tickets.csv.quarantine.jsonl" in last
    # The summary lines agree with each other: no "0 in unknown regions" after 40 were.
    assert "quarantined 40 (unknown_region 40)" in err and "in unknown regions" not in err
    assert len((tmp_path / "tickets.csv.quarantine.jsonl").read_text().splitlines()) == 40
    assert _connections(listener) == 0


def _partly_bad_export(path: Path) -> None:
    good = "".join(f"T{i},2026-11-16 10:00:00,Resolved,EMEA\n" for i in range(6))
    bad = "".join(f"B{i},not a date,Resolved,EMEA\n" for i in range(4))
    path.write_text("ticket_id,created_date,status,region\n" + good + bad)


def test_too_many_quarantined_rows_exit_2_unless_allow_partial(
    deployment: Deployment,
    listener: socket.socket,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    export = tmp_path / "tickets.csv"
    _partly_bad_export(export)  # 4 of 10 rows (40 %) quarantined, over the 20 % default
    bundle = deployment.bundle("team-a")
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    base = ["party", "submit", "--bundle", str(bundle), "--tickets", str(export)]
    code = main([*base, "--aggregator", address])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2
    assert "4 of 10 rows (40%) quarantined" in err and "--allow-partial" in err
    assert _connections(listener) == 0
    # The same export passes the offline check with --allow-partial ...
    check = ["party", "check", "--tickets", str(export), "--bundle", str(bundle)]
    assert main(check) == 2
    capsys.readouterr()
    assert main([*check, "--allow-partial"]) == 0
    assert "6 of 10 rows usable" in capsys.readouterr().out
    # ... and a party.toml that tolerates 50 % lets submit go on to the network, where
    # nothing listens on port 1: exit 4, and the message says what to check.
    cfg_path = bundle / BUNDLE_CONFIG
    cfg = load_config(cfg_path, PartyConfig)
    cfg_path.write_text(dump_config(replace(cfg, max_quarantined_share=0.5)))
    _fast_fail(bundle)
    code = main([*base, "--aggregator", "127.0.0.1:1", "--wait", "0"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 4, err
    assert "cannot reach the aggregator at 127.0.0.1:1" in err
    assert "blindsum aggregator serve" in err and "party.toml" in err


def test_a_bad_metrics_file_fails_before_any_round_naming_the_file(
    deployment: Deployment,
    listener: socket.socket,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    missing = tmp_path / "missing.json"
    code = main(
        [
            "party",
            "submit",
            "--bundle",
            str(deployment.bundle("team-a")),
            "--metrics",
            str(missing),
            "--aggregator",
            address,
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert str(missing) in err and "--round" not in err and "\n" not in err
    assert _connections(listener) == 0


def test_a_campaign_schema_is_checked_when_given_and_named_when_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A campaign opened with its own schema has other regions: the built-in schema
    refuses its export and says to pass --schema; with the campaign's file it passes."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    default = (ROOT / "blindsum" / "schemas" / "default.toml").read_text()
    campaign = tmp_path / "nordics.toml"
    campaign.write_text(
        default.replace('regions = ["APAC", "EMEA", "Americas"]', 'regions = ["Nordics", "DACH"]')
    )
    export = tmp_path / "t.csv"
    export.write_text(
        "ticket_id,created_date,status,region\n"
        + "".join(f"T{i},2026-11-16 10:00:00,Resolved,Nordics\n" for i in range(5))
    )
    check = ["party", "check", "--tickets", str(export)]
    assert main(check) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "the built-in schema's regions (APAC, EMEA, Americas)" in err
    assert "pass it with --schema" in err
    assert main([*check, "--schema", str(campaign)]) == 0
    assert "5 of 5 rows usable" in capsys.readouterr().out
    # An offline check made no party secret as a side effect.
    assert not (tmp_path / "config").exists()


def test_data_in_a_region_the_party_does_not_serve_is_refused_offline(
    deployment: Deployment, listener: socket.socket, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = deployment.bundle("team-a")
    cfg = load_config(bundle / BUNDLE_CONFIG, PartyConfig)
    (bundle / BUNDLE_CONFIG).write_text(dump_config(replace(cfg, regions=("APAC",))))
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    metrics = str(METRICS / "team-a.json")
    code = main(
        ["party", "submit", "--bundle", str(bundle), "--metrics", metrics, "--aggregator", address]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("blindsum: error: regions: data in EMEA")
    assert "party.toml regions: APAC" in err and "\n" not in err
    assert _connections(listener) == 0


def test_party_check_validates_metrics_files_offline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["party", "check", "--metrics", str(METRICS / "team-a.json")]) == 0
    assert "ok:" in capsys.readouterr().out
    assert main(["party", "check", "--metrics", str(METRICS / "team-c.csv"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] is True and result["vector_length"] > 0
    bad = tmp_path / "bad.csv"
    bad.write_text("region,metric,bin,value\nAPAC,tickets,,12\nAPAC,csat,9,1\n")
    assert main(["party", "check", "--metrics", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("blindsum: error:") and "bad.csv:3" in err and "\n" not in err


# -- the CLI explains itself --------------------------------------------------------------


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))
            return
    yield path, parser


def test_every_option_has_help_with_its_default_and_every_command_an_example() -> None:
    commands = list(_commands(build_parser()))
    assert len(commands) >= 17
    for path, parser in commands:
        where = " ".join(path)
        # Members of a required either-or group (--metrics | --tickets) have no default.
        either_or = {
            id(a) for g in parser._mutually_exclusive_groups if g.required for a in g._group_actions
        }
        assert parser.epilog and "example" in parser.epilog, where
        assert all(f"blindsum {where}" in line for line in parser.epilog.splitlines()[1:]), where
        text = parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            name = "/".join(action.option_strings) or action.dest
            assert action.help, f"{where}: {name} has no help"
            optional = not action.required and id(action) not in either_or
            if action.option_strings and optional and action.nargs != 0:
                # A value option either shows its default or says in words what it is.
                assert "default" in parser._get_formatter()._expand_help(action), (
                    f"{where}: {name} does not say its default"
                )
        assert "(default: None)" not in text, where


def test_top_level_help_documents_the_exit_codes() -> None:
    text = build_parser().format_help()
    for code in ("0 ", "2 ", "3 ", "4 ", "130"):
        assert f"\n  {code}" in text
    assert "interrupted (Ctrl-C)" in text


def test_progress_is_one_live_line_on_a_terminal_and_plain_lines_elsewhere() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    view = RoundView(
        round_id="week-47",
        mode=Mode.SECAGG,
        state=RoundState.OPEN,
        phase=Phase.SHARE,
        parties=("a", "b", "c"),
        threshold=2,
        min_contributors=3,
        schema_id="0" * 64,
        schema_toml="",
        submitted=("a",),
        advertised=("a", "b", "c"),
        abort_reason="",
        vector_length=1,
        created_ms=0,
        graph_degree=2,
        phase_deadline_ms=0,
    )
    tty = Tty()
    live = Progress(tty)
    live.status(view)
    live.message("[a] sent shares")
    live.status(replace(view, submitted=("a", "b")))
    live.close()
    out = tty.getvalue()
    assert out.count("\n") == 2  # the message, and the final newline; the status is redrawn
    assert "\r\x1b[2Kround week-47: phase share, 2/3 parties in, 0 s left" in out
    pipe = io.StringIO()
    plain = Progress(pipe)
    plain.status(view)
    plain.status(view)  # unchanged: not printed again
    plain.status(replace(view, submitted=("a", "b")))
    assert pipe.getvalue().splitlines() == [
        "round week-47: phase share, 1/3 parties in, 0 s left",
        "round week-47: phase share, 2/3 parties in, 0 s left",
    ]
    assert "\r" not in pipe.getvalue()


# -- a server that is starting, one that is not there, Ctrl-C ----------------------------


async def _until_ready(ready: Path, proc: asyncio.subprocess.Process) -> None:
    """Until the party process wrote its ready file (bounded; fails if it exits first)."""
    for _ in range(6000):
        if ready.exists():
            return
        assert proc.returncode is None, "the party process exited before it was ready"
        await asyncio.sleep(0.05)
    raise AssertionError("the party process did not get ready")


async def _two_more_parties(
    deployment: Deployment, address: str, round_id: str
) -> tuple[RoundView, ...]:
    """team-b and team-c, in process, complete a 3-party round with the party under test."""

    async def one(name: str, index: int) -> RoundView:
        node = PartyNode(load_bundle(deployment.bundle(name)), address=address)
        try:
            return await node.run_round(round_id, lambda _s, _w: party_vector(index))
        finally:
            await node.close()

    return tuple(await asyncio.wait_for(asyncio.gather(one("team-b", 1), one("team-c", 2)), 300))


def test_open_round_waits_for_a_server_that_is_still_starting(tmp_path: Path) -> None:
    agg = tmp_path / "agg"
    assert run("aggregator", "init", str(agg), "--listen", "127.0.0.1:0").returncode == 0
    for name in ("north", "south", "west"):
        assert (
            run("aggregator", "enroll", str(agg), name, "-o", str(tmp_path / name)).returncode == 0
        )
    # `serve &` then `open-round` at once: open-round starts first, and says (at INFO)
    # that it is waiting; only then does the server start.
    opener = subprocess.Popen(
        [
            *CLI,
            *("--log-level", "INFO", "aggregator", "open-round", str(agg)),
            *("--parties", "north,south,west", "--round-id", "week-47"),
            *("--connect-timeout", "240", "--json"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert opener.stderr is not None
    first = opener.stderr.readline()
    assert json.loads(first)["event"] == "admin_waiting_for_server", first
    server = subprocess.Popen(
        [*CLI, "aggregator", "serve", str(agg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        out, err = opener.communicate(timeout=300)
        assert opener.returncode == 0, err
        view = json.loads(out)
        assert view["round_id"] == "week-47" and view["state"] == "open"
        assert view["waiting_for"] == ["north", "south", "west"]
    finally:
        opener.kill()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    assert not (agg / "aggregator.addr").exists()  # removed on a clean stop


def test_open_round_with_no_server_says_what_to_run(tmp_path: Path) -> None:
    agg = tmp_path / "agg"
    assert run("aggregator", "init", str(agg), "--listen", "127.0.0.1:1").returncode == 0
    res = run("aggregator", "open-round", str(agg), "--parties", "a,b,c", "--connect-timeout", "0")
    assert res.returncode == 4, res.stderr
    line = res.stderr.strip()
    assert "\n" not in line and "cannot reach the aggregator at 127.0.0.1:1" in line
    assert f"blindsum aggregator serve {agg}" in line


async def test_party_submit_json_and_ctrl_c(
    deployment: Deployment, aggregator: RunningAggregator, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{aggregator.port}"
    # Ctrl-C while waiting for a round that is never opened: exit 130, one line.
    ready = tmp_path / "ready"
    waiting = subprocess.Popen(
        [
            *CLI,
            *("party", "submit", "--bundle", str(deployment.bundle("team-e"))),
            *("--metrics", str(METRICS / "team-a.json"), "--aggregator", address),
            *("--round", "never-opened", "--wait", "600", "--ready-file", str(ready)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(3000):
            if ready.exists() or waiting.poll() is not None:
                break
            await asyncio.sleep(0.1)
        assert ready.exists(), waiting.stderr.read() if waiting.stderr else ""
        waiting.send_signal(signal.SIGINT)
        _, err = await asyncio.to_thread(waiting.communicate, timeout=120)
        assert waiting.returncode == 130
        assert err.strip().splitlines()[-1] == "blindsum: error: interrupted"
    finally:
        waiting.kill()

    # --json: the final state of a real round, on stdout, as JSON. The party process is
    # ready (input checked, aggregator answered) before the round opens.
    ready = tmp_path / "ready-json"
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        "party",
        "submit",
        "--bundle",
        str(deployment.bundle("team-a")),
        "--metrics",
        str(METRICS / "team-a.json"),
        "--aggregator",
        address,
        "--round",
        "json-round",
        "--ready-file",
        str(ready),
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    await _until_ready(ready, proc)
    view = await aggregator.manager.open_round(
        OpenRoundSpec(
            mode=Mode.SECAGG,
            parties=("team-a", "team-b", "team-c"),
            phase_timeout_s=120,
            round_id="json-round",
        )
    )
    others = await _two_more_parties(deployment, address, view.round_id)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=300)
    assert proc.returncode == 0, stderr.decode()
    result = json.loads(stdout)
    assert result["party"] == "team-a" and result["round_id"] == view.round_id
    assert result["state"] == "complete" and all(o.state is RoundState.COMPLETE for o in others)


# -- a secagg party loads no heavy library ------------------------------------------------

_PROBE = textwrap.dedent(
    """
    import json, sys
    from blindsum_app.cli import main
    code = main(sys.argv[1:])
    heavy = ("tenseal", "spacy", "presidio_analyzer", "presidio_anonymizer", "faker", "opendp")
    print(json.dumps({"code": code, "loaded": sorted(m for m in heavy if m in sys.modules)}))
    """
)


async def test_secagg_participation_loads_no_heavy_library(
    deployment: Deployment, aggregator: RunningAggregator, tmp_path: Path
) -> None:
    from party.synthetic import TeamProfile, generate_rows, write_rows

    export = tmp_path / "tickets.csv"
    import datetime as dt

    rows = generate_rows(
        TeamProfile(name="team-a", tickets_per_region=30), seed=3, start=dt.date(2026, 11, 16)
    )
    write_rows(rows, export)
    address = f"127.0.0.1:{aggregator.port}"
    ready = tmp_path / "ready"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _PROBE,
        "party",
        "submit",
        "--bundle",
        str(deployment.bundle("team-a")),
        "--tickets",
        str(export),
        "--aggregator",
        address,
        "--round",
        "probe-round",
        "--ready-file",
        str(ready),
        "--progress",
        "quiet",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    await _until_ready(ready, proc)
    week = parse_week("2026-W47")  # the export's week; the tests' config allows any window
    view = await aggregator.manager.open_round(
        OpenRoundSpec(
            mode=Mode.SECAGG,
            parties=("team-a", "team-b", "team-c"),
            phase_timeout_s=120,
            round_id="probe-round",
            window_start_ms=week.start_ms,
            window_end_ms=week.end_ms,
        )
    )
    await _two_more_parties(deployment, address, view.round_id)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=300)
    probe = json.loads(out.decode().strip().splitlines()[-1])
    assert probe["code"] == 0, err.decode()
    assert probe["loaded"] == []
    assert aggregator.manager.view(view.round_id).state is RoundState.COMPLETE
