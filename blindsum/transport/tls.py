"""mTLS credentials and the client channel factory.

Both sides present a certificate issued by the blindsum CA and verify the
peer's against it. Clients verify the server certificate against
``server_name`` (a DNS SAN, default ``blindsum-aggregator``), so the dial
address can be an IP or any host name.
"""

from __future__ import annotations

import grpc
import grpc.aio

from blindsum.errors import InvalidArgument
from blindsum.transport.pki import KeyAndCert

#: Cap for every gRPC message, both directions, on servers and channels.
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
DEFAULT_SERVER_NAME = "blindsum-aggregator"

#: Client keepalive: ping every 60 s during calls, give up after 20 s without an ack.
#: Servers created by :func:`blindsum.transport.server.create_server` accept this rate.
CLIENT_KEEPALIVE_TIME_MS = 60_000
CLIENT_KEEPALIVE_TIMEOUT_MS = 20_000
#: Reconnect backoff after a lost connection: from 0.5 s, doubling-ish, at most 5 s.
#: gRPC's default grows to 120 s, so after an aggregator restart of 30 s a party took
#: 15.8 s more to reconnect (1.1 s with these), and a longer outage could cost it a
#: whole phase. The attempts while the server is down are refused TCP connects.
CLIENT_RECONNECT_INITIAL_MS = 500
CLIENT_RECONNECT_MAX_MS = 5_000


def _check_pem(tls: KeyAndCert, ca_cert_pem: bytes) -> None:
    if not tls.key_pem or b"-----BEGIN" not in tls.key_pem:
        raise InvalidArgument("TLS private key is not PEM", field="key")
    if not tls.cert_pem or b"-----BEGIN CERTIFICATE" not in tls.cert_pem:
        raise InvalidArgument("TLS certificate is not PEM", field="cert")
    if not ca_cert_pem or b"-----BEGIN CERTIFICATE" not in ca_cert_pem:
        raise InvalidArgument("CA certificate is not PEM", field="ca_cert")


def server_credentials(tls: KeyAndCert, ca_cert_pem: bytes) -> grpc.ServerCredentials:
    """Server credentials that require and verify a client certificate from the CA."""
    _check_pem(tls, ca_cert_pem)
    return grpc.ssl_server_credentials(
        [(tls.key_pem, tls.cert_pem)],
        root_certificates=ca_cert_pem,
        require_client_auth=True,
    )


def channel_credentials(tls: KeyAndCert, ca_cert_pem: bytes) -> grpc.ChannelCredentials:
    """Client credentials: our certificate, and trust only the blindsum CA."""
    _check_pem(tls, ca_cert_pem)
    return grpc.ssl_channel_credentials(
        root_certificates=ca_cert_pem,
        private_key=tls.key_pem,
        certificate_chain=tls.cert_pem,
    )


def channel_options(
    *, server_name: str = DEFAULT_SERVER_NAME, max_message_bytes: int = MAX_MESSAGE_BYTES
) -> list[tuple[str, str | int]]:
    """The options :func:`secure_channel` uses (exposed for custom channels)."""
    return [
        ("grpc.ssl_target_name_override", server_name),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", CLIENT_KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", CLIENT_KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.initial_reconnect_backoff_ms", CLIENT_RECONNECT_INITIAL_MS),
        ("grpc.min_reconnect_backoff_ms", CLIENT_RECONNECT_INITIAL_MS),
        ("grpc.max_reconnect_backoff_ms", CLIENT_RECONNECT_MAX_MS),
    ]


def secure_channel(
    target: str,
    tls: KeyAndCert,
    ca_cert_pem: bytes,
    *,
    server_name: str = DEFAULT_SERVER_NAME,
) -> grpc.aio.Channel:
    """An mTLS ``grpc.aio`` channel to ``target`` (``host:port``).

    Must be called with a running event loop (or before one starts, in the same
    thread). The server certificate must carry ``server_name`` as a DNS SAN.
    """
    if not target:
        raise InvalidArgument("must be host:port", field="target")
    return grpc.aio.secure_channel(
        target,
        channel_credentials(tls, ca_cert_pem),
        options=channel_options(server_name=server_name),
    )
