"""The aggregator's one typed configuration file, ``DIR/aggregator.toml``.

Relative paths are resolved against the aggregator directory. Unknown keys are
rejected by :func:`blindsum.config.load_config`. Secrets (private keys) live in
their own 0600 files; the config only names them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from blindsum.config import load_config
from blindsum.errors import ConfigError, InvalidArgument
from blindsum.protocol.params import Adversary, ThreatModel

CONFIG_NAME = "aggregator.toml"
#: Written by ``aggregator serve`` once it has bound: the address it listens on.
ADDRESS_FILE = "aggregator.addr"


@dataclass(frozen=True)
class ServerSection:
    listen: str = "127.0.0.1:7443"
    #: The DNS name in the server certificate that clients verify.
    server_name: str = "blindsum-aggregator"
    #: How often phase deadlines are checked.
    tick_interval_s: float = 0.25
    #: RPCs served at once; more get RESOURCE_EXHAUSTED. Each party holds at most
    #: one long poll, so this bounds parties waiting at once, with room for others.
    max_concurrent_rpcs: int = 20_000


@dataclass(frozen=True)
class StoreSection:
    #: ``sqlite:///aggregator.sqlite`` (relative to DIR) or ``postgresql://...``.
    url: str = "sqlite:///aggregator.sqlite"
    #: The key (hex, 0600, relative to DIR) that MACs every stored payload and running
    #: sum. ``init`` makes it; every replica of one store needs the same file.
    mac_key: str = "store.key"


@dataclass(frozen=True)
class TlsSection:
    ca_cert: str = "ca/ca.crt"
    #: Empty when the CA key is held elsewhere; ``enroll`` then needs ``--ca-key``.
    ca_key: str = "ca/ca.key"
    cert: str = "tls/server.crt"
    key: str = "tls/server.key"
    admin_cert: str = "tls/admin.crt"
    admin_key: str = "tls/admin.key"


@dataclass(frozen=True)
class CustodianSection:
    #: Run the custodian service inside the aggregator process (on its own port).
    embedded: bool = True
    listen: str = "127.0.0.1:0"
    #: Address of a remote custodian when ``embedded`` is false.
    address: str = ""
    server_name: str = "blindsum-custodian"
    key_dir: str = "custodian"
    #: The custodian's own floor on receipts, whatever the aggregator asks for.
    min_receipts: int = 3
    store_url: str = "sqlite:///custodian/custodian.sqlite"


@dataclass(frozen=True)
class RoundsSection:
    default_phase_timeout_s: int = 60
    #: Above this many parties, secagg uses a sparse (Harary) neighbour graph.
    sparse_above: int = 64
    default_min_contributors: int = 3
    max_parties: int = 10_000
    max_vector_length: int = 1 << 20
    #: The secagg threat model rounds are opened with unless they name their own
    #: (docs/THREAT_MODEL.md): the degree and threshold are derived from it.
    corrupt_fraction: float = 0.1
    dropout_fraction: float = 0.1
    #: "deviating" (the aggregator may lie about dropouts and lists) or "curious".
    adversary: str = "deviating"
    privacy_bits: int = 40
    correctness_bits: int = 20
    #: Seconds a replica's lease on driving a round lasts unless renewed (every tick). A
    #: killed replica's rounds are taken over after this long.
    lease_ttl_s: float = 10.0

    def threat(self) -> ThreatModel:
        """The configured threat model; ConfigError naming the ``rounds`` key at fault."""
        try:
            adversary = Adversary(self.adversary)
        except ValueError:
            raise ConfigError(
                f"must be one of {', '.join(a.value for a in Adversary)}",
                field="rounds.adversary",
            ) from None
        try:
            return ThreatModel(
                corrupt_fraction=self.corrupt_fraction,
                dropout_fraction=self.dropout_fraction,
                adversary=adversary,
                privacy_bits=self.privacy_bits,
                correctness_bits=self.correctness_bits,
            )
        except InvalidArgument as exc:
            raise ConfigError(str(exc).split(": ", 1)[-1], field=f"rounds.{exc.field}") from None


@dataclass(frozen=True)
class ReleaseSection:
    """Differential privacy, budget, SLOs: see docs/THREAT_MODEL.md and README."""

    #: DP for rounds opened without --dp: "off", "central" or "distributed".
    dp: str = "central"
    #: zCDP rho one release costs by default (per round, unit: one customer).
    rho: float = 0.5
    #: zCDP budget per campaign and window; a release that would exceed it is refused.
    budget_rho: float = 2.0
    #: Ledger window: "week" (the ISO week, UTC, in which the round's ticket window
    #: starts), "month" or "all".
    window: str = "week"
    #: delta of the (epsilon, delta) conversion printed in reports.
    delta: float = 1e-6
    #: Confidence level of the reported intervals and of the flag tests.
    confidence: float = 0.95
    #: Service-level objectives; a negative value disables one.
    slo_escalation_rate_max_pct: float = 15.0
    slo_resolution_p90_max_hours: float = 72.0
    slo_csat_mean_min: float = 3.5
    #: Earlier releases of a campaign used for trends and movement flags.
    history: int = 8
    #: Let `open-round --window` name the ledger window, and let a round cover a ticket
    #: window that is not over yet (replays, the demo, tests). A fresh window name is a
    #: fresh budget, and a window not over gives a partial report: off by default.
    allow_window_override: bool = False


@dataclass(frozen=True)
class MetricsSection:
    #: HOST:PORT of the plain-HTTP probe server (/healthz, /readyz); "" (off) by
    #: default. It is unauthenticated: anything beyond loopback is the operator's choice.
    listen: str = ""


@dataclass(frozen=True)
class AuditSection:
    #: A caller fetching more reports than this in an hour is flagged (unusual_access).
    report_fetches_per_hour: int = 20
    #: Refusals audited per caller a minute; more are flagged instead (unusual_access).
    refusals_per_minute: int = 30


@dataclass(frozen=True)
class AggregatorConfig:
    server: ServerSection = field(default_factory=ServerSection)
    store: StoreSection = field(default_factory=StoreSection)
    tls: TlsSection = field(default_factory=TlsSection)
    custodian: CustodianSection = field(default_factory=CustodianSection)
    rounds: RoundsSection = field(default_factory=RoundsSection)
    release: ReleaseSection = field(default_factory=ReleaseSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    audit: AuditSection = field(default_factory=AuditSection)
    log_level: str = "INFO"


def load(directory: Path) -> AggregatorConfig:
    return load_config(directory / CONFIG_NAME, AggregatorConfig)


def resolve(directory: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else directory / path
