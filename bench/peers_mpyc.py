"""mpyc-sum: a secure sum of the same vectors in MPyC (the ``mpyc`` package) and in blindsum.

MPyC is a peer for small consortia: every party is an MPC server (honest majority,
Shamir shares over a prime field), so there is no aggregator, but every party talks to
every other. The realistic deployment is one process per party, so each MPyC run starts
n processes of a small script (:data:`PARTY_SCRIPT`, written to a temporary folder) that
talk over 127.0.0.1 only, on ports picked free just before the run. Each party inputs
its vector as a secure-integer array (``SecInt(64)``), all inputs are added, and the sum
is opened to everyone.

- ``wall_s``: from starting the n processes until the last one exits (Python and MPyC
  start-up, connecting, the sum, shutting down);
- ``mpc_s``: the slowest party's time from connected (``mpc.start()`` done) to holding
  the opened sum: the computation itself.

Beside it, blindsum's secagg round in one process (no network) on the same n vectors:
every party's and the server's compute one after the other (``round_s``), from the
commit phase to the server's finish, with the degree and threshold the aggregator would
choose (:func:`bench.secagg_core.make_config`). The vectors
hold values below 2^32, so MPyC's integer sum and blindsum's sum mod 2^64 agree; both
results are checked against numpy's sum.

MPyC binds its listening sockets to every interface (it takes no bind address); the
parties only ever connect to 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    Result,
    Stopwatch,
    format_table,
    package_version,
    parse_scenario_args,
    ratio,
    result_row,
    skipped,
)
from bench.secagg_core import make_config
from blindsum.crypto.sign import SigningKey
from blindsum.protocol.secagg import SecAggParty, SecAggServer
from blindsum.types import RandFn, U64Vector

SCENARIO = "mpyc-sum"
MPYC = "mpyc"
BLINDSUM = "blindsum"

#: Headline metrics of this scenario's table rows.
KEY_METRICS = ("mpc_s", "wall_s", "round_s", "party_mean_s", "server_s")

#: (parties, vector length) per mode.
QUICK_CASES: tuple[tuple[int, int], ...] = ((3, 4096), (5, 4096))
FULL_CASES: tuple[tuple[int, int], ...] = ((3, 4096), (5, 4096), (3, 16384), (5, 16384))
#: One MPyC run (all its processes) is cut off after this many seconds.
RUN_TIMEOUT_S = 240.0
#: Bit length of MPyC's secure integers: the inputs are below 2**32, sums of a few
#: parties stay far below 2**64.
SECINT_BITS = 64
INPUT_BITS = 32
_MARKER = "BENCH-MPYC-RESULT "

#: What each MPyC party runs: ``python party.py M SEED -P host:port ... -I i --no-log``.
#: A standalone script, so a party starts with numpy and MPyC only (not blindsum), and
#: importing ``mpyc.runtime`` there parses and strips MPyC's options from sys.argv.
#: Its input rule is :func:`party_vector`'s; the digest check catches any drift.
PARTY_SCRIPT = f"""\
import hashlib, json, sys, time
import numpy as np
from mpyc.runtime import mpc

M, SEED = int(sys.argv[1]), int(sys.argv[2])


async def main():
    secint = mpc.SecInt({SECINT_BITS})
    await mpc.start()
    start = time.perf_counter()
    rng = np.random.default_rng([SEED, mpc.pid])
    mine = rng.integers(0, 1 << {INPUT_BITS}, size=M, dtype=np.uint64)
    inputs = mpc.input(secint.array(mine.astype(np.int64)))
    total = inputs[0]
    for other in inputs[1:]:
        total = total + other
    opened = await mpc.output(total)
    seconds = time.perf_counter() - start
    await mpc.shutdown()
    result = np.array([int(v) for v in opened], dtype="<u8")
    digest = hashlib.sha256(result.tobytes()).hexdigest()
    doc = {{"pid": mpc.pid, "mpc_s": seconds, "digest": digest}}
    print("{_MARKER}" + json.dumps(doc), flush=True)


mpc.run(main())
"""


def party_vector(seed: int, party: int, m: int) -> U64Vector:
    """Party ``party``'s input: m values below 2**32 from a fixed seed (both systems)."""
    rng = np.random.default_rng([seed, party])
    vec: U64Vector = rng.integers(0, 1 << INPUT_BITS, size=m, dtype=np.uint64)
    return vec


def vector_digest(vec: U64Vector) -> str:
    """SHA-256 of a uint64 vector's little-endian bytes (how a party reports its sum)."""
    return hashlib.sha256(vec.astype("<u8").tobytes()).hexdigest()


def expected_sum(seed: int, n: int, m: int) -> U64Vector:
    """numpy's sum of the n inputs (mod 2**64, exact here)."""
    total = np.zeros(m, dtype=np.uint64)
    for party in range(n):
        total += party_vector(seed, party, m)
    return total


