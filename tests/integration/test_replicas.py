"""Two aggregator replicas serving one round from one PostgreSQL database: parties may
use either, only the replica holding the round's lease closes phases, and the round
completes exactly once with the exact total."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
import pytest_asyncio

from aggregator.service import RunningAggregator, start_aggregator
from aggregator.store import StaleRound, now_ms
from blindsum.model import DpMode, DpSpec, Mode, OpenRoundSpec, RoundState, RoundView
from blindsum.types import U64Vector
from tests.conftest import PARTIES, Deployment, on_postgres
from tests.integration.test_rounds_grpc import (
    assert_report_matches,
    party_vector,
    plain_sum,
    run_parties,
)

pytestmark = pytest.mark.postgres


@pytest_asyncio.fixture
async def replicas(
    deployment: Deployment, pg_url: str
) -> AsyncIterator[tuple[RunningAggregator, RunningAggregator]]:
    cfg = on_postgres(deployment, pg_url)
    a = await start_aggregator(deployment.agg_dir, listen="127.0.0.1:0", config=cfg)
    b = await start_aggregator(deployment.agg_dir, listen="127.0.0.1:0", config=cfg)
    try:
        yield a, b
    finally:
        await a.stop(grace=None)
        await b.stop(grace=None)


def _spec() -> OpenRoundSpec:
    return OpenRoundSpec(mode=Mode.SECAGG, parties=PARTIES, dp=DpSpec(mode=DpMode.CENTRAL))


async def _split_and_complete(
    deployment: Deployment,
    replicas: tuple[RunningAggregator, RunningAggregator],
    round_id: str,
    vectors: dict[str, U64Vector],
) -> None:
    """Every other party on replica A, the rest on B; every party sees the round complete."""
    a, b = replicas
    on_a = {n: v for i, (n, v) in enumerate(vectors.items()) if i % 2 == 0}
    on_b = {n: v for n, v in vectors.items() if n not in on_a}
    results = await asyncio.gather(
        run_parties(deployment, a.port, round_id, on_a, expire_gone=False),
        run_parties(deployment, b.port, round_id, on_b, expire_gone=False),
    )
    for part in results:
        assert all(
            isinstance(r, RoundView) and r.state is RoundState.COMPLETE for r in part.values()
        ), part


async def test_parties_split_across_two_replicas_complete_one_round(
    deployment: Deployment, replicas: tuple[RunningAggregator, RunningAggregator]
) -> None:
    """Before issue 11 this round aborted at the deadline: each replica counted only its
    own adverts."""
    a, b = replicas
    view = await a.manager.open_round(_spec())
    vectors = {n: party_vector(i) for i, n in enumerate(PARTIES)}
    await _split_and_complete(deployment, replicas, view.round_id, vectors)
    # Either replica serves the one release, and the ledger was charged once.
    report = b.manager.report(view.round_id)
    assert report == a.manager.report(view.round_id)
    assert_report_matches(report, plain_sum(list(vectors.values())), noise_sds=6.0)
    ledger = [e for e in a.store.ledger(report.dp.campaign) if e.round_id == view.round_id]
    assert len(ledger) == 1


async def test_an_idle_replica_never_aborts_a_round_the_other_drives(
    deployment: Deployment, replicas: tuple[RunningAggregator, RunningAggregator]
) -> None:
    """Before issue 11 the idle replica's stale cache made its ticker abort the round
    ("cannot close share in stage advertise") 147 ms after the busy one moved it."""
    a, b = replicas
    view = await a.manager.open_round(_spec())
    vectors = {n: party_vector(i) for i, n in enumerate(PARTIES)}
    results = await run_parties(deployment, a.port, view.round_id, vectors, expire_gone=False)
    assert all(
        isinstance(r, RoundView) and r.state is RoundState.COMPLETE for r in results.values()
    )
    final = b.manager.view(view.round_id)
    assert final.state is RoundState.COMPLETE and final.abort_reason == ""


async def test_a_killed_replica_s_rounds_are_finished_by_another(
    deployment: Deployment, pg_url: str
) -> None:
    """Replica A holds the round's lease and dies without giving it back (its tasks and
    server stop; its leases stay). Replica B takes the lease over once it lapses, with a
    larger fencing token, and finishes the round exactly; A's old token can no longer
    write."""
    cfg = on_postgres(deployment, pg_url)
    cfg = replace(cfg, rounds=replace(cfg.rounds, lease_ttl_s=1.0))
    a = await start_aggregator(deployment.agg_dir, listen="127.0.0.1:0", config=cfg)
    b = await start_aggregator(deployment.agg_dir, listen="127.0.0.1:0", config=cfg)
    try:
        view = await a.manager.open_round(_spec())
        # A takes the lease before any ticker runs (no await in between).
        rec = a.store.round(view.round_id)
        a_token = a.store.acquire_lease(view.round_id, a.manager.replica, now=now_ms(), ttl_ms=1000)
        assert a_token is not None
        # "Kill" A: no more ticks, no more calls, and its lease is not handed back.
        for task in a.tasks:
            task.cancel()
        await a.server.stop(None)
        vectors = {n: party_vector(i) for i, n in enumerate(PARTIES)}
        results = await run_parties(deployment, b.port, view.round_id, vectors, expire_gone=False)
        assert all(
            isinstance(r, RoundView) and r.state is RoundState.COMPLETE for r in results.values()
        )
        assert_report_matches(
            b.manager.report(view.round_id), plain_sum(list(vectors.values())), noise_sds=6.0
        )
        # Fencing: A, waking up with its old token, cannot write the round.
        with pytest.raises(StaleRound):
            a.store.update_round(
                replace(b.store.round(view.round_id), phase="share"),
                lease=(a.manager.replica, a_token),
            )
        assert rec.state == "open"
    finally:
        await a.stop(grace=None)
        await b.stop(grace=None)


async def test_an_he_round_split_across_two_replicas_sums_every_ciphertext(
    deployment: Deployment, replicas: tuple[RunningAggregator, RunningAggregator]
) -> None:
    """Before issue 11 each he submission rewrote one running-sum row, so two replicas
    accepting ciphertexts overwrote each other's sums. Now each ciphertext is stored on
    its own and the lease holder sums them all when the phase closes."""
    a = replicas[0]
    view = await a.manager.open_round(OpenRoundSpec(mode=Mode.HE, parties=PARTIES))
    vectors = {n: party_vector(10 + i) for i, n in enumerate(PARTIES)}
    await _split_and_complete(deployment, replicas, view.round_id, vectors)
    report = a.manager.report(view.round_id)
    assert report.included_parties == PARTIES
    assert_report_matches(report, plain_sum(list(vectors.values())))
    # No running-sum row was written: the ciphertexts are the only copy of the inputs.
    assert a.store.accumulator(view.round_id) is None
