"""Dev PKI: a CA, TLS certificates and Ed25519 identity certificates.

Every principal is named by exactly one URI SAN ``spiffe://blindsum/<role>/<name>``.
TLS certificates (ECDSA P-256) carry it for mTLS; identity certificates carry the
same SAN over the party's Ed25519 signing key, so parties can check each other's
signed key adverts and the custodian can check receipts without trusting the
aggregator that relays them.

This module does not import grpc: it is plain X.509 handling with ``cryptography``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import functools
import ipaddress
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from blindsum.crypto.sign import VerifyKey
from blindsum.errors import (
    AlreadyExists,
    BlindsumError,
    InvalidArgument,
    InvalidSignature,
    Unauthenticated,
)

SPIFFE_PREFIX = "spiffe://blindsum/"
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
#: Certificates are back-dated by this much to tolerate small clock skew.
_BACKDATE = dt.timedelta(minutes=5)


class Role(enum.Enum):
    """What a principal may do; the value is the path segment in its SPIFFE URI."""

    PARTY = "party"
    ADMIN = "admin"
    READER = "reader"
    AGGREGATOR = "aggregator"
    CUSTODIAN = "custodian"


@dataclass(frozen=True)
class Identity:
    """A validated principal name. ``name`` matches ``^[a-z0-9][a-z0-9._-]{0,62}$``."""

    role: Role
    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.role, Role):
            raise InvalidArgument("must be a Role", field="role")
        if not isinstance(self.name, str) or _NAME_RE.fullmatch(self.name) is None:
            raise InvalidArgument(
                "must match ^[a-z0-9][a-z0-9._-]{0,62}$",
                field="name",
            )

    @property
    def uri(self) -> str:
        return f"{SPIFFE_PREFIX}{self.role.value}/{self.name}"

    def __str__(self) -> str:
        return self.uri

    @classmethod
    def parse_uri(cls, uri: str) -> Identity:
        """Parse ``spiffe://blindsum/<role>/<name>``; InvalidArgument(field="identity") if not."""
        if not isinstance(uri, str) or not uri.startswith(SPIFFE_PREFIX):
            raise InvalidArgument("not a spiffe://blindsum/ URI", field="identity")
        parts = uri[len(SPIFFE_PREFIX) :].split("/")
        if len(parts) != 2:
            raise InvalidArgument("expected spiffe://blindsum/<role>/<name>", field="identity")
        role_s, name = parts
        try:
            role = Role(role_s)
        except ValueError:
            raise InvalidArgument("unknown role", field="identity") from None
        try:
            return cls(role, name)
        except InvalidArgument:
            raise InvalidArgument("invalid name", field="identity") from None


@dataclass(frozen=True)
class KeyAndCert:
    """A PEM private key (PKCS#8, unencrypted) and its PEM certificate."""

    key_pem: bytes = field(repr=False)
    cert_pem: bytes


# --------------------------------------------------------------------------- helpers


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _load_cert(pem: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except (ValueError, TypeError):
        raise InvalidArgument("not a PEM X.509 certificate", field=what) from None


def _load_ca(ca: KeyAndCert) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    cert = _load_cert(ca.cert_pem, "ca_cert")
    _require_ca(cert)
    try:
        key = serialization.load_pem_private_key(ca.key_pem, password=None)
    except (ValueError, TypeError):
        raise InvalidArgument("not an unencrypted PEM private key", field="ca_key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidArgument("CA key must be ECDSA", field="ca_key")
    if _spki(key.public_key()) != _spki(cert.public_key()):
        raise InvalidArgument("CA key does not match the CA certificate", field="ca_key")
    return key, cert


def _require_ca(cert: x509.Certificate) -> None:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise InvalidArgument("CA certificate lacks BasicConstraints", field="ca_cert") from None
    if not bc.ca:
        raise InvalidArgument("certificate is not a CA", field="ca_cert")


def _spki(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _validity(days: int, ca_cert: x509.Certificate | None) -> tuple[dt.datetime, dt.datetime]:
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise InvalidArgument("must be a positive number of days", field="days")
    now = _now()
    not_before = now - _BACKDATE
    not_after = now + dt.timedelta(days=days)
    if ca_cert is not None:
        # A leaf cannot usefully outlive its issuer: cap it at the CA's expiry.
        not_after = min(not_after, ca_cert.not_valid_after_utc)
        not_before = max(not_before, ca_cert.not_valid_before_utc)
    return not_before, not_after


def _leaf_builder(
    ca_cert: x509.Certificate,
    identity: Identity,
    public_key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey,
    sans: list[x509.GeneralName],
    days: int,
) -> x509.CertificateBuilder:
    not_before, not_after = _validity(days, ca_cert)
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.name)]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )


def _digital_signature_only() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _spiffe_identity(
    cert: x509.Certificate, what: str, error: type[BlindsumError] = InvalidArgument
) -> Identity:
    """Exactly one spiffe:// URI SAN, parsed; otherwise ``error(..., field=what)``."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise error("certificate has no SubjectAlternativeName", field=what) from None
    except ValueError:
        raise error("malformed certificate extensions", field=what) from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    spiffe = [u for u in uris if u.lower().startswith("spiffe://")]
    if len(spiffe) != 1:
        raise error(f"expected exactly one spiffe URI SAN, found {len(spiffe)}", field=what)
    try:
        return Identity.parse_uri(spiffe[0])
    except InvalidArgument:
        raise error("URI SAN is not a valid spiffe://blindsum/<role>/<name>", field=what) from None


def _check_validity(cert: x509.Certificate, now: dt.datetime, what: str) -> None:
    if now.tzinfo is None:
        raise InvalidArgument("must be timezone-aware", field="now")
    if now < cert.not_valid_before_utc:
        raise InvalidArgument("certificate is not yet valid", field=what)
    if now > cert.not_valid_after_utc:
        raise InvalidArgument("certificate has expired", field=what)


def _verify_issued_by(cert: x509.Certificate, ca_cert: x509.Certificate, what: str) -> None:
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, _CryptoInvalidSignature):
        raise InvalidSignature("not issued by the configured CA", field=what) from None


# --------------------------------------------------------------------------- public API


def create_ca(common_name: str = "blindsum dev CA", *, days: int = 365) -> KeyAndCert:
    """Create a self-signed ECDSA P-256 CA (CA:TRUE, pathlen 0). For development and tests."""
    if not common_name:
        raise InvalidArgument("must not be empty", field="common_name")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    not_before, not_after = _validity(days, None)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyAndCert(key_pem=_key_pem(key), cert_pem=cert.public_bytes(serialization.Encoding.PEM))


def issue_tls_cert(
    ca: KeyAndCert,
    identity: Identity,
    *,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    days: int = 90,
) -> KeyAndCert:
    """Issue an ECDSA P-256 TLS certificate (serverAuth + clientAuth) for ``identity``.

    SAN = the identity URI, then ``dns_names`` and ``ip_addresses``. A server
    certificate needs the DNS name clients use as ``server_name`` (default
    ``blindsum-aggregator``). Expiry is capped at the CA's.
    """
    ca_key, ca_cert = _load_ca(ca)
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity.uri)]
    for dns in dns_names:
        if not isinstance(dns, str) or not dns or not dns.isascii():
            raise InvalidArgument("must be a non-empty ASCII host name", field="dns_names")
        sans.append(x509.DNSName(dns))
    for ip in ip_addresses:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(ip)))
        except ValueError:
            raise InvalidArgument("not an IP address", field="ip_addresses") from None
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _leaf_builder(ca_cert, identity, key.public_key(), sans, days)
        .add_extension(_digital_signature_only(), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return KeyAndCert(key_pem=_key_pem(key), cert_pem=cert.public_bytes(serialization.Encoding.PEM))


def issue_identity_cert(
    ca: KeyAndCert, identity: Identity, public_key_raw: bytes, *, days: int = 365
) -> bytes:
    """Certify a raw 32-byte Ed25519 identity key for ``identity``; returns the PEM certificate."""
    if not isinstance(public_key_raw, bytes) or len(public_key_raw) != 32:
        raise InvalidArgument("must be a raw 32-byte Ed25519 public key", field="public_key")
    try:
        public_key = ed25519.Ed25519PublicKey.from_public_bytes(public_key_raw)
    except ValueError:
        raise InvalidArgument("not an Ed25519 public key", field="public_key") from None
    ca_key, ca_cert = _load_ca(ca)
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity.uri)]
    cert = (
        _leaf_builder(ca_cert, identity, public_key, sans, days)
        .add_extension(_digital_signature_only(), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def verify_identity_cert(
    cert_pem: bytes,
    ca_cert_pem: bytes,
    *,
    expected: Identity | None = None,
    now: dt.datetime | None = None,
) -> tuple[Identity, bytes]:
    """Check an identity certificate; return (identity, raw 32-byte Ed25519 public key).

    Raises InvalidSignature(field="identity_cert") if it is not issued by the CA,
    and InvalidArgument(field="identity_cert") if it is malformed, outside its
    validity window, not exactly one spiffe URI SAN, not an Ed25519 key, or not
    ``expected``.
    """
    ca_cert = _load_cert(ca_cert_pem, "ca_cert")
    _require_ca(ca_cert)
    return _check_identity_cert(cert_pem, ca_cert, expected, now)


def _check_identity_cert(
    cert_pem: bytes,
    ca_cert: x509.Certificate,
    expected: Identity | None,
    now: dt.datetime | None,
) -> tuple[Identity, bytes]:
    what = "identity_cert"
    cert = _load_cert(cert_pem, what)
    _verify_issued_by(cert, ca_cert, what)
    _check_validity(cert, now if now is not None else _now(), what)
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        if bc.ca:
            raise InvalidArgument("a CA certificate is not an identity", field=what)
    except x509.ExtensionNotFound:
        pass
    identity = _spiffe_identity(cert, what)
    public_key = cert.public_key()
    if not isinstance(public_key, ed25519.Ed25519PublicKey):
        raise InvalidArgument("subject key is not Ed25519", field=what)
    if expected is not None and identity != expected:
        raise InvalidArgument(
            f"certificate is for {identity.uri}, expected {expected.uri}", field=what
        )
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return identity, raw


class CertifiedKeys(Mapping[str, VerifyKey]):
    """Parties' identity keys, each taken from its certificate and checked against
    the CA the first time it is read.

    The aggregator serves every roster entry with the member's identity certificate.
    A certificate is checked once, when its key is first needed, against a CA parsed
    once for all of them. A missing certificate is a KeyError; one that fails raises
    what :func:`verify_identity_cert` raises (field ``identity_cert``).
    """

    def __init__(
        self, certs: Mapping[str, bytes], ca_cert_pem: bytes, *, now: dt.datetime | None = None
    ) -> None:
        self._certs = dict(certs)
        self._ca = _load_cert(ca_cert_pem, "ca_cert")
        _require_ca(self._ca)
        self._now = now
        self._checked: dict[str, VerifyKey] = {}

    def __getitem__(self, party: str) -> VerifyKey:
        key = self._checked.get(party)
        if key is None:
            pem = self._certs[party]
            _, raw = _check_identity_cert(pem, self._ca, Identity(Role.PARTY, party), self._now)
            key = VerifyKey.from_bytes(raw)
            self._checked[party] = key
        return key

    def __iter__(self) -> Iterator[str]:
        return iter(self._certs)

    def __len__(self) -> int:
        return len(self._certs)

    @property
    def checked(self) -> int:
        """How many certificates have been checked so far."""
        return len(self._checked)

    def __repr__(self) -> str:
        return f"CertifiedKeys({len(self._certs)} certificates, {len(self._checked)} checked)"


@functools.lru_cache(maxsize=4096)
def load_cert(cert_pem: bytes) -> x509.Certificate:
    """A parsed PEM certificate, cached: a caller's certificate is read on every call
    it makes, and parsing it each time cost more than the check it feeds."""
    return x509.load_pem_x509_certificate(cert_pem)


def cert_not_before_ms(cert_pem: bytes) -> int:
    """A certificate's not-before time, UTC ms (its precision is whole seconds)."""
    return int(load_cert(cert_pem).not_valid_before_utc.timestamp() * 1000)


