"""Hostile request bodies over real gRPC with mTLS (issue 12, item 1).

Before the change, gRPC parsed a request before the authorization check ran: 32 MiB
of empty repeated envelopes parse into about 1.4 GB, and five such requests from a
reader's certificate, each refused, took the aggregator to 7 GB. Now the body stays
raw bytes until the caller is authorized, and is checked against the method's byte
and element caps before protobuf sees it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import grpc.aio
import pytest

from aggregator.service import RunningAggregator
from blindsum.bundle import load_bundle
from blindsum.rpc.v1 import common_pb2, round_pb2
from blindsum.transport import wire
from blindsum.transport.tls import secure_channel
from tests.conftest import PARTIES, Deployment
from tests.integration.serve_process import (
    START_TIMEOUT_S,
    serving_port,
    spawn_serve,
    stop_serve,
)

SHARES = "/blindsum.rpc.v1.RoundService/SubmitShares"
GET_ROUND = "/blindsum.rpc.v1.RoundService/GetRound"
LIST_ROUNDS = "/blindsum.rpc.v1.RoundService/ListRounds"


def _empty_envelopes(total_bytes: int) -> bytes:
    """``envelopes`` (field 2) repeated, each empty: two bytes on the wire apiece."""
    return b"\x12\x00" * (total_bytes // 2)


async def _raw_calls(
    bundle_dir: Path, port: int, method: str, payloads: list[bytes]
) -> list[tuple[grpc.StatusCode, str]]:
    """Send each payload as the raw body of ``method``, all at once; their outcomes."""
    bundle = load_bundle(bundle_dir)
    channel = secure_channel(f"127.0.0.1:{port}", bundle.tls, bundle.ca_cert_pem)
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)

    async def one(body: bytes) -> tuple[grpc.StatusCode, str]:
        try:
            await call(body, timeout=120)
        except grpc.aio.AioRpcError as err:
            return err.code(), err.details() or ""
        return grpc.StatusCode.OK, ""

    try:
        return list(await asyncio.gather(*(one(p) for p in payloads)))
    finally:
        await channel.close(None)


@pytest.fixture
def served(deployment: Deployment) -> Iterator[tuple[int, int]]:
    """``aggregator serve`` in its own process (so the test's own buffers do not count
    in its memory): (pid, port)."""
    log = deployment.root / "serve.log"
    proc = spawn_serve(deployment.agg_dir, "127.0.0.1:0", log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (port := serving_port(proc, deployment.agg_dir, log, deadline)):
            time.sleep(0.05)
        yield proc.pid, port
    finally:
        stop_serve(proc)


def _rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        pytest.skip("no /proc/<pid>/status on this system")
    for line in status.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no VmRSS in /proc/<pid>/status")


async def test_hostile_bodies_cost_little_memory_and_the_server_keeps_serving(
    deployment: Deployment, served: tuple[int, int]
) -> None:
    pid, port = served
    flood = _empty_envelopes(30 << 20)  # under gRPC's 32 MiB, over SubmitShares' cap
    dense = _empty_envelopes(2 << 20)  # under the byte cap, a million elements
    party = deployment.bundle(PARTIES[0])
    warm = await _raw_calls(party, port, LIST_ROUNDS, [b""])
    assert warm == [(grpc.StatusCode.OK, "")]
    before = _rss_mib(pid)
    for _ in range(4):  # 20 from each certificate, five at a time
        refused = await _raw_calls(deployment.reader, port, SHARES, [flood] * 5)
        assert {code for code, _ in refused} == {grpc.StatusCode.PERMISSION_DENIED}
        too_big = await _raw_calls(party, port, SHARES, [flood] * 3)
        assert {code for code, _ in too_big} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert all(SHARES in details for _, details in too_big)
        too_many = await _raw_calls(party, port, SHARES, [dense] * 2)
        assert {code for code, _ in too_many} == {grpc.StatusCode.INVALID_ARGUMENT}
        assert all("too many elements" in details for _, details in too_many)
    # Refused bodies go back to the system once the server trims its heap (at most
    # once a second, after large refusals): wait, boundedly, for that.
    deadline = time.monotonic() + 30
    while (grown := _rss_mib(pid) - before) >= 200 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert grown < 200, f"RSS grew by {grown:.0f} MiB"

    # Still serving: a well-formed call from the same party succeeds.
    ok = await _raw_calls(
        party, port, LIST_ROUNDS, [round_pb2.ListRoundsRequest().SerializeToString()]
    )
    assert ok == [(grpc.StatusCode.OK, "")]


async def test_undecodable_bodies_get_invalid_argument_naming_the_call(
    deployment: Deployment, aggregator: RunningAggregator
) -> None:
    party = deployment.bundle(PARTIES[0])
    bodies = [
        b"\xff\xff\xff",  # a truncated varint key
        b"\x0a\x05ab",  # round_id claims 5 bytes, 2 follow
        b"\x0b\x00",  # a group (wire type 3)
        b"\x0a\x02\xc3\x28",  # round_id is not UTF-8: parses at the wire level only
    ]
    outcomes = await _raw_calls(party, aggregator.port, GET_ROUND, bodies)
    for code, details in outcomes:
        assert code == grpc.StatusCode.INVALID_ARGUMENT, details
        assert GET_ROUND in details
    # A reader is refused before its body is looked at, garbage or not.
    reader = await _raw_calls(deployment.reader, aggregator.port, GET_ROUND, bodies[:1])
    assert reader[0][0] == grpc.StatusCode.PERMISSION_DENIED


def test_request_limits_follow_the_round_settings() -> None:
    from aggregator.service import request_limits

    small = request_limits(max_parties=100, max_vector_length=1024)
    large = request_limits(max_parties=10_000, max_vector_length=1 << 20)
    assert small[SHARES].max_bytes < large[SHARES].max_bytes
    masked = "/blindsum.rpc.v1.RoundService/SubmitMasked"
    assert large[masked].max_bytes >= 8 * (1 << 20)
    # A legitimate share submission of a 10,000-party round fits its limit.
    envelopes = [
        round_pb2.Envelope(
            sender="p" * 256, receiver="q" * 256, nonce=b"n" * 12, ciphertext=b"c" * 200
        )
        for _ in range(9_999)
    ]
    body = round_pb2.SubmitSharesRequest(round_id="r" * 64, envelopes=envelopes)
    wire.check(body.SerializeToString(), body.DESCRIPTOR, large[SHARES], SHARES)
    assert common_pb2.RoundRef.DESCRIPTOR is not None
