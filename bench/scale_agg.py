"""``python -m bench.scale_agg AGG_DIR OUT_DIR``: the aggregator, counted (scenario ``scale``).

Runs the normal ``aggregator serve`` entry point (:func:`aggregator.service.serve_forever`)
in this process, after wrapping the PostgreSQL driver so that every statement the store
sends is counted. Nothing in ``aggregator/`` or ``blindsum/`` is changed: the hook sits
on psycopg's ``Cursor.execute`` / ``Cursor.executemany`` / ``Connection.commit``, the
boundary every PostgreSQL store has to cross whatever its own methods are called.

Counters (only when the store URL is ``postgresql://``):

- ``statements``: statements sent, and per statement text (whitespace collapsed);
- ``param_blob_bytes``: bytes of the bytes/bytea parameters sent (the vectors,
  envelopes, payloads); ``param_bytes``: every parameter (str as UTF-8, numbers 8);
- ``commits``: explicit ``COMMIT`` calls.

Snapshots: write a tag to ``OUT_DIR/snap.request`` and send SIGUSR1; the process writes
``OUT_DIR/snap-TAG.json`` (counters, rusage, VmRSS/VmHWM). It writes ``snap-final.json``
on its way out (SIGTERM). If the hook point is gone (a psycopg that no longer has these
methods), it exits at once with code 3 and says so on stderr: a count of zero must never
pass for a measurement.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REQUEST_FILE = "snap.request"
#: Exit code when the counting hook cannot be installed.
EXIT_NO_HOOK = 3

_SPACES = re.compile(r"\s+")


class StatementCounter:
    """Thread-safe tallies of what the store sends to the database."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.statements = 0
        self.commits = 0
        self.param_blob_bytes = 0
        self.param_bytes = 0
        self.by_text: Counter[str] = Counter()

    def statement(self, query: Any, params: Any) -> None:
        text = query.decode() if isinstance(query, bytes) else str(query)
        key = _SPACES.sub(" ", text).strip()[:160]
        blob, total = _param_bytes(params)
        with self._lock:
            self.statements += 1
            self.param_blob_bytes += blob
            self.param_bytes += total
            self.by_text[key] += 1

    def commit(self) -> None:
        with self._lock:
            self.commits += 1

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "statements": self.statements,
                "commits": self.commits,
                "param_blob_bytes": self.param_blob_bytes,
                "param_bytes": self.param_bytes,
                "by_text": dict(self.by_text),
            }


def _param_bytes(params: Any) -> tuple[int, int]:
    """(bytes in bytes-like parameters, bytes in all parameters) of one statement."""
    if params is None:
        return 0, 0
    values = params.values() if isinstance(params, dict) else params
    blob = total = 0
    for value in values:
        if isinstance(value, bytes | bytearray | memoryview):
            size = len(value)
            blob += size
            total += size
        elif isinstance(value, str):
            total += len(value.encode())
        elif value is not None:
            total += 8
    return blob, total


COUNTER = StatementCounter()


def install_psycopg_hook(counter: StatementCounter) -> None:
    """Wrap psycopg's statement and commit methods; SystemExit(3) if they are gone."""
    try:
        import psycopg  # noqa: PLC0415 - only a postgresql:// store needs it
    except ImportError as exc:
        _fail(f"psycopg is not importable ({exc}); the store cannot be counted")
    cursor_cls: Any = getattr(psycopg, "Cursor", None)
    conn_cls: Any = getattr(psycopg, "Connection", None)
    hooks = {
        "psycopg.Cursor.execute": (cursor_cls, "execute"),
        "psycopg.Cursor.executemany": (cursor_cls, "executemany"),
        "psycopg.Connection.commit": (conn_cls, "commit"),
    }
    missing = [n for n, (cls, attr) in hooks.items() if not callable(getattr(cls, attr, None))]
    if missing:
        _fail(f"hook point(s) gone: {', '.join(missing)}; update bench/scale_agg.py")
    execute = cursor_cls.execute
    executemany = cursor_cls.executemany
    commit = conn_cls.commit

    def counted_execute(self: Any, query: Any, params: Any = None, **kwargs: Any) -> Any:
        counter.statement(query, params)
        return execute(self, query, params, **kwargs)

    def counted_executemany(self: Any, query: Any, params_seq: Any, **kwargs: Any) -> Any:
        rows = list(params_seq)
        for row in rows:
            counter.statement(query, row)
        return executemany(self, query, rows, **kwargs)

    def counted_commit(self: Any) -> Any:
        counter.commit()
        return commit(self)

    cursor_cls.execute = counted_execute
    cursor_cls.executemany = counted_executemany
    conn_cls.commit = counted_commit


def _fail(message: str) -> None:
    print(f"bench.scale_agg: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_NO_HOOK)


def _proc_status_kib(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def snapshot(counting: bool) -> dict[str, Any]:
    """Counters, CPU seconds (all threads), max RSS, VmRSS and VmHWM of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    doc: dict[str, Any] = {
        "time": time.time(),
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "user_s": usage.ru_utime,
        "system_s": usage.ru_stime,
        "maxrss_kib": usage.ru_maxrss,
        "vmrss_kib": _proc_status_kib("VmRSS"),
        "vmhwm_kib": _proc_status_kib("VmHWM"),
        "counting": counting,
    }
    if counting:
        doc.update(COUNTER.to_json())
    return doc


def _write(out_dir: Path, tag: str, counting: bool) -> None:
    path = out_dir / f"snap-{tag}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(snapshot(counting)))
    tmp.replace(path)


def _on_request(out_dir: Path, counting: bool) -> Callable[[], None]:
    def handle() -> None:
        try:
            tag = (out_dir / REQUEST_FILE).read_text().strip()
        except OSError:
            tag = "unnamed"
        if re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", tag) is None:
            tag = "unnamed"
        _write(out_dir, tag, counting)

    return handle


async def _serve(agg_dir: Path, out_dir: Path, counting: bool) -> None:
    from aggregator.service import serve_forever  # noqa: PLC0415 - after the hook

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, _on_request(out_dir, counting))
    await serve_forever(agg_dir)


def main(argv: Sequence[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m bench.scale_agg AGG_DIR OUT_DIR", file=sys.stderr)
        return 2
    agg_dir, out_dir = Path(argv[0]), Path(argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    from aggregator import config as cfgmod  # noqa: PLC0415
    from blindsum import log  # noqa: PLC0415

    cfg = cfgmod.load(agg_dir)
    counting = cfg.store.url.startswith(("postgresql://", "postgres://"))
    if counting:
        install_psycopg_hook(COUNTER)
    log.configure(cfg.log_level)
    try:
        asyncio.run(_serve(agg_dir, out_dir, counting))
    finally:
        _write(out_dir, "final", counting)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main(sys.argv[1:]))
