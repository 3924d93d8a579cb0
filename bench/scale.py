"""Scenario ``scale``: one secagg round at n = 100 ... 3,000 over the real service path.

Issue 11, item 9. The aggregator is its own process (:mod:`bench.scale_agg`: the
normal ``serve`` entry point with the PostgreSQL driver wrapped to count statements)
on a fresh PostgreSQL database that the bench creates and drops. The n parties are
:class:`party.node.PartyNode` clients spread over worker processes (spawned, so each
has its own gRPC runtime), each party with its own mTLS channel, running the real
party protocol (commit, advertise, share, mask, consistency, unmask) on 127.0.0.1.
m = 1,024 (one region: a 1,023-bin histogram and the contributor slot), no dropouts,
DP off, the aggregator's default threat model, degree and threshold, and its default
phase timeout unless ``--phase-timeout`` is given.

The channels are connected (TLS handshakes done) before the round opens, as a party
daemon's are; the round is timed from ``OpenRound`` until the report is fetched, and
the released sum is checked against the inputs slot by slot. Per n it reports:

- ``round_s``, and the final state (``complete_ok``; an abort's reason is in the
  table and in the JSON);
- ``agg_cpu_per_1000_parties_s``: the aggregator process's CPU seconds (user + system,
  every thread) during the round, per 1,000 parties; ``db_cpu_per_1000_parties_s`` the
  same for its PostgreSQL backend(s), when /proc shows them;
- ``statements_per_submission``: statements the store sent during the round over the
  submissions the aggregator accepted (Commit, Advertise, SubmitShares, SubmitMasked,
  SubmitConsistency, SubmitUnmask); ``commits_per_submission`` likewise;
  ``param_blob_bytes_per_submission``: bytes of bytea parameters sent;
- ``wal_bytes_per_submission``: WAL written during the round (``pg_current_wal_insert_lsn``
  before and after; cluster-wide, so other databases' writes on a shared server count
  too: ``other_db_commits`` says how many there were); ``db_growth_bytes_per_submission``:
  growth of ``pg_database_size`` (this database only);
- ``agg_peak_rss_mib``: the aggregator's VmHWM (a fresh process per n).

Issue targets (judged in the table when the sizes ran): n = 1,000 completes inside the
default phase timeout; aggregator CPU per party at n = 3,000 within 1.5x of n = 300
(``--full``); statements per submission constant in n.

Item 6 (bounded memory) is the sibling scenario ``scale-memory``: see :func:`memory_run`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from aggregator import config as cfgmod
from aggregator.admin import init
from aggregator.service import ADDRESS_FILE
from aggregator.store import open_store
from bench.common import (
    Result,
    format_table,
    machine_info,
    ratio,
    result_row,
    skipped,
)
from bench.service import _check_report, bench_schema, bench_vectors
from blindsum import codec
from blindsum.bundle import BUNDLE_CONFIG, PartyConfig, load_bundle
from blindsum.config import dump_config
from blindsum.crypto.sign import SigningKey
from blindsum.errors import Internal
from blindsum.model import Mode, OpenRoundSpec, RoundState
from blindsum.rpc.v1 import admin_pb2_grpc, common_pb2, report_pb2_grpc
from blindsum.transport.pki import (
    Identity,
    KeyAndCert,
    Role,
    issue_identity_cert,
    issue_tls_cert,
    write_private,
)
from blindsum.transport.tls import secure_channel
from blindsum.types import U64Vector
from party.node import PartyNode, VectorSource

__all__ = ["KEY_METRICS", "SCENARIO", "main", "measure_sizes", "memory_run", "run"]

SCENARIO = "scale"
MEMORY_SCENARIO = "scale-memory"
LENGTH = 1024
QUICK_SIZES = (100, 1000)
FULL_SIZES = (100, 300, 1000, 3000)
#: The RPCs that submit something (the denominator of "per submission").
SUBMISSIONS = frozenset(
    {"Commit", "Advertise", "SubmitShares", "SubmitMasked", "SubmitConsistency", "SubmitUnmask"}
)
PG_SERVER = os.environ.get("BLINDSUM_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
#: Targets of issue 11, item 9 and item 6.
TARGET_CPU_RATIO = 1.5
TARGET_RSS_RATIO = 1.2
_START_TIMEOUT_S = 120.0
_READY_TIMEOUT_S = 600.0
_RPC_TIMEOUT_S = 120.0
_SNAP_TIMEOUT_S = 30.0
#: Seconds to let PostgreSQL's statistics catch up before they are read.
_STATS_SETTLE_S = 1.5
#: Idle window measured before each round (the ticker's own statements per second).
_IDLE_S = 2.0
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _say(message: str) -> None:
    print(f"[scale] {message}", file=sys.stderr, flush=True)


def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- PostgreSQL


def pg_unavailable() -> str | None:
    """Why the scenario cannot reach PostgreSQL, or None when it answers."""
    try:
        import psycopg  # noqa: PLC0415 - optional (the postgres extra)
    except ImportError:
        return "psycopg is not installed (pip install 'blindsum[postgres]')"
    try:
        with psycopg.connect(f"{PG_SERVER}/postgres", connect_timeout=3):
            return None
    except Exception as exc:
        return f"no PostgreSQL answers at {PG_SERVER} ({type(exc).__name__})"


def _pg_admin() -> Any:
    import psycopg  # noqa: PLC0415

    return psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=5)


@contextlib.contextmanager
def fresh_database(tag: str) -> Iterator[str]:
    """Create a uniquely named database; drop it (closing its connections) afterwards."""
    name = f"blindsum_bench_{tag}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    try:
        yield name
    finally:
        with _pg_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def _lsn(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) + int(lo, 16)


def _proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a live process from /proc, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pg_counters(database: str) -> dict[str, Any]:
    """This database's counters, the cluster's WAL position and the others' commits."""
    with _pg_admin() as conn:
        row = conn.execute(
            b"SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted, "
            b"tup_fetched FROM pg_stat_database WHERE datname = %s",
            (database,),
        ).fetchone()
        others = conn.execute(
            b"SELECT coalesce(sum(xact_commit), 0) FROM pg_stat_database "
            b"WHERE datname IS DISTINCT FROM %s",
            (database,),
        ).fetchone()
        lsn = conn.execute(b"SELECT pg_current_wal_insert_lsn()::text").fetchone()
        size = conn.execute(b"SELECT pg_database_size(%s)", (database,)).fetchone()
        pids = conn.execute(
            b"SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchall()
    keys = ("xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_deleted")
    out: dict[str, Any] = dict(zip((*keys, "tup_fetched"), row or (0,) * 6, strict=True))
    out["other_db_commits"] = int(others[0]) if others else 0
    out["wal_lsn"] = _lsn(lsn[0]) if lsn else 0
    out["db_size"] = int(size[0]) if size else 0
    out["backend_cpu"] = {str(p[0]): _proc_cpu_s(int(p[0])) for p in pids}
    return out


def _pg_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    out = {
        k: float(after[k] - before[k])
        for k in (
            "xact_commit",
            "xact_rollback",
            "tup_inserted",
            "tup_updated",
            "tup_deleted",
            "tup_fetched",
            "other_db_commits",
            "db_size",
        )
    }
    out["wal_bytes"] = float(after["wal_lsn"] - before["wal_lsn"])
    cpu = 0.0
    seen = False
    for pid, start in before["backend_cpu"].items():
        end = after["backend_cpu"].get(pid)
        if start is not None and end is not None:
            cpu += end - start
            seen = True
    out["backend_cpu_s"] = cpu if seen else math.nan
    return out


# --------------------------------------------------------------------------- deployment


@dataclass
class Template:
    """One aggregator directory (dev CA, keys) and party bundles, reused for every n."""

    root: Path
    agg_dir: Path
    ca: KeyAndCert = field(repr=False)
    bundles: list[Path] = field(default_factory=list)

    @classmethod
    def create(cls, root: Path) -> Template:
        agg_dir = root / "template"
        init(agg_dir, listen="127.0.0.1:0")
        cfg = cfgmod.load(agg_dir)
        ca = KeyAndCert(
            key_pem=cfgmod.resolve(agg_dir, cfg.tls.ca_key).read_bytes(),
            cert_pem=cfgmod.resolve(agg_dir, cfg.tls.ca_cert).read_bytes(),
        )
        return cls(root=root, agg_dir=agg_dir, ca=ca)

    def ensure_parties(self, n: int) -> list[Path]:
        """Bundles for parties 0..n-1, made like ``aggregator enroll`` makes them (the
        store rows are added per database by :meth:`deploy`)."""
        cfg = cfgmod.load(self.agg_dir)
        pub = (cfgmod.resolve(self.agg_dir, cfg.custodian.key_dir) / "signing.pub").read_text()
        while len(self.bundles) < n:
            name = f"party-{len(self.bundles):05d}"
            out = self.root / "parties" / name
            identity = Identity(Role.PARTY, name)
            tls = issue_tls_cert(self.ca, identity)
            signing = SigningKey.generate(secrets.token_bytes)
            out.mkdir(parents=True)
            (out / "ca.crt").write_bytes(self.ca.cert_pem)
            (out / "tls.crt").write_bytes(tls.cert_pem)
            write_private(out / "tls.key", tls.key_pem)
            (out / "identity.crt").write_bytes(
                issue_identity_cert(self.ca, identity, signing.public_bytes)
            )
            write_private(out / "identity.key", signing.to_pem())
            party = PartyConfig(
                name=name,
                aggregator="127.0.0.1:0",
                server_name=cfg.server.server_name,
                custodian_public_key=pub.strip(),
                # The rounds run without DP (the release must equal the sum): consent.
                allow_dp_off=True,
            )
            (out / BUNDLE_CONFIG).write_text(dump_config(party))
            self.bundles.append(out)
        return self.bundles[:n]

    def deploy(self, name: str, n: int, store_url: str, **rounds: Any) -> Path:
        """A copy of the template with its store at ``store_url`` and parties 0..n-1
        enrolled in it; DP off; ``rounds`` overrides keys of ``[rounds]``."""
        bundles = self.ensure_parties(n)
        agg_dir = self.root / name
        shutil.copytree(self.agg_dir, agg_dir)
        cfg = cfgmod.load(agg_dir)
        cfg = replace(
            cfg,
            store=replace(cfg.store, url=store_url),
            release=replace(cfg.release, dp="off"),
            rounds=replace(cfg.rounds, **rounds),
        )
        (agg_dir / cfgmod.CONFIG_NAME).write_text(dump_config(cfg))
        store = open_store(store_url, base_dir=agg_dir, create=True)
        try:
            for bundle in bundles:
                store.enroll(bundle.name, (bundle / "identity.crt").read_bytes())
        finally:
            store.close()
        return agg_dir


def admin_channel(agg_dir: Path, address: str) -> Any:
    cfg = cfgmod.load(agg_dir)
    tls = KeyAndCert(
        key_pem=cfgmod.resolve(agg_dir, cfg.tls.admin_key).read_bytes(),
        cert_pem=cfgmod.resolve(agg_dir, cfg.tls.admin_cert).read_bytes(),
    )
    ca = cfgmod.resolve(agg_dir, cfg.tls.ca_cert).read_bytes()
    return secure_channel(address, tls, ca, server_name=cfg.server.server_name)


# --------------------------------------------------------------------------- aggregator


@dataclass
class Aggregator:
    """The counted aggregator child (:mod:`bench.scale_agg`)."""

    proc: subprocess.Popen[bytes]
    address: str
    out_dir: Path

    def snapshot(self, tag: str) -> dict[str, Any]:
        """Ask the child for its counters and rusage (SIGUSR1) and wait for them."""
        path = self.out_dir / f"snap-{tag}.json"
        path.unlink(missing_ok=True)
        (self.out_dir / "snap.request").write_text(tag)
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + _SNAP_TIMEOUT_S
        while not path.exists():
            if self.proc.poll() is not None:
                raise Internal(f"the aggregator exited ({self.proc.returncode}) before {tag}")
            if time.monotonic() > deadline:
                raise Internal(f"the aggregator did not write its {tag} snapshot")
            time.sleep(0.02)
        doc: dict[str, Any] = json.loads(path.read_text())
        return doc

    def vmrss_mib(self) -> float:
        return _status_kib(self.proc.pid, "VmRSS") / 1024.0


def _status_kib(pid: int, key: str) -> float:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return math.nan
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return float(line.split()[1])
    return math.nan


@contextlib.contextmanager
def aggregator(agg_dir: Path, out_dir: Path) -> Iterator[Aggregator]:
    """Start ``python -m bench.scale_agg`` and always stop it (SIGTERM, then SIGKILL).
    Its stderr (the aggregator's log) goes to ``out_dir/aggregator.log``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    addr_file = agg_dir / ADDRESS_FILE
    addr_file.unlink(missing_ok=True)
    with open(out_dir / "aggregator.log", "wb") as logfile:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.scale_agg", str(agg_dir), str(out_dir)],
            cwd=_repo_root(),
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
            stdin=subprocess.DEVNULL,
            stdout=logfile,
            stderr=logfile,
        )
    try:
        deadline = time.monotonic() + _START_TIMEOUT_S
        address = ""
        while not address:
            if proc.poll() is not None:
                tail = (out_dir / "aggregator.log").read_text(errors="replace")[-600:]
                raise Internal(f"the aggregator exited with code {proc.returncode}: {tail}")
            if time.monotonic() > deadline:
                raise Internal(f"the aggregator did not start within {_START_TIMEOUT_S:g} s")
            if addr_file.exists():
                address = addr_file.read_text().strip()
            if not address:
                time.sleep(0.05)
        yield Aggregator(proc=proc, address=address, out_dir=out_dir)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


# --------------------------------------------------------------------------- workers


@dataclass(frozen=True)
class WorkerJob:
    """What one worker process runs: parties ``lo:hi`` of the round's n."""

    address: str
    bundles: tuple[str, ...]
    lo: int
    hi: int
    n: int
    schema_toml: str


def _worker_main(conn: multiprocessing.connection.Connection, job: WorkerJob) -> None:
    """Entry point of a worker process (spawned): see :func:`_worker`."""
    try:
        asyncio.run(_worker(conn, job))
    except BaseException as exc:
        with contextlib.suppress(Exception):
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
        raise


async def _worker(conn: multiprocessing.connection.Connection, job: WorkerJob) -> None:
    """Load the bundles, connect every party's channel, say ready; on ("go", round id)
    run every party's round concurrently; send back a summary; repeat until "stop"."""
    from blindsum.schema import Schema  # noqa: PLC0415

    loop = asyncio.get_running_loop()
    schema = Schema.from_toml(job.schema_toml)
    vectors = bench_vectors(schema, job.n)[job.lo : job.hi]
    rpcs: Counter[str] = Counter()  # calls made
    done: Counter[str] = Counter()  # calls that succeeded
    sent = [0]
    nodes = []
    for path in job.bundles:
        node = PartyNode(load_bundle(Path(path)), address=job.address)
        call = node.client.call

        async def counted(rpc: str, request: Any, call: Any = call) -> Any:
            rpcs[rpc] += 1
            sent[0] += int(request.ByteSize())
            answer = await call(rpc, request)
            done[rpc] += 1
            return answer

        node.client.call = counted  # type: ignore[method-assign]
        nodes.append(node)
    try:
        await asyncio.gather(
            *(asyncio.wait_for(n.client.channel.channel_ready(), 120) for n in nodes)
        )
        conn.send(("ready", len(nodes)))
        while True:
            message = await loop.run_in_executor(None, conn.recv)
            if message[0] != "go":
                break
            round_id = message[1]
            rpcs.clear()
            done.clear()
            sent[0] = 0
            cpu = time.process_time()
            finished: list[float] = []
            outcomes = await asyncio.gather(
                *(_party(n, round_id, v, finished) for n, v in zip(nodes, vectors, strict=True)),
                return_exceptions=True,
            )
            states: Counter[str] = Counter()
            reasons: Counter[str] = Counter()
            for out in outcomes:
                if isinstance(out, BaseException):
                    states["error"] += 1
                    reasons[f"{type(out).__name__}: {out}"[:300]] += 1
                else:
                    states[out.state.value] += 1
                    if out.abort_reason:
                        reasons[out.abort_reason[:300]] += 1
            conn.send(
                (
                    "done",
                    {
                        "states": dict(states),
                        "reasons": dict(reasons),
                        "rpcs": dict(rpcs),
                        "rpcs_ok": dict(done),
                        "sent_bytes": sent[0],
                        "cpu_s": time.process_time() - cpu,
                        "last_finish": max(finished) if finished else time.time(),
                    },
                )
            )
    finally:
        for node in nodes:
            await node.close()


def _fixed(vector: U64Vector) -> VectorSource:
    """A party's metrics source that returns its prepared vector."""
    return lambda _schema, _window: vector


async def _party(node: Any, round_id: str, vector: U64Vector, finished: list[float]) -> Any:
    """One party's round; the time it ended (however it ended) goes to ``finished``."""
    try:
        return await node.run_round(round_id, _fixed(vector))
    finally:
        finished.append(time.time())


@dataclass
class WorkerPool:
    """Worker processes holding the parties of one n, each with its own channels."""

    procs: list[Any]
    conns: list[multiprocessing.connection.Connection]

    @classmethod
    def start(
        cls, address: str, bundles: Sequence[Path], schema_toml: str, workers: int
    ) -> WorkerPool:
        ctx = multiprocessing.get_context("spawn")
        n = len(bundles)
        bounds = np.linspace(0, n, workers + 1).astype(int)
        pool = cls(procs=[], conns=[])
        for lo, hi in itertools.pairwise(bounds):
            if hi <= lo:
                continue
            parent, child = ctx.Pipe()
            job = WorkerJob(
                address=address,
                bundles=tuple(str(b) for b in bundles[lo:hi]),
                lo=int(lo),
                hi=int(hi),
                n=n,
                schema_toml=schema_toml,
            )
            proc = ctx.Process(target=_worker_main, args=(child, job), daemon=True)
            proc.start()
            child.close()
            pool.procs.append(proc)
            pool.conns.append(parent)
        try:
            pool._collect("ready", _READY_TIMEOUT_S)
        except BaseException:
            pool.stop()
            raise
        return pool

    def _collect(self, kind: str, timeout: float) -> list[Any]:
        deadline = time.monotonic() + timeout
        out = []
        for conn in self.conns:
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                raise Internal(f"a worker did not answer {kind!r} within {timeout:g} s")
            message = conn.recv()
            if message[0] != kind:
                raise Internal(f"a worker failed: {message[1]}")
            out.append(message[1])
        return out

    def run_round(self, round_id: str, timeout: float) -> tuple[list[dict[str, Any]], int]:
        """Run the round on every worker: (the summaries of the workers that finished
        within ``timeout``, how many did not)."""
        for conn in self.conns:
            conn.send(("go", round_id))
        deadline = time.monotonic() + timeout
        out = []
        for conn in self.conns:
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                continue
            message = conn.recv()
            if message[0] != "done":
                raise Internal(f"a worker failed: {message[1]}")
            out.append(message[1])
        return out, len(self.conns) - len(out)

    def stop(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(Exception):
                conn.send(("stop",))
        for proc in self.procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=10)


# --------------------------------------------------------------------------- one size


def _open_round(agg_dir: Path, address: str, spec: OpenRoundSpec) -> None:
    async def go() -> None:
        channel = admin_channel(agg_dir, address)
        try:
            await admin_pb2_grpc.AdminServiceStub(channel).OpenRound(
                codec.open_round_to_pb(spec), timeout=_RPC_TIMEOUT_S
            )
        finally:
            await channel.close(None)

    asyncio.run(go())


def _report(agg_dir: Path, address: str, round_id: str) -> Any:
    async def go() -> Any:
        channel = admin_channel(agg_dir, address)
        try:
            ref = common_pb2.RoundRef(round_id=round_id)
            message = await report_pb2_grpc.ReportServiceStub(channel).GetReport(
                ref, timeout=_RPC_TIMEOUT_S
            )
            return codec.report_from_pb(message)
        finally:
            await channel.close(None)

    return asyncio.run(go())


def _timeline(store_url: str, agg_dir: Path, round_id: str, t0: float) -> list[dict[str, Any]]:
    """The round's audit events (phase changes, abort, release), seconds after ``t0``.
    Read through the store's own API; empty (with a note) if that API has changed."""
    try:
        store = open_store(store_url, base_dir=agg_dir)
        try:
            events = store.audit_log(round_id)
        finally:
            store.close()
    except Exception as exc:
        _say(f"timeline unavailable: {type(exc).__name__}: {exc}")
        return []
    return [
        {"t_s": round(ts / 1000.0 - t0, 3), "event": event, "detail": _short(detail)}
        for ts, _round, event, detail in events
    ]


def _short(detail: dict[str, Any]) -> dict[str, Any]:
    """An audit detail with its long lists (party names) replaced by their length."""
    return {
        k: f"<{len(v)} items>" if isinstance(v, list) and len(v) > 10 else v
        for k, v in detail.items()
    }


def _top_statements(
    start: dict[str, Any], end: dict[str, Any], submissions: int, limit: int = 12
) -> list[dict[str, Any]]:
    before: dict[str, int] = start.get("by_text", {})
    delta = {k: v - before.get(k, 0) for k, v in end.get("by_text", {}).items()}
    top = sorted(((v, k) for k, v in delta.items() if v > 0), reverse=True)[:limit]
    return [
        {"count": v, "per_submission": round(v / max(1, submissions), 3), "sql": k} for v, k in top
    ]


def _inserted_submissions(start: dict[str, Any], end: dict[str, Any]) -> int:
    """Rows the store inserted into ``submissions`` between two snapshots."""
    before: dict[str, int] = start.get("by_text", {})
    return sum(
        v - before.get(k, 0)
        for k, v in end.get("by_text", {}).items()
        if k.startswith("INSERT INTO submissions ")
    )


def measure_size(
    template: Template,
    n: int,
    *,
    workers: int,
    phase_timeout_s: int | None,
    round_timeout_s: float,
    details: dict[str, Any],
) -> Result:
    """One secagg round of n parties against a fresh aggregator on a fresh database."""
    default_timeout = cfgmod.RoundsSection().default_phase_timeout_s
    params: dict[str, Any] = {
        "n": n,
        "m": LENGTH,
        "dropout": 0.0,
        "mode": "secagg",
        "store": "postgresql",
        "workers": workers,
        "phase_timeout_s": phase_timeout_s or default_timeout,
    }
    schema = bench_schema(LENGTH, max_parties=max(n, 1000))
    vectors = bench_vectors(schema, n)
    tag = f"n{n}"
    with fresh_database(tag) as database:
        url = f"{PG_SERVER}/{database}"
        _say(f"n={n}: deploying ({database})")
        agg_dir = template.deploy(f"agg-{tag}-{uuid.uuid4().hex[:6]}", n, url)
        bundles = template.bundles[:n]
        names = tuple(b.name for b in bundles)
        with aggregator(agg_dir, agg_dir / "bench-out") as agg:
            _say(f"n={n}: aggregator up at {agg.address}; starting {workers} workers")
            pool = WorkerPool.start(agg.address, bundles, schema.to_toml(), workers)
            try:
                idle = agg.snapshot("idle")
                time.sleep(_IDLE_S)
                start = agg.snapshot("start")
                pg_before = pg_counters(database)
                round_id = f"scale-{tag}-{uuid.uuid4().hex[:8]}"
                spec = OpenRoundSpec(
                    mode=Mode.SECAGG,
                    parties=names,
                    min_contributors=3,
                    phase_timeout_s=phase_timeout_s or 0,
                    schema_toml=schema.to_toml(),
                    round_id=round_id,
                )
                _say(f"n={n}: round {round_id} opens")
                t0 = time.time()
                _open_round(agg_dir, agg.address, spec)
                summaries, late = pool.run_round(round_id, round_timeout_s)
                parties_done = max((s["last_finish"] for s in summaries), default=math.nan) - t0
                states: Counter[str] = Counter()
                reasons: Counter[str] = Counter()
                rpcs: Counter[str] = Counter()
                accepted: Counter[str] = Counter()
                for s in summaries:
                    states.update(s["states"])
                    reasons.update(s["reasons"])
                    rpcs.update(s["rpcs"])
                    accepted.update(s["rpcs_ok"])
                complete = states.get(RoundState.COMPLETE.value, 0) == n
                sum_ok = False
                why = ""
                if complete:
                    report = _report(agg_dir, agg.address, round_id)
                    try:
                        _check_report(report, schema, vectors)
                        sum_ok = True
                    except Internal as exc:
                        why = f"released sum is wrong: {exc}"
                else:
                    why = "; ".join(f"{k} (x{v})" for k, v in reasons.most_common(3))
                if late:
                    why = (
                        f"{late} of {len(pool.conns)} workers still had parties in the round "
                        f"after {round_timeout_s:g} s (--round-timeout); {why}"
                    )
                round_s = time.time() - t0
                end = agg.snapshot("end")
                time.sleep(_STATS_SETTLE_S)
                pg_after = pg_counters(database)
                timeline = _timeline(url, agg_dir, round_id, t0)
            finally:
                pool.stop()
        final_log = (agg_dir / "bench-out" / "aggregator.log").read_text(errors="replace")
    # Accepted submissions: after an abort, calls that fail are not submissions. Without
    # every worker's summary (the round outlived --round-timeout), the store's inserts of
    # submissions count them instead.
    submissions = sum(v for k, v in accepted.items() if k in SUBMISSIONS)
    if late:
        submissions = _inserted_submissions(start, end)
    pg = _pg_delta(pg_before, pg_after)
    idle_rate = (start["statements"] - idle["statements"]) / max(1e-9, start["time"] - idle["time"])
    statements = end["statements"] - start["statements"]
    agg_cpu = end["cpu_s"] - start["cpu_s"]
    metrics: dict[str, float] = {
        "round_s": round_s,
        "parties_done_s": parties_done,
        "complete_ok": float(complete),
        "sum_ok": float(sum_ok),
        "agg_cpu_s": agg_cpu,
        "agg_cpu_per_1000_parties_s": 1000.0 * agg_cpu / n,
        "db_cpu_per_1000_parties_s": 1000.0 * pg["backend_cpu_s"] / n,
        "statements_per_submission": ratio(statements, submissions),
        "commits_per_submission": ratio(end["commits"] - start["commits"], submissions),
        "param_blob_bytes_per_submission": ratio(
            end["param_blob_bytes"] - start["param_blob_bytes"], submissions
        ),
        "wal_bytes_per_submission": ratio(pg["wal_bytes"], submissions),
        "db_growth_bytes_per_submission": ratio(pg["db_size"], submissions),
        "xact_per_submission": ratio(pg["xact_commit"], submissions),
        "agg_peak_rss_mib": end["vmhwm_kib"] / 1024.0,
        "agg_start_rss_mib": start["vmrss_kib"] / 1024.0,
        "submissions": float(submissions),
        "rpcs_per_party": ratio(sum(rpcs.values()), n),
        "statements": float(statements),
        "idle_statements_per_s": idle_rate,
        "other_db_commits": pg["other_db_commits"],
        "parties_cpu_s": float(sum(s["cpu_s"] for s in summaries)),
    }
    details[str(n)] = {
        "params": params,
        "round_id": round_id,
        "late_workers": late,
        "states": dict(states),
        "abort_reasons": dict(reasons),
        "rpcs": dict(rpcs),
        "pg_delta": pg,
        "top_statements": _top_statements(start, end, submissions),
        "timeline": timeline,
        "workers": summaries,
        "aggregator_errors": [
            line[:400] for line in final_log.splitlines() if "error" in line.lower()
        ][:20],
    }
    if not (complete and sum_ok):
        return Result(SCENARIO, "blindsum", params, metrics, skipped=f"round failed: {why}")
    return Result(SCENARIO, "blindsum", params, metrics)


def measure_sizes(
    sizes: Sequence[int],
    *,
    workers: int,
    phase_timeout_s: int | None = None,
    round_timeout_s: float = 3600.0,
    details: dict[str, Any] | None = None,
) -> list[Result]:
    """:func:`measure_size` for each n (one template, a fresh database and process each)."""
    why = pg_unavailable()
    if why is not None:
        return [skipped(SCENARIO, "blindsum", {"n": n, "m": LENGTH}, why) for n in sizes]
    details = {} if details is None else details
    results = []
    with tempfile.TemporaryDirectory(prefix="blindsum-scale-") as tmp:
        template = Template.create(Path(tmp))
        for n in sizes:
            try:
                result = measure_size(
                    template,
                    n,
                    workers=workers,
                    phase_timeout_s=phase_timeout_s,
                    round_timeout_s=round_timeout_s,
                    details=details,
                )
            except Exception as exc:
                _say(f"n={n} failed: {type(exc).__name__}: {exc}")
                result = skipped(
                    SCENARIO, "blindsum", {"n": n, "m": LENGTH}, f"{type(exc).__name__}: {exc}"
                )
            _say(f"n={n}: {format_table([result_row(result, KEY_METRICS)]).splitlines()[-1]}")
            results.append(result)
    return _with_ratios(results)


def _with_ratios(results: list[Result]) -> list[Result]:
    """Add each size's CPU per party and statements per submission relative to the
    smallest n that completed (``*_vs_smallest_ratio``), and the issue's n = 3,000 vs
    n = 300 CPU ratio on the n = 3,000 row."""
    done = {int(r.params["n"]): r for r in results if not r.skipped}
    if not done:
        return results
    base = done[min(done)]
    out = []
    for r in results:
        if r is base or r.skipped:
            out.append(r)
            continue
        metrics = dict(r.metrics)
        metrics["cpu_per_party_vs_smallest_ratio"] = ratio(
            metrics["agg_cpu_per_1000_parties_s"], base.metrics["agg_cpu_per_1000_parties_s"]
        )
        metrics["statements_vs_smallest_ratio"] = ratio(
            metrics["statements_per_submission"], base.metrics["statements_per_submission"]
        )
        if int(r.params["n"]) == 3000 and 300 in done:
            metrics["cpu_per_party_3000_vs_300_ratio"] = ratio(
                metrics["agg_cpu_per_1000_parties_s"],
                done[300].metrics["agg_cpu_per_1000_parties_s"],
            )
        out.append(replace(r, metrics=metrics))
    return out


# --------------------------------------------------------------------------- item 6: memory


def memory_run(
    rounds: int = 200,
    *,
    parties: int = 4,
    length: int = 16,
    early: int = 20,
    details: dict[str, Any] | None = None,
) -> Result:
    """Item 6: one aggregator process (SQLite store), ``rounds`` sequential secagg rounds
    of ``parties`` parties; its VmRSS after round ``early`` and after the last one.

    The parties are PartyNodes in this process (one channel each, kept across rounds, as
    daemons keep theirs); only the aggregator's memory is measured.
    """
    params = {"n": parties, "m": length, "mode": "secagg", "store": "sqlite", "rounds": rounds}
    details = {} if details is None else details
    schema = bench_schema(length)
    vectors = bench_vectors(schema, parties)
    with tempfile.TemporaryDirectory(prefix="blindsum-scale-mem-") as tmp:
        template = Template.create(Path(tmp))
        agg_dir = template.deploy("agg-mem", parties, "sqlite:///aggregator.sqlite")
        bundles = template.bundles[:parties]
        with aggregator(agg_dir, agg_dir / "bench-out") as agg:
            samples: list[tuple[int, float]] = []
            started = time.perf_counter()
            asyncio.run(
                _memory_rounds(agg, agg_dir, bundles, schema, vectors, rounds, samples, early)
            )
            seconds = time.perf_counter() - started
            peak = _status_kib(agg.proc.pid, "VmHWM") / 1024.0
    by_round = dict(samples)
    rss_early, rss_last = by_round.get(early, math.nan), by_round.get(rounds, math.nan)
    details["memory"] = {"params": params, "rss_mib_after_round": samples}
    metrics = {
        "rounds": float(rounds),
        "run_s": seconds,
        "round_mean_s": seconds / rounds,
        f"rss_after_{early}_mib": rss_early,
        f"rss_after_{rounds}_mib": rss_last,
        "agg_peak_rss_mib": peak,
        f"rss_{rounds}_vs_{early}_ratio": ratio(rss_last, rss_early),
        "target_ratio": TARGET_RSS_RATIO,
        "meets_target_ok": float(ratio(rss_last, rss_early) <= TARGET_RSS_RATIO),
    }
    return Result(MEMORY_SCENARIO, "blindsum", params, metrics)


async def _memory_rounds(
    agg: Aggregator,
    agg_dir: Path,
    bundles: Sequence[Path],
    schema: Any,
    vectors: Sequence[Any],
    rounds: int,
    samples: list[tuple[int, float]],
    early: int,
) -> None:

    nodes = [PartyNode(load_bundle(b), address=agg.address) for b in bundles]
    admin = admin_channel(agg_dir, agg.address)
    names = tuple(b.name for b in bundles)
    try:
        for i in range(1, rounds + 1):
            round_id = f"mem-{i:04d}-{uuid.uuid4().hex[:6]}"
            spec = OpenRoundSpec(
                mode=Mode.SECAGG,
                parties=names,
                min_contributors=3,
                phase_timeout_s=120,
                schema_toml=schema.to_toml(),
                round_id=round_id,
            )
            await admin_pb2_grpc.AdminServiceStub(admin).OpenRound(
                codec.open_round_to_pb(spec), timeout=_RPC_TIMEOUT_S
            )
            views = await asyncio.gather(
                *(
                    node.run_round(round_id, _fixed(v))
                    for node, v in zip(nodes, vectors, strict=True)
                )
            )
            for view in views:
                if view.state is not RoundState.COMPLETE:
                    raise Internal(f"round {i} {view.state.value}: {view.abort_reason}")
            message = await report_pb2_grpc.ReportServiceStub(admin).GetReport(
                common_pb2.RoundRef(round_id=round_id), timeout=_RPC_TIMEOUT_S
            )
            if i in (1, early, rounds):
                _check_report(codec.report_from_pb(message), schema, vectors)
            if i == 1 or i % 10 == 0 or i == early:
                samples.append((i, agg.vmrss_mib()))
                _say(f"memory: round {i}/{rounds}, aggregator VmRSS {samples[-1][1]:.1f} MiB")
    finally:
        for node in nodes:
            await node.close()
        await admin.close(None)


# --------------------------------------------------------------------------- entry points


def default_workers() -> int:
    """Worker processes for the parties: the usable cores, at least 2."""
    affinity = getattr(os, "sched_getaffinity", None)
    cores = len(affinity(0)) if affinity is not None else (os.cpu_count() or 2)
    return max(2, cores)


def write_details(
    results: Sequence[Result], details: dict[str, Any], out: Path, name: str = SCENARIO
) -> Path:
    """``bench/results/NAME.json``: the Results plus per-size details (top statements,
    timelines, abort reasons, worker summaries; the memory run's RSS curve)."""
    doc = {
        "machine": machine_info(),
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": [r.to_json() for r in results],
        "details": details,
    }
    path = out / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    tmp.replace(path)
    return path


def run(quick: bool) -> list[Result]:
    """Scenario ``scale`` for ``python -m bench``: n = 100 and 1,000 (quick), plus 300
    and 3,000 with ``--full``, at the aggregator's default phase timeout."""
    sizes = QUICK_SIZES if quick else FULL_SIZES
    details: dict[str, Any] = {}
    results = measure_sizes(sizes, workers=default_workers(), details=details)
    write_details(results, details, RESULTS_DIR)
    return results


def run_memory(quick: bool) -> list[Result]:
    """Scenario ``scale-memory`` for ``python -m bench``: 200 sequential rounds."""
    del quick  # the issue's 200 rounds either way
    details: dict[str, Any] = {}
    result = memory_run(details=details)
    write_details([result], details, RESULTS_DIR, MEMORY_SCENARIO)
    return [result]


def main(argv: Sequence[str]) -> int:
    """``python -m bench scale [--sizes 100,1000] [--full] [--workers W]
    [--phase-timeout S] [--memory [--rounds R]]``."""
    parser = argparse.ArgumentParser(prog="python -m bench scale")
    parser.add_argument("--sizes", default="", help="comma-separated n (default 100,1000)")
    parser.add_argument("--full", action="store_true", help="n = 100, 300, 1000, 3000")
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument(
        "--phase-timeout", type=int, default=None, help="seconds (default: the aggregator's)"
    )
    parser.add_argument("--round-timeout", type=float, default=3600.0)
    parser.add_argument("--memory", action="store_true", help="run the item-6 memory run only")
    parser.add_argument("--rounds", type=int, default=200, help="rounds of the memory run")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(list(argv))
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    details: dict[str, Any] = {}
    if args.memory:
        if args.rounds < 21:
            parser.error("--rounds must be more than 20")
        results = [memory_run(args.rounds, details=details)]
        path = write_details(results, details, args.out, MEMORY_SCENARIO)
    else:
        if args.sizes:
            try:
                sizes = tuple(int(s) for s in args.sizes.split(",") if s)
            except ValueError:
                parser.error("--sizes takes integers, e.g. 100,1000")
            if any(n < 3 for n in sizes):
                parser.error("every size must be at least 3")
        else:
            sizes = FULL_SIZES if args.full else QUICK_SIZES
        results = measure_sizes(
            sizes,
            workers=args.workers,
            phase_timeout_s=args.phase_timeout,
            round_timeout_s=args.round_timeout,
            details=details,
        )
        path = write_details(results, details, args.out)
    print(format_table([result_row(r, KEY_METRICS) for r in results]))
    for result in results:
        print(json.dumps(result.to_json(), sort_keys=True))
    print(f"wrote {path}")
    return 0


#: Headline metrics of this scenario's table rows.
KEY_METRICS = (
    "round_s",
    "agg_cpu_per_1000_parties_s",
    "statements_per_submission",
    "wal_bytes_per_submission",
    "agg_peak_rss_mib",
)
