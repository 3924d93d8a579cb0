"""Fault injection on the embedded default (issue 12, item 6): one `aggregator serve`
on SQLite, SIGKILLed at a random moment of each round and started again on the same
port while the parties keep retrying.

Issue 11's random-kill loop covers replicas on PostgreSQL; this is the single-process
deployment most people run. Every round must end COMPLETE with the exact total or
ABORTED with a reason; never released twice; the ledger charged once per release.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest_asyncio

from aggregator import config as cfgmod
from aggregator.adminclient import admin_call
from aggregator.store import Store, open_store
from blindsum import codec, reportdoc
from blindsum.bundle import load_bundle
from blindsum.config import dump_config
from blindsum.model import DpMode, DpSpec, Mode, OpenRoundSpec, RoundState, RoundView
from blindsum.types import U64Vector
from party.node import PartyNode
from tests.conftest import PARTIES, Deployment
from tests.integration.serve_process import start_serve, stop_serve
from tests.integration.test_rounds_grpc import assert_report_matches, party_vector, plain_sum

ROUNDS = 4
ROUND_TIMEOUT_S = 150.0
#: Short phases: a party that gave up costs the round at most this long per phase.
PHASE_TIMEOUT_S = 20


class Server:
    def __init__(self, deployment: Deployment, port: int) -> None:
        self.deployment = deployment
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = deployment.root / "serve.log"

    async def start(self) -> None:
        self.proc, _ = await start_serve(
            self.deployment.agg_dir, f"127.0.0.1:{self.port}", self.log
        )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        stop_serve(self.proc)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest_asyncio.fixture
async def server(deployment: Deployment) -> AsyncIterator[Server]:
    cfg = cfgmod.load(deployment.agg_dir)
    cfg = replace(cfg, rounds=replace(cfg.rounds, default_phase_timeout_s=PHASE_TIMEOUT_S))
    (deployment.agg_dir / cfgmod.CONFIG_NAME).write_text(dump_config(cfg))
    srv = Server(deployment, _free_port())
    await srv.start()
    try:
        yield srv
    finally:
        srv.stop()


async def _parties(
    srv: Server, round_id: str, vectors: dict[str, U64Vector]
) -> dict[str, RoundView | BaseException]:
    async def one(name: str) -> RoundView:
        bundle = load_bundle(srv.deployment.bundle(name))
        bundle = replace(bundle, config=replace(bundle.config, poll_interval_s=0.05))
        node = PartyNode(bundle, address=f"127.0.0.1:{srv.port}")
        try:
            return await node.run_round(round_id, lambda _schema, _window: vectors[name])
        finally:
            await node.close()

    results = await asyncio.wait_for(
        asyncio.gather(*(one(n) for n in vectors), return_exceptions=True),
        timeout=ROUND_TIMEOUT_S,
    )
    return dict(zip(vectors, results, strict=True))


async def _final(store: Store, round_id: str) -> str:
    deadline = time.monotonic() + ROUND_TIMEOUT_S
    while True:
        state = dict(await asyncio.to_thread(store.round_states))[round_id]
        if state != RoundState.OPEN.value:
            return state
        assert time.monotonic() < deadline, f"round {round_id} still open"
        await asyncio.sleep(0.1)


def _ok(result: RoundView | BaseException) -> bool:
    return isinstance(result, RoundView) and result.state is RoundState.COMPLETE


async def test_rounds_survive_random_kills_of_the_only_aggregator(server: Server) -> None:
    # BLINDSUM_KILL_SEED replays a failing run: the seed is in every assertion message.
    seed = int(os.environ.get("BLINDSUM_KILL_SEED") or int.from_bytes(os.urandom(4), "big"))
    rng = random.Random(seed)
    outcomes: list[tuple[str, str, str]] = []
    failures: list[str] = []
    for n in range(ROUNDS):
        spec = OpenRoundSpec(
            mode=rng.choice([Mode.SECAGG, Mode.HE]),
            parties=PARTIES,
            dp=DpSpec(mode=DpMode.CENTRAL, rho=0.1, campaign=f"kill-{n}", window="w1"),
        )
        info = await admin_call(
            server.deployment.agg_dir,
            "OpenRound",
            codec.open_round_to_pb(spec),
            connect_timeout_s=30,
        )
        round_id = str(info.round_id)
        vectors = {name: party_vector(i + n) for i, name in enumerate(PARTIES)}
        parties = asyncio.ensure_future(_parties(server, round_id, vectors))
        await asyncio.sleep(rng.uniform(0.0, 1.5))
        server.kill()
        await asyncio.sleep(rng.uniform(0.0, 1.0))
        await server.start()
        results = await parties
        store = open_store(
            "sqlite:///aggregator.sqlite", base_dir=server.deployment.agg_dir, readonly=True
        )
        try:
            state = await _final(store, round_id)
            rec = store.round(round_id)
            charged = [e.round_id for e in store.ledger(f"kill-{n}")]
            events = [e[2] for e in store.audit_log(round_id)]
            outcomes.append((spec.mode.value, state, rec.abort_reason))
            failures += [f"{n}/{p}: {r!r}" for p, r in results.items() if not _ok(r)]
            if state == RoundState.COMPLETE.value:
                report = reportdoc.decode(store.release(round_id), field="release")
                assert_report_matches(report, plain_sum(list(vectors.values())), noise_sds=6.0)
                assert charged == [round_id], f"seed {seed}"
            else:
                assert state == RoundState.ABORTED.value and rec.abort_reason, (seed, results)
                assert charged == [], f"seed {seed}"
            assert events.count("round_complete") + events.count("round_aborted") == 1, seed
        finally:
            store.close()
    # One process, killed once a round: the rounds must mostly survive it.
    assert sum(1 for _, s, _ in outcomes if s == RoundState.COMPLETE.value) >= ROUNDS - 1, (
        seed,
        outcomes,
        failures,
    )