# --------------------------------------------------------------------------- MPyC run


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that were free a moment ago (held open together,
    so they differ; another process may still take one before MPyC binds it)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


@dataclass(frozen=True)
class MpcRun:
    """One MPyC run: wall seconds, the slowest party's protocol seconds, and the digest
    every party reported for the opened sum."""

    wall_s: float
    mpc_s: float
    digests: tuple[str, ...]


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def run_mpyc(
    script: Path, n: int, m: int, seed: int, *, timeout_s: float = RUN_TIMEOUT_S
) -> tuple[MpcRun | None, str]:
    """Start n MPyC parties running ``script`` (:data:`PARTY_SCRIPT`) on 127.0.0.1 and
    wait for them, or kill them all when ``timeout_s`` passes.

    Returns (run, "") or (None, why it failed).
    """
    ports = free_ports(n)
    addresses = [arg for port in ports for arg in ("-P", f"127.0.0.1:{port}")]
    procs: list[subprocess.Popen[bytes]] = []
    start = time.perf_counter()
    outputs: list[tuple[bytes, bytes]] = []
    try:
        for pid in range(n):
            argv = [sys.executable, str(script), str(m), str(seed)]
            argv += [*addresses, "-I", str(pid), "--no-log"]
            procs.append(
                subprocess.Popen(
                    argv,
                    cwd=script.parent,
                    env=dict(os.environ, PYTHONUNBUFFERED="1"),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                )
            )
        deadline = start + timeout_s
        for proc in procs:
            remaining = max(0.1, deadline - time.perf_counter())
            outputs.append(proc.communicate(timeout=remaining))
        wall = time.perf_counter() - start
    except subprocess.TimeoutExpired:
        return None, f"the {n} MPyC parties did not finish within {timeout_s:g}s"
    finally:
        for proc in procs:
            _kill_group(proc)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
    docs: list[dict[str, Any]] = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        lines = [x for x in out.decode("utf-8", "replace").splitlines() if x.startswith(_MARKER)]
        if proc.returncode != 0 or not lines:
            tail = " | ".join(err.decode("utf-8", "replace").strip().splitlines()[-2:])
            return None, f"an MPyC party failed (exit {proc.returncode}): {tail}"
        docs.append(json.loads(lines[-1][len(_MARKER) :]))
    return (
        MpcRun(
            wall_s=wall,
            mpc_s=max(float(d["mpc_s"]) for d in docs),
            digests=tuple(str(d["digest"]) for d in docs),
        ),
        "",
    )


# --------------------------------------------------------------------------- blindsum


@dataclass(frozen=True)
class SecaggRun:
    """blindsum's in-process round: total, mean per party, server, and the sum."""

    round_s: float
    party_mean_s: float
    server_s: float
    result: U64Vector


def blindsum_round(vectors: Sequence[U64Vector], rand: RandFn) -> SecaggRun:
    """One secagg round of len(vectors) parties, no dropouts, as the service drives it.

    Identity keys are made before the clock starts (they are enrolled once, not per
    round); everything from the first commitment to the server's finish is timed.
    """
    n, m = len(vectors), int(vectors[0].shape[0])
    config = make_config(n, m)
    identities = {p: SigningKey.generate(rand) for p in config.parties}
    verify_keys = {p: k.verify_key for p, k in identities.items()}
    parties = {p: SecAggParty(config, p, identities[p], rand) for p in config.parties}
    inputs = dict(zip(config.parties, vectors, strict=True))
    server = SecAggServer(config)
    party_sw, server_sw = Stopwatch(), Stopwatch()
    for p, party in parties.items():
        with party_sw.phase(p):
            commit = party.commit()
        with server_sw.phase("server"):
            server.add_commit(commit, verify_keys[p])
    with server_sw.phase("server"):
        server.close_commit()
        listed = server.commits()
    for p in server.committed:
        with party_sw.phase(p):
            advert = parties[p].advertise(listed, verify_keys)
        with server_sw.phase("server"):
            server.add_advert(advert, verify_keys[p])
    with server_sw.phase("server"):
        server.close_advertise()
        roster = server.roster()
    for p in server.u1:
        with party_sw.phase(p):
            shares = parties[p].share(roster)
        with server_sw.phase("server"):
            server.add_shares(p, shares)
    with server_sw.phase("server"):
        server.close_share()
    u2 = server.u2
    for p in u2:
        with server_sw.phase("server"):
            inbox = server.shares_for(p)
        with party_sw.phase(p):
            y = parties[p].mask(inbox, u2, inputs[p])
        with server_sw.phase("server"):
            server.add_masked(p, y)
    with server_sw.phase("server"):
        survivors, dropped = server.close_mask()
    for p in survivors:
        with party_sw.phase(p):
            sig = parties[p].sign_consistency(survivors, dropped)
        with server_sw.phase("server"):
            server.add_consistency(p, sig, verify_keys[p])
    with server_sw.phase("server"):
        server.close_consistency()
        published = server.consistency_signatures()
    for p in server.consistency_signers:
        with party_sw.phase(p):
            reveals = parties[p].unmask(survivors, dropped, published)
        with server_sw.phase("server"):
            server.add_reveals(p, reveals)
    with server_sw.phase("server"):
        result = server.finish()
    party_s = party_sw.total()
    server_s = server_sw.total()
    return SecaggRun(party_s + server_s, party_s / n, server_s, result)


