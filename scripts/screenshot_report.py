"""Render-check an HTML report in headless Chromium and save a full-page screenshot.

    .venv/bin/python scripts/screenshot_report.py REPORT.html OUT.png

Exits 0 after writing OUT.png when the page loaded without console errors, uncaught
exceptions or failed requests, every chart of the report rendered with a non-zero
size, and the page reads at ``--width`` (390 for a phone): it does not scroll sideways,
every region's column in the statistics table is on screen or reachable by the table's
own scroll, and no chart text is smaller than 10 px; otherwise exits 1 with one line on
stderr saying why (2 for usage errors, and 1 when Chromium is missing or fails: run
`make chromium`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aggregator.browser import PageCheck, check_page
from aggregator.report_html import CHARTS
from blindsum.errors import BlindsumError


def problems(result: PageCheck, expected: tuple[str, ...] = CHARTS) -> list[str]:
    """Why the page does not pass, one short phrase each; empty when it does."""
    found: list[str] = []
    if result.console_errors:
        found.append(
            f"{len(result.console_errors)} console error(s), first: {result.console_errors[0]}"
        )
    rendered = {name for name, w, h in result.charts if w > 0 and h > 0}
    flat = sorted({name for name, w, h in result.charts if not (w > 0 and h > 0)})
    if flat:
        found.append(f"charts not rendered: {', '.join(flat)}")
    missing = [name for name in expected if name not in rendered and name not in flat]
    if missing:
        found.append(f"charts missing: {', '.join(missing)}")
    found += result.layout_problems()
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("report", type=Path, help="the HTML report to check")
    parser.add_argument("out", type=Path, help="where to write the PNG screenshot")
    parser.add_argument("--width", type=int, default=1280, help="viewport width in CSS px")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds for the whole run")
    args = parser.parse_args(argv)
    try:
        result = check_page(args.report, args.out, width=args.width, timeout_s=args.timeout)
    except BlindsumError as exc:
        print(f"screenshot_report: {exc}", file=sys.stderr)
        return 1
    found = problems(result)
    if found:
        print(f"screenshot_report: {args.report.name}: {'; '.join(found)}", file=sys.stderr)
        return 1
    print(f"screenshot_report: wrote {args.out} ({len(result.charts)} charts rendered)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
