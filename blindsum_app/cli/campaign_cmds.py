"""``blindsum campaign ...``: rounds the aggregator opens itself, on a schedule."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from aggregator.adminclient import campaign_json, format_campaign
from blindsum import codec
from blindsum.rpc.v1 import admin_pb2
from blindsum_app.cli.aggregator_cmds import DIR_HELP, add_round_options, admin_call, round_spec
from blindsum_app.cli.common import add_command, add_group, print_json

SCHEDULE_HELP = (
    "when each round opens: 'every monday 06:00 Europe/Berlin', 'every day 02:30' "
    "(UTC unless a zone is given) or 'every month on day 1 06:00 UTC'"
)


def _call(args: argparse.Namespace, rpc: str, request: Any) -> Any:
    return asyncio.run(admin_call(args.dir, rpc, request, connect_timeout_s=args.connect_timeout))


def _show(args: argparse.Namespace, info: admin_pb2.CampaignInfo) -> int:
    if args.json:
        print_json(campaign_json(info))
    else:
        print(format_campaign(info))
    return 0


def cmd_create(args: argparse.Namespace) -> int:
    req = admin_pb2.SaveCampaignRequest(
        name=args.name,
        schedule=args.schedule,
        spec=codec.open_round_to_pb(round_spec(args)),
        replace=args.replace,
    )
    return _show(args, _call(args, "SaveCampaign", req))


def cmd_list(args: argparse.Namespace) -> int:
    listed = _call(args, "ListCampaigns", admin_pb2.ListCampaignsRequest()).campaigns
    if args.json:
        print_json([campaign_json(c) for c in listed])
    elif not listed:
        print("no campaigns yet")
    else:
        print("\n".join(format_campaign(c) for c in listed))
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    req = admin_pb2.SetCampaignPausedRequest(name=args.name, paused=True)
    return _show(args, _call(args, "SetCampaignPaused", req))


def cmd_resume(args: argparse.Namespace) -> int:
    req = admin_pb2.SetCampaignPausedRequest(name=args.name, paused=False)
    return _show(args, _call(args, "SetCampaignPaused", req))


def cmd_delete(args: argparse.Namespace) -> int:
    info = _call(args, "DeleteCampaign", admin_pb2.CampaignRef(name=args.name))
    if args.json:
        print_json(campaign_json(info))
    else:
        print(f"deleted {info.name}; its rounds and releases stay")
    return 0


def _common(s: argparse.ArgumentParser, *, name: bool = True) -> None:
    s.add_argument("dir", type=Path, metavar="DIR", help=DIR_HELP)
    if name:
        s.add_argument("name", metavar="NAME", help="the campaign's name")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        help="seconds to wait for an aggregator that is still starting",
    )


def register(sub: Any) -> None:
    grp = add_group(
        sub, "campaign", help="rounds the running aggregator opens itself, on a schedule"
    )
    s = add_command(
        grp,
        "create",
        help="create a campaign (or change one, with --replace)",
        description="Create a campaign: the aggregator opens one round at each time of "
        "the schedule, exactly once even with several replicas, and after downtime only "
        "the latest missed one. Each round covers the last complete ISO week before it "
        "opens, and charges the campaign's DP ledger. The round options are those of "
        "`aggregator open-round`, checked now and again when each round opens.",
        examples=[
            "blindsum campaign create ./agg weekly-kpis --schedule "
            "'every monday 06:00 Europe/Berlin' --parties team-a,team-b,team-c --dp central",
            "blindsum campaign create ./agg weekly-kpis --replace --schedule "
            "'every monday 07:00 Europe/Berlin' --parties team-a,team-b,team-c,team-d",
        ],
        func=cmd_create,
    )
    _common(s)
    s.add_argument("--schedule", required=True, help=SCHEDULE_HELP)
    s.add_argument(
        "--replace", action="store_true", help="change the existing campaign of that name"
    )
    add_round_options(s)

    s = add_command(
        grp,
        "list",
        help="list campaigns: schedule, next round, last round",
        examples=["blindsum campaign list ./agg", "blindsum campaign list ./agg --json"],
        func=cmd_list,
    )
    _common(s, name=False)
    for verb, func, what in (
        ("pause", cmd_pause, "stop opening rounds (open ones go on)"),
        ("resume", cmd_resume, "open rounds again, from the next due time"),
        ("delete", cmd_delete, "forget a campaign (its rounds, releases and ledger stay)"),
    ):
        s = add_command(
            grp,
            verb,
            help=what,
            examples=[f"blindsum campaign {verb} ./agg weekly-kpis"],
            func=func,
        )
        _common(s)
