"""``aggregator serve`` as a child process, for tests that kill it or measure it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from aggregator import config as cfgmod

#: Bound on waiting for a started server to write its address.
START_TIMEOUT_S = 60.0


def spawn_serve(directory: Path, listen: str, log: Path) -> subprocess.Popen[bytes]:
    """Start ``blindsum aggregator serve DIRECTORY --listen LISTEN``, output to ``log``."""
    (directory / cfgmod.ADDRESS_FILE).unlink(missing_ok=True)
    args = [sys.executable, "-m", "blindsum_app.cli", "aggregator", "serve", str(directory)]
    with log.open("ab") as out:
        return subprocess.Popen(
            [*args, "--listen", listen],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def serving_port(proc: subprocess.Popen[bytes], directory: Path, log: Path, deadline: float) -> int:
    """The port once the server wrote its address, else 0 (poll again). AssertionError,
    with the end of its log, when it exited or ``deadline`` (monotonic) passed."""
    addr = directory / cfgmod.ADDRESS_FILE
    text = addr.read_text().strip() if addr.exists() else ""
    if text:
        return int(text.rsplit(":", 1)[1])
    assert proc.poll() is None, f"serve exited: {log.read_text()[-2000:]}"
    assert time.monotonic() < deadline, f"serve did not start: {log.read_text()[-2000:]}"
    return 0


async def start_serve(
    directory: Path, listen: str, log: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """Spawn ``serve`` and wait (without blocking the event loop) until it listens."""
    proc = spawn_serve(directory, listen, log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not (port := serving_port(proc, directory, log, deadline)):
        await asyncio.sleep(0.05)
    return proc, port


def stop_serve(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL if it does not stop within 20 s."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
