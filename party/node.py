"""The party node: takes part in rounds over gRPC with mTLS.

One-shot mode (:meth:`PartyNode.run_round`) follows a single round through its
phases; daemon mode (:meth:`PartyNode.daemon`) joins every round the party is
invited to. Before each submission the node writes the message it is about to
send to its state directory (mode 0600), so a retry, or a restart of the node,
re-sends byte-identical messages and the aggregator sees an idempotent replay.
The client-side checks (docs/THREAT_MODEL.md) live in the protocol layer
(``SecAggParty``); refusing an unsafe unmask request ends this party's round.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message

from blindsum import codec
from blindsum.bundle import Bundle, reach_advice
from blindsum.crypto.he import to_centred
from blindsum.errors import (
    BlindsumError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from blindsum.log import get_logger
from blindsum.model import DpMode, Mode, Phase, RoundState, RoundView, iso_week, round_context
from blindsum.protocol.he import make_receipt
from blindsum.protocol.secagg import SecAggConfig, SecAggParty
from blindsum.rpc.v1 import common_pb2, round_pb2, round_pb2_grpc
from blindsum.schema import Schema
from blindsum.transport.errors import error_from_rpc, is_transient
from blindsum.transport.pki import CertifiedKeys, Role, write_private
from blindsum.transport.tls import secure_channel
from blindsum.types import RandFn, U64Vector
from blindsum.window import TicketWindow, check_window
from party.privacy import (
    PartyLedger,
    add_party_noise,
    check_round_privacy,
    check_round_threat,
    parse_min_dp,
    set_contributors,
)

log = get_logger("blindsum.party")

#: The party's input for a round: its vector for the round's schema, from the tickets
#: created in the round's window (None: a round without one, from an older aggregator).
VectorSource = Callable[[Schema, TicketWindow | None], U64Vector]


#: Every RoundService call is idempotent (reads, or submissions deduplicated by
#: digest), so a call cut off by a server shutdown (CANCELLED) is safe to retry.
_RETRY_ALSO = frozenset({grpc.StatusCode.CANCELLED})

_REQUEST_TYPES: dict[str, type[Message]] = {
    "Commit": round_pb2.CommitRequest,
    "Advertise": round_pb2.AdvertiseRequest,
    "SubmitShares": round_pb2.SubmitSharesRequest,
    "SubmitMasked": round_pb2.SubmitMaskedRequest,
    "SubmitConsistency": round_pb2.SubmitConsistencyRequest,
    "SubmitUnmask": round_pb2.SubmitUnmaskRequest,
    "SubmitCiphertext": round_pb2.SubmitCiphertextRequest,
}


#: The party's own DP ledger, in its state directory.
LEDGER_FILE = "dp-ledger.json"
#: Key of a closed round's summary in its state file.
CLOSED_KEY = "closed"

#: How long one GetRound long poll may be held by the aggregator.
WATCH_MS = 5_000


@functools.lru_cache(maxsize=8)
def _parse_schema(text: str) -> Schema:
    return Schema.from_toml(text)


def secagg_config(view: RoundView) -> SecAggConfig:
    """The round's secagg configuration, from what the aggregator announced. Every
    field is bound into each signature, so a party and the aggregator that disagree on
    any of them cannot complete a round together."""
    return SecAggConfig(
        round_id=view.round_id,
        schema_id=view.schema_id,
        parties=view.parties,
        threshold=view.threshold,
        vector_length=view.vector_length,
        graph_degree=view.graph_degree,
        threat=view.threat,
        context=round_context(
            window_start_ms=view.window_start_ms,
            window_end_ms=view.window_end_ms,
            dp=view.dp,
            min_contributors=view.min_contributors,
        ),
    )


class SimulatedDropout(BlindsumError):
    """Raised when the node was told to vanish after a phase (demo and tests)."""


@dataclass
class RetryPolicy:
    max_attempts: int = 8
    first_backoff_s: float = 0.2
    max_backoff_s: float = 5.0
    rpc_timeout_s: float = 30.0


class RoundClient:
    """Typed calls to the RoundService with bounded, jittered retries on transient errors."""

    def __init__(self, bundle: Bundle, *, address: str | None = None) -> None:
        self.bundle = bundle
        self.address = address or bundle.config.aggregator
        self.channel = secure_channel(
            self.address,
            bundle.tls,
            bundle.ca_cert_pem,
            server_name=bundle.config.server_name,
        )
        self.stub = round_pb2_grpc.RoundServiceStub(self.channel)
        self.retry = RetryPolicy(
            max_attempts=bundle.config.max_attempts, rpc_timeout_s=bundle.config.rpc_timeout_s
        )

    async def close(self) -> None:
        await self.channel.close(None)

    async def call(self, rpc: str, request: Message) -> Any:
        method: Callable[..., Awaitable[Any]] = getattr(self.stub, rpc)
        delay = self.retry.first_backoff_s
        for attempt in range(1, self.retry.max_attempts + 1):
            try:
                return await method(request, timeout=self.retry.rpc_timeout_s)
            except grpc.aio.AioRpcError as exc:
                retryable = is_transient(exc.code()) or exc.code() in _RETRY_ALSO
                if not retryable or attempt == self.retry.max_attempts:
                    raise error_from_rpc(
                        exc,
                        f"RoundService.{rpc}",
                        server=f"the aggregator at {self.address}",
                        advice=reach_advice(self.bundle.path),
                    ) from None
                log.info("rpc_retry", rpc=rpc, attempt=attempt, code=exc.code().name)
            jitter = secrets.randbelow(1000) / 1000.0
            await asyncio.sleep(delay * (0.5 + jitter))
            delay = min(delay * 2, self.retry.max_backoff_s)
        raise Unavailable(f"RoundService.{rpc}: no attempts left")  # pragma: no cover


@dataclass
class _RoundState:
    """What the node remembers about one round, persisted as JSON (0600)."""

    path: Path
    data: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> _RoundState:
        if path.exists():
            raw = json.loads(path.read_text())
            if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
                raise InvalidArgument(f"state file {path.name} is corrupt", field="state")
            return cls(path, dict(raw))
        return cls(path)

    def get(self, key: str) -> bytes | None:
        value = self.data.get(key)
        return None if value is None else bytes.fromhex(value)

    def put(self, key: str, value: bytes) -> None:
        self.data[key] = value.hex()
        self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_private(self.path, json.dumps(self.data, sort_keys=True).encode(), overwrite=True)

    @property
    def closed(self) -> str | None:
        """How the round ended, once this node saw it end (its secrets are then gone)."""
        raw = self.get(CLOSED_KEY)
        return None if raw is None else str(json.loads(raw)["state"])

    def close(self, state: RoundState) -> None:
        """The round is over: erase its secrets (private keys, self-mask seed, the shares
        held for neighbours, the messages kept for retries) and keep only what an audit
        needs: how it ended, a SHA-256 of each message sent, the lists this node signed
        and which shares it revealed. Stolen old state files then expose no past input."""
        if self.closed is not None or not self.data:
            return
        summary: dict[str, object] = {
            "state": state.value,
            "sent": {
                rpc: hashlib.sha256(bytes.fromhex(value)).hexdigest()
                for rpc, value in sorted(self.data.items())
                if rpc in _REQUEST_TYPES
            },
        }
        protocol = self.get("protocol")
        if protocol is not None:
            doc = json.loads(protocol)
            summary["consistency"] = doc.get("consistency")
            summary["revealed"] = doc.get("revealed", [])
        self.data = {CLOSED_KEY: json.dumps(summary, sort_keys=True).encode().hex()}
        self._write()


class PartyNode:
    """Runs the party side of secagg and he rounds for one bundle."""

    def __init__(
        self,
        bundle: Bundle,
        *,
        address: str | None = None,
        progress: Callable[[str], None] | None = None,
        rand: RandFn = secrets.token_bytes,
        drop_after: Phase | None = None,
        on_view: Callable[[RoundView], None] | None = None,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        if bundle.identity.role is not Role.PARTY or bundle.identity_key is None:
            raise InvalidArgument("this bundle is not a party bundle", field="--bundle")
        self.bundle = bundle
        self.name = bundle.config.name
        self.client = RoundClient(bundle, address=address)
        self.progress = progress or (lambda _msg: None)
        self.rand = rand
        self.drop_after = drop_after
        self.on_view = on_view or (lambda _view: None)
        #: The party's own clock: its DP ledger's week for a round without a window.
        self.clock_ms = clock_ms
        self.poll = bundle.config.poll_interval_s

    async def close(self) -> None:
        await self.client.close()

    def _say(self, view: RoundView, message: str) -> None:
        self.progress(f"[{self.name}] {view.round_id} {view.phase.value}: {message}")

    async def _view(
        self, round_id: str, *, known: Phase | None = None, wait_ms: int = 0
    ) -> RoundView:
        ref = common_pb2.RoundRef(round_id=round_id)
        if known is not None and wait_ms:
            ref.known_phase = codec.phase_to_pb(known)
            ref.wait_ms = wait_ms
        info = await self.client.call("GetRound", ref)
        view = codec.round_view_from_pb(info)
        self.on_view(view)
        return view

    async def wait_for_round(self, round_id: str, wait_s: float) -> RoundView:
        """The round's view once it exists: a node may start before the round is opened
        (a scheduled submit, or the demo, whose parties are up before its phase clock
        starts). Gives up with NotFound after ``wait_s`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, wait_s)
        while True:
            try:
                return await self._view(round_id)
            except NotFound:
                if loop.time() >= deadline:
                    raise NotFound(
                        f"round {round_id!r} does not exist or does not invite this party "
                        f"(waited {wait_s:g} s)",
                        field="--round",
                    ) from None
            await asyncio.sleep(max(self.poll, 0.5))

    async def next_open_round(self, wait_s: float) -> str:
        """The id of the first open round this party is invited to, waiting up to ``wait_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, wait_s)
        while True:
            listing = await self.client.call(
                "ListRounds", round_pb2.ListRoundsRequest(only_open=True)
            )
            if listing.rounds:
                return str(listing.rounds[0].round_id)
            if loop.time() >= deadline:
                raise NotFound(
                    f"no open round invites this party (waited {wait_s:g} s)", field="--round"
                )
            await asyncio.sleep(max(self.poll, 0.5))

    async def ping(self) -> None:
        """One cheap authenticated call: the aggregator is reachable and knows us."""
        await self.client.call("ListRounds", round_pb2.ListRoundsRequest(only_open=True))

    def _schema(self, view: RoundView) -> Schema:
        # Parsing and validating a large schema costs tens of milliseconds; a daemon sees
        # the same few schemas round after round. The cache key is the text itself, so a
        # different text is always parsed and checked against its id.
        schema = _parse_schema(view.schema_toml)
        if schema.schema_id != view.schema_id:
            raise InvalidArgument(
                "the round's schema text does not hash to its schema id", field="schema_id"
            )
        return schema

    # -- one round ------------------------------------------------------------

    async def run_round(self, round_id: str, source: VectorSource) -> RoundView:
        """Take part in ``round_id`` until it completes or aborts; returns the final view."""
        view = await self._view(round_id)
        if self.name not in view.parties:
            raise FailedPrecondition(f"{self.name} is not invited to round {round_id}")
        schema = self._schema(view)
        # check_round_id limits the charset, so the id is a safe file name.
        check_round_privacy(
            view.dp,
            min_dp=parse_min_dp(self.bundle.config.min_dp),
            max_rho=self.bundle.config.max_rho,
            threshold=view.threshold,
            allow_dp_off=self.bundle.config.allow_dp_off,
        )
        if view.mode is Mode.SECAGG:
            cfg = self.bundle.config
            check_round_threat(
                view.threat,
                min_corrupt_fraction=cfg.min_corrupt_fraction,
                min_adversary=cfg.min_adversary,
                min_privacy_bits=cfg.min_privacy_bits,
            )
        state = _RoundState.load(self.bundle.state_dir / f"{codec.check_round_id(round_id)}.json")
        if state.closed is not None:
            # Its secrets are erased: taking part again would mean fresh keys in a round
            # this party already finished, which an aggregator must not be able to ask.
            raise FailedPrecondition(
                f"{self.name} already saw round {round_id} end ({state.closed}); "
                "its secrets for it are erased",
                field="round_id",
            )
        served = tuple(self.bundle.config.regions)
        window = check_window(view.window_start_ms, view.window_end_ms)
        if window is not None:
            self._say(view, f"the round covers the tickets created {window.describe()}")
        raw = set_contributors(schema, view.dp, source(schema, window), served)
        if view.dp.mode is not DpMode.OFF:
            # Charged before anything leaves, once per round, whatever it is called: in
            # every ISO week its tickets come from, so a window shifted by a day does not
            # buy a fresh budget (no window: the week of this party's clock).
            PartyLedger(self.bundle.state_dir / LEDGER_FILE).charge(
                round_id=round_id,
                weeks=window.iso_weeks() if window else (iso_week(self.clock_ms()),),
                rho=view.dp.rho,
                limit=self.bundle.config.max_rho_per_window,
            )
        vector = add_party_noise(schema, view.dp, raw)
        if view.dp.mode is DpMode.DISTRIBUTED:
            self._say(view, f"added distributed DP noise (rho {view.dp.rho:g})")
        if view.mode is Mode.HE:
            return await self._run_he(view, vector, state)
        return await self._run_secagg(view, schema, vector, state)

    async def _wait_phase(self, round_id: str, done: set[Phase]) -> RoundView:
        """Poll until the round is in a phase this node has not finished, or closed."""
        last = None
        known: Phase | None = None
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            # A long poll: the aggregator answers as soon as the phase moves on.
            view = await self._view(round_id, known=known, wait_ms=WATCH_MS)
            if view.state is not RoundState.OPEN or view.phase not in done:
                return view
            unchanged = view.phase is known
            known = view.phase
            finished, expected = view.progress()
            if finished < expected:
                note = f"waiting for {expected - finished} parties ({finished} of {expected} done)"
            else:
                note = "all expected parties are in; waiting for the aggregator"
            if note != last:
                self._say(view, note)
                last = note
            elapsed = loop.time() - started
            if unchanged and elapsed < self.poll:
                # The answer came early without a change (an older aggregator, or only
                # the submitted list moved): do not spin.
                await asyncio.sleep(self.poll - elapsed)

    def _finish(self, state: _RoundState, view: RoundView) -> RoundView:
        if view.state is not RoundState.OPEN:
            state.close(view.state)
        if view.state is RoundState.COMPLETE:
            self._say(view, "round complete")
        else:
            self._say(view, f"round aborted: {view.abort_reason}")
        return view

    def _maybe_drop(self, view: RoundView, phase: Phase) -> None:
        if self.drop_after is phase:
            self._say(view, f"simulating a dropout after the {phase.value} phase")
            raise SimulatedDropout(f"{self.name} dropped out after {phase.value}")

    async def _submit(
        self, state: _RoundState, rpc: str, build: Callable[[], Awaitable[Message]]
    ) -> None:
        """Build the phase message once, persist it, then send it (again, on a retry)."""
        stored = state.get(rpc)
        if stored is None:
            stored = (await build()).SerializeToString()
            state.put(rpc, stored)
        await self.client.call(rpc, _REQUEST_TYPES[rpc].FromString(stored))

    async def _run_secagg(
        self, view: RoundView, schema: Schema, vector: U64Vector, state: _RoundState
    ) -> RoundView:
        identity_key = self.bundle.identity_key
        if identity_key is None:  # checked in __init__; keeps the type narrow
            raise InvalidArgument("bundle has no identity key", field="--bundle")
        config = secagg_config(view)
        saved = state.get("protocol")
        party = (
            SecAggParty.from_state(saved, identity_key, self.rand)
            if saved
            else SecAggParty(config, self.name, identity_key, self.rand)
        )

        def persist() -> None:
            state.put("protocol", party.to_state())

        done: set[Phase] = set()
        rid = view.round_id
        while True:
            view = await self._wait_phase(rid, done)
            if view.state is not RoundState.OPEN:
                return self._finish(state, view)
            phase = view.phase
            schema_id, invited = view.schema_id, len(view.parties)
            if phase is Phase.COMMIT:

                async def build_commit(schema_id: str = schema_id) -> Message:
                    commit = party.commit()
                    persist()
                    return codec.commit_to_request(rid, schema_id, commit)

                await self._submit(state, "Commit", build_commit)
                self._say(view, "committed to a fresh graph nonce")
            elif phase is Phase.ADVERTISE:
                if not view.did(self.name, Phase.COMMIT):
                    return self._finish(state, await self._wait_closed(rid))

                async def build_advert(schema_id: str = schema_id) -> Message:
                    listed = await self.client.call("GetCommits", common_pb2.RoundRef(round_id=rid))
                    commits = {}
                    for i, entry in enumerate(listed.commits):
                        commit, _ = codec.signed_commit_from_pb(entry, i)
                        commits[commit.party] = commit
                    # Members' certificates come again with the roster and are checked
                    # there, with their adverts (the commitments need no check).
                    advert = party.advertise(commits)
                    persist()
                    return codec.advert_to_request(rid, schema_id, advert)

                await self._submit(state, "Advertise", build_advert)
                self._say(view, "checked the signed commitment list and sent keys")
                self._maybe_drop(view, Phase.ADVERTISE)
            elif phase is Phase.SHARE:
                if not view.did(self.name, Phase.ADVERTISE):
                    return self._finish(state, await self._wait_closed(rid))

                async def build_shares(invited: int = invited) -> Message:
                    roster = await self.client.call("GetRoster", common_pb2.RoundRef(round_id=rid))
                    if len(roster.adverts) > invited:
                        raise InvalidArgument(
                            f"{len(roster.adverts)} adverts for {invited} invited parties",
                            field="GetRoster",
                        )
                    adverts, certs = {}, {}
                    for i, entry in enumerate(roster.adverts):
                        advert, cert = codec.signed_advert_from_pb(entry, i)
                        adverts[advert.party] = advert
                        certs[advert.party] = cert
                    keys = CertifiedKeys(certs, self.bundle.ca_cert_pem)
                    shares = party.share(adverts, keys)
                    persist()
                    return round_pb2.SubmitSharesRequest(
                        round_id=rid, envelopes=codec.shares_to_pb(shares)
                    )

                await self._submit(state, "SubmitShares", build_shares)
                self._say(view, "verified the roster against the commitments and sent shares")
                self._maybe_drop(view, Phase.SHARE)
            elif phase is Phase.MASK:
                if not view.did(self.name, Phase.SHARE):
                    return self._finish(state, await self._wait_closed(rid))

                async def build_masked(
                    schema_id: str = schema_id, invited: int = invited
                ) -> Message:
                    env = await self.client.call("GetEnvelopes", common_pb2.RoundRef(round_id=rid))
                    shares = codec.shares_from_pb(env.envelopes, max_count=invited)
                    y = party.mask(shares, list(env.shared), vector)
                    persist()
                    return round_pb2.SubmitMaskedRequest(
                        round_id=rid,
                        schema_id=schema_id,
                        masked_vector=codec.vector_to_bytes(y),
                        complaints=codec.complaints_to_pb(party.complaints()),
                    )

                await self._submit(state, "SubmitMasked", build_masked)
                if party.accused:
                    # A neighbour's envelope did not open: the round goes on without it.
                    log.warning(
                        "complained", round_id=rid, party=self.name, accused=list(party.accused)
                    )
                    self._say(view, f"sent masked vector and complaints about {party.accused}")
                else:
                    self._say(view, "sent masked vector")
                self._maybe_drop(view, Phase.MASK)
            elif phase in (Phase.CONSISTENCY, Phase.UNMASK) and self.name in dict(view.misbehaving):
                # Excluded on a neighbour's complaint: the round goes on without us.
                reason = dict(view.misbehaving)[self.name]
                log.warning("excluded", round_id=rid, party=self.name, reason=reason)
                self._say(view, f"excluded from the round: {reason}")
                return self._finish(state, await self._wait_closed(rid))
            elif phase is Phase.CONSISTENCY:
                if not view.did(self.name, Phase.MASK):
                    return self._finish(state, await self._wait_closed(rid))

                async def build_consistency() -> Message:
                    req = await self.client.call(
                        "GetUnmaskRequest", common_pb2.RoundRef(round_id=rid)
                    )
                    signature = party.sign_consistency(
                        list(req.survivors), list(req.dropped), list(req.accused)
                    )
                    persist()
                    return round_pb2.SubmitConsistencyRequest(round_id=rid, signature=signature)

                await self._submit(state, "SubmitConsistency", build_consistency)
                self._say(view, "checked and signed the survivor and dropped lists")
            elif phase is Phase.UNMASK:
                if not view.did(self.name, Phase.CONSISTENCY):
                    return self._finish(state, await self._wait_closed(rid))

                async def build_unmask(invited: int = invited) -> Message:
                    req = await self.client.call(
                        "GetUnmaskRequest", common_pb2.RoundRef(round_id=rid)
                    )
                    signatures = codec.signatures_from_pb(req.signatures, max_count=invited)
                    reveals = party.unmask(
                        list(req.survivors), list(req.dropped), signatures, list(req.accused)
                    )
                    persist()
                    return round_pb2.SubmitUnmaskRequest(
                        round_id=rid, shares=codec.reveals_to_pb(reveals)
                    )

                await self._submit(state, "SubmitUnmask", build_unmask)
                self._say(view, "verified t signatures on the lists and revealed shares")
            else:
                return self._finish(state, await self._wait_closed(rid))
            done.add(phase)

    async def _wait_closed(self, round_id: str) -> RoundView:
        while True:
            view = await self._view(round_id)
            if view.state is not RoundState.OPEN:
                return view
            await asyncio.sleep(self.poll)

    async def _run_he(self, view: RoundView, vector: U64Vector, state: _RoundState) -> RoundView:
        identity_key = self.bundle.identity_key
        custodian_key = self.bundle.custodian_key
        if identity_key is None or custodian_key is None:
            raise InvalidArgument(
                "he rounds need the identity key and the pinned custodian key", field="--bundle"
            )
        rid = view.round_id
        if view.state is RoundState.OPEN and view.phase is Phase.COLLECT:

            async def build() -> Message:
                msg = await self.client.call("GetPublicContext", common_pb2.RoundRef(round_id=rid))
                signed = codec.public_context_from_pb(msg)
                signed.verify(custodian_key)  # pinned in the bundle: the aggregator cannot swap it
                public = signed.open()
                chunks = public.encrypt(to_centred(vector))
                signature = make_receipt(
                    identity_key,
                    round_id=rid,
                    schema_id=view.schema_id,
                    chunks=chunks,
                    context=signed.hash,
                )
                return round_pb2.SubmitCiphertextRequest(
                    round_id=rid,
                    schema_id=view.schema_id,
                    chunks=chunks,
                    receipt_signature=signature,
                    context_hash=signed.hash,
                )

            await self._submit(state, "SubmitCiphertext", build)
            self._say(view, "sent ciphertext with a signed receipt")
            self._maybe_drop(view, Phase.COLLECT)
        return self._finish(state, await self._wait_phase(rid, {Phase.COLLECT}))

    # -- daemon -----------------------------------------------------------------

    async def daemon(
        self, source: VectorSource, *, stop: asyncio.Event, max_rounds: int | None = None
    ) -> list[RoundView]:
        """Join every open round this party is invited to until ``stop`` is set."""
        finished: list[RoundView] = []
        seen: set[str] = set()
        while not stop.is_set():
            listing = await self.client.call(
                "ListRounds", round_pb2.ListRoundsRequest(only_open=True)
            )
            for info in listing.rounds:
                if info.round_id in seen:
                    continue
                seen.add(info.round_id)
                try:
                    finished.append(await self.run_round(info.round_id, source))
                except BlindsumError as exc:
                    log.warning("round_failed", round_id=info.round_id, error=str(exc))
                    self.progress(f"[{self.name}] {info.round_id}: {exc}")
                if max_rounds is not None and len(finished) >= max_rounds:
                    return finished
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(self.poll, 0.5))
        return finished
