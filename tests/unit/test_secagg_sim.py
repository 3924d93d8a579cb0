"""In-process secagg simulations: whole rounds with dropouts at every phase."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import pytest

from blindsum.crypto.sign import SigningKey, VerifyKey
from blindsum.errors import InvalidSignature, RoundAborted, UnsafeRequest
from blindsum.protocol import graph, params
from blindsum.protocol.secagg import (
    PartyStage,
    SecAggConfig,
    SecAggParty,
    SecAggServer,
    ServerStage,
    ShareKind,
)
from blindsum.types import U64Vector
from tests.drbg import drbg


@dataclass
class Cluster:
    config: SecAggConfig
    identities: dict[str, SigningKey]
    parties: dict[str, SecAggParty]
    server: SecAggServer
    inputs: dict[str, U64Vector]

    @property
    def verify_keys(self) -> dict[str, VerifyKey]:
        return {p: k.verify_key for p, k in self.identities.items()}


def make_cluster(
    n: int,
    *,
    degree: int = 0,
    threshold: int | None = None,
    length: int = 6,
    seed: bytes = b"s",
    threat: params.ThreatModel | None = None,
) -> Cluster:
    names = tuple(f"party-{i:02d}" for i in range(n))
    k = graph.effective_degree(degree, n)
    t = threshold if threshold is not None else graph.default_threshold(k + 1)
    config = SecAggConfig(
        round_id="round-1",
        schema_id="schema-abc",
        parties=names,
        threshold=t,
        vector_length=length,
        graph_degree=degree,
        threat=threat,
    )
    identities = {p: SigningKey.generate(drbg(seed + b"id" + p.encode())) for p in names}
    parties = {p: SecAggParty(config, p, identities[p], drbg(seed + p.encode())) for p in names}
    # Inputs near the top of the ring, so wrap-around is exercised.
    gen = drbg(seed + b"inputs")
    inputs = {p: np.frombuffer(gen(8 * length), dtype="<u8").astype(np.uint64) for p in names}
    return Cluster(config, identities, parties, SecAggServer(config), inputs)


def ring_sum(vectors: Collection[U64Vector], length: int) -> U64Vector:
    total = np.zeros(length, dtype=np.uint64)
    for v in vectors:
        total += v
    return total


def commit_and_advertise(
    c: Cluster, *, no_commit: Collection[str] = (), no_advert: Collection[str] = ()
) -> None:
    """Phases 0 and 1: parties not in ``no_commit`` commit; the members of L not in
    ``no_advert`` advertise; both phases are closed."""
    vks = c.verify_keys
    for p, party in c.parties.items():
        if p not in no_commit:
            c.server.add_commit(party.commit(), vks[p])
    c.server.close_commit()
    commits = c.server.commits()
    for p in c.server.committed:
        if p not in no_advert:
            c.server.add_advert(c.parties[p].advertise(commits, vks), vks[p])
    c.server.close_advertise()


def share_all(c: Cluster, skip: Collection[str] = ()) -> None:
    roster = c.server.roster()
    for p in c.server.u1:
        if p not in skip:
            c.server.add_shares(p, c.parties[p].share(roster))


def mask_all(c: Cluster, skip: Collection[str] = ()) -> None:
    for p in c.server.u2:
        if p not in skip:
            y = c.parties[p].mask(c.server.shares_for(p), c.server.u2, c.inputs[p])
            c.server.add_masked(p, y)


def consistency_round(
    c: Cluster, survivors: tuple[str, ...], dropped: tuple[str, ...], silent: Collection[str] = ()
) -> dict[str, bytes]:
    """Every survivor not in ``silent`` signs; close the round; return the signatures."""
    for p in survivors:
        if p not in silent:
            sig = c.parties[p].sign_consistency(survivors, dropped)
            c.server.add_consistency(p, sig, c.identities[p].verify_key)
    c.server.close_consistency()
    return c.server.consistency_signatures()


def run_round(
    c: Cluster,
    *,
    no_commit: Collection[str] = (),
    no_advert: Collection[str] = (),
    after_advertise: Collection[str] = (),
    after_share: Collection[str] = (),
    after_mask: Collection[str] = (),
    after_consistency: Collection[str] = (),
    during_unmask: Collection[str] = (),
) -> U64Vector:
    """Run a round; each collection names parties that go silent at that point.

    ``no_commit`` parties never commit (they are not in L); ``no_advert`` ones commit
    but never advertise (which aborts the round); ``after_mask`` parties never sign the
    consistency check; ``after_consistency`` ones sign but never unmask;
    ``during_unmask`` ones unmask but their reveals never arrive.
    """
    server = c.server
    commit_and_advertise(c, no_commit=no_commit, no_advert=no_advert)
    share_all(c, skip=after_advertise)
    server.close_share()
    mask_all(c, skip=after_share)
    survivors, dropped = server.close_mask()
    assert server.stage is ServerStage.CONSISTENCY
    signatures = consistency_round(c, survivors, dropped, silent=after_mask)
    for p in server.consistency_signers:
        if p in after_consistency:
            continue
        reveals = c.parties[p].unmask(survivors, dropped, signatures)
        if p not in during_unmask:
            server.add_reveals(p, reveals)
    return server.finish()


def expected_sum(c: Cluster) -> U64Vector:
    return ring_sum([c.inputs[p] for p in c.server.u3], c.config.vector_length)


def test_complete_n5_no_dropouts() -> None:
    c = make_cluster(5)
    assert c.config.threshold == 4
    result = run_round(c)
    assert c.server.committed == c.config.parties
    assert c.server.u3 == c.config.parties
    assert np.array_equal(result, ring_sum(c.inputs.values(), 6))
    assert c.server.stage is ServerStage.FINISHED
    assert c.server.misbehaving == {}
    assert np.array_equal(c.server.finish(), result)  # finishing twice is stable


def test_every_party_sees_the_servers_graph_over_l() -> None:
    """Parties and the server derive the same graph, and its seed is fixed by L and the
    opened nonces: a second round over the same config with fresh nonces differs."""
    first = make_cluster(12, degree=4, threshold=3, length=2, seed=b"graph-a")
    commit_and_advertise(first)
    share_all(first)
    nbrs = first.server.neighbours()
    for p, party in first.parties.items():
        assert party.committed == first.server.committed
        assert party.neighbours == nbrs[p]
    second = make_cluster(12, degree=4, threshold=3, length=2, seed=b"graph-b")
    commit_and_advertise(second)
    assert second.server.neighbours() != nbrs


def test_masked_vectors_hide_inputs() -> None:
    c = make_cluster(5)
    commit_and_advertise(c)
    share_all(c)
    c.server.close_share()
    ys = {}
    for p in c.server.u2:
        ys[p] = c.parties[p].mask(c.server.shares_for(p), c.server.u2, c.inputs[p])
        assert not np.any(ys[p] == c.inputs[p])
        c.server.add_masked(p, ys[p])
    # Pairwise masks cancel in the sum but self masks remain until unmasking.
    assert not np.array_equal(c.server.running_sum, ring_sum(c.inputs.values(), 6))


@pytest.mark.parametrize(
    "drops",
    [
        {"no_commit": {"party-01"}},
        {"after_advertise": {"party-02"}},
        {"after_share": {"party-03"}},
        {"after_share": {"party-00", "party-04"}},
        {"after_mask": {"party-01"}},
        {"after_consistency": {"party-02"}},
        {"during_unmask": {"party-04"}},
        {"after_mask": {"party-00"}, "during_unmask": {"party-03"}},
        {"after_advertise": {"party-00"}, "after_share": {"party-02"}},
        {"after_share": {"party-01"}, "during_unmask": {"party-03"}},
        {"no_commit": {"party-04"}, "after_share": {"party-00"}},
    ],
)
def test_complete_n5_dropouts(drops: dict[str, set[str]]) -> None:
    c = make_cluster(5, threshold=3)
    result = run_round(c, **drops)
    gone_before_mask = set().union(
        drops.get("no_commit", set()),
        drops.get("after_advertise", set()),
        drops.get("after_share", set()),
    )
    assert set(c.server.committed) == set(c.config.parties) - drops.get("no_commit", set())
    assert set(c.server.u3) == set(c.config.parties) - gone_before_mask
    assert np.array_equal(result, expected_sum(c))


def test_dropped_after_share_is_unmasked_with_key_shares() -> None:
    c = make_cluster(5, threshold=3)
    run_round(c, after_share={"party-02"})
    assert c.server.dropped == ("party-02",)
    for p in c.server.u3:
        assert ("party-02", ShareKind.MASK_KEY) in c.parties[p].revealed
        assert ("party-02", ShareKind.SELF_MASK) not in c.parties[p].revealed
        assert (p, ShareKind.SELF_MASK) in c.parties[p].revealed


def test_sparse_n40_no_dropouts() -> None:
    degree = graph.default_degree(40, cutoff=8)
    c = make_cluster(40, degree=degree, length=5)
    assert degree == 22
    assert c.config.threshold == graph.default_threshold(23) == 16
    result = run_round(c)
    nbrs = c.server.neighbours()
    assert all(len(v) == 22 for v in nbrs.values())
    for p, party in c.parties.items():
        assert party.neighbours == nbrs[p]
    assert np.array_equal(result, ring_sum(c.inputs.values(), 5))


def test_sparse_n40_dropouts_at_every_phase() -> None:
    c = make_cluster(40, degree=22, threshold=14, length=5)
    result = run_round(
        c,
        no_commit={"party-39"},
        after_advertise={"party-05", "party-17"},
        after_share={"party-01", "party-22", "party-30"},
        after_mask={"party-08"},
        after_consistency={"party-20"},
        during_unmask={"party-11", "party-35"},
    )
    assert len(c.server.committed) == 39
    assert len(c.server.u1) == 39
    assert len(c.server.u2) == 37
    assert len(c.server.u3) == 34
    assert set(c.server.dropped) == {"party-01", "party-22", "party-30"}
    assert len(c.server.consistency_signers) == 33
    assert np.array_equal(result, expected_sum(c))


def test_sparse_small_degree() -> None:
    c = make_cluster(12, degree=4, threshold=3, length=3, seed=b"small")
    result = run_round(c, after_share={"party-03"})
    assert all(len(v) == 4 for v in c.server.neighbours().values())
    assert np.array_equal(result, expected_sum(c))


def test_abort_fewer_than_t_commits() -> None:
    c = make_cluster(5, threshold=4)
    with pytest.raises(RoundAborted, match="only 3 parties committed, the round needs 4"):
        run_round(c, no_commit={"party-00", "party-01"})
    assert c.server.stage is ServerStage.ABORTED
    assert c.server.abort_reason is not None
    with pytest.raises(RoundAborted):
        c.server.close_commit()
    # Nobody was asked to advertise: no keys were drawn for this round.
    stages = {p: party.stage for p, party in c.parties.items()}
    assert stages == {
        p: PartyStage.NEW if p in ("party-00", "party-01") else PartyStage.COMMITTED
        for p in c.config.parties
    }


def test_abort_when_a_committed_party_does_not_advertise() -> None:
    """U1 must be L exactly: going on with a subset would let whoever picks the subset
    pick among graph seeds, so one missing reveal aborts the round."""
    c = make_cluster(5, threshold=3)
    with pytest.raises(RoundAborted, match="committed but did not reveal: party-01") as info:
        run_round(c, no_advert={"party-01"})
    assert info.value.field == "u1"
    assert c.server.stage is ServerStage.ABORTED
    with pytest.raises(RoundAborted):
        c.server.close_advertise()
    assert {p: party.stage for p, party in c.parties.items()} == {
        p: PartyStage.COMMITTED if p == "party-01" else PartyStage.ADVERTISED
        for p in c.config.parties
    }
    # A deviating aggregator that carried on with the other four would be refused by
    # every party: the roster must be all of L.
    partial = c.server.roster()
    assert set(partial) == set(c.config.parties) - {"party-01"}
    for p in partial:
        with pytest.raises(UnsafeRequest, match="parties in L without an advert"):
            c.parties[p].share(partial)


def test_abort_fewer_than_t_shares() -> None:
    c = make_cluster(5, threshold=4)
    with pytest.raises(RoundAborted, match="only 3 parties sent shares"):
        run_round(c, after_advertise={"party-00", "party-03"})


def test_abort_fewer_than_t_masked() -> None:
    c = make_cluster(5, threshold=4)
    with pytest.raises(RoundAborted, match="only 3 parties sent masked inputs"):
        run_round(c, after_share={"party-02", "party-04"})


def test_abort_fewer_than_t_reveals() -> None:
    c = make_cluster(5, threshold=4)
    with pytest.raises(RoundAborted, match="fewer than 4 shares"):
        run_round(c, during_unmask={"party-02", "party-04"})
    assert not c.server.can_finish()


def test_sparse_abort_when_a_holder_set_is_too_small() -> None:
    # Every neighbour of one party drops: its shares cannot be recovered.
    c = make_cluster(12, degree=4, threshold=3, length=3, seed=b"iso")
    commit_and_advertise(c)
    victim = "party-00"
    share_all(c, skip=c.server.neighbours()[victim])
    with pytest.raises(RoundAborted, match=victim):
        c.server.close_share()


def test_can_finish_tracks_reveals() -> None:
    c = make_cluster(5, threshold=3)
    commit_and_advertise(c)
    share_all(c)
    c.server.close_share()
    mask_all(c)
    survivors, dropped = c.server.close_mask()
    assert not c.server.can_finish()
    signatures = consistency_round(c, survivors, dropped)
    states = []
    for p in survivors:
        states.append(c.server.can_finish())
        c.server.add_reveals(p, c.parties[p].unmask(survivors, dropped, signatures))
    states.append(c.server.can_finish())
    assert states == [False, False, False, True, True, True]
    assert np.array_equal(c.server.finish(), ring_sum(c.inputs.values(), 6))


def test_server_restart_with_restored_sum() -> None:
    """A rebuilt server (inputs replayed, running sum restored) finishes identically."""
    c = make_cluster(5, threshold=3)
    verify_keys = c.verify_keys
    commits = {p: party.commit() for p, party in c.parties.items()}
    for p, cm in commits.items():
        c.server.add_commit(cm, verify_keys[p])
    c.server.close_commit()
    listed = c.server.commits()
    adverts = {p: party.advertise(listed, verify_keys) for p, party in c.parties.items()}
    for p, a in adverts.items():
        c.server.add_advert(a, verify_keys[p])
    c.server.close_advertise()
    shares = {p: c.parties[p].share(c.server.roster()) for p in c.server.u1}
    for p, s in shares.items():
        c.server.add_shares(p, s)
    c.server.close_share()
    ys = {
        p: c.parties[p].mask(c.server.shares_for(p), c.server.u2, c.inputs[p]) for p in c.server.u2
    }
    for p in ("party-00", "party-01"):
        c.server.add_masked(p, ys[p])
    saved_sum = c.server.running_sum
    saved_digests = {p: c.server.masked_digest(p) for p in c.server.masked_parties}

    def replay_to_mask() -> SecAggServer:
        server = SecAggServer(c.config)
        for p, cm in commits.items():
            server.add_commit(cm, verify_keys[p])
        server.close_commit()
        assert server.list_digest == c.server.list_digest
        for p, a in adverts.items():
            server.add_advert(a, verify_keys[p])
        server.close_advertise()
        assert server.neighbours() == c.server.neighbours()
        for p, s in shares.items():
            server.add_shares(p, s)
        server.close_share()
        return server

    rebuilt = replay_to_mask()
    rebuilt.restore_masked(
        saved_sum,
        ["party-00", "party-01"],
        digests={p: d for p, d in saved_digests.items() if d is not None},
    )
    rebuilt.add_masked("party-00", ys["party-00"])  # an identical retry is a no-op
    for p in ("party-02", "party-03"):
        rebuilt.add_masked(p, ys[p])
    survivors, dropped = rebuilt.close_mask()
    assert dropped == ("party-04",)
    sigs = {p: c.parties[p].sign_consistency(survivors, dropped) for p in survivors}
    for p, sig in sigs.items():
        rebuilt.add_consistency(p, sig, verify_keys[p])
    rebuilt.add_consistency("party-00", sigs["party-00"], verify_keys["party-00"])  # no-op
    rebuilt.close_consistency()

    # A second rebuild from the persisted inputs, now including the signatures.
    again = replay_to_mask()
    again.restore_masked(rebuilt.running_sum, list(rebuilt.masked_parties))
    assert again.close_mask() == (survivors, dropped)
    for p, sig in rebuilt.consistency_signatures().items():
        again.add_consistency(p, sig, verify_keys[p])
    again.close_consistency()
    assert again.consistency_signatures() == rebuilt.consistency_signatures()

    signatures = rebuilt.consistency_signatures()
    for p in survivors:
        reveals = c.parties[p].unmask(survivors, dropped, signatures)
        rebuilt.add_reveals(p, reveals)
        again.add_reveals(p, reveals)
    expected = ring_sum([c.inputs[p] for p in survivors], 6)
    assert np.array_equal(rebuilt.finish(), expected)
    assert np.array_equal(again.finish(), expected)


def test_party_restart_mid_round() -> None:
    """Parties persisted after every phase and restored from state finish the round."""
    c = make_cluster(5, threshold=3)
    verify_keys = c.verify_keys

    def reload(p: str) -> SecAggParty:
        return SecAggParty.from_state(
            c.parties[p].to_state(), c.identities[p], drbg(b"after-restart" + p.encode())
        )

    for p in c.parties:
        commit = c.parties[p].commit()
        c.parties[p] = reload(p)
        assert c.parties[p].commit() == commit  # the same nonce, never a second one
        c.server.add_commit(commit, verify_keys[p])
    c.server.close_commit()
    commits = c.server.commits()
    for p in c.server.committed:
        advert = c.parties[p].advertise(commits, verify_keys)
        c.parties[p] = reload(p)
        assert c.parties[p].advertise(commits, verify_keys) == advert
        c.server.add_advert(advert, verify_keys[p])
    c.server.close_advertise()
    for p in c.server.u1:
        c.server.add_shares(p, c.parties[p].share(c.server.roster()))
        c.parties[p] = reload(p)
    c.server.close_share()
    for p in c.server.u2:
        if p == "party-03":
            continue
        y = c.parties[p].mask(c.server.shares_for(p), c.server.u2, c.inputs[p])
        c.server.add_masked(p, y)
        c.parties[p] = reload(p)
    survivors, dropped = c.server.close_mask()
    for p in survivors:
        sig = c.parties[p].sign_consistency(survivors, dropped)
        c.parties[p] = reload(p)
        c.server.add_consistency(p, sig, verify_keys[p])
    c.server.close_consistency()
    signatures = c.server.consistency_signatures()
    for p in survivors:
        reveals = c.parties[p].unmask(survivors, dropped, signatures)
        c.server.add_reveals(p, reveals)
        c.parties[p] = reload(p)
        # A restarted party repeats the same reveals for a retried request.
        assert c.parties[p].unmask(survivors, dropped, signatures) == reveals
    assert np.array_equal(c.server.finish(), expected_sum(c))


# --------------------------------------------------------------------------- threat model


def test_threat_model_round_with_found_parameters() -> None:
    """A complete-graph round with the degree and threshold of params.find and the
    threat model in the config finishes with the tolerated dropouts."""
    model = params.DEFAULT_THREAT_MODEL
    chosen = params.find(20, model)
    assert chosen.complete and chosen.dropouts == 2
    c = make_cluster(
        20, degree=chosen.wire_degree(), threshold=chosen.threshold, length=3, threat=model
    )
    assert c.config.min_committed() >= chosen.threshold
    result = run_round(c, no_commit={"party-07"}, after_share={"party-11"})
    assert len(c.server.u3) == 18
    assert np.array_equal(result, expected_sum(c))


# --------------------------------------------------------------------------- consistency round


def test_abort_fewer_than_t_consistency_signers() -> None:
    c = make_cluster(5, threshold=4)
    with pytest.raises(RoundAborted, match="only 3 parties signed the consistency check") as info:
        run_round(c, after_mask={"party-01", "party-03"})
    assert "threshold is 4" in str(info.value)
    assert info.value.field == "consistency"
    assert c.server.stage is ServerStage.ABORTED
    # Nobody revealed anything: unmasking never started.
    assert all(not party.revealed for party in c.parties.values())


def test_party_dropped_during_consistency_is_still_unmasked() -> None:
    """A party in U3 that never signs: its y is in the sum, so its self mask must be
    removed from the signers' b-shares; the round still finishes with t signers."""
    c = make_cluster(5, threshold=3)
    result = run_round(c, after_mask={"party-02"})
    assert "party-02" in c.server.u3
    assert c.server.dropped == ()
    assert "party-02" not in c.server.consistency_signers
    assert len(c.server.consistency_signers) == 4
    assert np.array_equal(result, ring_sum(c.inputs.values(), 6))
    for p in c.server.consistency_signers:
        assert ("party-02", ShareKind.SELF_MASK) in c.parties[p].revealed
    assert c.parties["party-02"].revealed == frozenset()


