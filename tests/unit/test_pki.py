"""Dev PKI: identities, CA, TLS and Ed25519 identity certificates, key files."""

from __future__ import annotations

import datetime as dt
import os
import stat
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from blindsum.errors import AlreadyExists, InvalidArgument, InvalidSignature, Unauthenticated
from blindsum.transport.pki import (
    Identity,
    KeyAndCert,
    Role,
    create_ca,
    identity_from_cert_pem,
    issue_identity_cert,
    issue_tls_cert,
    load_ca_and_check,
    verify_identity_cert,
    write_private,
)

READER = Identity(Role.READER, "alice")
PARTY = Identity(Role.PARTY, "team-a.eu_1")


@pytest.fixture(scope="module")
def ca() -> KeyAndCert:
    return create_ca()


@pytest.fixture(scope="module")
def other_ca() -> KeyAndCert:
    return create_ca("other CA")


def _ed25519_raw() -> tuple[ed25519.Ed25519PrivateKey, bytes]:
    key = ed25519.Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return key, raw


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


# --------------------------------------------------------------------------- Identity


@pytest.mark.parametrize("role", list(Role))
def test_identity_uri_round_trip(role: Role) -> None:
    ident = Identity(role, "n0.a-b_c")
    assert ident.uri == f"spiffe://blindsum/{role.value}/n0.a-b_c"
    assert Identity.parse_uri(ident.uri) == ident


@pytest.mark.parametrize(
    "name",
    ["", "A", "-lead", ".lead", "_lead", "has space", "slash/x", "a" * 64, "ünï", "x\n", "UP"],
)
def test_identity_rejects_bad_names(name: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        Identity(Role.PARTY, name)
    assert info.value.field == "name"


def test_identity_accepts_max_length_name() -> None:
    assert Identity(Role.PARTY, "a" * 63).name == "a" * 63


@pytest.mark.parametrize(
    "uri",
    [
        "spiffe://blindsum/party",
        "spiffe://blindsum/party/a/b",
        "spiffe://other/party/a",
        "spiffe://blindsum/root/a",
        "spiffe://blindsum/party/A",
        "https://blindsum/party/a",
        "spiffe://blindsum/party/a\n",
    ],
)
def test_parse_uri_rejects(uri: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        Identity.parse_uri(uri)
    assert info.value.field == "identity"


def test_key_and_cert_repr_hides_key(ca: KeyAndCert) -> None:
    assert b"PRIVATE KEY" in ca.key_pem
    assert "PRIVATE" not in repr(ca)
    assert ca.key_pem.decode() not in repr(ca)


# --------------------------------------------------------------------------- CA + TLS


def test_ca_is_p256_ca_with_pathlen_zero(ca: KeyAndCert) -> None:
    cert = x509.load_pem_x509_certificate(ca.cert_pem)
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    pub = cert.public_key()
    assert isinstance(pub, ec.EllipticCurvePublicKey) and pub.curve.name == "secp256r1"
    cert.verify_directly_issued_by(cert)
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign and not ku.digital_signature


def test_tls_cert_contents(ca: KeyAndCert) -> None:
    tls = issue_tls_cert(
        ca,
        Identity(Role.AGGREGATOR, "agg"),
        dns_names=["blindsum-aggregator", "localhost"],
        ip_addresses=["127.0.0.1", "::1"],
        days=10,
    )
    cert = x509.load_pem_x509_certificate(tls.cert_pem)
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.cert_pem))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://blindsum/aggregator/agg"
    ]
    assert san.get_values_for_type(x509.DNSName) == ["blindsum-aggregator", "localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=10) <= lifetime <= dt.timedelta(days=10, minutes=6)
    # The key matches the certificate.
    assert load_ca_and_check(ca.cert_pem, tls.cert_pem, tls.key_pem) == Identity(
        Role.AGGREGATOR, "agg"
    )
    assert identity_from_cert_pem(tls.cert_pem) == Identity(Role.AGGREGATOR, "agg")


def test_tls_cert_expiry_capped_at_ca() -> None:
    short_ca = create_ca(days=2)
    tls = issue_tls_cert(short_ca, READER, days=90)
    leaf = x509.load_pem_x509_certificate(tls.cert_pem)
    root = x509.load_pem_x509_certificate(short_ca.cert_pem)
    assert leaf.not_valid_after_utc <= root.not_valid_after_utc


@pytest.mark.parametrize(
    ("kwargs", "fld"),
    [
        ({"ip_addresses": ["not-an-ip"]}, "ip_addresses"),
        ({"dns_names": [""]}, "dns_names"),
        ({"days": 0}, "days"),
    ],
)
def test_issue_tls_cert_rejects_bad_input(
    ca: KeyAndCert, kwargs: dict[str, object], fld: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        issue_tls_cert(ca, READER, **kwargs)  # type: ignore[arg-type]  # parametrized kwargs
    assert info.value.field == fld


def test_issue_with_mismatched_ca_key_rejected(ca: KeyAndCert, other_ca: KeyAndCert) -> None:
    frankenstein = KeyAndCert(key_pem=other_ca.key_pem, cert_pem=ca.cert_pem)
    with pytest.raises(InvalidArgument) as info:
        issue_tls_cert(frankenstein, READER)
    assert info.value.field == "ca_key"


def test_issue_with_leaf_as_ca_rejected(ca: KeyAndCert) -> None:
    leaf = issue_tls_cert(ca, READER)
    with pytest.raises(InvalidArgument) as info:
        issue_tls_cert(leaf, PARTY)
    assert info.value.field == "ca_cert"


# --------------------------------------------------------------------------- identity certs


def test_identity_cert_round_trip(ca: KeyAndCert) -> None:
    key, raw = _ed25519_raw()
    pem = issue_identity_cert(ca, PARTY, raw)
    ident, got = verify_identity_cert(pem, ca.cert_pem, expected=PARTY)
    assert ident == PARTY
    assert got == raw
    # The returned key verifies the party's signatures.
    ed25519.Ed25519PublicKey.from_public_bytes(got).verify(key.sign(b"msg"), b"msg")
    cert = x509.load_pem_x509_certificate(pem)
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_encipherment and not ku.key_cert_sign


def test_identity_cert_from_other_ca_is_invalid_signature(
    ca: KeyAndCert, other_ca: KeyAndCert
) -> None:
    _, raw = _ed25519_raw()
    pem = issue_identity_cert(other_ca, PARTY, raw)
    with pytest.raises(InvalidSignature) as info:
        verify_identity_cert(pem, ca.cert_pem)
    assert info.value.field == "identity_cert"


def test_identity_cert_forged_same_issuer_name(ca: KeyAndCert) -> None:
    """A cert naming our CA as issuer but signed by another key fails the signature check."""
    root = x509.load_pem_x509_certificate(ca.cert_pem)
    forger = ec.generate_private_key(ec.SECP256R1())
    _, raw = _ed25519_raw()
    now = dt.datetime.now(dt.UTC)
    forged = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .issuer_name(root.subject)
        .public_key(ed25519.Ed25519PublicKey.from_public_bytes(raw))
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(PARTY.uri)]), False
        )
        .sign(forger, hashes.SHA256())
    )
    with pytest.raises(InvalidSignature):
        verify_identity_cert(_pem(forged), ca.cert_pem)


