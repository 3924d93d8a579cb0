"""Operator tasks on an aggregator directory: ``init`` and ``enroll``.

``init`` lays out::

    DIR/aggregator.toml            the typed config (no secrets in it)
    DIR/aggregator.sqlite          the round store
    DIR/ca/ca.crt, ca/ca.key       the enrollment CA (generated dev CA, or yours)
    DIR/tls/server.*, tls/admin.*  the aggregator's server and operator certificates
    DIR/custodian/                 BFV secret context, Ed25519 signing key, TLS cert, audit store

Private keys are written with mode 0600. Dev certificates are generated at run
time; nothing private is ever committed.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography import x509

from aggregator import config as cfgmod
from aggregator.store import MAC_KEY_BYTES, NoStore, Store, now_ms, open_store
from blindsum.bundle import BUNDLE_CONFIG, PartyConfig, load_bundle
from blindsum.config import dump_config
from blindsum.crypto.he import BfvParams, BfvSecretContext
from blindsum.crypto.sign import SigningKey
from blindsum.errors import AlreadyExists, ConfigError, FailedPrecondition, InvalidArgument
from blindsum.protocol.he import context_hash
from blindsum.transport.pki import (
    Identity,
    KeyAndCert,
    Role,
    cert_not_before_ms,
    create_ca,
    issue_identity_cert,
    issue_tls_cert,
    load_ca_and_check,
    verify_identity_cert,
    write_private,
)

SERVER_DNS = ("localhost",)
SERVER_IPS = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class ExternalPki:
    """Bring-your-own CA and server certificate for ``aggregator init``."""

    ca_cert: Path
    ca_key: Path | None = None
    cert: Path | None = None
    key: Path | None = None


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def init(
    directory: Path, *, listen: str = "127.0.0.1:7443", pki: ExternalPki | None = None
) -> None:
    """Create a new aggregator directory. Refuses to overwrite an existing one."""
    if (directory / cfgmod.CONFIG_NAME).exists():
        raise AlreadyExists(f"{directory} already holds an aggregator", field="DIR")
    cfg = replace(cfgmod.AggregatorConfig(), server=cfgmod.ServerSection(listen=listen))
    tls_paths = cfg.tls
    server_name = cfg.server.server_name

    # Everything is checked and generated before the first file is written.
    if pki is None:
        ca = create_ca()
    else:
        if pki.ca_key is None:
            raise InvalidArgument(
                "init needs the CA key to issue the admin and custodian certificates",
                field="--ca-key",
            )
        ca = KeyAndCert(key_pem=pki.ca_key.read_bytes(), cert_pem=pki.ca_cert.read_bytes())
    if pki is not None and pki.cert is not None and pki.key is not None:
        server = KeyAndCert(key_pem=pki.key.read_bytes(), cert_pem=pki.cert.read_bytes())
        load_ca_and_check(ca.cert_pem, server.cert_pem, server.key_pem)
    else:
        server = issue_tls_cert(
            ca,
            Identity(Role.AGGREGATOR, "aggregator"),
            dns_names=(server_name, *SERVER_DNS),
            ip_addresses=SERVER_IPS,
        )

    directory.mkdir(parents=True, exist_ok=True)
    _write_public(directory / tls_paths.ca_cert, ca.cert_pem)
    write_private(directory / tls_paths.ca_key, ca.key_pem)
    _write_public(directory / tls_paths.cert, server.cert_pem)
    write_private(directory / tls_paths.key, server.key_pem)

    admin = issue_tls_cert(ca, Identity(Role.ADMIN, "admin"))
    _write_public(directory / tls_paths.admin_cert, admin.cert_pem)
    write_private(directory / tls_paths.admin_key, admin.key_pem)

    key_dir = directory / cfg.custodian.key_dir
    key_dir.mkdir(parents=True, exist_ok=True)
    secret = BfvSecretContext.generate(BfvParams())
    write_private(key_dir / "bfv-secret.bin", secret.to_bytes())
    signing = SigningKey.generate(secrets.token_bytes)
    write_private(key_dir / "signing.key", signing.to_pem())
    (key_dir / "signing.pub").write_text(signing.public_bytes.hex() + "\n")
    custodian_tls = issue_tls_cert(
        ca,
        Identity(Role.CUSTODIAN, "custodian"),
        dns_names=(cfg.custodian.server_name, *SERVER_DNS),
        ip_addresses=SERVER_IPS,
    )
    _write_public(key_dir / "tls.crt", custodian_tls.cert_pem)
    write_private(key_dir / "tls.key", custodian_tls.key_pem)

    (directory / cfgmod.CONFIG_NAME).write_text(dump_config(cfg))
    make_mac_key(cfgmod.resolve(directory, cfg.store.mac_key))
    open_store(cfg.store.url, base_dir=directory, create=True).close()
    open_store(cfg.custodian.store_url, base_dir=directory, create=True).close()


def _ca(directory: Path, cfg: cfgmod.AggregatorConfig, ca_key: Path | None) -> KeyAndCert:
    key_path = ca_key or (cfgmod.resolve(directory, cfg.tls.ca_key) if cfg.tls.ca_key else None)
    if key_path is None or not key_path.exists():
        raise FailedPrecondition(
            "the CA key is not in the aggregator directory; pass --ca-key", field="--ca-key"
        )
    return KeyAndCert(
        key_pem=key_path.read_bytes(),
        cert_pem=cfgmod.resolve(directory, cfg.tls.ca_cert).read_bytes(),
    )


def enroll(
    directory: Path,
    name: str,
    out: Path,
    *,
    role: Role = Role.PARTY,
    address: str | None = None,
    ca_key: Path | None = None,
) -> PartyConfig:
    """Enroll a party (or a report reader) and write its bundle directory to ``out``."""
    cfg = cfgmod.load(directory)
    if role not in (Role.PARTY, Role.READER):
        raise InvalidArgument("only party and reader identities are enrolled", field="--role")
    identity = Identity(role, name)
    if out.exists() and any(out.iterdir()):
        raise AlreadyExists(f"bundle directory {out} is not empty", field="-o")
    ca = _ca(directory, cfg, ca_key)
    tls = issue_tls_cert(ca, identity)
    signing = SigningKey.generate(secrets.token_bytes)
    identity_cert = issue_identity_cert(ca, identity, signing.public_bytes)
    if role is Role.PARTY:
        # Both registries: the aggregator's, and the custodian's own (receipts are
        # checked against it, so the aggregator alone cannot add parties).
        stores = registries(directory, cfg)
        try:
            for store in stores:  # check both before writing either
                if any(p.name == name for p in store.parties()):
                    raise AlreadyExists(f"party {name!r} is already enrolled", field="name")
            for store in stores:
                with store.transaction():
                    store.enroll(name, identity_cert)
                    store.audit("", "party_enrolled", party=name, role=role.value)
        finally:
            for store in stores:
                store.close()
    else:
        store = registries(directory, cfg)[0]
        try:
            store.audit("", "reader_enrolled", reader=name)
        finally:
            store.close()
    custodian_pub = cfgmod.resolve(directory, cfg.custodian.key_dir) / "signing.pub"
    party_cfg = PartyConfig(
        name=name,
        role=role.value,
        aggregator=address or cfg.server.listen,
        server_name=cfg.server.server_name,
        custodian_public_key=custodian_pub.read_text().strip(),
    )
    out.mkdir(parents=True, exist_ok=True)
    _write_public(out / "ca.crt", ca.cert_pem)
    _write_public(out / "tls.crt", tls.cert_pem)
    write_private(out / "tls.key", tls.key_pem)
    _write_public(out / "identity.crt", identity_cert)
    write_private(out / "identity.key", signing.to_pem())
    (out / BUNDLE_CONFIG).write_text(dump_config(party_cfg))
    return party_cfg


def make_mac_key(path: Path) -> bool:
    """Write a fresh store MAC key to ``path`` (0600) unless one is there; whether it did."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, (secrets.token_bytes(MAC_KEY_BYTES).hex() + "\n").encode())
    return True


