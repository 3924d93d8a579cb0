"""Whole rounds over real gRPC + mTLS on 127.0.0.1:0, with in-process party nodes."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import grpc
import numpy as np
import pytest

from aggregator.service import RunningAggregator, start_aggregator
from blindsum import codec
from blindsum.bundle import load_bundle
from blindsum.crypto.he import to_centred
from blindsum.errors import BlindsumError, UnsafeRequest
from blindsum.model import Mode, OpenRoundSpec, Phase, Report, RoundState, RoundView
from blindsum.protocol import params
from blindsum.protocol.he import ciphertext_digest, make_receipt
from blindsum.protocol.secagg import SealedShare, SecAggParty
from blindsum.rpc.v1 import common_pb2, report_pb2_grpc, round_pb2, round_pb2_grpc
from blindsum.schema import Schema
from blindsum.transport.tls import secure_channel
from blindsum.types import U64Vector
from blindsum_app.demo import cell_slots
from party.node import PartyNode, SimulatedDropout
from tests.conftest import PARTIES, STEPPED, Deployment

SCHEMA = Schema.default()


def party_vector(index: int, *, skip_americas: bool = False) -> U64Vector:
    """A valid per-party vector: every region present except, optionally, Americas."""
    rng = np.random.default_rng(index)
    values: dict[str, dict[str, float | int | list[int]]] = {}
    for region in SCHEMA.regions:
        if skip_americas and region == "Americas":
            continue
        per: dict[str, float | int | list[int]] = {}
        for m in SCHEMA.metrics:
            if m.kind.value == "histogram":
                per[m.name] = [int(x) for x in rng.integers(0, 50, m.slots)]
            elif m.kind.value == "sum":
                per[m.name] = float(rng.integers(0, 400))
            else:
                per[m.name] = int(rng.integers(0, 500))
        values[region] = per
    return SCHEMA.encode(values)


def plain_sum(vectors: Sequence[U64Vector]) -> list[int]:
    total = np.zeros(SCHEMA.vector_length, dtype=np.uint64)
    for v in vectors:
        total += v
    return [int(x) for x in total.view(np.int64)]


def assert_report_matches(
    report: Report, expected: list[int], k: int = 3, *, noise_sds: float = 0.0
) -> None:
    """Contributor counts exact; every cell equal to the plaintext sum of the slots it
    covers (a merged bin covers several), or within ``noise_sds`` sds of it with DP."""
    for region in report.regions:
        contributors = expected[SCHEMA.contributor_index(region.region)]
        assert region.suppressed == (contributors < k)
        if region.suppressed:
            assert region.cells == ()
            continue
        assert region.contributors == contributors
        covered = sorted(i for c in region.cells for i in cell_slots(SCHEMA, region.region, c))
        assert covered == [
            i
            for i, name in enumerate(SCHEMA.slot_names)
            if name.startswith(f"{region.region}/") and i != SCHEMA.contributor_index(region.region)
        ]
        for cell in region.cells:
            assert cell.value is not None, cell.slot
            truth = sum(expected[i] for i in cell_slots(SCHEMA, region.region, cell))
            assert abs(cell.value - truth) <= noise_sds * cell.noise_sd, cell.slot


async def run_parties(
    deployment: Deployment,
    port: int,
    round_id: str,
    vectors: dict[str, U64Vector],
    *,
    drop_after: dict[str, Phase] | None = None,
    expire_gone: bool = True,
    party_config: Mapping[str, Any] | None = None,
) -> dict[str, RoundView | BaseException]:
    """Run the parties of ``vectors`` through a round. With ``expire_gone`` (and an
    aggregator from the fixture), a phase closes as soon as only parties that are gone
    remain in it; pass False when another call runs more parties of the same round."""
    drop_after = drop_after or {}

    async def one(name: str) -> RoundView:
        bundle = load_bundle(deployment.bundle(name))
        config = replace(bundle.config, poll_interval_s=0.05, **(party_config or {}))
        bundle = replace(bundle, config=config)
        node = PartyNode(bundle, address=f"127.0.0.1:{port}", drop_after=drop_after.get(name))
        try:
            return await node.run_round(round_id, lambda _schema, _window: vectors[name])
        finally:
            await node.close()

    names = list(vectors)
    tasks = {n: asyncio.ensure_future(one(n)) for n in names}
    driver = asyncio.ensure_future(
        _expire_phases_of_the_gone(port, round_id, tasks) if expire_gone else asyncio.sleep(0)
    )
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*tasks.values(), return_exceptions=True), timeout=300
        )
    finally:
        driver.cancel()
        await asyncio.gather(driver, return_exceptions=True)
    return dict(zip(names, results, strict=True))


async def _expire_phases_of_the_gone(
    port: int, round_id: str, tasks: Mapping[str, asyncio.Future[RoundView]]
) -> None:
    """While the parties run: whenever every party the round still waits for is gone (its
    task ended: it dropped out or refused; or it never ran here), step the aggregator's
    clock past the phase deadline, as a real deadline would do later. A party that is
    still running is always waited for, however slowly a loaded machine runs it."""
    if port not in STEPPED:
        return  # an aggregator of the test's own, on the wall clock
    manager, clock = STEPPED[port]
    while True:
        view = manager.view(round_id)
        if view.state is not RoundState.OPEN:
            return
        waiting = view.waiting_for
        running = {n for n, t in tasks.items() if not t.done()}
        if waiting and not running & set(waiting):
            clock.pass_deadline(view.phase_deadline_ms)
        await asyncio.sleep(0.02)


async def open_round(agg: RunningAggregator, **kw: object) -> RoundView:
    spec = OpenRoundSpec(**{"mode": Mode.SECAGG, "parties": PARTIES, **kw})  # type: ignore[arg-type]
    return await agg.manager.open_round(spec)


async def test_secagg_round_all_parties(
    deployment: Deployment, aggregator: RunningAggregator
) -> None:
    view = await open_round(aggregator)
    vectors = {n: party_vector(i, skip_americas=i >= 2) for i, n in enumerate(PARTIES)}
    results = await run_parties(deployment, aggregator.port, view.round_id, vectors)
    assert all(
        isinstance(r, RoundView) and r.state is RoundState.COMPLETE for r in results.values()
    )
    # A finished round leaves memory: only open rounds are cached.
    assert view.round_id not in aggregator.manager.cached_rounds()
    # Each masked vector was stored once as its submission's payload (no running-sum
    # row), and a closed round keeps only the digests.
    masked = aggregator.store.submissions(view.round_id, Phase.MASK.value)
    assert [m.party for m in masked] and all(m.payload is None for m in masked)
    assert aggregator.store.accumulator(view.round_id) is None
    report = aggregator.manager.report(view.round_id)
    assert set(report.included_parties) == set(PARTIES)
    assert_report_matches(report, plain_sum(list(vectors.values())))
    americas = next(r for r in report.regions if r.region == "Americas")
    assert americas.suppressed and americas.contributors == 0


async def test_secagg_dropout_after_share_recovers(
    deployment: Deployment, aggregator: RunningAggregator
) -> None:
    view = await open_round(aggregator)
    vectors = {n: party_vector(i) for i, n in enumerate(PARTIES)}
    results = await run_parties(
        deployment, aggregator.port, view.round_id, vectors, drop_after={"team-e": Phase.SHARE}
    )
    assert isinstance(results["team-e"], SimulatedDropout)
    report = aggregator.manager.report(view.round_id)
    assert report.included_parties == ("team-a", "team-b", "team-c", "team-d")
    assert_report_matches(report, plain_sum([vectors[n] for n in PARTIES[:4]]))


async def test_secagg_dropout_after_mask_still_included(
    deployment: Deployment, aggregator: RunningAggregator
) -> None:
    view = await open_round(aggregator)
    vectors = {n: party_vector(i) for i, n in enumerate(PARTIES)}
    await run_parties(
        deployment, aggregator.port, view.round_id, vectors, drop_after={"team-b": Phase.MASK}
    )
    report = aggregator.manager.report(view.round_id)
    # team-b's masked vector arrived; its self-mask is removed from the other parties' shares.
    assert set(report.included_parties) == set(PARTIES)
    assert_report_matches(report, plain_sum(list(vectors.values())))


async def test_a_party_revoked_after_it_masked_aborts_the_round(
    deployment: Deployment, aggregator: RunningAggregator
) -> None:
    """README: revoke between rounds, since an open round that includes the party
    aborts. team-b masks and leaves; it is revoked before the round completes. Its
    vector would be in the sum, so nothing is released and the reason names it."""
    view = await open_round(aggregator)
    vectors = {n: party_vector(i) for i, n in enumerate(PARTIES)}

    async def revoke_once_past_mask() -> None:
        while aggregator.manager.view(view.round_id).phase not in (
            Phase.CONSISTENCY,
            Phase.UNMASK,
            Phase.DONE,
        ):
            await asyncio.sleep(0.01)
        aggregator.store.revoke("team-b")

    revoker = asyncio.ensure_future(revoke_once_past_mask())
    try:
        await run_parties(
            deployment, aggregator.port, view.round_id, vectors, drop_after={"team-b": Phase.MASK}
        )
    finally:
        await revoker
    final = aggregator.manager.view(view.round_id)
    assert final.state is RoundState.ABORTED
    assert "revoked during the round: team-b" in final.abort_reason
    with pytest.raises(BlindsumError):
        aggregator.manager.report(view.round_id)


@pytest.mark.parametrize("mode", [Mode.SECAGG, Mode.HE])
async def test_implausible_totals_are_rejected_and_nothing_is_released(
    deployment: Deployment, aggregator: RunningAggregator, mode: Mode
) -> None:
    """One party claims a billion APAC tickets (issue 12): the sum is exact, but no
    set of honest parties can produce it, so the round ends REJECTED naming the cell,
    and there is no report."""
    view = await open_round(aggregator, mode=mode)
    vectors = {n: party_vector(i) for i, n in enumerate(PARTIES)}
    cheat = vectors["team-c"].copy()
    cheat[SCHEMA.slot_index("APAC", "tickets")] = np.uint64(1_000_000_000)
    vectors["team-c"] = cheat
    await run_parties(deployment, aggregator.port, view.round_id, vectors)
    final = aggregator.manager.view(view.round_id)
    assert final.state is RoundState.REJECTED
    assert final.abort_reason.startswith("implausible totals: APAC/tickets above its bound")
    assert "1000000" not in final.abort_reason  # no value of any cell
    with pytest.raises(BlindsumError, match="was rejected"):
        aggregator.manager.report(view.round_id)


class _GarblingParty(SecAggParty):
    """team-c's protocol half, turned cheater: the share envelopes it sends to the
    parties in ``GARBLE_FOR`` have the right size and fail authentication."""

    GARBLE_FOR: frozenset[str] = frozenset()

    def share(self, *args: Any, **kwargs: Any) -> list[SealedShare]:
        envelopes = super().share(*args, **kwargs)
        if self.me != "team-c":
            return envelopes
        return [
            replace(e, ciphertext=bytes(b ^ 0x5A for b in e.ciphertext))
            if e.receiver in self.GARBLE_FOR
            else e
            for e in envelopes
        ]


@pytest.mark.parametrize("garble", ["one", "all"])
async def test_a_party_sending_garbage_envelopes_is_excluded_and_named(
    deployment: Deployment,
    aggregator: RunningAggregator,
    monkeypatch: pytest.MonkeyPatch,
    garble: str,
) -> None:
    """Issue 12: garbage share envelopes used to make every honest node exit 2 and the
    round abort naming nobody. Now each receiver complains and goes on, and team-c is
    named in the status and the audit. With t = 3 of 5 (a model with no corrupt
    parties, which the parties here accept), garbage to one party leaves three holders
    to rebuild team-c's mask key, and the round completes over the other four with
    their exact totals. Garbage to all of them leaves none: the round aborts, saying
    so, and still names team-c."""
    victims = ["team-a"] if garble == "one" else [p for p in PARTIES if p != "team-c"]
    monkeypatch.setattr(_GarblingParty, "GARBLE_FOR", frozenset(victims))
    monkeypatch.setattr("party.node.SecAggParty", _GarblingParty)
    model = params.ThreatModel(0.0, 0.2, params.Adversary.DEVIATING)
    view = await open_round(aggregator, threat=model)
    assert view.threshold == 3
    vectors = {n: party_vector(i) for i, n in enumerate(PARTIES)}
    results = await run_parties(
        deployment,
        aggregator.port,
        view.round_id,
        vectors,
        party_config={"min_corrupt_fraction": 0.0},
    )
    assert all(isinstance(r, RoundView) for r in results.values()), results
    final = aggregator.manager.view(view.round_id)
    named = dict(final.misbehaving)
    assert set(named) == {"team-c"}
    assert named["team-c"].startswith(f"its share envelope to {victims[0]}")
    assert "did not open (signed complaint)" in named["team-c"]
    audit = aggregator.manager.store.audit_log(view.round_id)
    complaints = [e[3] for e in audit if e[2] == "complaint"]
    assert sorted(c["accuser"] for c in complaints) == victims
    assert {c["accused"] for c in complaints} == {"team-c"}
    assert [e[3]["party"] for e in audit if e[2] == "party_misbehaved"] == ["team-c"]
    if garble == "all":
        assert final.state is RoundState.ABORTED
        assert "mask key of 'team-c' has only 0 holders among survivors whose share opened" in (
            final.abort_reason
        )
        return
    assert final.state is RoundState.COMPLETE, final.abort_reason
    report = aggregator.manager.report(view.round_id)
    honest = [n for n in PARTIES if n != "team-c"]
    assert report.included_parties == tuple(honest)
    assert_report_matches(report, plain_sum([vectors[n] for n in honest]))


async def test_secagg_too_few_survivors_aborts_with_reason(
    deployment: Deployment, aggregator: RunningAggregator
) -> None:
    view = await open_round(aggregator)
    # The default model at n = 5: C = ceil(0.5) = 1, so 2t >= 5 + 1 + 1 and t = 4.
    assert view.threshold == 4
    vectors = {n: party_vector(i) for i, n in enumerate(PARTIES)}
    results = await run_parties(
        deployment,
        aggregator.port,
        view.round_id,
        vectors,
        drop_after={"team-d": Phase.SHARE, "team-e": Phase.SHARE},
    )
    final = aggregator.manager.view(view.round_id)
    assert final.state is RoundState.ABORTED
    assert "only 3 parties" in final.abort_reason and "4" in final.abort_reason
    assert all(
        isinstance(r, SimulatedDropout) or r.state is RoundState.ABORTED  # type: ignore[union-attr]
        for r in results.values()
    )
    with pytest.raises(BlindsumError, match="aborted"):
        aggregator.manager.report(view.round_id)


async def test_secagg_absent_party_at_advertise_is_dropped(
    deployment: Deployment, aggregator: RunningAggregator
) -> None:
    view = await open_round(aggregator)
    vectors = {n: party_vector(i) for i, n in enumerate(PARTIES[:4])}
    await run_parties(deployment, aggregator.port, view.round_id, vectors)
    report = aggregator.manager.report(view.round_id)
    assert report.included_parties == PARTIES[:4]
    assert_report_matches(report, plain_sum(list(vectors.values())))


async def test_he_round_all_parties(deployment: Deployment, aggregator: RunningAggregator) -> None:
    view = await open_round(aggregator, mode=Mode.HE)
    vectors = {n: party_vector(10 + i, skip_americas=i >= 2) for i, n in enumerate(PARTIES)}
    results = await run_parties(deployment, aggregator.port, view.round_id, vectors)
    assert all(
        isinstance(r, RoundView) and r.state is RoundState.COMPLETE for r in results.values()
    )
    report = aggregator.manager.report(view.round_id)
    assert_report_matches(report, plain_sum(list(vectors.values())))


async def test_he_too_few_receipts_aborts(
    deployment: Deployment, aggregator: RunningAggregator
) -> None:
    view = await open_round(aggregator, mode=Mode.HE, min_contributors=3)
    vectors = {n: party_vector(i) for i, n in enumerate(PARTIES[:2])}
    await run_parties(deployment, aggregator.port, view.round_id, vectors)
    final = aggregator.manager.view(view.round_id)
    assert final.state is RoundState.ABORTED
    assert "receipts" in final.abort_reason


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_aggregator_restart_mid_round_completes(deployment: Deployment) -> None:
    port = _free_port()
    address = f"127.0.0.1:{port}"
    agg = await start_aggregator(deployment.agg_dir, listen=address)
    view = await open_round(agg, phase_timeout_s=30)
    vectors = {n: party_vector(i) for i, n in enumerate(PARTIES)}
    parties = asyncio.create_task(run_parties(deployment, port, view.round_id, vectors))
    # Kill the aggregator once the round is past the share phase, then start a fresh one.
    past_share = (Phase.MASK, Phase.CONSISTENCY, Phase.UNMASK)
    for _ in range(15000):  # a bound, not a deadline: up to 300 s on a loaded machine
        if agg.manager.view(view.round_id).phase in past_share:
            break
        await asyncio.sleep(0.02)
    assert agg.manager.view(view.round_id).phase in past_share
    await agg.stop(grace=None)
    await asyncio.sleep(0.3)
    agg2 = await start_aggregator(deployment.agg_dir, listen=address)
    try:
        results = await parties
        assert all(isinstance(r, RoundView) for r in results.values()), results
        report = agg2.manager.report(view.round_id)
        assert_report_matches(report, plain_sum(list(vectors.values())))
    finally:
        await agg2.stop(grace=None)


async def test_reader_fetches_report_over_grpc(
    deployment: Deployment, aggregator: RunningAggregator
) -> None:
    view = await open_round(aggregator)
    vectors = {n: party_vector(i) for i, n in enumerate(PARTIES)}
    await run_parties(deployment, aggregator.port, view.round_id, vectors)
    reader = load_bundle(deployment.reader)
    channel = secure_channel(f"127.0.0.1:{aggregator.port}", reader.tls, reader.ca_cert_pem)
    try:
        stub = report_pb2_grpc.ReportServiceStub(channel)
        msg = await stub.GetReport(common_pb2.RoundRef(round_id=view.round_id))
    finally:
        await channel.close(None)
    assert codec.report_from_pb(msg) == aggregator.manager.report(view.round_id)


async def test_party_restart_mid_round_resumes_from_its_state(
    deployment: Deployment, aggregator: RunningAggregator
) -> None:
    """A party node that dies after sharing and is started again finishes the round."""
    view = await open_round(aggregator, phase_timeout_s=30)
    vectors = {n: party_vector(i) for i, n in enumerate(PARTIES)}
    first = await asyncio.wait_for(
        _crash_then_resume(deployment, aggregator, view.round_id, vectors), timeout=120
    )
    assert first
    report = aggregator.manager.report(view.round_id)
    assert set(report.included_parties) == set(PARTIES)
    assert_report_matches(report, plain_sum(list(vectors.values())))


async def _crash_then_resume(
    deployment: Deployment,
    aggregator: RunningAggregator,
    round_id: str,
    vectors: dict[str, U64Vector],
) -> bool:
    others = {n: v for n, v in vectors.items() if n != "team-a"}
    # Three calls run parties of one round, and no party is ever gone for good: no phase
    # is expired early (the 30 s deadline is only a safety net).
    rest = asyncio.create_task(
        run_parties(deployment, aggregator.port, round_id, others, expire_gone=False)
    )
    crashed = await run_parties(
        deployment,
        aggregator.port,
        round_id,
        {"team-a": vectors["team-a"]},
        drop_after={"team-a": Phase.SHARE},
        expire_gone=False,
    )
    assert isinstance(crashed["team-a"], SimulatedDropout)
    state_file = deployment.bundle("team-a") / "state" / f"{round_id}.json"
    assert state_file.exists() and state_file.stat().st_mode & 0o077 == 0
    resumed = await run_parties(
        deployment, aggregator.port, round_id, {"team-a": vectors["team-a"]}, expire_gone=False
    )
    await rest
    view = resumed["team-a"]
    return isinstance(view, RoundView) and view.state is RoundState.COMPLETE


async def test_he_round_survives_a_custodian_outage(
    deployment: Deployment, aggregator: RunningAggregator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unreachable custodian delays the release; it never loses the round."""
    from aggregator import config as cfgmod
    from aggregator import rounds as rounds_mod
    from aggregator.service import start_custodian

    view = await open_round(aggregator, mode=Mode.HE, phase_timeout_s=120)
    await aggregator.manager.public_context("team-a", view.round_id)  # cached before the outage
    assert aggregator.custodian_server is not None
    await aggregator.custodian_server.stop(None)
    monkeypatch.setattr(rounds_mod, "CUSTODIAN_RETRY_MS", 100)
    vectors = {n: party_vector(60 + i) for i, n in enumerate(PARTIES)}
    parties = asyncio.create_task(run_parties(deployment, aggregator.port, view.round_id, vectors))
    for _ in range(6000):  # a bound, not a deadline: up to 300 s on a loaded machine
        if len(aggregator.manager.view(view.round_id).submitted) == len(PARTIES):
            break
        await asyncio.sleep(0.05)
    # Every ciphertext is in, so the round would release now if the custodian answered.
    assert len(aggregator.manager.view(view.round_id).submitted) == len(PARTIES)
    await asyncio.sleep(0.5)  # several ticks with the custodian down
    assert aggregator.manager.view(view.round_id).state is RoundState.OPEN
    cfg = cfgmod.load(deployment.agg_dir)
    server, _, custodian = await start_custodian(
        deployment.agg_dir, cfg, f"127.0.0.1:{aggregator.custodian_port}"
    )
    try:
        results = await parties
        assert all(isinstance(r, RoundView) for r in results.values()), results
        assert_report_matches(
            aggregator.manager.report(view.round_id), plain_sum(list(vectors.values()))
        )
    finally:
        await server.stop(None)
        custodian.store.close()


