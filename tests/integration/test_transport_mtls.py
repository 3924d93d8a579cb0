"""Real grpc.aio server with mTLS on 127.0.0.1:0: identity, authorization, error table."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from blindsum.errors import NotFound, PermissionDenied, Unauthenticated, Unavailable
from blindsum.rpc.v1 import common_pb2, report_pb2, report_pb2_grpc
from blindsum.transport.auth import AuthorizationInterceptor, peer_identity
from blindsum.transport.errors import error_from_rpc, translate
from blindsum.transport.pki import (
    Identity,
    KeyAndCert,
    Role,
    create_ca,
    issue_tls_cert,
)
from blindsum.transport.server import add_health, add_secure_port, create_server
from blindsum.transport.tls import secure_channel, server_credentials

SECRET_TEXT = "db password is hunter2"
TIMEOUT = 10.0


@dataclass
class Pki:
    ca: KeyAndCert
    server: KeyAndCert
    reader: KeyAndCert
    party: KeyAndCert
    revoked_reader: KeyAndCert
    foreign_reader: KeyAndCert
    no_san: KeyAndCert


def _cert_without_identity(ca: KeyAndCert) -> KeyAndCert:
    """A client cert that chains to the CA but has only a DNS SAN (no spiffe URI)."""
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "anon")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("anon.example")]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .sign(ca_key, hashes.SHA256())
    )
    return KeyAndCert(
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
    )


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca = create_ca()
    other_ca = create_ca("another CA")
    return Pki(
        ca=ca,
        server=issue_tls_cert(
            ca,
            Identity(Role.AGGREGATOR, "agg"),
            dns_names=["blindsum-aggregator"],
            ip_addresses=["127.0.0.1"],
        ),
        reader=issue_tls_cert(ca, Identity(Role.READER, "alice")),
        party=issue_tls_cert(ca, Identity(Role.PARTY, "team-a")),
        revoked_reader=issue_tls_cert(ca, Identity(Role.READER, "mallory")),
        foreign_reader=issue_tls_cert(other_ca, Identity(Role.READER, "alice")),
        no_san=_cert_without_identity(ca),
    )


@dataclass
class ReportServicer(report_pb2_grpc.ReportServiceServicer):
    calls: list[str] = field(default_factory=list)

    @translate
    async def GetReport(
        self, request: common_pb2.RoundRef, context: grpc.aio.ServicerContext[Any, Any]
    ) -> report_pb2.Report:
        self.calls.append(request.round_id)
        if request.round_id == "missing":
            raise NotFound("no such round", field="round_id")
        if request.round_id == "boom":
            raise ValueError(SECRET_TEXT)
        if request.round_id == "denied":
            raise PermissionDenied("not for you", field="round_id")
        return report_pb2.Report(round_id=peer_identity(context).name)


@dataclass
class Running:
    port: int
    servicer: ReportServicer


@pytest.fixture
async def running(pki: Pki) -> AsyncIterator[Running]:
    policy = {"blindsum.rpc.v1.ReportService": frozenset({Role.READER})}
    interceptor = AuthorizationInterceptor(
        policy, is_known=lambda ident, _issued: ident.name != "mallory"
    )
    server = create_server([interceptor])
    servicer = ReportServicer()
    report_pb2_grpc.add_ReportServiceServicer_to_server(servicer, server)
    add_health(server)
    port = add_secure_port(server, "127.0.0.1:0", server_credentials(pki.server, pki.ca.cert_pem))
    await server.start()
    try:
        yield Running(port=port, servicer=servicer)
    finally:
        await server.stop(None)


async def _get_report(running: Running, tls: KeyAndCert, ca_pem: bytes, round_id: str) -> str:
    async with secure_channel(f"127.0.0.1:{running.port}", tls, ca_pem) as channel:
        stub = report_pb2_grpc.ReportServiceStub(channel)
        reply = await stub.GetReport(common_pb2.RoundRef(round_id=round_id), timeout=TIMEOUT)
        return reply.round_id


async def _get_report_error(
    running: Running, tls: KeyAndCert, ca_pem: bytes, round_id: str
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _get_report(running, tls, ca_pem, round_id)
    return info.value


async def test_reader_gets_identity_from_certificate_san(pki: Pki, running: Running) -> None:
    assert await _get_report(running, pki.reader, pki.ca.cert_pem, "r1") == "alice"
    assert running.servicer.calls == ["r1"]


async def test_metadata_cannot_override_identity(pki: Pki, running: Running) -> None:
    async with secure_channel(f"127.0.0.1:{running.port}", pki.party, pki.ca.cert_pem) as ch:
        stub = report_pb2_grpc.ReportServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetReport(
                common_pb2.RoundRef(round_id="r1"),
                metadata=(
                    ("x509_pem_cert", "spiffe://blindsum/reader/alice"),
                    ("x-spiffe-id", "spiffe://blindsum/reader/alice"),
                ),
                timeout=TIMEOUT,
            )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert running.servicer.calls == []


async def test_party_role_is_permission_denied(pki: Pki, running: Running) -> None:
    err = await _get_report_error(running, pki.party, pki.ca.cert_pem, "r1")
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "party" in (err.details() or "")
    assert running.servicer.calls == []
    assert isinstance(error_from_rpc(err, "GetReport"), PermissionDenied)


async def test_unknown_identity_is_unauthenticated(pki: Pki, running: Running) -> None:
    err = await _get_report_error(running, pki.revoked_reader, pki.ca.cert_pem, "r1")
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert running.servicer.calls == []


async def test_cert_without_spiffe_san_is_unauthenticated(pki: Pki, running: Running) -> None:
    err = await _get_report_error(running, pki.no_san, pki.ca.cert_pem, "r1")
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert running.servicer.calls == []
    assert isinstance(error_from_rpc(err, "GetReport"), Unauthenticated)


async def test_cert_from_another_ca_fails_handshake(pki: Pki, running: Running) -> None:
    err = await _get_report_error(running, pki.foreign_reader, pki.ca.cert_pem, "r1")
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert running.servicer.calls == []
    translated = error_from_rpc(err, "ReportService.GetReport")
    assert isinstance(translated, Unavailable)
    assert translated.message.startswith("ReportService.GetReport: ")


async def test_no_client_cert_fails_handshake(pki: Pki, running: Running) -> None:
    creds = grpc.ssl_channel_credentials(root_certificates=pki.ca.cert_pem)
    options = [("grpc.ssl_target_name_override", "blindsum-aggregator")]
    async with grpc.aio.secure_channel(f"127.0.0.1:{running.port}", creds, options) as ch:
        stub = report_pb2_grpc.ReportServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetReport(common_pb2.RoundRef(round_id="r1"), timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert running.servicer.calls == []


async def test_client_rejects_server_name_mismatch(pki: Pki, running: Running) -> None:
    target = f"127.0.0.1:{running.port}"
    async with secure_channel(target, pki.reader, pki.ca.cert_pem, server_name="other") as ch:
        stub = report_pb2_grpc.ReportServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetReport(common_pb2.RoundRef(round_id="r1"), timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert running.servicer.calls == []


async def test_translate_maps_not_found(pki: Pki, running: Running) -> None:
    err = await _get_report_error(running, pki.reader, pki.ca.cert_pem, "missing")
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == "round_id: no such round"
    translated = error_from_rpc(err, "GetReport")
    assert isinstance(translated, NotFound)
    assert translated.message == "GetReport: round_id: no such round"


async def test_translate_maps_permission_denied_from_handler(pki: Pki, running: Running) -> None:
    err = await _get_report_error(running, pki.reader, pki.ca.cert_pem, "denied")
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert running.servicer.calls == ["denied"]


async def test_unexpected_error_is_internal_without_text(
    pki: Pki, running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    err = await _get_report_error(running, pki.reader, pki.ca.cert_pem, "boom")
    assert err.code() == grpc.StatusCode.INTERNAL
    assert err.details() == "internal error in GetReport"
    assert "hunter2" not in (err.details() or "")
    assert "hunter2" not in (err.debug_error_string() or "")
    # The detail goes to the server log instead.
    assert any(r.getMessage() == "rpc_internal_error" for r in caplog.records)


async def test_health_open_to_any_authenticated_role(pki: Pki, running: Running) -> None:
    for tls in (pki.reader, pki.party):
        async with secure_channel(f"127.0.0.1:{running.port}", tls, pki.ca.cert_pem) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_health_rejects_unknown_identity(pki: Pki, running: Running) -> None:
    async with secure_channel(
        f"127.0.0.1:{running.port}", pki.revoked_reader, pki.ca.cert_pem
    ) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_service_missing_from_policy_is_unimplemented(pki: Pki, running: Running) -> None:
    async with secure_channel(f"127.0.0.1:{running.port}", pki.reader, pki.ca.cert_pem) as ch:
        call = ch.unary_unary(
            "/blindsum.rpc.v1.AdminService/GetStatus",
            request_serializer=common_pb2.RoundRef.SerializeToString,
            response_deserializer=common_pb2.RoundRef.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(common_pb2.RoundRef(round_id="r1"), timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_streaming_health_watch_passes_through_interceptor(
    pki: Pki, running: Running
) -> None:
    async with secure_channel(f"127.0.0.1:{running.port}", pki.party, pki.ca.cert_pem) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        call = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
        first = await call.read()
        assert isinstance(first, health_pb2.HealthCheckResponse)
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        call.cancel()