# --------------------------------------------------------------------------- results


def measure(n: int, m: int, *, seed: int, repeat: int, mpyc_repeat: int) -> list[Result]:
    """MPyC and blindsum at (n, m) on the same vectors; best of the repeats for each."""
    params: dict[str, Any] = {"n": n, "m": m, "dropout": 0.0, "mode": "secagg"}
    vectors = [party_vector(seed, p, m) for p in range(n)]
    expected = vector_digest(expected_sum(seed, n, m))
    runs = [blindsum_round(vectors, secrets.token_bytes) for _ in range(max(1, repeat))]
    best = min(runs, key=lambda r: r.round_s)
    ours = Result(
        SCENARIO,
        BLINDSUM,
        {**params, "t": make_config(n, m).threshold},
        {
            "round_s": best.round_s,
            "party_mean_s": best.party_mean_s,
            "server_s": best.server_s,
            "sum_ok": float(all(vector_digest(r.result) == expected for r in runs)),
        },
    )
    if importlib.util.find_spec("mpyc") is None:
        return [skipped(SCENARIO, MPYC, params, "mpyc is not installed in this environment"), ours]
    done: list[MpcRun] = []
    why = ""
    with tempfile.TemporaryDirectory(prefix="bench-mpyc-") as tmp:
        script = Path(tmp) / "party.py"
        script.write_text(PARTY_SCRIPT, encoding="utf-8")
        for _ in range(max(1, mpyc_repeat)):
            got, why = run_mpyc(script, n, m, seed)
            if got is None:  # one retry: a port may be taken between picking and binding
                got, why = run_mpyc(script, n, m, seed)
            if got is None:
                break
            done.append(got)
    if not done:
        return [skipped(SCENARIO, MPYC, params, why), ours]
    mpc_s = min(r.mpc_s for r in done)
    wall_s = min(r.wall_s for r in done)
    theirs = Result(
        SCENARIO,
        MPYC,
        # MPyC tolerates (n - 1) // 2 corrupt parties; (n - 1) // 2 + 1 shares open a value.
        {**params, "mpyc_threshold": (n - 1) // 2, "mpyc": package_version("mpyc") or "?"},
        {
            "mpc_s": mpc_s,
            "wall_s": wall_s,
            "sum_ok": float(all(d == expected for r in done for d in r.digests)),
            "mpc_vs_blindsum_ratio": ratio(mpc_s, best.round_s),
            "wall_vs_blindsum_ratio": ratio(wall_s, best.round_s),
        },
    )
    return [theirs, ours]


def run_cases(
    cases: Sequence[tuple[int, int]],
    *,
    repeat: int,
    mpyc_repeat: int,
    progress: Callable[[str], None] | None = None,
) -> list[Result]:
    """Every (n, m) case in order."""
    results: list[Result] = []
    for i, (n, m) in enumerate(cases):
        if progress is not None:
            progress(f"{SCENARIO}: n={n} m={m}")
        results += measure(n, m, seed=700 + i, repeat=repeat, mpyc_repeat=mpyc_repeat)
    return results


def _progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def run(quick: bool) -> list[Result]:
    """3 and 5 parties at m = 4096 (quick), and also at m = 16384 (full)."""
    if quick:
        return run_cases(QUICK_CASES, repeat=3, mpyc_repeat=1, progress=_progress)
    return run_cases(FULL_CASES, repeat=5, mpyc_repeat=3, progress=_progress)


def main(argv: Sequence[str]) -> int:
    """``python -m bench mpyc [--parties N] [--length M] [--full]``."""
    args = parse_scenario_args(argv, "python -m bench mpyc")
    if args.dropout:
        print("mpyc-sum has no dropouts (--dropout 0)", file=sys.stderr)
        return 2
    if args.mode not in (None, "secagg"):
        print("mpyc-sum compares with secagg only", file=sys.stderr)
        return 2
    if args.parties is None and args.length is None:
        results = run(quick=not args.full)
    else:
        n = args.parties or 3
        if n < 3:
            print("MPyC's honest majority needs at least 3 parties", file=sys.stderr)
            return 2
        results = run_cases([(n, args.length or 4096)], repeat=3, mpyc_repeat=1, progress=_progress)
    print(format_table([result_row(r, KEY_METRICS) for r in results]))
    return 0