def test_identity_cert_expected_mismatch(ca: KeyAndCert) -> None:
    _, raw = _ed25519_raw()
    pem = issue_identity_cert(ca, PARTY, raw)
    with pytest.raises(InvalidArgument) as info:
        verify_identity_cert(pem, ca.cert_pem, expected=Identity(Role.PARTY, "team-b"))
    assert info.value.field == "identity_cert"
    assert not isinstance(info.value, InvalidSignature)


def test_identity_cert_validity_window(ca: KeyAndCert) -> None:
    _, raw = _ed25519_raw()
    pem = issue_identity_cert(ca, PARTY, raw, days=1)
    now = dt.datetime.now(dt.UTC)
    verify_identity_cert(pem, ca.cert_pem, now=now + dt.timedelta(hours=23))
    with pytest.raises(InvalidArgument, match="expired"):
        verify_identity_cert(pem, ca.cert_pem, now=now + dt.timedelta(days=2))
    with pytest.raises(InvalidArgument, match="not yet valid"):
        verify_identity_cert(pem, ca.cert_pem, now=now - dt.timedelta(hours=1))


def test_tls_cert_is_not_an_identity_cert(ca: KeyAndCert) -> None:
    tls = issue_tls_cert(ca, PARTY)
    with pytest.raises(InvalidArgument, match="Ed25519") as info:
        verify_identity_cert(tls.cert_pem, ca.cert_pem)
    assert info.value.field == "identity_cert"


def _signed_by_ca(
    ca: KeyAndCert,
    sans: list[x509.GeneralName],
    extensions: Sequence[x509.ExtensionType] = (),
) -> bytes:
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    root = x509.load_pem_x509_certificate(ca.cert_pem)
    _, raw = _ed25519_raw()
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .issuer_name(root.subject)
        .public_key(ed25519.Ed25519PublicKey.from_public_bytes(raw))
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), False)
    for ext in extensions:
        builder = builder.add_extension(ext, False)
    return _pem(builder.sign(ca_key, hashes.SHA256()))


