"""Issue 10's attacks by a deviating aggregator colluding with parties, played in process.

Each test drives SecAggParty objects directly and forges what a malicious
aggregator and its corrupt parties would send. A corrupt party is an ordinary
SecAggParty: the coalition reads its state (``to_state()`` holds the shares it
received), signs what it likes with its SigningKey, or restores an older copy of
its state to sign a second time. Each docstring says what the code before issue
10 allowed; each test checks that the attack's goal is not reached now, or, where
nothing in the protocol can stop it, documents exactly what does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blindsum.crypto import kex, prg, shamir
from blindsum.crypto.sign import SigningKey, VerifyKey
from blindsum.errors import (
    InvalidArgument,
    InvalidSignature,
    RoundAborted,
    UnsafeRequest,
)
from blindsum.protocol import graph, params
from blindsum.protocol.secagg import (
    SEED_BYTES,
    Advert,
    Commit,
    PartyStage,
    Reveal,
    SecAggConfig,
    SecAggParty,
    SecAggServer,
    ServerStage,
    ShareKind,
    advert_transcript,
    commit_list_digest,
    graph_seed,
    nonce_commitment,
    self_mask_commitment,
)
from blindsum.transport import pki
from blindsum.types import U64Vector
from party.privacy import check_round_threat
from tests.drbg import drbg

LENGTH = 4
#: (survivors, dropped) as the aggregator announces them in the consistency round.
View = tuple[tuple[str, ...], tuple[str, ...]]


@dataclass
class Round:
    config: SecAggConfig
    keys: dict[str, SigningKey]
    parties: dict[str, SecAggParty]
    server: SecAggServer
    inputs: dict[str, U64Vector]
    masked: dict[str, U64Vector]  # y as each party sent it

    @property
    def verify_keys(self) -> dict[str, VerifyKey]:
        return {p: k.verify_key for p, k in self.keys.items()}

    def restore(self, state: bytes, tag: bytes = b"restored") -> SecAggParty:
        """The party a state copy restores to (as after a restart)."""
        doc = json.loads(state)
        me = str(doc["me"])
        return SecAggParty.from_state(state, self.keys[me], drbg(tag + me.encode()))


def make_round(
    n: int,
    *,
    threshold: int,
    degree: int = 0,
    threat: params.ThreatModel | None = None,
    seed: bytes = b"attack",
) -> Round:
    names = tuple(f"p{i:02d}" for i in range(n))
    config = SecAggConfig(
        round_id="round-10",
        schema_id="schema-attack",
        parties=names,
        threshold=threshold,
        vector_length=LENGTH,
        graph_degree=degree,
        threat=threat,
    )
    keys = {p: SigningKey.generate(drbg(seed + b"id" + p.encode())) for p in names}
    parties = {p: SecAggParty(config, p, keys[p], drbg(seed + p.encode())) for p in names}
    gen = drbg(seed + b"inputs")
    inputs = {p: np.frombuffer(gen(8 * LENGTH), dtype="<u8").astype(np.uint64) for p in names}
    return Round(config, keys, parties, SecAggServer(config), inputs, {})


def found_round(n: int, model: params.ThreatModel, *, sparse_above: int = 64) -> Round:
    """A round with the degree and threshold params.find chooses for ``model``."""
    chosen = params.find(n, model, sparse_above=sparse_above)
    return make_round(
        n, threshold=chosen.threshold, degree=chosen.wire_degree(), threat=model, seed=b"found"
    )


def committed(r: Round) -> Round:
    for p, party in r.parties.items():
        r.server.add_commit(party.commit(), r.verify_keys[p])
    r.server.close_commit()
    return r


def advertised(r: Round) -> Round:
    commits, keys = r.server.commits(), r.verify_keys
    for p in r.server.committed:
        r.server.add_advert(r.parties[p].advertise(commits, keys), keys[p])
    r.server.close_advertise()
    return r


def shared(r: Round) -> Round:
    roster = r.server.roster()
    for p in r.server.u1:
        r.server.add_shares(p, r.parties[p].share(roster))
    r.server.close_share()
    return r


def masked(r: Round, skip: Collection[str] = ()) -> View:
    for p in r.server.u2:
        if p not in skip:
            y = r.parties[p].mask(r.server.shares_for(p), r.server.u2, r.inputs[p])
            r.masked[p] = y
            r.server.add_masked(p, y)
    return r.server.close_mask()


def held_shares(party: SecAggParty, owner: str) -> dict[ShareKind, shamir.Share]:
    """The coalition's view of a corrupt party: its shares of ``owner``'s two secrets."""
    pair = json.loads(party.to_state())["received"][owner]
    x = party.config.x_of(party.me)
    return {
        ShareKind.MASK_KEY: shamir.Share.from_bytes(x, bytes.fromhex(pair["s"])),
        ShareKind.SELF_MASK: shamir.Share.from_bytes(x, bytes.fromhex(pair["b"])),
    }


def secret_check(r: Round, owner: str, kind: ShareKind) -> Callable[[bytes], bool]:
    """Whether a candidate secret is ``owner``'s real one (its signed advert decides)."""
    advert = r.server.roster()[owner]
    if kind is ShareKind.SELF_MASK:
        return lambda s: self_mask_commitment(r.config, owner, s) == advert.self_mask_commitment
    return lambda s: kex.KeyPair.from_private(s).public == advert.s_public


