"""``grpc.aio`` server factory: message caps, keepalive policy, secure port, health."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from blindsum.errors import InvalidArgument, Unavailable
from blindsum.transport.tls import CLIENT_KEEPALIVE_TIME_MS, MAX_MESSAGE_BYTES

__all__ = ["HealthServicer", "add_health", "add_secure_port", "create_server"]


#: Concurrent calls one client connection may have open (a party needs one or two).
MAX_STREAMS_PER_CONNECTION = 16


def server_options(max_message_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    """Options used by :func:`create_server`."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        # Server pings idle connections every 2 min and drops them after 20 s silence.
        ("grpc.keepalive_time_ms", 120_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        # Accept client keepalive pings at the rate our channels send them.
        ("grpc.http2.min_ping_interval_without_data_ms", CLIENT_KEEPALIVE_TIME_MS // 2),
        ("grpc.http2.max_ping_strikes", 2),
        # gRPC sets SO_REUSEPORT by default, so a second server on a busy port would
        # start and silently share it. A port in use must be an error instead.
        ("grpc.so_reuseport", 0),
        # Requests in flight on one connection: each may be buffered whole (up to the
        # message cap) before the authorization check runs.
        ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
    ]


def create_server(
    interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = (),
    *,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    maximum_concurrent_rpcs: int | None = None,
) -> grpc.aio.Server:
    """A ``grpc.aio`` server with the message cap in both directions.

    Call inside a running event loop. Add servicers, then :func:`add_secure_port`.
    """
    if isinstance(max_message_bytes, bool) or max_message_bytes < 1:
        raise InvalidArgument("must be a positive byte count", field="max_message_bytes")
    return grpc.aio.server(
        interceptors=list(interceptors),
        options=server_options(max_message_bytes),
        maximum_concurrent_rpcs=maximum_concurrent_rpcs,
    )


def add_secure_port(server: grpc.aio.Server, address: str, creds: grpc.ServerCredentials) -> int:
    """Bind ``address`` (e.g. ``"127.0.0.1:0"``) with mTLS; return the bound port.

    Raises Unavailable(field="address") if the address cannot be bound: it is in
    use (servers never share a port; see :func:`server_options`) or not local.
    """
    why = f"cannot listen on {address}: the port is in use, or the address is not this machine's"
    try:
        port = server.add_secure_port(address, creds)
    except RuntimeError:
        raise Unavailable(why, field="address") from None
    if port == 0:
        raise Unavailable(why, field="address")
    return port


def add_health(server: grpc.aio.Server) -> HealthServicer:
    """Register the standard ``grpc.health.v1.Health`` service (overall status SERVING).

    Use ``await health.set(service_name, status)`` and, on shutdown,
    ``await health.enter_graceful_shutdown()``.
    """
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    return health
