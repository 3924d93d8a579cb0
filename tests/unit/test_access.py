"""Issue 13, item 7: report fetches and refusals are audited, and unusual access is
flagged once per caller and window (an injected clock; nothing waits)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aggregator.access import AccessWatch
from aggregator.config import AuditSection
from aggregator.metrics import Metrics
from aggregator.store import Store, open_store

READER = "spiffe://blindsum/reader/auditor"
PARTY = "spiffe://blindsum/party/team-x"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store("sqlite:///db.sqlite", base_dir=tmp_path, create=True)
    s.use_mac_key(b"k" * 32)
    yield s
    s.close()


def watch(store: Store, clock: list[int], metrics: Metrics | None = None) -> AccessWatch:
    def run_now(fn: Callable[[], None]) -> None:
        fn()

    return AccessWatch(
        store,
        AuditSection(report_fetches_per_hour=3, refusals_per_minute=2),
        clock_ms=lambda: clock[0],
        run=run_now,
        metrics=metrics,
    )


def events(store: Store, event: str) -> list[dict[str, object]]:
    return [e[3] for e in store.audit_log() if e[2] == event]


def test_every_fetch_is_audited_and_a_binge_is_flagged_once_an_hour(store: Store) -> None:
    clock, metrics = [1_000_000], Metrics()
    w = watch(store, clock, metrics)
    for i in range(6):
        clock[0] += 60_000
        w.report_fetched(READER, f"r-{i}")
    assert [e["who"] for e in events(store, "report_fetched")] == [READER] * 6
    assert [r for r, e in ((e[1], e[2]) for e in store.audit_log()) if e == "report_fetched"] == [
        f"r-{i}" for i in range(6)
    ]
    flagged = events(store, "unusual_access")
    assert flagged == [
        {"who": READER, "kind": "report_fetches", "detail": "4 report fetches within an hour"}
    ]
    assert metrics.unusual_access.labels("report_fetches")._value.get() == 1
    clock[0] += 3_600_000  # an hour later the window is quiet again
    w.report_fetched(READER, "r-late")
    assert len(events(store, "unusual_access")) == 1
    assert store.verify_audit()[1] == []


def test_refusals_are_audited_up_to_a_rate_then_flagged(store: Store) -> None:
    clock = [5_000_000]
    w = watch(store, clock)
    for _ in range(10):
        w.refused(PARTY, "/blindsum.rpc.v1.AdminService/OpenRound", "role")
    refused = events(store, "call_refused")
    assert refused == [{"who": PARTY, "rpc": "OpenRound", "reason": "role"}] * 2
    assert [e["kind"] for e in events(store, "unusual_access")] == ["refusals"]
    clock[0] += 61_000  # the next minute: audited again
    w.refused(PARTY, "/blindsum.rpc.v1.AdminService/OpenRound", "role")
    assert len(events(store, "call_refused")) == 3
    # Another caller is counted on its own.
    w.refused("unknown", "/blindsum.rpc.v1.RoundService/GetRound", "unauthenticated")
    assert events(store, "call_refused")[-1]["who"] == "unknown"
