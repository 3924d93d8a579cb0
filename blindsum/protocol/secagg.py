"""secagg: double masking (Bonawitz et al. 2017) over the SecAgg+ graph (Bell et al. 2020).

Pure state machines for one round (docs/ARCHITECTURE.md, "Round lifecycle").
:class:`SecAggParty` is the party's half, :class:`SecAggServer` the aggregator's.
Neither does I/O, touches gRPC or draws its own randomness; the caller moves the
messages, passes ``rand`` (``secrets.token_bytes`` in production) and persists state.

Phases and who learns what:

1. advertise: each party publishes two fresh X25519 keys (c for envelopes, s
   for pairwise masks), signed with its Ed25519 identity. U1 = advertisers.
2. share: every party Shamir-shares its s private key and a fresh self-mask seed
   b among its closed neighbourhood N(u) | {u} and sends one AES-GCM envelope per
   neighbour. U2 = parties whose shares were accepted.
3. mask: y_u = x_u + PRG(b_u) + sum_{v in N(u) & U2, v > u} PRG(s_uv)
   - sum_{v in N(u) & U2, v < u} PRG(s_uv) (mod 2**64), ordered by config index.
   U3 = parties whose y was accepted.
4. consistency: the aggregator announces (U3, U2 \\ U3). Each party checks the
   lists (docs/THREAT_MODEL.md), commits to them and signs consistency_transcript
   with its identity key. U4 = parties whose signature was accepted; at least t.
5. unmask: a party in U4 receives the signatures of U4 and reveals only if at
   least t parties, itself included, signed the very lists it signed. Then for
   survivors U3 holders reveal b-shares, for dropped U2 \\ U3 they reveal
   s-shares. The aggregator removes the masks and learns only sum_{u in U3} x_u.

Why the consistency round (Bonawitz et al. 2017, "ConsistencyCheck"): a party
never reveals both kinds of share for one owner, but that check is local. A
deviating aggregator could tell some holders of v "v survived" (they reveal
b_v shares) and other holders "v dropped" (they reveal s_v shares), and then
unmask y_v alone. Here every party signs exactly one view and reveals only for
a view signed by t parties; since 2t > holders (see SecAggConfig), two disjoint
groups of v's holders cannot both reach t, so b_v and s_v are never both
recoverable.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from blindsum.crypto import envelope, kex, prg, shamir
from blindsum.crypto.encoding import encode_parts, format_dst
from blindsum.crypto.sign import SigningKey, VerifyKey
from blindsum.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    InvalidSignature,
    RoundAborted,
    UnsafeRequest,
)
from blindsum.protocol import graph
from blindsum.types import RandFn, U64Vector

#: Envelope phase string for share envelopes (bound into the AAD).
SHARE_PHASE = "share"
#: Bytes of the self-mask seed b and of the s private key that are Shamir-shared.
SEED_BYTES = 32
#: Largest accepted vector length (2**24 slots = 128 MiB per uint64 vector).
MAX_VECTOR_LENGTH = 1 << 24
#: Longest accepted round id, schema id or party name, in characters.
MAX_NAME_CHARS = 256
#: Format tag of :meth:`SecAggParty.to_state` documents (v2 added the consistency
#: round: U1 verify keys and the signed lists; v1 states are refused).
STATE_FORMAT = "blindsum/secagg-party-state/v2"


# --------------------------------------------------------------------------- config


def _check_name(value: object, field_name: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_NAME_CHARS:
        raise InvalidArgument(
            f"must be a string of 1..{MAX_NAME_CHARS} characters", field=field_name
        )
    return value


def _check_int(value: object, field_name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument("must be an integer", field=field_name)
    if value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise InvalidArgument(f"must be {bound}", field=field_name)
    return value


@dataclass(frozen=True)
class SecAggConfig:
    """Public parameters of one secagg round; every participant must hold the same.

    ``parties`` are the invited parties in index order: the Shamir x of
    ``parties[i]`` is ``i + 1`` and mask signs follow this order.
    ``graph_degree`` 0 means the complete graph. ``threshold`` must be at least 2
    when more than one party is invited (t = 1 would let a single reveal expose a
    secret), more than half of a holder set, and at most the size of a holder set
    (a holder set has k + 1 members for a sparse graph of effective degree k, else
    the number of parties).
    """

    round_id: str
    schema_id: str
    parties: tuple[str, ...]
    threshold: int
    vector_length: int
    graph_degree: int  # 0 = complete

    def __post_init__(self) -> None:
        _check_name(self.round_id, "round_id")
        _check_name(self.schema_id, "schema_id")
        if isinstance(self.parties, str) or not isinstance(self.parties, Sequence):
            raise InvalidArgument("must be a sequence of party names", field="parties")
        parties = tuple(self.parties)
        object.__setattr__(self, "parties", parties)
        if not parties:
            raise InvalidArgument("must not be empty", field="parties")
        if len(parties) > shamir.MAX_X:
            raise InvalidArgument("too many parties", field="parties")
        for p in parties:
            _check_name(p, "parties")
        if len(set(parties)) != len(parties):
            raise InvalidArgument("must be distinct", field="parties")
        _check_int(self.graph_degree, "graph_degree", 0)
        _check_int(self.vector_length, "vector_length", 1, MAX_VECTOR_LENGTH)
        n = len(parties)
        holders = graph.effective_degree(self.graph_degree, n) + 1
        _check_int(self.threshold, "threshold", 1 if n == 1 else 2, holders)
        # Honest-majority bound of the consistency round: each party reveals for
        # one signed view only, so the holders of a secret that reveal b-shares
        # and those that reveal s-shares are disjoint. With 2t > holders two
        # disjoint groups cannot both reach t, so no aggregator can recover both
        # the self mask and the mask key of one party (and so its input).
        if 2 * self.threshold <= holders:
            raise InvalidArgument(
                f"must be more than half of the {holders} share holders", field="threshold"
            )

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {p: i for i, p in enumerate(self.parties)}

    def index(self, party: str) -> int:
        """0-based index of an invited party (InvalidArgument(field="party") otherwise)."""
        try:
            return self._index[party]
        except (KeyError, TypeError):
            raise InvalidArgument("is not invited to this round", field="party") from None

    def x_of(self, party: str) -> int:
        """Shamir x-coordinate of ``party``: its index + 1."""
        return self.index(party) + 1

    def is_invited(self, party: object) -> bool:
        """Whether ``party`` is one of :attr:`parties`."""
        return isinstance(party, str) and party in self._index

    def ordered(self, parties: Sequence[str] | frozenset[str] | set[str]) -> tuple[str, ...]:
        """``parties`` (invited ones only) sorted by config index."""
        return tuple(sorted(parties, key=self.index))


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class Advert:
    """A party's signed phase-1 key advertisement."""

    party: str
    c_public: bytes
    s_public: bytes
    signature: bytes


def advert_transcript(config: SecAggConfig, party: str, c_public: bytes, s_public: bytes) -> bytes:
    """The bytes an advert's Ed25519 signature covers (binds round and schema)."""
    return format_dst("advert", config.round_id, config.schema_id, party, c_public, s_public)


def consistency_transcript(
    config: SecAggConfig, survivors: Sequence[str], dropped: Sequence[str]
) -> bytes:
    """The bytes a consistency signature covers: round, schema and both lists.

    Both lists are put in config order and prefixed with their length, so every
    (survivors, dropped) pair has exactly one encoding. Preconditions: the names
    are invited parties (InvalidArgument(field="party") otherwise).
    """
    surv = config.ordered(list(survivors))
    drop = config.ordered(list(dropped))
    return format_dst(
        "consistency",
        config.round_id,
        config.schema_id,
        len(surv),
        *surv,
        len(drop),
        *drop,
    )


