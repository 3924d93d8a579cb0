"""secagg refusals and input validation, party side and aggregator side."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from blindsum.crypto import envelope, shamir
from blindsum.crypto.encoding import encode_parts, format_dst
from blindsum.crypto.kex import KeyPair
from blindsum.crypto.sign import SigningKey, VerifyKey
from blindsum.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    InvalidSignature,
    RoundAborted,
    UnsafeRequest,
)
from blindsum.protocol import graph, params
from blindsum.protocol.secagg import (
    SHARE_PHASE,
    STATE_FORMAT,
    Advert,
    Commit,
    PartyStage,
    Reveal,
    SealedShare,
    SecAggConfig,
    SecAggParty,
    SecAggServer,
    ServerStage,
    ShareKind,
    advert_transcript,
    commit_list_digest,
    commit_transcript,
    complaint_transcript,
    consistency_transcript,
    envelope_digest,
    graph_seed,
    nonce_commitment,
    roster_binding,
    roster_digest,
    self_mask_commitment,
)
from blindsum.types import U64Vector
from tests.drbg import drbg

N = 5
T = 3
L = 4

Lists = tuple[tuple[str, ...], tuple[str, ...]]


@dataclass
class Cluster:
    config: SecAggConfig
    identities: dict[str, SigningKey]
    verify_keys: dict[str, VerifyKey]
    parties: dict[str, SecAggParty]
    server: SecAggServer
    inputs: dict[str, U64Vector]
    commits: dict[str, Commit] = field(default_factory=dict)
    adverts: dict[str, Advert] = field(default_factory=dict)


def names(n: int) -> tuple[str, ...]:
    return tuple(f"p{i}" for i in range(n))


def make(
    n: int = N, t: int = T, degree: int = 0, threat: params.ThreatModel | None = None
) -> Cluster:
    config = SecAggConfig(
        round_id="r",
        schema_id="s",
        parties=names(n),
        threshold=t,
        vector_length=L,
        graph_degree=degree,
        threat=threat,
    )
    ids = {p: SigningKey.generate(drbg(b"id" + p.encode())) for p in config.parties}
    parties = {p: SecAggParty(config, p, ids[p], drbg(p.encode())) for p in config.parties}
    inputs = {p: np.arange(L, dtype=np.uint64) + np.uint64(i) for i, p in enumerate(config.parties)}
    return Cluster(
        config,
        ids,
        {p: k.verify_key for p, k in ids.items()},
        parties,
        SecAggServer(config),
        inputs,
    )


def committed(c: Cluster, absent: Collection[str] = ()) -> Cluster:
    """Phase 0 through the server: parties not in ``absent`` commit; L is closed."""
    for p, party in c.parties.items():
        if p not in absent:
            c.server.add_commit(party.commit(), c.verify_keys[p])
    c.server.close_commit()
    c.commits = c.server.commits()
    return c


def advertised(c: Cluster, absent: Collection[str] = ()) -> Cluster:
    """Phases 0 and 1: ``absent`` parties never commit (so they are not in L)."""
    committed(c, absent)
    for p in c.server.committed:
        c.adverts[p] = c.parties[p].advertise(c.commits, c.verify_keys)
        c.server.add_advert(c.adverts[p], c.verify_keys[p])
    c.server.close_advertise()
    return c


def shared(c: Cluster, skip: Collection[str] = ()) -> Cluster:
    for p in c.server.u1:
        if p not in skip:
            c.server.add_shares(p, c.parties[p].share(c.server.roster()))
    c.server.close_share()
    return c


def masked(c: Cluster, skip: Collection[str] = ()) -> Lists:
    for p in c.server.u2:
        if p not in skip:
            y = c.parties[p].mask(c.server.shares_for(p), c.server.u2, c.inputs[p])
            c.server.add_masked(p, y)
    return c.server.close_mask()


def consistent(
    c: Cluster, survivors: tuple[str, ...], dropped: tuple[str, ...], skip: Collection[str] = ()
) -> dict[str, bytes]:
    """Survivors not in ``skip`` sign; close the consistency round; return the signatures."""
    for p in survivors:
        if p not in skip:
            sig = c.parties[p].sign_consistency(survivors, dropped)
            c.server.add_consistency(p, sig, c.verify_keys[p])
    c.server.close_consistency()
    return c.server.consistency_signatures()


def listing(c: Cluster, absent: Collection[str] = ()) -> dict[str, Commit]:
    """L as a party would receive it, built without the server."""
    return {p: party.commit() for p, party in c.parties.items() if p not in absent}


def digest_of(c: Cluster, commits: dict[str, Commit]) -> bytes:
    return commit_list_digest(c.config, {p: cm.commitment for p, cm in commits.items()})


def binding_of(c: Cluster) -> bytes:
    """The roster binding every party in U1 puts into its consistency transcript."""
    roster = c.server.roster()
    seed = graph_seed(c.config, c.server.list_digest, {p: a.nonce for p, a in roster.items()})
    # The roster hash has no public name; it is the one the party and the server share.
    return roster_binding(seed, roster_digest(roster))


def resign(c: Cluster, advert: Advert, over: bytes, **changes: Any) -> Advert:
    """``advert`` with ``changes``, validly signed by its party over the list digest ``over``."""
    a = dataclasses.replace(advert, **changes)
    transcript = advert_transcript(
        c.config,
        a.party,
        a.c_public,
        a.s_public,
        nonce=a.nonce,
        list_digest=over,
        self_mask=a.self_mask_commitment,
    )
    return dataclasses.replace(a, signature=c.identities[a.party].sign(transcript))


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"threshold": 1}, "threshold"),
        ({"threshold": 2}, "threshold"),  # 2 * 2 <= 5 holders
        ({"threshold": 6}, "threshold"),
        ({"threshold": 0}, "threshold"),
        ({"parties": ()}, "parties"),
        ({"parties": ("a", "a", "b")}, "parties"),
        ({"parties": ("a", "")}, "parties"),
        ({"vector_length": 0}, "vector_length"),
        ({"graph_degree": -1}, "graph_degree"),
        ({"round_id": ""}, "round_id"),
        ({"schema_id": 3}, "schema_id"),
        ({"threshold": True}, "threshold"),
        ({"threat": "deviating"}, "threat"),
    ],
)
def test_config_validation(kwargs: dict[str, object], field: str) -> None:
    base: dict[str, object] = {
        "round_id": "r",
        "schema_id": "s",
        "parties": names(5),
        "threshold": 3,
        "vector_length": 4,
        "graph_degree": 0,
    }
    base.update(kwargs)
    with pytest.raises(InvalidArgument) as info:
        SecAggConfig(**base)  # type: ignore[arg-type]  # deliberately wrong values
    assert info.value.field == field


def test_config_sparse_threshold_bound_and_helpers() -> None:
    # degree 4 over 20 parties: holder sets have 5 members, so t <= 5.
    SecAggConfig("r", "s", names(20), 5, 4, 4)
    with pytest.raises(InvalidArgument):
        SecAggConfig("r", "s", names(20), 6, 4, 4)
    cfg = SecAggConfig("r", "s", ["b", "a", "c"], 2, 1, 0)  # type: ignore[arg-type]  # list is coerced
    assert cfg.parties == ("b", "a", "c")
    assert cfg.x_of("a") == 2
    assert cfg.ordered({"c", "b"}) == ("b", "c")
    with pytest.raises(InvalidArgument) as info:
        cfg.index("zed")
    assert info.value.field == "party"
    assert hash(cfg) == hash(SecAggConfig("r", "s", ("b", "a", "c"), 2, 1, 0))


@pytest.mark.parametrize(
    ("n", "degree", "holders"),
    [(2, 0, 2), (3, 0, 3), (4, 0, 4), (5, 0, 5), (9, 0, 9), (20, 4, 5), (40, 22, 23), (12, 3, 5)],
)
def test_config_requires_threshold_above_half_the_holders(
    n: int, degree: int, holders: int
) -> None:
    """t <= holders / 2 would let two disjoint groups of holders each reach t."""
    minimum = holders // 2 + 1
    for t in range(2, minimum):
        with pytest.raises(InvalidArgument, match="more than half") as info:
            SecAggConfig("r", "s", names(n), t, 1, degree)
        assert info.value.field == "threshold"
    for t in range(max(2, minimum), holders + 1):
        SecAggConfig("r", "s", names(n), t, 1, degree)
    # The default threshold always passes.
    SecAggConfig("r", "s", names(n), graph.default_threshold(holders), 1, degree)
    assert SecAggConfig("r", "s", ("solo",), 1, 1, 0).threshold == 1


def test_config_digest_covers_every_field() -> None:
    """Commitments bind config.digest, so any field a party was shown differently must
    change it; equal configs give equal digests."""
    model = params.DEFAULT_THREAT_MODEL
    base = SecAggConfig("r", "s", names(20), 12, 4, 0, model)
    assert base.digest == SecAggConfig("r", "s", names(20), 12, 4, 0, model).digest
    assert len(base.digest) == 32
    variants = [
        dataclasses.replace(base, round_id="r2"),
        dataclasses.replace(base, schema_id="s2"),
        dataclasses.replace(base, parties=(*names(20)[1:], "p0")),  # same set, other order
        dataclasses.replace(base, parties=(*names(19), "q0")),  # one party swapped
        dataclasses.replace(base, threshold=13),
        dataclasses.replace(base, vector_length=5),
        dataclasses.replace(base, graph_degree=19),  # the same complete graph, spelt otherwise
        dataclasses.replace(base, threat=None),
        # model.round_context: another ticket window, DP level or k shown to a party.
        dataclasses.replace(base, context=b"\x01" * 32),
        dataclasses.replace(base, threat=dataclasses.replace(model, privacy_bits=41)),
        dataclasses.replace(base, threat=dataclasses.replace(model, correctness_bits=21)),
        dataclasses.replace(base, threat=dataclasses.replace(model, dropout_fraction=0.05)),
        dataclasses.replace(base, threat=dataclasses.replace(model, corrupt_fraction=0.05)),
        dataclasses.replace(
            base, threat=dataclasses.replace(model, adversary=params.Adversary.CURIOUS)
        ),
    ]
    digests = {v.digest for v in variants}
    assert len(digests) == len(variants)
    assert base.digest not in digests


def test_config_with_threat_model_checks_the_parameters() -> None:
    model = params.DEFAULT_THREAT_MODEL  # 20 parties: C = D = 2, deviating
    chosen = params.find(20, model)
    assert (chosen.complete, chosen.threshold) == (True, 12)
    SecAggConfig("r", "s", names(20), 12, 1, 0, model)
    # t = 11 passes the c = 0 rule (2t > 20) but not 2t >= h + c + 1 = 23.
    SecAggConfig("r", "s", names(20), 11, 1, 0)
    with pytest.raises(UnsafeRequest, match="2t = 22") as info:
        SecAggConfig("r", "s", names(20), 11, 1, 0, model)
    assert info.value.field == "threshold"


# --------------------------------------------------------------------------- commit / advertise


def test_commit_is_idempotent_and_signed() -> None:
    c = make()
    assert c.parties["p0"].stage is PartyStage.NEW
    me = c.parties["p0"]
    commit = me.commit()
    assert me.stage is PartyStage.COMMITTED
    assert me.commit() == commit
    assert commit.party == "p0" and len(commit.commitment) == 32
    c.verify_keys["p0"].verify(
        commit.signature, commit_transcript(c.config, "p0", commit.commitment)
    )
    # Bound to the config: the same signature does not verify for another threshold.
    other = dataclasses.replace(c.config, threshold=4)
    with pytest.raises(InvalidSignature):
        c.verify_keys["p0"].verify(
            commit.signature, commit_transcript(other, "p0", commit.commitment)
        )
    assert len({c.parties[p].commit().commitment for p in c.config.parties}) == N


def test_advertise_before_commit_is_refused() -> None:
    c = make()
    with pytest.raises(FailedPrecondition):
        c.parties["p0"].advertise({}, c.verify_keys)


def test_advertise_is_idempotent_and_signed() -> None:
    c = make()
    commits = listing(c)
    me = c.parties["p0"]
    a = me.advertise(commits, c.verify_keys)
    assert me.stage is PartyStage.ADVERTISED
    assert me.committed == c.config.parties
    assert me.advertise(dict(reversed(commits.items())), c.verify_keys) == a
    digest = digest_of(c, commits)
    assert a.list_digest == digest
    c.verify_keys["p0"].verify(
        a.signature,
        advert_transcript(
            c.config,
            "p0",
            a.c_public,
            a.s_public,
            nonce=a.nonce,
            list_digest=digest,
            self_mask=a.self_mask_commitment,
        ),
    )
    assert nonce_commitment(c.config, "p0", a.nonce) == commits["p0"].commitment
    assert a.c_public != a.s_public
    b_seed = bytes.fromhex(json.loads(me.to_state())["b_seed"])
    assert a.self_mask_commitment == self_mask_commitment(c.config, "p0", b_seed)


def _refused_list(
    c: Cluster,
    commits: dict[str, Commit],
    match: str,
    *,
    verify_keys: dict[str, VerifyKey] | None = None,
    error: type[Exception] = UnsafeRequest,
    field_name: str | None = None,
) -> None:
    me = c.parties["p0"]
    with pytest.raises(error, match=match) as info:
        me.advertise(commits, c.verify_keys if verify_keys is None else verify_keys)
    assert me.stage is PartyStage.COMMITTED  # nothing drawn, nothing signed
    assert json.loads(me.to_state())["c_private"] is None
    if field_name is not None:
        assert getattr(info.value, "field", None) == field_name


def test_advertise_checks_the_list() -> None:
    c = make()
    good = listing(c)
    me = c.parties["p0"]

    _refused_list(c, {p: cm for p, cm in good.items() if p != "p0"}, "own commitment is missing")
    # Our own name, validly signed by our own key, but not the nonce we drew: a replay
    # of another attempt (or another instance) is not our commitment.
    twin = SecAggParty(c.config, "p0", c.identities["p0"], drbg(b"twin")).commit()
    _refused_list(c, {**good, "p0": twin}, "own commitment is missing or altered")
    mallory = SigningKey.generate(drbg(b"mallory"))
    outsider = Commit(
        "mallory", bytes(32), mallory.sign(commit_transcript(c.config, "mallory", bytes(32)))
    )
    _refused_list(
        c,
        {**good, "mallory": outsider},
        "'mallory' is not invited",
        verify_keys={**c.verify_keys, "mallory": mallory.verify_key},
    )
    _refused_list(
        c,
        {p: good[p] for p in ("p0", "p1")},
        "only 2 of 5 invited parties committed; this round needs at least 3",
    )
    _refused_list(c, {**good, "p1": good["p2"]}, "does not match its party", error=InvalidArgument)
    # t parties are enough without a threat model, and the good list is accepted.
    three = {p: good[p] for p in ("p0", "p2", "p4")}
    advert = me.advertise(three, c.verify_keys)
    assert me.committed == ("p0", "p2", "p4")
    assert advert.list_digest == digest_of(c, three)


def test_a_forged_commitment_in_l_is_caught_when_the_roster_comes() -> None:
    """Advertising does not check the other members' commitment signatures: a member's
    advert, signed over H(L), vouches for its commitment, and it advertises only for a
    list holding its own. So a commitment the aggregator altered, signed for another
    round or by another key is caught in share(): the member's real advert (over the
    real list) does not open it or is not signed over this party's H(L)."""
    c = make()
    good = listing(c)
    flipped = bytes([good["p2"].commitment[0] ^ 1]) + good["p2"].commitment[1:]
    other_cfg = dataclasses.replace(c.config, threshold=4)
    elsewhere = SecAggParty(other_cfg, "p2", c.identities["p2"], drbg(b"p2-other")).commit()
    forged = dataclasses.replace(
        good["p2"],
        commitment=flipped,
        signature=c.identities["p1"].sign(commit_transcript(c.config, "p2", flipped)),
    )
    for bad in (dataclasses.replace(good["p2"], commitment=flipped), elsewhere, forged):
        c = make()
        good = listing(c)
        shown = {**good, "p2": bad}
        me = c.parties["p0"]
        me.advertise(shown, c.verify_keys)  # nothing here tells the forgery apart
        roster = {p: c.parties[p].advertise(good, c.verify_keys) for p in good if p != "p0"}
        roster["p0"] = me.advertise(shown)
        with pytest.raises(UnsafeRequest, match="'p2'"):
            me.share(roster)
        assert me.stage is PartyStage.ADVERTISED