def unmask_input(r: Round, owner: str, b_seed: bytes, s_private: bytes) -> U64Vector:
    """x_owner from y_owner, given both of its secrets (complete graph): the attack's goal."""
    cfg, roster = r.config, r.server.roster()
    x = r.masked[owner] - prg.self_mask(b_seed, round_id=cfg.round_id, party=owner, length=LENGTH)
    for w in cfg.parties:
        if w == owner:
            continue
        shared_secret = kex.agree(s_private, roster[w].s_public)
        pm = prg.pair_mask(shared_secret, round_id=cfg.round_id, a=owner, b=w, length=LENGTH)
        x = x - pm if cfg.index(w) > cfg.index(owner) else x + pm
    return x


def wrong_share(reveal: Reveal) -> Reveal:
    """The same reveal with its share value moved by one (still a valid field element)."""
    y = int.from_bytes(reveal.share, "big")
    moved = y + 1 if y == 0 else y - 1
    return dataclasses.replace(reveal, share=moved.to_bytes(len(reveal.share), "big"))


# =========================================================================== 1. roster isolation

SPARSE_N = 40
SPARSE_MODEL = params.DEFAULT_THREAT_MODEL


def sparse_round() -> Round:
    """40 parties, sparse graph, the parameters params.find gives the default model."""
    r = found_round(SPARSE_N, SPARSE_MODEL, sparse_above=10)
    assert not r.config.complete
    # C = D = 4 of 40; the floor on L is max(t, (n + C) // 2 + 1, n - D) = 36.
    assert r.config.tolerated() == (4, 4)
    assert r.config.min_committed() == 36
    return r


def test_roster_isolation_victim_refuses_any_roster_but_l() -> None:
    """Before issue 10 each party built the graph over the U1 roster the aggregator
    showed it. Shown itself plus t corrupt parties (the honest others left out), a
    victim in a sparse round got a complete graph whose other holders were all
    corrupt; once it sent y_v the coalition opened b_v and s_v and read x_v
    (n = 100, degree 28, t = 20 in the review).

    Now the roster must be exactly the list L the victim checked at advertise: any
    subset is refused before a share leaves. With the real roster the victim's
    holders are its closed neighbourhood in the graph over L seeded by
    graph_seed(H(L), nonces), the same graph the aggregator and every party compute.
    """
    r = advertised(committed(sparse_round()))
    cfg, t = r.config, r.config.threshold
    victim, corrupt = cfg.parties[0], cfg.parties[1 : t + 1]
    roster = r.server.roster()
    assert set(roster) == set(cfg.parties)  # everyone committed, so L is everyone

    isolating = {p: roster[p] for p in (victim, *corrupt)}
    one_left_out = {p: a for p, a in roster.items() if p != cfg.parties[-1]}
    for forged in (isolating, one_left_out):
        with pytest.raises(UnsafeRequest, match="parties in L without an advert"):
            r.parties[victim].share(forged)
    assert r.parties[victim].stage is PartyStage.ADVERTISED  # nothing was sent

    envelopes = r.parties[victim].share(roster)
    members = r.server.committed
    seed = graph_seed(cfg, r.server.list_digest, {p: roster[p].nonce for p in members})
    expected = graph.neighbours(members, cfg.graph_degree, seed)[victim]
    assert len(expected) == graph.effective_degree(cfg.graph_degree, SPARSE_N) < SPARSE_N - 1
    assert {e.receiver for e in envelopes} == expected
    assert r.parties[victim].neighbours == expected == r.server.neighbours()[victim]
    # H(L) is the digest of the commitments themselves: every advert is signed over it.
    own = {p: r.parties[p].commit().commitment for p in members}
    assert r.server.list_digest == commit_list_digest(cfg, own)
    assert {a.list_digest for a in roster.values()} == {r.server.list_digest}


def test_roster_isolation_small_list_refused_at_advertise() -> None:
    """The aggregator can instead show the victim a list L of its own: itself and t
    corrupt parties, so that the graph over L is complete and all-corrupt. With a
    threat model a party refuses any L below min_committed() = max(t, (n + C) // 2 + 1,
    n - D): below it the victim sends nothing, at it the victim advertises.
    """
    r = sparse_round()
    cfg, t = r.config, r.config.threshold
    floor = cfg.min_committed()
    commits: dict[str, Commit] = {p: party.commit() for p, party in r.parties.items()}
    victim, corrupt = cfg.parties[0], cfg.parties[1 : t + 1]
    keys = r.verify_keys

    isolating = {p: commits[p] for p in (victim, *corrupt)}
    with pytest.raises(
        UnsafeRequest,
        match=f"only {t + 1} of {SPARSE_N} invited parties committed; "
        f"this round needs at least {floor}",
    ):
        r.parties[victim].advertise(isolating, keys)
    below = {p: commits[p] for p in cfg.parties[: floor - 1]}
    with pytest.raises(UnsafeRequest, match=f"needs at least {floor}"):
        r.parties[victim].advertise(below, keys)
    assert r.parties[victim].stage is PartyStage.COMMITTED
    at_floor = {p: commits[p] for p in cfg.parties[:floor]}
    advert = r.parties[victim].advertise(at_floor, keys)
    assert advert.list_digest == commit_list_digest(
        cfg, {p: c.commitment for p, c in at_floor.items()}
    )
    # The honest aggregator path has the same floor.
    server = SecAggServer(cfg)
    for p in (victim, *corrupt):
        server.add_commit(commits[p], keys[p])
    with pytest.raises(RoundAborted, match=f"needs {floor}"):
        server.close_commit()