async def test_long_poll_answers_when_the_phase_moves(
    deployment: Deployment, aggregator: RunningAggregator
) -> None:
    """GetRound with known_phase/wait_ms holds the answer until the phase changes, so
    parties learn of a new phase at once; unchanged, it answers at the deadline."""
    view = await open_round(aggregator)
    manager = aggregator.manager
    same = await manager.watch(view.round_id, Phase.COMMIT, 50)
    assert (same.phase, same.state) == (Phase.COMMIT, RoundState.OPEN)
    watcher = asyncio.create_task(manager.watch(view.round_id, Phase.COMMIT, 10_000))
    await asyncio.sleep(0.05)
    assert not watcher.done()  # nothing has moved yet, so the poll is still held
    vectors = {n: party_vector(i) for i, n in enumerate(PARTIES)}
    results = await run_parties(deployment, aggregator.port, view.round_id, vectors)
    assert all(isinstance(r, RoundView) for r in results.values())
    moved = await asyncio.wait_for(watcher, 10)
    assert moved.phase is not Phase.COMMIT
    # Over gRPC, with the party's own certificate: an unknown phase value is refused.
    bundle = load_bundle(deployment.bundle(PARTIES[0]))
    channel = secure_channel(
        f"127.0.0.1:{aggregator.port}",
        bundle.tls,
        bundle.ca_cert_pem,
        server_name=bundle.config.server_name,
    )
    try:
        stub = round_pb2_grpc.RoundServiceStub(channel)
        done = await stub.GetRound(
            common_pb2.RoundRef(
                round_id=view.round_id, known_phase=common_pb2.PHASE_ADVERTISE, wait_ms=100
            ),
            timeout=10,
        )
        assert done.state == common_pb2.ROUND_STATE_COMPLETE
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetRound(
                common_pb2.RoundRef(
                    round_id=view.round_id,
                    known_phase=99,  # type: ignore[arg-type]  # the invalid case
                    wait_ms=100,
                ),
                timeout=10,
            )
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await channel.close(None)