def test_share_names_a_member_without_an_identity_key() -> None:
    c = make()
    roster, _ = _roster(c)
    me = c.parties["p0"]
    keys = {p: k for p, k in c.verify_keys.items() if p != "p3"}
    with pytest.raises(UnsafeRequest, match="no identity key for 'p3'") as info:
        me.share(roster, keys)
    assert info.value.field == "adverts"
    assert me.stage is PartyStage.ADVERTISED


def test_a_second_different_list_after_advertising_is_refused() -> None:
    c = make()
    commits = listing(c, absent={"p4"})
    me = c.parties["p0"]
    first = me.advertise(commits, c.verify_keys)
    with_p4 = {**commits, "p4": c.parties["p4"].commit()}
    for other in (with_p4, {p: cm for p, cm in commits.items() if p != "p3"}):
        with pytest.raises(UnsafeRequest, match="already advertised for a different list"):
            me.advertise(other, c.verify_keys)
    assert me.advertise(commits, c.verify_keys) == first
    assert me.committed == ("p0", "p1", "p2", "p3")


# --------------------------------------------------------------------------- share


def test_share_before_advertise_is_refused() -> None:
    c = make()
    with pytest.raises(FailedPrecondition):
        c.parties["p0"].share({})
    c.parties["p0"].commit()
    with pytest.raises(FailedPrecondition):
        c.parties["p0"].share({})


def _roster(c: Cluster, absent: Collection[str] = ()) -> tuple[dict[str, Advert], bytes]:
    """Every member of L advertises (no server); returns the roster and H(L)."""
    commits = listing(c, absent)
    roster = {p: c.parties[p].advertise(commits, c.verify_keys) for p in commits}
    return roster, digest_of(c, commits)


def _refused_roster(c: Cluster, roster: dict[str, Advert], match: str) -> None:
    with pytest.raises(UnsafeRequest, match=match):
        c.parties["p0"].share(roster)
    assert c.parties["p0"].stage is PartyStage.ADVERTISED


def test_share_rejects_bad_signature() -> None:
    c = make()
    roster, _ = _roster(c)
    sig = bytearray(roster["p2"].signature)
    sig[5] ^= 1
    roster["p2"] = dataclasses.replace(roster["p2"], signature=bytes(sig))
    _refused_roster(c, roster, "advert of 'p2' is not signed over the list this party saw")


def test_share_rejects_advert_signed_by_someone_else() -> None:
    c = make()
    roster, digest = _roster(c)
    a = roster["p2"]
    forged = c.identities["p1"].sign(
        advert_transcript(
            c.config,
            "p2",
            a.c_public,
            a.s_public,
            nonce=a.nonce,
            list_digest=digest,
            self_mask=a.self_mask_commitment,
        )
    )
    roster["p2"] = dataclasses.replace(a, signature=forged)
    _refused_roster(c, roster, "advert of 'p2' is not signed")


def test_share_rejects_advert_signed_over_another_list() -> None:
    """A party that was shown a different L (a split by the aggregator) signed another
    H(L): its advert is refused, so the two lists never meet in one graph."""
    c = make()
    roster, _ = _roster(c)
    other_list = digest_of(c, listing(c, absent={"p4"}))
    roster["p2"] = resign(c, roster["p2"], other_list, list_digest=other_list)
    _refused_roster(c, roster, "advert of 'p2' is not signed over the list this party saw")


