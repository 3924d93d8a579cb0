"""Three aggregator replicas as real processes on one PostgreSQL database.

Parties reach the replicas the way they would behind a Kubernetes Service: each party's
channel lists all three addresses (starting at a different one, so the parties spread
round-robin) and moves to the next when its replica dies. A replica is killed with
SIGKILL: no graceful stop, its leases stay behind until they lapse.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import pytest_asyncio

from aggregator import config as cfgmod
from aggregator.adminclient import admin_call
from aggregator.store import Store, open_store
from blindsum import codec, reportdoc
from blindsum.bundle import load_bundle
from blindsum.config import dump_config
from blindsum.model import DpMode, DpSpec, Mode, OpenRoundSpec, Report, RoundState, RoundView
from blindsum.types import U64Vector
from party.node import PartyNode
from tests.conftest import PARTIES, Deployment, on_postgres
from tests.integration.serve_process import start_serve, stop_serve
from tests.integration.test_rounds_grpc import assert_report_matches, party_vector, plain_sum

pytestmark = pytest.mark.postgres

REPLICAS = 3
#: Bounds on every wait, so a broken build fails instead of hanging CI.
START_TIMEOUT_S = 60.0
ROUND_TIMEOUT_S = 150.0
#: Short leases, so a killed holder's rounds move on after about this long.
LEASE_TTL_S = 1.5


@dataclass
class Replica:
    directory: Path
    log: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None


@dataclass
class Cluster:
    replicas: list[Replica]
    store: Store
    deployment: Deployment
    killed: list[int] = field(default_factory=list)

    def addresses(self, first: int) -> str:
        """A gRPC target listing every replica, starting at replica ``first``."""
        ports = [r.port for r in self.replicas]
        ports = ports[first:] + ports[:first]
        return "ipv4:" + ",".join(f"127.0.0.1:{p}" for p in ports)

    async def start(self, i: int) -> None:
        rep = self.replicas[i]
        rep.proc, rep.port = await start_serve(rep.directory, f"127.0.0.1:{rep.port}", rep.log)

    def kill(self, i: int) -> None:
        proc = self.replicas[i].proc
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        self.killed.append(i)

    def pid_index(self, pid: int) -> int | None:
        for i, rep in enumerate(self.replicas):
            if rep.proc is not None and rep.proc.pid == pid and rep.proc.poll() is None:
                return i
        return None

    def stop_all(self) -> None:
        for rep in self.replicas:  # all signalled first, so they stop side by side
            if rep.proc is not None and rep.proc.poll() is None:
                rep.proc.send_signal(signal.SIGTERM)
        for rep in self.replicas:
            stop_serve(rep.proc)


@pytest_asyncio.fixture
async def cluster(deployment: Deployment, pg_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    cfg = on_postgres(deployment, pg_url)
    store = open_store(pg_url)
    cfg = replace(
        cfg,
        rounds=replace(cfg.rounds, lease_ttl_s=LEASE_TTL_S, default_phase_timeout_s=30),
        server=replace(cfg.server, tick_interval_s=0.1),
        # As in deploy/k8s/aggregator.yaml: replicas run secagg rounds, no custodian.
        custodian=replace(cfg.custodian, embedded=False, address=""),
    )
    replicas = []
    for i in range(REPLICAS):
        # Each replica has its own copy of the directory (as each pod has its own
        # volume with the same certificates): only the database is shared.
        directory = tmp_path / f"replica-{i}"
        await asyncio.to_thread(_copy_tree, deployment.agg_dir, directory)
        (directory / cfgmod.CONFIG_NAME).write_text(dump_config(cfg))
        replicas.append(Replica(directory=directory, log=tmp_path / f"replica-{i}.log"))
    c = Cluster(replicas=replicas, store=store, deployment=deployment)
    try:
        for i in range(REPLICAS):
            await c.start(i)
        yield c
    finally:
        c.stop_all()
        store.close()


def _copy_tree(src: Path, dst: Path) -> None:
    import shutil

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.sqlite*", cfgmod.ADDRESS_FILE))


async def _open(c: Cluster, spec: OpenRoundSpec) -> str:
    live = next(r for r in c.replicas if r.proc is not None and r.proc.poll() is None)
    info = await admin_call(
        live.directory, "OpenRound", codec.open_round_to_pb(spec), connect_timeout_s=30
    )
    return str(info.round_id)


async def _run_parties(
    c: Cluster, round_id: str, vectors: Mapping[str, U64Vector]
) -> dict[str, RoundView | BaseException]:
    async def one(index: int, name: str) -> RoundView:
        bundle = load_bundle(c.deployment.bundle(name))
        bundle = replace(bundle, config=replace(bundle.config, poll_interval_s=0.05))
        node = PartyNode(bundle, address=c.addresses(index % REPLICAS))
        try:
            return await node.run_round(round_id, lambda _schema, _window: vectors[name])
        finally:
            await node.close()

    names = list(vectors)
    results = await asyncio.wait_for(
        asyncio.gather(*(one(i, n) for i, n in enumerate(names)), return_exceptions=True),
        timeout=ROUND_TIMEOUT_S,
    )
    return dict(zip(names, results, strict=True))


async def _final(c: Cluster, round_id: str) -> str:
    """The round's state once it closed (bounded wait)."""
    deadline = time.monotonic() + ROUND_TIMEOUT_S
    while True:
        rec = await asyncio.to_thread(c.store.round, round_id)
        if rec.state != RoundState.OPEN.value:
            return rec.state
        assert time.monotonic() < deadline, f"round {round_id} still open in {rec.phase}"
        await asyncio.sleep(0.1)