@dataclass(frozen=True)
class SealedShare:
    """An envelope holding the shares of ``sender``'s secrets for ``receiver``.

    The plaintext is ``encode_parts(owner index, holder x, s share, b share)``
    with 66-byte shares, sealed with phase ``"share"``.
    """

    sender: str
    receiver: str
    nonce: bytes
    ciphertext: bytes


class ShareKind(enum.Enum):
    """Which of an owner's two secrets a revealed share belongs to."""

    SELF_MASK = 1  # share of the self-mask seed b: revealed for survivors
    MASK_KEY = 2  # share of the s private key: revealed for dropped parties


@dataclass(frozen=True)
class Reveal:
    """One unmask-phase share: the revealing holder's share of ``owner``'s secret."""

    owner: str
    kind: ShareKind
    share: bytes = field(repr=False)  # 66 bytes, shamir.Share.to_bytes of the holder's x


def _share_plaintext(owner_index: int, holder_x: int, s_share: bytes, b_share: bytes) -> bytes:
    return encode_parts(owner_index, holder_x, s_share, b_share)


def share_ciphertext_length(config: SecAggConfig, sender: str, receiver: str) -> int:
    """Exact ciphertext length of the envelope from ``sender`` to ``receiver``."""
    blank = bytes(shamir.SHARE_BYTES)
    plain = _share_plaintext(config.index(sender), config.x_of(receiver), blank, blank)
    return len(plain) + envelope.TAG_BYTES


def _vector(value: object, length: int, field_name: str) -> U64Vector:
    if not isinstance(value, np.ndarray) or value.dtype != np.uint64 or value.ndim != 1:
        raise InvalidArgument("must be a 1-D numpy uint64 array", field=field_name)
    if value.shape[0] != length:
        raise InvalidArgument(f"must have length {length}", field=field_name)
    vec: U64Vector = value
    return vec


def _vector_digest(vec: U64Vector) -> bytes:
    data = np.ascontiguousarray(vec, dtype="<u8").tobytes()
    return hashlib.sha256(format_dst("secagg/masked") + data).digest()


def _duplicates(items: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    dup: list[str] = []
    for item in items:
        if item in seen and item not in dup:
            dup.append(item)
        seen.add(item)
    return dup


def _names(value: object, field_name: str) -> list[str]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | frozenset | set):
        raise InvalidArgument("must be a sequence of party names", field=field_name)
    out = list(value)
    for item in out:
        if not isinstance(item, str):
            raise InvalidArgument("must contain only party names", field=field_name)
    return out


def _check_advert_fields(advert: Advert) -> None:
    """Type and size checks, so that transcripts are only built from well-formed fields."""
    for name, value, size in (
        ("c_public", advert.c_public, kex.KEY_BYTES),
        ("s_public", advert.s_public, kex.KEY_BYTES),
        ("signature", advert.signature, 64),
    ):
        if not isinstance(value, bytes) or len(value) != size:
            raise InvalidArgument(f"must be {size} bytes", field=f"advert.{name}")


def _closed_neighbourhood(nbrs: frozenset[str], me: str) -> frozenset[str]:
    return nbrs | {me}


# --------------------------------------------------------------------------- party


class PartyStage(enum.Enum):
    NEW = "new"
    ADVERTISED = "advertised"
    SHARED = "shared"
    MASKED = "masked"
    SIGNED = "signed"
    UNMASKED = "unmasked"


_PARTY_ORDER = list(PartyStage)