def test_share_rejects_parties_outside_l() -> None:
    c = make()
    roster, _ = _roster(c, absent={"p4"})
    # p4 is invited but never committed: its advert (over a list of its own) is refused.
    own_list = {p: c.parties[p].commit() for p in c.config.parties}
    p4 = c.parties["p4"].advertise(own_list, c.verify_keys)
    _refused_roster(c, {**roster, "p4": p4}, "'p4' is not in the list L")
    keys = KeyPair.generate(drbg(b"ok1")), KeyPair.generate(drbg(b"ok2"))
    mallory = Advert("mallory", keys[0].public, keys[1].public, bytes(64), bytes(32))
    _refused_roster(c, {**roster, "mallory": mallory}, "'mallory' is not in the list L")


def test_share_rejects_a_nonce_that_does_not_open_its_commitment() -> None:
    """p2's advert is signed over our H(L) but reveals another nonce: that would let
    p2 pick the graph seed after seeing the other nonces."""
    c = make()
    roster, digest = _roster(c)
    roster["p2"] = resign(c, roster["p2"], digest, nonce=bytes(32))
    _refused_roster(c, roster, "nonce of 'p2' does not open its commitment")


def test_share_rejects_reused_keys() -> None:
    c = make()
    roster, digest = _roster(c)
    roster["p2"] = resign(c, roster["p2"], digest, c_public=roster["p1"].c_public)
    _refused_roster(c, roster, "two adverts share a public key")


def test_share_rejects_low_order_key() -> None:
    c = make()
    roster, digest = _roster(c)
    roster["p2"] = resign(c, roster["p2"], digest, c_public=bytes(32))
    with pytest.raises(InvalidArgument) as info:
        c.parties["p0"].share(roster)
    assert info.value.field == "public_key"


def test_share_rejects_missing_or_replaced_own_advert() -> None:
    c = make()
    roster, digest = _roster(c)
    without_me = {p: a for p, a in roster.items() if p != "p0"}
    _refused_roster(c, without_me, "own advert is missing or altered")
    # Other keys under our name, validly signed by p0 over the same L: not our advert.
    other = KeyPair.generate(drbg(b"o1")), KeyPair.generate(drbg(b"o2"))
    roster["p0"] = resign(
        c, roster["p0"], digest, c_public=other[0].public, s_public=other[1].public
    )
    _refused_roster(c, roster, "own advert is missing or altered")


def test_share_refuses_a_roster_that_is_a_strict_subset_of_l() -> None:
    c = make()
    roster, _ = _roster(c)
    for gone in (("p4",), ("p1", "p3")):
        subset = {p: a for p, a in roster.items() if p not in gone}
        _refused_roster(c, subset, re.escape(f"parties in L without an advert: {sorted(gone)}"))
    assert len(c.parties["p0"].share(roster)) == N - 1


def test_share_retry_is_stable_and_different_roster_refused() -> None:
    c = make()
    roster, digest = _roster(c)
    first = c.parties["p0"].share(roster)
    assert [e.receiver for e in first] == ["p1", "p2", "p3", "p4"]
    assert c.parties["p0"].share(dict(reversed(roster.items()))) == first
    # p3 equivocates: a second advert, validly signed over the same L and nonce.
    keys = KeyPair.generate(drbg(b"e1")), KeyPair.generate(drbg(b"e2"))
    equivocal = resign(c, roster["p3"], digest, c_public=keys[0].public, s_public=keys[1].public)
    with pytest.raises(UnsafeRequest, match="already shared for a different roster"):
        c.parties["p0"].share({**roster, "p3": equivocal})
    assert c.parties["p0"].share(roster) == first


# --------------------------------------------------------------------------- mask


def _ready_to_mask(c: Cluster) -> None:
    shared(advertised(c))


def test_mask_checks_u2() -> None:
    c = make()
    _ready_to_mask(c)
    me = c.parties["p0"]
    env = c.server.shares_for("p0")
    x = c.inputs["p0"]
    with pytest.raises(UnsafeRequest, match="not in U1"):
        me.mask(env, [*c.server.u2, "mallory"], x)
    with pytest.raises(UnsafeRequest, match="does not contain this party"):
        me.mask([e for e in env if e.sender != "p0"], ["p1", "p2", "p3", "p4"], x)
    with pytest.raises(UnsafeRequest, match="U2 has 2 parties, this round needs 3"):
        me.mask([e for e in env if e.sender == "p1"], ["p0", "p1"], x)
    with pytest.raises(InvalidArgument):
        me.mask(env, [*c.server.u2, "p1"], x)
    assert me.stage is PartyStage.SHARED  # nothing was accepted


def test_mask_requires_every_envelope() -> None:
    c = make()
    _ready_to_mask(c)
    env = c.server.shares_for("p0")
    with pytest.raises(UnsafeRequest, match="without envelopes"):
        c.parties["p0"].mask(env[1:], c.server.u2, c.inputs["p0"])


def _complains_about(c: Cluster, accused: set[str], envelopes: list[SealedShare]) -> None:
    """p0 masks over ``envelopes``: the same y as with the real ones, and one signed
    complaint per sender in ``accused``, naming the envelope as relayed."""
    me = c.parties["p0"]
    y = me.mask(envelopes, c.server.u2, c.inputs["p0"])
    assert me.stage is PartyStage.MASKED
    assert set(me.accused) == accused
    honest = make()
    _ready_to_mask(honest)
    assert np.array_equal(
        y, honest.parties["p0"].mask(honest.server.shares_for("p0"), c.server.u2, c.inputs["p0"])
    )
    relayed = {e.sender: e for e in envelopes}
    complaints = me.complaints()
    assert [k.accused for k in complaints] == list(me.accused)
    for k in complaints:
        assert k.accuser == "p0" and k.digest == envelope_digest(relayed[k.accused])
    for k in complaints:
        c.verify_keys["p0"].verify(
            k.signature,
            complaint_transcript(c.config, me._binding, "p0", k.accused, k.digest),
        )
    # These envelopes are not the ones the aggregator relayed, so it refuses the
    # complaints (tests/unit/test_secagg_sim.py has a cheater's go through).
    with pytest.raises(InvalidArgument, match="not that of the envelope relayed"):
        c.server.add_masked("p0", y, complaints, c.verify_keys["p0"])
    assert "p0" not in c.server.masked_parties
    assert me.mask(envelopes, c.server.u2, c.inputs["p0"]).tobytes() == y.tobytes()
    assert me.complaints() == complaints
    with pytest.raises(UnsafeRequest, match="envelopes differ"):
        me.mask(c.server.shares_for("p0"), c.server.u2, c.inputs["p0"])


def test_mask_refuses_misaddressed_or_duplicate_envelopes() -> None:
    """A malformed set is the relay's doing: refused, and nothing is accepted."""
    c = make()
    _ready_to_mask(c)
    env = c.server.shares_for("p0")
    wrong_receiver = [*env[1:], c.server.shares_for("p2")[0]]
    with pytest.raises(InvalidArgument):
        c.parties["p0"].mask(wrong_receiver, c.server.u2, c.inputs["p0"])
    with pytest.raises(InvalidArgument, match="two envelopes"):
        c.parties["p0"].mask([*env, env[0]], c.server.u2, c.inputs["p0"])
    assert c.parties["p0"].stage is PartyStage.SHARED


def test_mask_complains_about_a_tampered_envelope() -> None:
    """An envelope that fails authentication names its sender in a signed complaint;
    the party still masks (issue 12: it no longer stops the round)."""
    c = make()
    _ready_to_mask(c)
    env = c.server.shares_for("p0")
    ct = bytearray(env[0].ciphertext)
    ct[-1] ^= 1
    _complains_about(c, {env[0].sender}, [replace(env[0], ciphertext=bytes(ct)), *env[1:]])


def test_mask_complains_about_relabelled_envelopes() -> None:
    """Relabelled as coming from each other's sender: the AAD no longer matches."""
    c = make()
    _ready_to_mask(c)
    env = [e for e in c.server.shares_for("p0") if e.sender != "p0"]
    relabelled = [replace(env[0], sender=env[1].sender), replace(env[1], sender=env[0].sender)]
    _complains_about(c, {env[0].sender, env[1].sender}, [*relabelled, *env[2:]])


def _forged_envelope(c: Cluster, phase: str, holder_x: int) -> SealedShare:
    """An envelope from p1 to p0 sealed with p1's real key, for ``phase`` and ``holder_x``."""
    state = json.loads(c.parties["p1"].to_state())
    blank = bytes(shamir.SHARE_BYTES)
    nonce, ct = envelope.seal_share(
        own_private=bytes.fromhex(state["c_private"]),
        peer_public=c.adverts["p0"].c_public,
        round_id="r",
        sender="p1",
        receiver="p0",
        phase=phase,
        plaintext=encode_parts(c.config.index("p1"), holder_x, blank, blank),
        rand=drbg(b"forge"),
    )
    return SealedShare("p1", "p0", nonce, ct)


def test_mask_complains_about_an_envelope_with_wrong_indices() -> None:
    """An authentic envelope whose plaintext names the wrong holder is a complaint."""
    c = make()
    _ready_to_mask(c)
    phase = f"{SHARE_PHASE}/{c.server.list_digest.hex()}"
    env = [e for e in c.server.shares_for("p0") if e.sender != "p1"]
    _complains_about(c, {"p1"}, [*env, _forged_envelope(c, phase, 3)])  # p0's x is 1


@pytest.mark.parametrize("phase", [SHARE_PHASE, f"{SHARE_PHASE}/{bytes(32).hex()}"])
def test_mask_complains_about_an_envelope_sealed_under_another_list(phase: str) -> None:
    """H(L) is in the envelopes' associated data: one sealed for another list (or with
    the phase of the v1 protocol, which had none) does not open."""
    c = make()
    _ready_to_mask(c)
    env = [e for e in c.server.shares_for("p0") if e.sender != "p1"]
    _complains_about(c, {"p1"}, [*env, _forged_envelope(c, phase, 1)])


