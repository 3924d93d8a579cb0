"""``blindsum aggregator ...`` and ``blindsum custodian ...``: run and operate the service."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from blindsum import codec, log
from blindsum.errors import InvalidArgument
from blindsum.model import DpMode, DpSpec, Mode, OpenRoundSpec, RoundState
from blindsum.protocol.params import Adversary, ThreatModel
from blindsum.rpc.v1 import admin_pb2, common_pb2
from blindsum_app.cli.common import (
    Progress,
    add_command,
    add_group,
    add_window_options,
    format_status,
    print_json,
    view_json,
    window_from_args,
)

#: How often ``open-round --wait`` asks for the round's status.
STATUS_POLL_S = 1.0


def local_manager(directory: Path) -> Any:
    """A round manager on the aggregator's own store, for read-only commands."""
    from aggregator import config as cfgmod  # noqa: PLC0415 - loaded only by commands using it
    from aggregator.rounds import RoundManager  # noqa: PLC0415
    from aggregator.store import open_store  # noqa: PLC0415

    cfg = cfgmod.load(directory)
    store = open_store(cfg.store.url, base_dir=directory)
    return RoundManager(store, ca_cert_pem=cfgmod.resolve(directory, cfg.tls.ca_cert).read_bytes())


async def admin_call(
    directory: Path, rpc: str, request: Any, *, connect_timeout_s: float = 0.0
) -> Any:
    from aggregator.adminclient import admin_call as call  # noqa: PLC0415

    return await call(directory, rpc, request, connect_timeout_s=connect_timeout_s)


# -- commands ---------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    from aggregator.admin import ExternalPki, init  # noqa: PLC0415

    pki = None
    if args.ca_cert:
        pki = ExternalPki(ca_cert=args.ca_cert, ca_key=args.ca_key, cert=args.cert, key=args.key)
    elif args.ca_key or args.cert or args.key:
        raise InvalidArgument("--ca-key/--cert/--key need --ca-cert", field="--ca-cert")
    init(args.dir, listen=args.listen, pki=pki)
    print(f"initialised aggregator in {args.dir} (listen {args.listen})")
    return 0


def cmd_enroll(args: argparse.Namespace) -> int:
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


def cmd_check(args: argparse.Namespace) -> int:
    from aggregator.check import check_directory  # noqa: PLC0415

    result = check_directory(args.dir)
    for problem in result.problems:
        print(f"problem: {problem}")
    print(result.summary())
    return 0 if result.ok else 3


