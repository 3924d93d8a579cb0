"""The plain-HTTP probe server (aggregator/probes.py) on its own: address parsing,
routes, methods, and the bounds on what a client may send."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio

from aggregator.probes import (
    MAX_HEADERS,
    MAX_LINE,
    CustodianWatch,
    ProbeServer,
    Readiness,
    Response,
    parse_listen,
)
from blindsum.errors import ConfigError, Unavailable


async def exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``raw`` to 127.0.0.1:``port``; the status, headers and body of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("ascii").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(": ")
        headers[name.lower()] = value
    return int(status_line.split(" ")[1]), headers, body


async def get(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    status, _, body = await exchange(
        port, f"{method} {path} HTTP/1.1\r\nHost: probe\r\n\r\n".encode("ascii")
    )
    return status, body


@pytest_asyncio.fixture
async def probes() -> AsyncIterator[ProbeServer]:
    server = ProbeServer("127.0.0.1", 0, Readiness())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


# -- [metrics] listen -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", None),
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("localhost:9464", ("localhost", 9464)),
        ("[::1]:9464", ("::1", 9464)),
    ],
)
def test_listen_addresses_that_parse(value: str, expected: tuple[str, int] | None) -> None:
    assert parse_listen(value) == expected


@pytest.mark.parametrize(
    "value",
    ["9464", ":9464", "127.0.0.1", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:70000",
     "::1:9464", "[::1:9464", "[nothost]:9464", " 127.0.0.1:9464", "127.0.0.1:-1"],
)  # fmt: skip
def test_a_malformed_listen_address_is_a_config_error_naming_the_key(value: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        parse_listen(value)
    assert excinfo.value.field == "metrics.listen"
    assert "metrics.listen" in excinfo.value.message
    assert "HOST:PORT" in excinfo.value.message


async def test_a_port_in_use_is_unavailable_naming_the_key(probes: ProbeServer) -> None:
    second = ProbeServer("127.0.0.1", probes.port, Readiness())
    with pytest.raises(Unavailable) as excinfo:
        await second.start()
    assert excinfo.value.field == "metrics.listen"


# -- routes ---------------------------------------------------------------------------


async def test_healthz_and_readyz_answer_ok(probes: ProbeServer) -> None:
    assert await get(probes.port, "/healthz") == (200, b"ok\n")
    assert await get(probes.port, "/readyz") == (200, b"ok\n")
    assert await get(probes.port, "/readyz?verbose=1") == (200, b"ok\n")


async def test_readyz_gives_the_reason_it_is_not_ready(probes: ProbeServer) -> None:
    probes.readiness.store = "store unavailable"
    assert await get(probes.port, "/readyz") == (503, b"store unavailable\n")
    assert await get(probes.port, "/healthz") == (200, b"ok\n")
    probes.readiness.store = None
    probes.readiness.stopping = True
    assert await get(probes.port, "/readyz") == (503, b"stopping\n")


async def test_head_gets_the_headers_without_the_body(probes: ProbeServer) -> None:
    status, headers, body = await exchange(probes.port, b"HEAD /healthz HTTP/1.1\r\n\r\n")
    assert (status, body) == (200, b"")
    assert headers["content-length"] == "3"
    assert headers["content-type"].startswith("text/plain")


async def test_other_paths_are_not_found(probes: ProbeServer) -> None:
    for path in ("/", "/metrics", "/healthz/", "/readyz/x", "/HEALTHZ"):
        assert (await get(probes.port, path))[0] == 404, path


async def test_other_methods_are_refused(probes: ProbeServer) -> None:
    status, headers, _ = await exchange(
        probes.port, b"POST /healthz HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"
    )
    assert status == 405
    assert headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /healthz\r\n\r\n",
        b"GET healthz HTTP/1.1\r\n\r\n",
        b"GET /healthz SPDY/3\r\n\r\n",
        b"GET  /healthz HTTP/1.1\r\n\r\n",
        b"\xff\xfe /healthz HTTP/1.1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x",  # the client stops mid-headers
    ],
)
async def test_malformed_requests_are_bad_requests(probes: ProbeServer, raw: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", probes.port)
    try:
        writer.write(raw)
        writer.write_eof()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    assert data.startswith(b"HTTP/1.1 400 ")


async def test_oversized_requests_are_refused(probes: ProbeServer) -> None:
    long_line = b"GET /" + b"a" * (MAX_LINE + 10) + b" HTTP/1.1\r\n\r\n"
    assert (await exchange(probes.port, long_line))[0] == 431
    many = b"GET /healthz HTTP/1.1\r\n" + b"X-A: b\r\n" * (MAX_HEADERS + 1) + b"\r\n"
    assert (await exchange(probes.port, many))[0] == 431
    # The server is still there afterwards.
    assert await get(probes.port, "/healthz") == (200, b"ok\n")


async def test_a_route_can_be_added(probes: ProbeServer) -> None:
    """Where issue 13's Prometheus /metrics goes."""
    probes.add_route("/metrics", lambda: Response(200, "up 1\n", "text/plain; version=0.0.4"))
    status, headers, body = await exchange(probes.port, b"GET /metrics HTTP/1.1\r\n\r\n")
    assert (status, body) == (200, b"up 1\n")
    assert headers["content-type"] == "text/plain; version=0.0.4"
    with pytest.raises(ValueError, match="duplicate"):
        probes.add_route("/metrics", lambda: Response(200, ""))


