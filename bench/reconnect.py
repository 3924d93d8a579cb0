"""How long a client takes to reconnect once the aggregator is back after an outage.

A party keeps calling (as a node's retry loop does) while the server is down for
``outage_s``; the server then comes back on the same port, and the figure is the time
from then to the first call that succeeds. Baseline: gRPC's default reconnect backoff
(which grows to 120 s). Ours: the backoff options of
:func:`blindsum.transport.tls.channel_options`. Both on plaintext loopback channels to a
health service, so only the backoff differs; they run one after the other in one run.

    python -m bench --only reconnect
    python -m bench.reconnect --outage 30
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from bench.common import Result, format_table, ratio, result_row
from blindsum.transport.tls import channel_options

SCENARIO = "reconnect"
_BACKOFF_KEYS = (
    "grpc.initial_reconnect_backoff_ms",
    "grpc.min_reconnect_backoff_ms",
    "grpc.max_reconnect_backoff_ms",
)
#: A call's own timeout, and the pause between a node's attempts.
_CALL_TIMEOUT_S = 1.0
_RETRY_PAUSE_S = 0.05
#: Give up waiting for a reconnection after this long (the default backoff's cap).
_GIVE_UP_S = 150.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _serve(port: int) -> grpc.aio.Server:
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server


async def _reconnect_after(outage_s: float, options: list[tuple[str, str | int]]) -> float:
    port = _free_port()
    server = await _serve(port)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options)
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest()

    async def call_until(deadline: float) -> bool:
        while time.monotonic() < deadline:
            try:
                await stub.Check(request, timeout=_CALL_TIMEOUT_S)
                return True
            except grpc.aio.AioRpcError:
                await asyncio.sleep(_RETRY_PAUSE_S)
        return False

    try:
        await stub.Check(request, timeout=_CALL_TIMEOUT_S)
        await server.stop(0)
        await call_until(time.monotonic() + outage_s)  # every call fails: it is down
        server = await _serve(port)
        back = time.monotonic()
        if not await call_until(back + _GIVE_UP_S):
            return float("nan")
        return time.monotonic() - back
    finally:
        await channel.close()
        await server.stop(0)


def measure(outage_s: float) -> Result:
    ours = [(k, v) for k, v in channel_options() if k in _BACKOFF_KEYS]
    baseline = asyncio.run(_reconnect_after(outage_s, []))
    mine = asyncio.run(_reconnect_after(outage_s, ours))
    return Result(
        SCENARIO,
        "blindsum",
        {"outage_s": outage_s},
        {
            "reconnect_s": mine,
            "baseline_reconnect_s": baseline,
            "reconnect_ratio": ratio(mine, baseline),
        },
    )


def run(quick: bool) -> list[Result]:
    return [measure(o) for o in ((10.0,) if quick else (10.0, 30.0))]


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reconnect", description=__doc__)
    parser.add_argument("--outage", type=float, action="append", help="outage in seconds")
    args = parser.parse_args(argv)
    results = [measure(o) for o in (args.outage or [10.0, 30.0])]
    print(format_table([result_row(r, ("reconnect_s", "baseline_reconnect_s")) for r in results]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
