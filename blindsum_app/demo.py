"""``blindsum demo``: a whole deployment on 127.0.0.1, in separate processes.

It initialises an aggregator with a dev CA generated now, enrolls N parties,
writes each party one synthetic ticket export holding two weeks of tickets (with PII
in the free text), starts ``blindsum aggregator serve`` (with the embedded custodian)
and one ``blindsum party submit --tickets`` process per party and round, which runs
the whole round path (ingest -> customer tokens -> metrics -> protect; the free text
is never read, so it is not anonymized on this path), and runs two weekly rounds,
each covering one week's tickets (its ticket window): the first week, healthy, as a
secagg round with distributed DP in which ``--drop`` parties vanish after the share
phase; then the second, with a service incident injected in EMEA, as an he round
with central DP. It prints each released report with its flags, writes the last one
to ``report.html``, and checks every released number against the plaintext sum of
the included parties' vectors, which the demo recomputes, for its own check only,
from separate files that hold only that week's tickets (so the check does not rely
on the parties' window filter): exact for contributor counts, within 6 noise
standard deviations for the noisy cells. It also checks that the incident is
flagged and the healthy regions are not.

The party processes start first. Each checks its export, computes its vector and
connects to the aggregator, then says it is ready (``--ready-file``) and waits for
the round. Only when every party is ready does the demo open the round, so the
phase clock never runs while a loaded machine is still starting Python processes.

Like the CLI, this module is a composition root in the layer above both roles.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from aggregator import config as cfgmod
from aggregator.admin import enroll, init
from aggregator.adminclient import admin_call, admin_channel, format_campaign
from aggregator.check import audit_log
from aggregator.report import render
from blindsum import codec, reportdoc
from blindsum.bundle import BUNDLE_CONFIG, PartyConfig
from blindsum.config import dump_config, load_config
from blindsum.errors import BlindsumError, InvalidArgument, Unavailable
from blindsum.model import (
    Cell,
    DpMode,
    DpSpec,
    Mode,
    OpenRoundSpec,
    Report,
    Severity,
    iso_week,
)
from blindsum.rpc.v1 import admin_pb2, admin_pb2_grpc, common_pb2, report_pb2_grpc
from blindsum.schema import MetricKind, Schema
from blindsum.types import U64Vector
from blindsum.window import parse_week
from party.pipeline import TicketSource, compute, default_secret_path
from party.synthetic import TeamProfile, generate_rows, write_rows

#: The demo's two weeks of tickets (fixed, so runs are comparable), each a Monday: a
#: healthy week, then a week with a service incident in EMEA. Each round covers one of
#: them (its ticket window), and their ISO weeks are the ledger windows.
DEMO_WEEKS = (dt.date(2026, 11, 9), dt.date(2026, 11, 16))
INCIDENT_REGION = "EMEA"
#: A released cell further than this many noise sds from the plaintext sum fails the
#: check; a correct release does so with probability ~2e-9 per cell.
CHECK_SDS = 6.0
#: Bounds on the party processes: getting ready (start Python, run the pipeline,
#: connect), and then taking part in the round.
PARTY_START_TIMEOUT_S = 300
PARTY_ROUND_TIMEOUT_S = 600
#: Default seconds per phase. The clock starts once every party is ready, so it only
#: has to cover a phase's work on a loaded machine, and the one wait a dropout costs.
DEFAULT_PHASE_TIMEOUT_S = 20

TEAM_NAMES = ("team-alpha", "team-beta", "team-gamma", "team-delta", "team-epsilon")


@dataclass(frozen=True)
class RoundResult:
    mode: str
    round_id: str
    state: str
    included: tuple[str, ...]
    dropped: tuple[str, ...]
    report: Report | None
    matches_plaintext: bool
    abort_reason: str = ""
    week: str = ""
    incident: bool = False
    flags_ok: bool = True


def team_names(n: int) -> list[str]:
    return [TEAM_NAMES[i] if i < len(TEAM_NAMES) else f"team-{i + 1:03d}" for i in range(n)]


def team_profile(name: str, index: int, *, incident: bool = False) -> TeamProfile:
    """Demo team ``index``: only the first two serve the Americas (so k = 3 suppresses
    it). In an incident week every team's EMEA queue fails: escalations x4, worse CSAT,
    longer resolutions (party/synthetic.py)."""
    regions = ("APAC", "EMEA", "Americas") if index < 2 else ("APAC", "EMEA")
    return TeamProfile(
        name=name,
        regions=regions,
        tickets_per_region=120 + 20 * (index % 3),
        failure_region=INCIDENT_REGION if incident else None,
        escalation_multiplier=4.0,
    )


def _allow_demo_windows(agg_dir: Path) -> None:
    """The demo replays two fixed weeks. On a machine whose clock is set before their
    end, the aggregator would refuse them as not over yet; the override lets the demo
    run whatever the clock says (docs/DEPLOYING.md, ``allow_window_override``)."""
    cfg = cfgmod.load(agg_dir)
    cfg = replace(cfg, release=replace(cfg.release, allow_window_override=True))
    (agg_dir / cfgmod.CONFIG_NAME).write_text(dump_config(cfg))


def _enable_metrics(agg_dir: Path) -> int:
    """Serve /healthz, /readyz and /metrics on a free loopback port; the port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    cfg = cfgmod.load(agg_dir)
    cfg = replace(cfg, metrics=replace(cfg.metrics, listen=f"127.0.0.1:{port}"))
    (agg_dir / cfgmod.CONFIG_NAME).write_text(dump_config(cfg))
    return port