def test_roster_floor_comes_from_the_threat_model_which_the_node_requires() -> None:
    """The floor on L is the threat model's. A config without one keeps only |L| >= t
    and the c = 0 threshold rule, so a list of the victim and t corrupt parties would
    pass advertise. Such rounds are for in-process use: the party node refuses a round
    that states no threat model before it commits to anything.
    """
    r = sparse_round()
    bare = dataclasses.replace(r.config, threat=None)
    assert bare.min_committed() == bare.threshold < r.config.min_committed()
    with pytest.raises(UnsafeRequest, match="states no threat model") as exc:
        check_round_threat(
            None, min_corrupt_fraction=0.0, min_adversary="curious", min_privacy_bits=8
        )
    assert exc.value.field == "threat"


def test_two_lists_never_reach_the_share_phase() -> None:
    """A split L: the aggregator shows half of the honest parties L1 and the other half
    L2 (both above the floor), with corrupt parties committing to both. Before issue 10
    there was no L; rosters could differ freely between parties.

    Each honest party commits once and advertises for one list, signing over its H(L).
    Both lists are above the floor (n + C) / 2, so their honest members overlap: every
    roster for L1 lacks a valid advert of some honest party that signed over H(L2), and
    the other way round. No honest party sends a share.
    """
    r = committed(sparse_round())
    cfg = r.config
    n, (corrupt_count, _) = SPARSE_N, cfg.tolerated()
    names = cfg.parties
    corrupt = set(names[1 : 1 + corrupt_count])
    lists = {
        "L1": {p: c for p, c in r.server.commits().items() if p != names[-1]},
        "L2": {p: c for p, c in r.server.commits().items() if p != names[-2]},
    }
    floor = cfg.min_committed()
    assert all(len(lst) >= floor for lst in lists.values())
    # Honest members of each list >= floor - C > (n - C) / 2, so the two sets meet.
    assert 2 * (floor - corrupt_count) > n - corrupt_count
    honest = [p for p in names if p not in corrupt]
    shown = {p: ("L1" if names.index(p) % 2 == 0 else "L2") for p in honest}
    assert shown[names[-2]] == "L1" and shown[names[-1]] == "L2"  # each sees a list it is in

    keys = r.verify_keys
    adverts: dict[str, dict[str, Advert]] = {"L1": {}, "L2": {}}
    for p in honest:
        adverts[shown[p]][p] = r.parties[p].advertise(lists[shown[p]], keys)
    for p in sorted(corrupt):  # corrupt parties sign both lists (a restored copy signs L2)
        state = r.parties[p].to_state()
        adverts["L1"][p] = r.parties[p].advertise(lists["L1"], keys)
        adverts["L2"][p] = r.restore(state).advertise(lists["L2"], keys)
    digests = {
        name: commit_list_digest(cfg, {p: c.commitment for p, c in lst.items()})
        for name, lst in lists.items()
    }
    assert digests["L1"] != digests["L2"]
    for name, by_party in adverts.items():
        assert {a.list_digest for a in by_party.values()} == {digests[name]}

    # An honest party asked to advertise for the other list refuses.
    p_a = next(p for p in honest if shown[p] == "L1" and p in lists["L2"])
    with pytest.raises(UnsafeRequest, match="already advertised for a different list"):
        r.parties[p_a].advertise(lists["L2"], keys)

    # The best rosters the aggregator can build: what each member signed for this list,
    # else what it signed for the other one (or nothing at all).
    for p in honest:
        mine, other = shown[p], "L2" if shown[p] == "L1" else "L1"
        members = lists[mine]
        padded = {q: adverts[mine].get(q) or adverts[other][q] for q in members}
        with pytest.raises(UnsafeRequest, match="is not signed over the list this party saw"):
            r.parties[p].share(padded)
        partial = {q: adverts[mine][q] for q in members if q in adverts[mine]}
        with pytest.raises(UnsafeRequest, match="parties in L without an advert"):
            r.parties[p].share(partial)
    assert all(r.parties[p].stage is PartyStage.ADVERTISED for p in honest)

    # The aggregator's own state machine, closed on L1, refuses adverts over H(L2).
    server = SecAggServer(cfg)
    for p, c in lists["L1"].items():
        server.add_commit(c, keys[p])
    server.close_commit()
    p_b = next(p for p in honest if shown[p] == "L2" and p in lists["L1"])
    with pytest.raises(InvalidSignature):
        server.add_advert(adverts["L2"][p_b], keys[p_b])


