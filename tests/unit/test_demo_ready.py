"""The demo's ready handshake: it opens a round only once every party process is ready,
and a party that dies first stops the demo with its name, exit code and log."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from blindsum.errors import BlindsumError
from blindsum_app.demo import _wait_ready

WRITE_READY = "import sys, pathlib; pathlib.Path(sys.argv[1]).write_text('ready')"


def _proc(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, *args])


def test_returns_once_every_party_wrote_its_ready_file(tmp_path: Path) -> None:
    procs = {name: _proc("-c", WRITE_READY, str(tmp_path / name)) for name in ("a", "b")}
    try:
        _wait_ready(procs, tmp_path, timeout=300)
        assert all((tmp_path / name).exists() for name in procs)
    finally:
        for proc in procs.values():
            proc.wait(timeout=60)


def test_a_party_that_exits_before_it_is_ready_stops_the_demo(tmp_path: Path) -> None:
    procs = {
        "a": _proc("-c", WRITE_READY, str(tmp_path / "a")),
        "b": _proc("-c", "import sys; sys.exit(2)"),
    }
    logs = {"a": tmp_path / "a.log", "b": tmp_path / "b.log"}
    try:
        with pytest.raises(BlindsumError) as err:
            _wait_ready(procs, tmp_path, timeout=300, logs=logs)
    finally:
        for proc in procs.values():
            proc.wait(timeout=60)
    assert str(err.value) == (
        f"party b exited with code 2 before it was ready (see {tmp_path / 'b.log'})"
    )