def _scrape(url: str) -> str:
    """A few families of the aggregator's /metrics, one line: what a dashboard shows."""
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - loopback http
        text = answer.read().decode()
    wanted = ("blindsum_rounds{", "blindsum_dp_budget_left_rho{", "blindsum_rpc_calls_total{")
    picked = [
        line
        for line in text.splitlines()
        if line.startswith(wanted) and ('state="complete"' in line or "budget" in line)
    ]
    return "; ".join(picked[:4])


def _set_served_regions(bundle: Path, regions: tuple[str, ...]) -> None:
    """Each team declares the regions it serves: with DP on, its contributor indicators
    come from this list, not from its tickets (party/privacy.py)."""
    path = bundle / BUNDLE_CONFIG
    cfg = load_config(path, PartyConfig)
    path.write_text(dump_config(replace(cfg, regions=regions)))


def _spawn(args: Sequence[str], *, log: Path | None) -> subprocess.Popen[bytes]:
    """Run ``blindsum ARGS``; its output goes to ``log`` if given, else to ours."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if log is None:
        return subprocess.Popen([sys.executable, "-m", "blindsum_app.cli", *args], env=env)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "blindsum_app.cli", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _wait_ready(
    procs: dict[str, subprocess.Popen[bytes]],
    ready_dir: Path,
    timeout: float,
    logs: dict[str, Path] | None = None,
) -> None:
    """Until every party process has written its ready file. A process that exits first
    failed its checks or could not connect: the demo stops with its name, exit code and
    where its error is."""
    deadline = time.monotonic() + timeout
    while True:
        pending = [name for name in procs if not (ready_dir / name).exists()]
        if not pending:
            return
        for name in pending:
            code = procs[name].poll()
            if code is not None:
                where = f"see {logs[name]}" if logs else "its error is printed above"
                raise BlindsumError(
                    f"party {name} exited with code {code} before it was ready ({where})"
                )
        if time.monotonic() > deadline:
            raise Unavailable(f"parties not ready after {timeout:.0f} s: {', '.join(pending)}")
        time.sleep(0.1)


def _wait_for_address(directory: Path, server: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    path = directory / cfgmod.ADDRESS_FILE
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise Unavailable(
                f"the aggregator exited early with code {server.returncode} "
                f"(see {directory.parent / 'logs' / 'aggregator.log'})"
            )
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.1)
    raise Unavailable("the aggregator did not start in time")


async def _open(directory: Path, spec: OpenRoundSpec) -> str:
    info = await admin_call(
        directory, "OpenRound", codec.open_round_to_pb(spec), connect_timeout_s=30
    )
    return str(info.round_id)


async def _final(directory: Path, round_id: str) -> tuple[Any, Report | None]:
    channel = admin_channel(directory)
    try:
        ref = common_pb2.RoundRef(round_id=round_id)
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        for _ in range(600):
            view = codec.round_view_from_pb(await stub.GetStatus(ref, timeout=30))
            if view.state.value != "open":
                break
            await asyncio.sleep(0.2)
        report = None
        if view.state.value == "complete":
            msg = await report_pb2_grpc.ReportServiceStub(channel).GetReport(ref, timeout=30)
            report = codec.report_from_pb(msg)
        return view, report
    finally:
        await channel.close(None)


#: The campaign the demo leaves scheduled on its aggregator, to show the command.
DEMO_CAMPAIGN = "weekly-kpis"
DEMO_SCHEDULE = "every monday 06:00 UTC"


async def _schedule(directory: Path, parties: Sequence[str]) -> str:
    """Create the weekly campaign a team would run, and return its one-line listing."""
    spec = OpenRoundSpec(mode=Mode.SECAGG, parties=tuple(parties), dp=DpSpec(mode=DpMode.CENTRAL))
    req = admin_pb2.SaveCampaignRequest(
        name=DEMO_CAMPAIGN, schedule=DEMO_SCHEDULE, spec=codec.open_round_to_pb(spec)
    )
    await admin_call(directory, "SaveCampaign", req, connect_timeout_s=30)
    listed = await admin_call(directory, "ListCampaigns", admin_pb2.ListCampaignsRequest())
    return "\n".join(format_campaign(c) for c in listed.campaigns)


def party_vector(schema: Schema, tickets: Path, bundle: Path) -> U64Vector:
    """The demo's own check: the same pipeline the party ran, with the party's secret,
    on a file that holds only the round's week of tickets (no window needed)."""
    served = load_config(bundle / BUNDLE_CONFIG, PartyConfig).regions
    source = TicketSource(str(tickets))
    return compute(source, schema, default_secret_path(bundle), served=served).vector