GRAPH_CONFIG = SecAggConfig(
    round_id="round-10",
    schema_id="schema-attack",
    parties=tuple(f"p{i}" for i in range(8)),
    threshold=5,
    vector_length=1,
    graph_degree=0,
)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    nonces=st.lists(st.binary(min_size=32, max_size=32), min_size=2, max_size=8, unique=True),
    data=st.data(),
)
def test_graph_seed_moves_with_every_nonce(nonces: list[bytes], data: st.DataObject) -> None:
    """Nobody steers the graph: each member's nonce goes into the seed, so a party (or
    the aggregator) that changes any one nonce lands on an unrelated seed; the order
    in which the nonces are handed over does not matter (config order is used).
    """
    cfg = GRAPH_CONFIG
    members = cfg.parties[: len(nonces)]
    opened = dict(zip(members, nonces, strict=True))
    digest = commit_list_digest(cfg, {p: nonce_commitment(cfg, p, r) for p, r in opened.items()})
    seed = graph_seed(cfg, digest, opened)
    assert graph_seed(cfg, digest, dict(reversed(opened.items()))) == seed
    target = data.draw(st.sampled_from(members))
    other = data.draw(st.binary(min_size=32, max_size=32).filter(lambda b: b != opened[target]))
    assert graph_seed(cfg, digest, {**opened, target: other}) != seed
    other_digest = data.draw(st.binary(min_size=32, max_size=32).filter(lambda b: b != digest))
    assert graph_seed(cfg, other_digest, opened) != seed


# =========================================================================== 2. split view

SPLIT_N = 10
SPLIT_MODEL = params.ThreatModel(
    corrupt_fraction=0.4, dropout_fraction=0.2, adversary=params.Adversary.DEVIATING
)


def split_round() -> Round:
    """10 parties, complete graph, 4 corrupt: p00 is the victim v, p01..p04 are corrupt."""
    r = found_round(SPLIT_N, SPLIT_MODEL)
    masked(shared(advertised(committed(r))))
    return r


def sign_view(
    r: Round, signers: Collection[str], view: View, masked_states: Mapping[str, bytes]
) -> dict[str, bytes]:
    """Signatures over ``view``: live parties sign it, or, for a party that already
    signed another view, a copy restored from its MASKED state does."""
    out: dict[str, bytes] = {}
    for p in signers:
        party = r.parties[p]
        if party.signed_lists is not None and party.signed_lists != view:
            party = r.restore(masked_states[p], tag=b"second-view")
        out[p] = party.sign_consistency(*view)
    return out


def test_split_view_old_threshold_is_refused_by_the_threat_model() -> None:
    """Before issue 10 the threshold rule 2t > h ignored corrupt holders: at n = 10 the
    review ran t = 7 with 4 corrupt parties. The deviating-aggregator rule counts
    them, 2t >= h + c + 1, and refuses t = 7, naming the rule; params.find picks t = 8.
    """
    h, c = SPLIT_N, SPLIT_MODEL.corrupt(SPLIT_N)
    assert c == 4
    with pytest.raises(UnsafeRequest, match=r"2t = 14 < h \+ c \+ 1 = 15") as exc:
        params.check(SPLIT_N, 0, 7, SPLIT_MODEL)
    assert exc.value.field == "threshold"
    with pytest.raises(UnsafeRequest, match=r"2t = 14 < h \+ c \+ 1 = 15"):
        SecAggConfig(
            round_id="round-10",
            schema_id="schema-attack",
            parties=tuple(f"p{i:02d}" for i in range(SPLIT_N)),
            threshold=7,
            vector_length=LENGTH,
            graph_degree=0,
            threat=SPLIT_MODEL,
        )
    chosen = params.find(SPLIT_N, SPLIT_MODEL)
    assert (chosen.complete, chosen.holders, chosen.corrupt_holders) == (True, h, c)
    assert chosen.threshold == 8 and 2 * chosen.threshold >= h + c + 1


