"""The ``blindsum`` command: the composition root that wires both roles together.

Every failure ends with a one-line ``blindsum: error: ...`` message on stderr and
a non-zero exit code (2 for bad input, 3 for a refused or failed operation,
4 when a service cannot be reached).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from blindsum import __version__, codec, log
from blindsum.bundle import load_bundle
from blindsum.errors import BlindsumError, ErrorCode, InvalidArgument
from blindsum.model import DpMode, DpSpec, Mode, OpenRoundSpec, Phase, Report, RoundView
from blindsum.rpc.v1 import admin_pb2, admin_pb2_grpc, common_pb2, report_pb2_grpc
from blindsum.schema import Schema, load_metrics_file
from blindsum.tables import text_table
from blindsum.transport.errors import error_from_rpc
from blindsum.transport.pki import KeyAndCert
from blindsum.transport.tls import secure_channel

EXIT_FOR = {
    ErrorCode.INVALID_ARGUMENT: 2,
    ErrorCode.NOT_FOUND: 2,
    ErrorCode.ALREADY_EXISTS: 2,
    ErrorCode.UNAVAILABLE: 4,
}


def _err(message: str) -> None:
    print(f"blindsum: error: {message}", file=sys.stderr)


# -- helpers ----------------------------------------------------------------------


def _admin_channel(directory: Path) -> grpc.aio.Channel:
    from aggregator import config as cfgmod  # noqa: PLC0415 - role imported where it is used
    from aggregator.service import ADDRESS_FILE  # noqa: PLC0415

    cfg = cfgmod.load(directory)
    addr_file = directory / ADDRESS_FILE
    address = addr_file.read_text().strip() if addr_file.exists() else cfg.server.listen
    tls = KeyAndCert(
        key_pem=cfgmod.resolve(directory, cfg.tls.admin_key).read_bytes(),
        cert_pem=cfgmod.resolve(directory, cfg.tls.admin_cert).read_bytes(),
    )
    ca = cfgmod.resolve(directory, cfg.tls.ca_cert).read_bytes()
    return secure_channel(address, tls, ca, server_name=cfg.server.server_name)


async def _admin_call(directory: Path, rpc: str, request: Any) -> Any:
    channel = _admin_channel(directory)
    try:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        return await getattr(stub, rpc)(request, timeout=30)
    except grpc.aio.AioRpcError as exc:
        raise error_from_rpc(exc, f"AdminService.{rpc}") from None
    finally:
        await channel.close(None)


def _local_manager(directory: Path) -> Any:
    from aggregator import config as cfgmod  # noqa: PLC0415
    from aggregator.rounds import RoundManager  # noqa: PLC0415
    from aggregator.store import open_store  # noqa: PLC0415

    cfg = cfgmod.load(directory)
    store = open_store(cfg.store.url, base_dir=directory)
    return RoundManager(store, ca_cert_pem=cfgmod.resolve(directory, cfg.tls.ca_cert).read_bytes())


def format_status(view: RoundView) -> str:
    import time  # noqa: PLC0415

    lines = [f"round {view.round_id} ({view.mode.value}): {view.state.value}"]
    if view.state.value == "open":
        left = max(0, (view.phase_deadline_ms - int(time.time() * 1000)) // 1000)
        lines[0] += f", phase {view.phase.value}, deadline in {left} s"
    if view.abort_reason:
        lines.append(f"  reason: {view.abort_reason}")
    lines.append(
        f"  parties: {len(view.parties)} invited, threshold {view.threshold}, "
        f"min contributors {view.min_contributors}, schema {view.schema_id[:12]}"
    )
    if view.mode is Mode.SECAGG:
        lines.append(
            f"  advertised {len(view.advertised)}/{len(view.parties)}  "
            f"shared {len(view.shared)}/{len(view.advertised) or '-'}  "
            f"masked {len(view.masked)}/{len(view.shared) or '-'}  "
            f"signed {len(view.consistent)}/{len(view.masked) or '-'}  "
            f"unmasked {len(view.unmasked)}/{len(view.consistent) or '-'}"
        )
    else:
        lines.append(f"  submitted {len(view.submitted)}/{len(view.parties)}")
    waiting = view.waiting_for
    if waiting:
        lines.append(f"  waiting for: {', '.join(waiting)}")
    return "\n".join(lines)


# -- commands ---------------------------------------------------------------------


def cmd_aggregator_init(args: argparse.Namespace) -> int:
    from aggregator.admin import ExternalPki, init  # noqa: PLC0415

    pki = None
    if args.ca_cert:
        pki = ExternalPki(ca_cert=args.ca_cert, ca_key=args.ca_key, cert=args.cert, key=args.key)
    elif args.ca_key or args.cert or args.key:
        raise InvalidArgument("--ca-key/--cert/--key need --ca-cert", field="--ca-cert")
    init(args.dir, listen=args.listen, pki=pki)
    print(f"initialised aggregator in {args.dir} (listen {args.listen})")
    return 0


def cmd_aggregator_enroll(args: argparse.Namespace) -> int:
    from aggregator.admin import enroll  # noqa: PLC0415
    from blindsum.transport.pki import Role  # noqa: PLC0415

    cfg = enroll(
        args.dir,
        args.name,
        args.output,
        role=Role(args.role),
        address=args.address,
        ca_key=args.ca_key,
    )
    print(f"enrolled {cfg.role} {cfg.name}; bundle written to {args.output}")
    return 0


def cmd_aggregator_revoke(args: argparse.Namespace) -> int:
    from aggregator.admin import revoke  # noqa: PLC0415

    revoke(args.dir, args.name)
    print(f"revoked {args.name}: it can no longer connect, and its receipts are refused")
    return 0


def cmd_aggregator_serve(args: argparse.Namespace) -> int:
    from aggregator import config as cfgmod  # noqa: PLC0415
    from aggregator.service import serve_forever  # noqa: PLC0415

    if args.log_level is None:
        log.configure(cfgmod.load(args.dir).log_level)

    asyncio.run(serve_forever(args.dir, listen=args.listen))
    return 0


def cmd_custodian_serve(args: argparse.Namespace) -> int:
    from aggregator.service import serve_custodian_forever  # noqa: PLC0415

    asyncio.run(serve_custodian_forever(args.dir, listen=args.listen))
    return 0


def _parties(values: Sequence[str]) -> tuple[str, ...]:
    out: list[str] = []
    for value in values:
        out += [p for p in value.split(",") if p]
    return tuple(out)


def _dp_spec(args: argparse.Namespace) -> DpSpec | None:
    """DP parameters from the command line; None leaves all of them to the aggregator."""
    given = (args.rho, args.expected_parties, args.campaign, args.window)
    if args.dp is None and not any(given):
        return None
    if args.dp is None:
        raise InvalidArgument(
            "--rho/--expected-parties/--campaign/--window need --dp", field="--dp"
        )
    return DpSpec(
        mode=DpMode(args.dp),
        rho=args.rho or 0.0,
        expected_parties=args.expected_parties or 0,
        campaign=args.campaign or "",
        window=args.window or "",
    )


async def _open_round(args: argparse.Namespace) -> int:
    spec = OpenRoundSpec(
        mode=Mode(args.mode),
        parties=_parties(args.parties),
        min_contributors=args.min_contributors,
        threshold=args.threshold,
        phase_timeout_s=args.phase_timeout,
        schema_toml=args.schema.read_text() if args.schema else "",
        round_id=args.round_id or "",
        dp=_dp_spec(args),
    )
    info = await _admin_call(args.dir, "OpenRound", codec.open_round_to_pb(spec))
    view = codec.round_view_from_pb(info)
    print(format_status(view), flush=True)
    if args.wait:
        last = ""
        while view.state.value == "open":
            await asyncio.sleep(1.0)
            info = await _admin_call(
                args.dir, "GetStatus", common_pb2.RoundRef(round_id=view.round_id)
            )
            view = codec.round_view_from_pb(info)
            text = format_status(view)
            if text.split("deadline")[0] != last:
                print(text, flush=True)
                last = text.split("deadline")[0]
        print(format_status(view))
        return 0 if view.state.value == "complete" else 3
    print(view.round_id)
    return 0


def cmd_open_round(args: argparse.Namespace) -> int:
    return asyncio.run(_open_round(args))


def cmd_status(args: argparse.Namespace) -> int:
    manager = _local_manager(args.dir)
    try:
        views = [manager.view(args.round)] if args.round else manager.list_rounds()
    finally:
        manager.store.close()
    if args.json:
        print(json.dumps([_view_json(v) for v in views], indent=2))
    elif not views:
        print("no rounds yet")
    else:
        print("\n".join(format_status(v) for v in views))
    return 0


def _view_json(view: RoundView) -> dict[str, Any]:
    return {
        "round_id": view.round_id,
        "mode": view.mode.value,
        "state": view.state.value,
        "phase": view.phase.value,
        "parties": list(view.parties),
        "threshold": view.threshold,
        "min_contributors": view.min_contributors,
        "advertised": list(view.advertised),
        "shared": list(view.shared),
        "masked": list(view.masked),
        "consistent": list(view.consistent),
        "unmasked": list(view.unmasked),
        "submitted": list(view.submitted),
        "waiting_for": list(view.waiting_for),
        "abort_reason": view.abort_reason,
    }


def cmd_abort(args: argparse.Namespace) -> int:
    req = admin_pb2.AbortRoundRequest(round_id=args.round, reason=args.reason)
    info = asyncio.run(_admin_call(args.dir, "AbortRound", req))
    print(format_status(codec.round_view_from_pb(info)))
    return 0


def cmd_report_show(args: argparse.Namespace) -> int:
    manager = _local_manager(args.dir)
    try:
        report = manager.report(args.round)
    finally:
        manager.store.close()
    _write_report(report, args.format, args.output)
    return 0


def _write_report(report: Report, fmt: str, output: Path | None) -> None:
    from aggregator.report import render  # noqa: PLC0415

    text = render(report, fmt)
    if output:
        output.write_text(text, encoding="utf-8")
        print(f"wrote {output}")
    else:
        sys.stdout.write(text)


async def _fetch_report(args: argparse.Namespace) -> Report:
    bundle = load_bundle(args.bundle)
    channel = secure_channel(
        args.aggregator or bundle.config.aggregator,
        bundle.tls,
        bundle.ca_cert_pem,
        server_name=bundle.config.server_name,
    )
    try:
        stub = report_pb2_grpc.ReportServiceStub(channel)
        msg = await stub.GetReport(common_pb2.RoundRef(round_id=args.round), timeout=30)
    except grpc.aio.AioRpcError as exc:
        raise error_from_rpc(exc, "ReportService.GetReport") from None
    finally:
        await channel.close(None)
    return codec.report_from_pb(msg)


def cmd_report_fetch(args: argparse.Namespace) -> int:
    report = asyncio.run(_fetch_report(args))
    _write_report(report, args.format, args.output)
    return 0


def _vector_source(args: argparse.Namespace) -> Any:
    """The node's input: a per-region metrics file, or a ticket export run through the pipeline."""
    if args.metrics is not None:
        path: Path = args.metrics

        def from_file(schema: Schema) -> Any:
            return load_metrics_file(path, schema)

        return from_file
    from party.pipeline import tickets_source  # noqa: PLC0415

    source = _ticket_source(args)

    def report(run: Any) -> None:
        _print_ingest(run.ingest.summary, run.summary, source.quarantine_target)

    return tickets_source(source, _secret_path(args), report=report)


