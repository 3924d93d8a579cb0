"""Prometheus metrics of a running aggregator (issue 13, item 2), on the plain-HTTP
probe port (``[metrics] listen``) at ``/metrics``.

Counters and histograms are updated where things happen (calls, refusals, phase
changes, statements, decryptions). What the store already knows (rounds by mode
and state, the DP ledger, certificate expiry) is read when Prometheus scrapes, so
replicas agree and nothing drifts. Every family is named ``blindsum_*``; the full
list is in docs/DEPLOYING.md, "Monitoring".

Nothing here carries a party's numbers, a key or a report: labels are RPC names,
status codes, roles, refusal reasons, modes, phases, campaign and window names, and
certificate names.
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from cryptography import x509
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from blindsum import __version__
from blindsum.log import get_logger

if TYPE_CHECKING:
    from aggregator.config import AggregatorConfig
    from aggregator.store import Store

log = get_logger("blindsum.aggregator.metrics")

#: How long the gauges read from the store are reused between scrapes.
STORE_GAUGES_TTL_S = 15.0
#: A certificate expiring within this many days is warned about (log and ``status``).
EXPIRY_WARNING_DAYS = 30
#: Ledger windows charged within this many days are exported (older ones are history,
#: and exporting every window ever would grow the series without bound).
LEDGER_RECENT_DAYS = 35
_DAY_MS = 86_400_000

#: Phase durations run from seconds (a small round) to the phase timeout (hours).
_PHASE_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 14400)
_STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5)


@dataclass(frozen=True)
class CertInfo:
    """A certificate the aggregator depends on: what it is, its name, when it ends."""

    kind: str  # "ca", "server", "admin", "custodian", "party_identity", ...
    name: str
    not_after_ms: int


def cert_not_after_ms(pem: bytes) -> int:
    cert = x509.load_pem_x509_certificate(pem)
    return int(cert.not_valid_after_utc.timestamp() * 1000)


def directory_certs(base: Path, files: Iterable[tuple[str, str, str]]) -> list[CertInfo]:
    """(kind, name, path relative to ``base``) -> CertInfo, for the files that exist."""
    out = []
    for kind, name, rel in files:
        path = base / rel
        if rel and path.is_file():
            try:
                out.append(CertInfo(kind, name, cert_not_after_ms(path.read_bytes())))
            except ValueError:
                log.warning("certificate_unreadable", path=rel)
    return out


def aggregator_certs(directory: Path, cfg: AggregatorConfig) -> list[CertInfo]:
    """The certificates in the aggregator's directory that it serves or trusts with."""
    key_dir = cfg.custodian.key_dir
    return directory_certs(
        directory,
        [
            ("ca", "ca", cfg.tls.ca_cert),
            ("server", "server", cfg.tls.cert),
            ("admin", "admin", cfg.tls.admin_cert),
            ("custodian", "custodian", f"{key_dir}/tls.crt" if cfg.custodian.embedded else ""),
        ],
    )


def party_certs(store: Store) -> list[CertInfo]:
    """The identity certificate of every party or reader enrolled and not revoked (one
    that does not parse is logged and left out)."""
    out = []
    for p in store.parties():
        if p.revoked:
            continue
        try:
            out.append(CertInfo("party_identity", p.name, cert_not_after_ms(p.identity_cert_pem)))
        except ValueError:
            log.warning("certificate_unreadable", party=p.name)
    return out