def load_mac_key(directory: Path, cfg: cfgmod.AggregatorConfig) -> bytes:
    """The store MAC key of ``[store] mac_key``; ConfigError naming it when it is missing
    or malformed."""
    path = cfgmod.resolve(directory, cfg.store.mac_key)
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise ConfigError(
            f"{cfg.store.mac_key} is missing: `blindsum aggregator create-store DIR` makes "
            "one for a single aggregator; replicas of one store must share the same file",
            field="store.mac_key",
        ) from None
    except (OSError, UnicodeDecodeError):
        raise ConfigError(f"cannot read {cfg.store.mac_key}", field="store.mac_key") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != MAC_KEY_BYTES:
        raise ConfigError(
            f"{cfg.store.mac_key} must hold {MAC_KEY_BYTES} bytes in hex", field="store.mac_key"
        )
    return key


def create_store(directory: Path) -> list[str]:
    """Create the tables of the stores ``aggregator.toml`` names ([store] url and
    [custodian] store_url) where they do not exist yet, e.g. a new PostgreSQL database
    after changing the URL, and give the rows written before store MACs (schema
    version 5) their MAC. Nothing else creates a store: ``serve``, ``enroll`` and the
    rest refuse a database without them. Returns what was done, per store."""
    cfg = cfgmod.load(directory)
    done = []
    if make_mac_key(cfgmod.resolve(directory, cfg.store.mac_key)):
        done.append(f"store.mac_key: created {cfg.store.mac_key}")
    for key, url in (
        ("store.url", cfg.store.url),
        ("custodian.store_url", cfg.custodian.store_url),
    ):
        try:
            open_store(url, base_dir=directory).close()
            done.append(f"{key}: already a blindsum store")
        except NoStore:
            open_store(url, base_dir=directory, create=True).close()
            done.append(f"{key}: created")
    # Rows written before store MACs get one now: once, by the operator, trusted as
    # they are (`aggregator check` lists them first). Nothing else adds a MAC.
    stores = registries(directory, cfg)
    try:
        added = stores[0].backfill_macs()
        linked = [s.backfill_audit_chain() for s in stores]
    finally:
        for store in stores:
            store.close()
    if added:
        done.append(f"store.url: MACs added to {added} rows written before store MACs")
    for key, count in zip(("store.url", "custodian.store_url"), linked, strict=True):
        if count:
            done.append(f"{key}: {count} audit rows written before the audit chain linked")
    return done