def _ticket_source(args: argparse.Namespace) -> Any:
    from party.pipeline import TicketSource  # noqa: PLC0415

    return TicketSource(
        location=str(args.tickets),
        mapping=args.mapping,
        query=args.query,
        quarantine=args.quarantine,
    )


def _secret_path(args: argparse.Namespace) -> Path:
    from party.pipeline import default_secret_path  # noqa: PLC0415

    if getattr(args, "secret", None):
        return Path(args.secret)
    return default_secret_path(getattr(args, "bundle", None))


def _print_ingest(ingest: Any, metrics: Any | None = None, quarantine: Path | None = None) -> None:
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(ingest.by_reason.items())) or "none"
    where = f" -> {quarantine}" if quarantine is not None and ingest.quarantined else ""
    print(
        f"ingest {ingest.source}: read {ingest.read}, accepted {ingest.accepted}, "
        f"quarantined {ingest.quarantined} ({reasons}){where}",
        file=sys.stderr,
    )
    if metrics is not None:
        clipped = sum(metrics.clipped.values())
        print(
            f"metrics: {metrics.tickets_used} tickets used, {metrics.capped} over the "
            f"per-customer cap, {metrics.unknown_region} in unknown regions, "
            f"{clipped} values clipped",
            file=sys.stderr,
        )


