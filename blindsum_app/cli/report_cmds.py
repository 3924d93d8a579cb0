"""``blindsum report ...``: read released reports, locally or over gRPC as a reader."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import grpc

from blindsum import codec
from blindsum.bundle import load_bundle, reach_advice
from blindsum.model import Report
from blindsum.rpc.v1 import common_pb2, report_pb2_grpc
from blindsum.transport.errors import error_from_rpc
from blindsum.transport.tls import secure_channel
from blindsum_app.cli.aggregator_cmds import DIR_HELP, local_manager
from blindsum_app.cli.common import add_command, add_group

FORMATS = ["table", "json", "csv", "html"]


def cmd_show(args: argparse.Namespace) -> int:
    manager = local_manager(args.dir)
    try:
        report = manager.report(args.round)
    finally:
        manager.store.close()
    write_report(report, args.format, args.output)
    return 0


def write_report(report: Report, fmt: str, output: Path | None) -> None:
    from aggregator.report import render  # noqa: PLC0415

    text = render(report, fmt)
    if output:
        output.write_text(text, encoding="utf-8")
        print(f"wrote {output}")
    else:
        sys.stdout.write(text)


async def _fetch(args: argparse.Namespace) -> Report:
    bundle = load_bundle(args.bundle)
    address = args.aggregator or bundle.config.aggregator
    channel = secure_channel(
        address, bundle.tls, bundle.ca_cert_pem, server_name=bundle.config.server_name
    )
    try:
        stub = report_pb2_grpc.ReportServiceStub(channel)
        msg = await stub.GetReport(common_pb2.RoundRef(round_id=args.round), timeout=30)
    except grpc.aio.AioRpcError as exc:
        raise error_from_rpc(
            exc,
            "ReportService.GetReport",
            server=f"the aggregator at {address}",
            advice=reach_advice(args.bundle),
        ) from None
    finally:
        await channel.close(None)
    return codec.report_from_pb(msg)


def cmd_fetch(args: argparse.Namespace) -> int:
    write_report(asyncio.run(_fetch(args)), args.format, args.output)
    return 0


def register(sub: Any) -> None:
    rep = add_group(sub, "report", help="read released reports")
    s = add_command(
        rep,
        "show",
        help="read a released report from the aggregator directory",
        examples=[
            "blindsum report show ./agg ROUND",
            "blindsum report show ./agg ROUND --format html -o report.html",
        ],
        func=cmd_show,
    )
    s.add_argument("dir", type=Path, metavar="DIR", help=DIR_HELP)
    s.add_argument("round", metavar="ROUND", help="a completed round's id")
    s.add_argument("--format", choices=FORMATS, default="table", help="output format")
    s.add_argument(
        "-o", "--output", type=Path, help="write to this file (default: standard output)"
    )

    s = add_command(
        rep,
        "fetch",
        help="fetch a report over gRPC with a reader bundle",
        examples=["blindsum report fetch ROUND --bundle ./lead --format csv -o week.csv"],
        func=cmd_fetch,
    )
    s.add_argument("round", metavar="ROUND", help="a completed round's id")
    s.add_argument(
        "--bundle", type=Path, required=True, help="a reader (or party) bundle directory"
    )
    s.add_argument("--aggregator", help="HOST:PORT to dial (default: the address in the bundle)")
    s.add_argument("--format", choices=FORMATS, default="table", help="output format")
    s.add_argument(
        "-o", "--output", type=Path, help="write to this file (default: standard output)"
    )