def test_sparse_abort_when_signers_miss_a_holder_set() -> None:
    """Enough signers overall, but one secret's holders among them are fewer than t."""
    c = make_cluster(12, degree=4, threshold=3, length=3, seed=b"sig")
    victim = "party-00"
    commit_and_advertise(c)
    share_all(c)
    c.server.close_share()
    mask_all(c)
    survivors, dropped = c.server.close_mask()
    silent = set(sorted(c.server.neighbours()[victim])[:3])
    with pytest.raises(RoundAborted, match=f"self mask of '{victim}' has only 2 holders"):
        consistency_round(c, survivors, dropped, silent=silent)


def _split_view_setup() -> tuple[Cluster, dict[str, tuple[tuple[str, ...], tuple[str, ...]]]]:
    """Four parties, t = 3 (the least allowed for 4 holders); everyone masks.

    A deviating aggregator shows holders {v, d} the view "everyone survived" (they
    would reveal v's self-mask share) and holders {h1, h2} the view "v dropped"
    (they would reveal v's mask-key share): together, y_v could be unmasked alone.
    """
    c = make_cluster(4, threshold=3, seed=b"split")
    assert c.config.threshold == 3
    commit_and_advertise(c)
    share_all(c)
    c.server.close_share()
    mask_all(c)
    v, d, h1, h2 = c.config.parties
    everyone: tuple[tuple[str, ...], tuple[str, ...]] = ((v, d, h1, h2), ())
    v_dropped: tuple[tuple[str, ...], tuple[str, ...]] = ((d, h1, h2), (v,))
    return c, {v: everyone, d: everyone, h1: v_dropped, h2: v_dropped}


