"""A damaged store row stops one round, not the aggregator (issue 12, item 4).

Garbage in a stored round row or in a stored advert used to make the ticker fail
every 0.25 s for ever: the round never ended, and one bad row made ListRounds fail
for everyone. Now a round whose stored state cannot be used is aborted after a
bounded number of ticks, with a reason, and every other round keeps going.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import pytest

from aggregator.rounds import MAX_ROUND_FAILURES
from aggregator.service import start_aggregator
from aggregator.store import CorruptRound
from blindsum.errors import BlindsumError
from blindsum.model import Mode, Phase, RoundState
from tests.conftest import PARTIES, STEPPED, Deployment, SteppedClock
from tests.integration.test_rounds_grpc import (
    assert_report_matches,
    open_round,
    party_vector,
    plain_sum,
    run_parties,
)


def _damage(deployment: Deployment, sql: str, *params: object) -> None:
    conn = sqlite3.connect(deployment.agg_dir / "aggregator.sqlite")
    try:
        assert conn.execute(sql, params).rowcount == 1
        conn.commit()
    finally:
        conn.close()


def _alter_payload(
    deployment: Deployment, round_id: str, party: str, change: Callable[[bytes], bytes]
) -> None:
    """Rewrite one party's stored payload of ``round_id`` (its only one) with ``change``."""
    conn = sqlite3.connect(deployment.agg_dir / "aggregator.sqlite")
    try:
        where = "WHERE round_id = ? AND party = ?"
        (payload,) = conn.execute(
            f"SELECT payload FROM submissions {where}", (round_id, party)
        ).fetchone()
        conn.execute(
            f"UPDATE submissions SET payload = ? {where}", (change(bytes(payload)), round_id, party)
        )
        conn.commit()
    finally:
        conn.close()