class SecAggParty:
    """The party's side of one secagg round.

    Calls go advertise -> share -> mask -> sign_consistency -> unmask. Each of
    advertise, share, mask and sign_consistency is idempotent for an identical
    retry (same output) and refuses a different second request. ``unmask`` may be
    called again, but only for the signed lists, and it never reveals both kinds
    of share for one owner, also across :meth:`to_state` / :meth:`from_state`.
    Persist :meth:`to_state` (mode 0600) after every call and before sending its
    result.
    """

    def __init__(self, config: SecAggConfig, me: str, identity: SigningKey, rand: RandFn) -> None:
        if not isinstance(config, SecAggConfig):
            raise InvalidArgument("must be a SecAggConfig", field="config")
        if not config.is_invited(me):
            raise InvalidArgument("is not invited to this round", field="me")
        if not isinstance(identity, SigningKey):
            raise InvalidArgument("must be a SigningKey", field="identity")
        self._config = config
        self._me = me
        self._identity = identity
        self._rand = rand
        self._stage = PartyStage.NEW
        self._c: kex.KeyPair | None = None
        self._s: kex.KeyPair | None = None
        self._advert: Advert | None = None
        self._b_seed: bytes | None = None
        self._adverts: dict[str, Advert] = {}
        self._verify_keys: dict[str, VerifyKey] = {}  # U1 identity keys, from share()
        self._roster_digest: bytes | None = None
        self._neighbours: frozenset[str] = frozenset()
        self._sent: tuple[SealedShare, ...] = ()
        self._received: dict[str, tuple[bytes, bytes]] = {}  # owner -> (s share, b share)
        self._u2: tuple[str, ...] = ()
        self._y_digest: bytes | None = None
        self._signed: tuple[tuple[str, ...], tuple[str, ...]] | None = None
        self._consistency_sig: bytes | None = None
        self._revealed: set[tuple[str, ShareKind]] = set()

    def __repr__(self) -> str:
        cfg, stage = self._config, self._stage.name
        return f"SecAggParty(round={cfg.round_id!r}, me={self._me!r}, stage={stage})"

    # -- introspection

    @property
    def config(self) -> SecAggConfig:
        return self._config

    @property
    def me(self) -> str:
        return self._me

    @property
    def stage(self) -> PartyStage:
        return self._stage

    @property
    def u1(self) -> tuple[str, ...]:
        """The advertised parties this party accepted in :meth:`share` (empty before)."""
        return self._config.ordered(set(self._adverts))

    @property
    def u2(self) -> tuple[str, ...]:
        """The U2 this party masked against (empty before :meth:`mask`)."""
        return self._u2

    @property
    def neighbours(self) -> frozenset[str]:
        """This party's neighbours in the round graph (empty before :meth:`share`)."""
        return self._neighbours

    @property
    def signed_lists(self) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        """The (survivors, dropped) lists signed in :meth:`sign_consistency` (None before)."""
        return self._signed

    @property
    def revealed(self) -> frozenset[tuple[str, ShareKind]]:
        """Every (owner, kind) this party has revealed a share of."""
        return frozenset(self._revealed)

    def _at_least(self, stage: PartyStage, action: str) -> None:
        if _PARTY_ORDER.index(self._stage) < _PARTY_ORDER.index(stage):
            raise FailedPrecondition(f"cannot {action} in stage {self._stage.value}", field="stage")

    # -- phase 1

    def advertise(self) -> Advert:
        """Generate fresh c and s key pairs and return the signed advert (same advert on retry)."""
        if self._advert is not None:
            return self._advert
        c = kex.KeyPair.generate(self._rand)
        s = kex.KeyPair.generate(self._rand)
        if c.public == s.public:
            raise InvalidArgument("returned repeating output", field="rand")
        transcript = advert_transcript(self._config, self._me, c.public, s.public)
        self._c, self._s = c, s
        self._advert = Advert(
            party=self._me,
            c_public=c.public,
            s_public=s.public,
            signature=self._identity.sign(transcript),
        )
        self._stage = PartyStage.ADVERTISED
        return self._advert

    # -- phase 2

    def _check_roster(
        self, adverts: Mapping[str, Advert], verify_keys: Mapping[str, VerifyKey]
    ) -> dict[str, Advert]:
        if not isinstance(adverts, Mapping):
            raise InvalidArgument("must be a mapping of party to advert", field="adverts")
        roster: dict[str, Advert] = {}
        seen_keys: set[bytes] = set()
        for party, advert in adverts.items():
            if not isinstance(advert, Advert) or advert.party != party:
                raise InvalidArgument("entry does not match its party", field="adverts")
            if not self._config.is_invited(party):
                raise UnsafeRequest(f"party {party!r} is not invited", field="adverts")
            _check_advert_fields(advert)
            vk = verify_keys.get(party)
            if not isinstance(vk, VerifyKey):
                raise InvalidArgument(f"no verify key for {party!r}", field="verify_keys")
            vk.verify(
                advert.signature,
                advert_transcript(self._config, party, advert.c_public, advert.s_public),
            )
            for key in (advert.c_public, advert.s_public):
                # Small-order checks wait for share(): only neighbours' keys are ever used.
                if key in seen_keys:
                    raise UnsafeRequest("two adverts share a public key", field="adverts")
                seen_keys.add(key)
            roster[party] = advert
        if roster.get(self._me) != self._advert:
            raise UnsafeRequest("our own advert is missing or altered", field="adverts")
        if len(roster) < self._config.threshold:
            raise RoundAborted(
                f"only {len(roster)} parties advertised, threshold is {self._config.threshold}",
                field="u1",
            )
        return roster

    @staticmethod
    def _roster_hash(roster: Mapping[str, Advert]) -> bytes:
        h = hashlib.sha256(format_dst("secagg/roster"))
        for p in sorted(roster):
            a = roster[p]
            h.update(encode_parts(p, a.c_public, a.s_public, a.signature))
        return h.digest()

    def share(
        self, adverts: Mapping[str, Advert], verify_keys: Mapping[str, VerifyKey]
    ) -> list[SealedShare]:
        """Verify the U1 roster and return one share envelope per neighbour.

        ``adverts`` is U1 as published by the aggregator; ``verify_keys`` maps each
        party to its enrolled identity key. Raises InvalidSignature for a bad
        advert, UnsafeRequest for uninvited parties, reused keys or an altered own
        advert, RoundAborted when |U1| < t. A retry with the same roster returns
        the same envelopes; a different roster is refused.
        """
        self._at_least(PartyStage.ADVERTISED, "share")
        roster = self._check_roster(adverts, verify_keys)
        digest = self._roster_hash(roster)
        if self._roster_digest is not None:
            if not hmac.compare_digest(digest, self._roster_digest):
                raise UnsafeRequest("already shared for a different roster", field="adverts")
            return list(self._sent)
        c, s = self._keys()
        cfg = self._config
        u1 = cfg.ordered(set(roster))
        seed = graph.graph_seed({p: (roster[p].c_public, roster[p].s_public) for p in u1})
        nbrs = graph.neighbours(u1, cfg.graph_degree, seed)[self._me]
        # Every advert's signature is checked (the graph seed hashes all of them), but
        # only a neighbour's keys enter a key agreement, so only those are probed for small
        # order: O(degree) instead of O(n) X25519 operations per party.
        for p in cfg.ordered(nbrs):
            kex.validate_public(roster[p].c_public)
            kex.validate_public(roster[p].s_public)
        holders = cfg.ordered(_closed_neighbourhood(nbrs, self._me))
        if len(holders) < cfg.threshold:
            raise RoundAborted(
                f"only {len(holders)} share holders, threshold is {cfg.threshold}", field="u1"
            )
        b_seed = self._rand(SEED_BYTES)
        if len(b_seed) != SEED_BYTES:
            raise InvalidArgument("returned the wrong number of bytes", field="rand")
        xs = [cfg.x_of(h) for h in holders]
        s_shares = shamir.split(s.private, threshold=cfg.threshold, xs=xs, rand=self._rand)
        b_shares = shamir.split(b_seed, threshold=cfg.threshold, xs=xs, rand=self._rand)
        my_index = cfg.index(self._me)
        sent: list[SealedShare] = []
        received: dict[str, tuple[bytes, bytes]] = {}
        for holder in holders:
            x = cfg.x_of(holder)
            s_bytes, b_bytes = s_shares[x].to_bytes(), b_shares[x].to_bytes()
            if holder == self._me:
                received[holder] = (s_bytes, b_bytes)
                continue
            nonce, ct = envelope.seal_share(
                own_private=c.private,
                peer_public=roster[holder].c_public,
                round_id=cfg.round_id,
                sender=self._me,
                receiver=holder,
                phase=SHARE_PHASE,
                plaintext=_share_plaintext(my_index, x, s_bytes, b_bytes),
                rand=self._rand,
            )
            sent.append(SealedShare(sender=self._me, receiver=holder, nonce=nonce, ciphertext=ct))
        self._adverts = dict(roster)
        self._verify_keys = {p: verify_keys[p] for p in roster}
        self._roster_digest = digest
        self._neighbours = nbrs
        self._b_seed = b_seed
        self._received = received
        self._sent = tuple(sent)
        self._stage = PartyStage.SHARED
        return list(self._sent)

    def _keys(self) -> tuple[kex.KeyPair, kex.KeyPair]:
        if self._c is None or self._s is None:
            raise FailedPrecondition("no keys: advertise first", field="stage")
        return self._c, self._s

    # -- phase 3

    def _open_envelopes(
        self, envelopes: Sequence[SealedShare], expected: frozenset[str]
    ) -> dict[str, tuple[bytes, bytes]]:
        cfg = self._config
        c, _ = self._keys()
        my_x = cfg.x_of(self._me)
        got: dict[str, tuple[bytes, bytes]] = {}
        for env in envelopes:
            if not isinstance(env, SealedShare):
                raise InvalidArgument("must contain SealedShare objects", field="envelopes")
            if env.receiver != self._me:
                raise InvalidArgument("envelope addressed to another party", field="envelopes")
            if env.sender not in expected:
                raise InvalidArgument(
                    f"envelope from {env.sender!r}, not a neighbour in U2", field="envelopes"
                )
            if env.sender in got:
                raise InvalidArgument(f"two envelopes from {env.sender!r}", field="envelopes")
            plain = envelope.open_share(
                own_private=c.private,
                peer_public=self._adverts[env.sender].c_public,
                round_id=cfg.round_id,
                sender=env.sender,
                receiver=self._me,
                phase=SHARE_PHASE,
                nonce=env.nonce,
                ciphertext=env.ciphertext,
            )
            s_bytes, b_bytes = _parse_share_plaintext(plain, cfg.index(env.sender), my_x)
            got[env.sender] = (s_bytes, b_bytes)
        missing = expected - set(got)
        if missing:
            raise UnsafeRequest(
                f"U2 lists neighbours without envelopes: {sorted(missing)}", field="envelopes"
            )
        return got

    def _masked_vector(self, x: U64Vector, u2: frozenset[str]) -> U64Vector:
        cfg = self._config
        _, s = self._keys()
        if self._b_seed is None:
            raise FailedPrecondition("no self-mask seed: share first", field="stage")
        n = cfg.vector_length
        y = x.copy()
        y += prg.self_mask(self._b_seed, round_id=cfg.round_id, party=self._me, length=n)
        my_index = cfg.index(self._me)
        for v in cfg.ordered(self._neighbours & u2):
            shared = kex.agree(s.private, self._adverts[v].s_public)
            pm = prg.pair_mask(shared, round_id=cfg.round_id, a=self._me, b=v, length=n)
            if cfg.index(v) > my_index:
                y += pm
            else:
                y -= pm
        return y

    def mask(self, envelopes: Sequence[SealedShare], u2: Sequence[str], x: U64Vector) -> U64Vector:
        """Open the neighbours' envelopes and return the masked input y.

        ``u2`` is the aggregator's U2; ``envelopes`` must hold exactly one
        envelope from every neighbour in U2, addressed to us. ``x`` is a uint64
        vector of the config's length. Raises UnsafeRequest when U2 is not a
        subset of U1, omits us, is smaller than t, or lists neighbours without
        envelopes; InvalidTag for a bad envelope. A retry with the same inputs
        returns the same y; a different x or U2 is refused.
        """
        self._at_least(PartyStage.SHARED, "mask")
        cfg = self._config
        vec = _vector(x, cfg.vector_length, "x")
        names = _names(u2, "u2")
        dup = _duplicates(names)
        if dup:
            raise InvalidArgument(f"duplicate parties {dup}", field="u2")
        u2_set = frozenset(names)
        unknown = u2_set - set(self._adverts)
        if unknown:
            raise UnsafeRequest(f"parties not in U1: {sorted(unknown)}", field="u2")
        if self._me not in u2_set:
            raise UnsafeRequest("U2 does not contain this party", field="u2")
        if len(u2_set) < cfg.threshold:
            raise UnsafeRequest(
                f"U2 has {len(u2_set)} parties, threshold is {cfg.threshold}", field="u2"
            )
        u2_ordered = cfg.ordered(u2_set)
        if self._stage is not PartyStage.SHARED and u2_ordered != self._u2:
            raise UnsafeRequest("already masked for a different U2", field="u2")
        opened = self._open_envelopes(envelopes, self._neighbours & u2_set)
        y = self._masked_vector(vec, u2_set)
        digest = _vector_digest(y)
        if self._stage is not PartyStage.SHARED:
            if self._y_digest is None or not hmac.compare_digest(digest, self._y_digest):
                raise UnsafeRequest("already masked a different input", field="x")
            for owner, pair in opened.items():
                if self._received.get(owner) != pair:
                    raise UnsafeRequest(
                        "envelopes differ from the first attempt", field="envelopes"
                    )
            return y
        self._received.update(opened)
        self._u2 = u2_ordered
        self._y_digest = digest
        self._stage = PartyStage.MASKED
        return y

    # -- phases 4 (consistency) and 5 (unmask)

    def _check_lists(
        self, survivors: Sequence[str], dropped: Sequence[str]
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The checks of docs/THREAT_MODEL.md on an announced (U3, U2 \\ U3), in config order."""
        cfg = self._config
        surv = _names(survivors, "survivors")
        drop = _names(dropped, "dropped")
        for label, names in (("survivors", surv), ("dropped", drop)):
            dup = _duplicates(names)
            if dup:
                raise UnsafeRequest(f"duplicate parties {dup}", field=label)
        surv_set, drop_set = frozenset(surv), frozenset(drop)
        both = surv_set & drop_set
        if both:
            raise UnsafeRequest(f"parties listed both as survivor and dropped: {sorted(both)}")
        if self._me in drop_set:
            raise UnsafeRequest("this party is listed as dropped", field="dropped")
        if self._me not in surv_set:
            raise UnsafeRequest("this party is not listed as a survivor", field="survivors")
        known = frozenset(self._u2)
        unknown = (surv_set | drop_set) - known
        if unknown:
            raise UnsafeRequest(f"parties not in U2: {sorted(unknown)}")
        if (surv_set | drop_set) != known:
            raise UnsafeRequest(f"U2 parties not listed: {sorted(known - surv_set - drop_set)}")
        if len(surv_set) < cfg.threshold:
            raise UnsafeRequest(
                f"{len(surv_set)} survivors, threshold is {cfg.threshold}", field="survivors"
            )
        return cfg.ordered(surv_set), cfg.ordered(drop_set)

    def sign_consistency(self, survivors: Sequence[str], dropped: Sequence[str]) -> bytes:
        """Check the aggregator's (U3, U2 \\ U3), commit to it and return our signature.

        Precondition: :meth:`mask` succeeded. Raises UnsafeRequest, naming the
        problem, when a party is listed twice or in both lists, this party is
        dropped or not a survivor, a party is not in the U2 seen in :meth:`mask`,
        the lists do not cover that U2, or there are fewer than t survivors. The
        lists are recorded (persist :meth:`to_state` before sending the
        signature); a retry with the same lists, in any order, returns the same
        signature, and different lists are refused with UnsafeRequest.
        """
        self._at_least(PartyStage.MASKED, "sign the consistency check")
        lists = self._check_lists(survivors, dropped)
        if self._signed is not None:
            if lists != self._signed or self._consistency_sig is None:
                raise UnsafeRequest("already signed different survivor lists", field="survivors")
            return self._consistency_sig
        signature = self._identity.sign(consistency_transcript(self._config, *lists))
        self._signed = lists
        self._consistency_sig = signature
        self._stage = PartyStage.SIGNED
        return signature

    def _check_signatures(
        self, lists: tuple[tuple[str, ...], tuple[str, ...]], signatures: Mapping[str, bytes]
    ) -> None:
        if not isinstance(signatures, Mapping):
            raise InvalidArgument("must be a mapping of party to signature", field="signatures")
        survivors = frozenset(lists[0])
        transcript = consistency_transcript(self._config, *lists)
        for signer in signatures:
            if not isinstance(signer, str) or signer not in survivors:
                raise UnsafeRequest(f"signer {signer!r} is not a survivor", field="signatures")
        if self._me not in signatures:
            raise UnsafeRequest("our own consistency signature is missing", field="signatures")
        t = self._config.threshold
        if len(signatures) < t:
            raise UnsafeRequest(
                f"{len(signatures)} consistency signatures, threshold is {t}",
                field="signatures",
            )
        # t valid signatures on our lists are what the check needs (and 2t > holders is
        # what stops a split view); verifying every signer would cost O(n) per party.
        # Our own first, then in roster order, so the choice is deterministic.
        order = [self._me, *(p for p in self._config.ordered(set(signatures)) if p != self._me)]
        for signer in order[:t]:
            try:
                self._verify_keys[signer].verify(signatures[signer], transcript)
            except InvalidSignature:
                raise UnsafeRequest(
                    f"consistency signature of {signer!r} does not verify over our lists",
                    field="signatures",
                ) from None

    def unmask(
        self, survivors: Sequence[str], dropped: Sequence[str], signatures: Mapping[str, bytes]
    ) -> list[Reveal]:
        """Reveal b-shares of surviving and s-shares of dropped neighbours (incl. self).

        Precondition: :meth:`sign_consistency` succeeded. ``survivors`` and
        ``dropped`` must be the lists signed there (else UnsafeRequest).
        ``signatures`` maps signer -> consistency signature (the aggregator's
        U4): every signer must be a survivor and its signature must verify with
        its U1 identity key over our lists, ours must be among them, and there
        must be at least t. Raises UnsafeRequest, naming the problem, otherwise,
        or when any owner's other kind of share was revealed before (also before
        a restart). Nothing is revealed on refusal; a retry returns the same
        shares.
        """
        self._at_least(PartyStage.MASKED, "unmask")
        if self._signed is None:
            raise FailedPrecondition("sign the consistency check first", field="stage")
        lists = self._check_lists(survivors, dropped)
        if lists != self._signed:
            raise UnsafeRequest(
                "survivor lists differ from the ones this party signed", field="survivors"
            )
        self._check_signatures(lists, signatures)
        surv_set, drop_set = frozenset(lists[0]), frozenset(lists[1])
        plan: list[Reveal] = []
        for owner in self._config.ordered(set(self._received)):
            s_share, b_share = self._received[owner]
            if owner in surv_set:
                plan.append(Reveal(owner=owner, kind=ShareKind.SELF_MASK, share=b_share))
            elif owner in drop_set:
                plan.append(Reveal(owner=owner, kind=ShareKind.MASK_KEY, share=s_share))
        for r in plan:
            other = ShareKind.MASK_KEY if r.kind is ShareKind.SELF_MASK else ShareKind.SELF_MASK
            if (r.owner, other) in self._revealed:
                raise UnsafeRequest(
                    f"would reveal both kinds of share for {r.owner!r}", field="unmask"
                )
        self._revealed.update((r.owner, r.kind) for r in plan)
        self._stage = PartyStage.UNMASKED
        return plan

    # -- persistence

    def to_state(self) -> bytes:
        """Serialize everything needed to resume, as JSON (hex for bytes).

        Contains private keys and shares: store it in a 0600 file.
        """
        cfg = self._config

        def hx(b: bytes | None) -> str | None:
            return None if b is None else b.hex()

        doc: dict[str, Any] = {
            "format": STATE_FORMAT,
            "config": {
                "round_id": cfg.round_id,
                "schema_id": cfg.schema_id,
                "parties": list(cfg.parties),
                "threshold": cfg.threshold,
                "vector_length": cfg.vector_length,
                "graph_degree": cfg.graph_degree,
            },
            "me": self._me,
            "identity": self._identity.public_bytes.hex(),
            "stage": self._stage.value,
            "c_private": hx(self._c.private if self._c else None),
            "s_private": hx(self._s.private if self._s else None),
            "advert_signature": hx(self._advert.signature if self._advert else None),
            "b_seed": hx(self._b_seed),
            "adverts": {
                p: {"c": a.c_public.hex(), "s": a.s_public.hex(), "sig": a.signature.hex()}
                for p, a in self._adverts.items()
            },
            "sent": [
                {"receiver": e.receiver, "nonce": e.nonce.hex(), "ciphertext": e.ciphertext.hex()}
                for e in self._sent
            ],
            "received": {o: {"s": s.hex(), "b": b.hex()} for o, (s, b) in self._received.items()},
            "u2": list(self._u2),
            "y_digest": hx(self._y_digest),
            "verify_keys": {p: k.raw.hex() for p, k in self._verify_keys.items()},
            "consistency": None
            if self._signed is None
            else {
                "survivors": list(self._signed[0]),
                "dropped": list(self._signed[1]),
                "signature": hx(self._consistency_sig),
            },
            "revealed": sorted([o, k.name] for o, k in self._revealed),
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_state(cls, data: bytes, identity: SigningKey, rand: RandFn) -> SecAggParty:
        """Restore a party saved by :meth:`to_state`; else InvalidArgument(field="state")."""
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
                raise InvalidArgument("unknown format", field="state")
            return cls._restore(doc, identity, rand)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise InvalidArgument("is malformed", field="state") from None

    @classmethod
    def _restore(cls, doc: dict[str, Any], identity: SigningKey, rand: RandFn) -> SecAggParty:
        def bad(what: str) -> InvalidArgument:
            return InvalidArgument(what, field="state")

        def unhex(value: object, size: int | None = None) -> bytes:
            if not isinstance(value, str):
                raise bad("expected a hex string")
            raw = bytes.fromhex(value)
            if size is not None and len(raw) != size:
                raise bad("wrong field length")
            return raw

        c = doc["config"]
        config = SecAggConfig(
            round_id=c["round_id"],
            schema_id=c["schema_id"],
            parties=tuple(c["parties"]),
            threshold=c["threshold"],
            vector_length=c["vector_length"],
            graph_degree=c["graph_degree"],
        )
        party = cls(config, doc["me"], identity, rand)
        if unhex(doc["identity"]) != identity.public_bytes:
            raise bad("belongs to another identity")
        stage = PartyStage(doc["stage"])
        order = _PARTY_ORDER.index(stage)
        if order >= _PARTY_ORDER.index(PartyStage.ADVERTISED):
            party._c = kex.KeyPair.from_private(unhex(doc["c_private"], kex.KEY_BYTES))
            party._s = kex.KeyPair.from_private(unhex(doc["s_private"], kex.KEY_BYTES))
            party._advert = Advert(
                party=party._me,
                c_public=party._c.public,
                s_public=party._s.public,
                signature=unhex(doc["advert_signature"]),
            )
            identity.verify_key.verify(
                party._advert.signature,
                advert_transcript(config, party._me, party._c.public, party._s.public),
            )
        if order >= _PARTY_ORDER.index(PartyStage.SHARED):
            party._b_seed = unhex(doc["b_seed"], SEED_BYTES)
            adverts: dict[str, Advert] = {}
            for p, a in dict(doc["adverts"]).items():
                if not config.is_invited(p):
                    raise bad("advert of an uninvited party")
                adverts[p] = Advert(
                    party=p,
                    c_public=unhex(a["c"]),
                    s_public=unhex(a["s"]),
                    signature=unhex(a["sig"]),
                )
            if adverts.get(party._me) != party._advert:
                raise bad("own advert does not match the keys")
            party._adverts = adverts
            party._roster_digest = cls._roster_hash(adverts)
            vks = dict(doc["verify_keys"])
            if set(vks) != set(adverts):
                raise bad("verify keys do not match the roster")
            try:
                party._verify_keys = {
                    p: VerifyKey.from_bytes(unhex(vks[p], 32)) for p in config.ordered(set(vks))
                }
            except InvalidArgument as exc:
                if exc.field == "state":
                    raise
                raise bad("malformed verify key") from None
            if party._verify_keys[party._me] != identity.verify_key:
                raise bad("own verify key does not match the identity")
            u1 = config.ordered(set(adverts))
            seed = graph.graph_seed({p: (adverts[p].c_public, adverts[p].s_public) for p in u1})
            party._neighbours = graph.neighbours(u1, config.graph_degree, seed)[party._me]
            party._sent = tuple(
                SealedShare(
                    sender=party._me,
                    receiver=str(e["receiver"]),
                    nonce=unhex(e["nonce"], envelope.NONCE_BYTES),
                    ciphertext=unhex(e["ciphertext"]),
                )
                for e in doc["sent"]
            )
            if {e.receiver for e in party._sent} != set(party._neighbours):
                raise bad("sent envelopes do not match the neighbours")
            closed = _closed_neighbourhood(party._neighbours, party._me)
            received: dict[str, tuple[bytes, bytes]] = {}
            for owner, pair in dict(doc["received"]).items():
                if owner not in closed:
                    raise bad("share from a non-neighbour")
                received[owner] = (
                    unhex(pair["s"], shamir.SHARE_BYTES),
                    unhex(pair["b"], shamir.SHARE_BYTES),
                )
            if party._me not in received:
                raise bad("own share missing")
            party._received = received
        if order >= _PARTY_ORDER.index(PartyStage.MASKED):
            u2 = [str(p) for p in doc["u2"]]
            if party._me not in u2 or not set(u2) <= set(party._adverts):
                raise bad("inconsistent U2")
            party._u2 = config.ordered(set(u2))
            party._y_digest = unhex(doc["y_digest"], 32)
        consistency = doc["consistency"]
        if order >= _PARTY_ORDER.index(PartyStage.SIGNED):
            if not isinstance(consistency, dict):
                raise bad("signed lists missing")
            try:
                lists = party._check_lists(
                    [str(p) for p in consistency["survivors"]],
                    [str(p) for p in consistency["dropped"]],
                )
                signature = unhex(consistency["signature"], 64)
                identity.verify_key.verify(signature, consistency_transcript(config, *lists))
            except (UnsafeRequest, InvalidSignature):
                raise bad("signed lists are inconsistent") from None
            party._signed = lists
            party._consistency_sig = signature
        elif consistency is not None:
            raise bad("signed lists recorded before the consistency stage")
        revealed: set[tuple[str, ShareKind]] = set()
        for owner, kind in doc["revealed"]:
            if not config.is_invited(owner):
                raise bad("reveal of an uninvited party")
            revealed.add((str(owner), ShareKind[kind]))
        if revealed and stage is not PartyStage.UNMASKED:
            raise bad("reveals recorded before the unmask stage")
        party._revealed = revealed
        party._stage = stage
        return party


def _parse_share_plaintext(plain: bytes, owner_index: int, holder_x: int) -> tuple[bytes, bytes]:
    """Check an opened envelope's owner index and holder x; return the (s, b) share bytes."""
    blank = bytes(shamir.SHARE_BYTES)
    template = _share_plaintext(owner_index, holder_x, blank, blank)
    # The last two parts are fixed-size byte parts, so the header before each share
    # is known exactly; compare everything except the two share payloads.
    if len(plain) != len(template):
        raise InvalidArgument("envelope plaintext has the wrong length", field="envelopes")
    size = shamir.SHARE_BYTES
    b_start = len(template) - size
    s_start = b_start - 5 - size  # u32 length + type tag precede every part
    masked_plain = plain[:s_start] + blank + plain[s_start + size : b_start] + blank
    if not hmac.compare_digest(masked_plain, template):
        raise InvalidArgument("envelope owner or holder does not match", field="envelopes")
    s_bytes, b_bytes = plain[s_start : s_start + size], plain[b_start:]
    shamir.Share.from_bytes(holder_x, s_bytes)
    shamir.Share.from_bytes(holder_x, b_bytes)
    return s_bytes, b_bytes