def cmd_party_anonymize(args: argparse.Namespace) -> int:
    from party.pipeline import TicketSource, anonymize_export  # noqa: PLC0415

    source = TicketSource(
        location=str(args.file), mapping=args.mapping, query=args.query, quarantine=args.quarantine
    )
    result, lineage, lineage_path = anonymize_export(source, _secret_path(args), args.output)
    _print_ingest(result.summary, quarantine=source.quarantine_target)
    replaced = ", ".join(f"{k} {v}" for k, v in sorted(lineage.entities.items())) or "none"
    print(f"wrote {lineage.rows_out} anonymized rows to {args.output}")
    print(f"replaced: {replaced}")
    print(f"lineage ({lineage.rules_version}) in {lineage_path}")
    return 0


def cmd_party_metrics(args: argparse.Namespace) -> int:
    from party.pipeline import compute  # noqa: PLC0415

    schema = Schema.load(args.schema) if args.schema else Schema.default()
    source = _ticket_source(args)
    run = compute(source, schema, _secret_path(args))
    if args.json:
        print(
            json.dumps(
                {
                    "schema_id": schema.schema_id,
                    "ingest": json.loads(run.ingest.summary.to_json()),
                    "quarantine_file": str(source.quarantine_target)
                    if run.ingest.summary.quarantined
                    else None,
                    "metrics": json.loads(run.summary.to_json()),
                    "values": run.values,
                    "vector": [int(v) for v in run.vector],
                },
                indent=2,
            )
        )
        return 0
    _print_ingest(run.ingest.summary, run.summary, source.quarantine_target)
    regions = list(schema.regions)
    header = ["metric", *regions]
    rows: list[list[str]] = []
    for metric in schema.metrics:
        for b, label in enumerate(metric.slot_labels):
            row = [label]
            for region in regions:
                value = run.values.get(region, {}).get(metric.name)
                if value is None:
                    row.append("-")
                elif isinstance(value, list):
                    row.append(str(value[b]))
                else:
                    row.append(f"{value:g}" if isinstance(value, float) else str(value))
            rows.append(row)
    sys.stdout.write(text_table(header, rows))
    print(f"(computed locally for schema {schema.schema_id[:12]}; nothing was sent)")
    return 0


