"""``blindsum party ...``: take part in rounds, and the party's offline tools.

``submit`` and ``run`` check everything they can before they contact the
aggregator: the bundle, the metrics file or the ticket export (through the whole
pipeline, for the built-in or ``--schema`` schema), and whether the export has
anything worth submitting. A party whose rows were all quarantined exits 2 without
sending a byte.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
from pathlib import Path
from typing import Any

from blindsum.bundle import Bundle, load_bundle
from blindsum.errors import InvalidArgument
from blindsum.model import Phase, RoundState, RoundView
from blindsum.schema import Schema, load_metrics_file
from blindsum.tables import text_table
from blindsum.window import TicketWindow
from blindsum_app.cli.common import (
    Progress,
    add_command,
    add_group,
    add_window_options,
    print_json,
    view_json,
    window_from_args,
)

# -- inputs -------------------------------------------------------------------------


def _schema(args: argparse.Namespace) -> Schema:
    path: Path | None = getattr(args, "schema", None)
    return Schema.load(path) if path else Schema.default()


#: Added to what a refused input should check when it was checked against the built-in
#: schema: a campaign opened with its own ``--schema`` has other regions and metrics.
SCHEMA_HINT = "; a campaign with its own schema: pass it with --schema"


def _schema_words(args: argparse.Namespace) -> tuple[str, str]:
    """How the pre-flight messages name the schema, and the hint they add."""
    path: Path | None = getattr(args, "schema", None)
    return (f"schema {path}", "") if path else ("the built-in schema", SCHEMA_HINT)


def _load_metrics(args: argparse.Namespace, schema: Schema) -> Any:
    try:
        return load_metrics_file(args.metrics, schema)
    except InvalidArgument as exc:
        _, hint = _schema_words(args)
        if not hint:
            raise
        raise InvalidArgument(exc.message + hint) from None


def _ticket_source(args: argparse.Namespace, location: str | None = None) -> Any:
    from party.pipeline import TicketSource  # noqa: PLC0415

    return TicketSource(
        location=location if location is not None else str(args.tickets),
        mapping=args.mapping,
        query=args.query,
        quarantine=args.quarantine,
    )


def _secret_path(args: argparse.Namespace) -> Path:
    from party.pipeline import default_secret_path  # noqa: PLC0415

    if getattr(args, "secret", None):
        return Path(args.secret)
    return default_secret_path(getattr(args, "bundle", None))


def _policy(args: argparse.Namespace, bundle: Bundle | None) -> Any:
    from party.pipeline import MAX_QUARANTINED_SHARE, SubmitPolicy  # noqa: PLC0415

    share = bundle.config.max_quarantined_share if bundle else MAX_QUARANTINED_SHARE
    return SubmitPolicy(
        max_quarantined_share=share, allow_partial=getattr(args, "allow_partial", False)
    )


def print_ingest(
    ingest: Any,
    metrics: Any | None = None,
    quarantine: Path | None = None,
    window: TicketWindow | None = None,
) -> None:
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(ingest.by_reason.items())) or "none"
    where = f" -> {quarantine}" if quarantine is not None and ingest.quarantined else ""
    # Rows outside the round's window are not errors: counted, not quarantined.
    outside = f", outside the window {ingest.outside_window}" if window is not None else ""
    print(
        f"ingest {ingest.source}: read {ingest.read}, accepted {ingest.accepted}, "
        f"quarantined {ingest.quarantined} ({reasons}){outside}{where}",
        file=sys.stderr,
    )
    if window is not None:
        print(f"window: tickets created {window.describe()}", file=sys.stderr)
    if metrics is not None:
        # Tickets outside the schema's regions were quarantined at ingest (above), so
        # they are not counted again here.
        clipped = sum(metrics.clipped.values())
        print(
            f"metrics: {metrics.tickets_used} tickets used, {metrics.capped} over the "
            f"per-customer cap, {clipped} values clipped",
            file=sys.stderr,
        )


def _checked_metrics(args: argparse.Namespace, schema: Schema, served: tuple[str, ...]) -> Any:
    """The metrics file, parsed for ``schema`` (errors name the file, row and column),
    with no data in a region the party does not serve."""
    from party.privacy import check_served_offline  # noqa: PLC0415

    vector = _load_metrics(args, schema)
    check_served_offline(schema, vector, served)
    return vector


def _checked_tickets(
    args: argparse.Namespace,
    schema: Schema,
    secret: Any,
    served: tuple[str, ...],
    policy: Any,
    *,
    show: bool = True,
    window: TicketWindow | None = None,
) -> tuple[Any, Any]:
    """The ticket export through the whole pipeline for ``schema`` (the tickets of
    ``window`` only, when given): its summary printed (unless ``show`` is False), then
    refused if it has nothing, or too little, to submit. Returns the source and the
    run."""
    from party.pipeline import check_submittable, compute  # noqa: PLC0415

    source = _ticket_source(args)
    run = compute(source, schema, secret, served=served, window=window)
    if show:
        print_ingest(run.ingest.summary, run.summary, source.quarantine_target, window)
    name, hint = _schema_words(args)
    check_submittable(run, source, schema, policy, schema_name=name, hint=hint)
    return source, run


def _check_round_window(
    declared: TicketWindow | None, window: TicketWindow | None, option: str
) -> None:
    """Refuse (exit 2, naming ``option``) a round over another window than the one the
    party's input was given for with --week or --from/--to. A round without a window
    (an aggregator older than windows) is not refused."""
    if declared is not None and window is not None and declared != window:
        raise InvalidArgument(
            f"the round covers the tickets created {window.describe()}, but this input "
            f"was given for {declared.describe()}; nothing was sent",
            field=option,
        )


def vector_source(args: argparse.Namespace, bundle: Bundle, *, reuse: bool) -> Any:
    """The node's input, checked now, before any network call: a per-region metrics
    file parsed against the schema, or a ticket export run through the whole pipeline
    and refused when it has nothing (or too little) to submit. With --week or
    --from/--to, the input is for that window only: the export is checked for it, and a
    round over another window is refused.

    Each round then counts the tickets of its own window. A metrics file cannot be
    filtered: its numbers go in as they are, and without a declared window the node
    says so on stderr.

    With ``reuse`` (a one-shot submit) a round with the same schema and window takes the
    vector computed now; a daemon reads its export afresh for every round, since the
    export changes between rounds."""
    schema = _schema(args)
    served = tuple(bundle.config.regions)
    declared = window_from_args(args)
    option = "--week" if args.week else "--from"
    if args.metrics is not None:
        path: Path = args.metrics
        _checked_metrics(args, schema, served)

        def from_file(round_schema: Schema, window: TicketWindow | None) -> Any:
            _check_round_window(declared, window, option)
            if window is not None and declared is None:
                print(
                    f"note: the round covers the tickets created {window.describe()}; "
                    f"{path} is a metrics file, which the node cannot filter, so its "
                    "numbers go in as they are (pass --week or --from/--to to have the "
                    "node check that they are for the round's window)",
                    file=sys.stderr,
                )
            return load_metrics_file(path, round_schema)

        return from_file
    from party.pipeline import tickets_source  # noqa: PLC0415

    policy = _policy(args, bundle)
    secret = _secret_path(args)
    source, run = _checked_tickets(args, schema, secret, served, policy, window=declared)

    def report(later: Any) -> None:
        print_ingest(later.ingest.summary, later.summary, source.quarantine_target, later.window)

    each_round = tickets_source(
        source,
        secret,
        served=served,
        policy=policy,
        report=report,
        preflight=run if reuse else None,
    )

    def from_tickets(round_schema: Schema, window: TicketWindow | None) -> Any:
        _check_round_window(declared, window, option)
        return each_round(round_schema, window if window is not None else declared)

    return from_tickets


# -- submit and run ----------------------------------------------------------------


def _progress(args: argparse.Namespace) -> Progress:
    mode = args.progress
    if mode == "auto":
        return Progress(live=None if not args.json else False, plain_status=False)
    return Progress(live=mode == "live", plain_status=False)


def _node(args: argparse.Namespace, bundle: Bundle, progress: Progress, **extra: Any) -> Any:
    from party.node import PartyNode  # noqa: PLC0415

    quiet = args.progress == "quiet"
    return PartyNode(
        bundle,
        address=args.aggregator,
        progress=(lambda _m: None) if quiet else progress.message,
        on_view=(lambda _v: None) if quiet else progress.status,
        **extra,
    )


def _touch_ready(path: Path | None) -> None:
    if path is not None:
        path.write_text("ready\n")


async def _submit(args: argparse.Namespace) -> int:
    from party.node import SimulatedDropout  # noqa: PLC0415

    if args.wait < 0:
        raise InvalidArgument("must be 0 or more seconds", field="--wait")
    bundle = load_bundle(args.bundle)
    source = vector_source(args, bundle, reuse=True)
    progress = _progress(args)
    node = _node(
        args,
        bundle,
        progress,
        drop_after=Phase(args.drop_after) if args.drop_after else None,
    )
    view: RoundView | None = None
    try:
        await node.ping()  # reachable, and our certificate is accepted
        _touch_ready(args.ready_file)
        if args.round:
            round_id = (await node.wait_for_round(args.round, args.wait)).round_id
        else:
            round_id = await node.next_open_round(args.wait)
        view = await node.run_round(round_id, source)
    except SimulatedDropout:
        return 0
    finally:
        progress.close()
        await node.close()
    if args.json:
        print_json({"party": bundle.config.name, **view_json(view)})
    elif view.state is RoundState.COMPLETE:
        print(f"round {view.round_id} complete")
    else:
        print(f"round {view.round_id} {view.state.value}: {view.abort_reason}")
    return 0 if view.state is RoundState.COMPLETE else 3


def cmd_submit(args: argparse.Namespace) -> int:
    return asyncio.run(_submit(args))


async def _run(args: argparse.Namespace) -> int:
    import signal  # noqa: PLC0415

    bundle = load_bundle(args.bundle)
    source = vector_source(args, bundle, reuse=False)
    progress = _progress(args)
    node = _node(args, bundle, progress)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await node.ping()
        _touch_ready(args.ready_file)
        await node.daemon(source, stop=stop, max_rounds=args.max_rounds)
    finally:
        progress.close()
        await node.close()
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


# -- offline tools --------------------------------------------------------------------


def cmd_anonymize(args: argparse.Namespace) -> int:
    from party.pipeline import anonymize_export  # noqa: PLC0415

    source = _ticket_source(args, location=str(args.file))
    result, lineage, lineage_path = anonymize_export(source, _secret_path(args), args.output)
    print_ingest(result.summary, quarantine=source.quarantine_target)
    replaced = ", ".join(f"{k} {v}" for k, v in sorted(lineage.entities.items())) or "none"
    print(f"wrote {lineage.rows_out} anonymized rows to {args.output}")
    print(f"replaced: {replaced}")
    print(f"lineage ({lineage.rules_version}) in {lineage_path}")
    return 0


def _values_table(schema: Schema, values: dict[str, Any]) -> str:
    regions = list(schema.regions)
    rows: list[list[str]] = []
    for metric in schema.metrics:
        for b, label in enumerate(metric.slot_labels):
            row = [label]
            for region in regions:
                value = values.get(region, {}).get(metric.name)
                if value is None:
                    row.append("-")
                elif isinstance(value, list):
                    row.append(str(value[b]))
                else:
                    row.append(f"{value:g}" if isinstance(value, float) else str(value))
            rows.append(row)
    return text_table(["metric", *regions], rows)


def cmd_metrics(args: argparse.Namespace) -> int:
    from party.pipeline import compute  # noqa: PLC0415

    schema = _schema(args)
    source = _ticket_source(args)
    window = window_from_args(args)
    run = compute(source, schema, _secret_path(args), window=window)
    if args.json:
        print_json(
            {
                "schema_id": schema.schema_id,
                "window": None if window is None else window.to_json(),
                "ingest": json.loads(run.ingest.summary.to_json()),
                "quarantine_file": str(source.quarantine_target)
                if run.ingest.summary.quarantined
                else None,
                "metrics": json.loads(run.summary.to_json()),
                "values": run.values,
                "vector": [int(v) for v in run.vector],
            }
        )
        return 0
    print_ingest(run.ingest.summary, run.summary, source.quarantine_target, window)
    sys.stdout.write(_values_table(schema, run.values))
    print(f"(computed locally for schema {schema.schema_id[:12]}; nothing was sent)")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Validate a metrics file, or a ticket export, offline: what submit would check."""
    schema = _schema(args)
    bundle = load_bundle(args.bundle) if args.bundle else None
    served = tuple(bundle.config.regions) if bundle else ()
    window = window_from_args(args)
    if args.metrics is not None:
        if window is not None:
            raise InvalidArgument(
                "a metrics file cannot be filtered by window: --week and --from/--to "
                "apply to --tickets",
                field="--week" if args.week else "--from",
            )
        vector = _checked_metrics(args, schema, served)
        values = schema.decode(vector)
        regions = [r for r in schema.regions if vector[schema.contributor_index(r)]]
        if args.json:
            print_json(
                {
                    "ok": True,
                    "schema_id": schema.schema_id,
                    "regions": regions,
                    "vector_length": len(vector),
                }
            )
            return 0
        sys.stdout.write(_values_table(schema, values))
        print(
            f"ok: {args.metrics} is valid for schema {schema.schema_id[:12]} "
            f"({len(regions)} of {len(schema.regions)} regions, {len(vector)} slots)"
        )
        return 0
    from party.pseudonym import PartySecret  # noqa: PLC0415

    # Without --secret or --bundle, a throwaway key: the per-customer cap counts the same
    # under any key, and an offline check must not create a secret file as a side effect.
    secret = (
        _secret_path(args) if args.secret or args.bundle else PartySecret(secrets.token_bytes(32))
    )
    _, run = _checked_tickets(
        args, schema, secret, served, _policy(args, bundle), show=not args.json, window=window
    )
    summary = run.ingest.summary
    if args.json:
        print_json(
            {
                "ok": True,
                "schema_id": schema.schema_id,
                "window": None if window is None else window.to_json(),
                "ingest": json.loads(summary.to_json()),
                "metrics": json.loads(run.summary.to_json()),
            }
        )
        return 0
    if window is None:
        print(
            f"ok: {summary.accepted} of {summary.read} rows usable for schema "
            f"{schema.schema_id[:12]}; a round would accept this export"
        )
    else:
        print(
            f"ok: {summary.accepted} of the {summary.in_window} rows in the window usable "
            f"for schema {schema.schema_id[:12]} ({summary.outside_window} rows outside "
            "it); a round over this window would accept this export"
        )
    return 0