def test_split_view_with_fewer_than_t_colluders_fails() -> None:
    """The review's split view at n = 10, t = 7, 4 corrupt: the aggregator told three
    honest holders of v (v itself among them) "v survived" and three "v dropped".
    The corrupt holders signed both views, so each view had 3 + 4 = 7 = t
    signatures; the first group revealed b_v, the second s_v, and y_v opened alone.

    With the threshold the threat model gives (t = 8), h = 10, c = 4: v has
    h - c = 6 honest holders, split a + b = 6, and a view reaches t only with
    a + c >= 8, so both views would need a, b >= 4. The same 3/3 split now leaves
    each view at 7 < t signatures: no honest party reveals, and the coalition's own
    shares (4 of each secret) open neither b_v nor s_v.
    """
    r = split_round()
    cfg = r.config
    t, h = cfg.threshold, SPLIT_N
    c = cfg.tolerated()[0]
    names = cfg.parties
    victim, corrupt, others = names[0], names[1 : 1 + c], names[1 + c :]
    honest_holders = h - c
    assert (t, h, c, honest_holders) == (8, 10, 4, 6)
    assert all(min(a, honest_holders - a) + c < t for a in range(honest_holders + 1))
    assert min(3, 3) + c >= 7  # what the old threshold allowed

    survived: View = (names, ())
    dropped: View = (tuple(p for p in names if p != victim), (victim,))
    told_survived = (victim, *others[:2])
    told_dropped = others[2:]
    masked_states = {p: r.parties[p].to_state() for p in corrupt}
    sigs_s = sign_view(r, (*told_survived, *corrupt), survived, masked_states)
    sigs_d = sign_view(r, (*told_dropped, *corrupt), dropped, masked_states)
    assert len(sigs_s) == len(sigs_d) == 7 < t

    for p in told_survived:
        with pytest.raises(UnsafeRequest, match=f"7 consistency signatures, threshold is {t}"):
            r.parties[p].unmask(*survived, sigs_s)
        with pytest.raises(UnsafeRequest, match="does not verify over our lists"):
            r.parties[p].unmask(*survived, {**sigs_s, **sigs_d})
        # Asked to sign the other view too: refused (v itself is listed as dropped there).
        match = "listed as dropped" if p == victim else "already signed different survivor lists"
        with pytest.raises(UnsafeRequest, match=match):
            r.parties[p].sign_consistency(*dropped)
    for p in told_dropped:
        with pytest.raises(UnsafeRequest, match=f"7 consistency signatures, threshold is {t}"):
            r.parties[p].unmask(*dropped, sigs_d)
        with pytest.raises(UnsafeRequest, match=f"signer '{victim}' is not a survivor"):
            r.parties[p].unmask(*dropped, {**sigs_d, **sigs_s})
        padded = {**sigs_d, **{q: sigs_s[q] for q in told_survived if q != victim}}
        with pytest.raises(UnsafeRequest, match="does not verify over our lists"):
            r.parties[p].unmask(*dropped, padded)
    for p in (*told_survived, *told_dropped):
        assert r.parties[p].revealed == frozenset()

    for kind in ShareKind:
        coalition = [held_shares(r.parties[p], victim)[kind] for p in corrupt]
        with pytest.raises(InvalidArgument, match=f"need {t} distinct shares, got {c}"):
            shamir.recover(
                coalition,
                threshold=t,
                secret_len=SEED_BYTES,
                verify=secret_check(r, victim, kind),
            )


def test_sparse_split_view_leaves_one_secret_short_of_t() -> None:
    """The split view in a sparse round, with every corrupt party a holder of v (c = C = 4,
    the worst case the parameters cover). Honest parties that are not holders of v sign
    whichever view they are shown, so here both views collect far more than t
    signatures and every honest party reveals. What protects v is that each honest
    holder reveals one kind of share for it: b_v needs t - c honest holders told "v
    survived", s_v needs t - c told "v dropped", and v has only h - c honest holders
    (itself included). Giving b_v exactly t shares leaves s_v with h - t + c <= t - 1
    (2t >= h + c + 1), so y_v stays masked.
    """
    r = sparse_round()
    masked(shared(advertised(committed(r))))
    cfg = r.config
    t, c = cfg.threshold, cfg.tolerated()[0]
    names = cfg.parties
    victim = names[0]
    nbrs = cfg.ordered(r.server.neighbours()[victim])
    h = len(nbrs) + 1
    corrupt, honest_nbrs = nbrs[:c], nbrs[c:]
    honest_holders = h - c
    assert c == 4 and honest_holders == h - 4
    assert 2 * t >= h + c + 1
    assert all(min(a, honest_holders - a) + c < t for a in range(honest_holders + 1))

    survived: View = (names, ())
    dropped: View = (tuple(p for p in names if p != victim), (victim,))
    told_survived = [victim, *honest_nbrs[: t - c - 1]]
    told_dropped = list(honest_nbrs[t - c - 1 :])
    outsiders = [p for p in names if p != victim and p not in nbrs]
    told_survived += outsiders[::2]
    told_dropped += outsiders[1::2]
    masked_states = {p: r.parties[p].to_state() for p in corrupt}
    sigs_s = sign_view(r, (*told_survived, *corrupt), survived, masked_states)
    sigs_d = sign_view(r, (*told_dropped, *corrupt), dropped, masked_states)
    assert min(len(sigs_s), len(sigs_d)) > t

    shares: dict[ShareKind, list[shamir.Share]] = {
        kind: [held_shares(r.parties[p], victim)[kind] for p in corrupt] for kind in ShareKind
    }
    for view, group, sigs in ((survived, told_survived, sigs_s), (dropped, told_dropped, sigs_d)):
        for p in group:
            for x in r.parties[p].unmask(*view, sigs):
                if x.owner == victim:
                    shares[x.kind].append(shamir.Share.from_bytes(cfg.x_of(p), x.share))
    assert len(shares[ShareKind.SELF_MASK]) == t
    assert len(shares[ShareKind.MASK_KEY]) == h - t + c < t
    check = secret_check(r, victim, ShareKind.SELF_MASK)
    assert check(
        shamir.recover(
            shares[ShareKind.SELF_MASK], threshold=t, secret_len=SEED_BYTES, verify=check
        ).secret
    )
    with pytest.raises(InvalidArgument, match=f"need {t} distinct shares, got {h - t + c}"):
        shamir.recover(
            shares[ShareKind.MASK_KEY],
            threshold=t,
            secret_len=SEED_BYTES,
            verify=secret_check(r, victim, ShareKind.MASK_KEY),
        )


# =========================================================================== 3. bad reveals

BAD_N, BAD_T = 7, 4


