"""The HTML report in real headless Chromium: it renders, loads nothing, and looks right
on a 390 px phone and a 1280 px desktop.

Skipped when no Chromium is installed (`make chromium` installs Debian's). The
start-failure and timeout tests use a fake browser and run everywhere. Nothing here
asserts on wall-clock time: timeouts are generous bounds for a loaded machine, and the
browser-dies-early tests force their ordering instead of racing it.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

import aggregator.browser as browser
from aggregator.browser import ENV_VAR, MIN_CHART_TEXT_PX, check_page, find_chromium
from aggregator.report_html import CHARTS, render_html
from blindsum.errors import FailedPrecondition, Unavailable
from tests.unit.test_report_html import build_sample_report

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "screenshot_report.py"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

needs_chromium = pytest.mark.skipif(
    find_chromium() is None,
    reason=f"chromium not installed: run `make chromium` (or set {ENV_VAR} to a Chromium binary)",
)

BROKEN_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>broken</title></head><body>
<img src="http://blindsum.invalid/pixel.png" alt="">
<svg class="chart" data-chart="hidden" style="display:none"><title>t</title></svg>
<script>console.error("something went wrong"); throw new Error("boom");</script>
</body></html>
"""


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Send tempfile's directory (the browser profile) into tmp_path, to check cleanup."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return scratch


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def _fake_browser(tmp_path: Path, body: str) -> str:
    fake = tmp_path / "fake-chromium"
    fake.write_text(f"#!/bin/sh\n{body}\n")
    fake.chmod(0o755)
    return str(fake)


@needs_chromium
@pytest.mark.timeout(60)
def test_report_renders_without_errors_and_screenshot_shows_it(
    tmp_path: Path, private_tmp: Path
) -> None:
    page = tmp_path / "report.html"
    page.write_text(render_html(build_sample_report()), encoding="utf-8")
    shot = tmp_path / "shots" / "report.png"

    result = check_page(page, shot, width=1280, timeout_s=45)

    assert result.console_errors == []
    assert [name for name, _, _ in result.charts] == list(CHARTS)
    for name, width, height in result.charts:
        assert 200 < width <= 1280, name
        assert height > 100, name
    assert result.screenshot == shot
    data = shot.read_bytes()
    width, height = _png_size(data)
    assert width == 1280
    assert height > 2000  # the full page, not just the 900 px viewport
    assert len(data) > 20_000  # far more than a blank page
    assert list(private_tmp.iterdir()) == []  # the temporary profile is gone


@needs_chromium
@pytest.mark.timeout(60)
def test_check_page_reports_exceptions_console_errors_and_requests(tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text(BROKEN_PAGE, encoding="utf-8")

    result = check_page(page, tmp_path / "broken.png", timeout_s=45)

    joined = "\n".join(result.console_errors)
    assert "boom" in joined
    assert "something went wrong" in joined
    assert "blindsum.invalid/pixel.png" in joined  # offline: the request failed
    assert ("hidden", 0.0, 0.0) in result.charts
    assert _png_size((tmp_path / "broken.png").read_bytes())[0] == 1280


@needs_chromium
@pytest.mark.timeout(60)
def test_screenshot_script_passes_a_good_report_and_fails_a_broken_page(tmp_path: Path) -> None:
    good = tmp_path / "report.html"
    good.write_text(render_html(build_sample_report()), encoding="utf-8")
    broken = tmp_path / "broken.html"
    broken.write_text(BROKEN_PAGE, encoding="utf-8")

    ok = subprocess.run(
        [sys.executable, str(SCRIPT), str(good), str(tmp_path / "ok.png")],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "ok.png").read_bytes()[:8] == PNG_SIGNATURE

    bad = subprocess.run(
        [sys.executable, str(SCRIPT), str(broken), str(tmp_path / "bad.png")],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert bad.returncode == 1
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "console error" in lines[0]
    assert "charts not rendered: hidden" in lines[0]
    assert "charts missing: csat-distribution" in lines[0]


@needs_chromium
@pytest.mark.timeout(120)
@pytest.mark.parametrize("width", [390, 1280])
def test_report_reads_on_a_phone_and_a_desktop(tmp_path: Path, width: int) -> None:
    """No sideways page scroll, every region column reachable, chart text >= 10 px."""
    report = build_sample_report()
    page = tmp_path / "report.html"
    page.write_text(render_html(report), encoding="utf-8")

    result = check_page(page, tmp_path / "report.png", width=width, timeout_s=100)

    assert result.console_errors == []
    assert result.viewport_width == width
    assert result.page_width <= result.viewport_width  # the body never scrolls sideways
    columns = {c.region: c for c in result.columns}
    assert set(columns) == {r.region for r in report.regions}
    released = [r.region for r in report.regions if not r.suppressed]
    assert "EMEA" in released  # the breaching region
    for region in released:
        column = columns[region]
        assert column.in_viewport or column.scroll_reachable, column
    if width == 1280:
        assert all(c.in_viewport for c in result.columns)
    # One drawing of each chart is shown, the one that fits, never wider than the screen.
    assert [name for name, _, _ in result.charts] == list(CHARTS)
    for name, chart_width, chart_height in result.charts:
        assert 0 < chart_width <= width, name
        assert chart_height > 100, name
    assert len(result.chart_text) > 100
    smallest = min(result.chart_text, key=lambda t: t[2])
    assert smallest[2] >= MIN_CHART_TEXT_PX, smallest
    assert result.layout_problems() == []


@pytest.mark.timeout(30)
def test_browser_that_fails_to_start_raises_one_line_error(
    tmp_path: Path, private_tmp: Path
) -> None:
    page = tmp_path / "page.html"
    page.write_text("<!DOCTYPE html><title>x</title>", encoding="utf-8")
    fake = _fake_browser(tmp_path, 'echo "cannot open display: :0" >&2\nexit 3')

    with pytest.raises(Unavailable) as info:
        check_page(page, tmp_path / "x.png", chromium=fake, timeout_s=20)

    message = str(info.value)
    assert "\n" not in message
    assert "failed to start" in message
    assert "exit 3" in message
    assert "cannot open display" in message
    assert not (tmp_path / "x.png").exists()
    assert list(private_tmp.iterdir()) == []


@pytest.mark.timeout(30)
def test_browser_that_never_answers_is_killed_at_the_deadline(
    tmp_path: Path, private_tmp: Path
) -> None:
    page = tmp_path / "page.html"
    page.write_text("<!DOCTYPE html><title>x</title>", encoding="utf-8")
    pid_file = tmp_path / "pid"
    fake = _fake_browser(tmp_path, f'echo $$ > "{pid_file}"\nexec sleep 60')

    with pytest.raises(Unavailable, match="failed to start \\(no answer in time\\)"):
        check_page(page, tmp_path / "x.png", chromium=fake, timeout_s=1.0)

    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped, not left running
    assert list(private_tmp.iterdir()) == []


def test_find_chromium_honours_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _fake_browser(tmp_path, "exit 0")
    monkeypatch.setenv(ENV_VAR, fake)
    assert find_chromium() == fake
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "missing"))
    assert find_chromium() is None
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "missing"))
    page = tmp_path / "page.html"
    page.write_text("<!DOCTYPE html><title>x</title>", encoding="utf-8")
    with pytest.raises(FailedPrecondition, match="make chromium"):
        check_page(page, tmp_path / "x.png")


