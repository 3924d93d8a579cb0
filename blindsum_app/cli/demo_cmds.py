"""``blindsum demo``: the whole deployment on 127.0.0.1, in separate processes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from blindsum_app.cli.common import add_command


def cmd_demo(args: argparse.Namespace) -> int:
    from blindsum_app.demo import run_demo  # noqa: PLC0415 - loads both roles

    return run_demo(
        mode=args.mode,
        parties=args.parties,
        drop=args.drop,
        as_json=args.json,
        workdir=args.workdir,
        phase_timeout_s=args.phase_timeout,
    )


def register(sub: Any) -> None:
    s = add_command(
        sub,
        "demo",
        help="run a local demo: aggregator, custodian and party processes",
        description="Run a whole deployment on 127.0.0.1: a dev CA, the aggregator with its "
        "embedded custodian, and one process per party, for two weekly rounds (secagg with "
        "distributed DP and a dropout, then he with central DP and an incident in EMEA). "
        "Every released number is checked against the plaintext sum; exit 1 if a check fails.",
        examples=["blindsum demo", "blindsum demo --mode secagg --parties 7 --drop 2 --json"],
        func=cmd_demo,
    )
    s.add_argument(
        "--mode", choices=["secagg", "he", "both"], default="both", help="which rounds to run"
    )
    s.add_argument("--parties", type=int, default=5, help="party processes (at least 3)")
    s.add_argument(
        "--drop", type=int, default=1, help="secagg parties that drop out after the share phase"
    )
    s.add_argument(
        "--phase-timeout",
        type=int,
        default=20,
        help="seconds a phase waits for late parties; the clock starts once every party "
        "process is up and connected, and a dropout costs one such wait",
    )
    s.add_argument("--json", action="store_true", help="print the results as JSON")
    s.add_argument(
        "--workdir",
        type=Path,
        help="keep the demo's files here (default: a new temporary directory)",
    )