def cmd_party_synthetic(args: argparse.Namespace) -> int:
    import datetime as dt  # noqa: PLC0415

    from party.synthetic import TeamProfile, generate_rows, write_rows  # noqa: PLC0415

    profile = TeamProfile(
        name=args.team,
        regions=tuple(args.regions),
        tickets_per_region=args.tickets_per_region,
        failure_region=args.failure_region,
    )
    start = dt.date.fromisoformat(args.start) if args.start else dt.date.today()
    rows = generate_rows(profile, seed=args.seed, start=start, days=args.days)
    write_rows(rows, args.output)
    print(f"wrote {len(rows)} synthetic tickets for {args.team} to {args.output}")
    return 0


async def _party_submit(args: argparse.Namespace) -> int:
    from party.node import PartyNode, SimulatedDropout  # noqa: PLC0415

    bundle = load_bundle(args.bundle)
    node = PartyNode(
        bundle,
        address=args.aggregator,
        progress=lambda m: print(m, file=sys.stderr, flush=True),
        drop_after=Phase(args.drop_after) if args.drop_after else None,
    )
    try:
        if args.round:
            round_id = args.round
        else:
            round_id = await _next_round(node, args.wait)
        view = await node.run_round(round_id, _vector_source(args))
    except SimulatedDropout:
        return 0
    finally:
        await node.close()
    return 0 if view.state.value == "complete" else 3


