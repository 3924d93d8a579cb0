"""``blindsum aggregator check DIR``: verify the whole store and say what is wrong.

Run it after a restore, before trusting a store that was down, or on a schedule.
It reads everything the aggregator would read, and never changes anything:

- the database's own integrity check (SQLite ``PRAGMA integrity_check``);
- every round row decodes;
- every stored payload and running sum matches its MAC (``store.key``);
- every complete round has a release that decodes and names it, and every release
  belongs to a complete round;
- the DP ledger: every charge belongs to a complete round whose release reports the
  same rho, and every complete round with DP on was charged exactly once;
- the audit log's hash chain, in the aggregator's store (keyed by ``store.key``) and
  in the custodian's: an edited row, or one deleted before another, is named.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aggregator import config as cfgmod
from aggregator.admin import load_mac_key
from aggregator.store import SqliteStore, Store, open_store
from blindsum import reportdoc
from blindsum.errors import BlindsumError, ConfigError


@dataclass
class CheckResult:
    problems: list[str] = field(default_factory=list)
    rounds: int = 0
    payloads: int = 0
    releases: int = 0
    charges: int = 0
    audit_rows: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        counts = (
            f"{self.rounds} rounds, {self.payloads} payloads, {self.releases} releases, "
            f"{self.charges} ledger charges, {self.audit_rows} audit rows"
        )
        if self.ok:
            return f"store ok: {counts} checked"
        return f"{len(self.problems)} problems in {counts}"


def check_directory(directory: Path) -> CheckResult:
    """Check the store of the aggregator in ``directory`` (see the module docstring)."""
    result = CheckResult()
    cfg = cfgmod.load(directory)
    try:
        key = load_mac_key(directory, cfg)
    except ConfigError as exc:
        result.problems.append(str(exc))
        key = None
    try:
        # Read-only and without migrating: checking a restored backup must not change it.
        store = open_store(cfg.store.url, base_dir=directory, readonly=True)
    except ConfigError as exc:
        result.problems.append(str(exc))
        return result
    try:
        if key is not None:
            store.use_mac_key(key)
        _check(store, result)
        checked, problems = store.verify_audit()
        result.audit_rows += checked
        result.problems += problems
    finally:
        store.close()
    # The custodian's own audit log (decryptions, refusals) has a chain of its own.
    try:
        custodian_store = open_store(cfg.custodian.store_url, base_dir=directory, readonly=True)
    except ConfigError as exc:
        result.problems.append(f"custodian store: {exc}")
        return result
    try:
        checked, problems = custodian_store.verify_audit()
        result.audit_rows += checked
        result.problems += [f"custodian store: {p}" for p in problems]
    finally:
        custodian_store.close()
    return result


def _check(store: Store, result: CheckResult) -> None:
    if isinstance(store, SqliteStore):
        rows = store.integrity_check()
        if rows != ["ok"]:
            result.problems += [f"sqlite integrity_check: {r}" for r in rows[:10]]
    complete: dict[str, float | None] = {}  # round -> DP rho charged (None: DP off)
    for round_id, state in store.round_states():
        result.rounds += 1
        try:
            rec = store.round(round_id)
        except BlindsumError as exc:
            result.problems.append(exc.message)
            continue
        read, problems = store.check_payloads(round_id)
        result.payloads += read
        result.problems += problems
        try:
            store.accumulator(round_id)
        except BlindsumError as exc:
            result.problems.append(exc.message)
        except (ValueError, TypeError) as exc:  # an undecodable party list
            result.problems.append(
                f"the stored running sum of round {round_id!r} cannot be decoded ({exc})"
            )
        if state == "complete":
            complete[round_id] = None if rec.dp_mode == "off" else rec.dp_rho
    released: dict[str, float] = {}
    for round_id in store.release_ids():
        result.releases += 1
        if round_id not in complete:
            result.problems.append(f"release of round {round_id!r}, which is not complete")
            continue
        try:
            report = reportdoc.decode(store.release(round_id), field=f"release {round_id}")
        except BlindsumError as exc:
            result.problems.append(str(exc))
            continue
        if report.round_id != round_id:
            result.problems.append(f"release of round {round_id!r} names round {report.round_id!r}")
        released[round_id] = report.dp.rho
    for round_id in sorted(set(complete) - set(released)):
        result.problems.append(f"round {round_id!r} is complete but has no release")
    charged: dict[str, int] = {}
    for entry in store.ledger():
        result.charges += 1
        charged[entry.round_id] = charged.get(entry.round_id, 0) + 1
        if entry.round_id not in complete:
            result.problems.append(
                f"ledger charge of round {entry.round_id!r}, which is not complete"
            )
        elif entry.round_id in released and not math.isclose(
            entry.rho, released[entry.round_id], rel_tol=1e-9, abs_tol=1e-12
        ):
            result.problems.append(
                f"ledger charges round {entry.round_id!r} rho {entry.rho}, its release "
                f"reports {released[entry.round_id]}"
            )
    for round_id, rho in complete.items():
        times = charged.get(round_id, 0)
        if rho is not None and times != 1:
            result.problems.append(f"round {round_id!r} released with DP but charged {times} times")


@dataclass
class AuditLog:
    """What ``aggregator audit`` prints: rows as (store, id, ts_ms, round, event,
    detail), the problems the chains show (when verified) and each chain's head."""

    rows: list[tuple[str, int, int, str, str, dict[str, Any]]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    heads: dict[str, str] = field(default_factory=dict)


def audit_log(directory: Path, *, round_id: str | None = None, verify: bool = False) -> AuditLog:
    """Read both stores' audit logs (read-only), and with ``verify`` walk their chains:
    the aggregator's with its store key, the custodian's unkeyed."""
    cfg = cfgmod.load(directory)
    out = AuditLog()
    for label, url, keyed in (
        ("aggregator", cfg.store.url, True),
        ("custodian", cfg.custodian.store_url, False),
    ):
        store = open_store(url, base_dir=directory, readonly=True)
        try:
            if keyed:
                store.use_mac_key(load_mac_key(directory, cfg))
            for i, ts, rid, event, detail, _ in store.audit_rows(round_id):
                out.rows.append((label, i, ts, rid, event, detail))
            if verify:
                _, problems = store.verify_audit()
                out.problems += [f"{label} store: {p}" for p in problems]
                out.heads[label] = store.audit_head()
        finally:
            store.close()
    out.rows.sort(key=lambda r: (r[2], r[0], r[1]))
    return out