def cmd_synthetic(args: argparse.Namespace) -> int:
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


# -- parser -----------------------------------------------------------------------


SECRET_DEFAULT = "BUNDLE/party.secret, else ~/.config/blindsum/party.secret"  # noqa: S105 - help text


def _ticket_options(s: argparse.ArgumentParser, *, secret_default: str = SECRET_DEFAULT) -> None:
    s.add_argument(
        "--mapping",
        default="generic",
        help="column mapping: a preset (generic, zendesk, freshdesk) or a TOML file",
    )
    s.add_argument("--query", help="SQL query, for a SQL URL source (default: none)")
    s.add_argument(
        "--quarantine",
        type=Path,
        help="write rejected rows here, as JSON lines (default: EXPORT.quarantine.jsonl)",
    )
    s.add_argument(
        "--secret",
        type=Path,
        help=f"party HMAC secret, created 0600 on first use (default: {secret_default})",
    )


def _schema_option(s: argparse.ArgumentParser, what: str) -> None:
    s.add_argument(
        "--schema",
        type=Path,
        help=f"campaign schema TOML {what} (default: the built-in schema)",
    )


def register(sub: Any) -> None:
    party = add_group(sub, "party", help="take part in rounds, and the party's offline tools")
    for name, func, helptext, examples in (
        (
            "submit",
            cmd_submit,
            "take part in one round (one-shot)",
            [
                "blindsum party submit --bundle ./team-alpha --tickets tickets.csv "
                "--mapping zendesk",
                "blindsum party submit --bundle ./team-alpha --metrics week.json "
                "--week 2026-W47 --round weekly-2026-W47 --json",
            ],
        ),
        (
            "run",
            cmd_run,
            "daemon: join every round this party is invited to",
            [
                "blindsum party run --bundle ./team-alpha --tickets 'sqlite:///tickets.db' "
                "--query 'SELECT * FROM tickets'"
            ],
        ),
    ):
        s = add_command(party, name, help=helptext, examples=examples, func=func)
        s.add_argument(
            "--bundle", type=Path, required=True, help="the party bundle from `aggregator enroll`"
        )
        source = s.add_mutually_exclusive_group(required=True)
        source.add_argument(
            "--metrics", type=Path, help="per-region values, JSON or CSV (see `party check`)"
        )
        source.add_argument(
            "--tickets", help="ticket export (CSV/JSONL file or SQL URL) to run the pipeline on"
        )
        _ticket_options(s)
        _schema_option(s, "to check the input against before connecting")
        s.add_argument(
            "--allow-partial",
            action="store_true",
            help="submit even when more than max_quarantined_share (party.toml, default 0.2) "
            "of the export's rows were quarantined",
        )
        add_window_options(
            s,
            "this input is for one window only (the export is checked for it, and a round "
            "over another window is refused)",
            "each round's own window",
        )
        s.add_argument(
            "--aggregator", help="HOST:PORT to dial (default: the address in the bundle)"
        )
        s.add_argument(
            "--progress",
            choices=["auto", "live", "plain", "quiet"],
            default="auto",
            help="progress on stderr: one live status line on a terminal (auto, live), "
            "plain lines, or none",
        )
        s.add_argument(
            "--ready-file",
            type=Path,
            help="write this file once the input is checked and the aggregator answered "
            "(for scripts and orchestrators; default: none)",
        )
        if name == "submit":
            s.add_argument(
                "--round",
                help="the round's id; waits up to --wait for it to be opened "
                "(default: the next open round that invites this party)",
            )
            s.add_argument(
                "--wait",
                type=float,
                default=60.0,
                help="seconds to wait for the round to be opened",
            )
            s.add_argument(
                "--drop-after",
                choices=[
                    p.value for p in (Phase.ADVERTISE, Phase.SHARE, Phase.MASK, Phase.COLLECT)
                ],
                help="vanish after this phase, to exercise dropout recovery (default: never)",
            )
            s.add_argument(
                "--json", action="store_true", help="print the final round state as JSON"
            )
        else:
            s.add_argument(
                "--max-rounds", type=int, help="stop after this many rounds (default: never)"
            )
            s.set_defaults(json=False)

    s = add_command(
        party,
        "check",
        help="validate a metrics file or a ticket export offline; sends nothing",
        examples=[
            "blindsum party check --metrics week.json",
            "blindsum party check --metrics week.csv --schema campaign.toml",
            "blindsum party check --tickets tickets.csv --mapping zendesk --bundle ./team-alpha",
            "blindsum party check --tickets tickets.csv --week 2026-W47",
        ],
        func=cmd_check,
    )
    source = s.add_mutually_exclusive_group(required=True)
    source.add_argument("--metrics", type=Path, help="per-region values, JSON or CSV")
    source.add_argument("--tickets", help="ticket export (CSV/JSONL file or SQL URL)")
    _ticket_options(s, secret_default="BUNDLE/party.secret, else a throwaway key")  # noqa: S106
    _schema_option(s, "to check against")
    s.add_argument(
        "--bundle",
        type=Path,
        help="take the party secret, max_quarantined_share and regions from this bundle "
        "(default: none)",
    )
    s.add_argument(
        "--allow-partial",
        action="store_true",
        help="accept an export with more than max_quarantined_share of its rows quarantined",
    )
    add_window_options(s, "check only the tickets of a round over this window", "all of them")
    s.add_argument("--json", action="store_true", help="print the result as JSON")

    s = add_command(
        party,
        "anonymize",
        help="write an anonymized copy of a ticket export",
        examples=["blindsum party anonymize tickets.csv -o shared.csv --bundle ./team-alpha"],
        func=cmd_anonymize,
    )
    s.add_argument("file", metavar="SRC", help="CSV/JSONL export, or a SQL URL with --query")
    s.add_argument("-o", "--output", type=Path, required=True, help="output file, .csv or .jsonl")
    s.add_argument(
        "--bundle", type=Path, help="take the party secret from this bundle (default: none)"
    )
    _ticket_options(s)

    s = add_command(
        party,
        "metrics",
        help="compute the KPI vector locally; sends nothing",
        examples=[
            "blindsum party metrics --tickets tickets.csv --mapping zendesk --json",
            "blindsum party metrics --tickets tickets.csv --from 2026-11-01 --to 2026-12-01",
        ],
        func=cmd_metrics,
    )
    s.add_argument("--tickets", required=True, help="CSV/JSONL export, or a SQL URL")
    _ticket_options(s)
    s.add_argument(
        "--bundle", type=Path, help="take the party secret from this bundle (default: none)"
    )
    _schema_option(s, "to compute for")
    add_window_options(s, "count only the tickets of a round over this window", "all of them")
    s.add_argument("--json", action="store_true", help="print JSON")

    s = add_command(
        party,
        "synthetic",
        help="generate a realistic synthetic ticket export",
        examples=["blindsum party synthetic --team team-alpha -o tickets.csv --seed 7"],
        func=cmd_synthetic,
    )
    s.add_argument("--team", required=True, help="the team's name, used in the export")
    s.add_argument("--seed", type=int, default=1, help="random seed; the same seed, same export")
    s.add_argument(
        "--regions", nargs="+", default=["APAC", "EMEA", "Americas"], help="regions served"
    )
    s.add_argument("--tickets-per-region", type=int, default=200, help="tickets per region")
    s.add_argument(
        "--failure-region",
        help="inject a service failure (escalations x3) here (default: none)",
    )
    s.add_argument("--start", help="first day, YYYY-MM-DD (default: today)")
    s.add_argument("--days", type=int, default=7, help="days of tickets")
    s.add_argument("-o", "--output", type=Path, required=True, help="output file, .csv or .jsonl")
