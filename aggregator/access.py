"""Who read what, who was refused, and unusual access (issue 13, item 7).

Every report fetch is audited (who, which round); so is every call refused before its
servicer ran (who, which RPC, why), up to ``refusals_per_minute`` rows per caller a
minute. Two patterns count as unusual access, as privacy guidance asks an operator to
watch for: a caller fetching more than ``report_fetches_per_hour`` reports in an
hour, and a caller refused more than ``refusals_per_minute`` times in a minute. Each
raises a log event (``unusual_access``), a metric and an audit row, once per caller
and pattern per window, so a flood cannot flood the log in turn.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import grpc

from blindsum.log import get_logger

if TYPE_CHECKING:
    from aggregator.config import AuditSection
    from aggregator.metrics import Metrics
    from aggregator.store import Store

log = get_logger("blindsum.aggregator.access")

_HOUR_MS = 3_600_000
_MINUTE_MS = 60_000


class _Window:
    """Event times per caller within a sliding window, and when each was last flagged."""

    def __init__(self, span_ms: int) -> None:
        self.span_ms = span_ms
        self.times: dict[str, deque[int]] = {}
        self.flagged: dict[str, int] = {}

    def add(self, who: str, now: int) -> int:
        q = self.times.setdefault(who, deque())
        q.append(now)
        while q and q[0] <= now - self.span_ms:
            q.popleft()
        if len(self.times) > 10_000:  # bounded: forget the quietest callers
            for k in [k for k, v in self.times.items() if not v or v[-1] <= now - self.span_ms]:
                self.times.pop(k, None)
        return len(q)

    def first_flag(self, who: str, now: int) -> bool:
        last = self.flagged.get(who)
        if last is not None and last > now - self.span_ms:
            return False
        self.flagged[who] = now
        return True


class AccessWatch:
    """Audits report fetches and refusals, and flags unusual access. Thread-safe: it
    is told from the event loop (refusals) and from worker threads (fetches); store
    writes run on ``run`` (a worker thread)."""

    def __init__(
        self,
        store: Store,
        limits: AuditSection,
        *,
        clock_ms: Callable[[], int],
        run: Callable[[Callable[[], None]], None],
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self._limits = limits
        self._clock_ms = clock_ms
        self._run = run
        self._metrics = metrics
        self._lock = threading.Lock()
        self._fetches = _Window(_HOUR_MS)
        self._refusals = _Window(_MINUTE_MS)

    def report_fetched(self, who: str, round_id: str) -> None:
        """Audit one report fetch (on the calling worker thread)."""
        now = self._clock_ms()
        with self._lock:
            count = self._fetches.add(who, now)
            unusual = count > self._limits.report_fetches_per_hour and self._fetches.first_flag(
                who, now
            )
        self._store.audit(round_id, "report_fetched", who=who)
        if unusual:
            self._flag(who, "report_fetches", f"{count} report fetches within an hour")

    def refused(self, who: str, method: str, reason: str) -> None:
        """Audit one refusal (called on the event loop; the write runs elsewhere)."""
        now = self._clock_ms()
        with self._lock:
            count = self._refusals.add(who, now)
            audit = count <= self._limits.refusals_per_minute
            unusual = not audit and self._refusals.first_flag(who, now)
        if audit:
            self._run(
                lambda: self._store.audit(
                    "", "call_refused", who=who, rpc=method.rsplit("/", 1)[-1], reason=reason
                )
            )
        if unusual:
            self._run(
                lambda: self._flag(who, "refusals", f"more than {count - 1} refusals in a minute")
            )

    def _flag(self, who: str, kind: str, what: str) -> None:
        log.warning("unusual_access", who=who, kind=kind, detail=what)
        if self._metrics is not None:
            self._metrics.unusual_access.labels(kind).inc()
        self._store.audit("", "unusual_access", who=who, kind=kind, detail=what)


class ServiceObserver:
    """The interceptor's observer for a running aggregator: metrics and the access
    watch, either of which may be absent."""

    def __init__(self, metrics: Metrics | None, watch: AccessWatch | None) -> None:
        self._metrics = metrics
        self._watch = watch

    def call(self, method: str, code: grpc.StatusCode | None) -> None:
        if self._metrics is not None:
            self._metrics.call(method, code)

    def refusal(self, role: str, reason: str, *, who: str, method: str) -> None:
        if self._metrics is not None:
            self._metrics.refusal(role, reason)
        if self._watch is not None:
            self._watch.refused(who, method, reason)