async def test_open_round_derives_parameters_from_the_threat_model_and_refuses_weak_ones(
    aggregator: RunningAggregator,
) -> None:
    """The aggregator states the threat model, derives (degree, threshold) from it, and
    refuses an operator's choice, or a model, that cannot be met, naming the rule."""
    view = await open_round(aggregator)
    assert view.threat == params.DEFAULT_THREAT_MODEL
    chosen = params.find(len(PARTIES), params.DEFAULT_THREAT_MODEL)
    assert (view.graph_degree, view.threshold) == (chosen.wire_degree(), chosen.threshold)
    # t = 3 of 5 is below the deviating rule 2t >= h + c + 1 = 7.
    with pytest.raises(UnsafeRequest) as err:
        await open_round(aggregator, threshold=3)
    assert err.value.field == "threshold" and "h + c + 1" in str(err.value)
    # 40 % corrupt and 40 % dropouts of 5: t >= 4 for privacy, t <= 3 for liveness.
    hard = params.ThreatModel(0.4, 0.4, params.Adversary.DEVIATING)
    with pytest.raises(UnsafeRequest):
        await open_round(aggregator, threat=hard)
    # A curious aggregator needs t > c only.
    curious = params.ThreatModel(0.2, 0.2, params.Adversary.CURIOUS)
    relaxed = await open_round(aggregator, threat=curious)
    assert relaxed.threat == curious and relaxed.threshold == 2


