"""Round lifecycle: open -> phases with deadlines -> complete | aborted.

The :class:`RoundManager` is the aggregator's handler layer. gRPC servicers
decode a request, call one method here with the caller's identity (taken from
its certificate), and encode the result. Every phase input is written to the
store before it is acknowledged; the pure protocol state (``SecAggServer`` or
``HeAccumulator``) is a cache that can always be rebuilt from the store, which
is what makes a restart mid-round safe.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import hashlib
import hmac
import json
import math
import os
import secrets
import socket
import time
import weakref
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar, cast

from google.protobuf.message import DecodeError, Message

from aggregator.campaigns import (
    Campaign,
    CampaignRunner,
    CampaignStatus,
    check_name,
    new_campaign,
    round_id_for,
)
from aggregator.campaigns import campaigns as stored_campaigns
from aggregator.metrics import Metrics
from aggregator.plausible import implausible
from aggregator.plausible import reason as plausibility_reason
from aggregator.release import (
    BudgetExhausted,
    ReleaseInput,
    ReleasePolicy,
    build_report,
    noise_plan,
    release_rho,
)
from aggregator.store import (
    CorruptRound,
    LedgerEntry,
    RoundRecord,
    StaleRound,
    Store,
    StoreCorruption,
    Submission,
    now_ms,
)
from blindsum import codec, reportdoc, tracing
from blindsum.crypto.encoding import encode_parts
from blindsum.crypto.he import BfvParams, BfvPublicContext
from blindsum.crypto.sign import VerifyKey
from blindsum.dp.plan import noise_bound
from blindsum.errors import (
    Aborted,
    AlreadyExists,
    BlindsumError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RoundAborted,
    Unavailable,
)
from blindsum.log import get_logger
from blindsum.model import (
    PHASES,
    DpMode,
    DpSpec,
    Mode,
    OpenRoundSpec,
    Phase,
    Report,
    RoundState,
    RoundView,
    round_context,
)
from blindsum.protocol import params
from blindsum.protocol.he import (
    HeAccumulator,
    ReceiptRecord,
    SignedPublicContext,
    check_submission,
    ciphertext_digest,
)
from blindsum.protocol.secagg import (
    Advert,
    Commit,
    Complaint,
    Reveal,
    SealedShare,
    SecAggConfig,
    SecAggServer,
    name_list,
)
from blindsum.rpc.v1 import round_pb2
from blindsum.schema import Schema
from blindsum.transport.pki import Identity, Role, verify_identity_cert
from blindsum.types import U64Vector
from blindsum.window import round_window

log = get_logger("blindsum.aggregator.rounds")

_T = TypeVar("_T")
_M = TypeVar("_M", bound=Message)
#: One step of a round: whether a secagg round moved, or an he round to step further.
Step = bool | RoundRecord


@dataclass(frozen=True)
class RoundSettings:
    """Aggregator-wide limits and defaults for rounds."""

    default_phase_timeout_s: int = 60
    sparse_above: int = 64
    max_parties: int = 10_000
    max_vector_length: int = 1 << 20
    default_min_contributors: int = 3
    release: ReleasePolicy = field(default_factory=ReleasePolicy)
    threat: params.ThreatModel = params.DEFAULT_THREAT_MODEL
    lease_ttl_ms: int = 10_000


@dataclass(frozen=True)
class Ack:
    digest_hex: str
    replay: bool


class CustodianClient(Protocol):
    """How the aggregator reaches the custodian (in-process gRPC by default)."""

    async def public_context(self, context: bytes = b"") -> SignedPublicContext: ...

    async def decrypt(
        self,
        *,
        round_id: str,
        schema_id: str,
        chunks: Sequence[bytes],
        receipts: Sequence[ReceiptRecord],
        vector_length: int,
        min_receipts: int,
        schema_toml: str,
        context: bytes = b"",
    ) -> list[int]: ...


#: Longest a GetRound long poll is held open.
MAX_WATCH_MS = 10_000
#: How often a held long poll re-reads the store when another process may change a
#: round unannounced (a shared store without notifications).
WATCH_POLL_S = 0.5
#: ... and when every change is announced (one process serves the store, or the store
#: delivers other replicas' changes): only a safety net for a lost announcement.
WATCH_FALLBACK_S = 5.0
#: Threads that run store work (and the protocol steps that feed it) off the event
#: loop. In the scale bench at n = 100, six threads cost about 10 % more aggregator
#: CPU per party than one or two (GIL contention); two leave one free while the other
#: runs a long step (a reconstruction).
DB_THREADS = 2
#: How long the per-phase submission counts in a party's view may be reused (they
#: are progress information; a party's own status is always read fresh).
COUNTS_TTL_S = 0.25
#: Abort reasons are cut to this length: they travel in gRPC status messages, and
#: status metadata is capped (8 KB by default).
MAX_REASON_CHARS = 500
#: Ticks in a row on which a round fails for a reason other than an unreachable store
#: before its stored state is judged unusable and the round is aborted.
MAX_ROUND_FAILURES = 20
#: How long a party's identity certificate is used from memory before it is read again
#: (a renewal reaches the rosters within this).
IDENTITY_TTL_S = 60.0
#: How often (ms of the manager's clock) the ticker looks for campaign rounds to open.
CAMPAIGN_CHECK_MS = 1_000

#: How long an he round waits before asking an unreachable custodian again.
CUSTODIAN_RETRY_MS = 5_000


def _capped(reason: str) -> str:
    """A stored reason at most MAX_REASON_CHARS long: it is sent in the status of every
    later call about the round."""
    if len(reason) <= MAX_REASON_CHARS:
        return reason
    return reason[: MAX_REASON_CHARS - 1] + "…"


def _digest(*parts: bytes | str | int) -> str:
    return hashlib.sha256(encode_parts(*parts)).hexdigest()


def _masked_payload(
    round_id: str, schema_id: str, vector_bytes: bytes, complaints: Sequence[Complaint]
) -> bytes:
    """What a masked submission stores: the vector's bytes alone, or the request with
    its complaints. A request is always longer than its vector (the field's tag and
    length come first), so the two never look alike (:func:`_masked_from_payload`)."""
    if not complaints:
        return vector_bytes
    return round_pb2.SubmitMaskedRequest(
        round_id=round_id,
        schema_id=schema_id,
        masked_vector=vector_bytes,
        complaints=codec.complaints_to_pb(complaints),
    ).SerializeToString()


def _masked_from_payload(
    party: str, payload: bytes, length: int, invited: int
) -> tuple[U64Vector, list[Complaint]]:
    if len(payload) == 8 * length:
        return codec.vector_from_bytes(payload, length), []
    req = round_pb2.SubmitMaskedRequest.FromString(payload)
    complaints = codec.complaints_from_pb(party, req.complaints, max_count=invited)
    return codec.vector_from_bytes(req.masked_vector, length), complaints


def _new_round_id() -> str:
    return time.strftime("r-%Y%m%d-%H%M%S-", time.gmtime()) + secrets.token_hex(3)


def _dp_of(rec: RoundRecord) -> DpSpec:
    return DpSpec(
        mode=DpMode(rec.dp_mode),
        rho=rec.dp_rho,
        expected_parties=rec.dp_expected_parties,
        campaign=rec.dp_campaign,
        window=rec.dp_window,
    )


def _signed(vector: U64Vector) -> list[int]:
    return [int(v) for v in vector.astype("<u8").view("<i8")]


class RoundManager:
    """Owns every round: validation, persistence, phase transitions and release."""

    def __init__(
        self,
        store: Store,
        *,
        ca_cert_pem: bytes,
        settings: RoundSettings | None = None,
        custodian: CustodianClient | None = None,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        self.store = store
        self.ca_cert_pem = ca_cert_pem
        self.settings = settings or RoundSettings()
        self.custodian = custodian
        self._clock_ms = clock_ms
        # One lock per round: submissions to different rounds never wait for each other.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        # The loop this manager serves; store work runs on worker threads, and changes
        # they make are announced back on it.
        self._loop: asyncio.AbstractEventLoop | None = None
        # Store work runs on a few threads of its own (DB_THREADS): more only contend
        # for the GIL. The database connections are pooled in the store.
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=DB_THREADS, thread_name_prefix="blindsum-db"
        )
        #: How often a held long poll re-reads the store (see start()).
        self._poll_s = WATCH_POLL_S
        #: Opens the rounds campaigns are due; checked once a second of the clock.
        self.campaigns = CampaignRunner(store, self._open_round, clock_ms)
        self._campaigns_at = 0
        #: Set by the service when ``[metrics] listen`` is on.
        self.metrics: Metrics | None = None
        self._secagg: dict[str, SecAggServer] = {}
        self._secagg_version: dict[str, int] = {}
        #: round -> (round version, when read, submissions per phase): see _party_view.
        self._counts: dict[str, tuple[int, float, dict[str, int]]] = {}
        #: (round, kind) -> (round version, answer): see _materialised.
        self._memo: dict[tuple[str, str], tuple[int, Message]] = {}
        self._he: dict[str, HeAccumulator] = {}
        #: This process's name in round leases; any number of replicas may share a store.
        self.replica = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        #: round -> (fencing token, when this replica's lease expires, ms).
        self._leases: dict[str, tuple[int, int]] = {}
        self._schemas: dict[str, Schema] = {}
        #: party -> (identity key, identity certificate, when read): re-read after
        #: IDENTITY_TTL_S, so a renewed certificate goes out with rosters within a minute.
        self._verify_keys: dict[str, tuple[VerifyKey, bytes, float]] = {}
        #: context hash (b"" for the custodian's current one) -> signed context, parsed
        self._he_contexts: dict[bytes, tuple[SignedPublicContext, BfvPublicContext]] = {}
        self._custodian_retry_at: dict[str, int] = {}
        # Consecutive ticks on which a round failed (see _failed).
        self._failures: dict[str, int] = {}
        # Set (and replaced) whenever a round changes phase or closes: long polls wait on it.
        self._changed = asyncio.Event()

    # -- concurrency ------------------------------------------------------------

    def _round_lock(self, round_id: str) -> asyncio.Lock:
        lock = self._locks.get(round_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[round_id] = lock
        return lock

    def _bind(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()

    async def offload(self, fn: Callable[..., _T], /, *args: object, **kw: object) -> _T:
        """Run ``fn`` (store work and the protocol state it feeds) on a worker thread,
        so the event loop keeps answering other calls while the database works."""
        self._bind()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kw))

    def start(self) -> None:
        """Bind to the running loop and, where the store can tell, wake long polls on
        any replica's change (PostgreSQL LISTEN/NOTIFY). Polling stays as the fallback."""
        self._bind()
        if self.store.listen(lambda _round_id: self._notify()):
            log.info("store_listening")
            self._poll_s = WATCH_FALLBACK_S
        elif not self.store.shared:
            self._poll_s = WATCH_FALLBACK_S

    # -- lookups --------------------------------------------------------------

    def _schema(self, rec: RoundRecord) -> Schema:
        schema = self._schemas.get(rec.schema_id)
        if schema is None:
            schema = Schema.from_toml(rec.schema_toml)
            self._schemas[rec.schema_id] = schema
        return schema

    def _identity(self, party: str, *, stored: bool = False) -> tuple[VerifyKey, bytes]:
        """The party's Ed25519 key from its enrolled identity certificate, CA-checked.

        A revoked party's key is refused, except with ``stored``: replaying what the
        store accepted before the revocation (rebuilding a round after a restart) must
        not fail on it. Such a round still aborts at its release, naming the party."""
        cached = self._verify_keys.get(party)
        if cached is not None and time.monotonic() - cached[2] >= IDENTITY_TTL_S:
            cached = None
        if cached is None:
            record = self.store.party(party)
            if record.revoked and not stored:
                raise PermissionDenied(f"party {party!r} is revoked", field="party")
            _, raw = verify_identity_cert(
                record.identity_cert_pem,
                self.ca_cert_pem,
                expected=Identity(Role.PARTY, party),
            )
            cached = (VerifyKey.from_bytes(raw), record.identity_cert_pem, time.monotonic())
            self._verify_keys[party] = cached
        return cached[0], cached[1]

    def _round_for_party(self, party: str, round_id: str) -> RoundRecord:
        """The round, if ``party`` is invited to it. A round that does not exist and
        one the party is not invited to get the same NotFound, word for word, so a
        party cannot learn which round ids exist."""
        round_id = codec.check_round_id(round_id)
        unknown = NotFound(
            f"round {round_id!r} does not exist or does not invite this party", field="round_id"
        )
        try:
            rec = self.store.round(round_id)
        except NotFound:
            raise unknown from None
        if party not in rec.parties:
            raise unknown
        return rec

    def _forget(self, round_id: str) -> None:
        """Drop a closed round's protocol state: memory holds open rounds only, and the
        store keeps no masked vectors of a closed round."""
        self.store.drop_payloads(round_id, Phase.MASK.value)
        if self._leases.pop(round_id, None) is not None:
            self.store.release_lease(round_id, self.replica)
        self._uncache(round_id)
        self._custodian_retry_at.pop(round_id, None)

    def _materialised(self, rec: RoundRecord, kind: str, build: Callable[[], _M]) -> _M:
        """An answer that is the same for every caller at one version of the round (the
        commit list, the roster, the unmask request): built once per phase and then
        served as built, instead of re-encoding O(n) entries for each of n callers."""
        key = (rec.round_id, kind)
        hit = self._memo.get(key)
        if hit is not None and hit[0] == rec.version:
            return cast("_M", hit[1])
        message = build()
        self._memo[key] = (rec.version, message)
        return message

    def _uncache(self, round_id: str) -> None:
        """Drop a round's cached protocol state; the next use rebuilds it from the store."""
        for kind in ("commits", "roster", "unmask"):
            self._memo.pop((round_id, kind), None)
        self._counts.pop(round_id, None)
        self._secagg.pop(round_id, None)
        self._secagg_version.pop(round_id, None)
        self._he.pop(round_id, None)

    def close(self) -> None:
        """Stop the store threads (after the server stopped taking calls)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def release_leases(self) -> None:
        """Give up every lease this replica holds (a graceful stop), so another replica
        can drive those rounds at once instead of after the lease's time to live."""
        for round_id in list(self._leases):
            self.store.release_lease(round_id, self.replica)
        self._leases.clear()

    def cached_rounds(self) -> frozenset[str]:
        """Rounds whose protocol state is held in memory (a cache of the store)."""
        return frozenset(self._secagg) | frozenset(self._he)

    def require_invited(self, party: str, round_id: str) -> int:
        """PermissionDenied unless ``party`` is invited to ``round_id``: checked before a
        submission's fields are parsed, so an outsider learns nothing from the errors.
        Returns how many parties are invited (the bound on a message's entries)."""
        return len(self._round_for_party(party, round_id).parties)

    def _require_open(self, rec: RoundRecord, phase: Phase, rpc: str) -> None:
        if rec.state != RoundState.OPEN.value:
            detail = f": {rec.abort_reason}" if rec.abort_reason else ""
            raise FailedPrecondition(f"round {rec.round_id!r} is {rec.state}{detail}", field=rpc)
        if rec.phase != phase.value:
            raise FailedPrecondition(
                f"round {rec.round_id!r} is in phase {rec.phase}, not {phase.value}", field=rpc
            )

    def _check_schema(self, rec: RoundRecord, schema_id: str) -> None:
        if schema_id != rec.schema_id:
            raise InvalidArgument(
                f"schema id {schema_id[:16]}... does not match the round's {rec.schema_id[:16]}...",
                field="schema_id",
            )

    def view(self, round_id: str) -> RoundView:
        return self._view(self.store.round(codec.check_round_id(round_id)))

    async def watch(
        self, round_id: str, known: Phase | None, wait_ms: int, *, party: str | None = None
    ) -> RoundView:
        """The round's view once it is no longer in ``known`` (or closed), or after
        ``wait_ms`` (capped at MAX_WATCH_MS): a long poll, so parties learn of a new phase
        at once instead of on their next poll."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(max(wait_ms, 0), MAX_WATCH_MS) / 1000

        def read() -> RoundView:
            return self.view(round_id) if party is None else self.party_view(round_id, party)

        async def look() -> RoundView:
            return await self.offload(read)

        self._bind()
        while True:
            changed = self._changed  # taken before reading, so no change slips between
            view = await look()
            remaining = deadline - loop.time()
            if known is None or view.phase is not known or view.state is not RoundState.OPEN:
                return view
            if remaining <= 0:
                return view
            try:
                # Look again on every change, and at least every poll_s (a bounded
                # fallback: waiting parties cost nothing between changes).
                await asyncio.wait_for(changed.wait(), min(remaining, self._poll_s))
            except TimeoutError:
                if remaining <= self._poll_s:
                    return await look()

    def _notify(self) -> None:
        """Wake every long poll; callable from any thread."""
        loop = self._loop
        if loop is None:
            return
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is loop:
            self._wake()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _view(self, rec: RoundRecord, *, lists: bool = True) -> RoundView:
        """The operator's view: who completed each phase (``lists=False`` leaves the
        member lists and counts empty, for :meth:`_party_view` to fill)."""
        mode = Mode(rec.mode)
        members = (
            {p: tuple(self.store.submitted_parties(rec.round_id, p.value)) for p in PHASES[mode]}
            if lists
            else {}
        )
        return RoundView(
            round_id=rec.round_id,
            mode=mode,
            state=RoundState(rec.state),
            phase=Phase(rec.phase),
            schema_id=rec.schema_id,
            schema_toml=rec.schema_toml,
            parties=rec.parties,
            threshold=rec.threshold,
            min_contributors=rec.min_contributors,
            phase_deadline_ms=rec.phase_deadline_ms,
            submitted=members.get(Phase(rec.phase), ()),
            abort_reason=rec.abort_reason,
            vector_length=self._schema(rec).vector_length,
            created_ms=rec.created_ms,
            graph_degree=rec.graph_degree,
            committed=members.get(Phase.COMMIT, ()),
            advertised=members.get(Phase.ADVERTISE, ()),
            shared=members.get(Phase.SHARE, ()),
            masked=members.get(Phase.MASK, ()),
            unmasked=members.get(Phase.UNMASK, ()),
            consistent=members.get(Phase.CONSISTENCY, ()),
            dp=_dp_of(rec),
            window_start_ms=rec.window_start_ms,
            window_end_ms=rec.window_end_ms,
            threat=params.threat_from_json(rec.threat_json) if rec.threat_json else None,
            misbehaving=tuple((str(p), str(r)) for p, r in json.loads(rec.misbehaving_json)),
            counts=tuple((p, len(m)) for p, m in members.items()),
        )

    def _party_view(self, rec: RoundRecord, party: str) -> RoundView:
        """A party's view: counts and its own progress instead of the member lists. The
        party's progress is one key lookup per phase; the counts (a scan of the round's
        submissions) are shared by every poll for COUNTS_TTL_S, so n parties polling
        cost O(1) queries each, not O(n) rows each."""
        phases = PHASES[Mode(rec.mode)]
        now = time.monotonic()
        cached = self._counts.get(rec.round_id)
        if cached is not None and cached[0] == rec.version and now - cached[1] < COUNTS_TTL_S:
            counts = cached[2]
        else:
            counts = self.store.phase_counts(rec.round_id)
            self._counts[rec.round_id] = (rec.version, now, counts)
        mine = self.store.party_phases(rec.round_id, party, [p.value for p in phases])
        return replace(
            self._view(rec, lists=False),
            counts=tuple((p, counts.get(p.value, 0)) for p in phases),
            caller=party,
            caller_done=tuple(p for p in phases if p.value in mine),
        )

    def party_view(self, round_id: str, party: str) -> RoundView:
        """``party``'s view of a round it is invited to (PermissionDenied otherwise)."""
        return self._party_view(self._round_for_party(party, round_id), party)

    def list_rounds(self, *, party: str | None = None, only_open: bool = False) -> list[RoundView]:
        records = self.store.rounds(state=RoundState.OPEN.value if only_open else None)
        if party is None:
            return [self._view(r) for r in records]
        return [self._party_view(r, party) for r in records if party in r.parties]

    def report(self, round_id: str) -> Report:
        rec = self.store.round(codec.check_round_id(round_id))
        if rec.state in (RoundState.ABORTED.value, RoundState.REJECTED.value):
            raise FailedPrecondition(
                f"round {round_id!r} was {rec.state}: {rec.abort_reason}", field="round_id"
            )
        if rec.state != RoundState.COMPLETE.value:
            raise FailedPrecondition(
                f"round {round_id!r} has not completed (phase {rec.phase})", field="round_id"
            )
        data = self.store.release(round_id)
        try:
            return reportdoc.decode(data, field="stored release")
        except InvalidArgument as exc:
            raise BlindsumError(f"stored release for round {round_id!r} is corrupt: {exc}") from exc

    def _previous_reports(self, campaign: str, limit: int) -> list[Report]:
        """The campaign's latest releases; a corrupt one is skipped with a warning."""
        reports = []
        for round_id, data in self.store.campaign_releases(campaign, limit):
            try:
                reports.append(reportdoc.decode(data, field="stored release"))
            except InvalidArgument as exc:
                log.warning("corrupt_release_skipped", round_id=round_id, exc=exc)
        return reports

    # -- admin ----------------------------------------------------------------

    async def open_round(self, spec: OpenRoundSpec) -> RoundView:
        # An he round keeps the custodian context current when it opens, through a
        # key rotation (docs/DEPLOYING.md, "Rotating the custodian's key").
        he_context = await self.current_context_hash() if spec.mode is Mode.HE else ""
        return await self.offload(self._open_round, spec, he_context=he_context)

    def _open_round(
        self, spec: OpenRoundSpec, *, check_only: bool = False, he_context: str = ""
    ) -> RoundView:
        """Open a round; with ``check_only``, run every check but the DP budget (which
        depends on when the round opens) and store nothing."""
        parties = tuple(spec.parties)
        if not parties:
            raise InvalidArgument("at least one party must be invited", field="parties")
        if len(set(parties)) != len(parties):
            raise InvalidArgument("a party is listed twice", field="parties")
        if len(parties) > self.settings.max_parties:
            raise InvalidArgument(
                f"{len(parties)} parties exceed the limit of {self.settings.max_parties}",
                field="parties",
            )
        for name in parties:
            record = self.store.party(name)
            if record.revoked:
                raise FailedPrecondition(f"party {name!r} is revoked", field="parties")
        k = spec.min_contributors or self.settings.default_min_contributors
        if k < 1:
            raise InvalidArgument("must be at least 1", field="min_contributors")
        schema = Schema.from_toml(spec.schema_toml) if spec.schema_toml else Schema.default()
        if schema.vector_length > self.settings.max_vector_length:
            raise InvalidArgument(
                f"vector length {schema.vector_length} exceeds the limit "
                f"{self.settings.max_vector_length}",
                field="schema_toml",
            )
        n = len(parties)
        if n > schema.max_parties:
            raise InvalidArgument(
                f"{n} parties exceed the schema's max_parties {schema.max_parties}",
                field="parties",
            )
        if spec.mode is Mode.SECAGG:
            if n < 2:
                raise InvalidArgument("secagg needs at least 2 parties", field="parties")
            threat = spec.threat or self.settings.threat
            if spec.graph_degree or spec.threshold:
                # An operator's own choice is checked against the model, never trusted.
                degree = spec.graph_degree
                if not spec.threshold:
                    raise InvalidArgument(
                        "give --threshold with --degree (or neither, to derive both)",
                        field="threshold",
                    )
                chosen = params.check(n, degree, spec.threshold, threat)
            else:
                chosen = params.find(n, threat, sparse_above=self.settings.sparse_above)
            degree, threshold = chosen.wire_degree(), chosen.threshold
            threat_json = params.threat_to_json(threat)
            # SecAggConfig enforces the structural rules again (2 <= t <= holders).
            SecAggConfig(
                round_id="validate",
                schema_id=schema.schema_id,
                parties=parties,
                threshold=threshold,
                vector_length=schema.vector_length,
                graph_degree=degree,
                threat=threat,
            )
            first = Phase.COMMIT
        else:
            degree = 0
            threat_json = ""
            chosen = None
            threshold = spec.threshold or k
            if not 1 <= threshold <= n:
                raise InvalidArgument(f"must be between 1 and {n}", field="threshold")
            first = Phase.COLLECT
        now = self._clock_ms()
        window = round_window(
            spec.window_start_ms,
            spec.window_end_ms,
            now,
            allow_future=self.settings.release.allow_window_override,
        )
        # Distributed noise is sized for the threshold: a round completes with as few as
        # t parties' noise in the sum, whatever the aggregator does with the rest. The
        # ledger window defaults to the week (or month) of the ticket window's start.
        dp = self.settings.release.resolve(spec.dp, schema, threshold, window.start_ms)
        plan = noise_plan(schema, dp)
        bound = noise_bound(plan)
        if dp.mode is DpMode.DISTRIBUTED:
            # The bound assumes expected_parties draws; every invited party may add one.
            bound *= math.ceil(math.sqrt(n / dp.expected_parties))
        if spec.mode is Mode.SECAGG:
            schema.check_overflow(n, 64, noise_bound=bound)
        else:
            schema.check_overflow_mod(n, BfvParams().plain_modulus, noise_bound=bound)
        # Refuse early what the release would refuse anyway; the release checks again
        # because concurrent rounds may spend the same window.
        if not check_only:
            self.settings.release.check_budget(
                dp,
                release_rho(plan, dp, dp.expected_parties)[0],
                self.store.ledger_spent(dp.campaign, dp.window),
            )
        timeout = spec.phase_timeout_s or self.settings.default_phase_timeout_s
        rec = RoundRecord(
            round_id=codec.check_round_id(spec.round_id) if spec.round_id else _new_round_id(),
            mode=spec.mode.value,
            state=RoundState.OPEN.value,
            phase=first.value,
            schema_toml=schema.to_toml(),
            schema_id=schema.schema_id,
            parties=parties,
            threshold=threshold,
            min_contributors=k,
            graph_degree=degree,
            phase_timeout_s=timeout,
            phase_deadline_ms=now + 1000 * timeout,
            abort_reason="",
            created_ms=now,
            updated_ms=now,
            dp_mode=dp.mode.value,
            dp_rho=dp.rho,
            dp_expected_parties=dp.expected_parties,
            dp_campaign=dp.campaign,
            dp_window=dp.window,
            threat_json=threat_json,
            window_start_ms=window.start_ms,
            window_end_ms=window.end_ms,
            he_context=he_context if spec.mode is Mode.HE else "",
        )
        if check_only:
            return self._view(rec)
        with self.store.transaction():
            self.store.create_round(rec)
            self.store.audit(
                rec.round_id,
                "round_opened",
                mode=rec.mode,
                parties=list(parties),
                threshold=threshold,
                min_contributors=k,
                schema_id=rec.schema_id,
                dp_mode=dp.mode.value,
                dp_rho=dp.rho,
                campaign=dp.campaign,
                window=dp.window,
                graph_degree=degree,
                threat=threat_json,
                tolerated_corrupt=None if chosen is None else chosen.corrupt,
                tolerated_dropouts=None if chosen is None else chosen.dropouts,
                log2_privacy_failure=None if chosen is None else chosen.log2_privacy_failure,
                ticket_window=window.to_json(),
            )
        log.info(
            "round_opened",
            round_id=rec.round_id,
            mode=rec.mode,
            parties=len(parties),
            threshold=threshold,
            graph_degree=degree,
            threat=threat_json or None,
            ticket_window=window.describe(),
            ledger_window=dp.window,
        )
        return self._view(rec)

    # -- campaigns (issue 13) ---------------------------------------------------

    def _campaign_status(self, campaign: Campaign) -> CampaignStatus:
        now = self._clock_ms()
        last = campaign.schedule.last_fire(now)
        last_id, last_state = "", ""
        if last >= campaign.created_ms:
            rid = round_id_for(campaign.name, last)
            with contextlib.suppress(NotFound):
                last_id, last_state = rid, self.store.round(rid).state
        upcoming = 0 if campaign.paused else campaign.schedule.next_fire(now)
        return CampaignStatus(campaign, upcoming, last_id, last_state)

    def _find_campaign(self, name: str) -> Campaign:
        for c in stored_campaigns(self.store):
            if c.name == name:
                return c
        raise NotFound(f"campaign {name!r} does not exist", field="campaign")

    async def save_campaign(
        self, name: str, schedule: str, spec: OpenRoundSpec, *, overwrite: bool = False
    ) -> CampaignStatus:
        """Create (or with ``overwrite`` change) a campaign. Its spec is checked as
        open-round would check it, now; each round is checked again when it opens."""

        def run() -> CampaignStatus:
            now = self._clock_ms()
            if spec.dp is None:
                # Pinned now, so that every round of the campaign has the same DP.
                fixed = replace(spec, dp=DpSpec(mode=self.settings.release.dp_mode))
            else:
                fixed = spec
            campaign = new_campaign(name, schedule, fixed, now_ms=now)
            self._open_round(campaign.round_spec(campaign.schedule.next_fire(now)), check_only=True)
            self.store.put_campaign(
                name, str(campaign.schedule), campaign.spec_bytes(), now=now, replace=overwrite
            )
            log.info("campaign_saved", campaign=name, schedule=str(campaign.schedule))
            return self._campaign_status(self._find_campaign(name))

        return await self.offload(run)

    async def list_campaigns(self) -> list[CampaignStatus]:
        def run() -> list[CampaignStatus]:
            return [self._campaign_status(c) for c in stored_campaigns(self.store)]

        return await self.offload(run)

    async def set_campaign_paused(self, name: str, paused: bool) -> CampaignStatus:
        def run() -> CampaignStatus:
            self.store.set_campaign_paused(check_name(name), paused, now=self._clock_ms())
            return self._campaign_status(self._find_campaign(name))

        return await self.offload(run)

    async def delete_campaign(self, name: str) -> CampaignStatus:
        def run() -> CampaignStatus:
            status = self._campaign_status(self._find_campaign(check_name(name)))
            self.store.delete_campaign(name)
            return status

        return await self.offload(run)

    async def run_campaigns(self) -> list[str]:
        """Open the rounds campaigns are due (the ticker calls this); the ids opened."""
        due = await self.offload(self.campaigns.due)
        he = any(c.spec.mode is Mode.HE for c, _ in due)
        he_context = await self.current_context_hash() if he else ""
        opened = await self.offload(self.campaigns.run, due, he_context)
        if opened:
            self._notify()
            if self.metrics is not None:
                for rid in opened:
                    self.metrics.campaign_rounds.labels(rid.rsplit("-", 1)[0]).inc()
        return opened

    async def abort(self, round_id: str, reason: str) -> RoundView:
        def run() -> RoundView:
            rec = self.store.round(round_id)
            if rec.state != RoundState.OPEN.value:
                raise FailedPrecondition(f"round {round_id!r} is already {rec.state}")
            return self._view(self._abort(rec, reason or "aborted by the operator"))

        codec.check_round_id(round_id)
        async with self._round_lock(round_id):
            return await self.offload(run)

    def _abort_if_open(self, round_id: str, reason: str) -> None:
        """Abort the round as it is in the store now, unless it closed meanwhile."""
        rec = self.store.round(round_id)
        if rec.state == RoundState.OPEN.value:
            self._abort(rec, reason)

    def _abort(
        self, rec: RoundRecord, reason: str, *, state: RoundState = RoundState.ABORTED
    ) -> RoundRecord:
        """End the round without a release: ABORTED, or REJECTED when its totals
        failed the plausibility checks."""
        reason = _capped(reason)
        self._phase_done(rec)
        rec = replace(
            rec,
            state=state.value,
            phase=Phase.DONE.value,
            abort_reason=reason,
            updated_ms=self._clock_ms(),
        )
        event = f"round_{state.value}"
        with self.store.transaction():
            rec = self.store.update_round(rec, lease=self._held(rec.round_id))
            self.store.audit(rec.round_id, event, reason=reason)
        self._forget(rec.round_id)
        log.warning(event, round_id=rec.round_id, reason=reason)
        self._notify()
        return rec

    # -- secagg state cache -----------------------------------------------------

    def _secagg_config(self, rec: RoundRecord) -> SecAggConfig:
        return SecAggConfig(
            round_id=rec.round_id,
            schema_id=rec.schema_id,
            parties=rec.parties,
            threshold=rec.threshold,
            vector_length=self._schema(rec).vector_length,
            graph_degree=rec.graph_degree,
            threat=params.threat_from_json(rec.threat_json) if rec.threat_json else None,
            context=round_context(
                window_start_ms=rec.window_start_ms,
                window_end_ms=rec.window_end_ms,
                dp=_dp_of(rec),
                min_contributors=rec.min_contributors,
            ),
        )

    def _server(self, rec: RoundRecord) -> SecAggServer:
        """The pure secagg server for a round, rebuilt from the store when not cached or
        cached at another version of the round (another replica moved it)."""
        srv = self._secagg.get(rec.round_id)
        if srv is not None and self._secagg_version.get(rec.round_id) == rec.version:
            return srv
        config = self._secagg_config(rec)
        srv = SecAggServer(config)
        order = PHASES[Mode.SECAGG]
        # How far the round got; DONE counts as past every phase.
        reached = order.index(Phase(rec.phase)) if Phase(rec.phase) in order else len(order)
        rid = rec.round_id
        closers = (
            srv.close_commit,
            srv.close_advertise,
            srv.close_share,
            lambda: self._close_mask(srv, rec),
            srv.close_consistency,
        )
        for i, phase in enumerate(order):
            if i > reached:
                break
            if i > 0:
                closers[i - 1]()
            if phase is Phase.MASK:
                acc = self.store.accumulator(rid)
                if acc is not None:
                    # A round whose masked vectors were summed into one row (before store v3).
                    vector = codec.vector_from_bytes(acc[0], config.vector_length)
                    srv.restore_masked(vector, acc[1])
                    continue
            for sub in self.store.iter_submissions(rid, phase.value):
                self._apply_stored(srv, rec, phase, sub)
        self._secagg[rid] = srv
        self._secagg_version[rid] = rec.version
        return srv

    def _close_mask(self, srv: SecAggServer, rec: RoundRecord) -> None:
        """Close the mask phase, taking the accused parties' stored vectors out of the sum."""
        withdrawn: dict[str, U64Vector] = {}
        if srv.to_withdraw:
            length = srv.config.vector_length
            for sub in self.store.iter_submissions(
                rec.round_id, Phase.MASK.value, parties=srv.to_withdraw
            ):
                vector, _ = _masked_from_payload(
                    sub.party, sub.payload or b"", length, len(rec.parties)
                )
                withdrawn[sub.party] = vector
        srv.close_mask(withdrawn)

    def _apply_stored(
        self, srv: SecAggServer, rec: RoundRecord, phase: Phase, sub: Submission
    ) -> None:
        """Give ``srv`` one stored submission, as it was accepted."""
        party, payload = sub.party, sub.payload or b""
        if phase is Phase.COMMIT:
            commit = round_pb2.CommitRequest.FromString(payload)
            srv.add_commit(
                codec.commit_from_request(party, commit), self._identity(party, stored=True)[0]
            )
        elif phase is Phase.ADVERTISE:
            req = round_pb2.AdvertiseRequest.FromString(payload)
            srv.add_advert(
                codec.advert_from_request(party, req), self._identity(party, stored=True)[0]
            )
        elif phase is Phase.SHARE:
            sreq = round_pb2.SubmitSharesRequest.FromString(payload)
            srv.add_shares(party, codec.shares_from_pb(sreq.envelopes, max_count=len(rec.parties)))
        elif phase is Phase.MASK:
            if payload:
                length = self._schema(rec).vector_length
                vector, complaints = _masked_from_payload(party, payload, length, len(rec.parties))
                key = self._identity(party, stored=True)[0] if complaints else None
                srv.add_masked(party, vector, complaints, key)
        elif phase is Phase.CONSISTENCY:
            creq = round_pb2.SubmitConsistencyRequest.FromString(payload)
            srv.add_consistency(party, creq.signature, self._identity(party, stored=True)[0])
        elif phase is Phase.UNMASK:
            ureq = round_pb2.SubmitUnmaskRequest.FromString(payload)
            srv.add_reveals(
                party, codec.reveals_from_pb(ureq.shares, max_count=2 * len(rec.parties))
            )

    def _fresh_server(self, rec: RoundRecord) -> SecAggServer:
        """The protocol state, brought up to date with the store first: rebuilt if the
        round moved on (its version), or given the current phase's submissions that other
        replicas accepted (only those are read). Whoever closes a phase therefore closes
        it over every stored submission."""
        srv = self._secagg.get(rec.round_id)
        if srv is None or self._secagg_version.get(rec.round_id) != rec.version:
            self._uncache(rec.round_id)
            return self._server(rec)
        # At one version only the open phase takes submissions (a closed phase's count
        # was checked when it closed), so one count tells whether the cache is behind.
        if self.store.phase_count(rec.round_id, rec.phase) == srv.accepted_counts().get(
            rec.phase, 0
        ):
            return srv
        phase = Phase(rec.phase)
        known = srv.accepted_parties(phase.value)
        missing = [
            p for p in self.store.submitted_parties(rec.round_id, phase.value) if p not in known
        ]
        with self._evict_on_error(rec):
            for sub in self.store.iter_submissions(rec.round_id, phase.value, parties=missing):
                self._apply_stored(srv, rec, phase, sub)
        return srv

    def _lease(self, rec: RoundRecord) -> tuple[str, int] | None:
        """Take or renew this replica's lease on driving ``rec`` forward (None: another
        replica holds it, and only it closes phases and releases). A lease with more
        than half its time to live left is used as it is, without a round trip: every
        write it guards is fenced by its token in the store anyway."""
        now = self._clock_ms()
        ttl = self.settings.lease_ttl_ms
        held = self._leases.get(rec.round_id)
        if held is not None and now < held[1] - ttl // 2:
            return self.replica, held[0]
        token = self.store.acquire_lease(rec.round_id, self.replica, now=now, ttl_ms=ttl)
        if token is None:
            self._leases.pop(rec.round_id, None)
            return None
        self._leases[rec.round_id] = (token, now + ttl)
        return self.replica, token

    def _held(self, round_id: str) -> tuple[str, int] | None:
        held = self._leases.get(round_id)
        return None if held is None else (self.replica, held[0])

    @contextlib.contextmanager
    def _evict_on_error(self, rec: RoundRecord) -> Iterator[None]:
        """Drop the cached protocol state if a step fails between memory and store.

        The cache is rebuilt from the store on next use, so memory never holds an
        input that the store does not.
        """
        try:
            yield
        except BaseException:
            self._uncache(rec.round_id)
            raise

    # -- secagg handlers --------------------------------------------------------

    def _replay(self, rec: RoundRecord, phase: Phase, party: str, digest: str) -> Ack | None:
        """An identical retry's acknowledgement; one indexed lookup (it used to read every
        submission of the phase, payloads included: O(n^2) per phase)."""
        known = self.store.submission_digest(rec.round_id, phase.value, party)
        if known is None:
            return None
        if known == digest:
            return Ack(digest, True)
        raise AlreadyExists(
            f"party {party!r} already submitted a different {phase.value} message",
            field=phase.value,
        )

    async def _accept(
        self,
        party: str,
        round_id: str,
        phase: Phase,
        rpc: str,
        *,
        digest: str,
        apply: Callable[[RoundRecord], None],
        payload: bytes | None,
        schema_id: str | None = None,
    ) -> Ack:
        """The one path every submission takes.

        An identical retry is acknowledged as a replay, whatever the phase is now.
        Otherwise the round must be open and in ``phase``; ``apply`` validates the
        input against the protocol state; the submission is written once, as it came,
        before the acknowledgement, and the round may then advance. The work runs on a
        worker thread under the round's lock; other rounds are not held up.
        """

        def run() -> tuple[Ack, Step]:
            rec = self._round_for_party(party, round_id)
            replay = self._replay(rec, phase, party, digest)
            if replay:
                return replay, False
            self._require_open(rec, phase, rpc)
            if schema_id is not None:
                self._check_schema(rec, schema_id)
            with self._evict_on_error(rec):
                apply(rec)
                self.store.put_submission(
                    rec.round_id, phase.value, party, digest, payload, open_phase=True
                )
            log.info("submission", round_id=rec.round_id, phase=phase.value, party=party)
            # The submission is stored and will be acknowledged whatever happens next.
            # Its first step forward runs here, on the same thread (after a submission,
            # from this replica's cache alone: see _advance).
            try:
                return Ack(digest, False), self._step(rec.round_id, fresh=False)
            except StaleRound:
                # Another writer moved the round meanwhile.
                self._uncache(rec.round_id)
            except Exception as exc:
                # Left to the ticker, which retries the round or aborts it.
                self._uncache(rec.round_id)
                log.warning("advance_failed", round_id=rec.round_id, exc=exc)
            return Ack(digest, False), False

        async with self._round_lock(round_id):
            ack, step = await self.offload(run)
            if step is not False:
                try:
                    await self._advance(round_id, first=step)
                except StaleRound:
                    self._uncache(round_id)
            return ack

    async def commit(
        self, party: str, round_id: str, schema_id: str, commit: Commit, payload: bytes
    ) -> Ack:
        def apply(rec: RoundRecord) -> None:
            self._server(rec).add_commit(commit, self._identity(party)[0])

        return await self._accept(
            party,
            round_id,
            Phase.COMMIT,
            "Commit",
            digest=_digest(commit.commitment, commit.signature),
            apply=apply,
            payload=payload,
            schema_id=schema_id,
        )

    async def commits(self, party: str, round_id: str) -> round_pb2.CommitList:
        def run() -> round_pb2.CommitList:
            rec = self._round_for_party(party, round_id)
            if rec.mode != Mode.SECAGG.value or rec.phase == Phase.COMMIT.value:
                raise FailedPrecondition(
                    f"round {rec.round_id!r} has no commit list yet (phase {rec.phase})",
                    field="GetCommits",
                )
            if rec.state != RoundState.OPEN.value:
                raise FailedPrecondition(
                    f"round {rec.round_id!r} is {rec.state}", field="GetCommits"
                )

            def build() -> round_pb2.CommitList:
                srv = self._server(rec)
                return round_pb2.CommitList(
                    round_id=rec.round_id,
                    commits=[
                        codec.signed_commit_to_pb(c, self._identity(p)[1])
                        for p, c in srv.commits().items()
                    ],
                )

            return self._materialised(rec, "commits", build)

        async with self._round_lock(round_id):
            return await self.offload(run)

    async def advertise(
        self, party: str, round_id: str, schema_id: str, advert: Advert, payload: bytes
    ) -> Ack:
        def apply(rec: RoundRecord) -> None:
            self._server(rec).add_advert(advert, self._identity(party)[0])

        digest = _digest(
            advert.c_public,
            advert.s_public,
            advert.signature,
            advert.nonce,
            advert.self_mask_commitment,
        )
        return await self._accept(
            party,
            round_id,
            Phase.ADVERTISE,
            "Advertise",
            digest=digest,
            apply=apply,
            payload=payload,
            schema_id=schema_id,
        )

    async def roster(self, party: str, round_id: str) -> round_pb2.Roster:
        def run() -> round_pb2.Roster:
            rec = self._round_for_party(party, round_id)
            if rec.phase in (Phase.COMMIT.value, Phase.ADVERTISE.value) or (
                rec.mode != Mode.SECAGG.value
            ):
                raise FailedPrecondition(
                    f"round {rec.round_id!r} has no roster yet (phase {rec.phase})",
                    field="GetRoster",
                )
            if rec.state != RoundState.OPEN.value:
                raise FailedPrecondition(
                    f"round {rec.round_id!r} is {rec.state}", field="GetRoster"
                )

            def build() -> round_pb2.Roster:
                srv = self._server(rec)
                return round_pb2.Roster(
                    round_id=rec.round_id,
                    adverts=[
                        codec.signed_advert_to_pb(a, self._identity(p)[1])
                        for p, a in sorted(srv.roster().items())
                    ],
                )

            return self._materialised(rec, "roster", build)

        async with self._round_lock(round_id):
            return await self.offload(run)

    async def submit_shares(
        self, party: str, round_id: str, shares: Sequence[SealedShare], payload: bytes
    ) -> Ack:
        def apply(rec: RoundRecord) -> None:
            self._server(rec).add_shares(party, shares)

        ordered = sorted(shares, key=lambda s: s.receiver)
        digest = _digest(
            *[p for s in ordered for p in (s.sender, s.receiver, s.nonce, s.ciphertext)]
        )
        return await self._accept(
            party,
            round_id,
            Phase.SHARE,
            "SubmitShares",
            digest=digest,
            apply=apply,
            payload=payload,
        )

    async def envelopes(self, party: str, round_id: str) -> tuple[list[SealedShare], list[str]]:
        def run() -> tuple[list[SealedShare], list[str]]:
            rec = self._round_for_party(party, round_id)
            if rec.mode != Mode.SECAGG.value or rec.phase in (
                Phase.COMMIT.value,
                Phase.ADVERTISE.value,
                Phase.SHARE.value,
            ):
                raise FailedPrecondition(
                    f"envelopes are not ready (phase {rec.phase})", field="GetEnvelopes"
                )
            if rec.state != RoundState.OPEN.value:
                raise FailedPrecondition(f"round {rec.round_id!r} is {rec.state}")
            srv = self._server(rec)
            return list(srv.shares_for(party)), list(srv.u2)

        async with self._round_lock(round_id):
            return await self.offload(run)

    async def submit_masked(
        self,
        party: str,
        round_id: str,
        schema_id: str,
        vector_bytes: bytes,
        complaints: Sequence[Complaint] = (),
    ) -> Ack:
        def apply(rec: RoundRecord) -> None:
            srv = self._server(rec)
            vector = codec.vector_from_bytes(vector_bytes, srv.config.vector_length)
            key = self._identity(party)[0] if complaints else None
            srv.add_masked(party, vector, complaints, key)

        # The vector is written once, as the submission's payload; the sum is rebuilt
        # from the stored vectors when the round's state is rebuilt. There is no running
        # sum row to rewrite on every submission (it was m * 8 bytes of write per vector
        # into one hot row). The payloads are dropped when the round closes. With
        # complaints, the payload is the request itself (_masked_payload).
        parts = [p for c in complaints for p in (c.accused, c.digest, c.signature)]
        return await self._accept(
            party,
            round_id,
            Phase.MASK,
            "SubmitMasked",
            digest=_digest(vector_bytes, *parts),
            apply=apply,
            payload=_masked_payload(round_id, schema_id, vector_bytes, complaints),
            schema_id=schema_id,
        )

    async def unmask_request(self, party: str, round_id: str) -> round_pb2.UnmaskRequest:
        """The survivor and dropped lists; in the unmask phase also the consistency signatures."""

        def run() -> round_pb2.UnmaskRequest:
            rec = self._round_for_party(party, round_id)
            if rec.phase == Phase.CONSISTENCY.value:
                self._require_open(rec, Phase.CONSISTENCY, "GetUnmaskRequest")
            else:
                self._require_open(rec, Phase.UNMASK, "GetUnmaskRequest")
            srv = self._server(rec)
            if party in srv.accused:
                raise PermissionDenied(
                    f"party {party!r} was excluded: {srv.misbehaving.get(party, 'accused')}",
                    field="GetUnmaskRequest",
                )
            if party not in srv.u3:
                raise PermissionDenied(
                    f"party {party!r} did not submit a masked vector", field="GetUnmaskRequest"
                )
            if rec.phase == Phase.UNMASK.value and party not in srv.consistency_signers:
                raise PermissionDenied(
                    f"party {party!r} did not sign the survivor lists", field="GetUnmaskRequest"
                )

            def build() -> round_pb2.UnmaskRequest:
                signatures = srv.consistency_signatures() if rec.phase == Phase.UNMASK.value else {}
                return round_pb2.UnmaskRequest(
                    round_id=rec.round_id,
                    survivors=list(srv.u3),
                    dropped=list(srv.dropped),
                    signatures=codec.signatures_to_pb(signatures),
                    accused=list(srv.accused),
                )

            return self._materialised(rec, "unmask", build)

        async with self._round_lock(round_id):
            return await self.offload(run)

    async def submit_consistency(
        self, party: str, round_id: str, signature: bytes, payload: bytes
    ) -> Ack:
        def apply(rec: RoundRecord) -> None:
            self._server(rec).add_consistency(party, signature, self._identity(party)[0])

        return await self._accept(
            party,
            round_id,
            Phase.CONSISTENCY,
            "SubmitConsistency",
            digest=_digest(signature),
            apply=apply,
            payload=payload,
        )

    async def submit_unmask(
        self, party: str, round_id: str, reveals: Sequence[Reveal], payload: bytes
    ) -> Ack:
        def apply(rec: RoundRecord) -> None:
            self._server(rec).add_reveals(party, reveals)

        digest = _digest(*[p for r in reveals for p in (r.owner, r.kind.value, r.share)])
        return await self._accept(
            party,
            round_id,
            Phase.UNMASK,
            "SubmitUnmask",
            digest=digest,
            apply=apply,
            payload=payload,
        )

    # -- he handlers -------------------------------------------------------------

    async def _context(self, context: bytes = b"") -> tuple[SignedPublicContext, BfvPublicContext]:
        """The custodian's signed public context with hash ``context`` (empty: its
        current one), and parsed; asked once per process."""
        if self.custodian is None:
            raise FailedPrecondition("no custodian is configured for he rounds")
        hit = self._he_contexts.get(context)
        if hit is None:
            signed = await self.custodian.public_context(context)
            hit = self._he_contexts.get(signed.hash)
            if hit is None:
                parsed = BfvPublicContext.from_bytes(signed.context, expected=signed.params)
                hit = (signed, parsed)
                self._he_contexts[signed.hash] = hit
            # Under b"" too: the current key changes only with a restart (rotate-bfv).
            self._he_contexts[context] = hit
        return hit

    async def _round_context(
        self, rec: RoundRecord
    ) -> tuple[SignedPublicContext, BfvPublicContext]:
        """The context an he round uses: the one fixed when it opened (the current one
        for rounds from before key rotation)."""
        return await self._context(bytes.fromhex(rec.he_context))

    async def current_context_hash(self) -> str:
        """The hex hash of the custodian's current context ("" without a custodian)."""
        if self.custodian is None:
            return ""
        return (await self._context())[0].hash.hex()

    async def public_context(self, party: str, round_id: str) -> SignedPublicContext:
        rec = self._round_for_party(party, round_id)
        if rec.mode != Mode.HE.value:
            raise FailedPrecondition(
                f"round {rec.round_id!r} is not an he round", field="GetPublicContext"
            )
        return (await self._round_context(rec))[0]

    async def _accumulator(self, rec: RoundRecord) -> HeAccumulator:
        """The round's homomorphic sum over every stored ciphertext, computed when the
        phase closes (off the event loop). Submissions never rewrite a running sum, so
        any replica may accept them and no replica's cache can go stale."""
        acc = self._he.get(rec.round_id)
        count = await self.offload(self.store.phase_count, rec.round_id, Phase.COLLECT.value)
        if acc is not None and len(acc) == count:
            return acc
        public = (await self._round_context(rec))[1]
        length = self._schema(rec).vector_length
        stored = await self.offload(self.store.accumulator, rec.round_id)

        def build() -> HeAccumulator:
            acc = HeAccumulator(rec.round_id, rec.schema_id, public, length)
            if stored is not None:
                # A round from before store v4 kept one running-sum row and receipts
                # (the ciphertext digest in chunks[0]) instead of the ciphertexts.
                container = round_pb2.SubmitCiphertextRequest.FromString(stored[0])
                receipts = []
                for sub in self.store.iter_submissions(rec.round_id, Phase.COLLECT.value):
                    r = round_pb2.SubmitCiphertextRequest.FromString(sub.payload or b"")
                    receipts.append(ReceiptRecord(sub.party, r.chunks[0], r.receipt_signature))
                acc.restore(list(container.chunks), receipts)
                return acc
            for sub in self.store.iter_submissions(rec.round_id, Phase.COLLECT.value, batch=16):
                req = round_pb2.SubmitCiphertextRequest.FromString(sub.payload or b"")
                # Verified when it was accepted; parsed and added here.
                acc.add(sub.party, list(req.chunks), req.receipt_signature)
            return acc

        acc = await asyncio.to_thread(build)
        self._he[rec.round_id] = acc
        return acc

    async def submit_ciphertext(
        self,
        party: str,
        round_id: str,
        schema_id: str,
        chunks: Sequence[bytes],
        receipt_signature: bytes,
        *,
        context: bytes = b"",
    ) -> Ack:
        """``context``: the hash of the custodian context the party encrypted under, as
        its receipt binds it; it must be the one this aggregator hands out."""
        ct_digest = ciphertext_digest(chunks)
        # Invited first, so an outsider learns nothing about the custodian.
        rec0 = await self.offload(self._round_for_party, party, round_id)
        signed, public = await self._round_context(rec0)
        current = signed.hash
        if not hmac.compare_digest(context, current):
            raise FailedPrecondition(
                f"encrypted under custodian context {context.hex()[:16] or '(none)'}, "
                f"this round's is {current.hex()[:16]}: fetch GetPublicContext again",
                field="context_hash",
            )

        def apply(rec: RoundRecord) -> None:
            # The receipt must verify and the ciphertext parse before it is stored.
            check_submission(
                public,
                round_id=rec.round_id,
                schema_id=rec.schema_id,
                vector_length=self._schema(rec).vector_length,
                party=party,
                chunks=chunks,
                signature=receipt_signature,
                verify_key=self._identity(party)[0],
                context=current,
            )

        # Each ciphertext is stored once, with its receipt; the sum is taken at close.
        payload = round_pb2.SubmitCiphertextRequest(
            chunks=list(chunks), receipt_signature=receipt_signature
        ).SerializeToString()
        return await self._accept(
            party,
            round_id,
            Phase.COLLECT,
            "SubmitCiphertext",
            digest=_digest(ct_digest, receipt_signature),
            apply=apply,
            payload=payload,
            schema_id=schema_id,
        )

    # -- phase transitions ------------------------------------------------------

    async def tick(self) -> None:
        """Open the rounds campaigns are due, and advance every open round whose phase
        deadline has passed.

        A protocol failure aborts only the round it belongs to; anything else
        (a locked database, an unreachable custodian) is logged and retried on
        the next tick, so one bad round never stops the others.
        """
        if self._clock_ms() >= self._campaigns_at:
            self._campaigns_at = self._clock_ms() + CAMPAIGN_CHECK_MS
            try:
                await self.run_campaigns()
            except Unavailable:
                raise
            except Exception as exc:
                log.error("campaigns_failed", exc=exc)
        for rec in await self.offload(self.store.rounds, state=RoundState.OPEN.value):
            rid = rec.round_id
            async with self._round_lock(rid):
                try:
                    await self._advance(rid)
                    self._failures.pop(rid, None)
                except Unavailable:
                    # The store is away: no round can be judged now. Keep every round as
                    # it is, and let the ticker report the outage and try again.
                    self._uncache(rid)
                    raise
                except StaleRound:
                    # Another writer moved the round first: this cache is out of date.
                    self._uncache(rid)
                except CorruptRound as exc:
                    self._uncache(rid)
                    log.error("tick_failed", round_id=rid, exc=exc)
                    await self._failed(rid, exc)
                except StoreCorruption as exc:
                    # A stored payload fails its MAC: nothing computed from it is released.
                    log.error("round_failed", round_id=rid, exc=exc)
                    self._uncache(rid)
                    await self.offload(self._abort_if_open, rid, exc.message)
                except BlindsumError as exc:
                    log.error("round_failed", round_id=rid, exc=exc)
                    self._uncache(rid)
                    await self.offload(self._abort_if_open, rid, f"internal failure: {exc}")
                except Exception as exc:
                    self._uncache(rid)
                    log.error("tick_failed", round_id=rid, exc=exc)
                    # Only failures that retrying cannot cure (a stored value that does
                    # not decode) count towards aborting; a locked database does not.
                    if isinstance(exc, (ValueError, TypeError, KeyError, IndexError, DecodeError)):
                        await self._failed(rid, exc)
        for rid in sorted(self.store.corrupt_rounds):
            async with self._round_lock(rid):
                await self._failed(rid, CorruptRound("its stored record cannot be decoded"))

    async def _failed(self, round_id: str, exc: Exception) -> None:
        """Count one more tick on which ``round_id`` could not be advanced for a reason
        that is not the store being away; after MAX_ROUND_FAILURES in a row its stored
        state is taken to be unusable (damaged, altered) and the round is aborted, with
        no record read, so it stops failing and every other round keeps going."""
        count = self._failures.get(round_id, 0) + 1
        self._failures[round_id] = count
        if count < MAX_ROUND_FAILURES:
            return
        self._failures.pop(round_id, None)
        reason = _capped(f"stored state cannot be used: {type(exc).__name__}: {exc}")
        if await self.offload(self.store.force_abort, round_id, reason, now=self._clock_ms()):
            log.error("round_aborted", round_id=round_id, reason=reason)
            self._forget(round_id)
            self._notify()

    async def _advance(self, round_id: str, *, first: Step | None = None) -> None:
        """Move the round forward while its current phase is finished. Only the replica
        holding the round's lease does; the others leave it to that one. The caller
        holds the round's lock. ``first``: the outcome of a first step already taken."""
        step = first
        while True:
            if step is None:
                step = await self.offload(self._step, round_id, fresh=True)
            moved = await self._advance_he(step) if isinstance(step, RoundRecord) else step
            if not moved:
                return
            step = None

    def _step(self, round_id: str, *, fresh: bool) -> Step:
        """One synchronous step of a round this replica drives: whether a secagg round
        moved, or the record of an he round (whose step needs the custodian, so the
        caller takes it asynchronously). ``fresh=False`` (right after a submission):
        judge a secagg phase by this replica's cache alone, with no query; what other
        replicas stored is counted at the next tick, and a close is checked against
        the store's count anyway (update_round(closing=...))."""
        rec = self._driving(round_id)
        if rec is None:
            return False
        if rec.mode == Mode.SECAGG.value:
            return self._advance_secagg(rec, fresh=fresh)
        return rec

    def _driving(self, round_id: str) -> RoundRecord | None:
        """The round, if it is open and this replica holds (or just took) its lease."""
        rec = self.store.round(round_id)
        if rec.state != RoundState.OPEN.value or self._lease(rec) is None:
            return None
        return rec

    def _phase_over(
        self, rec: RoundRecord, expected: Collection[str], done: Collection[str]
    ) -> bool:
        if self._clock_ms() >= rec.phase_deadline_ms:
            return True
        # Counts first: the set comparison (O(n)) runs only once the phase may be full.
        return len(done) >= len(expected) and set(expected) <= set(done)

    def _next_phase(self, rec: RoundRecord, phase: Phase, closed: int) -> None:
        """Move to ``phase``, closing the current one over ``closed`` submissions
        (StaleRound if the store holds another number: another replica took one)."""
        deadline = self._clock_ms() + 1000 * rec.phase_timeout_s
        closing = (rec.phase, closed)
        closing_rec = rec
        rec = rec.with_phase(phase.value, deadline)
        with self.store.transaction():
            rec = self.store.update_round(rec, lease=self._held(rec.round_id), closing=closing)
            self._secagg_version[rec.round_id] = rec.version
            self.store.audit(rec.round_id, "phase", phase=phase.value)
        self._phase_done(closing_rec)
        log.info("phase", round_id=rec.round_id, phase=phase.value)
        self._notify()

    def _phase_done(self, rec: RoundRecord) -> None:
        """Report how long ``rec``'s current phase stayed open (metrics, and a span
        when OpenTelemetry is installed)."""
        if rec.phase == Phase.DONE.value:
            return
        opened, now = rec.phase_deadline_ms - 1000 * rec.phase_timeout_s, self._clock_ms()
        tracing.record(f"phase {rec.phase}", opened, now, round_id=rec.round_id, mode=rec.mode)
        if self.metrics is not None:
            self.metrics.phase_closed(rec.mode, rec.phase, (now - opened) / 1000)

    def _advance_secagg(self, rec: RoundRecord, *, fresh: bool = True) -> bool:
        """One step of a secagg round (on a worker thread, under the round's lock);
        ``fresh``: first read what other replicas stored (see _advance)."""
        srv = self._fresh_server(rec) if fresh else self._server(rec)
        phase = Phase(rec.phase)
        held = srv.accepted_parties
        try:
            if phase is Phase.COMMIT:
                if not self._phase_over(rec, rec.parties, srv.committed):
                    return False
                srv.close_commit()
                self._next_phase(rec, Phase.ADVERTISE, len(held("commit")))
            elif phase is Phase.ADVERTISE:
                if not self._phase_over(rec, srv.committed, srv.u1):
                    return False
                srv.close_advertise()
                self._next_phase(rec, Phase.SHARE, len(held("advertise")))
            elif phase is Phase.SHARE:
                if not self._phase_over(rec, srv.u1, held("share")):
                    return False
                srv.close_share()
                self._next_phase(rec, Phase.MASK, len(held("share")))
            elif phase is Phase.MASK:
                if not self._phase_over(rec, srv.u2, srv.masked_parties):
                    return False
                try:
                    self._close_mask(srv, rec)
                finally:
                    if srv.misbehaving:
                        # The accused, named before the lists go out; also when the
                        # round cannot go on without them.
                        rec = self._name_misbehaving(rec, srv.misbehaving, srv.complaints)
                self._next_phase(rec, Phase.CONSISTENCY, len(held("mask")))
            elif phase is Phase.CONSISTENCY:
                if not self._phase_over(rec, srv.u3, srv.consistency_signers):
                    return False
                srv.close_consistency()
                self._next_phase(rec, Phase.UNMASK, len(held("consistency")))
            elif phase is Phase.UNMASK:
                revealed = held("unmask")
                if not self._phase_over(rec, srv.consistency_signers, revealed):
                    return False
                try:
                    # Reconstruction is CPU work, on this worker thread: the event loop
                    # answers health checks and other rounds' calls meanwhile.
                    total = srv.finish()
                except RoundAborted:
                    raise
                except BlindsumError as exc:
                    raise RoundAborted(f"reconstruction failed: {exc}") from exc
                if srv.misbehaving:
                    rec = self._name_misbehaving(rec, srv.misbehaving)
                self._release(
                    rec, _signed(total), srv.u3, closing=(Phase.UNMASK.value, len(revealed))
                )
            else:
                return False
        except RoundAborted as exc:
            self._abort(rec, str(exc))
        return True

    def _name_misbehaving(
        self,
        rec: RoundRecord,
        found: Mapping[str, str],
        complaints: Mapping[str, Sequence[Complaint]] | None = None,
    ) -> RoundRecord:
        """Record the parties named for misbehaving (accused by a complaint, or holders
        whose shares were provably wrong) in the round and the audit, with the signed
        complaints behind each accusation."""
        earlier = {str(p) for p, _ in json.loads(rec.misbehaving_json)}
        named = sorted(found.items())
        rec = replace(rec, misbehaving_json=json.dumps([list(item) for item in named]))
        with self.store.transaction():
            rec = self.store.update_round(rec, lease=self._held(rec.round_id))
            for accuser, items in sorted((complaints or {}).items()):
                for c in items:
                    if c.accused in earlier:
                        continue  # audited with the first naming (a retried close)
                    self.store.audit(
                        rec.round_id,
                        "complaint",
                        accuser=accuser,
                        accused=c.accused,
                        envelope_digest=c.digest.hex(),
                        signature=c.signature.hex(),
                    )
            for party, reason in named:
                if party not in earlier:
                    self.store.audit(rec.round_id, "party_misbehaved", party=party, reason=reason)
        for party, reason in named:
            log.warning("party_misbehaved", round_id=rec.round_id, party=party, reason=reason)
        return rec

    async def _advance_he(self, rec: RoundRecord) -> bool:
        if rec.phase != Phase.COLLECT.value:
            return False
        submitted = await self.offload(self.store.phase_count, rec.round_id, Phase.COLLECT.value)
        # Only invited parties' ciphertexts are accepted, so the count tells it.
        if submitted < len(rec.parties) and self._clock_ms() < rec.phase_deadline_ms:
            return False
        if submitted < rec.threshold:
            await self.offload(
                self._abort,
                rec,
                f"only {submitted} of {len(rec.parties)} parties submitted before the "
                f"deadline; the custodian needs {rec.threshold} receipts",
            )
            return True
        if self.custodian is None:
            await self.offload(self._abort, rec, "no custodian is configured")
            return True
        now = self._clock_ms()
        if now < self._custodian_retry_at.get(rec.round_id, 0):
            return False
        try:
            acc = await self._accumulator(rec)
            values = await self.custodian.decrypt(
                round_id=rec.round_id,
                schema_id=rec.schema_id,
                chunks=acc.aggregate(),
                receipts=acc.receipts(),
                vector_length=self._schema(rec).vector_length,
                min_receipts=rec.threshold,
                schema_toml=rec.schema_toml,
                context=bytes.fromhex(rec.he_context),
            )
        except StoreCorruption:
            raise  # the ticker aborts the round, naming the payload
        except (Unavailable, Aborted) as exc:
            # Parties submitted once and left: keep the round, retry a little later.
            self._custodian_retry_at[rec.round_id] = now + CUSTODIAN_RETRY_MS
            log.warning("custodian_unavailable", round_id=rec.round_id, exc=exc)
            return False
        except BlindsumError as exc:
            await self.offload(self._abort, rec, f"custodian refused to decrypt: {exc}")
            return True
        included = tuple(r.party for r in acc.receipts())
        try:
            await self.offload(
                self._release, rec, values, included, closing=(Phase.COLLECT.value, len(included))
            )
        except RoundAborted as exc:
            await self.offload(self._abort, rec, str(exc))
        return True

    def _release(
        self,
        rec: RoundRecord,
        totals: list[int],
        included: Sequence[str],
        *,
        closing: tuple[str, int],
    ) -> None:
        """Publish the round: the budget check, the ledger charge, the release and the
        round's completion in one transaction, which fails (StaleRound) unless the
        store holds exactly the ``closing`` submissions the totals were computed from."""
        schema = self._schema(rec)
        dp = _dp_of(rec)
        policy = self.settings.release
        # Parties' noise is in the sum only in DISTRIBUTED mode; central noise comes later.
        slack = 0
        if dp.mode is DpMode.DISTRIBUTED:
            slack = noise_bound(noise_plan(schema, dp).in_sum(len(included)))
        found = implausible(schema, totals, len(included), slack=slack)
        if found:
            self._abort(rec, plausibility_reason(found), state=RoundState.REJECTED)
            return
        given = ReleaseInput(
            schema=schema,
            totals=totals,
            round_id=rec.round_id,
            mode=Mode(rec.mode),
            min_contributors=rec.min_contributors,
            included_parties=tuple(sorted(included)),
            released_ms=self._clock_ms(),
            dp=dp,
        )
        previous = self._previous_reports(dp.campaign, policy.history)
        done = replace(
            rec, state=RoundState.COMPLETE.value, phase=Phase.DONE.value, updated_ms=now_ms()
        )
        try:
            # One transaction: the budget check, the ledger charge and the release land
            # together or not at all. The fenced compare-and-set comes first, so a
            # replica whose lease lapsed (or that counted other submissions) stops
            # before it touches the release or the ledger.
            with self.store.transaction():
                self.store.update_round(done, lease=self._held(rec.round_id), closing=closing)
                # A party revoked while the round ran is not in any release: the round
                # aborts (README, "aggregator revoke"), and nothing is published.
                revoked = sorted(set(included) & self.store.revoked_names())
                if revoked:
                    raise RoundAborted(
                        f"revoked during the round: {name_list(revoked)}",
                        field="parties",
                    )
                self.store.lock_ledger(dp.campaign, dp.window)
                spent = self.store.ledger_spent(dp.campaign, dp.window)
                report = build_report(given, policy, spent_before=spent, previous=previous)
                self.store.put_release(rec.round_id, reportdoc.encode(report), campaign=dp.campaign)
                if dp.mode is not DpMode.OFF:
                    self.store.ledger_charge(
                        LedgerEntry(dp.campaign, dp.window, rec.round_id, report.dp.rho, now_ms())
                    )
                self.store.audit(
                    rec.round_id,
                    "round_complete",
                    included=list(report.included_parties),
                    suppressed=[r.region for r in report.regions if r.suppressed],
                    dp_mode=dp.mode.value,
                    rho=report.dp.rho,
                    flags=sum(len(r.flags) for r in report.regions),
                )
        except BudgetExhausted as exc:
            self._abort(rec, f"release refused: {exc}")
            return
        self._phase_done(rec)
        self._forget(rec.round_id)
        self._notify()
        log.info(
            "round_complete",
            round_id=rec.round_id,
            included=len(included),
            suppressed=sum(1 for r in report.regions if r.suppressed),
        )