def _report(c: Cluster, round_id: str) -> Report:
    return reportdoc.decode(c.store.release(round_id), field="release")


def _audit_count(c: Cluster, round_id: str, event: str) -> int:
    return sum(1 for e in c.store.audit_log(round_id) if e[2] == event)


def _spec(campaign: str) -> OpenRoundSpec:
    # rho 0.1: eleven rounds stay inside each party's own budget per week (2 in the
    # test bundles), which the parties enforce themselves.
    return OpenRoundSpec(
        mode=Mode.SECAGG,
        parties=PARTIES,
        dp=DpSpec(mode=DpMode.CENTRAL, rho=0.1, campaign=campaign, window="w1"),
    )


async def test_three_replicas_round_robin_and_a_killed_holder(cluster: Cluster) -> None:
    """The parties spread over three replicas; once the round is past its first phases,
    the replica holding the round's lease is SIGKILLed. The other two finish the round:
    one release, the exact total (within the DP noise), one ledger charge."""
    c = cluster
    round_id = await _open(c, _spec("kill-holder"))
    vectors = {n: party_vector(i) for i, n in enumerate(PARTIES)}
    parties = asyncio.ensure_future(_run_parties(c, round_id, vectors))
    # Wait for the round to reach the share phase, then kill whoever drives it.
    deadline = time.monotonic() + ROUND_TIMEOUT_S
    victim = None
    while victim is None:
        assert time.monotonic() < deadline and not parties.done(), "round never reached share"
        rec = await asyncio.to_thread(c.store.round, round_id)
        lease = await asyncio.to_thread(_lease_holder, c.store, round_id)
        if rec.phase in ("share", "mask") and lease is not None:
            victim = c.pid_index(int(lease.split("-")[-2]))
        await asyncio.sleep(0.02)
    c.kill(victim)
    results = await parties
    assert all(
        isinstance(r, RoundView) and r.state is RoundState.COMPLETE for r in results.values()
    ), results
    assert await _final(c, round_id) == RoundState.COMPLETE.value
    assert_report_matches(_report(c, round_id), plain_sum(list(vectors.values())), noise_sds=6.0)
    assert _audit_count(c, round_id, "round_complete") == 1
    assert [e.round_id for e in c.store.ledger("kill-holder")] == [round_id]
    # The lease moved to a live replica with a larger fencing token.
    holder = _lease_holder(c.store, round_id)
    assert holder is not None and c.pid_index(int(holder.split("-")[-2])) != victim


def _lease_holder(store: Store, round_id: str) -> str | None:
    row = store._exec("SELECT holder FROM round_leases WHERE round_id = ?", (round_id,)).fetchone()
    return None if row is None or not row[0] else str(row[0])


async def test_ten_rounds_with_random_kills_end_complete_or_aborted_never_twice(
    cluster: Cluster,
) -> None:
    """A bounded loop: in each of 10 rounds one random replica is SIGKILLed at a random
    moment and started again. Every round ends COMPLETE with the exact total (within
    the DP noise) or ABORTED with a reason; a round is never released twice; the budget
    ledger is charged once per released round and never for an aborted one."""
    c = cluster
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    outcomes: list[tuple[str, str]] = []
    for n in range(10):
        round_id = await _open(c, _spec(f"loop-{n}"))
        vectors = {name: party_vector(i + n) for i, name in enumerate(PARTIES)}
        parties = asyncio.ensure_future(_run_parties(c, round_id, vectors))
        victim = rng.randrange(REPLICAS)
        await asyncio.sleep(rng.uniform(0.0, 2.0))
        c.kill(victim)
        await asyncio.sleep(rng.uniform(0.0, 1.0))
        await c.start(victim)
        refused = {name: r for name, r in (await parties).items() if not isinstance(r, RoundView)}
        state = await _final(c, round_id)
        rec = c.store.round(round_id)
        outcomes.append((state, rec.abort_reason or repr(refused)[:300]))
        charged = [e.round_id for e in c.store.ledger(f"loop-{n}")]
        if state == RoundState.COMPLETE.value:
            assert_report_matches(
                _report(c, round_id), plain_sum(list(vectors.values())), noise_sds=6.0
            )
            assert _audit_count(c, round_id, "round_complete") == 1, f"seed {seed}"
            assert charged == [round_id], f"seed {seed}"
        else:
            assert state == RoundState.ABORTED.value and rec.abort_reason, f"seed {seed}"
            assert _audit_count(c, round_id, "round_complete") == 0, f"seed {seed}"
            assert charged == [], f"seed {seed}"
        assert (
            _audit_count(c, round_id, "round_aborted") + _audit_count(c, round_id, "round_complete")
            == 1
        ), f"seed {seed}"
    # Killing one replica of three must not cost rounds: most complete.
    assert sum(1 for s, _ in outcomes if s == RoundState.COMPLETE.value) >= 8, (seed, outcomes)
