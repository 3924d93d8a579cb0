"""secagg: double masking (Bonawitz et al. 2017) over the SecAgg+ graph (Bell et al. 2020).

Pure state machines for one round (docs/ARCHITECTURE.md, "Round lifecycle").
:class:`SecAggParty` is the party's half, :class:`SecAggServer` the aggregator's.
Neither does I/O, touches gRPC or draws its own randomness; the caller moves the
messages, passes ``rand`` (``secrets.token_bytes`` in production) and persists state.

Phases and who learns what:

0. commit: each party draws a fresh nonce r_u and sends a signed commitment to
   it, bound to the round's whole configuration. L = committers.
1. advertise: each party checks the list L (its own commitment in it, every entry
   signed, |L| at least the floor of the threat model), then publishes two fresh
   X25519 keys (c for envelopes, s for pairwise masks), opens r_u and commits to a
   fresh self-mask seed b_u, all signed over H(L). U1 must equal L: a missing
   reveal aborts the round. The graph seed is H(H(L), r_u for u in L): nobody
   knows it before L is fixed, so neither the aggregator nor a late advertiser
   can choose anyone's neighbours (docs/THREAT_MODEL.md, "The roster").
2. share: every party Shamir-shares its s private key and b_u among its closed
   neighbourhood N[u] in the graph over L and sends one AES-GCM envelope per
   neighbour. U2 = parties whose shares were accepted.
3. mask: y_u = x_u + PRG(b_u) + sum_{v in N(u) & U2, v > u} PRG(s_uv)
   - sum_{v in N(u) & U2, v < u} PRG(s_uv) (mod 2**64), ordered by config index.
   A party masks only if at least t of its holders are in U2. An envelope that
   does not open is no reason to stop: the party masks as usual and sends a signed
   complaint with y. U3 = parties whose y was accepted, less the accused, who are
   dropped (docs/THREAT_MODEL.md, "Complaints").
4. consistency: the aggregator announces (U3, U2 \\ U3, accused). Each party checks the
   lists (docs/THREAT_MODEL.md), commits to them and signs consistency_transcript,
   which also binds the graph seed and the roster. U4 = signers; at least t.
5. unmask: a party in U4 receives the signatures of U4 and reveals only if at
   least t parties, itself included, signed the very lists it signed. Then for
   survivors U3 holders reveal b-shares, for dropped U2 \\ U3 they reveal
   s-shares. The aggregator checks every reconstructed secret against its
   commitment (b_u) or advertised public key (s_u), locates bad shares with a
   (t + 1)-th share, names their holders, and learns only sum_{u in U3} x_u.

Why the consistency round (Bonawitz et al. 2017, "ConsistencyCheck"): a party
never reveals both kinds of share for one owner, but that check is local. A
deviating aggregator could tell some holders of v "v survived" (they reveal
b_v shares) and other holders "v dropped" (they reveal s_v shares), and then
unmask y_v alone. Every honest party signs exactly one view and reveals only for
a view signed by t parties, so each honest holder of v reveals at most one kind
of share. What protects v is the count of its holders: with c corrupt holders
among its h (the corrupt ones give both kinds), recovering both b_v and s_v needs
t - c honest holders on each side, 2(t - c) <= h - c, which 2t >= h + c + 1 rules
out. The signature count alone would not: in a sparse round both views can
collect t signatures from parties that hold none of v's shares. The threat model
of a round (blindsum.protocol.params) fixes c; without one, SecAggConfig only
enforces the c = 0 rule 2t > h, and the party node refuses rounds without one.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from blindsum.crypto import envelope, kex, prg, shamir
from blindsum.crypto.encoding import encode_parts, format_dst
from blindsum.crypto.sign import SigningKey, VerifyKey
from blindsum.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    InvalidSignature,
    RoundAborted,
    UnsafeRequest,
)
from blindsum.protocol import graph, params
from blindsum.types import RandFn, U64Vector

#: Envelope phase string for share envelopes (bound into the AAD, with H(L)).
SHARE_PHASE = "share"
#: Bytes of the self-mask seed b and of the s private key that are Shamir-shared.
SEED_BYTES = 32
#: Bytes of the graph nonce r_u and of every commitment and digest.
NONCE_BYTES = 32
DIGEST_BYTES = 32
#: Largest accepted vector length (2**24 slots = 128 MiB per uint64 vector).
MAX_VECTOR_LENGTH = 1 << 24
#: Longest accepted round id, schema id or party name, in characters.
MAX_NAME_CHARS = 256
#: Format tag of :meth:`SecAggParty.to_state` documents. v4 added complaints and the
#: accused list (consistency/v3); v3 added the commit phase (the nonce, the list L
#: and its identity keys) and the self-mask commitment; earlier states are refused.
STATE_FORMAT = "blindsum/secagg-party-state/v4"
#: Most subsets of shares tried when locating bad shares of one secret.
MAX_LOCATE_ATTEMPTS = 4096


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


def name_list(names: Sequence[str], limit: int = 8) -> str:
    """``names`` for a message: the first ``limit`` and how many more. An abort reason
    travels in every later call's gRPC status, whose metadata is capped at 8 KB."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


