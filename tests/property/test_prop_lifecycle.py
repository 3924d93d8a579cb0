"""Issue 12, item 6: a stateful property test of the secagg round lifecycle.

Hypothesis drives one round over a real :class:`RoundManager` on a real SQLite store,
with honest :class:`SecAggParty` halves on the other side. Each step is one of:
a party's next submission, an identical replay of its last one, a party dropping out,
a phase deadline passing, the aggregator restarting (close and reopen the store, a
new manager; gracefully or as after a crash), an admin abort, a revocation, and a
party's envelopes turning to garbage in transit. After every step:

- no phase goes back, and a finished round never changes state again;
- there is at most one release, and the ledger is charged once exactly when the
  round completed;
- a completed round's totals are those of the parties it says it included (exact
  contributor counts; every cell within the noise), none of them revoked or
  accused;
- every replay is acknowledged as a replay and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument as HypothesisInvalidArgument
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from aggregator.rounds import Ack, RoundManager
from aggregator.store import Store, open_store
from blindsum import codec
from blindsum.crypto.sign import SigningKey
from blindsum.errors import FailedPrecondition, NotFound, PermissionDenied
from blindsum.model import (
    PHASES,
    DpMode,
    DpSpec,
    Mode,
    OpenRoundSpec,
    Phase,
    RoundState,
    RoundView,
)
from blindsum.protocol.secagg import SealedShare, SecAggParty
from blindsum.rpc.v1 import round_pb2
from blindsum.transport.pki import Identity, Role, create_ca, issue_identity_cert
from party.node import secagg_config
from tests.integration.test_rounds_grpc import assert_report_matches, party_vector, plain_sum

NAMES = ("team-a", "team-b", "team-c", "team-d", "team-e")
CAMPAIGN = "lifecycle"
ORDER = PHASES[Mode.SECAGG]
_T = TypeVar("_T")


def _event(text: str) -> None:
    """Hypothesis statistics, when a test is running (not when a case is replayed)."""
    with contextlib.suppress(HypothesisInvalidArgument):
        event(text)


def _garble(env: SealedShare) -> SealedShare:
    ct = bytearray(env.ciphertext)
    ct[0] ^= 0x01
    return SealedShare(env.sender, env.receiver, env.nonce, bytes(ct))


class Lifecycle(RuleBasedStateMachine):
    """One secagg round, five parties, against a manager that may restart."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="blindsum-lifecycle-"))
        self.loop = asyncio.new_event_loop()
        self.mac_key = secrets.token_bytes(32)
        self.ca = create_ca()
        self.keys = {p: SigningKey.generate(secrets.token_bytes) for p in NAMES}
        self.now = 1_800_000_000_000
        self.store: Store = open_store("sqlite:///agg.sqlite", base_dir=self.tmp, create=True)
        self.store.use_mac_key(self.mac_key)
        for p in NAMES:
            cert = issue_identity_cert(self.ca, Identity(Role.PARTY, p), self.keys[p].public_bytes)
            self.store.enroll(p, cert)
        self.manager = self._manager()
        self.vectors = {p: party_vector(i) for i, p in enumerate(NAMES)}
        self.parties: dict[str, SecAggParty] = {}
        self.last: dict[str, Callable[[], Awaitable[Ack]]] = {}
        self.gone: set[str] = set()
        self.revoked: set[str] = set()
        self.revoked_open: set[str] = set()
        self.cheat: str | None = None
        self.garbled: str | None = None  # the cheat, once its garbage went out
        self.rid = ""
        self.reached = 0
        self.final: RoundState | None = None

    # -- plumbing

    def _manager(self) -> RoundManager:
        return RoundManager(self.store, ca_cert_pem=self.ca.cert_pem, clock_ms=lambda: self.now)

    def run(self, coro: Awaitable[_T]) -> _T:
        async def wrapped() -> _T:
            return await coro

        return self.loop.run_until_complete(wrapped())

    def view(self) -> RoundView:
        return self.manager.view(self.rid)

    def teardown(self) -> None:
        self.manager.close()
        self.store.close()
        self.loop.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- the round

    @initialize()
    def open(self) -> None:
        spec = OpenRoundSpec(
            mode=Mode.SECAGG,
            parties=NAMES,
            dp=DpSpec(mode=DpMode.CENTRAL, rho=0.1, campaign=CAMPAIGN),
        )
        view = self.run(self.manager.open_round(spec))
        self.rid = view.round_id
        config = secagg_config(view)
        self.parties = {p: SecAggParty(config, p, self.keys[p], secrets.token_bytes) for p in NAMES}

    async def _next(self, p: str, view: RoundView) -> Ack | None:
        """What a party node does in the current phase, if it has anything to do."""
        m, rid, party = self.manager, self.rid, self.parties[p]
        phase, sid = view.phase, view.schema_id
        order = ORDER.index(phase)
        if view.did(p, phase) or (order > 0 and not view.did(p, ORDER[order - 1])):
            return None
        call: Callable[[], Awaitable[Ack]]
        if phase is Phase.COMMIT:
            commit = party.commit()
            payload = codec.commit_to_request(rid, sid, commit).SerializeToString()

            def call() -> Awaitable[Ack]:
                return self.manager.commit(p, rid, sid, commit, payload)
        elif phase is Phase.ADVERTISE:
            listed = await m.commits(p, rid)
            commits = {}
            for i, entry in enumerate(listed.commits):
                c, _ = codec.signed_commit_from_pb(entry, i)
                commits[c.party] = c
            keys = {q: k.verify_key for q, k in self.keys.items()}
            advert = party.advertise(commits, keys)
            payload = codec.advert_to_request(rid, sid, advert).SerializeToString()

            def call() -> Awaitable[Ack]:
                return self.manager.advertise(p, rid, sid, advert, payload)
        elif phase is Phase.SHARE:
            roster = await m.roster(p, rid)
            adverts = {}
            for j, item in enumerate(roster.adverts):
                a, _ = codec.signed_advert_from_pb(item, j)
                adverts[a.party] = a
            shares = party.share(adverts)
            if p == self.cheat:
                shares = [_garble(e) for e in shares]
                self.garbled = p
            payload = round_pb2.SubmitSharesRequest(
                round_id=rid, envelopes=codec.shares_to_pb(shares)
            ).SerializeToString()

            def call() -> Awaitable[Ack]:
                return self.manager.submit_shares(p, rid, shares, payload)
        elif phase is Phase.MASK:
            envelopes, u2 = await m.envelopes(p, rid)
            y = party.mask(envelopes, u2, self.vectors[p])
            complaints = party.complaints()
            vector = codec.vector_to_bytes(y)

            def call() -> Awaitable[Ack]:
                return self.manager.submit_masked(p, rid, sid, vector, complaints)
        elif phase is Phase.CONSISTENCY:
            req = await m.unmask_request(p, rid)
            sig = party.sign_consistency(list(req.survivors), list(req.dropped), list(req.accused))
            payload = round_pb2.SubmitConsistencyRequest(
                round_id=rid, signature=sig
            ).SerializeToString()

            def call() -> Awaitable[Ack]:
                return self.manager.submit_consistency(p, rid, sig, payload)
        elif phase is Phase.UNMASK:
            req = await m.unmask_request(p, rid)
            signatures = codec.signatures_from_pb(req.signatures, max_count=len(NAMES))
            reveals = party.unmask(
                list(req.survivors), list(req.dropped), signatures, list(req.accused)
            )
            payload = round_pb2.SubmitUnmaskRequest(
                round_id=rid, shares=codec.reveals_to_pb(reveals)
            ).SerializeToString()

            def call() -> Awaitable[Ack]:
                return self.manager.submit_unmask(p, rid, reveals, payload)
        else:
            return None
        ack = await call()
        self.last[p] = call
        return ack

    def _step(self, p: str) -> bool:
        """The party's next submission, if it has one; whether it sent anything."""
        if p in self.gone or p in self.revoked:
            return False
        view = self.view()
        if view.state is not RoundState.OPEN or view.phase not in ORDER:
            return False
        if p == self.garbled and view.phase in (Phase.CONSISTENCY, Phase.UNMASK):
            return False  # excluded: it is told so, and stops
        try:
            ack = self.run(self._next(p, view))
        except (PermissionDenied, NotFound, FailedPrecondition):
            # Left out of a phase (it did not make the one before in time), or the
            # round moved on between the read and the call: a party stops or retries.
            return False
        if ack is None:
            return False
        assert not ack.replay
        return True

    # -- rules

    @rule(p=st.sampled_from(NAMES))
    def submit(self, p: str) -> None:
        self._step(p)

    @rule()
    def everyone_submits(self) -> None:
        """Every live party, once."""
        for p in NAMES:
            self._step(p)

    @rule()
    def everyone_runs(self) -> None:
        """Every live party, until nobody has anything left to send (at most one round)."""
        for _ in range(len(ORDER)):
            if not any([self._step(p) for p in NAMES]):
                return

    @precondition(lambda self: bool(self.last))
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        p = data.draw(st.sampled_from(sorted(self.last)))
        before = self.store.phase_counts(self.rid)
        try:
            ack = self.run(self.last[p]())
        except (PermissionDenied, NotFound):
            assert p in self.revoked
            return
        assert ack.replay, p
        assert self.store.phase_counts(self.rid) == before

    @precondition(lambda self: len(self.gone) < 2)
    @rule(p=st.sampled_from(NAMES))
    def drop(self, p: str) -> None:
        self.gone.add(p)

    def _pass_deadline(self) -> None:
        self.now += 3_600_000
        self.run(self.manager.tick())

    @rule()
    def deadline(self) -> None:
        """The phase deadline passes once only parties that are gone are waited for
        (as in the integration tests: a live party is never timed out)."""
        view = self.view()
        if view.state is RoundState.OPEN and set(view.waiting_for) <= self.gone | self.revoked:
            self._pass_deadline()

    @rule(graceful=st.booleans())
    def restart(self, graceful: bool) -> None:
        if graceful:
            self.manager.release_leases()
        self.manager.close()
        self.store.close()
        self.store = open_store("sqlite:///agg.sqlite", base_dir=self.tmp)
        self.store.use_mac_key(self.mac_key)
        self.manager = self._manager()

    @precondition(lambda self: self.final is None and not self.revoked)
    @rule(action=st.sampled_from(["revoke", "abort", "deadline"]), p=st.sampled_from(NAMES))
    def interruption(self, action: str, p: str) -> None:
        """The operator revokes a party or aborts the round, or a deadline passes while
        live parties are still working (one rule, so that the round is left alone most
        of the time)."""
        if action == "deadline":
            self._pass_deadline()
            return
        if action == "revoke":
            if self.view().state is RoundState.OPEN:
                self.revoked_open.add(p)  # before any release: it must not be in one
            self.store.revoke(p)
            self.revoked.add(p)
            return
        try:
            self.run(self.manager.abort(self.rid, "stopped by the operator"))
        except FailedPrecondition:
            assert self.view().state is not RoundState.OPEN

    @precondition(lambda self: self.cheat is None)
    @rule(p=st.sampled_from(NAMES))
    def turn_cheat(self, p: str) -> None:
        """From now on (if it has not shared yet) p's envelopes arrive garbled."""
        self.cheat = p

    # -- invariants

    @invariant()
    def phases_only_move_forward(self) -> None:
        if not self.rid:
            return
        view = self.view()
        if self.final is not None:
            assert view.state is self.final
            return
        if view.state is not RoundState.OPEN:
            self.final = view.state
            _event(f"round {view.state.value}")
            reason = view.abort_reason
            if view.state is RoundState.ABORTED:
                # Every abort has a reason, and none is a failure of the aggregator's own.
                assert reason and not reason.startswith(("internal", "store corruption")), reason
                _event(f"aborted: {reason.split(':')[0][:40]}")
            return
        order = ORDER.index(view.phase)
        assert order >= self.reached
        self.reached = order

    @invariant()
    def one_release_and_one_charge(self) -> None:
        if not self.rid:
            return
        view = self.view()
        releases = self.store.release_ids()
        charged = [e.round_id for e in self.store.ledger(CAMPAIGN)]
        if view.state is RoundState.COMPLETE:
            assert releases == [self.rid]
            assert charged == [self.rid]
        else:
            assert releases == []
            assert charged == []

    @invariant()
    def a_release_holds_exactly_its_parties(self) -> None:
        if not self.rid or self.view().state is not RoundState.COMPLETE:
            return
        report = self.manager.report(self.rid)
        included = set(report.included_parties)
        assert not included & self.revoked_open
        assert self.garbled is None or self.garbled not in included
        assert_report_matches(
            report, plain_sum([self.vectors[p] for p in sorted(included)]), noise_sds=6.0
        )


Lifecycle.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestLifecycle = Lifecycle.TestCase


def test_a_party_revoked_before_a_restart_does_not_make_the_round_fail_internally() -> None:
    """Found by the machine above: after a restart, rebuilding the round replayed a
    revoked party's stored submissions through the check that refuses revoked
    parties, and the round aborted with 'internal failure'. Stored submissions are
    replayed as accepted, and the round ends as it would without the restart."""
    machine = Lifecycle()
    try:
        machine.open()
        machine.drop("team-a")
        machine.everyone_runs()
        machine.restart(graceful=False)
        machine.interruption(action="revoke", p="team-b")
        machine.deadline()
        machine.phases_only_move_forward()
        view = machine.view()
        assert not view.abort_reason.startswith("internal"), view.abort_reason
        machine.everyone_runs()
        machine.deadline()
        machine.phases_only_move_forward()
        machine.one_release_and_one_charge()
        machine.a_release_holds_exactly_its_parties()
        final = machine.view()
        # team-b can no longer connect, so it never reveals its nonce: the round
        # aborts naming it, as with any party that stops mid-round.
        assert final.state is RoundState.ABORTED
        assert final.abort_reason == "u1: parties committed but did not reveal: team-b"
    finally:
        machine.teardown()