@pytest.mark.parametrize(
    "x",
    [
        np.zeros(L, dtype=np.int64),
        np.zeros(L + 1, dtype=np.uint64),
        np.zeros((2, 2), dtype=np.uint64),
        [0, 0, 0, 0],
    ],
)
def test_mask_rejects_bad_vectors(x: object) -> None:
    c = make()
    _ready_to_mask(c)
    with pytest.raises(InvalidArgument) as info:
        c.parties["p0"].mask(c.server.shares_for("p0"), c.server.u2, x)  # type: ignore[arg-type]  # bad on purpose
    assert info.value.field == "x"


def test_mask_retry_same_y_and_refuses_changes() -> None:
    c = make()
    _ready_to_mask(c)
    me, env, u2 = c.parties["p0"], c.server.shares_for("p0"), c.server.u2
    y = me.mask(env, u2, c.inputs["p0"])
    assert np.array_equal(me.mask(env, list(reversed(u2)), c.inputs["p0"]), y)
    with pytest.raises(UnsafeRequest):
        me.mask(env, u2, c.inputs["p0"] + np.uint64(1))
    with pytest.raises(UnsafeRequest):
        me.mask([e for e in env if e.sender != "p4"], [p for p in u2 if p != "p4"], c.inputs["p0"])


def _sparse_ready(seed_party: str = "p0") -> tuple[Cluster, list[str]]:
    """12 parties, degree 4, t = 3, everyone shared; returns p0's neighbours, sorted."""
    c = make(n=12, t=3, degree=4)
    shared(advertised(c))
    return c, sorted(c.server.neighbours()[seed_party])


def test_mask_refuses_u2_with_fewer_than_t_of_its_holders() -> None:
    """U2 is large enough overall, but only 2 of p0's 5 holders are in it: p0's secrets
    could not be recovered, so it does not mask (the aggregator would have aborted)."""
    c, nbrs = _sparse_ready()
    me, x = c.parties["p0"], c.inputs["p0"]
    for gone, accepted in ((nbrs[:3], False), (nbrs[:2], True)):
        u2 = [p for p in c.config.parties if p not in gone]
        env = [e for e in c.server.shares_for("p0") if e.sender in u2]
        assert len(u2) >= c.config.min_survivors()
        if not accepted:
            with pytest.raises(UnsafeRequest, match="only 2 of this party's share holders"):
                me.mask(env, u2, x)
            assert me.stage is PartyStage.SHARED
        else:  # 3 of its holders in U2: exactly t, accepted
            me.mask(env, u2, x)
            assert me.stage is PartyStage.MASKED


def test_sign_consistency_refuses_survivors_with_fewer_than_t_of_its_holders() -> None:
    c, nbrs = _sparse_ready()
    survivors, dropped = masked(c)
    assert dropped == ()
    me = c.parties["p0"]
    for gone, accepted in ((nbrs[:3], False), (nbrs[:2], True)):
        surv = [p for p in survivors if p not in gone]
        if not accepted:
            with pytest.raises(UnsafeRequest, match="only 2 of this party's share holders"):
                me.sign_consistency(surv, list(gone))
            assert me.signed_lists is None
        else:
            me.sign_consistency(surv, list(gone))
            assert me.signed_lists == (c.config.ordered(surv), c.config.ordered(gone))


# --------------------------------------------------------------------------- threat model


def _threat_cluster() -> Cluster:
    """40 parties, sparse degree 10, t = 9, C = D = 2: |L|, |U2|, |U3| must be >= 38."""
    model = params.ThreatModel(0.05, 0.05, params.Adversary.DEVIATING, 20, 10)
    chosen = params.find(40, model, sparse_above=16)
    assert (chosen.degree, chosen.threshold, chosen.dropouts) == (10, 9, 2)
    c = make(n=40, t=chosen.threshold, degree=chosen.wire_degree(), threat=model)
    assert (c.config.min_committed(), c.config.min_survivors()) == (38, 38)
    return c


def test_threat_model_floor_on_the_list() -> None:
    c = _threat_cluster()
    short = listing(c, absent={"p37", "p38", "p39"})
    with pytest.raises(UnsafeRequest, match="only 37 of 40 invited parties committed"):
        c.parties["p0"].advertise(short, c.verify_keys)
    with pytest.raises(RoundAborted, match="only 37 parties committed, the round needs 38"):
        committed(c, absent={"p37", "p38", "p39"})


def test_threat_model_floors_on_u2_and_survivors() -> None:
    c = _threat_cluster()
    shared(advertised(c, absent={"p39"}))  # |L| = 39 still passes every rule
    assert len(c.server.u2) == 39
    me = c.parties["p0"]
    outside = [p for p in c.server.u2 if p != "p0" and p not in c.server.neighbours()["p0"]]
    too_few = [p for p in c.server.u2 if p not in outside[:2]]
    env = [e for e in c.server.shares_for("p0") if e.sender in too_few]
    with pytest.raises(UnsafeRequest, match="U2 has 37 parties, this round needs 38"):
        me.mask(env, too_few, c.inputs["p0"])
    survivors, dropped = masked(c)
    assert (len(survivors), dropped) == (39, ())
    with pytest.raises(UnsafeRequest, match="37 survivors, this round needs 38"):
        me.sign_consistency([p for p in survivors if p not in outside[:2]], outside[:2])
    me.sign_consistency([p for p in survivors if p != outside[0]], outside[:1])


# --------------------------------------------------------------------------- consistency / unmask


def _ready_to_unmask(c: Cluster) -> Lists:
    shared(advertised(c))
    return masked(c, skip={"p4"})


LIST_REFUSALS = [
    (["p0", "p1", "p2", "p3"], ["p3", "p4"], "both"),
    (["p1", "p2", "p3"], ["p0", "p4"], "dropped"),
    (["p0", "p1", "p2", "p3", "mallory"], ["p4"], "not in U2"),
    (["p0", "p1", "p2", "p3", "p1"], ["p4"], "duplicate"),
    (["p0", "p1", "p2", "p3"], ["p4", "p4"], "duplicate"),
    (["p0", "p1"], ["p2", "p3", "p4"], "2 survivors, this round needs 3"),
    (["p0", "p1", "p2"], ["p4"], "not listed"),
    (["p1", "p2", "p3"], ["p4"], "not listed as a survivor"),
]


@pytest.mark.parametrize(("survivors", "dropped", "match"), LIST_REFUSALS)
def test_sign_consistency_refusals(survivors: list[str], dropped: list[str], match: str) -> None:
    c = make()
    _ready_to_unmask(c)
    me = c.parties["p0"]
    with pytest.raises(UnsafeRequest, match=match):
        me.sign_consistency(survivors, dropped)
    assert me.signed_lists is None
    assert me.stage is PartyStage.MASKED
    with pytest.raises(FailedPrecondition):  # nothing signed: no unmask either
        me.unmask(survivors, dropped, {})
    assert me.revealed == frozenset()


@pytest.mark.parametrize(("survivors", "dropped", "match"), LIST_REFUSALS)
def test_unmask_list_refusals(survivors: list[str], dropped: list[str], match: str) -> None:
    c = make()
    surv, drop = _ready_to_unmask(c)
    sigs = consistent(c, surv, drop)
    me = c.parties["p0"]
    with pytest.raises(UnsafeRequest, match=match):
        me.unmask(survivors, dropped, sigs)
    assert me.revealed == frozenset()


def test_consistency_and_unmask_before_mask_are_refused() -> None:
    c = make()
    shared(advertised(c))
    with pytest.raises(FailedPrecondition):
        c.parties["p0"].sign_consistency(["p0", "p1", "p2"], [])
    with pytest.raises(FailedPrecondition):
        c.parties["p0"].unmask(["p0", "p1", "p2"], [], {})


def test_sign_consistency_signs_the_transcript_and_is_idempotent() -> None:
    c = make()
    survivors, dropped = _ready_to_unmask(c)
    me = c.parties["p0"]
    sig = me.sign_consistency(survivors, dropped)
    binding = binding_of(c)
    c.verify_keys["p0"].verify(
        sig, consistency_transcript(c.config, survivors, dropped, binding=binding)
    )
    # The roster binding is signed: the same lists without it (or with another) fail.
    for other in (b"", roster_binding(bytes(32), bytes(32))):
        with pytest.raises(InvalidSignature):
            c.verify_keys["p0"].verify(
                sig, consistency_transcript(c.config, survivors, dropped, binding=other)
            )
    c.server.add_consistency("p0", sig, c.verify_keys["p0"])
    assert me.stage is PartyStage.SIGNED
    assert me.signed_lists == (survivors, dropped)
    assert me.sign_consistency(list(reversed(survivors)), dropped) == sig
    with pytest.raises(UnsafeRequest, match="already signed"):
        me.sign_consistency(["p0", "p1", "p2", "p3", "p4"], [])
    with pytest.raises(UnsafeRequest, match="already signed"):
        me.sign_consistency(["p0", "p2", "p3"], ["p1", "p4"])
    assert me.signed_lists == (survivors, dropped)