def registries(directory: Path, cfg: cfgmod.AggregatorConfig) -> list[Store]:
    """The aggregator's store (with its MAC key, so audit rows are linked with it) and
    the custodian's (its chain is unkeyed: see docs/THREAT_MODEL.md, "The audit log")."""
    aggregator_store = open_store(cfg.store.url, base_dir=directory)
    try:
        aggregator_store.use_mac_key(load_mac_key(directory, cfg))
        custodian_store = open_store(cfg.custodian.store_url, base_dir=directory)
    except BaseException:
        aggregator_store.close()
        raise
    return [aggregator_store, custodian_store]


def revoke(directory: Path, name: str) -> None:
    """Revoke a party in the aggregator's and the custodian's registries."""
    cfg = cfgmod.load(directory)
    stores = registries(directory, cfg)
    try:
        for store in stores:
            with store.transaction():
                store.revoke(name)
                store.audit("", "party_revoked", party=name)
    finally:
        for store in stores:
            store.close()


#: How long, by default, certificates a renewal replaces are still accepted.
RENEW_OVERLAP_DAYS = 7


def renew(
    directory: Path,
    name: str,
    *,
    bundle: Path,
    overlap_days: int = RENEW_OVERLAP_DAYS,
    ca_key: Path | None = None,
    now: int | None = None,
) -> tuple[int, int]:
    """Reissue a party's TLS certificate (a new key) and identity certificate (the same
    Ed25519 identity key, so rounds in flight and signatures it made stay valid), into
    its bundle directory ``bundle``. For ``overlap_days`` the certificates they replace
    are still accepted; after that the aggregator refuses them (UNAUTHENTICATED).
    Returns (the new certificates' not-before, the end of the overlap), UTC ms."""
    if overlap_days < 0:
        raise InvalidArgument("must be 0 or more days", field="--overlap-days")
    cfg = cfgmod.load(directory)
    identity = Identity(Role.PARTY, name)
    try:
        own = load_bundle(bundle)
    except (OSError, ConfigError) as exc:
        raise InvalidArgument(f"not a party bundle ({exc})", field="--bundle") from None
    if own.identity_key is None or own.config.name != name:
        raise InvalidArgument(f"it is not the bundle of party {name!r}", field="--bundle")
    stores = registries(directory, cfg)
    try:
        record = stores[0].party(name)
        if record.revoked:
            raise FailedPrecondition(f"party {name!r} is revoked", field="name")
        ca = _ca(directory, cfg, ca_key)
        _, enrolled_key = verify_identity_cert(
            record.identity_cert_pem, ca.cert_pem, expected=identity
        )
        if own.identity_key.public_bytes != enrolled_key:
            raise InvalidArgument(
                f"the bundle's identity key is not the one {name!r} enrolled", field="--bundle"
            )
        # Certificates carry whole seconds: the new ones must start strictly after the
        # ones they replace (issued together with the enrolled identity certificate),
        # or the two could not be told apart once the overlap is over.
        before = cert_not_before_ms(record.identity_cert_pem)
        for _ in range(5):
            tls = issue_tls_cert(ca, identity)
            renewed_ms = cert_not_before_ms(tls.cert_pem)
            if renewed_ms > before:
                break
            time.sleep(1.0)
        else:
            raise FailedPrecondition("the clock did not move on; renew again", field="name")
        identity_cert = issue_identity_cert(ca, identity, enrolled_key)
        until = (now if now is not None else now_ms()) + overlap_days * 86_400_000
        for store in stores:
            with store.transaction():
                store.renew(name, identity_cert, renewed_ms=renewed_ms, old_until_ms=until)
                store.audit("", "party_renewed", party=name, old_certs_until_ms=until)
    finally:
        for store in stores:
            store.close()
    # The bundle last: a failure above leaves it as it was.
    write_private(bundle / "tls.key", tls.key_pem, overwrite=True)
    _write_public(bundle / "tls.crt", tls.cert_pem)
    _write_public(bundle / "identity.crt", identity_cert)
    return renewed_ms, until


