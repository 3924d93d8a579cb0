"""What every command group shares: exit codes, help formatting, output helpers.

Every failure ends with one ``blindsum: error: ...`` line on stderr and the exit
code of :data:`EXIT_CODES`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from blindsum.errors import ErrorCode, InvalidArgument
from blindsum.model import Mode, Phase, RoundState, RoundView
from blindsum.window import TicketWindow, check_window, parse_dates, parse_week

#: Exit codes, by the typed error's code; any other typed error exits 3.
EXIT_FOR = {
    ErrorCode.INVALID_ARGUMENT: 2,
    ErrorCode.NOT_FOUND: 2,
    ErrorCode.ALREADY_EXISTS: 2,
    ErrorCode.UNAVAILABLE: 4,
}

EXIT_CODES = """\
exit codes:
  0    success
  1    the demo ran, but its own check of the released numbers or flags failed
  2    bad input: a bad option, file, row or value; unknown round; already exists;
       an export with nothing to submit
  3    refused or failed: permission denied, wrong phase, round aborted or not
       complete, an internal error
  4    a service could not be reached (not running, wrong address, timeout)
  130  interrupted (Ctrl-C); the long-running `aggregator serve`, `custodian serve`
       and `party run` instead stop cleanly on Ctrl-C or SIGTERM and exit 0"""


def err(message: str) -> None:
    print(f"blindsum: error: {message}", file=sys.stderr)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' layout and appends each option's default to its help,
    unless the help already says what the default is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            not action.option_strings
            or default is None
            or default is False
            or default is argparse.SUPPRESS
            or "default" in text
        ):
            return text
        if isinstance(default, list | tuple):
            shown = " ".join(str(v) for v in default)
        else:
            shown = str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


Handler = Callable[[argparse.Namespace], int]


def add_command(
    group: Any,
    name: str,
    *,
    help: str,
    examples: Sequence[str],
    func: Handler,
    description: str = "",
) -> argparse.ArgumentParser:
    """One subcommand with its one-line help, a description, and its examples."""
    epilog = "example" + ("s" if len(examples) > 1 else "") + ":\n"
    epilog += "\n".join(f"  {line}" for line in examples)
    parser: argparse.ArgumentParser = group.add_parser(
        name,
        help=help,
        description=description or help[:1].upper() + help[1:] + ".",
        epilog=epilog,
        formatter_class=HelpFormatter,
    )
    parser.set_defaults(func=func)
    return parser


def add_group(sub: Any, name: str, *, help: str) -> Any:
    parser = sub.add_parser(name, help=help, description=help[:1].upper() + help[1:] + ".")
    return parser.add_subparsers(dest="sub", required=True, metavar="COMMAND")


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def add_window_options(parser: argparse.ArgumentParser, what: str, default: str) -> None:
    """``--week``, or ``--from`` with ``--to``: a ticket window. ``what`` says what it is
    for, ``default`` what applies without it."""
    parser.add_argument(
        "--week",
        metavar="YYYY-Www",
        help=f"{what}: the tickets created in this ISO week, Monday to Monday UTC, e.g. "
        f"2026-W47 (default: {default})",
    )
    parser.add_argument(
        "--from",
        dest="window_from",
        metavar="DATE",
        help=f"{what}: the tickets created on or after this day, YYYY-MM-DD UTC; needs --to "
        f"(default: {default})",
    )
    parser.add_argument(
        "--to",
        dest="window_to",
        metavar="DATE",
        help="with --from: the tickets created before this day, YYYY-MM-DD UTC; the end is "
        f"exclusive, so --from 2026-11-16 --to 2026-11-23 is one week (default: {default})",
    )


def window_from_args(args: argparse.Namespace) -> TicketWindow | None:
    """The window of ``--week`` or ``--from``/``--to``, or None when neither is given."""
    week = getattr(args, "week", None)
    start = getattr(args, "window_from", None)
    end = getattr(args, "window_to", None)
    if week is not None:
        if start is not None or end is not None:
            raise InvalidArgument("give --week, or --from with --to, not both", field="--week")
        return parse_week(week)
    if start is None and end is None:
        return None
    if start is None:
        raise InvalidArgument("needs --from (the first day of the window)", field="--to")
    if end is None:
        raise InvalidArgument(
            "needs --to (the day after the window's last day; the end is exclusive)",
            field="--from",
        )
    return parse_dates(start, end)


def view_window(view: RoundView) -> TicketWindow | None:
    """The round's ticket window, None for a round without one (an older aggregator)."""
    return check_window(view.window_start_ms, view.window_end_ms)


def window_text(window: TicketWindow | None) -> str:
    if window is None:
        return "no window (each party's whole export)"
    return f"created {window.describe()}"