class _StoreCollector(Collector):
    """What the store knows, read at scrape time."""

    def __init__(
        self,
        store: Store,
        *,
        budget_rho: float,
        certs: Callable[[], list[CertInfo]],
        clock_ms: Callable[[], int],
    ) -> None:
        self._store = store
        self._budget = budget_rho
        self._certs = certs
        self._clock_ms = clock_ms
        self._cached: tuple[float, list[GaugeMetricFamily]] | None = None
        self._lock = threading.Lock()

    def describe(self) -> list[Any]:
        return []  # collected on demand; nothing fixed to describe

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The families, read from the store at most every STORE_GAUGES_TTL_S: many
        scrapers at once cost one read (every enrolled certificate is parsed)."""
        with self._lock:
            if self._cached is None or time.monotonic() - self._cached[0] >= STORE_GAUGES_TTL_S:
                self._cached = (time.monotonic(), list(self._read()))
            families = self._cached[1]
        yield from families

    def _read(self) -> Iterator[GaugeMetricFamily]:
        rounds = GaugeMetricFamily(
            "blindsum_rounds", "Rounds in the store, by mode and state.", labels=["mode", "state"]
        )
        spent = GaugeMetricFamily(
            "blindsum_dp_budget_spent_rho",
            "zCDP rho charged to a campaign's ledger window (recent windows).",
            labels=["campaign", "window"],
        )
        left = GaugeMetricFamily(
            "blindsum_dp_budget_left_rho",
            "zCDP rho left in a campaign's ledger window (recent windows).",
            labels=["campaign", "window"],
        )
        expiry = GaugeMetricFamily(
            "blindsum_certificate_expiry_days",
            "Days until a certificate expires (negative: expired).",
            labels=["kind", "name"],
        )
        up = GaugeMetricFamily("blindsum_store_up", "1 if the store answered this scrape, else 0.")
        now = self._clock_ms()
        try:
            for mode, state, count in self._store.round_counts():
                rounds.add_metric([mode, state], count)
            since = now - LEDGER_RECENT_DAYS * _DAY_MS
            for campaign, window, rho, last_ms in self._store.ledger_totals():
                if last_ms >= since:
                    spent.add_metric([campaign, window], rho)
                    left.add_metric([campaign, window], max(0.0, self._budget - rho))
            certs = self._certs() + party_certs(self._store)
            up.add_metric([], 1)
        except Exception as exc:
            log.warning("metrics_store_unavailable", exc=exc)
            certs = self._certs()
            up.add_metric([], 0)
        for c in certs:
            expiry.add_metric([c.kind, c.name], (c.not_after_ms - now) / _DAY_MS)
        yield from (rounds, spent, left, expiry, up)


class Metrics:
    """One aggregator's metrics, in a registry of its own (several aggregators in one
    test process do not mix)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.calls = Counter(
            "blindsum_rpc_calls",
            "Calls answered, by RPC and gRPC status code.",
            ["rpc", "code"],
            registry=r,
        )
        self.refused = Counter(
            "blindsum_refused_calls",
            "Calls refused before the servicer ran, by the caller's role and the reason.",
            ["role", "reason"],
            registry=r,
        )
        self.phase_seconds = Histogram(
            "blindsum_phase_duration_seconds",
            "How long a round phase stayed open, by mode and phase.",
            ["mode", "phase"],
            buckets=_PHASE_BUCKETS,
            registry=r,
        )
        self.store_seconds = Histogram(
            "blindsum_store_statement_seconds",
            "Time per store statement.",
            buckets=_STORE_BUCKETS,
            registry=r,
        )
        self.store_errors = Counter(
            "blindsum_store_errors",
            "Store statements that failed, by error type.",
            ["error"],
            registry=r,
        )
        self.decryptions = Counter(
            "blindsum_custodian_decryptions",
            "Custodian decryption requests, by outcome (decrypted, replayed, refused).",
            ["outcome"],
            registry=r,
        )
        self.unusual_access = Counter(
            "blindsum_unusual_access",
            "Callers flagged for unusual access (report_fetches, refusals).",
            ["kind"],
            registry=r,
        )
        self.campaign_rounds = Counter(
            "blindsum_campaign_rounds_opened",
            "Rounds a campaign's schedule opened on this replica.",
            ["campaign"],
            registry=r,
        )
        Info("blindsum_build", "The running blindsum.", registry=r).info(
            {"version": __version__, "python": platform.python_version()}
        )

    def watch_store(
        self,
        store: Store,
        *,
        budget_rho: float,
        certs: Callable[[], list[CertInfo]],
        clock_ms: Callable[[], int],
    ) -> None:
        """Export what ``store`` knows at each scrape, and time its statements."""
        self.registry.register(
            _StoreCollector(store, budget_rho=budget_rho, certs=certs, clock_ms=clock_ms)
        )
        store.observe(self._statement)

    def _statement(self, seconds: float, error: BaseException | None) -> None:
        self.store_seconds.observe(seconds)
        if error is not None:
            self.store_errors.labels(type(error).__name__).inc()

    # -- hooks -------------------------------------------------------------------

    def call(self, method: str, code: grpc.StatusCode | None) -> None:
        self.calls.labels(method.rsplit("/", 1)[-1], (code or grpc.StatusCode.OK).name).inc()

    def refusal(self, role: str, reason: str) -> None:
        self.refused.labels(role, reason).inc()

    def phase_closed(self, mode: str, phase: str, seconds: float) -> None:
        self.phase_seconds.labels(mode, phase).observe(max(0.0, seconds))

    def decryption(self, outcome: str) -> None:
        self.decryptions.labels(outcome).inc()

    def exposition(self) -> tuple[bytes, str]:
        """The text format of every family, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def expiring(certs: Iterable[CertInfo], now_ms: int, days: int = EXPIRY_WARNING_DAYS) -> list[str]:
    """One line per certificate that expires within ``days`` (or has expired)."""
    out = []
    for c in sorted(certs, key=lambda c: c.not_after_ms):
        left = (c.not_after_ms - now_ms) / _DAY_MS
        if left <= days:
            when = datetime.fromtimestamp(c.not_after_ms / 1000, UTC).strftime("%Y-%m-%d")
            state = "expired" if left < 0 else f"expires in {left:.0f} days"
            out.append(f"{c.kind} certificate {c.name!r} {state} ({when})")
    return out
