"""The plain-HTTP probes of a real aggregator (``[metrics] listen``): /healthz while
it runs, /readyz while its store answers (the same signal as gRPC health) and its
remote custodian is reachable."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aggregator import config as cfgmod
from aggregator.service import HE_SERVICE, RunningAggregator, start_aggregator, start_custodian
from blindsum.bundle import load_bundle
from blindsum.errors import ConfigError
from blindsum.transport.tls import secure_channel
from tests.conftest import Deployment, on_postgres, pg_allow_connections, pg_terminate
from tests.unit.test_probes import get

#: Bounded waits for the ticker (0.05 s per tick in the test deployment) and for the
#: custodian channel's reconnect backoff; no test measures time.
POLL_S = 0.05
POLLS = 600


def _with_probes(cfg: cfgmod.AggregatorConfig) -> cfgmod.AggregatorConfig:
    return replace(cfg, metrics=cfgmod.MetricsSection(listen="127.0.0.1:0"))


def _probe_port(running: RunningAggregator) -> int:
    assert running.probes is not None
    return running.probes.port


async def _until(port: int, path: str, status: int) -> tuple[int, bytes]:
    """GET ``path`` until it answers ``status`` (bounded); the last answer."""
    answer = await get(port, path)
    for _ in range(POLLS):
        if answer[0] == status:
            break
        await asyncio.sleep(POLL_S)
        answer = await get(port, path)
    return answer


async def test_probes_answer_and_stop_with_the_aggregator(deployment: Deployment) -> None:
    cfg = _with_probes(cfgmod.load(deployment.agg_dir))
    running = await start_aggregator(deployment.agg_dir, listen="127.0.0.1:0", config=cfg)
    port = _probe_port(running)
    try:
        assert port != running.port
        assert await get(port, "/healthz") == (200, b"ok\n")
        assert await get(port, "/readyz") == (200, b"ok\n")
        status, body = await get(port, "/metrics")  # issue 13: the same port
        assert status == 200 and b"blindsum_build_info" in body
    finally:
        await running.stop(grace=None)
    assert running.readiness.problem() == "stopping"
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_no_probe_server_unless_configured(deployment: Deployment) -> None:
    running = await start_aggregator(deployment.agg_dir, listen="127.0.0.1:0")
    try:
        assert running.probes is None
    finally:
        await running.stop(grace=None)


async def test_a_malformed_metrics_listen_starts_nothing(deployment: Deployment) -> None:
    cfg = cfgmod.load(deployment.agg_dir)
    bad = replace(cfg, metrics=cfgmod.MetricsSection(listen="localhost"))
    with pytest.raises(ConfigError) as excinfo:
        await start_aggregator(deployment.agg_dir, listen="127.0.0.1:0", config=bad)
    assert "metrics.listen" in excinfo.value.message
    # Nothing was left holding the SQLite store: a good config starts at once.
    running = await start_aggregator(deployment.agg_dir, listen="127.0.0.1:0")
    await running.stop(grace=None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_readyz_follows_a_remote_custodian(deployment: Deployment) -> None:
    """An aggregator whose custodian runs apart is not ready while the custodian cannot
    be reached, and is again once it can."""
    cfg = cfgmod.load(deployment.agg_dir)
    custodian_port = _free_port()
    remote = replace(
        _with_probes(cfg),
        custodian=replace(cfg.custodian, embedded=False, address=f"127.0.0.1:{custodian_port}"),
    )
    running = await start_aggregator(deployment.agg_dir, listen="127.0.0.1:0", config=remote)
    port = _probe_port(running)
    custodian = None
    bundle = load_bundle(deployment.reader)
    channel = secure_channel(f"127.0.0.1:{running.port}", bundle.tls, bundle.ca_cert_pem)
    health = health_pb2_grpc.HealthStub(channel)

    async def status(service: str) -> int:
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        return int(reply.status)

    async def he_until(wanted: int) -> int:
        for _ in range(POLLS):
            if await status(HE_SERVICE) == wanted:
                break
            await asyncio.sleep(POLL_S)
        return await status(HE_SERVICE)

    serving, not_serving = (
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    )
    try:
        assert await _until(port, "/readyz", 503) == (503, b"custodian unreachable\n")
        assert await get(port, "/healthz") == (200, b"ok\n")
        # gRPC health per service (issue 13): he rounds are not served, secagg ones are.
        assert await he_until(not_serving) == not_serving
        assert await status("blindsum.rpc.v1.RoundService") == serving
        server, _, custodian = await start_custodian(
            deployment.agg_dir, cfg, f"127.0.0.1:{custodian_port}"
        )
        try:
            assert await _until(port, "/readyz", 200) == (200, b"ok\n")
            assert await he_until(serving) == serving
        finally:
            await server.stop(None)
    finally:
        await channel.close(None)
        await running.stop(grace=None)
        if custodian is not None:
            custodian.store.close()


# -- PostgreSQL: the store goes away and comes back --------------------------------------


@pytest_asyncio.fixture
async def pg_probed(deployment: Deployment, pg_url: str) -> AsyncIterator[RunningAggregator]:
    """The test deployment's aggregator on a PostgreSQL database of its own, with the
    probe server on 127.0.0.1, port 0."""
    cfg = on_postgres(deployment, pg_url)
    running = await start_aggregator(
        deployment.agg_dir,
        listen="127.0.0.1:0",
        config=_with_probes(cfg),
    )
    try:
        yield running
    finally:
        await running.stop(grace=None)


@pytest.mark.postgres
async def test_readyz_follows_the_database(pg_probed: RunningAggregator, pg_url: str) -> None:
    name = pg_url.rsplit("/", 1)[1]
    port = _probe_port(pg_probed)
    assert await get(port, "/healthz") == (200, b"ok\n")
    assert await get(port, "/readyz") == (200, b"ok\n")

    pg_allow_connections(name, False)
    pg_terminate(name)
    assert await _until(port, "/readyz", 503) == (503, b"store unavailable\n")
    # Alive all along: a store outage must not get the pod restarted.
    assert await get(port, "/healthz") == (200, b"ok\n")

    pg_allow_connections(name, True)
    assert await _until(port, "/readyz", 200) == (200, b"ok\n")
