"""The aggregator on a real PostgreSQL server survives its database: dropped
connections are replaced, and while the database is away gRPC health says
NOT_SERVING, calls answer UNAVAILABLE, and no round is aborted for it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aggregator.service import RunningAggregator, start_aggregator
from blindsum.bundle import load_bundle
from blindsum.model import Mode, OpenRoundSpec, RoundState, RoundView
from blindsum.rpc.v1 import common_pb2, round_pb2_grpc
from blindsum.transport.tls import secure_channel
from tests.conftest import (
    PARTIES,
    STEPPED,
    Deployment,
    SteppedClock,
    on_postgres,
    pg_allow_connections,
    pg_terminate,
)
from tests.integration.test_rounds_grpc import party_vector, plain_sum, run_parties

pytestmark = pytest.mark.postgres

#: Bounded waits for the ticker (0.05 s per tick in the test deployment).
POLL_S = 0.05
POLLS = 400


@pytest_asyncio.fixture
async def pg_aggregator(deployment: Deployment, pg_url: str) -> AsyncIterator[RunningAggregator]:
    """The test deployment's aggregator, serving from a PostgreSQL database of its own
    (the parties enrolled in its SQLite store are copied over)."""
    cfg = on_postgres(deployment, pg_url)
    clock = SteppedClock()
    running = await start_aggregator(
        deployment.agg_dir,
        listen="127.0.0.1:0",
        config=cfg,
        clock_ms=clock,
    )
    STEPPED[running.port] = (running.manager, clock)
    try:
        yield running
    finally:
        STEPPED.pop(running.port, None)
        await running.stop(grace=None)


def _database(url: str) -> str:
    return url.rsplit("/", 1)[1]


async def _health(channel: grpc.aio.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    return int(reply.status)


async def test_a_dropped_database_connection_is_replaced(
    deployment: Deployment, pg_aggregator: RunningAggregator, pg_url: str
) -> None:
    """pg_terminate_backend of every aggregator connection (what a database restart or
    failover does): the next calls reconnect, and a whole round then completes exactly."""
    manager = pg_aggregator.manager
    view = await manager.open_round(OpenRoundSpec(mode=Mode.SECAGG, parties=PARTIES))
    pg_terminate(_database(pg_url))
    assert [v.round_id for v in manager.list_rounds()] == [view.round_id]
    vectors = {n: party_vector(i) for i, n in enumerate(PARTIES)}
    pg_terminate(_database(pg_url))
    results = await run_parties(deployment, pg_aggregator.port, view.round_id, vectors)
    assert all(
        isinstance(r, RoundView) and r.state is RoundState.COMPLETE for r in results.values()
    )
    report = manager.report(view.round_id)
    assert report.included_parties == PARTIES
    assert plain_sum(list(vectors.values())) is not None


async def test_health_follows_the_database_and_no_round_is_aborted_for_it(
    deployment: Deployment, pg_aggregator: RunningAggregator, pg_url: str
) -> None:
    name = _database(pg_url)
    manager = pg_aggregator.manager
    view = await manager.open_round(OpenRoundSpec(mode=Mode.SECAGG, parties=PARTIES))
    # A reader's certificate: its role is not looked up in the store, so the answer is
    # the health status itself (a party's call answers UNAVAILABLE, below).
    bundle = load_bundle(deployment.reader)
    party = load_bundle(deployment.bundle("team-a"))
    party_channel = secure_channel(
        f"127.0.0.1:{pg_aggregator.port}",
        party.tls,
        party.ca_cert_pem,
        server_name=party.config.server_name,
    )
    channel = secure_channel(
        f"127.0.0.1:{pg_aggregator.port}",
        bundle.tls,
        bundle.ca_cert_pem,
        server_name=bundle.config.server_name,
    )
    try:
        assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING
        pg_allow_connections(name, False)
        pg_terminate(name)
        for _ in range(POLLS):
            if await _health(channel) == health_pb2.HealthCheckResponse.NOT_SERVING:
                break
            await asyncio.sleep(POLL_S)
        assert await _health(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
        # A party's call gets UNAVAILABLE (which it retries), not INTERNAL.
        stub = round_pb2_grpc.RoundServiceStub(party_channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetRound(common_pb2.RoundRef(round_id=view.round_id), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "database" in (err.value.details() or "")

        pg_allow_connections(name, True)
        for _ in range(POLLS):
            if await _health(channel) == health_pb2.HealthCheckResponse.SERVING:
                break
            await asyncio.sleep(POLL_S)
        assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING
        info = await stub.GetRound(common_pb2.RoundRef(round_id=view.round_id), timeout=10)
        assert info.state == common_pb2.ROUND_STATE_OPEN
        assert manager.view(view.round_id).state is RoundState.OPEN
    finally:
        await channel.close(None)
        await party_channel.close(None)