async def _next_round(node: Any, wait_s: float) -> str:
    from blindsum.rpc.v1 import round_pb2  # noqa: PLC0415

    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        listing = await node.client.call("ListRounds", round_pb2.ListRoundsRequest(only_open=True))
        if listing.rounds:
            return str(listing.rounds[0].round_id)
        if loop.time() >= deadline:
            raise InvalidArgument(
                f"no open round invites this party (waited {wait_s:.0f} s)", field="--round"
            )
        await asyncio.sleep(0.5)


def cmd_party_submit(args: argparse.Namespace) -> int:
    return asyncio.run(_party_submit(args))


async def _party_run(args: argparse.Namespace) -> int:
    import signal  # noqa: PLC0415

    from party.node import PartyNode  # noqa: PLC0415

    bundle = load_bundle(args.bundle)
    node = PartyNode(
        bundle, address=args.aggregator, progress=lambda m: print(m, file=sys.stderr, flush=True)
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await node.daemon(_vector_source(args), stop=stop, max_rounds=args.max_rounds)
    finally:
        await node.close()
    return 0


def cmd_party_run(args: argparse.Namespace) -> int:
    return asyncio.run(_party_run(args))


def cmd_demo(args: argparse.Namespace) -> int:
    from blindsum.demo import run_demo  # noqa: PLC0415

    return run_demo(
        mode=args.mode,
        parties=args.parties,
        drop=args.drop,
        as_json=args.json,
        workdir=args.workdir,
    )


# -- parser -----------------------------------------------------------------------


def _ticket_options(s: argparse.ArgumentParser, *, with_tickets: bool) -> None:
    if with_tickets:
        s.add_argument("--tickets", required=True, help="CSV/JSONL export, or a SQL URL")
    s.add_argument(
        "--mapping", default="generic", help="preset (generic|zendesk|freshdesk) or TOML file"
    )
    s.add_argument("--query", help="SQL query, for a SQL URL source")
    s.add_argument("--quarantine", type=Path, help="write rejected rows here (JSON lines)")
    s.add_argument("--secret", type=Path, help="party HMAC secret (created 0600 on first use)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="blindsum",
        description="blindsum: secure aggregation of customer-support KPIs "
        "(secagg or BFV over gRPC with mutual TLS)",
    )
    p.add_argument("--version", action="version", version=f"blindsum {__version__}")
    p.add_argument(
        "--log-level",
        help="structured log level on stderr (default: log_level from aggregator.toml for "
        "serve, else WARNING)",
    )
    sub = p.add_subparsers(dest="command", required=True)

    agg = sub.add_parser("aggregator", help="run and operate the aggregator").add_subparsers(
        dest="sub", required=True
    )
    s = agg.add_parser("init", help="create the CA, certificates, custodian keys, config and DB")
    s.add_argument("dir", type=Path)
    s.add_argument("--listen", default="127.0.0.1:7443")
    s.add_argument("--ca-cert", type=Path, help="use this CA instead of generating a dev CA")
    s.add_argument("--ca-key", type=Path)
    s.add_argument("--cert", type=Path, help="existing server certificate (with --key)")
    s.add_argument("--key", type=Path)
    s.set_defaults(func=cmd_aggregator_init)

    s = agg.add_parser("enroll", help="enroll a party or reader and write its bundle")
    s.add_argument("dir", type=Path)
    s.add_argument("name")
    s.add_argument("-o", "--output", type=Path, required=True)
    s.add_argument("--role", choices=["party", "reader"], default="party")
    s.add_argument("--address", help="aggregator address to put in the bundle")
    s.add_argument("--ca-key", type=Path)
    s.set_defaults(func=cmd_aggregator_enroll)

    s = agg.add_parser("revoke", help="revoke an enrolled party")
    s.add_argument("dir", type=Path)
    s.add_argument("name")
    s.set_defaults(func=cmd_aggregator_revoke)

    s = agg.add_parser("serve", help="run the aggregator (and embedded custodian)")
    s.add_argument("dir", type=Path)
    s.add_argument("--listen")
    s.set_defaults(func=cmd_aggregator_serve)

    s = agg.add_parser("open-round", help="open a round on the running aggregator")
    s.add_argument("dir", type=Path)
    s.add_argument("--mode", choices=["secagg", "he"], default="secagg")
    s.add_argument("--parties", nargs="+", required=True, help="names, space or comma separated")
    s.add_argument("--min-contributors", type=int, default=3)
    s.add_argument("--threshold", type=int, default=0, help="0 = default for the party count")
    s.add_argument("--phase-timeout", type=int, default=0, help="seconds per phase")
    s.add_argument("--schema", type=Path, help="campaign schema TOML (default: built-in)")
    s.add_argument("--round-id")
    s.add_argument(
        "--dp",
        choices=["off", "central", "distributed"],
        help="differential privacy for this round (default: [release] dp in aggregator.toml)",
    )
    s.add_argument("--rho", type=float, help="zCDP rho of this release (default: [release] rho)")
    s.add_argument("--expected-parties", type=int, help="distributed DP: parties sharing the noise")
    s.add_argument("--campaign", help="budget ledger campaign (default: the schema's name)")
    s.add_argument("--window", help="budget ledger window (default: this ISO week, e.g. 2026-W47)")
    s.add_argument("--wait", action="store_true", help="follow the round until it closes")
    s.set_defaults(func=cmd_open_round)

    s = agg.add_parser("status", help="show rounds: who has joined, what each waits for")
    s.add_argument("dir", type=Path)
    s.add_argument("round", nargs="?")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)

    s = agg.add_parser("abort", help="abort an open round")
    s.add_argument("dir", type=Path)
    s.add_argument("round")
    s.add_argument("--reason", default="aborted by the operator")
    s.set_defaults(func=cmd_abort)

    cust = sub.add_parser("custodian", help="run the he custodian on its own").add_subparsers(
        dest="sub", required=True
    )
    s = cust.add_parser("serve")
    s.add_argument("dir", type=Path)
    s.add_argument("--listen", default="127.0.0.1:7444")
    s.set_defaults(func=cmd_custodian_serve)

    party = sub.add_parser("party", help="take part in rounds").add_subparsers(
        dest="sub", required=True
    )
    for name, func, helptext in (
        ("submit", cmd_party_submit, "take part in one round (one-shot)"),
        ("run", cmd_party_run, "daemon: join every round this party is invited to"),
    ):
        s = party.add_parser(name, help=helptext)
        s.add_argument("--bundle", type=Path, required=True)
        source = s.add_mutually_exclusive_group(required=True)
        source.add_argument("--metrics", type=Path, help="JSON or CSV per-region values")
        source.add_argument(
            "--tickets", help="ticket export (CSV/JSONL file or SQL URL) to run the pipeline on"
        )
        _ticket_options(s, with_tickets=False)
        s.add_argument("--aggregator", help="override the bundle's aggregator address")
        if name == "submit":
            s.add_argument("--round", help="round id (default: the next open round)")
            s.add_argument("--wait", type=float, default=60.0, help="seconds to wait for a round")
            s.add_argument(
                "--drop-after",
                choices=[
                    p.value for p in (Phase.ADVERTISE, Phase.SHARE, Phase.MASK, Phase.COLLECT)
                ],
                help="vanish after this phase (to exercise dropout recovery)",
            )
        else:
            s.add_argument("--max-rounds", type=int)
        s.set_defaults(func=func)

    s = party.add_parser("anonymize", help="write an anonymized copy of a ticket export")
    s.add_argument("file", help="CSV/JSONL export, or a SQL URL with --query")
    s.add_argument("-o", "--output", type=Path, required=True, help=".csv or .jsonl")
    s.add_argument("--bundle", type=Path, help="take the party secret from this bundle")
    _ticket_options(s, with_tickets=False)
    s.set_defaults(func=cmd_party_anonymize)

    s = party.add_parser("metrics", help="compute the KPI vector locally; sends nothing")
    _ticket_options(s, with_tickets=True)
    s.add_argument("--bundle", type=Path, help="take the party secret from this bundle")
    s.add_argument("--schema", type=Path, help="campaign schema TOML (default: built-in)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_party_metrics)

    s = party.add_parser("synthetic", help="generate a realistic synthetic ticket export")
    s.add_argument("--team", required=True)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--regions", nargs="+", default=["APAC", "EMEA", "Americas"])
    s.add_argument("--tickets-per-region", type=int, default=200)
    s.add_argument("--failure-region", help="inject a service failure (escalations x3) here")
    s.add_argument("--start", help="first day, YYYY-MM-DD (default: today)")
    s.add_argument("--days", type=int, default=7)
    s.add_argument("-o", "--output", type=Path, required=True, help=".csv or .jsonl")
    s.set_defaults(func=cmd_party_synthetic)

    rep = sub.add_parser("report", help="read released results").add_subparsers(
        dest="sub", required=True
    )
    s = rep.add_parser("show", help="read a released report from the aggregator directory")
    s.add_argument("dir", type=Path)
    s.add_argument("round")
    s.add_argument("--format", choices=["table", "json", "csv", "html"], default="table")
    s.add_argument("-o", "--output", type=Path, help="write to this file instead of stdout")
    s.set_defaults(func=cmd_report_show)
    s = rep.add_parser("fetch", help="fetch a report over gRPC with a reader bundle")
    s.add_argument("round")
    s.add_argument("--bundle", type=Path, required=True)
    s.add_argument("--aggregator")
    s.add_argument("--format", choices=["table", "json", "csv", "html"], default="table")
    s.add_argument("-o", "--output", type=Path, help="write to this file instead of stdout")
    s.set_defaults(func=cmd_report_fetch)

    s = sub.add_parser("demo", help="run a local demo: aggregator, custodian and party processes")
    s.add_argument("--mode", choices=["secagg", "he", "both"], default="both")
    s.add_argument("--parties", type=int, default=5)
    s.add_argument("--drop", type=int, default=1, help="secagg parties that drop after sharing")
    s.add_argument("--json", action="store_true")
    s.add_argument("--workdir", type=Path, help="keep the demo files here (default: temp dir)")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    log.configure(args.log_level or "WARNING")
    try:
        code: int = args.func(args)
    except BlindsumError as exc:
        _err(exc.message)
        return EXIT_FOR.get(exc.code, 3)
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except BrokenPipeError:  # e.g. `blindsum party metrics ... | head`
        sys.stderr.close()
        return 0
    except OSError as exc:
        _err(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))
        return 2
    except Exception as exc:
        log.get_logger("blindsum.cli").error("unexpected_error", exc=exc)
        _err(f"unexpected {type(exc).__name__}; rerun with --log-level DEBUG for details")
        return 3
    return code


if __name__ == "__main__":
    sys.exit(main())