def unmask_round(
    dropped_after_share: Collection[str] = (),
) -> tuple[Round, dict[str, list[Reveal]]]:
    """A complete round of 7 (t = 4) up to the reveals; every signer's honest reveals."""
    r = make_round(BAD_N, threshold=BAD_T, seed=b"reveals")
    survivors, dropped = masked(shared(advertised(committed(r))), skip=dropped_after_share)
    for p in survivors:
        r.server.add_consistency(
            p, r.parties[p].sign_consistency(survivors, dropped), r.verify_keys[p]
        )
    r.server.close_consistency()
    signatures = r.server.consistency_signatures()
    reveals = {p: r.parties[p].unmask(survivors, dropped, signatures) for p in survivors}
    return r, reveals


def corrupt_reveals(
    reveals: dict[str, list[Reveal]], bad: Mapping[str, tuple[str, ShareKind]]
) -> dict[str, list[Reveal]]:
    out = dict(reveals)
    for holder, (owner, kind) in bad.items():
        out[holder] = [
            wrong_share(x) if (x.owner, x.kind) == (owner, kind) else x for x in reveals[holder]
        ]
        assert out[holder] != reveals[holder]
    return out


@pytest.mark.parametrize(
    ("dropped_after_share", "bad"),
    [
        pytest.param((), {"p03": ("p00", ShareKind.SELF_MASK)}, id="one-bad-self-mask-share"),
        pytest.param(("p06",), {"p02": ("p06", ShareKind.MASK_KEY)}, id="one-bad-mask-key-share"),
        pytest.param(
            (),
            {"p01": ("p00", ShareKind.SELF_MASK), "p05": ("p00", ShareKind.SELF_MASK)},
            id="two-bad-shares-of-one-secret",
        ),
        pytest.param(
            ("p06",),
            {"p01": ("p03", ShareKind.SELF_MASK), "p04": ("p06", ShareKind.MASK_KEY)},
            id="two-bad-shares-of-two-secrets",
        ),
    ],
)
def test_bad_reveal_is_located_and_the_total_stays_exact(
    dropped_after_share: tuple[str, ...], bad: dict[str, tuple[str, ShareKind]]
) -> None:
    """Before issue 10 reveals were not verifiable: one holder revealing a wrong share
    of a self-mask seed made the aggregator remove a wrong mask, and the total came
    out silently wrong. Now every reconstructed secret is checked against its signed
    commitment (b_u) or advertised public key (s_u); with t good shares left among
    the reveals the total is exact and server.misbehaving names exactly the bad
    holders.
    """
    r, reveals = unmask_round(dropped_after_share)
    assert len(reveals) - len(bad) >= r.config.threshold
    for p, items in corrupt_reveals(reveals, bad).items():
        r.server.add_reveals(p, items)
    total = r.server.finish()
    expected = np.zeros(LENGTH, dtype=np.uint64)
    for p in r.server.u3:
        expected += r.inputs[p]
    assert np.array_equal(total, expected)
    assert set(r.server.misbehaving) == set(bad)
    for holder, (owner, _) in bad.items():
        assert owner in r.server.misbehaving[holder]


@pytest.mark.parametrize(
    ("revealers", "bad"),
    [
        pytest.param(
            None,
            {h: ("p00", ShareKind.SELF_MASK) for h in ("p01", "p02", "p03", "p04")},
            id="four-bad-of-seven",
        ),
        pytest.param(
            ("p00", "p01", "p02", "p03"),
            {"p02": ("p00", ShareKind.SELF_MASK)},
            id="one-bad-of-exactly-t",
        ),
    ],
)
def test_too_few_good_reveals_abort_without_a_total(
    revealers: tuple[str, ...] | None, bad: dict[str, tuple[str, ShareKind]]
) -> None:
    """With fewer than t good shares of a secret no subset passes its check: finish
    raises RoundAborted and returns no total, where the old code returned a wrong one.
    """
    r, reveals = unmask_round()
    sent = corrupt_reveals(reveals, bad)
    chosen = revealers if revealers is not None else tuple(sent)
    for p in chosen:
        r.server.add_reveals(p, sent[p])
    assert r.server.can_finish()  # enough shares arrived; too many of them are wrong
    for _ in range(2):
        with pytest.raises(RoundAborted, match="SELF_MASK of 'p00'"):
            r.server.finish()
    assert r.server.stage is ServerStage.UNMASK
    assert set(r.server.misbehaving) <= set(bad)  # nobody is named without proof


# =========================================================================== 4. rollback


def test_rolled_back_party_signs_a_second_view() -> None:
    """A party signs (U3, U2 \\ U3) and records the lists in its state before the
    signature leaves. If the state file rolls back to the MASKED copy (a power loss
    before the write reached the disk), the restored party has no memory of the
    first signature and signs whatever lists the aggregator asks next. Nothing in
    the protocol can tell: the only defence is that the write is durable before the
    signature is sent. With the durable state it refuses.
    """
    r = split_round()
    names = r.config.parties
    victim, party = names[0], names[5]
    survived: View = (names, ())
    dropped: View = (tuple(p for p in names if p != victim), (victim,))
    masked_state = r.parties[party].to_state()
    first = r.parties[party].sign_consistency(*survived)
    signed_state = r.parties[party].to_state()

    with pytest.raises(UnsafeRequest, match="already signed different survivor lists"):
        r.restore(signed_state).sign_consistency(*dropped)
    rolled_back = r.restore(masked_state)
    assert rolled_back.signed_lists is None
    second = rolled_back.sign_consistency(*dropped)
    assert second != first
    assert rolled_back.signed_lists == dropped