def view_json(view: RoundView) -> dict[str, Any]:
    return {
        "round_id": view.round_id,
        "mode": view.mode.value,
        "state": view.state.value,
        "phase": view.phase.value,
        "parties": list(view.parties),
        "threshold": view.threshold,
        "min_contributors": view.min_contributors,
        "schema_id": view.schema_id,
        "advertised": list(view.advertised),
        "shared": list(view.shared),
        "masked": list(view.masked),
        "consistent": list(view.consistent),
        "unmasked": list(view.unmasked),
        "submitted": list(view.submitted),
        "waiting_for": list(view.waiting_for),
        "abort_reason": view.abort_reason,
        "committed": list(view.committed),
        "graph_degree": view.graph_degree,
        "threat": None
        if view.threat is None
        else {
            "corrupt_fraction": view.threat.corrupt_fraction,
            "dropout_fraction": view.threat.dropout_fraction,
            "adversary": view.threat.adversary.value,
            "privacy_bits": view.threat.privacy_bits,
            "correctness_bits": view.threat.correctness_bits,
        },
        "misbehaving": [{"party": p, "reason": r} for p, r in view.misbehaving],
        # The tickets the round covers (null: a round without a window).
        "window": None if (window := view_window(view)) is None else window.to_json(),
    }


def seconds_left(view: RoundView) -> int:
    return max(0, (view.phase_deadline_ms - int(time.time() * 1000)) // 1000)


def format_status(view: RoundView) -> str:
    lines = [f"round {view.round_id} ({view.mode.value}): {view.state.value}"]
    if view.state is RoundState.OPEN:
        lines[0] += f", phase {view.phase.value}, deadline in {seconds_left(view)} s"
    if view.abort_reason:
        lines.append(f"  reason: {view.abort_reason}")
    lines.append(
        f"  parties: {len(view.parties)} invited, threshold {view.threshold}, "
        f"min contributors {view.min_contributors}, schema {view.schema_id[:12]}"
    )
    lines.append(f"  tickets: {window_text(view_window(view))}")
    if view.mode is Mode.SECAGG:
        if view.threat is not None:
            t = view.threat
            n = len(view.parties)
            degree = "complete graph" if view.graph_degree == 0 else f"degree {view.graph_degree}"
            lines.append(
                f"  threat model: {t.adversary.value} aggregator, up to {t.corrupt(n)} corrupt "
                f"and {t.dropouts(n)} dropped of {n}, privacy 2^-{t.privacy_bits}; {degree}"
            )
        c = view.count
        lines.append(
            f"  committed {c(Phase.COMMIT)}/{len(view.parties)}  "
            f"advertised {c(Phase.ADVERTISE)}/{c(Phase.COMMIT) or '-'}  "
            f"shared {c(Phase.SHARE)}/{c(Phase.ADVERTISE) or '-'}  "
            f"masked {c(Phase.MASK)}/{c(Phase.SHARE) or '-'}  "
            f"signed {c(Phase.CONSISTENCY)}/{c(Phase.MASK) or '-'}  "
            f"unmasked {c(Phase.UNMASK)}/{c(Phase.CONSISTENCY) or '-'}"
        )
    else:
        lines.append(f"  submitted {view.count(Phase.COLLECT)}/{len(view.parties)}")
    if view.waiting_for:
        lines.append(f"  waiting for: {', '.join(view.waiting_for)}")
    for party, reason in view.misbehaving:
        lines.append(f"  misbehaved: {party}: {reason}")
    return "\n".join(lines)


def status_line(view: RoundView) -> str:
    """One line: the round, its phase, how many of the expected parties are in, time left."""
    if view.state is not RoundState.OPEN:
        text = f"round {view.round_id}: {view.state.value}"
        return f"{text} ({view.abort_reason})" if view.abort_reason else text
    done, expected = view.progress()
    return (
        f"round {view.round_id}: phase {view.phase.value}, "
        f"{done}/{expected} parties in, {seconds_left(view)} s left"
    )


class Progress:
    """Progress on a stream. On a terminal, one live status line that is redrawn in
    place, with messages printed above it; elsewhere (a pipe, a log file, a demo) plain
    lines, and a status line only when it says something new (if ``plain_status``)."""

    def __init__(
        self, stream: TextIO | None = None, *, live: bool | None = None, plain_status: bool = True
    ) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        #: Whether plain output prints status lines at all (a party node's own messages
        #: already say what changed).
        self.plain_status = plain_status
        self._shown = ""
        self._last_plain = ""

    def message(self, text: str) -> None:
        if self.live and self._shown:
            self.stream.write("\r\x1b[2K")
            self.stream.write(text + "\n")
            self.stream.write(self._shown)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def status(self, view: RoundView) -> None:
        text = status_line(view)
        if self.live:
            self._shown = text
            self.stream.write("\r\x1b[2K" + text)
            self.stream.flush()
            return
        if not self.plain_status:
            return
        # Plain output: the same line without the countdown, so it prints only on change.
        key = text.rsplit(",", 1)[0] if view.state is RoundState.OPEN else text
        if key != self._last_plain:
            self._last_plain = key
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.live and self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = ""