def test_only_a_leaf_for_client_auth_names_a_caller(ca: KeyAndCert) -> None:
    """The TLS layer checks the chain; a caller's identity is taken only from a leaf
    certificate issued for client authentication (issue 12, item 5)."""
    san: list[x509.GeneralName] = [x509.UniformResourceIdentifier(PARTY.uri)]
    client = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    assert identity_from_cert_pem(_signed_by_ca(ca, san, [client])) == PARTY
    refused = {
        "not for client authentication": [
            _signed_by_ca(ca, san),
            _signed_by_ca(ca, san, [x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])]),
        ],
        "a CA certificate is not a client identity": [
            _signed_by_ca(ca, san, [client, x509.BasicConstraints(ca=True, path_length=0)]),
        ],
    }
    for reason, pems in refused.items():
        for pem in pems:
            with pytest.raises(Unauthenticated, match=reason) as info:
                identity_from_cert_pem(pem)
            assert info.value.field == "peer_certificate"


@pytest.mark.parametrize(
    "sans",
    [
        [],
        [x509.DNSName("party.example")],
        [
            x509.UniformResourceIdentifier(PARTY.uri),
            x509.UniformResourceIdentifier("spiffe://blindsum/party/other"),
        ],
        [x509.UniformResourceIdentifier("spiffe://blindsum/wizard/x")],
    ],
)
def test_identity_san_must_be_exactly_one_valid_spiffe(
    ca: KeyAndCert, sans: list[x509.GeneralName]
) -> None:
    pem = _signed_by_ca(ca, sans)
    with pytest.raises(InvalidArgument) as info:
        verify_identity_cert(pem, ca.cert_pem)
    assert info.value.field == "identity_cert"
    assert not isinstance(info.value, InvalidSignature)
    with pytest.raises(Unauthenticated) as info2:
        identity_from_cert_pem(pem)
    assert info2.value.field == "peer_certificate"


def test_non_spiffe_uri_sans_are_ignored(ca: KeyAndCert) -> None:
    pem = _signed_by_ca(
        ca,
        [
            x509.UniformResourceIdentifier("https://example.com/x"),
            x509.UniformResourceIdentifier(PARTY.uri),
        ],
    )
    assert verify_identity_cert(pem, ca.cert_pem)[0] == PARTY


@pytest.mark.parametrize("raw", [b"", b"\x01" * 31, b"\x01" * 33])
def test_issue_identity_cert_rejects_bad_key(ca: KeyAndCert, raw: bytes) -> None:
    with pytest.raises(InvalidArgument) as info:
        issue_identity_cert(ca, PARTY, raw)
    assert info.value.field == "public_key"


def test_garbage_pem_inputs(ca: KeyAndCert) -> None:
    with pytest.raises(InvalidArgument) as info:
        verify_identity_cert(b"not a cert", ca.cert_pem)
    assert info.value.field == "identity_cert"
    with pytest.raises(Unauthenticated):
        identity_from_cert_pem(b"garbage")


# --------------------------------------------------------------------------- load_ca_and_check


def test_load_ca_and_check_rejects_foreign_cert(ca: KeyAndCert, other_ca: KeyAndCert) -> None:
    tls = issue_tls_cert(other_ca, READER)
    with pytest.raises(InvalidArgument) as info:
        load_ca_and_check(ca.cert_pem, tls.cert_pem, tls.key_pem)
    assert info.value.field == "cert"


def test_load_ca_and_check_rejects_wrong_key(ca: KeyAndCert) -> None:
    a = issue_tls_cert(ca, READER)
    b = issue_tls_cert(ca, PARTY)
    with pytest.raises(InvalidArgument) as info:
        load_ca_and_check(ca.cert_pem, a.cert_pem, b.key_pem)
    assert info.value.field == "key"
    with pytest.raises(InvalidArgument) as info:
        load_ca_and_check(ca.cert_pem, a.cert_pem, b"nope")
    assert info.value.field == "key"


def test_load_ca_and_check_rejects_non_ca(ca: KeyAndCert) -> None:
    a = issue_tls_cert(ca, READER)
    with pytest.raises(InvalidArgument) as info:
        load_ca_and_check(a.cert_pem, a.cert_pem, a.key_pem)
    assert info.value.field == "ca_cert"


# --------------------------------------------------------------------------- write_private


def test_write_private_mode_and_no_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    old = os.umask(0)
    try:
        write_private(path, b"secret-1")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"secret-1"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(AlreadyExists):
        write_private(path, b"secret-2")
    assert path.read_bytes() == b"secret-1"


def test_write_private_overwrite_keeps_mode(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    path.write_bytes(b"old")
    path.chmod(0o644)
    write_private(path, b"new", overwrite=True)
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.pem"]


def test_write_private_refuses_symlink(tmp_path: Path) -> None:
    target = tmp_path / "target"
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(AlreadyExists):
        write_private(link, b"x")
    assert not target.exists()