def test_consistency_vector_replays() -> None:
    """tests/vectors/v1/secagg.json (scripts/gen_vectors.py): transcript and signature."""
    path = Path(__file__).resolve().parents[1] / "vectors" / "v1" / "secagg.json"
    v = json.loads(path.read_text(encoding="utf-8"))
    config = SecAggConfig(**{**v["config"], "parties": tuple(v["config"]["parties"])})
    case = v["consistency"]
    binding = bytes.fromhex(case["binding"])
    transcript = consistency_transcript(
        config, case["survivors"], case["dropped"], binding, case["accused"]
    )
    assert transcript.hex() == case["transcript"]
    surv, drop = config.ordered(case["survivors"]), config.ordered(case["dropped"])
    acc = config.ordered(case["accused"])
    assert acc and set(acc) <= set(drop)
    assert transcript == format_dst(
        "consistency/v3",
        config.digest,
        binding,
        len(surv),
        *surv,
        len(drop),
        *drop,
        len(acc),
        *acc,
    )
    vk = VerifyKey.from_bytes(bytes.fromhex(case["identity_public"]))
    vk.verify(bytes.fromhex(case["signature"]), transcript)
    assert case["failures"]
    for failure in case["failures"]:
        assert failure["error"] == "InvalidSignature"
        with pytest.raises(InvalidSignature):
            vk.verify(
                bytes.fromhex(case["signature"]),
                consistency_transcript(
                    config,
                    failure.get("survivors", case["survivors"]),
                    failure.get("dropped", case["dropped"]),
                    bytes.fromhex(failure.get("binding", case["binding"])),
                    failure.get("accused", case["accused"]),
                ),
            )
    k = v["complaint"]
    e = k["envelope"]
    env = SealedShare(
        e["sender"], e["receiver"], bytes.fromhex(e["nonce"]), bytes.fromhex(e["ciphertext"])
    )
    assert envelope_digest(env).hex() == k["digest"]
    complaint = complaint_transcript(
        config, binding, k["accuser"], k["accused"], bytes.fromhex(k["digest"])
    )
    assert complaint.hex() == k["transcript"]
    assert complaint == format_dst(
        "complaint/v1", config.digest, binding, "p00", "p01", bytes.fromhex(k["digest"])
    )
    vk.verify(bytes.fromhex(k["signature"]), complaint)


def test_consistency_transcript_is_unambiguous_and_ordered() -> None:
    c = make()
    cfg = c.config
    bind = roster_binding(b"\x01" * 32, b"\x02" * 32)
    base = consistency_transcript(cfg, ["p0", "p1", "p2"], ["p3"], bind)
    assert consistency_transcript(cfg, ["p2", "p0", "p1"], ["p3"], bind) == base
    assert consistency_transcript(cfg, ["p0", "p1", "p2", "p3"], [], bind) != base
    assert consistency_transcript(cfg, ["p0", "p1"], ["p2", "p3"], bind) != base
    assert consistency_transcript(cfg, ["p0", "p1", "p2"], ["p3"]) != base
    assert consistency_transcript(cfg, ["p0", "p1", "p2"], ["p3"], bind, ["p3"]) != base
    other_bind = roster_binding(b"\x01" * 32, b"\x03" * 32)
    assert consistency_transcript(cfg, ["p0", "p1", "p2"], ["p3"], other_bind) != base
    other_round = SecAggConfig("r2", "s", cfg.parties, T, L, 0)
    assert consistency_transcript(other_round, ["p0", "p1", "p2"], ["p3"], bind) != base


def test_unmask_signature_checks() -> None:
    c = make()
    survivors, dropped = _ready_to_unmask(c)
    sigs = consistent(c, survivors, dropped)
    assert set(sigs) == set(survivors)
    me = c.parties["p0"]

    def refused(signatures: dict[str, bytes], match: str) -> None:
        with pytest.raises(UnsafeRequest, match=match):
            me.unmask(survivors, dropped, signatures)
        assert me.revealed == frozenset()
        assert me.stage is PartyStage.SIGNED

    bad = bytearray(sigs["p2"])
    bad[0] ^= 1
    refused({**sigs, "p2": bytes(bad)}, "'p2' does not verify")
    refused({**sigs, "p2": b"short"}, "'p2' does not verify")
    # p3's valid signature, sent as p2's.
    refused({**sigs, "p2": sigs["p3"]}, "'p2' does not verify")
    # The dropped party never signed; a signature in its name is refused.
    transcript = consistency_transcript(c.config, survivors, dropped, binding_of(c))
    p4_sig = c.identities["p4"].sign(transcript)
    refused({**sigs, "p4": p4_sig}, "'p4' is not a survivor")
    refused({**sigs, "mallory": sigs["p1"]}, "'mallory' is not a survivor")
    refused({p: sigs[p] for p in ("p1", "p2", "p3")}, "own consistency signature is missing")
    refused({p: sigs[p] for p in ("p0", "p1")}, "2 consistency signatures, threshold is 3")
    with pytest.raises(InvalidArgument) as info:
        me.unmask(survivors, dropped, [sigs["p0"]])  # type: ignore[arg-type]  # not a mapping
    assert info.value.field == "signatures"
    # A forged signature among the first t checked (own first, then roster order) is
    # refused; one after them is never checked: t valid signatures on our lists are
    # what the consistency check needs, and checking all would cost O(n) per party.
    refused({**sigs, "p1": bytes(bad)}, "'p1' does not verify")
    reveals = me.unmask(survivors, dropped, {**sigs, "p3": bytes(bad)})
    assert {(r.owner, r.kind) for r in reveals} == me.revealed


def test_unmask_refuses_signatures_over_a_different_list() -> None:
    """The split-view attack in miniature: p1 and p2 signed other lists, so p0
    (which signed the real ones) does not count them and reveals nothing."""
    c = make()
    survivors, dropped = _ready_to_unmask(c)
    assert (survivors, dropped) == (("p0", "p1", "p2", "p3"), ("p4",))
    me = c.parties["p0"]
    mine = me.sign_consistency(survivors, dropped)
    other_view = (["p1", "p2", "p3"], ["p0", "p4"])  # "p0 dropped": p0's key share is wanted
    others = {p: c.parties[p].sign_consistency(*other_view) for p in ("p1", "p2")}
    p3 = c.parties["p3"].sign_consistency(survivors, dropped)
    for name in ("p1", "p2"):
        with pytest.raises(UnsafeRequest, match=f"'{name}' does not verify over our lists"):
            me.unmask(survivors, dropped, {"p0": mine, "p3": p3, name: others[name]})
    with pytest.raises(UnsafeRequest, match="2 consistency signatures"):
        me.unmask(survivors, dropped, {"p0": mine, "p3": p3})
    assert me.revealed == frozenset()
    # The other group cannot unmask either: p0 and p3 refuse to sign its view.
    for p in ("p1", "p2"):
        with pytest.raises(UnsafeRequest, match="2 consistency signatures"):
            c.parties[p].unmask(*other_view, others)
        assert c.parties[p].revealed == frozenset()
    with pytest.raises(UnsafeRequest, match="already signed"):
        c.parties["p3"].sign_consistency(*other_view)


def test_unmask_never_reveals_both_kinds_and_survives_restart() -> None:
    c = make()
    survivors, dropped = _ready_to_unmask(c)
    assert dropped == ("p4",)
    sigs = consistent(c, survivors, dropped)
    me = c.parties["p0"]
    first = me.unmask(survivors, dropped, sigs)
    kinds = {(r.owner, r.kind) for r in first}
    assert kinds == {(p, ShareKind.SELF_MASK) for p in survivors} | {("p4", ShareKind.MASK_KEY)}
    assert me.revealed == frozenset(kinds)
    assert me.unmask(survivors, dropped, sigs) == first  # an identical retry is fine

    # Claim p4 survived after all, or that p1 dropped: not the signed lists.
    all_in = consistency_transcript(c.config, ["p0", "p1", "p2", "p3", "p4"], [], binding_of(c))
    forged = {p: c.identities[p].sign(all_in) for p in c.config.parties}
    with pytest.raises(UnsafeRequest, match="differ from the ones this party signed"):
        me.unmask(["p0", "p1", "p2", "p3", "p4"], [], forged)
    with pytest.raises(UnsafeRequest, match="differ from the ones this party signed"):
        me.unmask(["p0", "p2", "p3"], ["p1", "p4"], sigs)

    restored = SecAggParty.from_state(me.to_state(), c.identities["p0"], drbg(b"new"))
    assert restored.revealed == me.revealed
    assert restored.stage is PartyStage.UNMASKED
    with pytest.raises(UnsafeRequest, match="differ from the ones this party signed"):
        restored.unmask(["p0", "p1", "p2", "p3", "p4"], [], forged)
    assert restored.unmask(survivors, dropped, sigs) == first

    # Defence in depth: the persisted record of revealed kinds is still checked,
    # even if the stored reveals and signed lists were to disagree.
    doc = json.loads(me.to_state())
    doc["revealed"] = [*doc["revealed"], ["p1", "MASK_KEY"]]
    odd = SecAggParty.from_state(json.dumps(doc).encode(), c.identities["p0"], drbg(b"odd"))
    with pytest.raises(UnsafeRequest, match="both kinds of share for 'p1'"):
        odd.unmask(survivors, dropped, sigs)


# --------------------------------------------------------------------------- state