def check_report(schema: Schema, report: Report, vectors: Sequence[U64Vector]) -> bool:
    """Every contributor count equals the plaintext sum of ``vectors``, and every released
    (or merged) cell is within CHECK_SDS noise sds of it (exactly equal without DP)."""
    total = np.zeros(schema.vector_length, dtype=np.uint64)
    for vector in vectors:
        total += vector
    expected = [int(v) for v in total.view(np.int64)]
    for region in report.regions:
        contributors = expected[schema.contributor_index(region.region)]
        if region.suppressed:
            if contributors >= report.min_contributors:
                return False
            continue
        if region.contributors != contributors:
            return False
        for cell in region.cells:
            if cell.value is None:
                continue
            truth = sum(expected[i] for i in cell_slots(schema, region.region, cell))
            if abs(cell.value - truth) > CHECK_SDS * cell.noise_sd:
                return False
    return True


def cell_slots(schema: Schema, region: str, cell: Cell) -> list[int]:
    """The vector slots a released cell covers (several for a merged histogram bin)."""
    metric = schema.metric(cell.metric)
    if metric.kind is not MetricKind.HISTOGRAM or cell.lo is None or cell.hi is None:
        return [schema.slot_index(region, metric.name)]
    edges = metric.edges
    return [
        schema.slot_index(region, metric.name, b)
        for b in range(metric.slots)
        if cell.lo <= edges[b] and edges[b + 1] <= cell.hi
    ]


def flags_as_expected(report: Report, *, incident: bool) -> bool:
    """The incident region raises a breach in an incident week; no other region does."""
    for region in report.regions:
        breach = any(f.severity is Severity.BREACH for f in region.flags)
        should = incident and region.region == INCIDENT_REGION
        if breach != should and not region.suppressed:
            return False
    return True


