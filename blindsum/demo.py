"""``blindsum demo``: a whole deployment on 127.0.0.1, in separate processes.

It initialises an aggregator with a dev CA generated now, enrolls N parties,
writes each party a synthetic ticket export (with PII in the free text), starts
``blindsum aggregator serve`` (with the embedded custodian) and one
``blindsum party submit --tickets`` process per party, which runs the whole
pipeline (ingest -> anonymize -> metrics -> protect), and
runs a secagg round in which ``--drop`` parties vanish after the share phase,
then an he round. It prints the released per-region table and checks it
against the plaintext sum of the included parties' vectors, which the demo
recomputes from the exports it wrote, for its own check only.

Like ``cli``, this module is a composition root and may import both roles.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aggregator.admin import enroll, init
from aggregator.service import ADDRESS_FILE
from blindsum import codec
from blindsum.cli import _admin_channel, format_report, report_json
from blindsum.errors import BlindsumError, Unavailable
from blindsum.model import Mode, OpenRoundSpec, Report
from blindsum.rpc.v1 import admin_pb2_grpc, common_pb2, report_pb2_grpc
from blindsum.schema import Schema
from blindsum.types import U64Vector
from party.pipeline import TicketSource, compute, default_secret_path
from party.synthetic import TeamProfile, generate_rows, write_rows

#: The demo's week of tickets (fixed, so runs are comparable).
DEMO_WEEK = dt.date(2026, 11, 16)

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


def team_names(n: int) -> list[str]:
    return [TEAM_NAMES[i] if i < len(TEAM_NAMES) else f"team-{i + 1:03d}" for i in range(n)]


def team_profile(name: str, index: int) -> TeamProfile:
    """Demo team ``index``: only the first two serve the Americas (so k = 3 suppresses
    it), and the first team has a service failure in EMEA (escalations x3)."""
    regions = ("APAC", "EMEA", "Americas") if index < 2 else ("APAC", "EMEA")
    return TeamProfile(
        name=name,
        regions=regions,
        tickets_per_region=120 + 20 * (index % 3),
        failure_region="EMEA" if index == 0 else None,
    )


def _spawn(args: Sequence[str], *, quiet: bool) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "blindsum.cli", *args],
        env=env,
        stdout=subprocess.DEVNULL if quiet else None,
        stderr=subprocess.DEVNULL if quiet else None,
    )


def _wait_for_address(directory: Path, server: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    path = directory / ADDRESS_FILE
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise Unavailable(f"the aggregator exited early with code {server.returncode}")
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.1)
    raise Unavailable("the aggregator did not start in time")


async def _open(directory: Path, spec: OpenRoundSpec) -> str:
    channel = _admin_channel(directory)
    try:
        info = await admin_pb2_grpc.AdminServiceStub(channel).OpenRound(
            codec.open_round_to_pb(spec), timeout=30
        )
        return str(info.round_id)
    finally:
        await channel.close(None)


async def _final(directory: Path, round_id: str) -> tuple[Any, Report | None]:
    channel = _admin_channel(directory)
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


def party_vector(schema: Schema, tickets: Path, bundle: Path) -> U64Vector:
    """The demo's own check: the same pipeline the party ran, with the party's secret."""
    return compute(TicketSource(str(tickets)), schema, default_secret_path(bundle)).vector


def check_report(schema: Schema, report: Report, vectors: Sequence[U64Vector]) -> bool:
    """Every released cell and contributor count equals the plaintext sum of ``vectors``."""
    total = np.zeros(schema.vector_length, dtype=np.uint64)
    for vector in vectors:
        total += vector
    expected = [int(v) for v in total.view(np.int64)]
    names = schema.slot_names
    for region in report.regions:
        contributors = expected[schema.contributor_index(region.region)]
        if region.suppressed:
            if contributors >= report.min_contributors:
                return False
            continue
        if region.contributors != contributors:
            return False
        for cell in region.cells:
            if expected[names.index(f"{region.region}/{cell.slot}")] != cell.value:
                return False
    return True


def _run_round(
    agg_dir: Path,
    address: str,
    bundles: dict[str, Path],
    tickets: dict[str, Path],
    *,
    mode: Mode,
    drop: int,
    schema: Schema,
    quiet: bool,
) -> RoundResult:
    names = list(bundles)
    dropped = tuple(names[-drop:]) if drop else ()
    spec = OpenRoundSpec(mode=mode, parties=tuple(names), min_contributors=3, phase_timeout_s=8)
    round_id = asyncio.run(_open(agg_dir, spec))
    if not quiet:
        print(f"\n== {mode.value} round {round_id}: {len(names)} parties", flush=True)
        if dropped:
            print(f"   {', '.join(dropped)} will drop out after the share phase", flush=True)
    procs = []
    for name in names:
        args = [
            "party",
            "submit",
            "--bundle",
            str(bundles[name]),
            "--tickets",
            str(tickets[name]),
            "--aggregator",
            address,
            "--round",
            round_id,
        ]
        if name in dropped:
            args += ["--drop-after", "share"]
        procs.append(_spawn(args, quiet=quiet))
    for proc in procs:
        try:
            proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
    view, report = asyncio.run(_final(agg_dir, round_id))
    included = tuple(report.included_parties) if report else ()
    ok = report is not None and check_report(
        schema, report, [party_vector(schema, tickets[n], bundles[n]) for n in included]
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
    )


def run_demo(*, mode: str, parties: int, drop: int, as_json: bool, workdir: Path | None) -> int:
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
    say("  created a dev CA, server, admin and custodian certificates, and the SQLite store")
    schema = Schema.default()
    bundles: dict[str, Path] = {}
    tickets: dict[str, Path] = {}
    for i, name in enumerate(team_names(parties)):
        bundles[name] = root / "parties" / name
        enroll(agg_dir, name, bundles[name])
        tickets[name] = root / "parties" / f"{name}.tickets.csv"
        rows = generate_rows(team_profile(name, i), seed=2026 + i, start=DEMO_WEEK)
        write_rows(rows, tickets[name])
    say(
        f"  enrolled {parties} parties and wrote each a synthetic ticket export "
        "(names, emails and phones in the free text; team-alpha has a service failure in EMEA)"
    )
    server = _spawn(["aggregator", "serve", str(agg_dir)], quiet=True)
    results: list[RoundResult] = []
    try:
        address = _wait_for_address(agg_dir, server, 60)
        say(f"  aggregator and custodian running (aggregator at {address})")
        modes = [Mode.SECAGG, Mode.HE] if mode == "both" else [Mode(mode)]
        for m in modes:
            result = _run_round(
                agg_dir,
                address,
                bundles,
                tickets,
                mode=m,
                drop=drop if m is Mode.SECAGG else 0,
                schema=schema,
                quiet=quiet,
            )
            results.append(result)
            if not quiet:
                _print_result(result)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
    ok = all(r.state == "complete" and r.matches_plaintext for r in results)
    if as_json:
        print(
            json.dumps(
                {
                    "workdir": str(root),
                    "ok": ok,
                    "rounds": [
                        {
                            "mode": r.mode,
                            "round_id": r.round_id,
                            "state": r.state,
                            "abort_reason": r.abort_reason,
                            "included_parties": list(r.included),
                            "dropped_parties": list(r.dropped),
                            "matches_plaintext_sum": r.matches_plaintext,
                            "report": report_json(r.report) if r.report else None,
                        }
                        for r in results
                    ],
                },
                indent=2,
            )
        )
    else:
        print(f"\n{'all rounds correct' if ok else 'DEMO FAILED'}; files kept in {root}")
    return 0 if ok else 1


def _print_result(result: RoundResult) -> None:
    if result.report is None:
        print(f"round {result.round_id} {result.state}: {result.abort_reason}")
        return
    print()
    print(format_report(result.report, "table"), end="")
    suppressed = [r.region for r in result.report.regions if r.suppressed]
    if suppressed:
        print(
            f"suppressed (fewer than {result.report.min_contributors} contributing parties): "
            + ", ".join(suppressed)
        )
    verdict = "equal" if result.matches_plaintext else "DO NOT equal"
    print(
        f"check: the released totals {verdict} the plaintext sum of the "
        f"{len(result.included)} included parties' inputs "
        f"({', '.join(result.included)})"
    )