@dataclass(frozen=True)
class SecAggConfig:
    """Public parameters of one secagg round; every participant must hold the same.

    ``parties`` are the invited parties in index order: the Shamir x of
    ``parties[i]`` is ``i + 1`` and mask signs follow this order.
    ``graph_degree`` 0 means the complete graph. ``threshold`` must be at least 2
    when more than one party is invited (t = 1 would let a single reveal expose a
    secret), more than half of a holder set, and at most the size of a holder set
    (a holder set has k + 1 members for a sparse graph of effective degree k, else
    the number of parties). With a ``threat`` model, the degree and threshold
    must also pass :func:`blindsum.protocol.params.check` for the invited parties
    (UnsafeRequest otherwise), and the party-side floors on |L|, |U2| and |U3|
    follow from it. The whole config is bound into every commitment, so parties
    shown different configs never accept each other's messages.
    """

    round_id: str
    schema_id: str
    parties: tuple[str, ...]
    threshold: int
    vector_length: int
    graph_degree: int  # 0 = complete
    threat: params.ThreatModel | None = None
    #: A digest of everything else the round showed its parties (``model.round_context``:
    #: ticket window, DP parameters, k), bound into every commitment like the fields above.
    context: bytes = b""

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
        # The c = 0 bound of the consistency round (module docstring); a deviating threat
        # model raises it by the corrupt holders it tolerates. Against a curious
        # aggregator there is no split view to stop, and t only has to exceed c.
        if self.threat is not None and not isinstance(self.threat, params.ThreatModel):
            raise InvalidArgument("must be a ThreatModel", field="threat")
        if not isinstance(self.context, bytes) or len(self.context) > 64:
            raise InvalidArgument("must be at most 64 bytes", field="context")
        curious = self.threat is not None and self.threat.adversary is params.Adversary.CURIOUS
        if not curious and 2 * self.threshold <= holders:
            raise InvalidArgument(
                f"must be more than half of the {holders} share holders", field="threshold"
            )
        if self.threat is not None:
            params.check(n, self.graph_degree, self.threshold, self.threat)

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {p: i for i, p in enumerate(self.parties)}

    @functools.cached_property
    def digest(self) -> bytes:
        """SHA-256 over every field: what commitments and transcripts bind."""
        threat: tuple[str | int, ...] = ()
        if self.threat is not None:
            t = self.threat
            threat = (
                repr(float(t.corrupt_fraction)),
                repr(float(t.dropout_fraction)),
                t.adversary.value,
                t.privacy_bits,
                t.correctness_bits,
            )
        return hashlib.sha256(
            format_dst(
                "secagg/config/v2",
                self.round_id,
                self.schema_id,
                len(self.parties),
                *self.parties,
                self.threshold,
                self.vector_length,
                self.graph_degree,
                len(threat),
                *threat,
                self.context,
            )
        ).digest()

    @property
    def complete(self) -> bool:
        """Whether the graph is complete for the invited parties."""
        n = len(self.parties)
        return graph.effective_degree(self.graph_degree, n) >= n - 1

    def tolerated(self) -> tuple[int, int]:
        """(C, D): corrupt parties and dropouts the threat model tolerates; (0, n - t)
        without one."""
        n = len(self.parties)
        if self.threat is None:
            return 0, n - self.threshold
        return self.threat.corrupt(n), self.threat.dropouts(n)

    def min_committed(self) -> int:
        """The smallest list L a party accepts.

        At least t; with a threat model also more than (n + C) / 2, so that the
        honest members of two different accepted lists would overlap (each honest
        party commits and advertises once), and, for a sparse graph, at least
        n - D, so the dropout budget the parameters assume is not spent before L.
        """
        n = len(self.parties)
        floor = self.threshold
        if self.threat is not None:
            corrupt, dropouts = self.tolerated()
            floor = max(floor, (n + corrupt) // 2 + 1)
            if not self.complete:
                floor = max(floor, n - dropouts)
        return floor

    def min_survivors(self) -> int:
        """The smallest U2 and U3 a party accepts: t, or n - D for a sparse graph with a
        threat model (the adaptive-dropout budget of the connectivity rule)."""
        if self.threat is None or self.complete:
            return self.threshold
        return max(self.threshold, len(self.parties) - self.tolerated()[1])

    def check_graph(self, listed: int) -> None:
        """The party's parameter check over the |L| = ``listed`` parties the graph is
        built on (UnsafeRequest naming the failing rule)."""
        if self.threat is None:
            return
        corrupt, dropouts = self.tolerated()
        params.check(
            listed,
            self.graph_degree,
            self.threshold,
            self.threat,
            corrupt=corrupt,
            dropouts=dropouts,
        )

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
class Commit:
    """A party's signed phase-0 commitment to its graph nonce."""

    party: str
    commitment: bytes
    signature: bytes


@dataclass(frozen=True)
class Advert:
    """A party's signed phase-1 advertisement: keys, opened nonce, self-mask commitment."""

    party: str
    c_public: bytes
    s_public: bytes
    signature: bytes
    nonce: bytes = b""
    list_digest: bytes = b""
    self_mask_commitment: bytes = b""


def nonce_commitment(config: SecAggConfig, party: str, nonce: bytes) -> bytes:
    """H(config, party, r): the commitment a party sends in phase 0."""
    return hashlib.sha256(format_dst("graph/commit/v2", config.digest, party, nonce)).digest()


def commit_transcript(config: SecAggConfig, party: str, commitment: bytes) -> bytes:
    """The bytes a commit's Ed25519 signature covers (binds the whole config)."""
    return format_dst("commit/v2", config.digest, party, commitment)


def commit_list_digest(config: SecAggConfig, commits: Mapping[str, bytes]) -> bytes:
    """H(L): the accepted commitments ``{party: commitment}``, in config order."""
    ordered = config.ordered(set(commits))
    return hashlib.sha256(
        format_dst(
            "graph/commit-list/v2",
            config.digest,
            len(ordered),
            *[part for p in ordered for part in (p, commits[p])],
        )
    ).digest()


def graph_seed(config: SecAggConfig, list_digest: bytes, nonces: Mapping[str, bytes]) -> bytes:
    """The neighbour graph's seed: H(H(L), the opened nonces of L in config order)."""
    ordered = config.ordered(set(nonces))
    return hashlib.sha256(
        format_dst(
            "graph/seed/v2", list_digest, *[part for p in ordered for part in (p, nonces[p])]
        )
    ).digest()


def self_mask_commitment(config: SecAggConfig, party: str, seed: bytes) -> bytes:
    """H(round, party, b): what a reconstructed self-mask seed is checked against."""
    return hashlib.sha256(
        format_dst("secagg/self-mask-commit/v2", config.digest, party, seed)
    ).digest()


def advert_transcript(
    config: SecAggConfig,
    party: str,
    c_public: bytes,
    s_public: bytes,
    *,
    nonce: bytes,
    list_digest: bytes,
    self_mask: bytes,
) -> bytes:
    """The bytes an advert's Ed25519 signature covers (binds the config and H(L))."""
    return format_dst(
        "advert/v2", config.digest, party, c_public, s_public, nonce, list_digest, self_mask
    )


def roster_digest(roster: Mapping[str, Advert]) -> bytes:
    """SHA-256 over the U1 adverts (party, keys, signature, nonce, self-mask commitment),
    sorted by party: what :func:`roster_binding` binds, and what a retry must match."""
    h = hashlib.sha256(format_dst("secagg/roster/v2"))
    for p in sorted(roster):
        a = roster[p]
        h.update(
            encode_parts(p, a.c_public, a.s_public, a.signature, a.nonce, a.self_mask_commitment)
        )
    return h.digest()


def roster_binding(seed: bytes, roster_digest: bytes) -> bytes:
    """What the consistency transcript binds of the roster: the graph seed (so H(L)
    and every nonce) and the hash of the U1 adverts."""
    return hashlib.sha256(format_dst("secagg/roster-binding/v2", seed, roster_digest)).digest()


def consistency_transcript(
    config: SecAggConfig,
    survivors: Sequence[str],
    dropped: Sequence[str],
    binding: bytes = b"",
    accused: Sequence[str] = (),
) -> bytes:
    """The bytes a consistency signature covers: config, roster binding, both lists and
    the accused parties (dropped parties that some survivor complained about).

    Every list is put in config order and prefixed with its length, so every
    (survivors, dropped, accused) triple has exactly one encoding. Preconditions: the
    names are invited parties (InvalidArgument(field="party") otherwise).
    """
    surv = config.ordered(list(survivors))
    drop = config.ordered(list(dropped))
    acc = config.ordered(list(accused))
    return format_dst(
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


def envelope_digest(env: SealedShare) -> bytes:
    """SHA-256 naming one share envelope exactly as the aggregator relayed it."""
    return hashlib.sha256(
        format_dst("secagg/share-envelope/v1", env.sender, env.receiver, env.nonce, env.ciphertext)
    ).digest()


def complaint_transcript(
    config: SecAggConfig, binding: bytes, accuser: str, accused: str, digest: bytes
) -> bytes:
    """The bytes a complaint's Ed25519 signature covers: the config, the roster binding,
    both names and the digest of the envelope that did not open."""
    return format_dst("complaint/v1", config.digest, binding, accuser, accused, digest)


@dataclass(frozen=True)
class Complaint:
    """``accuser``'s signed statement that ``accused``'s share envelope to it, the one
    named by ``digest`` (:func:`envelope_digest`), failed authentication or held
    shares that were not its own. Sent with the accuser's masked input."""

    accuser: str
    accused: str
    digest: bytes
    signature: bytes


class ShareKind(enum.Enum):
    """Which of an owner's two secrets a revealed share belongs to."""

    SELF_MASK = 1  # share of the self-mask seed b: revealed for survivors
    MASK_KEY = 2  # share of the s private key: revealed for dropped parties


class Lists(NamedTuple):
    """What a consistency signature covers besides the roster: U3, U2 \\ U3 and the
    accused (a subset of the dropped), each in config order."""

    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    accused: tuple[str, ...] = ()


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
        ("nonce", advert.nonce, NONCE_BYTES),
        ("self_mask_commitment", advert.self_mask_commitment, DIGEST_BYTES),
    ):
        if not isinstance(value, bytes) or len(value) != size:
            raise InvalidArgument(f"must be {size} bytes", field=f"advert.{name}")


def _closed_neighbourhood(nbrs: frozenset[str], me: str) -> frozenset[str]:
    return nbrs | {me}


# --------------------------------------------------------------------------- party


class PartyStage(enum.Enum):
    NEW = "new"
    COMMITTED = "committed"
    ADVERTISED = "advertised"
    SHARED = "shared"
    MASKED = "masked"
    SIGNED = "signed"
    UNMASKED = "unmasked"


_PARTY_ORDER = list(PartyStage)


def _check_bytes(value: object, size: int, field_name: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != size:
        raise InvalidArgument(f"must be {size} bytes", field=field_name)
    return value


class SecAggParty:
    """The party's side of one secagg round.

    Calls go commit -> advertise -> share -> mask -> sign_consistency -> unmask.
    Each of commit, advertise, share, mask and sign_consistency is idempotent for
    an identical retry (same output) and refuses a different second request.
    ``unmask`` may be called again, but only for the signed lists, and it never
    reveals both kinds of share for one owner, also across :meth:`to_state` /
    :meth:`from_state`. Persist :meth:`to_state` (mode 0600, directory fsynced)
    after every call and before sending its result.
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
        self._nonce: bytes | None = None
        self._commit: Commit | None = None
        self._commits: dict[str, bytes] = {}  # L: party -> commitment, from advertise()
        self._list_digest: bytes | None = None
        self._c: kex.KeyPair | None = None
        self._s: kex.KeyPair | None = None
        self._advert: Advert | None = None
        self._b_seed: bytes | None = None
        self._adverts: dict[str, Advert] = {}
        # L's identity keys, read (and so CA-checked) in share(); own key from the start.
        self._verify_keys: dict[str, VerifyKey] = {me: identity.verify_key}
        # Where share() reads them when it is not given its own; not persisted.
        self._key_source: Mapping[str, VerifyKey] | None = None
        self._roster_digest: bytes | None = None
        self._binding: bytes = b""
        self._neighbours: frozenset[str] = frozenset()
        self._sent: tuple[SealedShare, ...] = ()
        self._received: dict[str, tuple[bytes, bytes]] = {}  # owner -> (s share, b share)
        self._u2: tuple[str, ...] = ()
        self._y_digest: bytes | None = None
        # Neighbours whose envelope to us did not open -> that envelope's digest.
        self._accused: dict[str, bytes] = {}
        self._signed: Lists | None = None
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
    def committed(self) -> tuple[str, ...]:
        """The list L this party accepted in :meth:`advertise` (empty before)."""
        return self._config.ordered(set(self._commits))

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
    def accused(self) -> tuple[str, ...]:
        """Neighbours whose share envelope to this party did not open (after mask)."""
        return self._config.ordered(set(self._accused))

    def complaints(self) -> list[Complaint]:
        """One signed :class:`Complaint` per neighbour in :attr:`accused`; send them
        with the masked input. Ed25519 is deterministic, so a retry sends the same."""
        out = []
        for v in self.accused:
            digest = self._accused[v]
            transcript = complaint_transcript(self._config, self._binding, self._me, v, digest)
            out.append(Complaint(self._me, v, digest, self._identity.sign(transcript)))
        return out

    @property
    def signed_lists(self) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        """The (survivors, dropped) lists signed in :meth:`sign_consistency` (None before)."""
        return None if self._signed is None else (self._signed.survivors, self._signed.dropped)

    @property
    def revealed(self) -> frozenset[tuple[str, ShareKind]]:
        """Every (owner, kind) this party has revealed a share of."""
        return frozenset(self._revealed)

    def _at_least(self, stage: PartyStage, action: str) -> None:
        if _PARTY_ORDER.index(self._stage) < _PARTY_ORDER.index(stage):
            raise FailedPrecondition(f"cannot {action} in stage {self._stage.value}", field="stage")

    # -- phase 0

    def commit(self) -> Commit:
        """Draw the graph nonce and return the signed commitment (same one on retry).

        Persist :meth:`to_state` before sending it: a restarted party must send the
        same commitment, never a second one for this round.
        """
        if self._commit is not None:
            return self._commit
        nonce = self._rand(NONCE_BYTES)
        if len(nonce) != NONCE_BYTES:
            raise InvalidArgument("returned the wrong number of bytes", field="rand")
        commitment = nonce_commitment(self._config, self._me, nonce)
        self._nonce = nonce
        self._commit = Commit(
            party=self._me,
            commitment=commitment,
            signature=self._identity.sign(commit_transcript(self._config, self._me, commitment)),
        )
        self._stage = PartyStage.COMMITTED
        return self._commit

    # -- phase 1

    def _check_commits(self, commits: Mapping[str, Commit]) -> dict[str, bytes]:
        cfg = self._config
        if not isinstance(commits, Mapping):
            raise InvalidArgument("must be a mapping keyed by party", field="commits")
        out: dict[str, bytes] = {}
        for party, entry in commits.items():
            if not isinstance(entry, Commit) or entry.party != party:
                raise InvalidArgument("entry does not match its party", field="commits")
            if not cfg.is_invited(party):
                raise UnsafeRequest(f"party {party!r} is not invited", field="commits")
            _check_bytes(entry.commitment, DIGEST_BYTES, "commits.commitment")
            _check_bytes(entry.signature, 64, "commits.signature")
            # The signatures of others are not checked here: each member's advert,
            # checked in share() for the members this party relies on, is signed over
            # H(L), and a member advertises only for a list holding its own commitment.
            out[party] = entry.commitment
        if self._commit is None or out.get(self._me) != self._commit.commitment:
            raise UnsafeRequest("our own commitment is missing or altered", field="commits")
        floor = cfg.min_committed()
        if len(out) < floor:
            raise UnsafeRequest(
                f"only {len(out)} of {len(cfg.parties)} invited parties committed; "
                f"this round needs at least {floor}",
                field="commits",
            )
        return out

    def advertise(
        self,
        commits: Mapping[str, Commit],
        verify_keys: Mapping[str, VerifyKey] | None = None,
    ) -> Advert:
        """Check the list L, then return the signed advert (same advert on retry).

        ``commits`` is L as the aggregator published it. ``verify_keys``, if given,
        maps members to their CA-checked identity keys and is where :meth:`share`
        takes the keys it needs when it is not given its own; it is only read then,
        key by key, so it may check certificates lazily (``pki.CertifiedKeys``).
        Raises UnsafeRequest when L omits or alters our commitment, lists an
        uninvited party, is smaller than :meth:`SecAggConfig.min_committed`, or
        differs from a list this party already advertised for. Other members'
        commitments are vouched for by their adverts (see :meth:`share`).
        """
        self._at_least(PartyStage.COMMITTED, "advertise")
        if verify_keys is not None and not isinstance(verify_keys, Mapping):
            raise InvalidArgument("must be a mapping of party to key", field="verify_keys")
        accepted = self._check_commits(commits)
        digest = commit_list_digest(self._config, accepted)
        if verify_keys is not None:
            self._key_source = verify_keys
        if self._advert is not None:
            if self._list_digest is None or not hmac.compare_digest(digest, self._list_digest):
                raise UnsafeRequest("already advertised for a different list", field="commits")
            return self._advert
        if self._nonce is None:
            raise FailedPrecondition("no nonce: commit first", field="stage")
        c = kex.KeyPair.generate(self._rand)
        s = kex.KeyPair.generate(self._rand)
        if c.public == s.public:
            raise InvalidArgument("returned repeating output", field="rand")
        b_seed = self._rand(SEED_BYTES)
        if len(b_seed) != SEED_BYTES:
            raise InvalidArgument("returned the wrong number of bytes", field="rand")
        hb = self_mask_commitment(self._config, self._me, b_seed)
        transcript = advert_transcript(
            self._config,
            self._me,
            c.public,
            s.public,
            nonce=self._nonce,
            list_digest=digest,
            self_mask=hb,
        )
        self._c, self._s, self._b_seed = c, s, b_seed
        self._commits = accepted
        self._list_digest = digest
        self._advert = Advert(
            party=self._me,
            c_public=c.public,
            s_public=s.public,
            signature=self._identity.sign(transcript),
            nonce=self._nonce,
            list_digest=digest,
            self_mask_commitment=hb,
        )
        self._stage = PartyStage.ADVERTISED
        return self._advert

    # -- phase 2

    def _check_roster(self, adverts: Mapping[str, Advert]) -> dict[str, Advert]:
        cfg = self._config
        if not isinstance(adverts, Mapping):
            raise InvalidArgument("must be a mapping of party to advert", field="adverts")
        if self._list_digest is None:
            raise FailedPrecondition("advertise first", field="stage")
        roster: dict[str, Advert] = {}
        seen_keys: set[bytes] = set()
        for party, advert in adverts.items():
            if not isinstance(advert, Advert) or advert.party != party:
                raise InvalidArgument("entry does not match its party", field="adverts")
            if party not in self._commits:
                raise UnsafeRequest(f"party {party!r} is not in the list L", field="adverts")
            _check_advert_fields(advert)
            # Every nonce must open its commitment in L (one hash each): the graph seed
            # hashes them all, and L was fixed before this party opened its own nonce.
            opened = nonce_commitment(cfg, party, advert.nonce)
            if not hmac.compare_digest(opened, self._commits[party]):
                raise UnsafeRequest(
                    f"nonce of {party!r} does not open its commitment", field="adverts"
                )
            for key in (advert.c_public, advert.s_public):
                # Small-order checks wait for share(): only neighbours' keys are ever used.
                if key in seen_keys:
                    raise UnsafeRequest("two adverts share a public key", field="adverts")
                seen_keys.add(key)
            roster[party] = advert
        if roster.get(self._me) != self._advert:
            raise UnsafeRequest("our own advert is missing or altered", field="adverts")
        missing = set(self._commits) - set(roster)
        if missing:
            # U1 must be L exactly: keeping a subset would let whoever picks it pick the seed.
            raise UnsafeRequest(
                f"parties in L without an advert: {sorted(missing)}", field="adverts"
            )
        return roster

    def _key_of(
        self, party: str, keys: Mapping[str, VerifyKey] | None, field_name: str
    ) -> VerifyKey:
        """``party``'s identity key: checked before, or read (and so CA-checked) from
        ``keys`` and remembered. UnsafeRequest when there is none or it fails."""
        known = self._verify_keys.get(party)
        if known is not None:
            return known
        if keys is None:
            raise FailedPrecondition(
                "no identity keys given: pass verify_keys", field="verify_keys"
            )
        try:
            key = keys[party]
        except KeyError:
            raise UnsafeRequest(f"no identity key for {party!r}", field=field_name) from None
        except (InvalidArgument, InvalidSignature) as exc:
            raise UnsafeRequest(
                f"identity certificate of {party!r} fails its check: {exc.message}",
                field=field_name,
            ) from None
        if not isinstance(key, VerifyKey):
            raise InvalidArgument(f"key of {party!r} is not a VerifyKey", field="verify_keys")
        return key

    def _check_advert_signatures(
        self,
        roster: Mapping[str, Advert],
        parties: frozenset[str],
        keys: Mapping[str, VerifyKey] | None,
    ) -> dict[str, VerifyKey]:
        """Check the adverts of ``parties`` against their CA-checked identity keys."""
        cfg = self._config
        if self._list_digest is None:
            raise FailedPrecondition("advertise first", field="stage")
        checked: dict[str, VerifyKey] = {}
        for party in cfg.ordered(parties):
            advert = roster[party]
            key = self._key_of(party, keys, "adverts")
            try:
                key.verify(
                    advert.signature,
                    advert_transcript(
                        cfg,
                        party,
                        advert.c_public,
                        advert.s_public,
                        nonce=advert.nonce,
                        list_digest=self._list_digest,
                        self_mask=advert.self_mask_commitment,
                    ),
                )
            except InvalidSignature:
                raise UnsafeRequest(
                    f"advert of {party!r} is not signed over the list this party saw",
                    field="adverts",
                ) from None
            checked[party] = key
        return checked

    def _graph_of(self, roster: Mapping[str, Advert]) -> tuple[bytes, frozenset[str]]:
        cfg = self._config
        if self._list_digest is None:
            raise FailedPrecondition("advertise first", field="stage")
        members = cfg.ordered(set(roster))
        seed = graph_seed(cfg, self._list_digest, {p: roster[p].nonce for p in members})
        return seed, graph.neighbours_of(self._me, members, cfg.graph_degree, seed)

    def share(
        self,
        adverts: Mapping[str, Advert],
        verify_keys: Mapping[str, VerifyKey] | None = None,
    ) -> list[SealedShare]:
        """Check the U1 roster and return one share envelope per neighbour.

        ``adverts`` is U1 as published by the aggregator; it must be exactly the
        list L accepted in :meth:`advertise`, every advert signed over our H(L)
        under its member's identity key and opening its commitment. ``verify_keys``
        maps each member to its CA-checked identity key (default: the mapping given
        to :meth:`advertise`); it is read once per member, so it may check
        certificates as they are read (``pki.CertifiedKeys``). Raises UnsafeRequest
        otherwise, for a missing or failing key, reused keys or an altered own
        advert, or when the round's degree and threshold fail the threat model's
        check over |L|. A retry with the same roster returns the same envelopes; a
        different roster is refused.
        """
        self._at_least(PartyStage.ADVERTISED, "share")
        if verify_keys is not None and not isinstance(verify_keys, Mapping):
            raise InvalidArgument("must be a mapping of party to key", field="verify_keys")
        keys = verify_keys if verify_keys is not None else self._key_source
        roster = self._check_roster(adverts)
        digest = roster_digest(roster)
        if self._roster_digest is not None:
            if not hmac.compare_digest(digest, self._roster_digest):
                raise UnsafeRequest("already shared for a different roster", field="adverts")
            return list(self._sent)
        cfg = self._config
        cfg.check_graph(len(roster))
        c, s = self._keys()
        seed, nbrs = self._graph_of(roster)
        # Every member's advert and key are checked, neighbour or not: a member this
        # party did not check could be one the aggregator made up, standing in L as a
        # party it controls (docs/THREAT_MODEL.md, "Why every advert is checked").
        checked = self._check_advert_signatures(roster, frozenset(roster) - {self._me}, keys)
        # Only a neighbour's keys enter a key agreement, so only those are probed for
        # small order: O(degree) instead of O(n) X25519 operations per party.
        for p in cfg.ordered(nbrs):
            kex.validate_public(roster[p].c_public)
            kex.validate_public(roster[p].s_public)
        holders = cfg.ordered(_closed_neighbourhood(nbrs, self._me))
        if len(holders) < cfg.threshold:
            raise RoundAborted(
                f"only {len(holders)} share holders, threshold is {cfg.threshold}", field="u1"
            )
        if self._b_seed is None or self._list_digest is None:
            raise FailedPrecondition("no self-mask seed: advertise first", field="stage")
        xs = [cfg.x_of(h) for h in holders]
        s_shares = shamir.split(s.private, threshold=cfg.threshold, xs=xs, rand=self._rand)
        b_shares = shamir.split(self._b_seed, threshold=cfg.threshold, xs=xs, rand=self._rand)
        my_index = cfg.index(self._me)
        phase = _share_phase(self._list_digest)
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
                phase=phase,
                plaintext=_share_plaintext(my_index, x, s_bytes, b_bytes),
                rand=self._rand,
            )
            sent.append(SealedShare(sender=self._me, receiver=holder, nonce=nonce, ciphertext=ct))
        self._adverts = dict(roster)
        self._verify_keys.update(checked)
        self._roster_digest = digest
        self._binding = roster_binding(seed, digest)
        self._neighbours = nbrs
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
    ) -> tuple[dict[str, tuple[bytes, bytes]], dict[str, bytes]]:
        """The shares in the envelopes from ``expected``, and the digests of those that
        did not open (failed authentication, or held shares that are not the sender's
        for us). A malformed set (wrong receiver, unknown or repeated sender, a missing
        envelope) is the relay's doing and is refused instead."""
        cfg = self._config
        c, _ = self._keys()
        if self._list_digest is None:
            raise FailedPrecondition("advertise first", field="stage")
        phase = _share_phase(self._list_digest)
        my_x = cfg.x_of(self._me)
        got: dict[str, tuple[bytes, bytes]] = {}
        bad: dict[str, bytes] = {}
        for env in envelopes:
            if not isinstance(env, SealedShare):
                raise InvalidArgument("must contain SealedShare objects", field="envelopes")
            if env.receiver != self._me:
                raise InvalidArgument("envelope addressed to another party", field="envelopes")
            if env.sender not in expected:
                raise InvalidArgument(
                    f"envelope from {env.sender!r}, not a neighbour in U2", field="envelopes"
                )
            if env.sender in got or env.sender in bad:
                raise InvalidArgument(f"two envelopes from {env.sender!r}", field="envelopes")
            try:
                plain = envelope.open_share(
                    own_private=c.private,
                    peer_public=self._adverts[env.sender].c_public,
                    round_id=cfg.round_id,
                    sender=env.sender,
                    receiver=self._me,
                    phase=phase,
                    nonce=env.nonce,
                    ciphertext=env.ciphertext,
                )
                s_bytes, b_bytes = _parse_share_plaintext(plain, cfg.index(env.sender), my_x)
            except InvalidArgument:  # InvalidTag is one
                bad[env.sender] = envelope_digest(env)
                continue
            got[env.sender] = (s_bytes, b_bytes)
        missing = expected - set(got) - set(bad)
        if missing:
            raise UnsafeRequest(
                f"U2 lists neighbours without envelopes: {sorted(missing)}", field="envelopes"
            )
        return got, bad

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

    def _check_holders(self, members: frozenset[str], label: str) -> None:
        """At least t of our holders (closed neighbourhood) must be in ``members``."""
        t = self._config.threshold
        mine = len(_closed_neighbourhood(self._neighbours, self._me) & members)
        if mine < t:
            raise UnsafeRequest(
                f"only {mine} of this party's share holders are in {label}, threshold is {t}",
                field=label.lower(),
            )

    def mask(self, envelopes: Sequence[SealedShare], u2: Sequence[str], x: U64Vector) -> U64Vector:
        """Open the neighbours' envelopes and return the masked input y.

        ``u2`` is the aggregator's U2; ``envelopes`` must hold exactly one
        envelope from every neighbour in U2, addressed to us. ``x`` is a uint64
        vector of the config's length. Raises UnsafeRequest when U2 is not a
        subset of U1, omits us, is smaller than :meth:`SecAggConfig.min_survivors`,
        holds fewer than t of our holders, or lists neighbours without envelopes;
        or InvalidArgument for a malformed envelope set. An envelope that does not
        open is not an error: its sender goes into :attr:`accused`, and
        :meth:`complaints` reports it (the masks are the same either way). A retry
        with the same inputs returns the same y; a different x or U2 is refused.
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
        floor = cfg.min_survivors()
        if len(u2_set) < floor:
            raise UnsafeRequest(
                f"U2 has {len(u2_set)} parties, this round needs {floor}", field="u2"
            )
        self._check_holders(u2_set, "U2")
        u2_ordered = cfg.ordered(u2_set)
        if self._stage is not PartyStage.SHARED and u2_ordered != self._u2:
            raise UnsafeRequest("already masked for a different U2", field="u2")
        opened, bad = self._open_envelopes(envelopes, self._neighbours & u2_set)
        # y masks with every neighbour in U2, opened or not: a complaint the aggregator
        # ignores then leaves exactly the protocol without complaints
        # (docs/THREAT_MODEL.md, "Complaints").
        y = self._masked_vector(vec, u2_set)
        digest = _vector_digest(y)
        if self._stage is not PartyStage.SHARED:
            if self._y_digest is None or not hmac.compare_digest(digest, self._y_digest):
                raise UnsafeRequest("already masked a different input", field="x")
            same = bad == self._accused and all(
                self._received.get(owner) == pair for owner, pair in opened.items()
            )
            if not same:
                raise UnsafeRequest("envelopes differ from the first attempt", field="envelopes")
            return y
        self._received.update(opened)
        self._accused = bad
        self._u2 = u2_ordered
        self._y_digest = digest
        self._stage = PartyStage.MASKED
        return y

    # -- phases 4 (consistency) and 5 (unmask)

    def _check_lists(
        self, survivors: Sequence[str], dropped: Sequence[str], accused: Sequence[str] = ()
    ) -> Lists:
        """The checks of docs/THREAT_MODEL.md on an announced (U3, U2 \\ U3, accused), in
        config order."""
        cfg = self._config
        surv = _names(survivors, "survivors")
        drop = _names(dropped, "dropped")
        acc = _names(accused, "accused")
        for label, names in (("survivors", surv), ("dropped", drop), ("accused", acc)):
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
        floor = cfg.min_survivors()
        if len(surv_set) < floor:
            raise UnsafeRequest(
                f"{len(surv_set)} survivors, this round needs {floor}", field="survivors"
            )
        self._check_holders(surv_set, "survivors")
        acc_set = frozenset(acc)
        if not acc_set <= drop_set:
            raise UnsafeRequest(
                f"accused parties not listed as dropped: {sorted(acc_set - drop_set)}",
                field="accused",
            )
        ignored = set(self._accused) - acc_set
        if ignored:
            raise UnsafeRequest(
                f"the lists leave out this party's complaints about {sorted(ignored)}",
                field="accused",
            )
        return Lists(cfg.ordered(surv_set), cfg.ordered(drop_set), cfg.ordered(acc_set))

    def _transcript(self, lists: Lists) -> bytes:
        return consistency_transcript(
            self._config, lists.survivors, lists.dropped, self._binding, lists.accused
        )

    def sign_consistency(
        self, survivors: Sequence[str], dropped: Sequence[str], accused: Sequence[str] = ()
    ) -> bytes:
        """Check the aggregator's (U3, U2 \\ U3, accused), commit to it and return our
        signature.

        Precondition: :meth:`mask` succeeded. Raises UnsafeRequest, naming the
        problem, when a party is listed twice or in both lists, this party is
        dropped or not a survivor, a party is not in the U2 seen in :meth:`mask`,
        the lists do not cover that U2, there are fewer survivors than
        :meth:`SecAggConfig.min_survivors`, fewer than t of our holders
        survive, an accused party is not dropped, or a party this party complained
        about is not accused. The lists are recorded (persist :meth:`to_state` before sending
        the signature); a retry with the same lists, in any order, returns the
        same signature, and different lists are refused with UnsafeRequest.
        """
        self._at_least(PartyStage.MASKED, "sign the consistency check")
        lists = self._check_lists(survivors, dropped, accused)
        if self._signed is not None:
            if lists != self._signed or self._consistency_sig is None:
                raise UnsafeRequest("already signed different survivor lists", field="survivors")
            return self._consistency_sig
        signature = self._identity.sign(self._transcript(lists))
        self._signed = lists
        self._consistency_sig = signature
        self._stage = PartyStage.SIGNED
        return signature

    def _check_signatures(self, lists: Lists, signatures: Mapping[str, bytes]) -> None:
        if not isinstance(signatures, Mapping):
            raise InvalidArgument("must be a mapping of party to signature", field="signatures")
        survivors = frozenset(lists.survivors)
        transcript = self._transcript(lists)
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
        # t valid signatures on our lists are what the check needs (and 2t >= h + c + 1
        # is what stops a split view); verifying every signer would cost O(n) per party.
        # Our own first, then in roster order, so the choice is deterministic. The keys
        # are the ones share() checked.
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
        self,
        survivors: Sequence[str],
        dropped: Sequence[str],
        signatures: Mapping[str, bytes],
        accused: Sequence[str] = (),
    ) -> list[Reveal]:
        """Reveal b-shares of surviving and s-shares of dropped neighbours (incl. self).

        Precondition: :meth:`sign_consistency` succeeded. ``survivors``, ``dropped``
        and ``accused`` must be the lists signed there (else UnsafeRequest).
        ``signatures`` maps signer -> consistency signature (the aggregator's
        U4): every signer must be a survivor and its signature must verify with
        its U1 identity key over our lists, ours must be among them, and there
        must be at least t. Raises UnsafeRequest, naming the problem, otherwise,
        or when any owner's other kind of share was revealed before (also before
        a restart). Nothing is revealed on refusal; a retry returns the same
        shares. An accused party is a dropped one like any other: its s-share is
        revealed where this party holds one (not where its envelope did not open).
        """
        self._at_least(PartyStage.MASKED, "unmask")
        if self._signed is None:
            raise FailedPrecondition("sign the consistency check first", field="stage")
        lists = self._check_lists(survivors, dropped, accused)
        if lists != self._signed:
            raise UnsafeRequest(
                "survivor lists differ from the ones this party signed", field="survivors"
            )
        self._check_signatures(lists, signatures)
        surv_set, drop_set = frozenset(lists.survivors), frozenset(lists.dropped)
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

        threat = None
        if cfg.threat is not None:
            threat = {
                "corrupt_fraction": cfg.threat.corrupt_fraction,
                "dropout_fraction": cfg.threat.dropout_fraction,
                "adversary": cfg.threat.adversary.value,
                "privacy_bits": cfg.threat.privacy_bits,
                "correctness_bits": cfg.threat.correctness_bits,
            }
        doc: dict[str, Any] = {
            "format": STATE_FORMAT,
            "config": {
                "round_id": cfg.round_id,
                "schema_id": cfg.schema_id,
                "parties": list(cfg.parties),
                "threshold": cfg.threshold,
                "vector_length": cfg.vector_length,
                "graph_degree": cfg.graph_degree,
                "threat": threat,
                "context": cfg.context.hex(),
            },
            "me": self._me,
            "identity": self._identity.public_bytes.hex(),
            "stage": self._stage.value,
            "nonce": hx(self._nonce),
            "commit_signature": hx(self._commit.signature if self._commit else None),
            "commits": {p: c.hex() for p, c in self._commits.items()},
            "c_private": hx(self._c.private if self._c else None),
            "s_private": hx(self._s.private if self._s else None),
            "advert_signature": hx(self._advert.signature if self._advert else None),
            "b_seed": hx(self._b_seed),
            "adverts": {
                p: {
                    "c": a.c_public.hex(),
                    "s": a.s_public.hex(),
                    "sig": a.signature.hex(),
                    "nonce": a.nonce.hex(),
                    "hb": a.self_mask_commitment.hex(),
                }
                for p, a in self._adverts.items()
            },
            "sent": [
                {"receiver": e.receiver, "nonce": e.nonce.hex(), "ciphertext": e.ciphertext.hex()}
                for e in self._sent
            ],
            "received": {o: {"s": s.hex(), "b": b.hex()} for o, (s, b) in self._received.items()},
            "u2": list(self._u2),
            "y_digest": hx(self._y_digest),
            "accused": {p: d.hex() for p, d in self._accused.items()},
            "verify_keys": {p: k.raw.hex() for p, k in self._verify_keys.items()},
            "consistency": None
            if self._signed is None
            else {
                "survivors": list(self._signed.survivors),
                "dropped": list(self._signed.dropped),
                "accused": list(self._signed.accused),
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
        except InvalidSignature:
            raise InvalidArgument(
                "holds a signature that does not verify (altered or another party's)",
                field="state",
            ) from None
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
        threat = None
        if c["threat"] is not None:
            t = c["threat"]
            threat = params.ThreatModel(
                corrupt_fraction=float(t["corrupt_fraction"]),
                dropout_fraction=float(t["dropout_fraction"]),
                adversary=params.Adversary(t["adversary"]),
                privacy_bits=int(t["privacy_bits"]),
                correctness_bits=int(t["correctness_bits"]),
            )
        config = SecAggConfig(
            round_id=c["round_id"],
            schema_id=c["schema_id"],
            parties=tuple(c["parties"]),
            threshold=c["threshold"],
            vector_length=c["vector_length"],
            graph_degree=c["graph_degree"],
            threat=threat,
            context=unhex(c["context"]),
        )
        party = cls(config, doc["me"], identity, rand)
        if unhex(doc["identity"]) != identity.public_bytes:
            raise bad("belongs to another identity")
        stage = PartyStage(doc["stage"])
        order = _PARTY_ORDER.index(stage)
        if order >= _PARTY_ORDER.index(PartyStage.COMMITTED):
            party._nonce = unhex(doc["nonce"], NONCE_BYTES)
            commitment = nonce_commitment(config, party._me, party._nonce)
            party._commit = Commit(party._me, commitment, unhex(doc["commit_signature"], 64))
            identity.verify_key.verify(
                party._commit.signature, commit_transcript(config, party._me, commitment)
            )
        if order >= _PARTY_ORDER.index(PartyStage.ADVERTISED):
            commits = {str(p): unhex(v, DIGEST_BYTES) for p, v in dict(doc["commits"]).items()}
            if not all(config.is_invited(p) for p in commits):
                raise bad("commitment of an uninvited party")
            if party._commit is None or commits.get(party._me) != party._commit.commitment:
                raise bad("own commitment missing from the list")
            party._commits = commits
            party._list_digest = commit_list_digest(config, commits)
            vks = dict(doc["verify_keys"])
            if not set(vks) <= set(commits):
                raise bad("verify key of a party outside the list")
            if party._me not in vks:
                raise bad("own verify key missing")
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
            party._c = kex.KeyPair.from_private(unhex(doc["c_private"], kex.KEY_BYTES))
            party._s = kex.KeyPair.from_private(unhex(doc["s_private"], kex.KEY_BYTES))
            party._b_seed = unhex(doc["b_seed"], SEED_BYTES)
            hb = self_mask_commitment(config, party._me, party._b_seed)
            party._advert = Advert(
                party=party._me,
                c_public=party._c.public,
                s_public=party._s.public,
                signature=unhex(doc["advert_signature"]),
                nonce=party._nonce or b"",
                list_digest=party._list_digest,
                self_mask_commitment=hb,
            )
            identity.verify_key.verify(
                party._advert.signature,
                advert_transcript(
                    config,
                    party._me,
                    party._c.public,
                    party._s.public,
                    nonce=party._advert.nonce,
                    list_digest=party._list_digest,
                    self_mask=hb,
                ),
            )
        if order >= _PARTY_ORDER.index(PartyStage.SHARED):
            adverts: dict[str, Advert] = {}
            for p, a in dict(doc["adverts"]).items():
                if p not in party._commits:
                    raise bad("advert of a party outside L")
                adverts[p] = Advert(
                    party=p,
                    c_public=unhex(a["c"]),
                    s_public=unhex(a["s"]),
                    signature=unhex(a["sig"]),
                    nonce=unhex(a["nonce"], NONCE_BYTES),
                    list_digest=party._list_digest or b"",
                    self_mask_commitment=unhex(a["hb"], DIGEST_BYTES),
                )
            if adverts.get(party._me) != party._advert:
                raise bad("own advert does not match the keys")
            if set(adverts) != set(party._commits):
                raise bad("roster is not the list L")
            party._adverts = adverts
            party._roster_digest = roster_digest(adverts)
            seed, party._neighbours = party._graph_of(adverts)
            if set(party._verify_keys) != set(adverts):
                raise bad("verify keys do not match the roster")
            party._binding = roster_binding(seed, party._roster_digest)
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
            accused = {str(p): unhex(d, DIGEST_BYTES) for p, d in dict(doc["accused"]).items()}
            if not set(accused) <= party._neighbours & set(u2):
                raise bad("complaint about a party that is not a neighbour in U2")
            if set(accused) & set(party._received):
                raise bad("complaint about a party whose shares opened")
            party._accused = accused
        consistency = doc["consistency"]
        if order >= _PARTY_ORDER.index(PartyStage.SIGNED):
            if not isinstance(consistency, dict):
                raise bad("signed lists missing")
            try:
                lists = party._check_lists(
                    [str(p) for p in consistency["survivors"]],
                    [str(p) for p in consistency["dropped"]],
                    [str(p) for p in consistency["accused"]],
                )
                signature = unhex(consistency["signature"], 64)
                identity.verify_key.verify(signature, party._transcript(lists))
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


def _share_phase(list_digest: bytes) -> str:
    """The envelope phase: ``share`` and H(L), so an envelope opens only under one list."""
    return f"{SHARE_PHASE}/{list_digest.hex()}"


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
    COMMIT = "commit"
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
    replaying them in this order: commits, close_commit, adverts, close_advertise, shares,
    close_share, :meth:`restore_masked` (the running sum), close_mask,
    consistency signatures, close_consistency, reveals.
    """

    def __init__(self, config: SecAggConfig) -> None:
        if not isinstance(config, SecAggConfig):
            raise InvalidArgument("must be a SecAggConfig", field="config")
        self._config = config
        self._stage = ServerStage.COMMIT
        self._abort_reason: str | None = None
        self._commits: dict[str, Commit] = {}
        self._list: dict[str, bytes] = {}  # L, fixed by close_commit
        self._list_digest: bytes = b""
        self._binding: bytes = b""
        self._misbehaving: dict[str, str] = {}
        self._max_bad = 0
        self._adverts: dict[str, Advert] = {}
        self._used_keys: set[bytes] = set()
        self._u1: tuple[str, ...] = ()
        self._graph: dict[str, frozenset[str]] = {}
        self._shares: dict[str, tuple[SealedShare, ...]] = {}
        self._u2: tuple[str, ...] = ()
        self._inbox: dict[str, tuple[SealedShare, ...]] = {}
        self._sum: U64Vector = np.zeros(config.vector_length, dtype=np.uint64)
        self._masked: dict[str, bytes | None] = {}
        self._complaints: dict[str, tuple[Complaint, ...]] = {}  # accuser -> its complaints
        self._accused: tuple[str, ...] = ()  # fixed by close_mask
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

    def accepted_counts(self) -> dict[str, int]:
        """How many messages of each phase this instance holds, by phase name (the
        service compares them with the store to tell whether it is up to date)."""
        return {
            "commit": len(self._commits),
            "advertise": len(self._adverts),
            "share": len(self._shares),
            "mask": len(self._masked),
            "consistency": len(self._consistency),
            "unmask": len(self._reveals),
        }

    def accepted_parties(self, phase: str) -> frozenset[str]:
        """The parties whose ``phase`` message this instance holds (phase names as in
        :meth:`accepted_counts`)."""
        held: dict[str, Mapping[str, object]] = {
            "commit": self._commits,
            "advertise": self._adverts,
            "share": self._shares,
            "mask": self._masked,
            "consistency": self._consistency,
            "unmask": self._reveals,
        }
        return frozenset(held[phase])

    @property
    def committed(self) -> tuple[str, ...]:
        """Parties whose commitment was accepted, in config order (L once closed)."""
        return self._config.ordered(set(self._commits))

    @property
    def list_digest(self) -> bytes:
        """H(L) (empty before :meth:`close_commit`)."""
        return self._list_digest

    @property
    def misbehaving(self) -> dict[str, str]:
        """Parties named for misbehaving: accused by a complaint (from :meth:`close_mask`)
        or holders whose revealed shares were provably wrong (from :meth:`finish`)."""
        return dict(self._misbehaving)

    @property
    def complaints(self) -> dict[str, tuple[Complaint, ...]]:
        """The accepted complaints, by accuser."""
        return dict(self._complaints)

    @property
    def accused(self) -> tuple[str, ...]:
        """Parties some accepted complaint names, in config order: fixed by
        :meth:`close_mask`, which excludes them from U3."""
        if self._stage is ServerStage.MASK:
            return self._config.ordered({c.accused for cs in self._complaints.values() for c in cs})
        return self._accused

    @property
    def to_withdraw(self) -> tuple[str, ...]:
        """Accused parties whose masked vector is in the running sum: pass their vectors
        to :meth:`close_mask`, which takes them out again."""
        return tuple(p for p in self.accused if p in self._masked)

    def _accusers(self, party: str) -> frozenset[str]:
        """The parties whose accepted complaint names ``party``: their envelope from it
        did not open, so they hold no share of its secrets."""
        return frozenset(
            a for a, cs in self._complaints.items() if any(c.accused == party for c in cs)
        )

    def _key_holders(self, v: str, among: frozenset[str]) -> frozenset[str]:
        """The neighbours of dropped ``v`` in ``among`` that hold a valid share of its
        mask key (an accuser's envelope from v did not open)."""
        return self._graph[v] & among - self._accusers(v)

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

    # -- phase 0

    def add_commit(self, commit: Commit, verify_key: VerifyKey) -> None:
        """Accept a party's signed commitment; identical re-adds are no-ops.

        Raises InvalidArgument (uninvited party, malformed), InvalidSignature, or
        AlreadyExists for a different second commitment.
        """
        self._require(ServerStage.COMMIT, "add a commitment")
        if not isinstance(commit, Commit):
            raise InvalidArgument("must be a Commit", field="commit")
        if not isinstance(verify_key, VerifyKey):
            raise InvalidArgument("must be a VerifyKey", field="verify_key")
        if not self._config.is_invited(commit.party):
            raise InvalidArgument("is not invited to this round", field="party")
        _check_bytes(commit.commitment, DIGEST_BYTES, "commitment")
        _check_bytes(commit.signature, 64, "signature")
        existing = self._commits.get(commit.party)
        if existing is not None:
            if existing == commit:
                return
            raise AlreadyExists("party already sent a different commitment", field="commitment")
        verify_key.verify(
            commit.signature, commit_transcript(self._config, commit.party, commit.commitment)
        )
        self._commits[commit.party] = commit

    def commits(self) -> dict[str, Commit]:
        """The accepted commitments in config order (L once closed)."""
        return {p: self._commits[p] for p in self.committed}

    def close_commit(self) -> None:
        """Fix L; RoundAborted if it is smaller than what parties accept."""
        self._require(ServerStage.COMMIT, "close commit")
        floor = self._config.min_committed()
        listed = self.committed
        if len(listed) < floor:
            raise self._fail(
                f"only {len(listed)} parties committed, the round needs {floor}", "commits"
            )
        self._list = {p: self._commits[p].commitment for p in listed}
        self._list_digest = commit_list_digest(self._config, self._list)
        self._stage = ServerStage.ADVERTISE

    # -- phase 1

    def add_advert(self, advert: Advert, verify_key: VerifyKey) -> None:
        """Accept a party's advert; identical re-adds are no-ops.

        Raises InvalidArgument (a party outside L, bad or reused key, a nonce that
        does not open its commitment), InvalidSignature (not signed over this
        round's H(L)), or AlreadyExists for a different second advert.
        """
        self._require(ServerStage.ADVERTISE, "add an advert")
        if not isinstance(advert, Advert):
            raise InvalidArgument("must be an Advert", field="advert")
        if not isinstance(verify_key, VerifyKey):
            raise InvalidArgument("must be a VerifyKey", field="verify_key")
        if not self._config.is_invited(advert.party):
            raise InvalidArgument("is not invited to this round", field="party")
        if advert.party not in self._list:
            raise InvalidArgument("did not commit in this round", field="party")
        _check_advert_fields(advert)
        existing = self._adverts.get(advert.party)
        if existing is not None:
            if existing == advert:
                return
            raise AlreadyExists("party already advertised different keys", field="advert")
        verify_key.verify(
            advert.signature,
            advert_transcript(
                self._config,
                advert.party,
                advert.c_public,
                advert.s_public,
                nonce=advert.nonce,
                list_digest=self._list_digest,
                self_mask=advert.self_mask_commitment,
            ),
        )
        opened = nonce_commitment(self._config, advert.party, advert.nonce)
        if not hmac.compare_digest(opened, self._list[advert.party]):
            raise InvalidArgument("does not open the party's commitment", field="advert.nonce")
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
        """Fix U1 = L and the neighbour graph; RoundAborted if a member of L did not
        advertise (a subset would let the aggregator choose among graph seeds)."""
        self._require(ServerStage.ADVERTISE, "close advertise")
        u1 = self._config.ordered(set(self._adverts))
        missing = self._config.ordered(set(self._list) - set(u1))
        if missing:
            raise self._fail(f"parties committed but did not reveal: {name_list(missing)}", "u1")
        seed = graph_seed(self._config, self._list_digest, {p: self._adverts[p].nonce for p in u1})
        self._u1 = u1
        self._graph = graph.neighbours(u1, self._config.graph_degree, seed)
        self._binding = roster_binding(seed, roster_digest(self._adverts))
        # Holders are named for wrong shares only when no coalition of the corrupt holders
        # the threat model allows could have framed them (shamir.recover).
        self._max_bad = 0
        if self._config.threat is not None:
            corrupt, dropouts = self._config.tolerated()
            self._max_bad = params.assess(
                len(u1),
                self._config.graph_degree,
                self._config.threshold,
                self._config.threat,
                corrupt=corrupt,
                dropouts=dropouts,
            ).corrupt_holders
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
        """Fix U2 and route the envelopes; RoundAborted if |U2| is below
        :meth:`SecAggConfig.min_survivors` or a party's holders in U2 are fewer than t."""
        self._require(ServerStage.SHARE, "close share")
        cfg = self._config
        u2 = cfg.ordered(set(self._shares))
        floor = cfg.min_survivors()
        if len(u2) < floor:
            raise self._fail(f"only {len(u2)} parties sent shares, the round needs {floor}", "u2")
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

    def add_masked(
        self,
        party: str,
        y: U64Vector,
        complaints: Sequence[Complaint] = (),
        verify_key: VerifyKey | None = None,
    ) -> None:
        """Add ``party``'s masked vector to the running sum (the vector is not kept),
        with its complaints about envelopes that did not open for it.

        Each complaint must be signed by ``party`` (``verify_key``, its identity key)
        over :func:`complaint_transcript`, name a neighbour in U2, and carry the digest
        of the envelope that neighbour's was, as relayed here. Raises InvalidArgument
        or InvalidSignature otherwise, and nothing is added. Identical re-adds are
        no-ops; a different second vector or complaint set raises AlreadyExists.
        """
        self._require(ServerStage.MASK, "add a masked input")
        if not isinstance(party, str) or party not in self._inbox:
            raise InvalidArgument("is not in U2", field="party")
        vec = _vector(y, self._config.vector_length, "y")
        checked = self._check_complaints(party, complaints, verify_key)
        digest = _vector_digest(vec)
        if party in self._masked:
            known = self._masked[party]
            same = known is not None and hmac.compare_digest(known, digest)
            if same and self._complaints.get(party, ()) == checked:
                return
            raise AlreadyExists("party already sent a masked input", field="y")
        self._sum += vec
        self._masked[party] = digest
        if checked:
            self._complaints[party] = checked

    def _check_complaints(
        self, party: str, complaints: Sequence[Complaint], verify_key: VerifyKey | None
    ) -> tuple[Complaint, ...]:
        items = list(complaints)
        if not items:
            return ()
        if not isinstance(verify_key, VerifyKey):
            raise InvalidArgument("complaints need the accuser's key", field="verify_key")
        sent = {env.sender: env for env in self._inbox[party]}
        seen: set[str] = set()
        for i, c in enumerate(items):
            where = f"complaints[{i}]"
            if not isinstance(c, Complaint):
                raise InvalidArgument("must contain Complaint objects", field="complaints")
            if c.accuser != party:
                raise InvalidArgument("accuser is not the caller", field=f"{where}.accuser")
            env = sent.get(c.accused)
            if env is None:
                raise InvalidArgument(
                    "names a party that sent the caller no envelope", field=f"{where}.accused"
                )
            if c.accused in seen:
                raise InvalidArgument("names a party twice", field=f"{where}.accused")
            seen.add(c.accused)
            if not isinstance(c.digest, bytes) or not hmac.compare_digest(
                c.digest, envelope_digest(env)
            ):
                raise InvalidArgument(
                    "digest is not that of the envelope relayed", field=f"{where}.digest"
                )
            if not isinstance(c.signature, bytes):
                raise InvalidArgument("must be bytes", field=f"{where}.signature")
            transcript = complaint_transcript(
                self._config, self._binding, party, c.accused, c.digest
            )
            verify_key.verify(c.signature, transcript)
        return tuple(sorted(items, key=lambda c: self._config.index(c.accused)))

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

    def close_mask(
        self, withdrawn: Mapping[str, U64Vector] | None = None
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Fix U3 and open the consistency round; return (survivors U3, dropped U2 \\ U3).

        A party named in an accepted complaint is excluded as if it had dropped after
        sharing: ``withdrawn`` must hold the masked vector of each party in
        :attr:`to_withdraw` (as accepted), and it is taken out of the sum. Accused
        parties are recorded in :attr:`misbehaving` (also when the round then aborts).
        RoundAborted if |U3| is below :meth:`SecAggConfig.min_survivors` or some
        needed secret has fewer than t holders in U3 (for an accused party's mask key:
        holders whose envelope from it opened).
        """
        self._require(ServerStage.MASK, "close mask")
        cfg = self._config
        accused = self.accused
        given = dict(withdrawn or {})
        if set(given) != set(self.to_withdraw):
            raise InvalidArgument(
                f"must hold the masked vectors of exactly {list(self.to_withdraw)}",
                field="withdrawn",
            )
        total = self._sum.copy()
        for p, y in given.items():
            vec = _vector(y, cfg.vector_length, "withdrawn")
            known = self._masked[p]
            if known is not None and not hmac.compare_digest(known, _vector_digest(vec)):
                raise InvalidArgument(f"is not the vector {p!r} sent", field="withdrawn")
            total -= vec
        acc_set = frozenset(accused)
        # Named first, so that they stay named if the round cannot go on without them.
        for v in accused:
            first = cfg.ordered(self._accusers(v))
            others = f" and {len(first) - 1} more" if len(first) > 1 else ""
            self._misbehaving[v] = (
                f"its share envelope to {first[0]}{others} did not open (signed complaint)"
            )
        u3 = cfg.ordered(set(self._masked) - acc_set)
        floor = cfg.min_survivors()
        if len(u3) < floor:
            raise self._fail(
                f"only {len(u3)} parties sent masked inputs and were not accused, "
                f"the round needs {floor}",
                "u3",
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
            if not self._graph[v] & u3_set:
                continue  # no survivor masked with it: nothing to remove
            holders = self._key_holders(v, u3_set)
            if len(holders) < cfg.threshold:
                raise self._fail(
                    f"mask key of {v!r} has only {len(holders)} holders among survivors"
                    + (" whose share opened" if v in acc_set else ""),
                    "u3",
                )
        self._sum = total
        self._accused = accused
        self._u3 = u3
        self._dropped = dropped
        self._transcript = consistency_transcript(
            cfg, u3, dropped, binding=self._binding, accused=accused
        )
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
            holders = self._key_holders(v, signer_set)
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
        # No s-share of a party whose envelope to this one did not open: it has none.
        out |= {
            (o, ShareKind.MASK_KEY)
            for o in nbrs & set(self._dropped) & u2
            if party not in self._accusers(o)
        }
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

    def _verifier(self, owner: str, kind: ShareKind) -> Callable[[bytes], bool]:
        advert = self._adverts[owner]
        if kind is ShareKind.SELF_MASK:
            expected = advert.self_mask_commitment

            def check_seed(secret: bytes) -> bool:
                got = self_mask_commitment(self._config, owner, secret)
                return hmac.compare_digest(got, expected)

            return check_seed

        def check_key(secret: bytes) -> bool:
            return hmac.compare_digest(kex.KeyPair.from_private(secret).public, advert.s_public)

        return check_key

    def _recover(
        self, owner: str, kind: ShareKind, shares: list[shamir.Share], named: dict[str, str]
    ) -> bytes:
        """The verified secret; holders of shares off its polynomial go into ``named``."""
        cfg = self._config
        try:
            got = shamir.recover(
                shares,
                threshold=cfg.threshold,
                secret_len=SEED_BYTES,
                verify=self._verifier(owner, kind),
                max_attempts=MAX_LOCATE_ATTEMPTS,
                max_bad=self._max_bad,
            )
        except (Aborted, InvalidArgument) as exc:
            raise RoundAborted(
                f"{kind.name} of {owner!r}: {exc.message}; its shares or its commitment are wrong",
                field="reveals",
            ) from None
        what = "self-mask seed" if kind is ShareKind.SELF_MASK else "mask key"
        for x in got.bad:
            holder = cfg.parties[x - 1]
            named.setdefault(holder, f"revealed a wrong share of {owner}'s {what}")
        return got.secret

    def finish(self) -> U64Vector:
        """Remove the masks and return sum_{u in U3} x_u mod 2**64.

        Every secret is checked: a self-mask seed against the owner's signed
        commitment, a mask key against its advertised public key. A (t + 1)-th
        share, where there is one, is checked against the polynomial; when a check
        fails, other subsets of the shares are tried, and the holders of shares
        that disagree with the verified secret are recorded in
        :attr:`misbehaving`. Raises RoundAborted (without changing state) if some
        secret lacks t shares or no t of its shares pass the check.
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
            raise RoundAborted(f"fewer than {t} shares for: {name_list(lacking)}", field="reveals")
        total = self._sum.copy()
        u3 = frozenset(self._u3)
        named: dict[str, str] = {}
        for owner, kind in self._needed():
            secret = self._recover(owner, kind, collected[(owner, kind)], named)
            if kind is ShareKind.SELF_MASK:
                total -= prg.self_mask(secret, round_id=cfg.round_id, party=owner, length=n)
                continue
            keys = kex.KeyPair.from_private(secret)
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
        self._misbehaving.update(named)
        self._stage = ServerStage.FINISHED
        return total.copy()