def _run_round(
    agg_dir: Path,
    address: str,
    bundles: dict[str, Path],
    exports: dict[str, Path],
    week_only: dict[str, Path],
    *,
    mode: Mode,
    drop: int,
    schema: Schema,
    quiet: bool,
    week: dt.date,
    incident: bool,
    phase_timeout_s: int,
) -> RoundResult:
    names = list(bundles)
    dropped = tuple(names[-drop:]) if drop else ()
    # secagg rounds show distributed DP (the aggregator only sees noisy sums), he rounds
    # central DP (OpenDP noise at release).
    dp_mode = DpMode.DISTRIBUTED if mode is Mode.SECAGG else DpMode.CENTRAL
    round_id = f"{iso_week(week)}-{mode.value}"
    # The round covers that week's tickets; the ledger window follows (its ISO week).
    window = parse_week(iso_week(week))
    spec = OpenRoundSpec(
        mode=mode,
        parties=tuple(names),
        min_contributors=3,
        phase_timeout_s=phase_timeout_s,
        round_id=round_id,
        dp=DpSpec(mode=dp_mode),
        window_start_ms=window.start_ms,
        window_end_ms=window.end_ms,
    )
    if not quiet:
        what = f"week of {week.isoformat()}" + (
            f", service incident in {INCIDENT_REGION}" if incident else ", healthy"
        )
        print(
            f"\n== {mode.value} round {round_id} ({what}): {len(names)} parties, "
            f"{dp_mode.value} DP\n   tickets created {window.describe()}",
            flush=True,
        )
        if dropped:
            print(f"   {', '.join(dropped)} will drop out after the share phase", flush=True)
    ready_dir = agg_dir.parent / "ready" / round_id
    ready_dir.mkdir(parents=True, exist_ok=True)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    # With --json the parties' progress would garble stdout: it goes to a log per party.
    logs = {n: agg_dir.parent / "logs" / round_id / f"{n}.log" for n in names} if quiet else {}
    try:
        for name in names:
            args = [
                "party",
                "submit",
                "--bundle",
                str(bundles[name]),
                "--tickets",
                str(exports[name]),
                # The pre-flight check runs on the round's week, and its result is reused.
                "--week",
                iso_week(week),
                "--aggregator",
                address,
                "--round",
                round_id,
                "--wait",
                str(PARTY_START_TIMEOUT_S),
                "--ready-file",
                str(ready_dir / name),
                "--progress",
                "plain",
            ]
            if name in dropped:
                args += ["--drop-after", "share"]
            procs[name] = _spawn(args, log=logs.get(name))
        _wait_ready(procs, ready_dir, PARTY_START_TIMEOUT_S, logs)
        if not quiet:
            print(f"   all {len(names)} party processes are ready; opening the round", flush=True)
        asyncio.run(_open(agg_dir, spec))
        for proc in procs.values():
            proc.wait(timeout=PARTY_ROUND_TIMEOUT_S)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    view, report = asyncio.run(_final(agg_dir, round_id))
    included = tuple(report.included_parties) if report else ()
    ok = report is not None and check_report(
        schema, report, [party_vector(schema, week_only[n], bundles[n]) for n in included]
    )
    return RoundResult(
        mode=mode.value,
        round_id=round_id,
        state=view.state.value,
        included=included,
        dropped=dropped,
        report=report,
        matches_plaintext=ok,
        abort_reason=view.abort_reason,
        week=iso_week(week),
        incident=incident,
        flags_ok=report is not None and flags_as_expected(report, incident=incident),
    )