def _fails_to_start(page: Path, tmp_path: Path, fake: str) -> str:
    with pytest.raises(Unavailable) as info:
        check_page(page, tmp_path / "x.png", chromium=fake, timeout_s=60)
    return str(info.value)


@pytest.mark.timeout(90)
def test_browser_dead_before_the_first_command_is_a_one_line_error(
    tmp_path: Path, private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race behind a flaky BrokenPipeError, forced: the browser has exited before we
    write our first command, so the write hits a closed pipe (EPIPE)."""
    page = tmp_path / "page.html"
    page.write_text("<!DOCTYPE html><title>x</title>", encoding="utf-8")
    fake = _fake_browser(tmp_path, 'echo "cannot open display: :0" >&2\nexit 3')
    start = browser._start

    def start_and_wait_for_exit(*args: Any) -> subprocess.Popen[bytes]:
        proc = start(*args)
        proc.wait(timeout=60)
        return proc

    monkeypatch.setattr(browser, "_start", start_and_wait_for_exit)

    message = _fails_to_start(page, tmp_path, fake)

    assert "\n" not in message
    assert "failed to start" in message
    assert "exit 3" in message
    assert "cannot open display" in message
    assert list(private_tmp.iterdir()) == []


@pytest.mark.timeout(90)
def test_browser_dead_after_reading_the_first_command_is_a_one_line_error(
    tmp_path: Path, private_tmp: Path
) -> None:
    """The other order, forced: the browser reads our command, then exits without an
    answer, so we see the end of its answer pipe."""
    page = tmp_path / "page.html"
    page.write_text("<!DOCTYPE html><title>x</title>", encoding="utf-8")
    fake = _fake_browser(
        tmp_path, 'head -c 1 <&3 >/dev/null\necho "cannot open display: :0" >&2\nexit 3'
    )

    message = _fails_to_start(page, tmp_path, fake)

    assert "\n" not in message
    assert "failed to start (exit 3: cannot open display: :0)" in message
    assert list(private_tmp.iterdir()) == []


def test_stopping_a_dead_browser_with_unsent_commands_raises_nothing(tmp_path: Path) -> None:
    """What a failed write leaves in the pipe's buffer must not resurface on close."""
    proc = subprocess.Popen(
        ["/bin/sh", "-c", "exit 0"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    proc.wait(timeout=60)
    assert proc.stdin is not None
    proc.stdin.write(b"x" * 100)  # buffered: the pipe's reader is gone
    with pytest.raises(BrokenPipeError):
        proc.stdin.flush()
    browser._stop(proc, polite=False)  # closes the streams without raising
    assert proc.stdin.closed