def cmd_audit(args: argparse.Namespace) -> int:
    from aggregator.check import audit_log  # noqa: PLC0415

    log_ = audit_log(args.dir, round_id=args.round, verify=args.verify)
    if args.json:
        print_json(
            {
                "rows": [
                    {"store": st, "id": i, "ts_ms": ts, "round_id": r, "event": e, "detail": d}
                    for st, i, ts, r, e, d in log_.rows
                ],
                "verified": args.verify,
                "problems": log_.problems,
                "heads": log_.heads,
            }
        )
    else:
        for st, i, ts, r, e, d in log_.rows:
            when = datetime.fromtimestamp(ts / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
            detail = " ".join(f"{k}={v}" for k, v in sorted(d.items()))
            print(f"{st:9} #{i:<5} {when}Z {r or '-':30} {e:22} {detail}".rstrip())
        for problem in log_.problems:
            print(f"problem: {problem}")
        if args.verify:
            for st, head in log_.heads.items():
                print(f"{st} chain head: {head or '(empty)'}")
            print("audit chain ok" if not log_.problems else f"{len(log_.problems)} problems")
    return 3 if log_.problems else 0


def cmd_renew(args: argparse.Namespace) -> int:
    from aggregator.admin import renew  # noqa: PLC0415

    _, until = renew(
        args.dir, args.name, bundle=args.bundle, overlap_days=args.overlap_days, ca_key=args.ca_key
    )
    when = datetime.fromtimestamp(until / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"renewed {args.name}: new TLS and identity certificates in {args.bundle}; "
        f"the old ones are refused from {when}"
    )
    return 0


def cmd_renew_server(args: argparse.Namespace) -> int:
    from aggregator.admin import renew_server  # noqa: PLC0415

    for path in renew_server(args.dir, ca_key=args.ca_key):
        print(f"wrote {path}")
    print("restart `aggregator serve` (each replica in turn) to serve the new certificates")
    return 0


def cmd_rotate_bfv(args: argparse.Namespace) -> int:
    from aggregator.admin import rotate_bfv  # noqa: PLC0415

    done = rotate_bfv(args.dir, prune_only=args.prune)
    if done.new_context:
        print(f"new custodian key {done.new_context[:16]}; retired {done.retired[:16]}")
        print("restart `aggregator serve` to use it: rounds opened from then on use it")
    for h in done.pruned:
        print(f"deleted retired key {h[:16]}: no open round uses it")
    for h in done.kept:
        print(f"kept retired key {h[:16]} for the open rounds that use it")
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    from aggregator.backup import backup  # noqa: PLC0415

    result = backup(args.dir, args.output)
    secret = [str(f["path"]) for f in result.files if f["secret"]]
    print(f"wrote {args.output} (mode 0600): {len(result.files)} files")
    print(f"secret, keep the archive as safe as the directory: {', '.join(secret)}")
    for line in result.elsewhere:
        print(f"not in the archive: {line}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from aggregator.backup import restore  # noqa: PLC0415
    from aggregator.check import check_directory  # noqa: PLC0415

    manifest = restore(args.archive, args.dir)
    print(f"restored {len(manifest['files'])} files into {args.dir}")
    for line in manifest.get("elsewhere", []):
        print(f"restore separately: {line}")
    result = check_directory(args.dir)
    for problem in result.problems:
        print(f"problem: {problem}")
    print(result.summary())
    return 0 if result.ok else 3


def cmd_create_store(args: argparse.Namespace) -> int:
    from aggregator.admin import create_store  # noqa: PLC0415

    for line in create_store(args.dir):
        print(line)
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from aggregator.admin import revoke  # noqa: PLC0415

    revoke(args.dir, args.name)
    print(f"revoked {args.name}: it can no longer connect, and its receipts are refused")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
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


def parties_arg(values: Sequence[str]) -> tuple[str, ...]:
    out: list[str] = []
    for value in values:
        out += [p for p in value.split(",") if p]
    return tuple(out)


def dp_spec(args: argparse.Namespace) -> DpSpec | None:
    """DP parameters from the command line; None leaves all of them to the aggregator."""
    campaign, window = getattr(args, "campaign", None), getattr(args, "window", None)
    given = (args.rho, args.expected_parties, campaign, window)
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
        campaign=campaign or "",
        window=window or "",
    )


def threat_spec(args: argparse.Namespace) -> ThreatModel | None:
    """The secagg threat model from the command line, completed from the aggregator's
    configuration; None when no flag is given (the aggregator then uses its own)."""
    given = (args.corrupt_fraction, args.dropout_fraction, args.adversary, args.privacy_bits)
    if all(v is None for v in given):
        return None
    from aggregator import config as cfgmod  # noqa: PLC0415 - only when a flag is given

    base = cfgmod.load(args.dir).rounds.threat()
    return ThreatModel(
        corrupt_fraction=base.corrupt_fraction
        if args.corrupt_fraction is None
        else args.corrupt_fraction,
        dropout_fraction=base.dropout_fraction
        if args.dropout_fraction is None
        else args.dropout_fraction,
        adversary=base.adversary if args.adversary is None else Adversary(args.adversary),
        privacy_bits=base.privacy_bits if args.privacy_bits is None else args.privacy_bits,
        correctness_bits=base.correctness_bits,
    )


def round_spec(args: argparse.Namespace) -> OpenRoundSpec:
    """What the options of :func:`add_round_options` ask for (no id, default window)."""
    schema_toml = ""
    if args.schema:
        from blindsum.schema import Schema  # noqa: PLC0415

        schema_toml = args.schema.read_text()
        Schema.from_toml(schema_toml)  # a bad schema fails here, naming its key
    return OpenRoundSpec(
        mode=Mode(args.mode),
        parties=parties_arg(args.parties),
        min_contributors=args.min_contributors,
        threshold=args.threshold,
        phase_timeout_s=args.phase_timeout,
        schema_toml=schema_toml,
        dp=dp_spec(args),
        threat=threat_spec(args),
        graph_degree=args.degree,
    )


async def _open_round(args: argparse.Namespace) -> int:
    if args.connect_timeout < 0:
        raise InvalidArgument("must be 0 or more seconds", field="--connect-timeout")
    window = window_from_args(args)  # None: the aggregator's default, last week
    spec = replace(
        round_spec(args),
        round_id=args.round_id or "",
        window_start_ms=window.start_ms if window else 0,
        window_end_ms=window.end_ms if window else 0,
    )
    info = await admin_call(
        args.dir,
        "OpenRound",
        codec.open_round_to_pb(spec),
        connect_timeout_s=args.connect_timeout,
    )
    view = codec.round_view_from_pb(info)
    if not args.wait:
        if args.json:
            print_json(view_json(view))
        else:
            print(format_status(view))
            print(view.round_id)
        return 0
    progress = Progress(live=False if args.json else None)
    if not args.json:
        print(format_status(view), flush=True)
    try:
        while view.state is RoundState.OPEN:
            progress.status(view)
            await asyncio.sleep(STATUS_POLL_S)
            ref = common_pb2.RoundRef(round_id=view.round_id)
            view = codec.round_view_from_pb(await admin_call(args.dir, "GetStatus", ref))
    finally:
        progress.close()
    if args.json:
        print_json(view_json(view))
    else:
        print(format_status(view))
    return 0 if view.state is RoundState.COMPLETE else 3


def cmd_open_round(args: argparse.Namespace) -> int:
    return asyncio.run(_open_round(args))


def cmd_status(args: argparse.Namespace) -> int:
    from aggregator import config as cfgmod  # noqa: PLC0415
    from aggregator.metrics import aggregator_certs, expiring, party_certs  # noqa: PLC0415
    from aggregator.store import now_ms  # noqa: PLC0415

    manager = local_manager(args.dir)
    try:
        views = [manager.view(args.round)] if args.round else manager.list_rounds()
        certs = aggregator_certs(args.dir, cfgmod.load(args.dir)) + party_certs(manager.store)
    finally:
        manager.store.close()
    # Issue 13: a warning 30 days before any certificate the service needs expires.
    for line in expiring(certs, now_ms()):
        print(f"warning: {line}", file=sys.stderr)
    if args.json:
        print_json([view_json(v) for v in views])
    elif not views:
        print("no rounds yet")
    else:
        print("\n".join(format_status(v) for v in views))
    return 0


def cmd_abort(args: argparse.Namespace) -> int:
    req = admin_pb2.AbortRoundRequest(round_id=args.round, reason=args.reason)
    info = asyncio.run(admin_call(args.dir, "AbortRound", req))
    print(format_status(codec.round_view_from_pb(info)))
    return 0


# -- parser -----------------------------------------------------------------------


def add_round_options(s: argparse.ArgumentParser) -> None:
    """What a round is: its parties, mode, k, threat model, schema and DP (shared by
    ``open-round`` and ``campaign create``)."""
    s.add_argument("--mode", choices=["secagg", "he"], default="secagg", help="protection mode")
    s.add_argument(
        "--parties", nargs="+", required=True, help="invited parties, space or comma separated"
    )
    s.add_argument(
        "--min-contributors",
        type=int,
        default=3,
        help="k: a region with fewer contributing parties is suppressed",
    )
    s.add_argument(
        "--threshold",
        type=int,
        default=0,
        help="t: fewest parties the round can finish with (default: 0, derived from the "
        "party count)",
    )
    s.add_argument(
        "--degree",
        type=int,
        default=0,
        help="secagg graph degree, with --threshold (default: 0, both derived from the "
        "threat model and checked against it)",
    )
    s.add_argument(
        "--corrupt-fraction",
        type=float,
        help="secagg: tolerated share of corrupt parties colluding with the aggregator "
        "(default: [rounds] corrupt_fraction)",
    )
    s.add_argument(
        "--dropout-fraction",
        type=float,
        help="secagg: tolerated share of parties that drop out (default: [rounds] "
        "dropout_fraction)",
    )
    s.add_argument(
        "--adversary",
        choices=["deviating", "curious"],
        help="secagg: whether the threat model lets the aggregator lie (default: [rounds] "
        "adversary)",
    )
    s.add_argument(
        "--privacy-bits",
        type=int,
        help="secagg: privacy fails with probability at most 2^-BITS (default: [rounds] "
        "privacy_bits)",
    )
    s.add_argument(
        "--phase-timeout",
        type=int,
        default=0,
        help="seconds each phase waits for late parties (default: 0, [rounds] "
        "default_phase_timeout_s in aggregator.toml)",
    )
    s.add_argument(
        "--schema", type=Path, help="campaign schema TOML (default: the built-in schema)"
    )
    s.add_argument(
        "--dp",
        choices=["off", "central", "distributed"],
        help="differential privacy for this round (default: [release] dp in aggregator.toml)",
    )
    s.add_argument("--rho", type=float, help="zCDP rho of this release (default: [release] rho)")
    s.add_argument(
        "--expected-parties",
        type=int,
        help="distributed DP: parties sharing the noise (default: the threshold)",
    )


DIR_HELP = "the aggregator directory (made by `aggregator init`)"


def register(sub: Any) -> None:
    agg = add_group(sub, "aggregator", help="run and operate the aggregator")

    s = add_command(
        agg,
        "init",
        help="create the CA, certificates, custodian keys, config and store",
        examples=[
            "blindsum aggregator init ./agg",
            "blindsum aggregator init ./agg --listen 0.0.0.0:7443 --ca-cert ca.crt --ca-key ca.key",
        ],
        func=cmd_init,
    )
    s.add_argument("dir", type=Path, metavar="DIR", help="directory to create; must not exist")
    s.add_argument("--listen", default="127.0.0.1:7443", help="address the server will bind")
    s.add_argument(
        "--ca-cert",
        type=Path,
        help="use this CA (PEM) instead of generating a dev CA (default: generate one)",
    )
    s.add_argument(
        "--ca-key",
        type=Path,
        help="the CA's unencrypted PEM key; required with --ca-cert (default: none)",
    )
    s.add_argument(
        "--cert",
        type=Path,
        help="an existing server certificate, with --key (default: issue one from the CA)",
    )
    s.add_argument(
        "--key",
        type=Path,
        help="the server certificate's key; required with --cert (default: none)",
    )

    s = add_command(
        agg,
        "enroll",
        help="enroll a party or reader and write its bundle",
        examples=[
            "blindsum aggregator enroll ./agg team-alpha -o ./team-alpha",
            "blindsum aggregator enroll ./agg lead -o ./lead --role reader "
            "--address agg.example:7443",
        ],
        func=cmd_enroll,
    )
    s.add_argument("dir", type=Path, metavar="DIR", help=DIR_HELP)
    s.add_argument("name", metavar="NAME", help="the party's or reader's name ([a-z0-9._-])")
    s.add_argument(
        "-o", "--output", type=Path, required=True, help="bundle directory to write (0600 keys)"
    )
    s.add_argument("--role", choices=["party", "reader"], default="party", help="what it may do")
    s.add_argument(
        "--address",
        help="aggregator address written into the bundle (default: [server] listen)",
    )
    s.add_argument(
        "--ca-key",
        type=Path,
        help="the CA key, when it is kept outside DIR (default: the key in DIR)",
    )

    s = add_command(
        agg,
        "check",
        help="verify the whole store: integrity, MACs, releases and the DP ledger",
        examples=["blindsum aggregator check ./agg"],
        func=cmd_check,
    )
    s.add_argument("dir", type=Path, metavar="DIR", help=DIR_HELP)

    s = add_command(
        agg,
        "renew",
        help="reissue a party's certificates under the same identity, with an overlap",
        description="Reissue a party's TLS certificate (a new key) and its identity "
        "certificate (for the same identity key, so rounds in flight are not disturbed) "
        "into its bundle directory. The certificates they replace are still accepted for "
        "--overlap-days; after that the aggregator refuses them. Needs the CA key.",
        examples=["blindsum aggregator renew ./agg team-a --bundle ./bundles/team-a"],
        func=cmd_renew,
    )
    s.add_argument("dir", type=Path, metavar="DIR", help=DIR_HELP)
    s.add_argument("name", metavar="NAME", help="the enrolled party")
    s.add_argument("--bundle", type=Path, required=True, help="the party's bundle directory")
    s.add_argument(
        "--overlap-days",
        type=int,
        # aggregator.admin.RENEW_OVERLAP_DAYS, written out: importing aggregator.admin
        # here would load TenSEAL on every start of the CLI.
        default=7,
        help="days the replaced certificates are still accepted (default: 7)",
    )
    s.add_argument("--ca-key", type=Path, help="the CA key, if not in DIR (default: DIR's)")

    s = add_command(
        agg,
        "renew-server",
        help="reissue the server's and the embedded custodian's TLS certificates",
        description="Reissue the aggregator's server certificate and the embedded "
        "custodian's TLS certificate from the CA: new keys, the same names and "
        "addresses, a fresh validity. The files are replaced in place; restart serve to "
        "use them. Parties need nothing: they trust the CA, not the certificate.",
        examples=["blindsum aggregator renew-server ./agg"],
        func=cmd_renew_server,
    )
    s.add_argument("dir", type=Path, metavar="DIR", help=DIR_HELP)
    s.add_argument("--ca-key", type=Path, help="the CA key, if not in DIR (default: DIR's)")

    s = add_command(
        agg,
        "rotate-bfv",
        help="rotate the embedded custodian's BFV key; retired keys live until their rounds end",
        description="Make a new BFV key current for the embedded custodian. Every open he "
        "round keeps the key it opened with (its parties' receipts name it); rounds "
        "opened after `serve` restarts use the new one. The retired key is kept under "
        "custodian/retired/ until no open round uses it: run again with --prune later "
        "to delete the ones whose rounds are done. Parties need nothing: they fetch each "
        "round's context, signed by the same custodian key.",
        examples=[
            "blindsum aggregator rotate-bfv ./agg",
            "blindsum aggregator rotate-bfv ./agg --prune",
        ],
        func=cmd_rotate_bfv,
    )
    s.add_argument("dir", type=Path, metavar="DIR", help=DIR_HELP)
    s.add_argument(
        "--prune", action="store_true", help="only delete retired keys no open round uses"
    )

    s = add_command(
        agg,
        "backup",
        help="write a consistent archive of the directory and its SQLite stores (0600)",
        description="Write one tar.gz archive of the aggregator directory while the "
        "service runs: config, CA, certificates and keys, the custodian's keys, the store "
        "key, and a consistent snapshot of each SQLite store (SQLite's online backup API). "
        "It lists which files are secret. A store on PostgreSQL is not included: the "
        "command prints the pg_dump to run beside it.",
        examples=["blindsum aggregator backup ./agg -o agg-2026-12-01.tar.gz"],
        func=cmd_backup,
    )
    s.add_argument("dir", type=Path, metavar="DIR", help=DIR_HELP)
    s.add_argument("-o", "--output", type=Path, required=True, help="the archive to write")

    s = add_command(
        agg,
        "restore",
        help="unpack a backup into a new directory and check it",
        description="Unpack an archive written by `aggregator backup` into DIR, which must "
        "not exist or be empty: every file is checked against the archive's manifest, "
        "secrets are written 0600. Then the restored store is checked as `aggregator "
        "check` does (exit 3 if anything is wrong). Serve it with `aggregator serve DIR`.",
        examples=["blindsum aggregator restore agg-2026-12-01.tar.gz ./agg-restored"],
        func=cmd_restore,
    )
    s.add_argument("archive", type=Path, metavar="FILE", help="the archive")
    s.add_argument("dir", type=Path, metavar="DIR", help="the new aggregator directory")

    s = add_command(
        agg,
        "audit",
        help="print the audit log of both stores; --verify checks its hash chain",
        description="Print the audit log: the aggregator's store (rounds, phases, "
        "complaints, releases, enrolments, revocations, campaigns, report fetches, "
        "refused calls) and the custodian's (decryptions and refusals). With --verify, "
        "walk each store's hash chain and name every row where it breaks (an edited row, "
        "or one deleted before it), then print each chain's head: keep it elsewhere to "
        "catch the newest rows being deleted. Exit 3 if anything is wrong.",
        examples=[
            "blindsum aggregator audit ./agg --verify",
            "blindsum aggregator audit ./agg --round r-20261130-060000-3fa2c1 --json",
        ],
        func=cmd_audit,
    )
    s.add_argument("dir", type=Path, metavar="DIR", help=DIR_HELP)
    s.add_argument(
        "--round", metavar="ROUND", help="only this round's events (default: every round)"
    )
    s.add_argument("--verify", action="store_true", help="check the hash chains")
    s.add_argument("--json", action="store_true", help="print JSON")

    s = add_command(
        agg,
        "create-store",
        help="create the configured stores' tables (a new PostgreSQL database)",
        examples=["blindsum aggregator create-store ./agg"],
        func=cmd_create_store,
    )
    s.add_argument("dir", type=Path, metavar="DIR", help=DIR_HELP)

    s = add_command(
        agg,
        "revoke",
        help="revoke an enrolled party",
        examples=["blindsum aggregator revoke ./agg team-alpha"],
        func=cmd_revoke,
    )
    s.add_argument("dir", type=Path, metavar="DIR", help=DIR_HELP)
    s.add_argument("name", metavar="NAME", help="the enrolled party to revoke")

    s = add_command(
        agg,
        "serve",
        help="run the aggregator (and the embedded custodian) until SIGTERM or Ctrl-C",
        examples=["blindsum aggregator serve ./agg", "blindsum aggregator serve ./agg --listen :0"],
        func=cmd_serve,
    )
    s.add_argument("dir", type=Path, metavar="DIR", help=DIR_HELP)
    s.add_argument(
        "--listen",
        help="bind this HOST:PORT instead (default: [server] listen in aggregator.toml)",
    )

    s = add_command(
        agg,
        "open-round",
        help="open a round on the running aggregator",
        description="Open a round on the running aggregator. The round covers the tickets "
        "created in its window: by default the last complete ISO week (Monday to Monday, "
        "UTC) before now; --week or --from/--to choose another one that is over. Each "
        "party computes its metrics from that window's tickets only.",
        examples=[
            "blindsum aggregator open-round ./agg --parties team-alpha,team-beta,team-gamma",
            "blindsum aggregator open-round ./agg --parties a b c --week 2026-W47 "
            "--round-id weekly-2026-W47",
            "blindsum aggregator open-round ./agg --parties a b c d --mode he --dp central "
            "--from 2026-11-01 --to 2026-12-01 --wait --json",
        ],
        func=cmd_open_round,
    )
    s.add_argument("dir", type=Path, metavar="DIR", help=DIR_HELP)
    add_round_options(s)
    s.add_argument(
        "--round-id",
        help="the round's id, [A-Za-z0-9._-] (default: r-YYYYMMDD-HHMMSS-<random>)",
    )
    s.add_argument("--campaign", help="budget ledger campaign (default: the schema's name)")
    s.add_argument(
        "--window",
        help="budget ledger window label, needs [release] allow_window_override (default: "
        "the ISO week, or month, in which the ticket window starts); which tickets the "
        "round covers is --week or --from/--to",
    )
    add_window_options(s, "the round's ticket window", "the last complete ISO week before now")
    s.add_argument(
        "--wait", action="store_true", help="follow the round until it closes; exit 3 if aborted"
    )
    s.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        help="seconds to wait for an aggregator that is still starting",
    )
    s.add_argument("--json", action="store_true", help="print the round as JSON")

    s = add_command(
        agg,
        "status",
        help="show rounds: who has joined, what each waits for",
        examples=["blindsum aggregator status ./agg", "blindsum aggregator status ./agg ROUND"],
        func=cmd_status,
    )
    s.add_argument("dir", type=Path, metavar="DIR", help=DIR_HELP)
    s.add_argument("round", nargs="?", metavar="ROUND", help="one round (default: every round)")
    s.add_argument("--json", action="store_true", help="print JSON")

    s = add_command(
        agg,
        "abort",
        help="abort an open round",
        examples=['blindsum aggregator abort ./agg ROUND --reason "wrong schema"'],
        func=cmd_abort,
    )
    s.add_argument("dir", type=Path, metavar="DIR", help=DIR_HELP)
    s.add_argument("round", metavar="ROUND", help="the open round's id")
    s.add_argument(
        "--reason", default="aborted by the operator", help="stored and shown to parties"
    )

    cust = add_group(sub, "custodian", help="run the he custodian on its own")
    s = add_command(
        cust,
        "serve",
        help="run only the custodian service (a custodian under another operator)",
        examples=["blindsum custodian serve ./custodian --listen 0.0.0.0:7444"],
        func=cmd_custodian_serve,
    )
    s.add_argument("dir", type=Path, metavar="DIR", help="the custodian's directory")
    s.add_argument("--listen", default="127.0.0.1:7444", help="address to bind")