async def test_a_failing_handler_answers_503(probes: ProbeServer) -> None:
    def broken() -> Response:
        raise RuntimeError("boom")

    probes.add_route("/broken", broken)
    assert await get(probes.port, "/broken") == (503, b"probe failed\n")


async def test_stop_closes_the_port() -> None:
    server = ProbeServer("127.0.0.1", 0, Readiness())
    port = await server.start()
    await server.stop()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


# -- the custodian ----------------------------------------------------------------------


def test_custodian_reachability_sticks_until_the_channel_settles() -> None:
    """A channel that retries (CONNECTING) after a failure does not make /readyz flap."""
    states = iter(
        [
            grpc.ChannelConnectivity.IDLE,
            grpc.ChannelConnectivity.CONNECTING,
            grpc.ChannelConnectivity.TRANSIENT_FAILURE,
            grpc.ChannelConnectivity.CONNECTING,
            grpc.ChannelConnectivity.IDLE,
            grpc.ChannelConnectivity.READY,
            grpc.ChannelConnectivity.IDLE,
            grpc.ChannelConnectivity.SHUTDOWN,
        ]
    )
    readiness = Readiness(custodian=CustodianWatch(lambda: next(states)))
    seen = [readiness.problem() for _ in range(8)]
    down = "custodian unreachable"
    assert seen == [None, None, down, down, down, None, None, down]


def test_the_store_and_stopping_come_before_the_custodian() -> None:
    watch = CustodianWatch(lambda: grpc.ChannelConnectivity.TRANSIENT_FAILURE)
    assert Readiness(custodian=watch).problem() == "custodian unreachable"
    assert Readiness(store="store unavailable", custodian=watch).problem() == "store unavailable"
    assert Readiness(store="store unavailable", stopping=True).problem() == "stopping"


def test_certificates_are_warned_about_30_days_ahead() -> None:
    from aggregator.metrics import CertInfo, expiring

    day = 86_400_000
    now = 1_800_000_000_000
    certs = [
        CertInfo("server", "server", now + 90 * day),
        CertInfo("party_identity", "team-a", now + 29 * day),
        CertInfo("ca", "ca", now - day),
    ]
    assert expiring(certs, now) == [
        "ca certificate 'ca' expired (2027-01-14)",
        "party_identity certificate 'team-a' expires in 29 days (2027-02-13)",
    ]
    assert expiring(certs, now, days=100)[-1].startswith(
        "server certificate 'server' expires in 90"
    )
