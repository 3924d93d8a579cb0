"""Issue 12: a party that sends garbage share envelopes is excluded, not obeyed.

A receiver whose envelope does not open signs a complaint and masks as usual. The
aggregator checks the complaint, takes the accused out of U3 as if it had dropped
after sharing, and names it. Its masks with survivors come off with its mask key,
rebuilt from the shares that did open: when t of its holders survive with one, the
round completes over the honest parties; otherwise it aborts, still naming it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from blindsum.crypto import shamir
from blindsum.errors import InvalidArgument, InvalidSignature, RoundAborted, UnsafeRequest
from blindsum.protocol.secagg import (
    Complaint,
    SealedShare,
    SecAggParty,
    ServerStage,
    ShareKind,
    complaint_transcript,
    envelope_digest,
)
from blindsum.types import U64Vector
from tests.drbg import drbg
from tests.unit.test_secagg_sim import (
    Cluster,
    commit_and_advertise,
    make_cluster,
    mask_all,
    ring_sum,
    share_all,
)


def _garbled(env: SealedShare) -> SealedShare:
    """The same envelope with one ciphertext bit flipped: the right size, but it does
    not authenticate."""
    ct = bytearray(env.ciphertext)
    ct[len(ct) // 2] ^= 0x40
    return replace(env, ciphertext=bytes(ct))


def _false_complaint(c: Cluster, accuser: str, accused: str) -> Complaint:
    """What a lying ``accuser`` sends: a complaint, properly signed, about the envelope
    ``accused`` really sent it, which opened fine."""
    env = next(e for e in c.server.shares_for(accuser) if e.sender == accused)
    digest = envelope_digest(env)
    party = c.parties[accuser]
    transcript = complaint_transcript(c.config, party._binding, accuser, accused, digest)
    return Complaint(accuser, accused, digest, c.identities[accuser].sign(transcript))


def _sparse_with_a_cheat(seed: bytes) -> tuple[Cluster, str, str]:
    """A fresh 12-party round of degree 6 (t = 4 of 7 holders), a cheat and one of its
    neighbours: one garbage envelope leaves the cheat's mask key rebuildable."""
    probe = make_cluster(12, degree=6, seed=seed)
    commit_and_advertise(probe)
    cheat = probe.config.parties[3]
    victim = sorted(probe.server.neighbours()[cheat])[0]
    return make_cluster(12, degree=6, seed=seed), cheat, victim


def share_and_mask(
    c: Cluster,
    *,
    garbage: Mapping[str, Collection[str]] | None = None,
    false: Mapping[str, Collection[str]] | None = None,
) -> dict[str, U64Vector]:
    """Phases 0-3. ``garbage`` maps a cheater to the neighbours it sends garbled
    envelopes; ``false`` maps a liar to the neighbours it falsely accuses. Returns the
    masked vectors (which the aggregator's store keeps until the round closes)."""
    garbage, false = garbage or {}, false or {}
    commit_and_advertise(c)
    roster = c.server.roster()
    for p in c.server.u1:
        envs = c.parties[p].share(roster)
        bad = set(garbage.get(p, ()))
        c.server.add_shares(p, [_garbled(e) if e.receiver in bad else e for e in envs])
    c.server.close_share()
    ys: dict[str, U64Vector] = {}
    for p in c.server.u2:
        party = c.parties[p]
        ys[p] = party.mask(c.server.shares_for(p), c.server.u2, c.inputs[p])
        complaints = party.complaints() + [_false_complaint(c, p, v) for v in false.get(p, ())]
        c.server.add_masked(p, ys[p], complaints, c.verify_keys[p])
    return ys


def finish_round(
    c: Cluster, ys: Mapping[str, U64Vector], *, after_mask: Collection[str] = ()
) -> U64Vector:
    """Phases 3-5 with the accused excluded; ``after_mask`` parties never sign."""
    server = c.server
    survivors, dropped = server.close_mask({p: ys[p] for p in server.to_withdraw})
    accused = server.accused
    for p in survivors:
        if p not in after_mask:
            sig = c.parties[p].sign_consistency(survivors, dropped, accused)
            server.add_consistency(p, sig, c.verify_keys[p])
    server.close_consistency()
    signatures = server.consistency_signatures()
    for p in server.consistency_signers:
        reveals = c.parties[p].unmask(survivors, dropped, signatures, accused)
        # A liar keeps to its lie: no share of a party it said it got none from.
        lied_about = {k.accused for k in server.complaints.get(p, ())}
        reveals = [r for r in reveals if r.owner not in lied_about]
        server.add_reveals(p, reveals)
    assert server.can_finish()
    return server.finish()


