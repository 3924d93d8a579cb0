"""The round store on SQLite (always) and on the PostgreSQL server (when reachable)."""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from aggregator.store import (
    LedgerEntry,
    RoundRecord,
    StaleRound,
    Store,
    StoreCorruption,
    now_ms,
    open_store,
)
from blindsum.errors import (
    AlreadyExists,
    ConfigError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        s = open_store("sqlite:///db.sqlite", base_dir=tmp_path, create=True)
    else:
        s = open_store(request.getfixturevalue("pg_url"), create=True)
    yield s
    s.close()


def _round(round_id: str) -> RoundRecord:
    t = now_ms()
    return RoundRecord(
        round_id=round_id,
        mode="secagg",
        state="open",
        phase="advertise",
        schema_toml="x",
        schema_id="ab" * 32,
        parties=("a", "b", "c"),
        threshold=2,
        min_contributors=3,
        graph_degree=0,
        phase_timeout_s=10,
        phase_deadline_ms=t + 10_000,
        abort_reason="",
        created_ms=t,
        updated_ms=t,
    )


def test_payloads_and_running_sums_carry_a_mac(store: Store) -> None:
    """A payload or running sum altered in the database (one flipped bit, a copied
    MAC, a MAC removed, a MAC removed and the row back-dated) fails when read,
    naming what."""
    store.use_mac_key(b"k" * 32)
    rid = "r-" + uuid.uuid4().hex[:10]
    store.create_round(_round(rid))
    store.put_submission(rid, "mask", "a", "d1", b"\x00\x01payload-a")
    store.put_submission(rid, "mask", "b", "d2", b"payload-b")
    store.put_accumulator(rid, b"running-sum", ["a", "b"])
    assert [s.payload for s in store.iter_submissions(rid, "mask")] == [
        b"\x00\x01payload-a",
        b"payload-b",
    ]
    assert store.accumulator(rid) == (b"running-sum", ["a", "b"])

    def alter(sql: str, *params: object) -> None:
        with store.transaction():
            store._exec(sql, params)  # the test plays a database intruder

    alter("UPDATE submissions SET payload = ? WHERE party = 'a'", b"\x00\x03payload-a")
    with pytest.raises(
        StoreCorruption, match="store corruption: the stored mask submission of 'a'"
    ):
        list(store.iter_submissions(rid, "mask"))
    alter(
        "UPDATE submissions SET mac = (SELECT mac FROM submissions WHERE party = 'b') "
        "WHERE party = 'a'"
    )
    with pytest.raises(StoreCorruption):
        store.submissions(rid, "mask")
    alter("UPDATE submissions SET mac = '' WHERE party = 'a'")
    with pytest.raises(StoreCorruption):
        list(store.iter_submissions(rid, "mask", parties=["a"]))
    alter("UPDATE accumulators SET data = ? WHERE round_id = ?", b"running-suN", rid)
    with pytest.raises(StoreCorruption, match="running sum"):
        store.accumulator(rid)
    # A row without a MAC is refused whatever its age (no exemption to forge); the
    # operator's one-off backfill (create-store, after the upgrade) gives it one.
    alter("UPDATE submissions SET mac = '', created_ms = 1 WHERE party = 'a'")
    with pytest.raises(StoreCorruption, match="has no MAC"):
        store.submissions(rid, "mask")
    alter("UPDATE accumulators SET mac = '' WHERE round_id = ?", rid)
    assert store.backfill_macs() == 2
    assert len(store.submissions(rid, "mask")) == 2
    assert store.accumulator(rid) == (b"running-suN", ["a", "b"])
    # Dropped payloads (a closed phase) have nothing left to check.
    store.drop_payloads(rid, "mask")
    assert [s.payload for s in store.submissions(rid, "mask")] == [None, None]


def test_round_roundtrip_and_update(store: Store) -> None:
    rid = "r-" + uuid.uuid4().hex[:10]
    rec = _round(rid)
    store.create_round(rec)
    assert store.round(rid) == rec
    with pytest.raises(AlreadyExists):
        store.create_round(rec)
    moved = rec.with_phase("share", rec.phase_deadline_ms + 5)
    store.update_round(moved)
    assert store.round(rid).phase == "share"


def test_a_round_inserted_by_another_process_meanwhile_is_already_exists(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two replicas can both pass the existence check; the database's key on round ids
    then refuses the second insert, and it surfaces as AlreadyExists, not a driver
    error (campaign rounds rely on it)."""
    rid = "r-" + uuid.uuid4().hex[:10]
    store.create_round(_round(rid))
    monkeypatch.setattr(store, "round_exists", lambda _rid: False)
    with pytest.raises(AlreadyExists, match="already exists"):
        store.create_round(_round(rid))
    monkeypatch.undo()
    assert store.round(rid).phase == "advertise"  # the first one, untouched
    assert rid in [r.round_id for r in store.rounds(state="open")]
    with pytest.raises(NotFound):
        store.round("r-missing-" + uuid.uuid4().hex[:6])


def test_submissions_are_idempotent_and_exclusive(store: Store) -> None:
    rid = "r-" + uuid.uuid4().hex[:10]
    assert store.put_submission(rid, "advertise", "a", "d1", b"payload") is True
    assert store.put_submission(rid, "advertise", "a", "d1", b"payload") is False
    with pytest.raises(AlreadyExists, match="different advertise"):
        store.put_submission(rid, "advertise", "a", "d2", b"other")
    assert [s.payload for s in store.submissions(rid, "advertise")] == [b"payload"]
    assert store.submitted_parties(rid, "advertise") == ["a"]
    assert store.submission_digest(rid, "advertise", "a") == "d1"
    assert store.submission_digest(rid, "advertise", "b") is None
    assert store.submission_digest(rid, "share", "a") is None


def test_sqlite_store_serves_one_process(tmp_path: Path) -> None:
    """The serving lock: a second claim on the same file is refused until the first
    store closes; a store that only reads (CLI commands) needs no claim."""
    url = f"sqlite:///{tmp_path / 'agg.sqlite'}"
    first = open_store(url, create=True)
    second = open_store(url)
    first.claim_serving()
    first.claim_serving()  # idempotent for the holder
    with pytest.raises(FailedPrecondition, match="replicas need PostgreSQL"):
        second.claim_serving()
    assert second.rounds() == []  # reading is fine
    first.close()
    second.claim_serving()
    second.close()


def test_transaction_rolls_back_every_write(store: Store) -> None:
    rid = "r-" + uuid.uuid4().hex[:10]
    with pytest.raises(RuntimeError), store.transaction():
        store.put_submission(rid, "mask", "a", "d", None)
        store.put_accumulator(rid, b"\x01" * 8, ["a"])
        raise RuntimeError("crash between the two writes")
    assert store.submissions(rid, "mask") == []
    assert store.accumulator(rid) is None


def test_accumulator_release_and_audit(store: Store) -> None:
    rid = "r-" + uuid.uuid4().hex[:10]
    store.put_accumulator(rid, b"\x00" * 16, ["b", "a"])
    store.put_accumulator(rid, b"\x01" * 16, ["a", "b", "c"])
    assert store.accumulator(rid) == (b"\x01" * 16, ["a", "b", "c"])
    store.put_release(rid, b"report")
    assert store.release(rid) == b"report"
    with pytest.raises(AlreadyExists):
        store.put_release(rid, b"again")
    store.audit(rid, "phase", phase="share")
    assert store.audit_log(rid)[-1][2:] == ("phase", {"phase": "share"})


def test_sqlite_state_survives_reopen(tmp_path: Path) -> None:
    s = open_store("sqlite:///agg.sqlite", base_dir=tmp_path, create=True)
    s.create_round(_round("r-persist"))
    s.put_submission("r-persist", "advertise", "a", "d", b"x")
    s.close()
    again = open_store("sqlite:///agg.sqlite", base_dir=tmp_path)
    assert again.round("r-persist").parties == ("a", "b", "c")
    assert again.submitted_parties("r-persist", "advertise") == ["a"]
    again.close()


def test_bad_store_url_is_named() -> None:
    with pytest.raises(InvalidArgument, match=r"store\.url"):
        open_store("mysql://nope")


@pytest.mark.parametrize("engine", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_only_create_makes_a_store(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A database without blindsum's tables is refused unless the caller creates the
    store (aggregator init): a lost or foreign store is never silently started anew."""
    url = "sqlite:///db.sqlite" if engine == "sqlite" else str(request.getfixturevalue("pg_url"))
    if engine == "sqlite":
        foreign = sqlite3.connect(tmp_path / "db.sqlite")  # another program's database
        foreign.execute("CREATE TABLE notes (body TEXT)")
        foreign.commit()
        foreign.close()
    with pytest.raises(ConfigError, match="holds no blindsum store") as info:
        open_store(url, base_dir=tmp_path)
    assert info.value.field == "store.url"
    open_store(url, base_dir=tmp_path, create=True).close()
    again = open_store(url, base_dir=tmp_path)
    assert again.rounds() == []
    again.close()


def test_dp_columns_and_ledger_roundtrip(store: Store) -> None:
    rid = "r-" + uuid.uuid4().hex[:10]
    campaign = "c-" + uuid.uuid4().hex[:8]
    rec = replace(
        _round(rid),
        dp_mode="distributed",
        dp_rho=0.25,
        dp_expected_parties=3,
        dp_campaign=campaign,
        dp_window="2026-W47",
    )
    store.create_round(rec)
    assert store.round(rid) == rec
    assert store.ledger_spent(campaign, "2026-W47") == 0.0
    store.ledger_charge(LedgerEntry(campaign, "2026-W47", rid, 0.25, now_ms()))
    store.ledger_charge(LedgerEntry(campaign, "2026-W47", rid + "b", 0.125, now_ms()))
    store.ledger_charge(LedgerEntry(campaign, "2026-W48", rid + "c", 0.5, now_ms()))
    assert store.ledger_spent(campaign, "2026-W47") == pytest.approx(0.375)
    assert [e.round_id for e in store.ledger(campaign)] == [rid, rid + "b", rid + "c"]
    with pytest.raises(AlreadyExists):  # one charge per round and window
        store.ledger_charge(LedgerEntry(campaign, "2026-W47", rid, 0.25, now_ms()))


def test_ledger_charge_rolls_back_with_the_release(store: Store) -> None:
    rid = "r-" + uuid.uuid4().hex[:10]
    campaign = "c-" + uuid.uuid4().hex[:8]
    with pytest.raises(RuntimeError), store.transaction():
        store.put_release(rid, b"{}", campaign=campaign)
        store.ledger_charge(LedgerEntry(campaign, "w", rid, 0.5, now_ms()))
        raise RuntimeError("crash before commit")
    assert store.ledger_spent(campaign, "w") == 0.0
    with pytest.raises(NotFound):
        store.release(rid)


def test_campaign_releases_newest_first(store: Store) -> None:
    campaign = "c-" + uuid.uuid4().hex[:8]
    ids = [f"r-{uuid.uuid4().hex[:8]}-{i}" for i in range(3)]
    for i, rid in enumerate(ids):
        store.put_release(rid, f"report {i}".encode(), campaign=campaign)
        time.sleep(0.002)  # distinct created_ms; ordering, not timing, is asserted
    assert [r for r, _ in store.campaign_releases(campaign, 2)] == [ids[2], ids[1]]
    assert store.campaign_releases("c-none-" + uuid.uuid4().hex[:6], 5) == []


def test_version_1_sqlite_store_migrates(tmp_path: Path) -> None:
    """A store written by version 1 (before DP) opens, keeps its rounds, gains the ledger."""
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1');
        CREATE TABLE rounds (
            round_id TEXT PRIMARY KEY, mode TEXT NOT NULL, state TEXT NOT NULL,
            phase TEXT NOT NULL, schema_toml TEXT NOT NULL, schema_id TEXT NOT NULL,
            parties_json TEXT NOT NULL, threshold INTEGER NOT NULL,
            min_contributors INTEGER NOT NULL, graph_degree INTEGER NOT NULL,
            phase_timeout_s INTEGER NOT NULL, phase_deadline_ms BIGINT NOT NULL,
            abort_reason TEXT NOT NULL, created_ms BIGINT NOT NULL, updated_ms BIGINT NOT NULL);
        INSERT INTO rounds VALUES ('r-old', 'he', 'complete', 'done', 'x', 'ab', '["a"]',
            1, 1, 0, 10, 0, '', 1, 2);
        CREATE TABLE releases (
            round_id TEXT PRIMARY KEY, report BLOB NOT NULL, created_ms BIGINT NOT NULL);
        INSERT INTO releases VALUES ('r-old', X'7b7d', 3);
        """
    )
    conn.close()
    store = open_store(f"sqlite:///{path}")
    old = store.round("r-old")
    assert (old.mode, old.dp_mode, old.dp_rho) == ("he", "off", 0.0)
    # Version 3 columns, added by the second migration step.
    assert (old.threat_json, old.window_start_ms, old.misbehaving_json) == ("", 0, "[]")
    assert old.version == 0  # version 4: compare-and-set updates
    assert store.release("r-old") == b"{}"
    assert store.ledger_spent("any", "w") == 0.0
    store.close()
    assert open_store(f"sqlite:///{path}").round("r-old").state == "complete"


def test_update_round_is_a_compare_and_set(store: Store) -> None:
    """A replica that read an older version cannot overwrite the round."""
    rid = "r-" + uuid.uuid4().hex[:10]
    store.create_round(_round(rid))
    first = store.round(rid)
    assert first.version == 0
    moved = store.update_round(replace(first, phase="share"))
    assert moved.version == 1 == store.round(rid).version
    with pytest.raises(StaleRound, match="changed since version 0"):
        store.update_round(replace(first, state="aborted", phase="done"))
    assert store.round(rid).phase == "share"
    store.update_round(replace(moved, phase="mask"))
    assert (store.round(rid).phase, store.round(rid).version) == ("mask", 2)


def test_leases_fence_a_replica_whose_lease_lapsed(store: Store) -> None:
    rid = "r-" + uuid.uuid4().hex[:10]
    store.create_round(_round(rid))
    a = store.acquire_lease(rid, "replica-a", now=1_000, ttl_ms=500)
    assert a is not None
    assert store.acquire_lease(rid, "replica-b", now=1_200, ttl_ms=500) is None  # held
    assert store.acquire_lease(rid, "replica-a", now=1_300, ttl_ms=500) == a  # renewed
    rec = store.round(rid)
    rec = store.update_round(replace(rec, phase="share"), lease=("replica-a", a))
    # a pauses past its lease; b takes over with a larger token.
    b = store.acquire_lease(rid, "replica-b", now=2_000, ttl_ms=500)
    assert b is not None and b > a
    with pytest.raises(StaleRound):
        store.update_round(replace(rec, phase="mask"), lease=("replica-a", a))
    store.update_round(replace(rec, phase="mask"), lease=("replica-b", b))
    store.release_lease(rid, "replica-b")
    assert store.acquire_lease(rid, "replica-a", now=2_100, ttl_ms=500) == b + 1


def test_a_phase_closes_only_over_every_stored_submission(store: Store) -> None:
    """Replica A counted two adverts; replica B stores a third before A closes the phase:
    A's close is refused (it would have left B's advert out), and A's retry over three
    succeeds. A submission that arrives after the close is refused instead."""
    rid = "r-" + uuid.uuid4().hex[:10]
    rec = _round(rid)
    store.create_round(rec)
    for party in ("a", "b"):
        store.put_submission(rid, "advertise", party, "d-" + party, b"x", open_phase=True)
    seen = store.phase_count(rid, "advertise")
    store.put_submission(rid, "advertise", "c", "d-c", b"x", open_phase=True)  # replica B
    moved = rec.with_phase("share", rec.phase_deadline_ms)
    with pytest.raises(StaleRound, match="3 advertise submissions"):
        store.update_round(moved, closing=("advertise", seen))
    assert store.round(rid).phase == "advertise"
    store.update_round(moved, closing=("advertise", store.phase_count(rid, "advertise")))
    with pytest.raises(FailedPrecondition, match="not open in advertise"):
        store.put_submission(rid, "advertise", "d", "d-d", b"x", open_phase=True)
    assert store.phase_count(rid, "advertise") == 3


def test_submissions_from_many_threads_all_land(store: Store) -> None:
    """The service writes from worker threads: each thread's transaction is its own
    (its own pooled connection on PostgreSQL), and none is lost or mixed with another."""
    rid = "r-" + uuid.uuid4().hex[:10]
    store.create_round(replace(_round(rid), parties=tuple(f"p{i}" for i in range(64))))

    def submit(i: int) -> bool:
        with store.transaction():
            store.audit(rid, "submitting", party=f"p{i}")
            return store.put_submission(rid, "advertise", f"p{i}", f"d{i}", b"v" * i)

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(submit, range(64)))
    assert store.phase_count(rid, "advertise") == 64
    assert {s.party: s.payload for s in store.iter_submissions(rid, "advertise", batch=7)} == {
        f"p{i}": b"v" * i for i in range(64)
    }
    assert len([e for e in store.audit_log(rid) if e[2] == "submitting"]) == 64


@pytest.mark.postgres
def test_a_replica_hears_another_replica_move_a_round(pg_url: str) -> None:
    """LISTEN/NOTIFY: a round moved through one store is announced to a listener on
    another store of the same database, on commit (not before, not on rollback). The
    listener also wakes everyone ("") when it connects, for what it may have missed."""
    writer = open_store(pg_url, create=True)
    reader = open_store(pg_url)
    heard: queue.Queue[str] = queue.Queue()
    try:
        assert reader.listen(heard.put)
        rid = "r-" + uuid.uuid4().hex[:10]
        rec = _round(rid)
        writer.create_round(rec)
        # The listener connects in its own thread: repeat a harmless move until it hears.
        deadline = time.monotonic() + 30
        got = None
        while got is None and time.monotonic() < deadline:
            rec = writer.update_round(replace(rec, updated_ms=now_ms()))
            try:
                # "" is the listener's own wake-up when it (re)connects.
                got = heard.get(timeout=0.5) or None
            except queue.Empty:
                continue
        assert got == rid
        # Let the announcements of the earlier moves arrive (bounded), then expect none.
        for _ in range(60):
            try:
                heard.get(timeout=0.5)
            except queue.Empty:
                break
        with pytest.raises(RuntimeError), writer.transaction():
            writer.update_round(replace(rec, updated_ms=now_ms()))
            raise RuntimeError("rolled back")
        with pytest.raises(queue.Empty):
            heard.get(timeout=1.0)
    finally:
        writer.close()
        reader.close()


def test_a_closed_round_never_changes_again(store: Store) -> None:
    """Even with its current version in hand, nobody can move a complete round (a late
    replica that read it after the release cannot abort it)."""
    rid = "r-" + uuid.uuid4().hex[:10]
    rec = _round(rid)
    store.create_round(rec)
    done = store.update_round(replace(rec, state="complete", phase="done"))
    with pytest.raises(StaleRound, match="closed"):
        store.update_round(replace(store.round(rid), state="aborted", abort_reason="late"))
    assert store.round(rid) == done


def test_another_process_s_change_to_a_round_is_read_through_the_cache(tmp_path: Path) -> None:
    """A store keeps an open round's unchanging columns (the O(n) party list) in memory
    and re-reads only the columns that change: another process's phase change, abort
    and version are all seen, and a closed round leaves the cache."""
    a = open_store("sqlite:///db.sqlite", base_dir=tmp_path, create=True)
    b = open_store("sqlite:///db.sqlite", base_dir=tmp_path, create=True)
    try:
        rid = "r-" + uuid.uuid4().hex[:10]
        rec = _round(rid)
        a.create_round(rec)
        assert b.round(rid) == rec
        assert [r.round_id for r in b.rounds(state="open")] == [rid]
        moved = a.update_round(rec.with_phase("share", rec.phase_deadline_ms + 1))
        assert b.round(rid) == moved
        assert b.rounds(state="open") == [moved]
        closed = a.update_round(replace(moved, state="aborted", abort_reason="x"))
        assert b.round(rid) == closed
        assert b.rounds(state="open") == []
        assert b.rounds() == [closed]
        assert rid not in b._rounds
    finally:
        a.close()
        b.close()


# -- the audit chain (issue 13, item 7) -----------------------------------------------


def _append(store: Store, count: int, prefix: str = "e") -> None:
    for i in range(count):
        store.audit(f"r-{i % 3}", f"{prefix}{i}", n=i)


@pytest.mark.parametrize("keyed", [True, False])
def test_an_edited_or_deleted_audit_row_is_named(store: Store, keyed: bool) -> None:
    if keyed:
        store.use_mac_key(b"k" * 32)
    _append(store, 6)
    checked, problems = store.verify_audit()
    assert (checked, problems) == (6, [])
    ids = [row[0] for row in store.audit_rows()]
    head = store.audit_head()
    assert head.startswith("hmac:" if keyed else "sha256:")
    # An edited detail: that row no longer follows the one before it.
    store._exec("UPDATE audit SET detail_json = ? WHERE id = ?", ('{"n": 99}', ids[2]))
    _, problems = store.verify_audit()
    assert len(problems) == 1
    assert problems[0].startswith(f"audit row {ids[2]} (e2) does not follow the row before it")
    store._exec("UPDATE audit SET detail_json = ? WHERE id = ?", ('{"n": 2}', ids[2]))
    assert store.verify_audit()[1] == []
    # A deleted row: the next one is named, with the gap in the ids.
    store._exec("DELETE FROM audit WHERE id = ?", (ids[3],))
    _, problems = store.verify_audit()
    assert problems == [
        f"audit row {ids[4]} (e4) does not follow the row before it: it was altered, or a "
        f"row before it was deleted; ids jump from {ids[2]} to {ids[4]}"
    ]


def test_the_audit_chain_is_keyed_when_the_store_has_a_key(store: Store) -> None:
    """A writer to the database alone cannot relink rows: with the store's key, a link
    computed without it (or with another key) does not verify."""
    store.use_mac_key(b"k" * 32)
    _append(store, 3)
    first = store.audit_rows()[0][0]
    store._exec("UPDATE audit SET chain = ? WHERE id = ?", ("sha256:" + "0" * 64, first))
    _, problems = store.verify_audit()
    assert problems[0] == f"audit row {first} (e0) is not linked with the store's key"
    store.use_mac_key(b"x" * 32)  # another key: every link fails
    store._exec("UPDATE audit SET chain = ? WHERE id = ?", ("", first))
    _, problems = store.verify_audit()
    assert problems[0].startswith(f"audit row {first} (e0) has no link")
    assert len(problems) == 3


def test_rows_from_before_the_chain_are_linked_once_by_create_store(store: Store) -> None:
    _append(store, 4)
    # As a version-5 store left them: no links, and the migration noted the last id.
    store._exec("UPDATE audit SET chain = ''")
    last = max(r[0] for r in store.audit_rows())
    store._exec("INSERT INTO meta (key, value) VALUES ('audit_legacy_max_id', ?)", (str(last),))
    _append(store, 2, prefix="served")  # serve ran before create-store: a chain from ""
    _, problems = store.verify_audit()
    assert len(problems) == 4 and all("`aggregator create-store DIR` links" in p for p in problems)
    assert store.backfill_audit_chain() == 4
    assert store.verify_audit() == (6, [])
    assert store.backfill_audit_chain() == 0  # nothing left to link
    _append(store, 2, prefix="after")
    assert store.verify_audit() == (8, [])
    assert all(r[5].startswith("sha256-legacy:") for r in store.audit_rows()[:4])


def test_blanking_links_cannot_launder_an_edit(store: Store) -> None:
    """Found in review: an intruder edited a row and blanked a link, verify told the
    operator to run create-store, and create-store relinked everything, edit included.
    Now only rows from before the chain (by id, noted at the migration) are ever
    linked, and never one after a linked row."""
    store.use_mac_key(b"k" * 32)
    _append(store, 5)
    ids = [r[0] for r in store.audit_rows()]
    store._exec("UPDATE audit SET detail_json = ? WHERE id = ?", ('{"n": 99}', ids[2]))
    store._exec("UPDATE audit SET chain = '' WHERE id = ?", (ids[1],))
    before = store.verify_audit()[1]
    assert any("its link was removed" in p for p in before)
    assert not any("create-store" in p for p in before)
    assert store.backfill_audit_chain() == 0
    assert store.verify_audit()[1] == before
    # Blanking every link of a store that never had legacy rows launders nothing either.
    store._exec("UPDATE audit SET chain = ''")
    assert store.backfill_audit_chain() == 0
    problems = store.verify_audit()[1]
    assert len(problems) == 5
    assert all("though written after the chain began: its link was removed" in p for p in problems)


def test_replicas_appending_at_once_keep_one_chain(pg_url: str) -> None:
    """Two processes' stores on one PostgreSQL database append concurrently: the
    advisory lock keeps the chain linear (without it both read the same head)."""
    stores = [open_store(pg_url, create=True), open_store(pg_url)]
    try:
        for s in stores:
            s.use_mac_key(b"k" * 32)

        def append(s: Store, tag: str) -> None:
            for i in range(40):
                s.audit("r", f"{tag}{i}")

        threads = [
            threading.Thread(target=append, args=(s, tag))
            for s, tag in zip(stores, "ab", strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert stores[0].verify_audit() == (80, [])
    finally:
        for s in stores:
            s.close()