@pytest.mark.parametrize("rollbacks", [1, 2])
def test_split_view_margin_for_rolled_back_holders(rollbacks: int) -> None:
    """A holder whose state rolls back signs both views, like a corrupt one. With
    t = 8, h = 10, c = 4 a split view needs 2t - h = 6 holders that sign both, so
    the parameters leave a margin of 2t - h - c - 1 = 1 rollback on top of c corrupt
    holders.

    One rollback: the "v dropped" view stays at 7 < t signatures; its honest holders
    refuse to reveal and only 4 shares of s_v exist. Two rollbacks: both views reach
    t, the rolled-back holders reveal b_v under one view and s_v under the other,
    and v's input opens alone. That case documents that the protocol has no defence
    of its own against lost state writes; see test_party_state_write_is_durable.
    """
    r = split_round()
    cfg = r.config
    t, h, c = cfg.threshold, SPLIT_N, cfg.tolerated()[0]
    assert 2 * t - h - c - 1 == 1
    names = cfg.parties
    victim, corrupt = names[0], names[1 : 1 + c]
    rolled = names[1 + c : 1 + c + rollbacks]
    steady = (victim, *names[1 + c + rollbacks :])
    both = (*corrupt, *rolled)
    half = (len(steady) + 1) // 2
    told_survived, told_dropped = steady[:half], steady[half:]
    survived: View = (names, ())
    dropped: View = (tuple(p for p in names if p != victim), (victim,))

    masked_states = {p: r.parties[p].to_state() for p in both}
    sigs_s = sign_view(r, (*told_survived, *both), survived, masked_states)
    # Power loss: each rolled-back holder unmasks under "v survived", then comes back
    # from its MASKED state and is asked to sign "v dropped".
    revealed: dict[ShareKind, list[shamir.Share]] = {kind: [] for kind in ShareKind}

    def collect(holder: str, reveals: list[Reveal]) -> None:
        for x in reveals:
            if x.owner == victim:
                revealed[x.kind].append(shamir.Share.from_bytes(cfg.x_of(holder), x.share))

    for p in (*told_survived, *rolled):
        collect(p, r.parties[p].unmask(*survived, sigs_s))
    restored = {p: r.restore(masked_states[p], tag=b"power-loss") for p in both}
    sigs_d = {p: restored[p].sign_consistency(*dropped) for p in both}
    sigs_d.update({p: r.parties[p].sign_consistency(*dropped) for p in told_dropped})
    assert len(sigs_s) == len(told_survived) + c + rollbacks >= t
    assert len(sigs_d) == len(told_dropped) + c + rollbacks

    if rollbacks == 1:
        assert len(sigs_d) == t - 1
        for p in (*told_dropped, *rolled):
            party = r.parties[p] if p in told_dropped else restored[p]
            with pytest.raises(UnsafeRequest, match=f"{t - 1} consistency signatures"):
                party.unmask(*dropped, sigs_d)
        s_shares = [held_shares(r.parties[p], victim)[ShareKind.MASK_KEY] for p in corrupt]
        s_shares += revealed[ShareKind.MASK_KEY]
        assert len(s_shares) == c < t
        with pytest.raises(InvalidArgument, match=f"need {t} distinct shares"):
            shamir.recover(
                s_shares,
                threshold=t,
                secret_len=SEED_BYTES,
                verify=secret_check(r, victim, ShareKind.MASK_KEY),
            )
        return

    # Past the margin: both views reach t and honest software reveals under both.
    assert len(sigs_d) == t
    for p in told_dropped:
        collect(p, r.parties[p].unmask(*dropped, sigs_d))
    for p in rolled:
        collect(p, restored[p].unmask(*dropped, sigs_d))
        # One identity has now revealed both kinds of share for v, across the rollback.
        assert (victim, ShareKind.SELF_MASK) in r.parties[p].revealed
        assert (victim, ShareKind.MASK_KEY) in restored[p].revealed
    secrets: dict[ShareKind, bytes] = {}
    for kind in ShareKind:
        shares = revealed[kind] + [held_shares(r.parties[p], victim)[kind] for p in corrupt]
        assert len(shares) >= t
        got = shamir.recover(
            shares, threshold=t, secret_len=SEED_BYTES, verify=secret_check(r, victim, kind)
        )
        secrets[kind] = got.secret
    x_v = unmask_input(r, victim, secrets[ShareKind.SELF_MASK], secrets[ShareKind.MASK_KEY])
    assert np.array_equal(x_v, r.inputs[victim])