def _honest_sum(c: Cluster) -> U64Vector:
    return ring_sum([c.inputs[p] for p in c.server.u3], c.config.vector_length)


def _never_both(c: Cluster) -> None:
    """No party revealed both kinds of share of one owner."""
    for party in c.parties.values():
        owners = {o for o, k in party.revealed if k is ShareKind.SELF_MASK}
        others = {o for o, k in party.revealed if k is not ShareKind.SELF_MASK}
        assert not owners & others


@pytest.mark.parametrize(
    ("n", "degree", "targets"),
    [
        (5, 0, "all"),  # the attack of issue 12: every honest node used to exit 2
        (5, 0, "one"),  # t = 4 of 5: one holder short is already too many
        (12, 6, "one"),  # 5 of its 6 holders still open its shares, t = 4: it completes
        (12, 6, "all"),
    ],
)
def test_a_cheater_sending_garbage_envelopes_is_excluded_and_named(
    n: int, degree: int, targets: str
) -> None:
    """The cheater is named either way. The round completes over the others exactly
    when t of its surviving holders can still open its shares (its mask key is then
    rebuilt and its masks removed, as for any dropout); otherwise it aborts."""
    c = make_cluster(n, degree=degree, seed=b"cheat" + targets.encode())
    cheat = c.config.parties[2]
    commit_and_advertise(c)
    nbrs = sorted(c.server.neighbours()[cheat])
    c = make_cluster(n, degree=degree, seed=b"cheat" + targets.encode())
    victims = nbrs if targets == "all" else nbrs[:1]
    ys = share_and_mask(c, garbage={cheat: victims})
    assert c.server.accused == (cheat,)
    assert c.server.to_withdraw == (cheat,)  # its masked vector is in the sum
    for v in victims:
        assert c.parties[v].accused == (cheat,)
    opened = len(nbrs) - len(victims)
    if opened < c.config.threshold:
        with pytest.raises(RoundAborted, match=f"mask key of '{cheat}' has only {opened} holders"):
            finish_round(c, ys)
        assert c.server.stage is ServerStage.ABORTED
    else:
        total = finish_round(c, ys)
        assert cheat not in c.server.u3 and cheat in c.server.dropped
        assert set(c.server.u3) == set(c.config.parties) - {cheat}
        assert np.array_equal(total, _honest_sum(c))
        assert c.server.stage is ServerStage.FINISHED
        # Its mask key came from the holders whose envelope opened, and only from them.
        revealed = {p for p, q in c.parties.items() if (cheat, ShareKind.MASK_KEY) in q.revealed}
        assert revealed and not revealed & set(victims)
        _never_both(c)
    reason = c.server.misbehaving[cheat]
    assert reason.startswith(f"its share envelope to {victims[0]}")
    assert "did not open (signed complaint)" in reason
    assert set(c.server.misbehaving) == {cheat}


def test_a_false_complaint_excludes_its_victim_and_nothing_more() -> None:
    """A liar can have a neighbour it accuses left out, as a dropout would be. The
    victim's input is not released alone: its self mask is never revealed."""
    c = make_cluster(7, seed=b"liar")
    liar, victim = c.config.parties[0], c.config.parties[4]
    ys = share_and_mask(c, false={liar: [victim]})
    assert c.server.accused == (victim,)
    assert c.server.complaints[liar][0].accused == victim
    total = finish_round(c, ys)
    assert victim not in c.server.u3
    assert np.array_equal(total, _honest_sum(c))
    assert all((victim, ShareKind.SELF_MASK) not in p.revealed for p in c.parties.values())
    _never_both(c)