def test_state_round_trip_at_every_stage() -> None:
    """p0 is saved and restored after every call; the restored party has the same
    state, repeats the same answer for a retry, and the round still sums correctly."""
    c = make()
    seen: list[PartyStage] = []

    def reload() -> SecAggParty:
        data = c.parties["p0"].to_state()
        assert json.loads(data)["format"] == STATE_FORMAT == "blindsum/secagg-party-state/v4"
        restored = SecAggParty.from_state(data, c.identities["p0"], drbg(b"restart"))
        assert restored.stage is c.parties["p0"].stage
        assert restored.to_state() == data
        seen.append(restored.stage)
        c.parties["p0"] = restored
        return restored

    reload()  # NEW
    commit = c.parties["p0"].commit()
    assert reload().commit() == commit  # COMMITTED: the same nonce, never a fresh one
    for p in c.config.parties:
        c.server.add_commit(c.parties[p].commit(), c.verify_keys[p])
    c.server.close_commit()
    commits = c.server.commits()
    advert = c.parties["p0"].advertise(commits, c.verify_keys)
    me = reload()  # ADVERTISED
    assert me.advertise(commits, c.verify_keys) == advert
    assert me.committed == c.config.parties
    with pytest.raises(UnsafeRequest, match="already advertised for a different list"):
        me.advertise({p: cm for p, cm in commits.items() if p != "p4"}, c.verify_keys)
    for p in c.config.parties:
        a = advert if p == "p0" else c.parties[p].advertise(commits, c.verify_keys)
        c.server.add_advert(a, c.verify_keys[p])
    c.server.close_advertise()
    roster = c.server.roster()
    envelopes = c.parties["p0"].share(roster)
    assert reload().share(roster) == envelopes  # SHARED
    c.server.add_shares("p0", envelopes)
    for p in c.config.parties[1:]:
        c.server.add_shares(p, c.parties[p].share(roster))
    c.server.close_share()
    y = c.parties["p0"].mask(c.server.shares_for("p0"), c.server.u2, c.inputs["p0"])
    assert np.array_equal(
        reload().mask(c.server.shares_for("p0"), c.server.u2, c.inputs["p0"]), y
    )  # MASKED
    c.server.add_masked("p0", y)
    survivors, dropped = masked(c, skip={"p0", "p4"})
    sig = c.parties["p0"].sign_consistency(survivors, dropped)
    assert reload().sign_consistency(survivors, dropped) == sig  # SIGNED
    sigs = consistent(c, survivors, dropped)
    reveals = c.parties["p0"].unmask(survivors, dropped, sigs)
    assert reload().unmask(survivors, dropped, sigs) == reveals  # UNMASKED
    assert seen == list(PartyStage)
    for p in survivors:
        c.server.add_reveals(
            p, reveals if p == "p0" else c.parties[p].unmask(survivors, dropped, sigs)
        )
    expected = np.zeros(L, dtype=np.uint64)
    for p in survivors:
        expected += c.inputs[p]
    assert np.array_equal(c.server.finish(), expected)


def test_state_round_trip_keeps_signed_lists_and_verify_keys() -> None:
    c = make()
    survivors, dropped = _ready_to_unmask(c)
    me = c.parties["p0"]
    mine = me.sign_consistency(survivors, dropped)
    data = me.to_state()
    doc = json.loads(data)
    assert doc["stage"] == "signed"
    assert doc["consistency"]["survivors"] == list(survivors)
    assert doc["consistency"]["dropped"] == list(dropped)
    assert doc["verify_keys"] == {p: k.raw.hex() for p, k in c.verify_keys.items()}
    assert doc["commits"] == {p: cm.commitment.hex() for p, cm in c.commits.items()}

    restored = SecAggParty.from_state(data, c.identities["p0"], drbg(b"restart"))
    assert restored.to_state() == data
    assert restored.signed_lists == (survivors, dropped)
    assert restored.sign_consistency(survivors, dropped) == mine
    with pytest.raises(UnsafeRequest, match="already signed"):
        restored.sign_consistency(["p0", "p1", "p2", "p3", "p4"], [])
    others = {p: c.parties[p].sign_consistency(survivors, dropped) for p in ("p1", "p2", "p3")}
    sigs = {"p0": mine, **others}
    # The restored party still verifies every signer with its identity key from L.
    impostor = SigningKey.generate(drbg(b"impostor"))
    forged = impostor.sign(consistency_transcript(c.config, survivors, dropped, binding_of(c)))
    with pytest.raises(UnsafeRequest, match="'p2' does not verify"):
        restored.unmask(survivors, dropped, {**sigs, "p2": forged})
    assert restored.revealed == frozenset()
    assert restored.unmask(survivors, dropped, sigs) == me.unmask(survivors, dropped, sigs)

    def broken(change: dict[str, object]) -> bytes:
        return json.dumps({**doc, **change}).encode()

    p1_key = doc["verify_keys"]["p1"]
    for bad in (
        broken({"consistency": None}),  # signed stage without lists
        broken({"consistency": {**doc["consistency"], "dropped": []}}),  # lists changed
        broken({"consistency": {**doc["consistency"], "signature": "00" * 64}}),
        broken({"verify_keys": {p: k for p, k in doc["verify_keys"].items() if p != "p3"}}),
        broken({"verify_keys": {**doc["verify_keys"], "p0": p1_key}}),
        broken({"verify_keys": {**doc["verify_keys"], "p1": "zz"}}),
        broken({"verify_keys": {**doc["verify_keys"], "p1": "00" * 31}}),
        broken({"stage": "masked"}),  # lists recorded before the consistency stage
    ):
        with pytest.raises(InvalidArgument) as info:
            SecAggParty.from_state(bad, c.identities["p0"], drbg(b"x"))
        assert info.value.field == "state"


def test_state_round_trip_and_rejections() -> None:
    c = make()
    _ready_to_unmask(c)
    me = c.parties["p0"]
    data = me.to_state()
    doc = json.loads(data)
    assert doc["stage"] == "masked"
    assert doc["consistency"] is None
    restored = SecAggParty.from_state(data, c.identities["p0"], drbg(b"x"))
    assert restored.to_state() == data
    with pytest.raises(InvalidArgument) as info:
        SecAggParty.from_state(data, c.identities["p1"], drbg(b"x"))
    assert info.value.field == "state"

    def changed(**change: object) -> bytes:
        return json.dumps({**doc, **change}).encode()

    # A v3 document (before complaints) is refused, even with v4's fields.
    v2 = data.replace(b"party-state/v4", b"party-state/v3")
    assert v2 != data
    p4_commit = c.commits["p4"].commitment.hex()
    for broken in (
        b"not json",
        b"[]",
        data.replace(b'"stage":"masked"', b'"stage":"weird"'),
        v2,
        data.replace(b"party-state/v4", b"party-state/v1"),
        changed(commits={**doc["commits"], "p0": p4_commit}),  # own commitment altered
        changed(commits={**doc["commits"], "mallory": p4_commit}),
        changed(commits={p: v for p, v in doc["commits"].items() if p != "p4"}),  # roster != L
    ):
        with pytest.raises(InvalidArgument) as info:
            SecAggParty.from_state(broken, c.identities["p0"], drbg(b"x"))
        assert info.value.field == "state"
    # Secrets that no longer match what this party signed are refused too, found by
    # re-verifying its own signatures.
    for broken in (
        changed(nonce="11" * 32),  # no longer opens the signed commitment
        changed(commit_signature="00" * 64),
        changed(b_seed="22" * 32),  # not what the signed advert committed to
        changed(advert_signature="00" * 64),
    ):
        with pytest.raises(InvalidArgument) as info:
            SecAggParty.from_state(broken, c.identities["p0"], drbg(b"x"))
        assert info.value.field == "state"
        assert "signature" in str(info.value)
    doc["revealed"] = [["p4", "MASK_KEY"]]
    with pytest.raises(InvalidArgument):  # reveals cannot predate the unmask stage
        SecAggParty.from_state(json.dumps(doc).encode(), c.identities["p0"], drbg(b"x"))


def test_party_repr_hides_secrets() -> None:
    c = make()
    survivors, dropped = _ready_to_unmask(c)
    sigs = consistent(c, survivors, dropped)
    reveals = c.parties["p0"].unmask(survivors, dropped, sigs)
    doc = json.loads(c.parties["p0"].to_state())
    text = repr(c.parties["p0"]) + repr(c.server) + repr(c.identities["p0"]) + repr(reveals)
    shares = [pair[k] for pair in doc["received"].values() for k in ("s", "b")]
    for secret in (doc["c_private"], doc["s_private"], doc["b_seed"], *shares):
        assert secret not in text
    for r in reveals:
        assert r.share.hex() not in text
        assert repr(r.share) not in text
        assert repr(r) == f"Reveal(owner={r.owner!r}, kind={r.kind!r})"


# --------------------------------------------------------------------------- server


def test_server_add_commit_checks() -> None:
    c = make()
    c0 = c.parties["p0"].commit()
    with pytest.raises(InvalidSignature):
        c.server.add_commit(c0, c.verify_keys["p1"])
    c.server.add_commit(c0, c.verify_keys["p0"])
    c.server.add_commit(c0, c.verify_keys["p0"])  # identical: no-op
    twin = SecAggParty(c.config, "p0", c.identities["p0"], drbg(b"twin")).commit()
    with pytest.raises(AlreadyExists):
        c.server.add_commit(twin, c.verify_keys["p0"])
    with pytest.raises(InvalidArgument) as info:
        c.server.add_commit(dataclasses.replace(c0, party="zed"), c.verify_keys["p0"])
    assert info.value.field == "party"
    with pytest.raises(InvalidArgument) as info:
        c.server.add_commit(
            dataclasses.replace(c0, party="p1", commitment=b"x"), c.verify_keys["p1"]
        )
    assert info.value.field == "commitment"
    other_cfg = dataclasses.replace(c.config, threshold=4)
    elsewhere = SecAggParty(other_cfg, "p1", c.identities["p1"], drbg(b"p1")).commit()
    with pytest.raises(InvalidSignature):  # signed over another configuration
        c.server.add_commit(elsewhere, c.verify_keys["p1"])
    assert c.server.committed == ("p0",)
    assert list(c.server.commits()) == ["p0"]
    assert c.server.list_digest == b""


def test_server_close_commit_fixes_l_or_aborts() -> None:
    c = make()
    for p in ("p3", "p1", "p0"):
        c.server.add_commit(c.parties[p].commit(), c.verify_keys[p])
    c.server.close_commit()
    assert c.server.stage is ServerStage.ADVERTISE
    assert c.server.committed == ("p0", "p1", "p3")
    assert c.server.list_digest == digest_of(c, c.server.commits())
    with pytest.raises(FailedPrecondition):
        c.server.add_commit(c.parties["p2"].commit(), c.verify_keys["p2"])
    small = make()
    for p in ("p0", "p1"):
        small.server.add_commit(small.parties[p].commit(), small.verify_keys[p])
    with pytest.raises(RoundAborted, match="only 2 parties committed, the round needs 3"):
        small.server.close_commit()
    assert small.server.stage is ServerStage.ABORTED