def renew_server(directory: Path, *, ca_key: Path | None = None) -> list[str]:
    """Reissue the aggregator's server certificate and the embedded custodian's TLS
    certificate (new keys, the same names and addresses, a fresh validity), replacing
    the files in place; ``serve`` uses them from its next start. Returns the files
    written. A server certificate that did not come from this CA (``init --cert``) is
    left to its issuer: FailedPrecondition."""
    cfg = cfgmod.load(directory)
    ca = _ca(directory, cfg, ca_key)
    jobs = [
        (
            Identity(Role.AGGREGATOR, "aggregator"),
            cfgmod.resolve(directory, cfg.tls.cert),
            cfgmod.resolve(directory, cfg.tls.key),
            (cfg.server.server_name, *SERVER_DNS),
        )
    ]
    if cfg.custodian.embedded:
        key_dir = cfgmod.resolve(directory, cfg.custodian.key_dir)
        jobs.append(
            (
                Identity(Role.CUSTODIAN, "custodian"),
                key_dir / "tls.crt",
                key_dir / "tls.key",
                (cfg.custodian.server_name, *SERVER_DNS),
            )
        )
    issued = []
    for identity, cert_path, key_path, names in jobs:
        current = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if current.issuer != x509.load_pem_x509_certificate(ca.cert_pem).subject:
            raise FailedPrecondition(
                f"{cert_path.name} was not issued by this CA: renew it with its issuer",
                field="tls.cert",
            )
        issued.append(
            (
                cert_path,
                key_path,
                issue_tls_cert(ca, identity, dns_names=names, ip_addresses=SERVER_IPS),
            )
        )
    written = []
    for cert_path, key_path, tls in issued:  # every certificate made before any is written
        write_private(key_path, tls.key_pem, overwrite=True)
        _write_public(cert_path, tls.cert_pem)
        written += [str(cert_path.relative_to(directory)), str(key_path.relative_to(directory))]
    return written


#: Where a rotation keeps the custodian's retired BFV keys (under its key directory),
#: one file per key, named by the SHA-256 of its public context.
RETIRED_DIR = "retired"


@dataclass(frozen=True)
class Rotation:
    new_context: str  # hex hash; "" when only pruning
    retired: str  # the hash of the key retired by this rotation ("" when pruning)
    pruned: tuple[str, ...]  # retired keys deleted: no open round uses them
    kept: tuple[str, ...]  # retired keys still held for open rounds


def rotate_bfv(directory: Path, *, prune_only: bool = False) -> Rotation:
    """Rotate the embedded custodian's BFV key: the current key is retired (kept under
    ``custodian/retired/`` until no open he round uses it), a new one becomes current.
    Rounds opened from then on use the new key; each open round keeps the key it opened
    with. Retired keys no open round uses are deleted. ``serve`` uses the new key from
    its next start."""
    cfg = cfgmod.load(directory)
    key_dir = cfgmod.resolve(directory, cfg.custodian.key_dir)
    current_path = key_dir / "bfv-secret.bin"
    current = BfvSecretContext.from_bytes(current_path.read_bytes())
    current_hash = context_hash(current.public_bytes()).hex()
    store = open_store(cfg.store.url, base_dir=directory)
    try:
        in_use = store.open_he_contexts()
    finally:
        store.close()
    if not prune_only and "" in in_use:
        raise FailedPrecondition(
            "an open he round from before key rotation does not name its key: let it "
            "finish (or abort it) before rotating",
            field="custodian",
        )
    retired_dir = key_dir / RETIRED_DIR
    retired_dir.mkdir(mode=0o700, exist_ok=True)
    pruned, kept = [], []
    for path in sorted(retired_dir.glob("*.bin")):
        if path.stem in in_use:
            kept.append(path.stem)
        else:
            path.unlink()
            pruned.append(path.stem)
    if prune_only:
        return Rotation("", "", tuple(pruned), tuple(kept))
    write_private(retired_dir / f"{current_hash}.bin", current.to_bytes())
    fresh = BfvSecretContext.generate(current.params)
    write_private(current_path, fresh.to_bytes(), overwrite=True)
    new_hash = context_hash(fresh.public_bytes()).hex()
    return Rotation(new_hash, current_hash, tuple(pruned), (*kept, current_hash))