def test_a_complaint_the_aggregator_leaves_out_is_refused_by_its_author() -> None:
    """An aggregator that ignores a complaint cannot get its author's signature, nor
    one on lists that keep an accused party among the survivors."""
    c, cheat, victim = _sparse_with_a_cheat(b"ignored")
    ys = share_and_mask(c, garbage={cheat: [victim]})
    survivors, dropped = c.server.close_mask({p: ys[p] for p in c.server.to_withdraw})
    me = c.parties[victim]
    with pytest.raises(UnsafeRequest, match="leave out this party's complaints about"):
        me.sign_consistency(survivors, dropped, [])
    everyone = tuple(c.config.parties)
    with pytest.raises(UnsafeRequest, match="accused parties not listed as dropped"):
        c.parties[victim].sign_consistency(everyone, (), [cheat])
    assert me.sign_consistency(survivors, dropped, [cheat])


def test_the_three_view_attack_of_the_review_recovers_no_input() -> None:
    """Found in review of the first design, which had survivors reveal their pairwise
    key with an accused neighbour, with no threshold. A deviating aggregator showed
    three lists: v survives and two of its neighbours are accused (v reveals its own
    b-share); nobody is accused (those two reveal b-shares of v); v is accused (the
    other two would reveal their pairwise keys with v). With t = 3 of h = 5 that gave
    b_v and every mask of v: x_v. Now an accused party is a dropped one, and the third
    list gets only s-shares of v: two, below t, so v's masks stay on."""
    c = make_cluster(20, degree=4, threshold=3, length=4, seed=b"pairkey-attack")
    cfg = c.config
    commit_and_advertise(c)
    share_all(c)
    c.server.close_share()
    mask_all(c)
    g = c.server.neighbours()
    everyone = cfg.ordered(set(c.server.u2))
    v = everyone[0]
    w1, w2, w3, w4 = cfg.ordered(g[v])
    fillers = [p for p in everyone if p not in {v, *g[v]}]

    def lists(accused: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
        return tuple(p for p in everyone if p not in accused), accused, accused

    shown = [(lists((w3, w4)), [v]), (lists(()), [w3, w4]), (lists((v,)), [w1, w2])]
    revealed: dict[tuple[str, ShareKind], list[shamir.Share]] = {}
    for (surv, drop, acc), core in shown:
        signers = core + [fillers.pop(0) for _ in range(cfg.threshold - len(core))]
        sigs = {p: c.parties[p].sign_consistency(surv, drop, acc) for p in signers}
        for p in core:
            for r in c.parties[p].unmask(surv, drop, sigs, acc):
                share = shamir.Share.from_bytes(cfg.x_of(p), r.share)
                revealed.setdefault((r.owner, r.kind), []).append(share)
    assert len(revealed[(v, ShareKind.SELF_MASK)]) == 3  # b_v: the aggregator has it
    mask_key = revealed.get((v, ShareKind.MASK_KEY), [])
    assert len(mask_key) == 2 < cfg.threshold  # s_v: it does not
    with pytest.raises(InvalidArgument, match="need 3 distinct shares"):
        shamir.recover(mask_key, threshold=3, secret_len=32, verify=lambda _: True)
    # Nor any neighbour's mask key: each was given by at most one of its holders here.
    for w in (w1, w2, w3, w4):
        assert len(revealed.get((w, ShareKind.MASK_KEY), [])) < cfg.threshold


def test_a_silent_accuser_costs_nothing_more_than_a_dropout() -> None:
    """An accuser has no share of the accused, so it is not expected to reveal one;
    the holders whose envelope opened rebuild the mask key, even when the accuser then
    goes silent."""
    c, cheat, victim = _sparse_with_a_cheat(b"silent")
    ys = share_and_mask(c, garbage={cheat: [victim]})
    total = finish_round(c, ys, after_mask=[victim])
    assert victim in c.server.u3 and victim not in c.server.consistency_signers
    assert np.array_equal(total, _honest_sum(c))


def test_the_server_checks_every_complaint() -> None:
    c = make_cluster(5, seed=b"checks")
    ys = share_and_mask(c, garbage={"party-01": ["party-00"]})
    server = c.server
    real = c.parties["party-00"].complaints()
    assert [k.accused for k in real] == ["party-01"]
    # Nothing changes on a retry with the same complaints; a different set is refused.
    server.add_masked("party-00", ys["party-00"], real, c.verify_keys["party-00"])
    other = _false_complaint(c, "party-00", "party-02")
    with pytest.raises(Exception, match="already sent"):
        server.add_masked("party-00", ys["party-00"], [*real, other], c.verify_keys["party-00"])
    fresh = make_cluster(5, seed=b"checks")
    share_and_mask(fresh, garbage={"party-01": ["party-00"]})
    srv, vk = fresh.server, fresh.verify_keys["party-03"]
    k = _false_complaint(fresh, "party-03", "party-01")
    y = np.zeros(fresh.config.vector_length, dtype=np.uint64)
    for bad, match in [
        ([replace(k, accuser="party-04")], "accuser is not the caller"),
        ([replace(k, accused="party-03")], "sent the caller no envelope"),
        ([k, k], "names a party twice"),
        ([replace(k, digest=bytes(32))], "not that of the envelope relayed"),
        ([k], "complaints need the accuser's key"),
    ]:
        with pytest.raises(InvalidArgument, match=match):
            srv.add_masked("party-03", y, bad, None if "key" in match else vk)
    with pytest.raises(InvalidSignature):
        srv.add_masked("party-03", y, [replace(k, signature=bytes(64))], vk)
    with pytest.raises(InvalidSignature):  # signed by someone else
        srv.add_masked("party-03", y, [k], fresh.verify_keys["party-04"])


def test_close_mask_needs_the_accused_vectors_as_sent() -> None:
    c = make_cluster(5, seed=b"withdraw")
    ys = share_and_mask(c, garbage={"party-01": ["party-00"]})
    with pytest.raises(InvalidArgument, match="exactly"):
        c.server.close_mask()
    with pytest.raises(InvalidArgument, match="is not the vector"):
        c.server.close_mask({"party-01": ys["party-02"]})
    assert c.server.stage is ServerStage.MASK


def test_complaints_survive_a_restart() -> None:
    c, cheat, victim = _sparse_with_a_cheat(b"restart")
    ys = share_and_mask(c, garbage={cheat: [victim]})
    me = c.parties[victim]
    restored = SecAggParty.from_state(me.to_state(), c.identities[victim], drbg(b"r"))
    assert restored.accused == (cheat,)
    assert restored.complaints() == me.complaints()
    c.parties[victim] = restored
    assert np.array_equal(finish_round(c, ys), _honest_sum(c))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_garbage_and_lies_never_give_a_wrong_total(data: st.DataObject) -> None:
    """Any cheaters, sending garbage to any neighbours, and any liars: the round either
    finishes with exactly the sum over U3, which holds no cheater, or aborts; and no
    honest party ever reveals both secrets of one owner."""
    n = data.draw(st.integers(5, 9), label="n")
    degree = data.draw(st.sampled_from([0, 4]), label="degree")
    seed = data.draw(st.binary(min_size=4, max_size=4), label="seed")
    # A first run only to learn the graph; the same seed gives the same nonces again.
    c = make_cluster(n, degree=degree, seed=seed)
    commit_and_advertise(c)
    graph = c.server.neighbours()
    names = list(c.config.parties)
    cheats = data.draw(st.lists(st.sampled_from(names), max_size=2, unique=True), label="cheats")
    garbage = {
        p: data.draw(st.lists(st.sampled_from(sorted(graph[p])), unique=True), label=f"g/{p}")
        for p in cheats
    }
    honest = [p for p in names if p not in cheats]
    liars = data.draw(st.lists(st.sampled_from(honest), max_size=1), label="liars")
    # A liar accuses a neighbour whose envelope to it opened (else it is no lie).
    opened = {p: sorted(v for v in graph[p] if p not in garbage.get(v, ())) for p in liars}
    false = {
        p: data.draw(st.lists(st.sampled_from(opened[p]), max_size=1), label=f"f/{p}")
        for p in liars
        if opened[p]
    }
    fresh = make_cluster(n, degree=degree, seed=seed)
    ys = share_and_mask(fresh, garbage=garbage, false=false)
    try:
        total = finish_round(fresh, ys)
    except RoundAborted:
        event("aborted")
        assert fresh.server.stage is ServerStage.ABORTED
    else:
        event(f"finished, {len(fresh.server.accused)} accused")
        assert np.array_equal(total, _honest_sum(fresh))
        for p, targets in garbage.items():
            if targets:
                assert p not in fresh.server.u3
    _never_both(fresh)
