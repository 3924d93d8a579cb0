"""secagg refusals and input validation, party side and aggregator side."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

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
    InvalidTag,
    RoundAborted,
    UnsafeRequest,
)
from blindsum.protocol import graph
from blindsum.protocol.secagg import (
    Advert,
    PartyStage,
    Reveal,
    SealedShare,
    SecAggConfig,
    SecAggParty,
    SecAggServer,
    ServerStage,
    ShareKind,
    advert_transcript,
    consistency_transcript,
)
from blindsum.types import RandFn, U64Vector

N = 5
T = 3
L = 4


def drbg(seed: bytes) -> RandFn:
    counter = itertools.count()

    def rand(n: int) -> bytes:
        return hashlib.shake_256(seed + next(counter).to_bytes(8, "big")).digest(n)

    return rand


@dataclass
class Cluster:
    config: SecAggConfig
    identities: dict[str, SigningKey]
    verify_keys: dict[str, VerifyKey]
    parties: dict[str, SecAggParty]
    server: SecAggServer
    inputs: dict[str, U64Vector]
    adverts: dict[str, Advert]


def names(n: int) -> tuple[str, ...]:
    return tuple(f"p{i}" for i in range(n))


def make(n: int = N, t: int = T, degree: int = 0) -> Cluster:
    config = SecAggConfig(
        round_id="r",
        schema_id="s",
        parties=names(n),
        threshold=t,
        vector_length=L,
        graph_degree=degree,
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
        {},
    )


def advertised(c: Cluster, skip: Collection[str] = ()) -> Cluster:
    for p, party in c.parties.items():
        if p not in skip:
            c.adverts[p] = party.advertise()
            c.server.add_advert(c.adverts[p], c.verify_keys[p])
    c.server.close_advertise()
    return c


def shared(c: Cluster, skip: Collection[str] = ()) -> Cluster:
    for p in c.server.u1:
        if p not in skip:
            c.server.add_shares(p, c.parties[p].share(c.server.roster(), c.verify_keys))
    c.server.close_share()
    return c


def masked(c: Cluster, skip: Collection[str] = ()) -> tuple[tuple[str, ...], tuple[str, ...]]:
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


# --------------------------------------------------------------------------- advertise / share


def test_advertise_is_idempotent_and_signed() -> None:
    c = make()
    a = c.parties["p0"].advertise()
    assert c.parties["p0"].advertise() == a
    c.verify_keys["p0"].verify(
        a.signature, advert_transcript(c.config, "p0", a.c_public, a.s_public)
    )
    assert a.c_public != a.s_public


def test_share_before_advertise_is_refused() -> None:
    c = make()
    with pytest.raises(FailedPrecondition):
        c.parties["p0"].share({}, c.verify_keys)


def _roster(c: Cluster) -> dict[str, Advert]:
    return {p: party.advertise() for p, party in c.parties.items()}


def test_share_rejects_bad_signature() -> None:
    c = make()
    roster = _roster(c)
    sig = bytearray(roster["p2"].signature)
    sig[5] ^= 1
    roster["p2"] = dataclasses.replace(roster["p2"], signature=bytes(sig))
    with pytest.raises(InvalidSignature):
        c.parties["p0"].share(roster, c.verify_keys)


def test_share_rejects_advert_signed_by_someone_else() -> None:
    c = make()
    roster = _roster(c)
    forged = c.identities["p1"].sign(
        advert_transcript(c.config, "p2", roster["p2"].c_public, roster["p2"].s_public)
    )
    roster["p2"] = dataclasses.replace(roster["p2"], signature=forged)
    with pytest.raises(InvalidSignature):
        c.parties["p0"].share(roster, c.verify_keys)


def test_share_rejects_uninvited_party() -> None:
    c = make()
    roster = _roster(c)
    outsider = SigningKey.generate(drbg(b"outsider"))
    keys = KeyPair.generate(drbg(b"ok1")), KeyPair.generate(drbg(b"ok2"))
    transcript = advert_transcript(c.config, "mallory", keys[0].public, keys[1].public)
    roster["mallory"] = Advert("mallory", keys[0].public, keys[1].public, outsider.sign(transcript))
    vks = dict(c.verify_keys, mallory=outsider.verify_key)
    with pytest.raises(UnsafeRequest):
        c.parties["p0"].share(roster, vks)


def test_share_rejects_reused_keys() -> None:
    c = make()
    roster = _roster(c)
    stolen = roster["p1"].c_public
    transcript = advert_transcript(c.config, "p2", stolen, roster["p2"].s_public)
    roster["p2"] = Advert("p2", stolen, roster["p2"].s_public, c.identities["p2"].sign(transcript))
    with pytest.raises(UnsafeRequest):
        c.parties["p0"].share(roster, c.verify_keys)


def test_share_rejects_low_order_key() -> None:
    c = make()
    roster = _roster(c)
    transcript = advert_transcript(c.config, "p2", bytes(32), roster["p2"].s_public)
    roster["p2"] = Advert(
        "p2", bytes(32), roster["p2"].s_public, c.identities["p2"].sign(transcript)
    )
    with pytest.raises(InvalidArgument) as info:
        c.parties["p0"].share(roster, c.verify_keys)
    assert info.value.field == "public_key"


def test_share_rejects_missing_or_replaced_own_advert() -> None:
    c = make()
    roster = _roster(c)
    without_me = {p: a for p, a in roster.items() if p != "p0"}
    with pytest.raises(UnsafeRequest):
        c.parties["p0"].share(without_me, c.verify_keys)
    # A replayed advert from another round's keys (validly signed by p0) is refused.
    other = KeyPair.generate(drbg(b"o1")), KeyPair.generate(drbg(b"o2"))
    t = advert_transcript(c.config, "p0", other[0].public, other[1].public)
    roster["p0"] = Advert("p0", other[0].public, other[1].public, c.identities["p0"].sign(t))
    with pytest.raises(UnsafeRequest):
        c.parties["p0"].share(roster, c.verify_keys)


def test_share_aborts_below_threshold_and_needs_verify_keys() -> None:
    c = make()
    roster = _roster(c)
    small = {p: roster[p] for p in ("p0", "p1")}
    with pytest.raises(RoundAborted):
        c.parties["p0"].share(small, c.verify_keys)
    with pytest.raises(InvalidArgument) as info:
        c.parties["p0"].share(roster, {p: k for p, k in c.verify_keys.items() if p != "p3"})
    assert info.value.field == "verify_keys"


def test_share_retry_is_stable_and_different_roster_refused() -> None:
    c = make()
    roster = _roster(c)
    first = c.parties["p0"].share(roster, c.verify_keys)
    assert [e.receiver for e in first] == ["p1", "p2", "p3", "p4"]
    assert c.parties["p0"].share(roster, c.verify_keys) == first
    smaller = {p: a for p, a in roster.items() if p != "p4"}
    with pytest.raises(UnsafeRequest):
        c.parties["p0"].share(smaller, c.verify_keys)


# --------------------------------------------------------------------------- mask


def _ready_to_mask(c: Cluster) -> None:
    shared(advertised(c))


def test_mask_checks_u2() -> None:
    c = make()
    _ready_to_mask(c)
    me = c.parties["p0"]
    env = c.server.shares_for("p0")
    x = c.inputs["p0"]
    with pytest.raises(UnsafeRequest):
        me.mask(env, [*c.server.u2, "mallory"], x)
    with pytest.raises(UnsafeRequest):
        me.mask([e for e in env if e.sender != "p0"], ["p1", "p2", "p3", "p4"], x)
    with pytest.raises(UnsafeRequest):
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


def test_mask_rejects_tampered_misaddressed_or_duplicate_envelopes() -> None:
    c = make()
    _ready_to_mask(c)
    env = c.server.shares_for("p0")
    ct = bytearray(env[0].ciphertext)
    ct[-1] ^= 1
    tampered = [dataclasses.replace(env[0], ciphertext=bytes(ct)), *env[1:]]
    with pytest.raises(InvalidTag):
        c.parties["p0"].mask(tampered, c.server.u2, c.inputs["p0"])
    wrong_receiver = [*env[1:], c.server.shares_for("p2")[0]]
    with pytest.raises(InvalidArgument):
        c.parties["p0"].mask(wrong_receiver, c.server.u2, c.inputs["p0"])
    with pytest.raises(InvalidArgument):
        c.parties["p0"].mask([*env, env[0]], c.server.u2, c.inputs["p0"])
    # Relabelled as coming from a different sender: the AAD no longer matches.
    relabelled = [dataclasses.replace(env[0], sender=env[1].sender), *env[2:]]
    relabelled.append(dataclasses.replace(env[1], sender=env[0].sender))
    with pytest.raises(InvalidTag):
        c.parties["p0"].mask(relabelled, c.server.u2, c.inputs["p0"])


def test_mask_rejects_envelope_with_wrong_indices() -> None:
    """An authentic envelope whose plaintext names the wrong holder is refused."""
    c = make()
    _ready_to_mask(c)
    state = json.loads(c.parties["p1"].to_state())
    c_private = bytes.fromhex(state["c_private"])
    blank = bytes(shamir.SHARE_BYTES)
    nonce, ct = envelope.seal_share(
        own_private=c_private,
        peer_public=c.adverts["p0"].c_public,
        round_id="r",
        sender="p1",
        receiver="p0",
        phase="share",
        plaintext=encode_parts(c.config.index("p1"), 3, blank, blank),  # p0's x is 1, not 3
        rand=drbg(b"forge"),
    )
    env = [e for e in c.server.shares_for("p0") if e.sender != "p1"]
    env.append(SealedShare("p1", "p0", nonce, ct))
    with pytest.raises(InvalidArgument, match="owner or holder"):
        c.parties["p0"].mask(env, c.server.u2, c.inputs["p0"])


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


# --------------------------------------------------------------------------- consistency / unmask


def _ready_to_unmask(c: Cluster) -> tuple[tuple[str, ...], tuple[str, ...]]:
    shared(advertised(c))
    return masked(c, skip={"p4"})


LIST_REFUSALS = [
    (["p0", "p1", "p2", "p3"], ["p3", "p4"], "both"),
    (["p1", "p2", "p3"], ["p0", "p4"], "dropped"),
    (["p0", "p1", "p2", "p3", "mallory"], ["p4"], "not in U2"),
    (["p0", "p1", "p2", "p3", "p1"], ["p4"], "duplicate"),
    (["p0", "p1", "p2", "p3"], ["p4", "p4"], "duplicate"),
    (["p0", "p1"], ["p2", "p3", "p4"], "survivors, threshold"),
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
    c.verify_keys["p0"].verify(sig, consistency_transcript(c.config, survivors, dropped))
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
    transcript = consistency_transcript(config, case["survivors"], case["dropped"])
    assert transcript.hex() == case["transcript"]
    surv, drop = config.ordered(case["survivors"]), config.ordered(case["dropped"])
    assert transcript == format_dst(
        "consistency", "round-1", "schema-1", len(surv), *surv, len(drop), *drop
    )
    vk = VerifyKey.from_bytes(bytes.fromhex(case["identity_public"]))
    vk.verify(bytes.fromhex(case["signature"]), transcript)
    assert case["failures"]
    for failure in case["failures"]:
        assert failure["error"] == "InvalidSignature"
        with pytest.raises(InvalidSignature):
            vk.verify(
                bytes.fromhex(case["signature"]),
                consistency_transcript(config, failure["survivors"], failure["dropped"]),
            )


def test_consistency_transcript_is_unambiguous_and_ordered() -> None:
    c = make()
    cfg = c.config
    base = consistency_transcript(cfg, ["p0", "p1", "p2"], ["p3"])
    assert consistency_transcript(cfg, ["p2", "p0", "p1"], ["p3"]) == base
    assert consistency_transcript(cfg, ["p0", "p1", "p2", "p3"], []) != base
    assert consistency_transcript(cfg, ["p0", "p1"], ["p2", "p3"]) != base
    other_round = SecAggConfig("r2", "s", cfg.parties, T, L, 0)
    assert consistency_transcript(other_round, ["p0", "p1", "p2"], ["p3"]) != base


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
    p4_sig = c.identities["p4"].sign(consistency_transcript(c.config, survivors, dropped))
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
    all_in = consistency_transcript(c.config, ["p0", "p1", "p2", "p3", "p4"], [])
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

    restored = SecAggParty.from_state(data, c.identities["p0"], drbg(b"restart"))
    assert restored.to_state() == data
    assert restored.signed_lists == (survivors, dropped)
    assert restored.sign_consistency(survivors, dropped) == mine
    with pytest.raises(UnsafeRequest, match="already signed"):
        restored.sign_consistency(["p0", "p1", "p2", "p3", "p4"], [])
    others = {p: c.parties[p].sign_consistency(survivors, dropped) for p in ("p1", "p2", "p3")}
    sigs = {"p0": mine, **others}
    # The restored party still verifies every signer with its U1 identity key.
    impostor = SigningKey.generate(drbg(b"impostor"))
    forged = impostor.sign(consistency_transcript(c.config, survivors, dropped))
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
    pre_consistency = data.replace(b"party-state/v2", b"party-state/v1")  # older format
    assert pre_consistency != data
    for broken in (
        b"not json",
        b"[]",
        data.replace(b'"stage":"masked"', b'"stage":"weird"'),
        pre_consistency,
    ):
        with pytest.raises(InvalidArgument) as info:
            SecAggParty.from_state(broken, c.identities["p0"], drbg(b"x"))
        assert info.value.field == "state"
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


def test_server_add_advert_checks() -> None:
    c = make()
    a0 = c.parties["p0"].advertise()
    with pytest.raises(InvalidSignature):
        c.server.add_advert(a0, c.verify_keys["p1"])
    c.server.add_advert(a0, c.verify_keys["p0"])
    c.server.add_advert(a0, c.verify_keys["p0"])  # identical: no-op
    other = KeyPair.generate(drbg(b"k1")), KeyPair.generate(drbg(b"k2"))
    t = advert_transcript(c.config, "p0", other[0].public, other[1].public)
    with pytest.raises(AlreadyExists):
        c.server.add_advert(
            Advert("p0", other[0].public, other[1].public, c.identities["p0"].sign(t)),
            c.verify_keys["p0"],
        )
    t = advert_transcript(c.config, "p1", a0.c_public, other[1].public)
    with pytest.raises(InvalidArgument, match="reuses"):
        c.server.add_advert(
            Advert("p1", a0.c_public, other[1].public, c.identities["p1"].sign(t)),
            c.verify_keys["p1"],
        )
    with pytest.raises(InvalidArgument) as info:
        c.server.add_advert(dataclasses.replace(a0, party="zed"), c.verify_keys["p0"])
    assert info.value.field == "party"
    with pytest.raises(InvalidArgument) as info:
        c.server.add_advert(dataclasses.replace(a0, s_public=b"short"), c.verify_keys["p0"])
    assert info.value.field == "advert.s_public"
    with pytest.raises(FailedPrecondition):
        c.server.neighbours()


def test_server_phase_order() -> None:
    c = make()
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
    advertised(c)
    with pytest.raises(FailedPrecondition):
        c.server.add_advert(c.adverts["p0"], c.verify_keys["p0"])
    with pytest.raises(FailedPrecondition):
        c.server.shares_for("p0")


def test_server_add_shares_checks() -> None:
    c = advertised(make(), skip={"p4"})
    shares = c.parties["p0"].share(c.server.roster(), c.verify_keys)
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
    p4_sig = c.identities["p4"].sign(consistency_transcript(c.config, survivors, dropped))
    with pytest.raises(InvalidArgument) as info:
        c.server.add_consistency("p4", p4_sig, c.verify_keys["p4"])  # dropped, not in U3
    assert info.value.field == "party"
    with pytest.raises(InvalidSignature):
        c.server.add_consistency("p0", sigs["p1"], c.verify_keys["p0"])
    with pytest.raises(InvalidSignature):
        c.server.add_consistency("p0", b"short", c.verify_keys["p0"])
    other = c.identities["p0"].sign(consistency_transcript(c.config, ["p0", "p1", "p2"], ["p3"]))
    with pytest.raises(InvalidSignature):  # over a different view
        c.server.add_consistency("p0", other, c.verify_keys["p0"])
    with pytest.raises(InvalidArgument) as info:
        c.server.add_consistency("p0", sigs["p0"], c.identities["p0"])  # type: ignore[arg-type]  # not a VerifyKey
    assert info.value.field == "verify_key"
    assert not c.server.consistency_signers
    for p in ("p3", "p1"):
        c.server.add_consistency(p, sigs[p], c.verify_keys[p])
    c.server.add_consistency("p1", sigs["p1"], c.verify_keys["p1"])  # identical: no-op
    impostor = SigningKey.generate(drbg(b"impostor"))
    swapped = impostor.sign(consistency_transcript(c.config, survivors, dropped))
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


def test_server_detects_corrupt_key_shares() -> None:
    """Shares that reconstruct to a key not matching the advert abort the round."""
    c = make()
    survivors, dropped = _ready_to_unmask(c)
    sigs = consistent(c, survivors, dropped)
    for p in survivors:
        reveals = c.parties[p].unmask(survivors, dropped, sigs)
        if p in ("p0", "p1", "p2"):
            reveals = [
                dataclasses.replace(
                    r, share=(int.from_bytes(r.share, "big") + 1).to_bytes(66, "big")
                )
                if r.kind is ShareKind.MASK_KEY
                else r
                for r in reveals
            ]
        c.server.add_reveals(p, reveals)
    with pytest.raises(RoundAborted, match="does not match its advert"):
        c.server.finish()


def test_server_abort_is_final() -> None:
    c = advertised(make())
    c.server.abort("deadline passed")
    with pytest.raises(RoundAborted, match="deadline passed"):
        c.server.add_shares("p0", [])
    assert not c.server.can_finish()