# --------------------------------------------------------------------------- server


class ServerStage(enum.Enum):
    ADVERTISE = "advertise"
    SHARE = "share"
    MASK = "mask"
    CONSISTENCY = "consistency"
    UNMASK = "unmask"
    FINISHED = "finished"
    ABORTED = "aborted"


class SecAggServer:
    """The aggregator's pure half of one secagg round.

    Feed it the messages it receives; it validates them and keeps only what is
    needed (the masked vectors are summed on arrival, never stored). The
    service persists the inputs and can rebuild an instance after a restart by
    replaying them in this order: adverts, close_advertise, shares,
    close_share, :meth:`restore_masked` (the running sum), close_mask,
    consistency signatures, close_consistency, reveals.
    """

    def __init__(self, config: SecAggConfig) -> None:
        if not isinstance(config, SecAggConfig):
            raise InvalidArgument("must be a SecAggConfig", field="config")
        self._config = config
        self._stage = ServerStage.ADVERTISE
        self._abort_reason: str | None = None
        self._adverts: dict[str, Advert] = {}
        self._used_keys: set[bytes] = set()
        self._u1: tuple[str, ...] = ()
        self._graph: dict[str, frozenset[str]] = {}
        self._shares: dict[str, tuple[SealedShare, ...]] = {}
        self._u2: tuple[str, ...] = ()
        self._inbox: dict[str, tuple[SealedShare, ...]] = {}
        self._sum: U64Vector = np.zeros(config.vector_length, dtype=np.uint64)
        self._masked: dict[str, bytes | None] = {}
        self._u3: tuple[str, ...] = ()
        self._dropped: tuple[str, ...] = ()
        self._transcript: bytes | None = None
        self._consistency: dict[str, bytes] = {}
        self._signers: tuple[str, ...] = ()
        self._reveals: dict[str, tuple[Reveal, ...]] = {}
        self._result: U64Vector | None = None

    def __repr__(self) -> str:
        return f"SecAggServer(round={self._config.round_id!r}, stage={self._stage.name})"

    # -- introspection

    @property
    def config(self) -> SecAggConfig:
        return self._config

    @property
    def stage(self) -> ServerStage:
        return self._stage

    @property
    def abort_reason(self) -> str | None:
        return self._abort_reason

    @property
    def u1(self) -> tuple[str, ...]:
        """Advertised parties in config order (final after :meth:`close_advertise`)."""
        return self._u1 if self._u1 else self._config.ordered(set(self._adverts))

    @property
    def u2(self) -> tuple[str, ...]:
        """Parties whose shares were accepted (empty before :meth:`close_share`)."""
        return self._u2

    @property
    def u3(self) -> tuple[str, ...]:
        """Parties whose masked input was accepted (empty before :meth:`close_mask`)."""
        return self._u3

    @property
    def dropped(self) -> tuple[str, ...]:
        """U2 minus U3 (empty before :meth:`close_mask`)."""
        return self._dropped

    @property
    def consistency_signers(self) -> tuple[str, ...]:
        """Parties whose consistency signature was accepted, in config order (U4 once closed)."""
        if self._signers:
            return self._signers
        return self._config.ordered(set(self._consistency))

    def consistency_signatures(self) -> dict[str, bytes]:
        """The accepted consistency signatures, signer -> signature, in config order.

        Send these with the unmask request; each party checks them.
        """
        return {p: self._consistency[p] for p in self.consistency_signers}

    @property
    def masked_parties(self) -> tuple[str, ...]:
        """Parties whose masked vector is in the running sum so far."""
        return self._config.ordered(set(self._masked))

    @property
    def running_sum(self) -> U64Vector:
        """A copy of the running sum of masked vectors (persist it for restarts)."""
        return self._sum.copy()

    def _require(self, stage: ServerStage, action: str) -> None:
        if self._stage is ServerStage.ABORTED:
            raise RoundAborted(f"round aborted: {self._abort_reason}", field="round")
        if self._stage is not stage:
            raise FailedPrecondition(f"cannot {action} in stage {self._stage.value}", field="stage")

    def abort(self, reason: str) -> None:
        """Abort the round (e.g. at a deadline). Later calls raise RoundAborted."""
        if self._stage is not ServerStage.FINISHED:
            self._stage = ServerStage.ABORTED
            self._abort_reason = reason

    def _fail(self, reason: str, field_name: str) -> RoundAborted:
        self.abort(reason)
        return RoundAborted(reason, field=field_name)

    # -- phase 1

    def add_advert(self, advert: Advert, verify_key: VerifyKey) -> None:
        """Accept a party's advert; identical re-adds are no-ops.

        Raises InvalidArgument (uninvited party, bad or reused key),
        InvalidSignature, or AlreadyExists for a different second advert.
        """
        self._require(ServerStage.ADVERTISE, "add an advert")
        if not isinstance(advert, Advert):
            raise InvalidArgument("must be an Advert", field="advert")
        if not isinstance(verify_key, VerifyKey):
            raise InvalidArgument("must be a VerifyKey", field="verify_key")
        if not self._config.is_invited(advert.party):
            raise InvalidArgument("is not invited to this round", field="party")
        _check_advert_fields(advert)
        existing = self._adverts.get(advert.party)
        if existing is not None:
            if existing == advert:
                return
            raise AlreadyExists("party already advertised different keys", field="advert")
        verify_key.verify(
            advert.signature,
            advert_transcript(self._config, advert.party, advert.c_public, advert.s_public),
        )
        kex.validate_public(advert.c_public)
        kex.validate_public(advert.s_public)
        keys = {advert.c_public, advert.s_public}
        if len(keys) != 2 or keys & self._used_keys:
            raise InvalidArgument("reuses a public key", field="advert")
        self._used_keys |= keys
        self._adverts[advert.party] = advert

    def roster(self) -> dict[str, Advert]:
        """The accepted adverts in config order (U1 once closed)."""
        return {p: self._adverts[p] for p in self.u1}

    def close_advertise(self) -> None:
        """Fix U1 and the neighbour graph; RoundAborted if |U1| < t."""
        self._require(ServerStage.ADVERTISE, "close advertise")
        u1 = self._config.ordered(set(self._adverts))
        if len(u1) < self._config.threshold:
            raise self._fail(
                f"only {len(u1)} parties advertised, threshold is {self._config.threshold}", "u1"
            )
        seed = graph.graph_seed(
            {p: (self._adverts[p].c_public, self._adverts[p].s_public) for p in u1}
        )
        self._u1 = u1
        self._graph = graph.neighbours(u1, self._config.graph_degree, seed)
        self._stage = ServerStage.SHARE

    def neighbours(self) -> dict[str, frozenset[str]]:
        """The neighbour graph over U1 (after :meth:`close_advertise`)."""
        if not self._u1:
            raise FailedPrecondition("advertise phase is not closed", field="stage")
        return dict(self._graph)

    # -- phase 2

    def add_shares(self, sender: str, shares: Sequence[SealedShare]) -> None:
        """Accept ``sender``'s envelopes: exactly one per neighbour, well-formed sizes.

        Identical re-adds are no-ops; a different second set raises AlreadyExists.
        """
        self._require(ServerStage.SHARE, "add shares")
        cfg = self._config
        if not isinstance(sender, str) or sender not in self._graph:
            raise InvalidArgument("did not advertise in this round", field="sender")
        items = list(shares)
        nbrs = self._graph[sender]
        receivers: list[str] = []
        for env in items:
            if not isinstance(env, SealedShare):
                raise InvalidArgument("must contain SealedShare objects", field="shares")
            if env.sender != sender:
                raise InvalidArgument("share sender is not the caller", field="shares.sender")
            if env.receiver not in nbrs:
                raise InvalidArgument(
                    f"{env.receiver!r} is not a neighbour of the sender", field="shares.receiver"
                )
            if not isinstance(env.nonce, bytes) or len(env.nonce) != envelope.NONCE_BYTES:
                raise InvalidArgument(f"must be {envelope.NONCE_BYTES} bytes", field="shares.nonce")
            expected = share_ciphertext_length(cfg, sender, env.receiver)
            if not isinstance(env.ciphertext, bytes) or len(env.ciphertext) != expected:
                raise InvalidArgument(f"must be {expected} bytes", field="shares.ciphertext")
            receivers.append(env.receiver)
        dup = _duplicates(receivers)
        if dup:
            raise InvalidArgument(f"more than one share for {dup}", field="shares.receiver")
        missing = nbrs - set(receivers)
        if missing:
            raise InvalidArgument(f"no share for {sorted(missing)}", field="shares.receiver")
        ordered = tuple(sorted(items, key=lambda e: cfg.index(e.receiver)))
        existing = self._shares.get(sender)
        if existing is not None:
            if existing == ordered:
                return
            raise AlreadyExists("party already sent different shares", field="shares")
        self._shares[sender] = ordered

    def close_share(self) -> None:
        """Fix U2 and route the envelopes; RoundAborted if |U2| < t or a party's
        holders in U2 are fewer than t."""
        self._require(ServerStage.SHARE, "close share")
        cfg = self._config
        u2 = cfg.ordered(set(self._shares))
        if len(u2) < cfg.threshold:
            raise self._fail(
                f"only {len(u2)} parties sent shares, threshold is {cfg.threshold}", "u2"
            )
        u2_set = frozenset(u2)
        for u in u2:
            holders = _closed_neighbourhood(self._graph[u], u) & u2_set
            if len(holders) < cfg.threshold:
                raise self._fail(f"party {u!r} has only {len(holders)} share holders left", "u2")
        inbox: dict[str, list[SealedShare]] = {p: [] for p in u2}
        for sender in u2:
            for env in self._shares[sender]:
                if env.receiver in u2_set:
                    inbox[env.receiver].append(env)
        self._u2 = u2
        self._inbox = {p: tuple(v) for p, v in inbox.items()}
        self._stage = ServerStage.MASK

    def shares_for(self, receiver: str) -> list[SealedShare]:
        """The envelopes addressed to ``receiver`` (a member of U2) from senders in U2."""
        if not self._u2:
            raise FailedPrecondition("share phase is not closed", field="stage")
        if receiver not in self._inbox:
            raise InvalidArgument("is not in U2", field="receiver")
        return list(self._inbox[receiver])

    # -- phase 3

    def add_masked(self, party: str, y: U64Vector) -> None:
        """Add ``party``'s masked vector to the running sum (the vector is not kept).

        Identical re-adds are no-ops; a different second vector raises AlreadyExists.
        """
        self._require(ServerStage.MASK, "add a masked input")
        if not isinstance(party, str) or party not in self._inbox:
            raise InvalidArgument("is not in U2", field="party")
        vec = _vector(y, self._config.vector_length, "y")
        digest = _vector_digest(vec)
        if party in self._masked:
            known = self._masked[party]
            if known is not None and hmac.compare_digest(known, digest):
                return
            raise AlreadyExists("party already sent a masked input", field="y")
        self._sum += vec
        self._masked[party] = digest

    def restore_masked(
        self,
        running_sum: U64Vector,
        parties: Sequence[str],
        digests: Mapping[str, bytes] | None = None,
    ) -> None:
        """Restart support: set the running sum of ``parties``' masked vectors.

        Call before any :meth:`add_masked`. ``digests`` (from
        :meth:`masked_digest`) lets identical retries stay no-ops after a restart.
        """
        self._require(ServerStage.MASK, "restore masked inputs")
        if self._masked:
            raise FailedPrecondition("masked inputs were already added", field="stage")
        names = _names(parties, "parties")
        if _duplicates(names):
            raise InvalidArgument("must be distinct", field="parties")
        for p in names:
            if p not in self._inbox:
                raise InvalidArgument(f"{p!r} is not in U2", field="parties")
        vec = _vector(running_sum, self._config.vector_length, "running_sum")
        known = dict(digests or {})
        if not set(known) <= set(names):
            raise InvalidArgument("digests for parties not restored", field="digests")
        self._sum = vec.copy()
        self._masked = {p: known.get(p) for p in names}

    def masked_digest(self, party: str) -> bytes | None:
        """SHA-256 tag of the masked vector accepted from ``party`` (None if unknown)."""
        return self._masked.get(party)

    def close_mask(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Fix U3 and open the consistency round; return (survivors U3, dropped U2 \\ U3).

        RoundAborted if |U3| < t or some needed secret has fewer than t holders in U3.
        """
        self._require(ServerStage.MASK, "close mask")
        cfg = self._config
        u3 = cfg.ordered(set(self._masked))
        if len(u3) < cfg.threshold:
            raise self._fail(
                f"only {len(u3)} parties sent masked inputs, threshold is {cfg.threshold}", "u3"
            )
        u3_set = frozenset(u3)
        dropped = tuple(p for p in self._u2 if p not in u3_set)
        for u in u3:
            holders = _closed_neighbourhood(self._graph[u], u) & u3_set
            if len(holders) < cfg.threshold:
                raise self._fail(
                    f"self mask of {u!r} has only {len(holders)} holders among survivors", "u3"
                )
        for v in dropped:
            holders = self._graph[v] & u3_set
            if holders and len(holders) < cfg.threshold:
                raise self._fail(
                    f"mask key of {v!r} has only {len(holders)} holders among survivors", "u3"
                )
        self._u3 = u3
        self._dropped = dropped
        self._transcript = consistency_transcript(cfg, u3, dropped)
        self._stage = ServerStage.CONSISTENCY
        return u3, dropped

    # -- phase 4

    def add_consistency(self, party: str, signature: bytes, verify_key: VerifyKey) -> None:
        """Accept ``party``'s (in U3) signature over consistency_transcript(U3, dropped).

        Raises InvalidArgument (not in U3, bad key type), InvalidSignature, or
        AlreadyExists for a different second signature; identical re-adds are no-ops.
        """
        self._require(ServerStage.CONSISTENCY, "add a consistency signature")
        if not isinstance(party, str) or party not in self._u3:
            raise InvalidArgument("is not a survivor", field="party")
        if not isinstance(verify_key, VerifyKey):
            raise InvalidArgument("must be a VerifyKey", field="verify_key")
        if not isinstance(signature, bytes):
            raise InvalidArgument("must be bytes", field="signature")
        existing = self._consistency.get(party)
        if existing is not None:
            if hmac.compare_digest(existing, signature):
                return
            raise AlreadyExists("party already sent a different signature", field="signature")
        if self._transcript is None:
            raise FailedPrecondition("mask phase is not closed", field="stage")
        verify_key.verify(signature, self._transcript)
        self._consistency[party] = signature

    def close_consistency(self) -> None:
        """Fix the signers U4; RoundAborted if |U4| < t or some needed secret has
        fewer than t holders in U4 (only signers may reveal)."""
        self._require(ServerStage.CONSISTENCY, "close consistency")
        cfg = self._config
        signers = cfg.ordered(set(self._consistency))
        if len(signers) < cfg.threshold:
            raise self._fail(
                f"only {len(signers)} parties signed the consistency check, "
                f"threshold is {cfg.threshold}",
                "consistency",
            )
        signer_set = frozenset(signers)
        for u in self._u3:
            holders = _closed_neighbourhood(self._graph[u], u) & signer_set
            if len(holders) < cfg.threshold:
                raise self._fail(
                    f"self mask of {u!r} has only {len(holders)} holders among signers",
                    "consistency",
                )
        u3 = frozenset(self._u3)
        for v in self._dropped:
            if not self._graph[v] & u3:
                continue
            holders = self._graph[v] & signer_set
            if len(holders) < cfg.threshold:
                raise self._fail(
                    f"mask key of {v!r} has only {len(holders)} holders among signers",
                    "consistency",
                )
        self._signers = signers
        self._stage = ServerStage.UNMASK

    # -- phase 5

    def expected_reveals(self, party: str) -> frozenset[tuple[str, ShareKind]]:
        """The exact (owner, kind) set ``party`` (a consistency signer) must reveal."""
        if not self._u3:
            raise FailedPrecondition("mask phase is not closed", field="stage")
        if party not in self._consistency:
            raise InvalidArgument("did not sign the consistency check", field="party")
        nbrs = self._graph[party]
        u2 = frozenset(self._u2)
        out = {(o, ShareKind.SELF_MASK) for o in _closed_neighbourhood(nbrs, party) & set(self._u3)}
        out |= {(o, ShareKind.MASK_KEY) for o in nbrs & set(self._dropped) & u2}
        return frozenset(out)

    def add_reveals(self, party: str, reveals: Sequence[Reveal]) -> None:
        """Accept the unmask shares of ``party`` (a consistency signer); they must be
        exactly :meth:`expected_reveals`.

        Identical re-adds are no-ops; a different second set raises AlreadyExists.
        """
        self._require(ServerStage.UNMASK, "add reveals")
        if not isinstance(party, str) or party not in self._signers:
            raise InvalidArgument("did not sign the consistency check", field="party")
        expected = self.expected_reveals(party)
        x = self._config.x_of(party)
        seen: set[tuple[str, ShareKind]] = set()
        items = list(reveals)
        for r in items:
            if not isinstance(r, Reveal) or not isinstance(r.kind, ShareKind):
                raise InvalidArgument("must contain Reveal objects", field="reveals")
            key = (r.owner, r.kind)
            if key not in expected:
                raise InvalidArgument(
                    f"unexpected {r.kind.name} share for {r.owner!r}", field="reveals"
                )
            if key in seen:
                raise InvalidArgument(f"duplicate share for {r.owner!r}", field="reveals")
            seen.add(key)
            shamir.Share.from_bytes(x, r.share)
        if seen != expected:
            missing = sorted(o for o, _ in expected - seen)
            raise InvalidArgument(f"missing shares for {missing}", field="reveals")
        ordered = tuple(sorted(items, key=lambda r: (self._config.index(r.owner), r.kind.value)))
        existing = self._reveals.get(party)
        if existing is not None:
            if existing == ordered:
                return
            raise AlreadyExists("party already revealed different shares", field="reveals")
        self._reveals[party] = ordered

    def _needed(self) -> list[tuple[str, ShareKind]]:
        u3 = frozenset(self._u3)
        need = [(u, ShareKind.SELF_MASK) for u in self._u3]
        need += [(v, ShareKind.MASK_KEY) for v in self._dropped if self._graph[v] & u3]
        return need

    def _collect(self) -> dict[tuple[str, ShareKind], list[shamir.Share]]:
        out: dict[tuple[str, ShareKind], list[shamir.Share]] = {}
        for holder, items in self._reveals.items():
            x = self._config.x_of(holder)
            for r in items:
                out.setdefault((r.owner, r.kind), []).append(shamir.Share.from_bytes(x, r.share))
        return out

    def can_finish(self) -> bool:
        """Whether enough shares arrived to reconstruct every needed secret."""
        if self._stage is ServerStage.FINISHED:
            return True
        if self._stage is not ServerStage.UNMASK:
            return False
        collected = self._collect()
        t = self._config.threshold
        return all(len(collected.get(key, ())) >= t for key in self._needed())

    def finish(self) -> U64Vector:
        """Remove the masks and return sum_{u in U3} x_u mod 2**64.

        Raises RoundAborted (without changing state) if some secret lacks t shares,
        or if a reconstructed s key does not match its advert (corrupt shares).
        """
        if self._stage is ServerStage.FINISHED and self._result is not None:
            return self._result.copy()
        self._require(ServerStage.UNMASK, "finish")
        cfg = self._config
        t = cfg.threshold
        n = cfg.vector_length
        collected = self._collect()
        lacking = [
            f"{kind.name} of {owner!r}"
            for owner, kind in self._needed()
            if len(collected.get((owner, kind), ())) < t
        ]
        if lacking:
            raise RoundAborted(f"fewer than {t} shares for: {', '.join(lacking)}", field="reveals")
        total = self._sum.copy()
        u3 = frozenset(self._u3)
        for owner, kind in self._needed():
            secret = shamir.reconstruct(
                collected[(owner, kind)], threshold=t, secret_len=SEED_BYTES
            )
            if kind is ShareKind.SELF_MASK:
                total -= prg.self_mask(secret, round_id=cfg.round_id, party=owner, length=n)
                continue
            keys = kex.KeyPair.from_private(secret)
            if not hmac.compare_digest(keys.public, self._adverts[owner].s_public):
                raise RoundAborted(
                    f"reconstructed mask key of {owner!r} does not match its advert",
                    field="reveals",
                )
            owner_index = cfg.index(owner)
            for w in cfg.ordered(self._graph[owner] & u3):
                shared = kex.agree(keys.private, self._adverts[w].s_public)
                pm = prg.pair_mask(shared, round_id=cfg.round_id, a=owner, b=w, length=n)
                # y_w carries +pm when owner's index is higher than w's, else -pm.
                if owner_index > cfg.index(w):
                    total -= pm
                else:
                    total += pm
        self._result = total
        self._stage = ServerStage.FINISHED
        return total.copy()