def test_server_add_advert_checks() -> None:
    c = committed(make(), absent={"p4"})
    digest = c.server.list_digest
    a0 = c.parties["p0"].advertise(c.commits, c.verify_keys)
    with pytest.raises(InvalidSignature):
        c.server.add_advert(a0, c.verify_keys["p1"])
    c.server.add_advert(a0, c.verify_keys["p0"])
    c.server.add_advert(a0, c.verify_keys["p0"])  # identical: no-op
    other = KeyPair.generate(drbg(b"k1")), KeyPair.generate(drbg(b"k2"))
    with pytest.raises(AlreadyExists):
        c.server.add_advert(
            resign(c, a0, digest, c_public=other[0].public, s_public=other[1].public),
            c.verify_keys["p0"],
        )
    a1 = c.parties["p1"].advertise(c.commits, c.verify_keys)
    with pytest.raises(InvalidArgument, match="reuses"):
        c.server.add_advert(resign(c, a1, digest, c_public=a0.c_public), c.verify_keys["p1"])
    with pytest.raises(InvalidArgument) as info:  # the nonce does not open p1's commitment
        c.server.add_advert(resign(c, a1, digest, nonce=a0.nonce), c.verify_keys["p1"])
    assert info.value.field == "advert.nonce"
    other_list = digest_of(c, listing(c, absent={"p3"}))
    with pytest.raises(InvalidSignature):  # signed over another H(L)
        c.server.add_advert(resign(c, a1, other_list), c.verify_keys["p1"])
    c.server.add_advert(a1, c.verify_keys["p1"])
    own_list = {p: c.parties[p].commit() for p in c.config.parties}
    a4 = c.parties["p4"].advertise(own_list, c.verify_keys)
    with pytest.raises(InvalidArgument, match="did not commit") as info:
        c.server.add_advert(a4, c.verify_keys["p4"])
    assert info.value.field == "party"
    with pytest.raises(InvalidArgument) as info:
        c.server.add_advert(dataclasses.replace(a0, party="zed"), c.verify_keys["p0"])
    assert info.value.field == "party"
    a2 = c.parties["p2"].advertise(c.commits, c.verify_keys)
    cases: list[dict[str, Any]] = [
        {"s_public": b"short"},
        {"nonce": b"short"},
        {"self_mask_commitment": b""},
    ]
    for short in cases:
        (name,) = short
        with pytest.raises(InvalidArgument) as info:
            c.server.add_advert(dataclasses.replace(a2, **short), c.verify_keys["p2"])
        assert info.value.field == f"advert.{name}"
    assert c.server.u1 == ("p0", "p1")
    with pytest.raises(FailedPrecondition):
        c.server.neighbours()


def test_server_close_advertise_needs_every_member_of_l() -> None:
    c = committed(make(), absent={"p4"})
    for p in ("p0", "p1", "p2"):
        c.server.add_advert(c.parties[p].advertise(c.commits, c.verify_keys), c.verify_keys[p])
    with pytest.raises(RoundAborted, match="committed but did not reveal: p3") as info:
        c.server.close_advertise()
    assert info.value.field == "u1"
    assert c.server.stage is ServerStage.ABORTED


def test_server_phase_order() -> None:
    c = make()
    a0 = c.parties["p0"].advertise(listing(c), c.verify_keys)
    with pytest.raises(FailedPrecondition):  # L is not fixed yet
        c.server.add_advert(a0, c.verify_keys["p0"])
    with pytest.raises(FailedPrecondition):
        c.server.close_advertise()
    with pytest.raises(FailedPrecondition):
        c.server.add_shares("p0", [])
    with pytest.raises(FailedPrecondition):
        c.server.close_mask()
    with pytest.raises(FailedPrecondition):
        c.server.close_consistency()
    with pytest.raises(FailedPrecondition):
        c.server.add_consistency("p0", bytes(64), c.verify_keys["p0"])
    with pytest.raises(FailedPrecondition):
        c.server.finish()
    c = advertised(make())
    with pytest.raises(FailedPrecondition):
        c.server.add_commit(c.commits["p0"], c.verify_keys["p0"])
    with pytest.raises(FailedPrecondition):
        c.server.close_commit()
    with pytest.raises(FailedPrecondition):
        c.server.add_advert(c.adverts["p0"], c.verify_keys["p0"])
    with pytest.raises(FailedPrecondition):
        c.server.shares_for("p0")


def test_server_add_shares_checks() -> None:
    c = advertised(make(), absent={"p4"})
    shares = c.parties["p0"].share(c.server.roster())
    assert [e.receiver for e in shares] == ["p1", "p2", "p3"]
    with pytest.raises(InvalidArgument) as info:
        c.server.add_shares("p4", [])
    assert info.value.field == "sender"
    with pytest.raises(InvalidArgument) as info:
        c.server.add_shares("p1", shares)
    assert info.value.field == "shares.sender"
    with pytest.raises(InvalidArgument) as info:
        c.server.add_shares("p0", shares[1:])
    assert info.value.field == "shares.receiver"
    with pytest.raises(InvalidArgument) as info:
        c.server.add_shares("p0", [*shares, shares[0]])
    assert info.value.field == "shares.receiver"
    with pytest.raises(InvalidArgument) as info:
        c.server.add_shares("p0", [*shares[1:], dataclasses.replace(shares[0], receiver="p4")])
    assert info.value.field == "shares.receiver"
    with pytest.raises(InvalidArgument) as info:
        c.server.add_shares("p0", [dataclasses.replace(shares[0], nonce=b"x"), *shares[1:]])
    assert info.value.field == "shares.nonce"
    bad_ct = dataclasses.replace(shares[0], ciphertext=shares[0].ciphertext + b"x")
    with pytest.raises(InvalidArgument) as info:
        c.server.add_shares("p0", [bad_ct, *shares[1:]])
    assert info.value.field == "shares.ciphertext"
    c.server.add_shares("p0", list(reversed(shares)))
    c.server.add_shares("p0", shares)  # identical (any order): no-op
    altered = dataclasses.replace(shares[0], nonce=bytes(12))
    with pytest.raises(AlreadyExists):
        c.server.add_shares("p0", [altered, *shares[1:]])


def test_server_shares_for_and_add_masked_checks() -> None:
    c = shared(advertised(make()), skip={"p4"})
    assert c.server.u2 == ("p0", "p1", "p2", "p3")
    assert {e.sender for e in c.server.shares_for("p0")} == {"p1", "p2", "p3"}
    with pytest.raises(InvalidArgument):
        c.server.shares_for("p4")
    y = c.parties["p0"].mask(c.server.shares_for("p0"), c.server.u2, c.inputs["p0"])
    with pytest.raises(InvalidArgument) as info:
        c.server.add_masked("p4", y)
    assert info.value.field == "party"
    bads: list[object] = [y.astype(np.int64), y[:-1], y.reshape(2, 2)]
    for bad in bads:
        with pytest.raises(InvalidArgument) as info:
            c.server.add_masked("p0", bad)  # type: ignore[arg-type]  # wrong on purpose
        assert info.value.field == "y"
    c.server.add_masked("p0", y)
    c.server.add_masked("p0", y.copy())  # identical: no-op
    with pytest.raises(AlreadyExists):
        c.server.add_masked("p0", y + np.uint64(1))
    with pytest.raises(FailedPrecondition):
        c.server.restore_masked(y, ["p0"])


def test_server_add_consistency_checks() -> None:
    c = make()
    survivors, dropped = _ready_to_unmask(c)
    assert c.server.stage.value == "consistency"
    with pytest.raises(FailedPrecondition):
        c.server.add_reveals("p0", [])
    sigs = {p: c.parties[p].sign_consistency(survivors, dropped) for p in survivors}
    binding = binding_of(c)
    p4_sig = c.identities["p4"].sign(consistency_transcript(c.config, survivors, dropped, binding))
    with pytest.raises(InvalidArgument) as info:
        c.server.add_consistency("p4", p4_sig, c.verify_keys["p4"])  # dropped, not in U3
    assert info.value.field == "party"
    with pytest.raises(InvalidSignature):
        c.server.add_consistency("p0", sigs["p1"], c.verify_keys["p0"])
    with pytest.raises(InvalidSignature):
        c.server.add_consistency("p0", b"short", c.verify_keys["p0"])
    other = c.identities["p0"].sign(
        consistency_transcript(c.config, ["p0", "p1", "p2"], ["p3"], binding)
    )
    with pytest.raises(InvalidSignature):  # over a different view
        c.server.add_consistency("p0", other, c.verify_keys["p0"])
    unbound = c.identities["p0"].sign(consistency_transcript(c.config, survivors, dropped))
    with pytest.raises(InvalidSignature):  # the right lists, without the roster binding
        c.server.add_consistency("p0", unbound, c.verify_keys["p0"])
    with pytest.raises(InvalidArgument) as info:
        c.server.add_consistency("p0", sigs["p0"], c.identities["p0"])  # type: ignore[arg-type]  # not a VerifyKey
    assert info.value.field == "verify_key"
    assert not c.server.consistency_signers
    for p in ("p3", "p1"):
        c.server.add_consistency(p, sigs[p], c.verify_keys[p])
    c.server.add_consistency("p1", sigs["p1"], c.verify_keys["p1"])  # identical: no-op
    impostor = SigningKey.generate(drbg(b"impostor"))
    swapped = impostor.sign(consistency_transcript(c.config, survivors, dropped, binding))
    with pytest.raises(AlreadyExists):
        c.server.add_consistency("p1", swapped, impostor.verify_key)
    assert c.server.consistency_signers == ("p1", "p3")
    assert list(c.server.consistency_signatures()) == ["p1", "p3"]
    with pytest.raises(InvalidArgument, match="did not sign"):
        c.server.expected_reveals("p0")
    c.server.add_consistency("p0", sigs["p0"], c.verify_keys["p0"])
    c.server.close_consistency()
    assert c.server.stage is ServerStage.UNMASK
    assert c.server.consistency_signatures() == {p: sigs[p] for p in ("p0", "p1", "p3")}
    with pytest.raises(FailedPrecondition):
        c.server.add_consistency("p2", sigs["p2"], c.verify_keys["p2"])
    # p2 sent a masked input but no signature: it may not reveal, even with valid shares.
    p2_reveals = c.parties["p2"].unmask(
        survivors, dropped, {**c.server.consistency_signatures(), "p2": sigs["p2"]}
    )
    with pytest.raises(InvalidArgument, match="did not sign") as info:
        c.server.add_reveals("p2", p2_reveals)
    assert info.value.field == "party"
    for p in ("p0", "p1", "p3"):
        c.server.add_reveals(p, c.parties[p].unmask(survivors, dropped, sigs))
    expected = np.zeros(L, dtype=np.uint64)
    for p in survivors:
        expected += c.inputs[p]
    assert np.array_equal(c.server.finish(), expected)


