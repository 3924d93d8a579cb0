"""Durable aggregator state behind one interface: SQLite by default, PostgreSQL optional.

Every phase input is written here before it is acknowledged, so an aggregator
that is killed mid-round rebuilds the round from the store and finishes it.
Submissions are keyed by (round, phase, party): a retried, identical submission
is recognised by its digest, and a different second one is refused.

The SQL is written once and runs on both engines; only the placeholder style,
the blob type and the connection differ.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from blindsum.crypto.encoding import encode_parts
from blindsum.errors import (
    Aborted,
    AlreadyExists,
    ConfigError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from blindsum.log import get_logger

log = get_logger("blindsum.aggregator.store")


class StaleRound(Aborted):
    """A compare-and-set on a round failed: reload it and let the current holder act."""


SCHEMA_VERSION = 6


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class RoundRecord:
    """The persisted description and lifecycle of one round."""

    round_id: str
    mode: str  # "secagg" | "he"
    state: str  # "open" | "complete" | "aborted"
    phase: str  # "advertise" | "share" | "mask" | "unmask" | "collect" | "done"
    schema_toml: str
    schema_id: str
    parties: tuple[str, ...]
    threshold: int
    min_contributors: int
    graph_degree: int
    phase_timeout_s: int
    phase_deadline_ms: int
    abort_reason: str
    created_ms: int
    updated_ms: int
    # Differential privacy declared at open (DpSpec); "off" with rho 0 when disabled.
    dp_mode: str = "off"
    dp_rho: float = 0.0
    dp_expected_parties: int = 0
    dp_campaign: str = ""
    dp_window: str = ""
    # The secagg threat model as canonical JSON ("" for he rounds and older rounds).
    threat_json: str = ""
    # The ticket window the round covers, UTC ms, end exclusive (0, 0: not windowed).
    window_start_ms: int = 0
    window_end_ms: int = 0
    # Parties caught revealing provably wrong shares: JSON list of [party, reason].
    misbehaving_json: str = "[]"
    # Bumped by every update: update_round is a compare-and-set on it, so a replica
    # that read an older version cannot overwrite what another one decided.
    version: int = 0
    # he: the hex SHA-256 of the custodian context the round uses, fixed when it opens
    # ("" for secagg and for rounds opened before key rotation existed: the current).
    he_context: str = ""

    def with_phase(self, phase: str, deadline_ms: int) -> RoundRecord:
        return replace(self, phase=phase, phase_deadline_ms=deadline_ms, updated_ms=now_ms())


@dataclass(frozen=True)
class Submission:
    round_id: str
    phase: str
    party: str
    digest: str
    payload: bytes | None
    created_ms: int


@dataclass(frozen=True)
class PartyRecord:
    name: str
    identity_cert_pem: bytes
    enrolled_ms: int
    revoked: bool
    #: The not-before time (UTC ms) of the certificates of the last renewal (0: never).
    renewed_ms: int = 0
    #: Until when certificates issued before that renewal are still accepted.
    old_certs_until_ms: int = 0

    def accepts(self, cert_issued_ms: int, now: int) -> bool:
        """Whether a certificate of this party issued at ``cert_issued_ms`` (its
        not-before) is accepted at ``now``: not revoked, and not one its renewal
        replaced once the overlap is over."""
        if self.revoked:
            return False
        return not (cert_issued_ms < self.renewed_ms and now >= self.old_certs_until_ms)


class _Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


_DDL = [
    """CREATE TABLE IF NOT EXISTS meta (
        key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS parties (
        name TEXT PRIMARY KEY, identity_cert_pem {blob} NOT NULL,
        enrolled_ms BIGINT NOT NULL, revoked INTEGER NOT NULL DEFAULT 0,
        renewed_ms BIGINT NOT NULL DEFAULT 0, old_certs_until_ms BIGINT NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS rounds (
        round_id TEXT PRIMARY KEY, mode TEXT NOT NULL, state TEXT NOT NULL, phase TEXT NOT NULL,
        schema_toml TEXT NOT NULL, schema_id TEXT NOT NULL, parties_json TEXT NOT NULL,
        threshold INTEGER NOT NULL, min_contributors INTEGER NOT NULL,
        graph_degree INTEGER NOT NULL,
        phase_timeout_s INTEGER NOT NULL, phase_deadline_ms BIGINT NOT NULL,
        abort_reason TEXT NOT NULL, created_ms BIGINT NOT NULL, updated_ms BIGINT NOT NULL,
        dp_mode TEXT NOT NULL DEFAULT 'off', dp_rho {double} NOT NULL DEFAULT 0,
        dp_expected_parties INTEGER NOT NULL DEFAULT 0,
        dp_campaign TEXT NOT NULL DEFAULT '', dp_window TEXT NOT NULL DEFAULT '',
        threat_json TEXT NOT NULL DEFAULT '', window_start_ms BIGINT NOT NULL DEFAULT 0,
        window_end_ms BIGINT NOT NULL DEFAULT 0, misbehaving_json TEXT NOT NULL DEFAULT '[]',
        version BIGINT NOT NULL DEFAULT 0, he_context TEXT NOT NULL DEFAULT '')""",
    """CREATE TABLE IF NOT EXISTS submissions (
        round_id TEXT NOT NULL, phase TEXT NOT NULL, party TEXT NOT NULL,
        digest TEXT NOT NULL, payload {blob}, created_ms BIGINT NOT NULL,
        mac TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (round_id, phase, party))""",
    """CREATE TABLE IF NOT EXISTS accumulators (
        round_id TEXT PRIMARY KEY, data {blob} NOT NULL, parties_json TEXT NOT NULL,
        updated_ms BIGINT NOT NULL, mac TEXT NOT NULL DEFAULT '')""",
    """CREATE TABLE IF NOT EXISTS releases (
        round_id TEXT PRIMARY KEY, report {blob} NOT NULL, created_ms BIGINT NOT NULL,
        campaign TEXT NOT NULL DEFAULT '')""",
    """CREATE TABLE IF NOT EXISTS dp_ledger (
        campaign TEXT NOT NULL, dp_window TEXT NOT NULL, round_id TEXT NOT NULL,
        rho {double} NOT NULL, charged_ms BIGINT NOT NULL,
        PRIMARY KEY (campaign, dp_window, round_id))""",
    """CREATE TABLE IF NOT EXISTS audit (
        id {autoinc}, ts_ms BIGINT NOT NULL, round_id TEXT NOT NULL,
        event TEXT NOT NULL, detail_json TEXT NOT NULL, chain TEXT NOT NULL DEFAULT '')""",
    """CREATE TABLE IF NOT EXISTS round_leases (
        round_id TEXT PRIMARY KEY, holder TEXT NOT NULL, token BIGINT NOT NULL,
        expires_ms BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS campaigns (
        name TEXT PRIMARY KEY, schedule TEXT NOT NULL, spec {blob} NOT NULL,
        paused INTEGER NOT NULL DEFAULT 0, created_ms BIGINT NOT NULL,
        updated_ms BIGINT NOT NULL)""",
]

#: Schema version 1 -> 2 added differential privacy: the round's DP columns, the
#: release's campaign and the budget ledger. Run in order on a version-1 store.
_MIGRATE_1_TO_2 = [
    "ALTER TABLE rounds ADD COLUMN dp_mode TEXT NOT NULL DEFAULT 'off'",
    "ALTER TABLE rounds ADD COLUMN dp_rho {double} NOT NULL DEFAULT 0",
    "ALTER TABLE rounds ADD COLUMN dp_expected_parties INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE rounds ADD COLUMN dp_campaign TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE rounds ADD COLUMN dp_window TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE releases ADD COLUMN campaign TEXT NOT NULL DEFAULT ''",
]

#: Schema version 2 -> 3 added the secagg threat model, the ticket window and the
#: parties caught misbehaving to every round.
_MIGRATE_2_TO_3 = [
    "ALTER TABLE rounds ADD COLUMN threat_json TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE rounds ADD COLUMN window_start_ms BIGINT NOT NULL DEFAULT 0",
    "ALTER TABLE rounds ADD COLUMN window_end_ms BIGINT NOT NULL DEFAULT 0",
    "ALTER TABLE rounds ADD COLUMN misbehaving_json TEXT NOT NULL DEFAULT '[]'",
]

#: Schema version 3 -> 4 added the round version (compare-and-set updates); the lease
#: table is created by the DDL above.
_MIGRATE_3_TO_4 = [
    "ALTER TABLE rounds ADD COLUMN version BIGINT NOT NULL DEFAULT 0",
]

#: Schema version 4 -> 5: a MAC on every stored payload and running sum (issue 12).
#: Rows written before have none until ``Store.backfill_macs`` (create-store).
_MIGRATE_4_TO_5 = [
    "ALTER TABLE submissions ADD COLUMN mac TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE accumulators ADD COLUMN mac TEXT NOT NULL DEFAULT ''",
]

#: Schema version 5 -> 6 (issue 13): the campaigns table (created by the DDL above) and
#: the audit log's hash chain. Rows written before have no link until
#: ``Store.backfill_audit_chain`` (create-store).
_MIGRATE_5_TO_6 = [
    "ALTER TABLE audit ADD COLUMN chain TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE parties ADD COLUMN renewed_ms BIGINT NOT NULL DEFAULT 0",
    "ALTER TABLE parties ADD COLUMN old_certs_until_ms BIGINT NOT NULL DEFAULT 0",
    "ALTER TABLE rounds ADD COLUMN he_context TEXT NOT NULL DEFAULT ''",
]

#: The PostgreSQL advisory lock that serialises appends to the audit chain.
AUDIT_LOCK_ID = 0x626C6E64_61756474  # "blnd" "audt"

#: Bytes of the key that MACs stored payloads (``[store] mac_key``).
MAC_KEY_BYTES = 32

_SUBMISSION_COLUMNS = "round_id, phase, party, digest, payload, created_ms, mac"
_PARTY_COLUMNS = "name, identity_cert_pem, enrolled_ms, revoked, renewed_ms, old_certs_until_ms"


def _party_record(row: Sequence[Any]) -> PartyRecord:
    return PartyRecord(row[0], bytes(row[1]), int(row[2]), bool(row[3]), int(row[4]), int(row[5]))


_ROUND_COLUMNS = (
    "round_id, mode, state, phase, schema_toml, schema_id, parties_json, threshold, "
    "min_contributors, graph_degree, phase_timeout_s, phase_deadline_ms, abort_reason, "
    "created_ms, updated_ms, dp_mode, dp_rho, dp_expected_parties, dp_campaign, dp_window, "
    "threat_json, window_start_ms, window_end_ms, misbehaving_json, version, he_context"
)


@dataclass(frozen=True)
class LedgerEntry:
    """One release's zCDP charge against a campaign's window."""

    campaign: str
    window: str
    round_id: str
    rho: float
    charged_ms: int


#: The columns of a round that change after it is created (update_round writes only
#: these). The rest (the schema, the invited parties: O(n) bytes) are read once per
#: process and cached while the round is open.
_ROUND_STATE_COLUMNS = (
    "round_id, state, phase, phase_deadline_ms, abort_reason, updated_ms, misbehaving_json, version"
)
#: Open rounds whose unchanging columns a store keeps in memory at most.
ROUND_CACHE_SIZE = 256


def _with_state(rec: RoundRecord, row: Sequence[Any]) -> RoundRecord:
    return replace(
        rec,
        state=row[1],
        phase=row[2],
        phase_deadline_ms=int(row[3]),
        abort_reason=row[4],
        updated_ms=int(row[5]),
        misbehaving_json=row[6],
        version=int(row[7]),
    )


class CorruptRound(FailedPrecondition):
    """A stored round row that cannot be decoded (damaged or altered). Reads of that
    round fail with this (FAILED_PRECONDITION, naming it); listings skip it and note
    its id in ``Store.corrupt_rounds``; the ticker aborts it (``force_abort``)."""


def _decode_round(row: Sequence[Any]) -> RoundRecord:
    try:
        return _round_from_row(row)
    except (ValueError, TypeError, IndexError, json.JSONDecodeError) as exc:
        raise CorruptRound(
            f"round {row[0]!r}: its stored record cannot be decoded ({type(exc).__name__})",
            field="round_id",
        ) from None


def _round_from_row(row: Sequence[Any]) -> RoundRecord:
    parties = json.loads(row[6])
    if not isinstance(parties, list) or not all(isinstance(p, str) for p in parties):
        raise TypeError("parties is not a list of names")
    return RoundRecord(
        round_id=row[0],
        mode=row[1],
        state=row[2],
        phase=row[3],
        schema_toml=row[4],
        schema_id=row[5],
        parties=tuple(parties),
        threshold=int(row[7]),
        min_contributors=int(row[8]),
        graph_degree=int(row[9]),
        phase_timeout_s=int(row[10]),
        phase_deadline_ms=int(row[11]),
        abort_reason=row[12],
        created_ms=int(row[13]),
        updated_ms=int(row[14]),
        dp_mode=row[15],
        dp_rho=float(row[16]),
        dp_expected_parties=int(row[17]),
        dp_campaign=row[18],
        dp_window=row[19],
        threat_json=row[20],
        window_start_ms=int(row[21]),
        window_end_ms=int(row[22]),
        misbehaving_json=row[23],
        version=int(row[24]),
        he_context=row[25],
    )


class StoreCorruption(FailedPrecondition):
    """A stored payload or running sum whose MAC does not match: the store was
    altered outside the aggregator (or damaged). The round it belongs to aborts."""


def _submission(r: Sequence[Any]) -> Submission:
    return Submission(r[0], r[1], r[2], r[3], None if r[4] is None else bytes(r[4]), int(r[5]))


def _round_params(r: RoundRecord) -> tuple[Any, ...]:
    return (
        r.round_id,
        r.mode,
        r.state,
        r.phase,
        r.schema_toml,
        r.schema_id,
        json.dumps(list(r.parties)),
        r.threshold,
        r.min_contributors,
        r.graph_degree,
        r.phase_timeout_s,
        r.phase_deadline_ms,
        r.abort_reason,
        r.created_ms,
        r.updated_ms,
        r.dp_mode,
        r.dp_rho,
        r.dp_expected_parties,
        r.dp_campaign,
        r.dp_window,
        r.threat_json,
        r.window_start_ms,
        r.window_end_ms,
        r.misbehaving_json,
        r.version,
        r.he_context,
    )


class _Result:
    """A statement's rows, fetched before its connection goes back to the pool."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[Any]:
        return self._rows


def _result(cur: _Cursor) -> _Result:
    rows = cur.fetchall() if getattr(cur, "description", None) is not None else []
    return _Result(rows, cur.rowcount)


class Store:
    """SQL store shared by the SQLite and PostgreSQL engines.

    Methods are synchronous and short, and safe to call from several threads: the
    service calls them from worker threads, so its event loop never waits on the
    database. ``transaction()`` groups writes that must land together; it belongs to
    the calling thread (each thread's transaction has its own connection on
    PostgreSQL; SQLite serializes them on its one connection).
    """

    placeholder = "?"
    blob = "BLOB"
    autoinc = "INTEGER PRIMARY KEY AUTOINCREMENT"
    double = "REAL"
    table_exists_sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    #: One process serves a SQLite store (claim_serving), and BEGIN IMMEDIATE already
    #: serializes writers, so a plain read suffices there.
    lease_select_sql = "SELECT holder, token, expires_ms FROM round_leases WHERE round_id = ?"
    #: Row locks on the round while a submission is written (shared) and while a phase
    #: is closed (exclusive). SQLite's BEGIN IMMEDIATE already serializes both.
    round_share_sql = "SELECT state, phase FROM rounds WHERE round_id = ?"
    round_update_sql = "SELECT version FROM rounds WHERE round_id = ?"
    #: Whether several serving processes may share this store (SQLite: no, see
    #: claim_serving), so that a round may change without this process knowing.
    shared = False

    def __init__(self) -> None:
        self._local = threading.local()
        self._rounds: dict[str, RoundRecord] = {}
        self._rounds_lock = threading.Lock()
        #: Rounds whose stored row did not decode, seen by rounds(); the ticker aborts them.
        self.corrupt_rounds: set[str] = set()
        self._mac_key: bytes | None = None
        self._audit_key: bytes | None = None
        self._observer: Callable[[float, BaseException | None], None] | None = None

    def use_mac_key(self, key: bytes) -> None:
        """MAC every payload and running sum written from now on, and check the MAC of
        every one read. A row without one (written before the store had MACs) fails
        too, until ``backfill_macs`` (``aggregator create-store``) has given it one."""
        if not isinstance(key, bytes) or len(key) != MAC_KEY_BYTES:
            raise ConfigError(f"must be {MAC_KEY_BYTES} bytes", field="store.mac_key")
        self._mac_key = key
        # The audit chain is keyed too (by a key derived from this one): a writer to
        # the database alone cannot rebuild it after an edit.
        self._audit_key = hmac.new(key, b"blindsum/audit-chain/v1", hashlib.sha256).digest()

    def backfill_macs(self) -> int:
        """MAC the payloads and running sums that have none (written before schema
        version 5), trusting them as they are now; returns how many. Run once, by the
        operator, after the upgrade and before serving (``aggregator create-store``):
        nothing else ever adds a missing MAC, so blanking one cannot launder a row."""
        if self._mac_key is None:
            raise ConfigError("no MAC key in use", field="store.mac_key")
        done = 0
        with self.transaction():
            rows = self._exec(
                "SELECT round_id, phase, party, digest, payload FROM submissions "
                "WHERE mac = '' AND payload IS NOT NULL"
            ).fetchall()
            for r in rows:
                mac = self._mac("submission", r[0], r[1], r[2], r[3], bytes(r[4]))
                self._exec(
                    "UPDATE submissions SET mac = ? WHERE round_id = ? AND phase = ? AND party = ?",
                    (mac, r[0], r[1], r[2]),
                )
                done += 1
            for r in self._exec(
                "SELECT round_id, data, parties_json FROM accumulators WHERE mac = ''"
            ).fetchall():
                mac = self._mac("accumulator", r[0], bytes(r[1]), str(r[2]))
                self._exec("UPDATE accumulators SET mac = ? WHERE round_id = ?", (mac, r[0]))
                done += 1
        return done

    def _mac(self, *parts: bytes | str) -> str:
        if self._mac_key is None:
            return ""
        return hmac.new(self._mac_key, encode_parts(*parts), hashlib.sha256).hexdigest()

    def _check_mac(self, stored: str, what: str, *parts: bytes | str) -> None:
        if self._mac_key is None:
            return
        if not stored:
            raise StoreCorruption(
                f"store corruption: {what} has no MAC (a row from before store MACs gets "
                "one from `blindsum aggregator create-store DIR`, once, after the upgrade)"
            )
        if not hmac.compare_digest(stored, self._mac(*parts)):
            raise StoreCorruption(f"store corruption: {what} fails its MAC")

    def _verified(self, r: Sequence[Any]) -> Submission:
        sub = _submission(r)
        if sub.payload is not None:
            self._check_mac(
                str(r[6]),
                f"the stored {sub.phase} submission of {sub.party!r} in round {sub.round_id!r}",
                "submission",
                sub.round_id,
                sub.phase,
                sub.party,
                sub.digest,
                sub.payload,
            )
        return sub

    @property
    def _depth(self) -> int:
        """How deep this thread is in nested ``transaction()`` blocks."""
        return int(getattr(self._local, "depth", 0))

    # -- engine hooks -------------------------------------------------------
    def _outer(self) -> contextlib.AbstractContextManager[None]:
        """Begin this thread's outermost transaction; commit on success, roll back on
        an exception."""
        raise NotImplementedError

    def _run(self, sql: str, params: tuple[Any, ...]) -> _Result:
        """Run one statement: inside this thread's transaction if it has one, else on
        its own (committed at once)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def ping(self) -> None:
        """One round trip to the database; Unavailable (or the engine's error) if it
        does not answer."""
        self._exec("SELECT 1").fetchone()

    def claim_serving(self) -> None:
        """Called by ``serve`` before it accepts calls. Stores that cannot be shared by
        several serving processes refuse a second one (FailedPrecondition)."""

    def listen(self, on_change: Callable[[str], None]) -> bool:
        """Call ``on_change(round_id)`` (from another thread) whenever any process moves
        a round. False: this engine cannot tell other processes' changes (one process
        serves it), and callers keep polling."""
        del on_change
        return False

    # -- helpers ------------------------------------------------------------
    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> _Result:
        observer = self._observer
        if observer is None:
            return self._run(self._sql(sql), tuple(params))
        start = time.perf_counter()
        try:
            result = self._run(self._sql(sql), tuple(params))
        except Exception as exc:
            observer(time.perf_counter() - start, exc)
            raise
        observer(time.perf_counter() - start, None)
        return result

    def observe(self, callback: Callable[[float, BaseException | None], None]) -> None:
        """Call ``callback(seconds, error or None)`` after every statement (metrics)."""
        self._observer = callback

    def _notify_round(self, round_id: str) -> None:
        """Tell other processes, when this transaction commits, that a round moved."""

    @contextmanager
    def transaction(self) -> Iterator[None]:
        depth = self._depth
        if depth:
            self._local.depth = depth + 1
            try:
                yield
            finally:
                self._local.depth = depth
            return
        with self._outer():
            self._local.depth = 1
            try:
                yield
            finally:
                self._local.depth = 0

    def migrate(self, *, create: bool = False) -> None:
        """Bring the store's tables to this version. Only ``create`` (``aggregator
        init``) makes a store where there is none: anything else refuses a database
        without blindsum's tables, rather than start afresh over a lost or foreign
        one (rounds, enrolments and the DP ledger would silently restart at zero)."""
        types = {"blob": self.blob, "autoinc": self.autoinc, "double": self.double}
        with self.transaction():
            row = None
            if self._has_table("meta"):
                row = self._exec("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None and not create:
                raise NoStore(
                    f"{self.describe()} holds no blindsum store (no schema version): "
                    "`blindsum aggregator init` creates one; or restore a backup",
                    field="store.url",
                )
            steps = {
                1: _MIGRATE_1_TO_2,
                2: _MIGRATE_2_TO_3,
                3: _MIGRATE_3_TO_4,
                4: _MIGRATE_4_TO_5,
                5: _MIGRATE_5_TO_6,
            }
            while row is not None and int(row[0]) in steps:
                for ddl in steps[int(row[0])]:
                    table = ddl.split()[2]  # ALTER TABLE <name> ...
                    if self._has_table(table):  # else the DDL below creates it whole
                        self._exec(ddl.format(**types))
                if int(row[0]) == 5 and self._has_table("audit"):
                    # The rows create-store may link as written before the chain: these,
                    # and never one written since (blanking a link launders nothing).
                    last = self._exec("SELECT COALESCE(MAX(id), 0) FROM audit").fetchone()
                    self._exec(
                        "INSERT INTO meta (key, value) VALUES ('audit_legacy_max_id', ?)",
                        (str(int(last[0])),),
                    )
                row = (str(int(row[0]) + 1),)
                self._exec("UPDATE meta SET value = ? WHERE key = 'schema_version'", (row[0],))
            for ddl in _DDL:
                self._exec(ddl.format(**types))
            if row is None:
                self._exec(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            elif int(row[0]) != SCHEMA_VERSION:
                raise ConfigError(
                    f"store schema version {row[0]} is not supported (expected {SCHEMA_VERSION})",
                    field="store",
                )

    def describe(self) -> str:
        """The store, for an operator's error message (no credentials)."""
        return "the store"

    def check_version(self) -> None:
        """For a store opened read-only (no migration): NoStore without blindsum's
        tables, ConfigError unless it is at this version's schema."""
        row = None
        if self._has_table("meta"):
            row = self._exec("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            raise NoStore(f"{self.describe()} holds no blindsum store", field="store.url")
        if int(row[0]) != SCHEMA_VERSION:
            raise ConfigError(
                f"store schema version {row[0]}, this version reads {SCHEMA_VERSION}: "
                "`blindsum aggregator create-store DIR` migrates it",
                field="store.url",
            )

    def check_payloads(self, round_id: str, *, batch: int = 256) -> tuple[int, list[str]]:
        """Every stored payload of ``round_id`` against its MAC, row by row: (payloads
        read, problems), so one bad row does not hide the rest."""
        count, problems = 0, []
        after: tuple[str, str] = ("", "")
        while True:
            rows = self._exec(
                f"SELECT {_SUBMISSION_COLUMNS} FROM submissions "  # noqa: S608 - fixed columns
                "WHERE round_id = ? AND (phase > ? OR (phase = ? AND party > ?)) "
                "ORDER BY phase, party LIMIT ?",
                (round_id, after[0], after[0], after[1], batch),
            ).fetchall()
            for r in rows:
                try:
                    count += self._verified(r).payload is not None
                except StoreCorruption as exc:
                    problems.append(exc.message)
            if len(rows) < batch:
                return count, problems
            after = (str(rows[-1][1]), str(rows[-1][2]))

    def _has_table(self, name: str) -> bool:
        return self._exec(self.table_exists_sql, (name,)).fetchone() is not None

    # -- parties ------------------------------------------------------------
    def enroll(self, name: str, identity_cert_pem: bytes) -> None:
        with self.transaction():
            if self._exec("SELECT 1 FROM parties WHERE name = ?", (name,)).fetchone():
                raise AlreadyExists(f"party {name!r} is already enrolled", field="name")
            self._exec(
                "INSERT INTO parties (name, identity_cert_pem, enrolled_ms, revoked) "
                "VALUES (?, ?, ?, 0)",
                (name, identity_cert_pem, now_ms()),
            )

    def revoke(self, name: str) -> None:
        with self.transaction():
            self.party(name)
            self._exec("UPDATE parties SET revoked = 1 WHERE name = ?", (name,))

    def party(self, name: str) -> PartyRecord:
        row = self._exec(
            f"SELECT {_PARTY_COLUMNS} FROM parties WHERE name = ?",  # noqa: S608 - fixed columns
            (name,),
        ).fetchone()
        if row is None:
            raise NotFound(f"party {name!r} is not enrolled", field="party")
        return _party_record(row)

    def renew(
        self, name: str, identity_cert_pem: bytes, *, renewed_ms: int, old_until_ms: int
    ) -> None:
        """Record a renewal: the new identity certificate (for the same key), the new
        certificates' not-before, and until when the ones they replace still count."""
        with self.transaction():
            if self.party(name).revoked:
                raise FailedPrecondition(f"party {name!r} is revoked", field="name")
            self._exec(
                "UPDATE parties SET identity_cert_pem = ?, renewed_ms = ?, "
                "old_certs_until_ms = ? WHERE name = ?",
                (identity_cert_pem, renewed_ms, old_until_ms, name),
            )

    def revoked_names(self) -> frozenset[str]:
        """The names of every revoked party (a short list, read in one query)."""
        rows = self._exec("SELECT name FROM parties WHERE revoked = 1").fetchall()
        return frozenset(str(r[0]) for r in rows)

    def parties(self) -> list[PartyRecord]:
        rows = self._exec(
            f"SELECT {_PARTY_COLUMNS} FROM parties ORDER BY name"  # noqa: S608 - fixed columns
        ).fetchall()
        return [_party_record(r) for r in rows]

    # -- rounds -------------------------------------------------------------
    def create_round(self, record: RoundRecord) -> None:
        """Insert a new round; AlreadyExists if its id is taken, also when another
        process inserted it between this one's check and its insert."""
        exists = AlreadyExists(f"round {record.round_id!r} already exists", field="round_id")
        try:
            with self.transaction():
                if self.round_exists(record.round_id):
                    raise exists
                marks = ", ".join("?" * len(_round_params(record)))
                self._exec(
                    f"INSERT INTO rounds ({_ROUND_COLUMNS}) VALUES ({marks})",  # noqa: S608 - fixed column list
                    _round_params(record),
                )
        except Exception as exc:
            if self._is_duplicate(exc):
                raise exists from None
            raise

    def round_exists(self, round_id: str) -> bool:
        return bool(self._exec("SELECT 1 FROM rounds WHERE round_id = ?", (round_id,)).fetchone())

    def _is_duplicate(self, exc: Exception) -> bool:
        """Whether ``exc`` is the engine refusing a row whose key is taken."""
        del exc
        return False

    # -- campaigns (issue 13) ------------------------------------------------

    def put_campaign(
        self, name: str, schedule: str, spec: bytes, *, now: int, replace: bool = False
    ) -> None:
        """Create a campaign (AlreadyExists if the name is taken), or with ``replace``
        change an existing one's schedule and spec (NotFound if there is none)."""
        with self.transaction():
            if self._exec("SELECT 1 FROM campaigns WHERE name = ?", (name,)).fetchone():
                if not replace:
                    raise AlreadyExists(f"campaign {name!r} already exists", field="campaign")
                self._exec(
                    "UPDATE campaigns SET schedule = ?, spec = ?, updated_ms = ? WHERE name = ?",
                    (schedule, spec, now, name),
                )
            elif replace:
                raise NotFound(f"campaign {name!r} does not exist", field="campaign")
            else:
                self._exec(
                    "INSERT INTO campaigns (name, schedule, spec, paused, created_ms, updated_ms) "
                    "VALUES (?, ?, ?, 0, ?, ?)",
                    (name, schedule, spec, now, now),
                )
            self.audit("", "campaign_saved", campaign=name, schedule=schedule)

    def campaign_rows(self) -> list[tuple[object, ...]]:
        """Every campaign as (name, schedule, spec, paused, created_ms, updated_ms)."""
        rows = self._exec(
            "SELECT name, schedule, spec, paused, created_ms, updated_ms FROM campaigns "
            "ORDER BY name"
        ).fetchall()
        return [(r[0], r[1], bytes(r[2]), r[3], r[4], r[5]) for r in rows]

    def set_campaign_paused(self, name: str, paused: bool, *, now: int) -> None:
        with self.transaction():
            cur = self._exec(
                "UPDATE campaigns SET paused = ?, updated_ms = ? WHERE name = ?",
                (1 if paused else 0, now, name),
            )
            if cur.rowcount == 0:
                raise NotFound(f"campaign {name!r} does not exist", field="campaign")
            self.audit("", "campaign_paused" if paused else "campaign_resumed", campaign=name)

    def delete_campaign(self, name: str) -> None:
        """Forget a campaign; its rounds, releases and ledger entries stay."""
        with self.transaction():
            cur = self._exec("DELETE FROM campaigns WHERE name = ?", (name,))
            if cur.rowcount == 0:
                raise NotFound(f"campaign {name!r} does not exist", field="campaign")
            self.audit("", "campaign_deleted", campaign=name)

    def force_abort(self, round_id: str, reason: str, *, now: int) -> bool:
        """Abort an open round without reading its record (which may not decode): only
        the lifecycle columns are written. Returns whether it was open. For rounds whose
        stored state cannot be used at all; everything else goes through update_round."""
        with self.transaction():
            done = self._exec(
                "UPDATE rounds SET state = 'aborted', phase = 'done', abort_reason = ?, "
                "updated_ms = ?, version = version + 1 WHERE round_id = ? AND state = 'open'",
                (reason, now, round_id),
            ).rowcount
            if done:
                self.audit(round_id, "round_aborted", reason=reason)
                self._notify_round(round_id)
        with self._rounds_lock:
            self._rounds.pop(round_id, None)
        self.corrupt_rounds.discard(round_id)
        return bool(done)

    def update_round(
        self,
        record: RoundRecord,
        *,
        lease: tuple[str, int] | None = None,
        closing: tuple[str, int] | None = None,
    ) -> RoundRecord:
        """Write ``record`` if the stored round is still at ``record.version`` (and, with
        ``lease = (holder, token)``, if that lease still holds); return it at the next
        version. StaleRound otherwise: another replica changed the round, or this
        replica's lease lapsed and another one took over (fencing), or the round is
        closed already (a complete or aborted round never changes again).

        ``closing = (phase, n)``: the caller closes ``phase`` over the n submissions it
        holds. The round row is locked first (a submission being written holds it
        shared, see put_submission), so StaleRound also when another replica stored a
        submission of that phase that the caller has not seen."""
        sql = (
            "UPDATE rounds SET state = ?, phase = ?, phase_deadline_ms = ?, abort_reason = ?, "
            "updated_ms = ?, misbehaving_json = ?, version = version + 1 "
            "WHERE round_id = ? AND version = ? AND state = 'open'"
        )
        params: tuple[Any, ...] = (
            record.state,
            record.phase,
            record.phase_deadline_ms,
            record.abort_reason,
            record.updated_ms,
            record.misbehaving_json,
            record.round_id,
            record.version,
        )
        if lease is not None:
            sql += (
                " AND EXISTS (SELECT 1 FROM round_leases WHERE round_id = ? AND holder = ?"
                " AND token = ?)"
            )
            params += (record.round_id, lease[0], lease[1])
        with self.transaction():
            if closing is not None:
                self._exec(self.round_update_sql, (record.round_id,)).fetchone()
                stored = self.phase_count(record.round_id, closing[0])
                if stored != closing[1]:
                    raise StaleRound(
                        f"round {record.round_id!r} has {stored} {closing[0]} submissions, "
                        f"not the {closing[1]} being closed over",
                        field="round",
                    )
            if self._exec(sql, params).rowcount != 1:
                raise StaleRound(
                    f"round {record.round_id!r} changed since version {record.version} was "
                    "read (another replica moved it, this one's lease lapsed, or it closed)",
                    field="round",
                )
            self._notify_round(record.round_id)
        return replace(record, version=record.version + 1)

    # -- leases -------------------------------------------------------------
    def acquire_lease(self, round_id: str, holder: str, *, now: int, ttl_ms: int) -> int | None:
        """The fencing token of ``holder``'s lease on driving ``round_id`` forward, taken
        or renewed; None while another holder's lease has not expired.

        A new holder gets a larger token than every earlier one, and update_round with
        an old token fails, so a replica that paused past its lease cannot write.
        """
        with self.transaction():
            self._exec(
                "INSERT INTO round_leases (round_id, holder, token, expires_ms) "
                "VALUES (?, '', 0, 0) ON CONFLICT (round_id) DO NOTHING",
                (round_id,),
            )
            row = self._exec(self.lease_select_sql, (round_id,)).fetchone()
            if row is None:  # another replica holds the row right now
                return None
            current, token, expires = str(row[0]), int(row[1]), int(row[2])
            if current != holder and expires > now:
                return None
            if current != holder:
                token += 1
            self._exec(
                "UPDATE round_leases SET holder = ?, token = ?, expires_ms = ? WHERE round_id = ?",
                (holder, token, now + ttl_ms, round_id),
            )
            return token

    def release_lease(self, round_id: str, holder: str) -> None:
        """Give the lease up early (the round closed); a no-op if ``holder`` lost it."""
        with self.transaction():
            self._exec(
                "UPDATE round_leases SET expires_ms = 0 WHERE round_id = ? AND holder = ?",
                (round_id, holder),
            )

    def round(self, round_id: str) -> RoundRecord:
        """The round as stored now. Of an open round seen before, only the columns that
        change are read (a few bytes, not the O(n) party list)."""
        cached = self._rounds.get(round_id)
        if cached is not None:
            row = self._exec(
                f"SELECT {_ROUND_STATE_COLUMNS} FROM rounds WHERE round_id = ?",  # noqa: S608 - fixed column list
                (round_id,),
            ).fetchone()
            if row is not None:
                return self._remember(_with_state(cached, row))
        row = self._exec(
            f"SELECT {_ROUND_COLUMNS} FROM rounds WHERE round_id = ?",  # noqa: S608 - fixed column list
            (round_id,),
        ).fetchone()
        if row is None:
            raise NotFound(f"round {round_id!r} does not exist", field="round_id")
        return self._remember(_decode_round(row))

    def _remember(self, rec: RoundRecord) -> RoundRecord:
        with self._rounds_lock:
            if rec.state != "open":
                self._rounds.pop(rec.round_id, None)
                return rec
            self._rounds[rec.round_id] = rec
            while len(self._rounds) > ROUND_CACHE_SIZE:
                self._rounds.pop(next(iter(self._rounds)))
        return rec

    def rounds(self, *, state: str | None = None) -> list[RoundRecord]:
        """Rounds in creation order (only those in ``state``). When every one is cached
        (the ticker's open rounds), one query of the changing columns answers; else
        one more reads the rest in full."""
        where, params = ("", ()) if state is None else (" WHERE state = ?", (state,))
        order = " ORDER BY created_ms, round_id"
        rows = self._exec(
            f"SELECT {_ROUND_STATE_COLUMNS} FROM rounds" + where + order,  # noqa: S608 - fixed columns
            params,
        ).fetchall()
        full: dict[str, RoundRecord] = {}
        if any(row[0] not in self._rounds for row in rows):
            full_rows = self._exec(
                f"SELECT {_ROUND_COLUMNS} FROM rounds" + where + order,  # noqa: S608 - fixed columns
                params,
            ).fetchall()
            for r in full_rows:
                try:
                    full[r[0]] = _decode_round(r)
                except CorruptRound as exc:
                    # One damaged row must not hide every other round.
                    if r[0] not in self.corrupt_rounds:
                        log.error("round_record_corrupt", round_id=r[0], exc=exc)
                    self.corrupt_rounds.add(str(r[0]))
        out = []
        for row in rows:
            cached = self._rounds.get(row[0])
            if cached is not None:
                out.append(self._remember(_with_state(cached, row)))
            elif row[0] in full:  # else it left the filter between the two queries
                out.append(self._remember(full[row[0]]))
        return out

    # -- submissions --------------------------------------------------------
    def put_submission(
        self,
        round_id: str,
        phase: str,
        party: str,
        digest: str,
        payload: bytes | None,
        *,
        open_phase: bool = False,
    ) -> bool:
        """Store a phase input. Returns False for an identical retry (a replay).

        Raises AlreadyExists when the party already submitted something else in
        this phase. With ``open_phase``, FailedPrecondition unless the round is still
        open in ``phase`` (checked under a shared lock on the round's row, so a replica
        closing the phase either sees this submission or refuses it).
        """
        with self.transaction():
            if open_phase:
                now = self._exec(self.round_share_sql, (round_id,)).fetchone()
                if now is None or now[0] != "open" or now[1] != phase:
                    where = "gone" if now is None else f"{now[0]} in phase {now[1]}"
                    raise FailedPrecondition(
                        f"round {round_id!r} is {where}, not open in {phase}", field=phase
                    )
            row = self._exec(
                "SELECT digest FROM submissions WHERE round_id = ? AND phase = ? AND party = ?",
                (round_id, phase, party),
            ).fetchone()
            if row is not None:
                if row[0] == digest:
                    return False
                raise AlreadyExists(
                    f"party {party!r} already submitted a different {phase} message "
                    f"in round {round_id!r}",
                    field=phase,
                )
            mac = (
                ""
                if payload is None
                else self._mac("submission", round_id, phase, party, digest, payload)
            )
            self._exec(
                "INSERT INTO submissions "
                "(round_id, phase, party, digest, payload, created_ms, mac) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (round_id, phase, party, digest, payload, now_ms(), mac),
            )
            return True

    def submission_digest(self, round_id: str, phase: str, party: str) -> str | None:
        """The digest ``party`` submitted in ``phase``, or None: one indexed row, no payload."""
        row = self._exec(
            "SELECT digest FROM submissions WHERE round_id = ? AND phase = ? AND party = ?",
            (round_id, phase, party),
        ).fetchone()
        return None if row is None else str(row[0])

    def drop_payloads(self, round_id: str, phase: str) -> None:
        """Forget the payloads of one phase of a round (the digests stay, for replays)."""
        with self.transaction():
            self._exec(
                "UPDATE submissions SET payload = NULL WHERE round_id = ? AND phase = ?",
                (round_id, phase),
            )

    def phase_counts(self, round_id: str) -> dict[str, int]:
        """How many parties submitted in each phase of a round: one grouped query."""
        rows = self._exec(
            "SELECT phase, COUNT(*) FROM submissions WHERE round_id = ? GROUP BY phase",
            (round_id,),
        ).fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    def phase_count(self, round_id: str, phase: str) -> int:
        """How many parties submitted in one phase of a round."""
        row = self._exec(
            "SELECT COUNT(*) FROM submissions WHERE round_id = ? AND phase = ?",
            (round_id, phase),
        ).fetchone()
        return int(row[0])

    def party_phases(self, round_id: str, party: str, phases: Sequence[str]) -> set[str]:
        """Which of ``phases`` ``party`` submitted in: one primary-key lookup per phase
        (the key is round, phase, party), so the cost does not grow with the round."""
        if not phases:
            return set()
        marks = ", ".join("?" * len(phases))
        sql = (
            "SELECT phase FROM submissions WHERE round_id = ? AND phase IN ("  # noqa: S608
            + marks
            + ") AND party = ?"
        )
        rows = self._exec(sql, (round_id, *phases, party)).fetchall()
        return {str(r[0]) for r in rows}

    def submissions(self, round_id: str, phase: str) -> list[Submission]:
        rows = self._exec(
            f"SELECT {_SUBMISSION_COLUMNS} FROM submissions "  # noqa: S608 - fixed columns
            "WHERE round_id = ? AND phase = ? ORDER BY created_ms, party",
            (round_id, phase),
        ).fetchall()
        return [self._verified(r) for r in rows]

    def iter_submissions(
        self, round_id: str, phase: str, *, batch: int = 64, parties: Sequence[str] | None = None
    ) -> Iterator[Submission]:
        """A phase's submissions in party order, ``batch`` rows per query (or only those of
        ``parties``), so that rebuilding a large round never holds every payload at once."""
        if parties is not None:
            wanted = sorted(set(parties))
            for i in range(0, len(wanted), batch):
                chunk = wanted[i : i + batch]
                # Only placeholders are joined into the statement; the names are parameters.
                marks = ", ".join("?" * len(chunk))
                sql = (
                    f"SELECT {_SUBMISSION_COLUMNS} FROM submissions "  # noqa: S608
                    "WHERE round_id = ? AND phase = ? AND party IN (" + marks + ") ORDER BY party"
                )
                rows = self._exec(sql, (round_id, phase, *chunk)).fetchall()
                yield from (self._verified(r) for r in rows)
            return
        after = ""
        while True:
            rows = self._exec(
                f"SELECT {_SUBMISSION_COLUMNS} FROM submissions "  # noqa: S608 - fixed columns
                "WHERE round_id = ? AND phase = ? AND party > ? ORDER BY party LIMIT ?",
                (round_id, phase, after, batch),
            ).fetchall()
            yield from (self._verified(r) for r in rows)
            if len(rows) < batch:
                return
            after = str(rows[-1][2])

    def submitted_parties(self, round_id: str, phase: str) -> list[str]:
        rows = self._exec(
            "SELECT party FROM submissions WHERE round_id = ? AND phase = ? ORDER BY party",
            (round_id, phase),
        ).fetchall()
        return [r[0] for r in rows]

    # -- running sums -------------------------------------------------------
    def put_accumulator(self, round_id: str, data: bytes, parties: Sequence[str]) -> None:
        with self.transaction():
            listed = json.dumps(sorted(parties))
            mac = self._mac("accumulator", round_id, data, listed)
            params = (data, listed, now_ms(), mac, round_id)
            if self._exec("SELECT 1 FROM accumulators WHERE round_id = ?", (round_id,)).fetchone():
                self._exec(
                    "UPDATE accumulators SET data = ?, parties_json = ?, updated_ms = ?, mac = ? "
                    "WHERE round_id = ?",
                    params,
                )
            else:
                self._exec(
                    "INSERT INTO accumulators (data, parties_json, updated_ms, mac, round_id) "
                    "VALUES (?, ?, ?, ?, ?)",
                    params,
                )

    def accumulator(self, round_id: str) -> tuple[bytes, list[str]] | None:
        row = self._exec(
            "SELECT data, parties_json, updated_ms, mac FROM accumulators WHERE round_id = ?",
            (round_id,),
        ).fetchone()
        if row is None:
            return None
        data, listed = bytes(row[0]), str(row[1])
        self._check_mac(
            str(row[3]),
            f"the stored running sum of round {round_id!r}",
            "accumulator",
            round_id,
            data,
            listed,
        )
        return data, list(json.loads(listed))

    # -- releases -----------------------------------------------------------
    def put_release(self, round_id: str, report: bytes, *, campaign: str = "") -> None:
        with self.transaction():
            if self._exec("SELECT 1 FROM releases WHERE round_id = ?", (round_id,)).fetchone():
                raise AlreadyExists(f"round {round_id!r} was already released", field="round_id")
            self._exec(
                "INSERT INTO releases (round_id, report, created_ms, campaign) VALUES (?, ?, ?, ?)",
                (round_id, report, now_ms(), campaign),
            )

    def campaign_releases(self, campaign: str, limit: int) -> list[tuple[str, bytes]]:
        """The campaign's most recent releases, newest first: (round id, stored report)."""
        rows = self._exec(
            "SELECT round_id, report FROM releases WHERE campaign = ? "
            "ORDER BY created_ms DESC, round_id DESC LIMIT ?",
            (campaign, limit),
        ).fetchall()
        return [(r[0], bytes(r[1])) for r in rows]

    # -- privacy budget -----------------------------------------------------
    def ledger_spent(self, campaign: str, window: str) -> float:
        """Total zCDP rho charged to ``campaign`` in ``window`` so far."""
        row = self._exec(
            "SELECT COALESCE(SUM(rho), 0) FROM dp_ledger WHERE campaign = ? AND dp_window = ?",
            (campaign, window),
        ).fetchone()
        return float(row[0])

    def lock_ledger(self, campaign: str, window: str) -> None:
        """Serialise budget checks of one (campaign, window) until the transaction ends.

        SQLite needs nothing: its transactions take the write lock up front (BEGIN
        IMMEDIATE), so a check-then-charge is already exclusive. PostgreSQL runs READ
        COMMITTED, where two aggregator processes could both pass the check, so it takes
        a transaction-scoped advisory lock on the account.
        """

    def ledger_charge(self, entry: LedgerEntry) -> None:
        """Record one release's charge. Callers check the budget in the same transaction."""
        with self.transaction():
            if self._exec(
                "SELECT 1 FROM dp_ledger WHERE campaign = ? AND dp_window = ? AND round_id = ?",
                (entry.campaign, entry.window, entry.round_id),
            ).fetchone():
                raise AlreadyExists(
                    f"round {entry.round_id!r} was already charged to {entry.window!r}",
                    field="round_id",
                )
            self._exec(
                "INSERT INTO dp_ledger (campaign, dp_window, round_id, rho, charged_ms) "
                "VALUES (?, ?, ?, ?, ?)",
                (entry.campaign, entry.window, entry.round_id, entry.rho, entry.charged_ms),
            )

    def ledger(self, campaign: str | None = None) -> list[LedgerEntry]:
        sql = "SELECT campaign, dp_window, round_id, rho, charged_ms FROM dp_ledger"
        params: tuple[Any, ...] = ()
        if campaign is not None:
            sql += " WHERE campaign = ?"
            params = (campaign,)
        rows = self._exec(sql + " ORDER BY charged_ms, round_id", params).fetchall()
        return [LedgerEntry(r[0], r[1], r[2], float(r[3]), int(r[4])) for r in rows]

    def open_he_contexts(self) -> set[str]:
        """The custodian contexts (hex hashes) that open he rounds use ("" for the
        current one, in rounds from before key rotation)."""
        rows = self._exec(
            "SELECT DISTINCT he_context FROM rounds WHERE mode = 'he' AND state = 'open'"
        ).fetchall()
        return {str(r[0]) for r in rows}

    def round_counts(self) -> list[tuple[str, str, int]]:
        """(mode, state, how many rounds) over the whole store."""
        rows = self._exec(
            "SELECT mode, state, COUNT(*) FROM rounds GROUP BY mode, state"
        ).fetchall()
        return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]

    def ledger_totals(self) -> list[tuple[str, str, float, int]]:
        """(campaign, window, rho charged, when last charged) per ledger window."""
        rows = self._exec(
            "SELECT campaign, dp_window, SUM(rho), MAX(charged_ms) FROM dp_ledger "
            "GROUP BY campaign, dp_window"
        ).fetchall()
        return [(str(r[0]), str(r[1]), float(r[2]), int(r[3])) for r in rows]

    def round_states(self) -> list[tuple[str, str]]:
        """(round id, state) of every round, creation order: no row is decoded."""
        rows = self._exec(
            "SELECT round_id, state FROM rounds ORDER BY created_ms, round_id"
        ).fetchall()
        return [(str(r[0]), str(r[1])) for r in rows]

    def release_ids(self) -> list[str]:
        rows = self._exec("SELECT round_id FROM releases ORDER BY round_id").fetchall()
        return [str(r[0]) for r in rows]

    def release(self, round_id: str) -> bytes:
        row = self._exec("SELECT report FROM releases WHERE round_id = ?", (round_id,)).fetchone()
        if row is None:
            raise NotFound(f"round {round_id!r} has no released result", field="round_id")
        return bytes(row[0])

    # -- audit --------------------------------------------------------------
    def audit(self, round_id: str, event: str, **detail: Any) -> None:
        """Append an event. Each row carries a link: a MAC (keyed by the store's MAC key
        when it has one, else a plain SHA-256) over the previous row's link and its own
        fields, so an edited or deleted row breaks the chain (:meth:`verify_audit`)."""
        with self.transaction():
            self._lock_audit()
            row = self._exec("SELECT chain FROM audit ORDER BY id DESC LIMIT 1").fetchone()
            ts, text = now_ms(), json.dumps(detail, sort_keys=True)
            link = self._audit_link(row[0] if row else "", ts, round_id, event, text)
            self._exec(
                "INSERT INTO audit (ts_ms, round_id, event, detail_json, chain) "
                "VALUES (?, ?, ?, ?, ?)",
                (ts, round_id, event, text, link),
            )

    def _lock_audit(self) -> None:
        """Serialise appends to the audit chain until the transaction ends (SQLite's
        write lock already does)."""

    def _audit_link(
        self, prev: str, ts: int, round_id: str, event: str, detail: str, *, legacy: bool = False
    ) -> str:
        """A row's link. Rows from before the chain, linked once by create-store, get
        links of their own kind ("legacy"), chained among themselves; the chain of the
        rows written since starts afresh after them, as it did when they were written."""
        label, tag = ("audit-legacy/v1", "-legacy") if legacy else ("audit/v1", "")
        data = encode_parts(label, prev, ts, round_id, event, detail)
        if self._audit_key is None:
            return f"sha256{tag}:" + hashlib.sha256(data).hexdigest()
        return f"hmac{tag}:" + hmac.new(self._audit_key, data, hashlib.sha256).hexdigest()

    def audit_rows(
        self, round_id: str | None = None
    ) -> list[tuple[int, int, str, str, dict[str, Any], str]]:
        """(id, ts_ms, round id, event, detail, link) in order."""
        sql = "SELECT id, ts_ms, round_id, event, detail_json, chain FROM audit"
        params: tuple[Any, ...] = ()
        if round_id is not None:
            sql += " WHERE round_id = ?"
            params = (round_id,)
        rows = self._exec(sql + " ORDER BY id", params).fetchall()
        return [(int(r[0]), int(r[1]), r[2], r[3], json.loads(r[4]), r[5]) for r in rows]

    def verify_audit(self) -> tuple[int, list[str]]:
        """Walk the whole chain: (rows checked, problems). Each problem names the row
        where the chain breaks and what that means. Deleting the newest rows leaves no
        break: compare the head (the last row's link, which ``aggregator audit
        --verify`` prints) with one kept elsewhere."""
        problems: list[str] = []
        prev, prev_id, count, current = "", 0, 0, False
        keyed = self._audit_key is not None
        meta = self._exec("SELECT value FROM meta WHERE key = 'audit_legacy_max_id'").fetchone()
        legacy_max = int(meta[0]) if meta else 0
        for row in self._exec(
            "SELECT id, ts_ms, round_id, event, detail_json, chain FROM audit ORDER BY id"
        ).fetchall():
            count += 1
            rid, ts, round_id, event, detail, link = (
                int(row[0]),
                int(row[1]),
                row[2],
                row[3],
                row[4],
                row[5],
            )
            legacy = "-legacy:" in link.split(":", 1)[0] + ":"
            if legacy and (current or rid > legacy_max):
                problems.append(
                    f"audit row {rid} ({event}) is linked as written before the chain, "
                    "but follows rows written since"
                )
                prev, prev_id = link, rid
                continue
            if link and not legacy and not current:
                prev, current = "", True  # the chain of rows written since starts here
            expected = self._audit_link(prev, ts, round_id, event, detail, legacy=legacy)
            if not link and not current and rid <= legacy_max:
                problems.append(
                    f"audit row {rid} ({event}) has no link: written before the audit "
                    "chain; `aggregator create-store DIR` links such rows once, after the "
                    "upgrade"
                )
            elif not link:
                problems.append(
                    f"audit row {rid} ({event}) has no link, though written after the chain "
                    "began: its link was removed (nothing re-links it)"
                )
            elif keyed and not link.startswith("hmac"):
                problems.append(f"audit row {rid} ({event}) is not linked with the store's key")
            elif not hmac.compare_digest(link, expected):
                gap = f"; ids jump from {prev_id} to {rid}" if rid != prev_id + 1 else ""
                problems.append(
                    f"audit row {rid} ({event}) does not follow the row before it: it was "
                    f"altered, or a row before it was deleted{gap}"
                )
            prev, prev_id = link, rid
        return count, problems

    def audit_head(self) -> str:
        """The newest row's link ('' for an empty log)."""
        row = self._exec("SELECT chain FROM audit ORDER BY id DESC LIMIT 1").fetchone()
        return str(row[0]) if row else ""

    def backfill_audit_chain(self) -> int:
        """Link the audit rows written before the chain (schema version 6): only the
        unlinked rows before the first linked one, trusted as they are, with links of
        their own kind. Never rewrites or adds a link after them, so blanking a link
        cannot launder an edit. Returns how many rows got a link. Run once, by the
        operator, after the upgrade (``create-store``)."""
        with self.transaction():
            self._lock_audit()
            meta = self._exec("SELECT value FROM meta WHERE key = 'audit_legacy_max_id'").fetchone()
            legacy_max = int(meta[0]) if meta else 0
            rows = self._exec(
                "SELECT id, ts_ms, round_id, event, detail_json, chain FROM audit "
                "WHERE id <= ? ORDER BY id",
                (legacy_max,),
            ).fetchall()
            prev, done = "", 0
            for r in rows:
                if r[5]:
                    break
                prev = self._audit_link(prev, int(r[1]), r[2], r[3], r[4], legacy=True)
                self._exec("UPDATE audit SET chain = ? WHERE id = ?", (prev, r[0]))
                done += 1
        return done

    def audit_log(self, round_id: str | None = None) -> list[tuple[int, str, str, dict[str, Any]]]:
        """(ts_ms, round id, event, detail) in order: :meth:`audit_rows` without ids
        and links."""
        return [
            (ts, rid, event, detail) for _, ts, rid, event, detail, _ in self.audit_rows(round_id)
        ]


class SqliteStore(Store):
    """The embedded default: one file under the aggregator's directory, in WAL mode.

    One connection serves every thread; a re-entrant lock makes each transaction (and
    each statement outside one) whole."""

    def describe(self) -> str:
        return f"the store {os.path.basename(self.path)}"

    def integrity_check(self) -> list[str]:
        """SQLite's own check of the file: ``["ok"]``, or what it found."""
        rows = self._exec("PRAGMA integrity_check").fetchall()
        return [str(r[0]) for r in rows]

    def __init__(self, path: Path | str, *, readonly: bool = False) -> None:
        super().__init__()
        self.path = str(path)
        self._lock = threading.RLock()
        self._serving: int | None = None
        if readonly:
            # Nothing written, not even the switch to WAL (it rewrites the header).
            self._conn = sqlite3.connect(
                f"{Path(self.path).resolve().as_uri()}?mode=ro",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
                timeout=30.0,
            )
            self._conn.execute("PRAGMA busy_timeout=30000")
            return
        if not os.path.exists(self.path):
            # The stores hold submissions and decrypted totals: owner-only from birth.
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA busy_timeout=30000")

    def claim_serving(self) -> None:
        """An exclusive lock on ``PATH.serving.lock`` for as long as this store is open.

        A round's state is decided by one process at a time: a second aggregator
        serving the same SQLite file would race the first. Replicas need PostgreSQL.
        """
        if self._serving is not None:
            return
        lock = self.path + ".serving.lock"
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FailedPrecondition(
                f"another aggregator is already serving the SQLite store {self.path}; "
                "one SQLite store serves one process (replicas need PostgreSQL, "
                "docs/DEPLOYING.md)",
                field="store",
            ) from None
        self._serving = fd

    @contextmanager
    def _outer(self) -> Iterator[None]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _run(self, sql: str, params: tuple[Any, ...]) -> _Result:
        with self._lock:
            cur = self._conn.cursor()
            try:
                cur.execute(sql, params)
                return _result(cur)
            finally:
                cur.close()

    def _is_duplicate(self, exc: Exception) -> bool:
        return isinstance(exc, sqlite3.IntegrityError)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
        if self._serving is not None:
            os.close(self._serving)  # releases the serving lock
            self._serving = None


#: Connections a PostgreSQL store keeps at most (the service's database threads use one
#: each; the wakeup listener has its own).
POOL_SIZE = 8
#: How long a call waits for a pooled connection before it answers Unavailable.
POOL_WAIT_S = 5.0
#: A pooled connection idle for longer than this is pinged before it is lent (one
#: round trip); a busier one is trusted, and if the server dropped it meanwhile the
#: call fails as Unavailable once and the pool replaces it.
CHECK_IDLE_S = 2.0
#: The channel round changes are announced on (PostgreSQL LISTEN/NOTIFY).
NOTIFY_CHANNEL = "blindsum_rounds"


class PostgresStore(Store):
    """The same tables on a PostgreSQL server (needs the ``postgres`` extra: psycopg 3
    and its pool).

    Each thread's transaction takes a connection from a pool and gives it back at
    commit. The pool checks a connection before lending it, so after a restart, a
    failover or ``pg_terminate_backend`` the next call gets a fresh one.
    """

    placeholder = "%s"
    blob = "BYTEA"
    autoinc = "BIGSERIAL PRIMARY KEY"
    double = "DOUBLE PRECISION"
    table_exists_sql = (
        "SELECT 1 FROM information_schema.tables "
        "WHERE table_name = ? AND table_schema = current_schema()"
    )
    #: Replicas race for a lease: the one that loses the row lock skips it (Janus takes
    #: its aggregation jobs the same way).
    lease_select_sql = (
        "SELECT holder, token, expires_ms FROM round_leases WHERE round_id = ? "
        "FOR UPDATE SKIP LOCKED"
    )
    shared = True
    round_share_sql = "SELECT state, phase FROM rounds WHERE round_id = ? FOR SHARE"
    round_update_sql = "SELECT version FROM rounds WHERE round_id = ? FOR UPDATE"

    def describe(self) -> str:
        name = self._dbname or "?"
        return f"the PostgreSQL database {name!r}"

    def __init__(self, url: str, *, pool_size: int = POOL_SIZE) -> None:
        super().__init__()
        self._dbname = urllib.parse.urlsplit(url).path.lstrip("/")
        try:
            import psycopg  # noqa: PLC0415 - optional dependency, imported only when configured
            import psycopg_pool  # noqa: PLC0415
        except ImportError as exc:
            raise ConfigError(
                "a postgresql:// store needs psycopg and psycopg-pool; install blindsum[postgres]",
                field="store.url",
            ) from exc
        self._psycopg = psycopg
        self._pool_errors = (psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed)
        self._ping = psycopg_pool.ConnectionPool.check_connection
        #: id(connection) -> when it was last given back (monotonic seconds).
        self._returned: dict[int, float] = {}
        self._url = url
        self._pool = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            open=False,
            kwargs={"autocommit": False, "connect_timeout": 5},
            check=self._check,
            timeout=POOL_WAIT_S,
            name="blindsum-store",
        )
        try:
            self._pool.open(wait=True, timeout=POOL_WAIT_S)
        except psycopg_pool.PoolTimeout:
            self._pool.close()
            raise Unavailable("cannot reach the database", field="store") from None
        self._listener: threading.Thread | None = None
        self._stop = threading.Event()

    def _check(self, conn: Any) -> None:
        returned = self._returned.get(id(conn))
        if returned is None or time.monotonic() - returned >= CHECK_IDLE_S:
            self._ping(conn)

    def _putconn(self, conn: Any) -> None:
        self._returned[id(conn)] = time.monotonic()
        if len(self._returned) > 8 * POOL_SIZE:
            # The pool replaces connections over time: forget the long-gone ones.
            recent = sorted(self._returned.items(), key=lambda item: item[1])[-POOL_SIZE:]
            self._returned = dict(recent)
        self._pool.putconn(conn)

    def _getconn(self) -> Any:
        try:
            return self._pool.getconn()
        except self._pool_errors as exc:
            raise Unavailable(
                f"cannot reach the database ({_first_line(exc)})", field="store"
            ) from None

    def _gone(self, exc: BaseException) -> Unavailable:
        return Unavailable(f"the database went away ({_first_line(exc)})", field="store")

    @contextmanager
    def _outer(self) -> Iterator[None]:
        conn = self._getconn()
        self._local.conn = conn
        try:
            yield
            try:
                conn.commit()
            except self._psycopg.OperationalError as exc:
                raise self._gone(exc) from None
        except BaseException:
            # On a dead connection there is nothing to undo on the server.
            with contextlib.suppress(Exception):
                conn.rollback()
            raise
        finally:
            self._local.conn = None
            self._putconn(conn)

    def _is_duplicate(self, exc: Exception) -> bool:
        return isinstance(exc, self._psycopg.errors.UniqueViolation)

    def _lock_audit(self) -> None:
        # Replicas append to one chain: one at a time, until the transaction ends.
        self._exec("SELECT pg_advisory_xact_lock(?)", (AUDIT_LOCK_ID,))

    def _run(self, sql: str, params: tuple[Any, ...]) -> _Result:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            try:
                return _result(conn.execute(sql, params))
            except self._psycopg.OperationalError as exc:
                raise self._gone(exc) from None
        for attempt in range(2):
            conn = self._getconn()
            try:
                result = _result(conn.execute(sql, params))
                conn.commit()
                return result
            except self._psycopg.OperationalError as exc:
                with contextlib.suppress(Exception):
                    conn.rollback()
                if attempt or not conn.broken:
                    raise self._gone(exc) from None
                # A statement outside any transaction is safe to send once more on a
                # fresh connection: it was never committed on the dead one.
                log.warning("store_reconnected")
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.rollback()
                raise
            finally:
                self._putconn(conn)
        raise AssertionError("unreachable")  # pragma: no cover

    def lock_ledger(self, campaign: str, window: str) -> None:
        if self._depth == 0:
            raise InvalidArgument("lock_ledger needs a transaction", field="store")
        self._exec("SELECT pg_advisory_xact_lock(hashtext(?))", (f"{campaign}\n{window}",))

    def _notify_round(self, round_id: str) -> None:
        self._exec("SELECT pg_notify(?, ?)", (NOTIFY_CHANNEL, round_id))

    def listen(self, on_change: Callable[[str], None]) -> bool:
        """LISTEN on a connection of its own, in a daemon thread that reconnects (with a
        bounded backoff) when the database goes away, until :meth:`close`."""
        if self._listener is not None:
            return True

        def loop() -> None:
            backoff = 0.5
            while not self._stop.is_set():
                try:
                    with self._psycopg.connect(
                        self._url, autocommit=True, connect_timeout=5
                    ) as conn:
                        conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                        backoff = 0.5
                        # Whatever changed while not listening: everyone looks again.
                        on_change("")
                        while not self._stop.is_set():
                            for note in conn.notifies(timeout=1.0):
                                on_change(note.payload)
                except Exception as exc:
                    if self._stop.is_set():
                        return
                    log.warning("store_listen_failed", exc=exc)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 5.0)

        self._listener = threading.Thread(target=loop, name="blindsum-store-listen", daemon=True)
        self._listener.start()
        return True

    def close(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.join(timeout=3.0)
            self._listener = None
        self._pool.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


class NoStore(ConfigError):
    """The database holds no blindsum store yet (missing, or without its tables);
    ``aggregator create-store`` or ``init`` makes one. An empty or damaged file is a
    plain ConfigError instead: that store is lost, and only a backup brings it back."""


def _check_sqlite_store(path: Path) -> None:
    """Refuse a file that is not a blindsum SQLite store, reading it without writing
    (opening it as a store would switch it to WAL mode)."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            row = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        raise ConfigError(
            f"{path.name} is not a SQLite database: restore a backup", field="store.url"
        ) from None
    if row is None:
        raise NoStore(
            f"the store {path.name} holds no blindsum store (no schema version): "
            "`blindsum aggregator init` creates one; or restore a backup",
            field="store.url",
        )


def sqlite_path(url: str, base_dir: Path | None = None) -> Path | None:
    """The file of a ``sqlite:///`` URL (relative ones under ``base_dir``), or None for
    another engine."""
    if not url.startswith("sqlite:///"):
        return None
    raw = url[len("sqlite:///") :]
    if not raw:
        raise InvalidArgument("sqlite URL has no path", field="store.url")
    path = Path(raw)
    return base_dir / path if not path.is_absolute() and base_dir is not None else path


def open_store(
    url: str, *, base_dir: Path | None = None, create: bool = False, readonly: bool = False
) -> Store:
    """Open and migrate a store from a URL: ``sqlite:///relative/or/abs.sqlite`` or
    ``postgresql://...``. Only ``create`` makes a new store (``aggregator init``);
    otherwise a missing, empty or foreign database is a ConfigError (field store.url)."""
    path = sqlite_path(url, base_dir)
    if path is not None:
        if not create:
            if not path.exists():
                raise NoStore(
                    f"no store at {path.name}: `blindsum aggregator init` creates one; "
                    "or restore a backup",
                    field="store.url",
                )
            if path.stat().st_size == 0:
                raise ConfigError(
                    f"the store {path.name} is an empty file (0 bytes): restore a backup",
                    field="store.url",
                )
            _check_sqlite_store(path)
        store: Store = SqliteStore(path, readonly=readonly)
    elif url.startswith(("postgresql://", "postgres://")):
        store = PostgresStore(url)
    else:
        raise InvalidArgument(
            "store URL must start with sqlite:/// or postgresql://", field="store.url"
        )
    try:
        if readonly:
            store.check_version()
        else:
            store.migrate(create=create)
    except BaseException:
        store.close()
        raise
    return store