def identity_from_cert_pem(cert_pem: bytes) -> Identity:
    """The identity in a (TLS-verified) peer certificate's URI SAN.

    Does not verify the chain: call it only on certificates the TLS layer has
    already verified. Only a leaf certificate (not a CA) issued for client
    authentication (extended key usage clientAuth) names a caller. Raises
    Unauthenticated(field="peer_certificate") otherwise.
    """
    what = "peer_certificate"
    try:
        cert = load_cert(cert_pem)
    except (ValueError, TypeError):
        raise Unauthenticated("unreadable peer certificate", field=what) from None
    try:
        ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        ca = False
    except ValueError:
        raise Unauthenticated("malformed certificate extensions", field=what) from None
    if ca:
        raise Unauthenticated("a CA certificate is not a client identity", field=what)
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usages = None
    except ValueError:
        raise Unauthenticated("malformed certificate extensions", field=what) from None
    if usages is None or ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        raise Unauthenticated("certificate is not for client authentication", field=what)
    return _spiffe_identity(cert, what, Unauthenticated)


def load_ca_and_check(ca_cert_pem: bytes, cert_pem: bytes, key_pem: bytes) -> Identity:
    """Check operator-supplied TLS material; return the certificate's identity.

    Checks that ``ca_cert_pem`` is a CA, ``cert_pem`` is directly issued by it
    and currently valid with one spiffe URI SAN, and ``key_pem`` is the private
    key of ``cert_pem``. Raises InvalidArgument (field ca_cert / cert / key).
    """
    ca_cert = _load_cert(ca_cert_pem, "ca_cert")
    _require_ca(ca_cert)
    cert = _load_cert(cert_pem, "cert")
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, _CryptoInvalidSignature):
        raise InvalidArgument("not issued by the given CA", field="cert") from None
    _check_validity(cert, _now(), "cert")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise InvalidArgument("not an unencrypted PEM private key", field="key") from None
    if _spki(key.public_key()) != _spki(cert.public_key()):
        raise InvalidArgument("private key does not match the certificate", field="key")
    return _spiffe_identity(cert, "cert")


def write_private(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """Write secret bytes to a new file created with mode 0600.

    Refuses to replace an existing file (AlreadyExists) unless ``overwrite``;
    with ``overwrite`` the file is replaced atomically by a 0600 temporary file. Either
    way the data and the directory entry are fsynced before this returns, so after a
    power loss the file holds this content, never an older one (a party's round state
    must not roll back to before a message it already sent).
    """
    path = Path(path)
    if overwrite:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o600)
            _write_all(fd, data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        fsync_dir(path.parent)
        return
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise AlreadyExists("refusing to overwrite an existing key file", field=str(path)) from None
    try:
        os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    _write_all(fd, data)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a created, renamed or deleted entry of ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """Write everything, fsync, close."""
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
