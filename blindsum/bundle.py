"""A party's (or report reader's) credential bundle: one directory.

::

    BUNDLE/party.toml     typed config: name, role, aggregator address, pins
    BUNDLE/ca.crt         the enrollment CA
    BUNDLE/tls.crt/.key   mTLS client certificate (key 0600)
    BUNDLE/identity.crt   CA-issued certificate over the Ed25519 identity key
    BUNDLE/identity.key   Ed25519 identity key (0600)

``aggregator enroll`` writes it; the party node and report readers load it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from blindsum.config import load_config
from blindsum.crypto.sign import SigningKey, VerifyKey
from blindsum.errors import ConfigError
from blindsum.transport.pki import Identity, KeyAndCert, Role

BUNDLE_CONFIG = "party.toml"


@dataclass(frozen=True)
class PartyConfig:
    name: str
    aggregator: str
    role: str = "party"
    server_name: str = "blindsum-aggregator"
    #: Hex Ed25519 key of the he custodian; parties pin it and check the public context.
    custodian_public_key: str = ""
    #: Where the node keeps per-round protocol state (relative to the bundle).
    state_dir: str = "state"
    poll_interval_s: float = 0.2
    rpc_timeout_s: float = 30.0
    max_attempts: int = 8
    #: Privacy policy checked against every round (party/privacy.py): the weakest DP
    #: mode accepted ("off", "central", "distributed") and the largest rho (0: no cap).
    min_dp: str = "off"
    max_rho: float = 0.0
    #: A round without DP releases exact totals: the party takes part in one only
    #: with this explicit consent.
    allow_dp_off: bool = False
    #: The party's own zCDP budget per ISO week of its own clock, over every round it
    #: joins, whatever the campaign or window is called (0: no cap).
    max_rho_per_window: float = 2.0
    #: Regions this party serves. With DP on, its contributor indicators come from this
    #: list (empty: every region of the round's schema), never from its tickets, so no
    #: single customer can flip them; tickets in a region not listed are quarantined
    #: (``unserved_region``); a metrics file with data in one is refused.
    regions: tuple[str, ...] = ()
    #: A ticket export with more than this share of its rows quarantined is refused
    #: before anything is sent (``party submit/run --allow-partial`` overrides it).
    max_quarantined_share: float = 0.2
    #: The weakest secagg threat model this party accepts (docs/THREAT_MODEL.md): a
    #: round must tolerate at least this fraction of corrupt parties, defend against
    #: at least this adversary ("deviating" or "curious") and keep privacy with at
    #: least this many bits. The party then re-runs the parameter check itself.
    min_corrupt_fraction: float = 0.1
    min_adversary: str = "deviating"
    min_privacy_bits: int = 40


@dataclass(frozen=True)
class Bundle:
    path: Path
    config: PartyConfig
    ca_cert_pem: bytes
    tls: KeyAndCert = field(repr=False)
    identity_cert_pem: bytes
    identity_key: SigningKey | None = field(default=None, repr=False)

    @property
    def identity(self) -> Identity:
        return Identity(Role(self.config.role), self.config.name)

    @property
    def custodian_key(self) -> VerifyKey | None:
        key = self.config.custodian_public_key
        return VerifyKey.from_bytes(bytes.fromhex(key)) if key else None

    @property
    def state_dir(self) -> Path:
        path = Path(self.config.state_dir)
        return path if path.is_absolute() else self.path / path


def reach_advice(bundle_dir: Path) -> str:
    """What to check when the aggregator named in a bundle does not answer."""
    return (
        f"check --aggregator or `aggregator` in {bundle_dir / BUNDLE_CONFIG}, and that "
        "`blindsum aggregator serve` runs there"
    )


def load_bundle(path: Path) -> Bundle:
    """Load and sanity-check a bundle directory; errors name the missing file."""
    if not path.is_dir():
        raise ConfigError(f"bundle {path} is not a directory", field="--bundle")
    config = load_config(path / BUNDLE_CONFIG, PartyConfig)
    share = config.max_quarantined_share
    if not 0.0 <= share <= 1.0:
        raise ConfigError(
            f"must be between 0 and 1, got {share}",
            field=f"{path / BUNDLE_CONFIG}: max_quarantined_share",
        )

    def read(name: str) -> bytes:
        try:
            return (path / name).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {name}: {exc.strerror}", field="--bundle") from None

    identity_key = None
    if (path / "identity.key").exists():
        identity_key = SigningKey.from_pem(read("identity.key"))
    return Bundle(
        path=path,
        config=config,
        ca_cert_pem=read("ca.crt"),
        tls=KeyAndCert(key_pem=read("tls.key"), cert_pem=read("tls.crt")),
        identity_cert_pem=read("identity.crt"),
        identity_key=identity_key,
    )