def test_split_view_attack_cannot_collect_t_signatures() -> None:
    c, views = _split_view_setup()
    sigs = {p: c.parties[p].sign_consistency(*view) for p, view in views.items()}
    for p, view in views.items():
        same_view = {q: sigs[q] for q, w in views.items() if w == view}
        assert len(same_view) == 2  # each group holds only 2 < t signatures over its view
        with pytest.raises(UnsafeRequest, match="2 consistency signatures, threshold is 3"):
            c.parties[p].unmask(*view, same_view)
        # Padding with the other group's signatures fails: they cover other lists
        # (or their signer is not even a survivor in this view).
        padded = {q: sigs[q] for q in view[0]}
        with pytest.raises(UnsafeRequest, match="does not verify over our lists"):
            c.parties[p].unmask(*view, padded)
        with pytest.raises(UnsafeRequest):
            c.parties[p].unmask(*view, sigs)
        # Asking a party to sign the other view too is refused.
        other = next(w for w in views.values() if w != view)
        if p in other[0]:
            with pytest.raises(UnsafeRequest, match="already signed"):
                c.parties[p].sign_consistency(*other)
    for party in c.parties.values():
        assert party.revealed == frozenset()
    # The honest server path refuses the split too: one view's transcript only.
    u3, dropped = c.server.close_mask()
    for p, view in views.items():
        if view == (u3, dropped):
            c.server.add_consistency(p, sigs[p], c.identities[p].verify_key)
        else:
            with pytest.raises(InvalidSignature):
                c.server.add_consistency(p, sigs[p], c.identities[p].verify_key)
    with pytest.raises(RoundAborted, match="only 2 parties signed"):
        c.server.close_consistency()