async def test_an_he_round_from_before_the_upgrade_resumes_from_its_running_sum(
    deployment: Deployment, aggregator: RunningAggregator
) -> None:
    """Older aggregators kept an he round as one running-sum row plus, per party, only
    the ciphertext's digest and receipt. A round left open across the upgrade is summed
    from that row and released with the exact total."""
    view = await open_round(aggregator, mode=Mode.HE)
    rid, store = view.round_id, aggregator.store
    signed = await aggregator.manager.public_context(PARTIES[0], rid)
    public = signed.open()
    vectors = {n: party_vector(20 + i) for i, n in enumerate(PARTIES)}
    total: list[bytes] | None = None
    for name, vector in vectors.items():
        bundle = load_bundle(deployment.bundle(name))
        assert bundle.identity_key is not None
        chunks = public.encrypt(to_centred(vector))
        signature = make_receipt(
            bundle.identity_key,
            round_id=rid,
            schema_id=view.schema_id,
            chunks=chunks,
            context=signed.hash,
        )
        digest = ciphertext_digest(chunks)
        total = public.add_chunks(total, chunks)
        # What the old aggregator stored: the digest and receipt, and the running sum.
        receipt = round_pb2.SubmitCiphertextRequest(chunks=[digest], receipt_signature=signature)
        store.put_submission(
            rid, Phase.COLLECT.value, name, digest.hex(), receipt.SerializeToString()
        )
        store.put_accumulator(
            rid,
            round_pb2.SubmitCiphertextRequest(chunks=total).SerializeToString(),
            list(vectors)[: list(vectors).index(name) + 1],
        )
    await aggregator.manager.tick()
    assert aggregator.manager.view(rid).state is RoundState.COMPLETE
    assert_report_matches(aggregator.manager.report(rid), plain_sum(list(vectors.values())))