def _flip_middle_bit(payload: bytes) -> bytes:
    flipped = bytearray(payload)
    flipped[len(flipped) // 2] ^= 0x01
    return bytes(flipped)


@pytest.mark.parametrize("damage", ["round row", "advert payload"])
async def test_a_damaged_round_is_aborted_and_the_others_complete(
    deployment: Deployment, damage: str
) -> None:
    clock = SteppedClock()
    running = await start_aggregator(deployment.agg_dir, listen="127.0.0.1:0", clock_ms=clock)
    try:
        bad = await open_round(running)
        good = await open_round(running)
        if damage == "advert payload":
            # The bad round reaches the share phase, so its adverts are stored.
            vectors = {n: party_vector(i) for i, n in enumerate(PARTIES)}
            STEPPED[running.port] = (running.manager, clock)
            await run_parties(
                deployment,
                running.port,
                bad.round_id,
                vectors,
                drop_after=dict.fromkeys(PARTIES, Phase.ADVERTISE),
            )
    finally:
        STEPPED.pop(running.port, None)
        await running.stop(grace=None)
    if damage == "round row":
        _damage(
            deployment,
            "UPDATE rounds SET parties_json = '{not json' WHERE round_id = ?",
            bad.round_id,
        )
    else:
        _damage(
            deployment,
            "UPDATE submissions SET payload = X'ffffff' WHERE round_id = ? AND phase = 'advertise'"
            " AND party = ?",
            bad.round_id,
            PARTIES[0],
        )

    running = await start_aggregator(deployment.agg_dir, listen="127.0.0.1:0", clock_ms=clock)
    STEPPED[running.port] = (running.manager, clock)
    try:
        manager = running.manager
        if damage == "round row":
            with pytest.raises(CorruptRound, match="cannot be decoded"):
                manager.view(bad.round_id)
            # Every other round is still listed.
            assert good.round_id in {v.round_id for v in manager.list_rounds()}
        for _ in range(MAX_ROUND_FAILURES + 2):
            await manager.tick()
        if damage == "round row":
            # Its record still does not decode, but the round is closed: the ticker
            # leaves it alone, and the audit says why it ended.
            events = [e for e in running.store.audit_log(bad.round_id) if e[2] == "round_aborted"]
            assert events and events[-1][3]["reason"].startswith("stored state cannot be used")
            assert bad.round_id not in {r.round_id for r in running.store.rounds(state="open")}
            assert bad.round_id not in running.store.corrupt_rounds
        else:
            final = manager.view(bad.round_id)
            assert final.state is RoundState.ABORTED
            assert final.abort_reason.startswith(
                ("stored state cannot be used", "internal", "store corruption")
            ), final
        # The good round runs to completion on the same aggregator.
        vectors = {n: party_vector(i) for i, n in enumerate(PARTIES)}
        await run_parties(deployment, running.port, good.round_id, vectors)
        assert_report_matches(manager.report(good.round_id), plain_sum(list(vectors.values())))
    finally:
        STEPPED.pop(running.port, None)
        await running.stop(grace=None)


async def test_a_tampered_ciphertext_aborts_the_round_with_store_corruption(
    deployment: Deployment,
) -> None:
    """One bit of a stored he ciphertext flipped while the aggregator was down (the
    issue's attack flipped a bit of the running sum, and a wrong total was released).
    The payload fails its MAC when the round is summed, the round aborts naming it,
    and nothing is released."""
    clock = SteppedClock()
    running = await start_aggregator(deployment.agg_dir, listen="127.0.0.1:0", clock_ms=clock)
    try:
        view = await open_round(running, mode=Mode.HE)
        vectors = {n: party_vector(i) for i, n in enumerate(PARTIES[:4])}
        # Four of five submit and leave; the round waits for the fifth.
        await run_parties(
            deployment,
            running.port,
            view.round_id,
            vectors,
            drop_after=dict.fromkeys(vectors, Phase.COLLECT),
            expire_gone=False,
        )
        assert running.manager.view(view.round_id).state is RoundState.OPEN
    finally:
        await running.stop(grace=None)
    _alter_payload(deployment, view.round_id, PARTIES[1], _flip_middle_bit)

    running = await start_aggregator(deployment.agg_dir, listen="127.0.0.1:0", clock_ms=clock)
    try:
        clock.pass_deadline(running.manager.view(view.round_id).phase_deadline_ms)
        for _ in range(3):
            await running.manager.tick()
        final = running.manager.view(view.round_id)
        assert final.state is RoundState.ABORTED
        assert final.abort_reason.startswith(
            f"store corruption: the stored collect submission of {PARTIES[1]!r}"
        )
        with pytest.raises(BlindsumError, match="aborted"):
            running.manager.report(view.round_id)
    finally:
        await running.stop(grace=None)


async def test_aggregator_check_finds_each_kind_of_damage(deployment: Deployment) -> None:
    """`aggregator check DIR` reads everything and changes nothing: a healthy store
    after a DP round passes; then each kind of damage is named."""
    from aggregator.check import check_directory
    from blindsum.model import DpMode, DpSpec

    clock = SteppedClock()
    running = await start_aggregator(deployment.agg_dir, listen="127.0.0.1:0", clock_ms=clock)
    STEPPED[running.port] = (running.manager, clock)
    try:
        dp = DpSpec(mode=DpMode.CENTRAL, rho=0.5, campaign="check", window="2026-W47")
        view = await open_round(running, mode=Mode.HE, dp=dp)
        vectors = {n: party_vector(i) for i, n in enumerate(PARTIES)}
        await run_parties(deployment, running.port, view.round_id, vectors)
        assert running.manager.view(view.round_id).state is RoundState.COMPLETE
    finally:
        STEPPED.pop(running.port, None)
        await running.stop(grace=None)
    db = deployment.agg_dir / "aggregator.sqlite"
    before = db.read_bytes()
    healthy = check_directory(deployment.agg_dir)
    assert db.read_bytes() == before  # read-only: a restored backup stays as it was
    assert healthy.ok, healthy.problems
    assert healthy.rounds == 1 and healthy.releases == 1 and healthy.charges == 1
    assert healthy.payloads == len(PARTIES)

    rid = view.round_id
    _alter_payload(deployment, rid, PARTIES[2], lambda payload: payload + b"\x00")
    _damage(deployment, "DELETE FROM dp_ledger WHERE round_id = ?", rid)
    found = check_directory(deployment.agg_dir)
    assert not found.ok
    text = "\n".join(found.problems)
    assert f"submission of {PARTIES[2]!r}" in text and "fails its MAC" in text
    assert "released with DP but charged 0 times" in text
    (deployment.agg_dir / "store.key").unlink()
    assert any("store.mac_key" in p for p in check_directory(deployment.agg_dir).problems)
