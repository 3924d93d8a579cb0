"""The ``blindsum`` command: builds the parser from the command groups and runs one.

Every failure ends with a one-line ``blindsum: error: ...`` message on stderr and
the exit code listed in :data:`blindsum_app.cli.common.EXIT_CODES`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from blindsum import __version__, log
from blindsum.errors import BlindsumError
from blindsum_app.cli import aggregator_cmds, campaign_cmds, demo_cmds, party_cmds, report_cmds
from blindsum_app.cli.common import EXIT_CODES, EXIT_FOR, HelpFormatter, err


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="blindsum",
        description="blindsum: secure aggregation of customer-support KPIs "
        "(secagg or BFV over gRPC with mutual TLS)",
        epilog="examples:\n  blindsum demo\n  blindsum party submit --help\n\n" + EXIT_CODES,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"blindsum {__version__}")
    p.add_argument(
        "--log-level",
        help="structured log level on stderr (default: log_level from aggregator.toml for "
        "serve, else WARNING)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="GROUP")
    aggregator_cmds.register(sub)
    campaign_cmds.register(sub)
    party_cmds.register(sub)
    report_cmds.register(sub)
    demo_cmds.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    log.configure(args.log_level or "WARNING")
    try:
        code: int = args.func(args)
    except BlindsumError as exc:
        err(exc.message)
        return EXIT_FOR.get(exc.code, 3)
    except KeyboardInterrupt:
        err("interrupted")
        return 130
    except BrokenPipeError:  # e.g. `blindsum party metrics ... | head`
        sys.stderr.close()
        return 0
    except OSError as exc:
        err(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))
        return 2
    except Exception as exc:
        log.get_logger("blindsum.cli").error("unexpected_error", exc=exc)
        err(f"unexpected {type(exc).__name__}; rerun with --log-level DEBUG for details")
        return 3
    return code


if __name__ == "__main__":
    sys.exit(main())