def run_demo(
    *,
    mode: str,
    parties: int,
    drop: int,
    as_json: bool,
    workdir: Path | None,
    phase_timeout_s: int = DEFAULT_PHASE_TIMEOUT_S,
) -> int:
    if phase_timeout_s < 1:
        raise InvalidArgument("must be at least 1 second", field="--phase-timeout")
    if parties < 3:
        raise BlindsumError("the demo needs at least 3 parties (k = 3)")
    if drop < 0 or drop >= parties:
        raise BlindsumError("--drop must be between 0 and the number of parties - 1")
    root = workdir or Path(tempfile.mkdtemp(prefix="blindsum-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    agg_dir = root / "aggregator"
    quiet = as_json

    def say(message: str) -> None:
        if not quiet:
            print(message, flush=True)

    say(f"blindsum demo in {root}")
    init(agg_dir, listen="127.0.0.1:0")
    _allow_demo_windows(agg_dir)
    metrics_url = f"http://127.0.0.1:{_enable_metrics(agg_dir)}/metrics"
    say("  created a dev CA, server, admin and custodian certificates, and the SQLite store")
    schema = Schema.default()
    bundles: dict[str, Path] = {}
    exports: dict[str, Path] = {}
    weekly: list[dict[str, Path]] = [{} for _ in DEMO_WEEKS]
    for i, name in enumerate(team_names(parties)):
        bundles[name] = root / "parties" / name
        enroll(agg_dir, name, bundles[name])
        _set_served_regions(bundles[name], team_profile(name, i).regions)
        rows: list[dict[str, str]] = []
        for w, week in enumerate(DEMO_WEEKS):
            path = root / "parties" / f"{name}.{iso_week(week)}.tickets.csv"
            profile = team_profile(name, i, incident=w == len(DEMO_WEEKS) - 1)
            week_rows = generate_rows(profile, seed=2026 + 100 * w + i, start=week)
            write_rows(week_rows, path)
            weekly[w][name] = path
            rows += week_rows
        # The party's export holds both weeks, as a helpdesk export does, with ticket
        # ids numbered through it; each round picks its week's tickets by their
        # created time. The files per week are for the demo's own check.
        exports[name] = root / "parties" / f"{name}.tickets.csv"
        write_rows(
            [dict(row, ticket_id=f"TKT-{n:06d}") for n, row in enumerate(rows, start=1)],
            exports[name],
        )
    say(
        f"  enrolled {parties} parties and wrote each a synthetic ticket export of "
        f"{len(DEMO_WEEKS)} weeks (names, emails and phones in the free text; the second "
        f"week has a service incident in {INCIDENT_REGION})"
    )
    server = _spawn(["aggregator", "serve", str(agg_dir)], log=root / "logs" / "aggregator.log")
    results: list[RoundResult] = []
    scheduled = ""
    try:
        address = _wait_for_address(agg_dir, server, 60)
        say(f"  aggregator and custodian running (aggregator at {address})")
        modes = [Mode.SECAGG, Mode.HE] if mode == "both" else [Mode(mode)]
        for w, week in enumerate(DEMO_WEEKS):
            m = modes[w % len(modes)]
            result = _run_round(
                agg_dir,
                address,
                bundles,
                exports,
                weekly[w],
                mode=m,
                drop=drop if m is Mode.SECAGG else 0,
                schema=schema,
                quiet=quiet,
                week=week,
                incident=w == len(DEMO_WEEKS) - 1,
                phase_timeout_s=phase_timeout_s,
            )
            results.append(result)
            if not quiet:
                _print_result(result)
        scheduled = asyncio.run(_schedule(agg_dir, list(bundles)))
        say(
            "\nscheduled (the aggregator opens each week's round itself; "
            f"`blindsum campaign list {agg_dir}`):\n  {scheduled}"
        )
        say(f"metrics: {metrics_url}\n  {_scrape(metrics_url)}")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
    audit = audit_log(agg_dir, verify=True)
    say(
        f"audit: {len(audit.rows)} events in the two stores' logs, "
        + ("hash chains intact" if not audit.problems else f"{len(audit.problems)} problems")
        + f" (`blindsum aggregator audit {agg_dir} --verify`)"
    )
    ok = all(r.state == "complete" and r.matches_plaintext and r.flags_ok for r in results)
    ok = ok and not audit.problems
    html_path: Path | None = None
    last = results[-1].report if results else None
    if last is not None:
        html_path = root / "report.html"
        html_path.write_text(render(last, "html"), encoding="utf-8")
    if as_json:
        print(
            json.dumps(
                {
                    "workdir": str(root),
                    "ok": ok,
                    "report_html": str(html_path) if html_path else None,
                    "scheduled": scheduled,
                    "metrics_url": metrics_url,
                    "audit_events": len(audit.rows),
                    "audit_problems": audit.problems,
                    "rounds": [
                        {
                            "mode": r.mode,
                            "round_id": r.round_id,
                            "state": r.state,
                            "abort_reason": r.abort_reason,
                            "included_parties": list(r.included),
                            "dropped_parties": list(r.dropped),
                            "week": r.week,
                            "incident": r.incident,
                            "matches_plaintext_sum": r.matches_plaintext,
                            "flags_as_expected": r.flags_ok,
                            "report": reportdoc.to_doc(r.report) if r.report else None,
                        }
                        for r in results
                    ],
                },
                indent=2,
            )
        )
    else:
        if html_path is not None:
            print(f"\nHTML report of the last round: {html_path}")
        print(f"\n{'all rounds correct' if ok else 'DEMO FAILED'}; files kept in {root}")
    return 0 if ok else 1


def _print_result(result: RoundResult) -> None:
    if result.report is None:
        print(f"round {result.round_id} {result.state}: {result.abort_reason}")
        return
    print()
    print(render(result.report, "table"), end="")
    suppressed = [r.region for r in result.report.regions if r.suppressed]
    if suppressed:
        print(
            f"suppressed (fewer than {result.report.min_contributors} contributing parties): "
            + ", ".join(suppressed)
        )
    noisy = result.report.dp.mode is not DpMode.OFF
    verdict = "match" if result.matches_plaintext else "DO NOT match"
    how = f"within {CHECK_SDS:g} noise sds of" if noisy else "exactly"
    print(
        f"check: the released cells {verdict} ({how}) the plaintext sum of the "
        f"{len(result.included)} included parties' tickets of that week "
        f"({', '.join(result.included)})"
    )
    expect = (
        f"{INCIDENT_REGION} flagged, no other region" if result.incident else "no region flagged"
    )
    print(f"check: flags {'as expected' if result.flags_ok else 'NOT as expected'} ({expect})")