def test_party_state_write_is_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What stops the rollback above: the node persists SecAggParty.to_state() through
    pki.write_private before it sends a message, and write_private fsyncs the file's
    data, then (after the atomic rename, when replacing) its directory, before it
    returns. A power loss can then only lose a write whose message was never sent.
    """
    events: list[tuple[str, int]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        st_ = os.fstat(fd)
        events.append(("fsync-dir" if stat.S_ISDIR(st_.st_mode) else "fsync-file", st_.st_ino))
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        events.append(("replace", 0))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    directory = tmp_path.stat().st_ino
    path = tmp_path / "round-10.json"

    pki.write_private(path, b'{"stage": "masked"}')
    kinds = [kind for kind, _ in events]
    assert kinds == ["fsync-file", "fsync-dir"]
    assert events[0][1] == path.stat().st_ino and events[1][1] == directory

    events.clear()
    pki.write_private(path, b'{"stage": "signed"}', overwrite=True)
    kinds = [kind for kind, _ in events]
    assert kinds == ["fsync-file", "replace", "fsync-dir"]
    assert events[0][1] == path.stat().st_ino and events[2][1] == directory
    assert path.read_bytes() == b'{"stage": "signed"}'
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# =========================================================================== 5. commitments


def advertised_but_open() -> Round:
    """The 10-party round with L closed and the advert phase still open."""
    return committed(found_round(SPLIT_N, SPLIT_MODEL))


def test_nonce_that_does_not_open_its_commitment_is_refused() -> None:
    """Before issue 10 the graph seed hashed the advertised keys: a corrupt party that
    advertised last, shown the others' adverts by the aggregator, could try key pairs
    until the graph suited the coalition, and the aggregator could re-seed by leaving
    advertisers out of U1. Now the seed hashes the nonces committed to before L was
    fixed. A corrupt party that picks its nonce after seeing the others' does not open
    its commitment; the aggregator cannot swap an honest party's nonce (the advert is
    signed over it); withholding a reveal aborts the round instead of re-seeding it.
    The aggregator's server and every honest party refuse each of these.
    """
    r = advertised_but_open()
    cfg, keys = r.config, r.verify_keys
    names = cfg.parties
    cheat, honest_victim = names[1], names[2]
    adverts = {p: r.parties[p].advertise(r.server.commits(), keys) for p in names}

    ground = hashlib.sha256(b"".join(a.nonce for p, a in adverts.items() if p != cheat)).digest()
    assert ground != adverts[cheat].nonce
    a = adverts[cheat]
    forged = dataclasses.replace(
        a,
        nonce=ground,
        signature=r.keys[cheat].sign(
            advert_transcript(
                cfg,
                cheat,
                a.c_public,
                a.s_public,
                nonce=ground,
                list_digest=r.server.list_digest,
                self_mask=a.self_mask_commitment,
            )
        ),
    )
    with pytest.raises(InvalidArgument, match="does not open the party's commitment") as exc:
        r.server.add_advert(forged, keys[cheat])
    assert exc.value.field == "advert.nonce"

    swapped = dataclasses.replace(adverts[honest_victim], nonce=ground)
    with pytest.raises(InvalidSignature):
        r.server.add_advert(swapped, keys[honest_victim])

    for p in names:
        if p != cheat:
            r.server.add_advert(adverts[p], keys[p])
    with pytest.raises(RoundAborted, match=f"committed but did not reveal: {cheat}"):
        r.server.close_advertise()

    for p in (q for q in names if q != cheat):
        with pytest.raises(UnsafeRequest, match=f"nonce of '{cheat}' does not open"):
            r.parties[p].share({**adverts, cheat: forged})
        if p != honest_victim:
            # Every opening is checked, neighbour or not: the seed hashes every nonce.
            with pytest.raises(UnsafeRequest, match=f"nonce of '{honest_victim}' does not open"):
                r.parties[p].share({**adverts, honest_victim: swapped})
        without = {q: x for q, x in adverts.items() if q != cheat}
        with pytest.raises(UnsafeRequest, match=rf"without an advert: \['{cheat}'\]"):
            r.parties[p].share(without)
        assert r.parties[p].stage is PartyStage.ADVERTISED


def test_commitment_from_another_round_is_refused() -> None:
    """A commitment is bound to the round's whole configuration: the aggregator cannot
    replay a party's commitment (and so its nonce) from another round into L."""
    r = committed(found_round(SPLIT_N, SPLIT_MODEL))
    other_cfg = dataclasses.replace(r.config, round_id="round-11")
    names = r.config.parties
    replayed = SecAggParty(other_cfg, names[1], r.keys[names[1]], drbg(b"other")).commit()
    commits = {**r.server.commits(), names[1]: replayed}
    # Parties do not check other members' commitment signatures (their adverts vouch
    # for them): the replay is caught when the roster comes. names[1] advertises only
    # for a list holding its own commitment, so whatever advert the aggregator serves
    # for it either does not open the replayed commitment or is not signed over this
    # list, and every opening is checked.
    me = r.parties[names[0]]
    me.advertise(commits, r.verify_keys)
    listed = r.server.commits()
    roster = {p: r.parties[p].advertise(listed, r.verify_keys) for p in names[1:]}
    roster[names[0]] = me.advertise(commits)
    with pytest.raises(UnsafeRequest, match=f"'{names[1]}'"):
        me.share(roster)
    assert me.stage is PartyStage.ADVERTISED
    with pytest.raises(InvalidSignature):
        SecAggServer(r.config).add_commit(replayed, r.verify_keys[names[1]])