def test_server_close_consistency_below_threshold_aborts() -> None:
    c = make()
    survivors, dropped = _ready_to_unmask(c)
    with pytest.raises(RoundAborted, match="only 2 parties signed") as info:
        consistent(c, survivors, dropped, skip={"p1", "p2"})
    assert "threshold is 3" in str(info.value)
    assert c.server.stage is ServerStage.ABORTED
    with pytest.raises(RoundAborted):
        c.server.add_reveals("p0", [])


def test_server_add_reveals_checks() -> None:
    c = make()
    survivors, dropped = _ready_to_unmask(c)
    sigs = consistent(c, survivors, dropped)
    reveals = c.parties["p0"].unmask(survivors, dropped, sigs)
    with pytest.raises(InvalidArgument) as info:
        c.server.add_reveals("p4", [])
    assert info.value.field == "party"
    wrong_kind = [
        dataclasses.replace(r, kind=ShareKind.MASK_KEY) if r.owner == "p1" else r for r in reveals
    ]
    with pytest.raises(InvalidArgument, match="unexpected MASK_KEY"):
        c.server.add_reveals("p0", wrong_kind)
    flipped_dropped = [
        dataclasses.replace(r, kind=ShareKind.SELF_MASK) if r.owner == "p4" else r for r in reveals
    ]
    with pytest.raises(InvalidArgument, match="unexpected SELF_MASK"):
        c.server.add_reveals("p0", flipped_dropped)
    with pytest.raises(InvalidArgument, match="missing"):
        c.server.add_reveals("p0", reveals[1:])
    with pytest.raises(InvalidArgument, match="duplicate"):
        c.server.add_reveals("p0", [*reveals, reveals[0]])
    bad_share = dataclasses.replace(reveals[0], share=b"\xff" * 66)
    with pytest.raises(InvalidArgument):
        c.server.add_reveals("p0", [bad_share, *reveals[1:]])
    c.server.add_reveals("p0", reveals)
    c.server.add_reveals("p0", list(reversed(reveals)))  # identical: no-op
    other = dataclasses.replace(reveals[0], share=bytes(66))
    with pytest.raises(AlreadyExists):
        c.server.add_reveals("p0", [other, *reveals[1:]])
    assert c.server.expected_reveals("p0") == {(r.owner, r.kind) for r in reveals}


def test_server_rejects_reveal_for_non_neighbour_in_sparse_graph() -> None:
    c = make(n=12, t=3, degree=2)
    shared(advertised(c))
    survivors, dropped = masked(c)
    sigs = consistent(c, survivors, dropped)
    nbrs = c.server.neighbours()["p0"]
    stranger = next(p for p in survivors if p not in nbrs and p != "p0")
    reveals = c.parties["p0"].unmask(survivors, dropped, sigs)
    assert {r.owner for r in reveals} == set(nbrs) | {"p0"}
    fake = Reveal(stranger, ShareKind.SELF_MASK, reveals[0].share)
    with pytest.raises(InvalidArgument, match="unexpected"):
        c.server.add_reveals("p0", [*reveals, fake])


# --------------------------------------------------------------------------- verifiable reveals


def _corrupt(reveals: list[Reveal], owner: str, kind: ShareKind) -> list[Reveal]:
    """``reveals`` with the share of (owner, kind) moved off the polynomial."""
    out = []
    for r in reveals:
        if (r.owner, r.kind) == (owner, kind):
            value = (int.from_bytes(r.share, "big") + 1) % ((1 << 521) - 1)
            out.append(dataclasses.replace(r, share=value.to_bytes(66, "big")))
        else:
            out.append(r)
    return out


def _reveal_round(
    c: Cluster, bad: dict[str, tuple[str, ShareKind]], silent: Collection[str] = ()
) -> Lists:
    """Survivors p0..p3 (p4 dropped after sharing) sign, except ``silent``; every signer
    reveals, those in ``bad`` with one share corrupted."""
    survivors, dropped = _ready_to_unmask(c)
    sigs = consistent(c, survivors, dropped, skip=silent)
    for p in c.server.consistency_signers:
        reveals = c.parties[p].unmask(survivors, dropped, sigs)
        if p in bad:
            reveals = _corrupt(reveals, *bad[p])
        c.server.add_reveals(p, reveals)
    return survivors, dropped


def _expected(c: Cluster, survivors: tuple[str, ...]) -> U64Vector:
    total = np.zeros(L, dtype=np.uint64)
    for p in survivors:
        total += c.inputs[p]
    return total


@pytest.mark.parametrize(
    ("holder", "secret", "what"),
    [
        ("p3", ("p4", ShareKind.MASK_KEY), "revealed a wrong share of p4's mask key"),
        ("p0", ("p4", ShareKind.MASK_KEY), "revealed a wrong share of p4's mask key"),
        ("p0", ("p1", ShareKind.SELF_MASK), "revealed a wrong share of p1's self-mask seed"),
        ("p2", ("p2", ShareKind.SELF_MASK), "revealed a wrong share of p2's self-mask seed"),
    ],
)
def test_server_names_a_holder_of_a_wrong_share_and_finishes(
    holder: str, secret: tuple[str, ShareKind], what: str
) -> None:
    """Four shares, t = 3: the wrong one is found (whether it is among the first t or
    the extra one), its holder is named, and the sum is still exact."""
    c = make()
    survivors, _ = _reveal_round(c, {holder: secret})
    assert np.array_equal(c.server.finish(), _expected(c, survivors))
    assert c.server.misbehaving == {holder: what}


def test_server_aborts_without_t_good_shares_and_keeps_its_state() -> None:
    c = make()
    bad = {p: ("p4", ShareKind.MASK_KEY) for p in ("p1", "p3")}
    _reveal_round(c, bad)
    with pytest.raises(RoundAborted, match=r"MASK_KEY of 'p4'.*shares or its commitment are wrong"):
        c.server.finish()
    assert c.server.stage is ServerStage.UNMASK
    assert c.server.can_finish()  # t shares arrived; they are just not t good ones
    with pytest.raises(RoundAborted):  # and it says so again
        c.server.finish()


def test_server_names_nobody_when_it_aborts() -> None:
    """p0's wrong share of p1's seed is located before p4's key proves unrecoverable;
    the abort leaves the server as it was, with nobody named."""
    c = make()
    bad = {"p0": ("p1", ShareKind.SELF_MASK)} | {
        p: ("p4", ShareKind.MASK_KEY) for p in ("p1", "p3")
    }
    _reveal_round(c, bad)
    with pytest.raises(RoundAborted, match="MASK_KEY of 'p4'"):
        c.server.finish()
    assert c.server.misbehaving == {}
    assert c.server.stage is ServerStage.UNMASK


def test_server_cannot_locate_a_wrong_share_among_exactly_t() -> None:
    """With p3 silent only p0, p1, p2 reveal: three shares for t = 3 leave no spare
    share to find the wrong one with, so the round cannot finish."""
    c = make()
    _reveal_round(c, {"p1": ("p0", ShareKind.SELF_MASK)}, silent={"p3"})
    assert c.server.consistency_signers == ("p0", "p1", "p2")
    with pytest.raises(RoundAborted, match="SELF_MASK of 'p0'"):
        c.server.finish()
    assert c.server.misbehaving == {}


def test_server_abort_is_final() -> None:
    c = advertised(make())
    c.server.abort("deadline passed")
    with pytest.raises(RoundAborted, match="deadline passed"):
        c.server.add_shares("p0", [])
    assert not c.server.can_finish()


def test_round_context_binds_window_dp_and_k() -> None:
    """Parties shown different windows, DP parameters or k build different configs, so
    their commitments never verify for each other (the aggregator cannot mix them)."""
    from blindsum.model import DpMode, DpSpec, round_context

    base = {"window_start_ms": 0, "window_end_ms": 604_800_000, "min_contributors": 3}
    dp = DpSpec(mode=DpMode.CENTRAL, rho=0.5, expected_parties=4, campaign="c", window="w")
    ref = round_context(dp=dp, **base)
    others = [
        round_context(dp=dp, **{**base, "window_start_ms": 86_400_000}),
        round_context(dp=dp, **{**base, "window_end_ms": 691_200_000}),
        round_context(dp=dp, **{**base, "min_contributors": 2}),
        round_context(dp=dataclasses.replace(dp, rho=0.25), **base),
        round_context(dp=dataclasses.replace(dp, mode=DpMode.OFF), **base),
        round_context(dp=dataclasses.replace(dp, expected_parties=3), **base),
        round_context(dp=dataclasses.replace(dp, campaign="d"), **base),
    ]
    assert len({ref, *others}) == len(others) + 1
    configs = [SecAggConfig("r", "s", names(5), 4, 4, 0, None, ctx) for ctx in (ref, others[0])]
    key = SigningKey.generate(drbg(b"ctx"))
    commit = SecAggParty(configs[0], "p0", key, drbg(b"c")).commit()
    with pytest.raises(InvalidSignature):
        SecAggServer(configs[1]).add_commit(commit, key.verify_key)
    SecAggServer(configs[0]).add_commit(commit, key.verify_key)
