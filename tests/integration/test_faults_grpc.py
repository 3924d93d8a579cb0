"""The fault list: bad certificates, uninvited parties, malformed and replayed messages."""

from __future__ import annotations

import asyncio
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import pytest_asyncio

from aggregator.service import RunningAggregator, start_aggregator
from blindsum import codec
from blindsum.bundle import load_bundle
from blindsum.crypto.sign import SigningKey
from blindsum.errors import FailedPrecondition, Unavailable
from blindsum.model import Mode, OpenRoundSpec, Phase, RoundView
from blindsum.protocol.secagg import SecAggParty, name_list
from blindsum.rpc.v1 import common_pb2, round_pb2, round_pb2_grpc
from blindsum.transport.pki import Identity, Role, create_ca, issue_tls_cert
from blindsum.transport.tls import secure_channel
from party.node import secagg_config
from tests.conftest import PARTIES, Deployment
from tests.integration.test_rounds_grpc import party_vector, run_parties


def _stub(
    deployment: Deployment, port: int, name: str
) -> tuple[grpc.aio.Channel, round_pb2_grpc.RoundServiceAsyncStub]:
    bundle = load_bundle(deployment.bundle(name))
    channel = secure_channel(f"127.0.0.1:{port}", bundle.tls, bundle.ca_cert_pem)
    return channel, round_pb2_grpc.RoundServiceStub(channel)


@pytest_asyncio.fixture
async def stub_a(
    deployment: Deployment, aggregator: RunningAggregator
) -> AsyncIterator[round_pb2_grpc.RoundServiceAsyncStub]:
    channel, stub = _stub(deployment, aggregator.port, "team-a")
    yield stub
    await channel.close(None)


def _commit(view: RoundView, key: SigningKey) -> round_pb2.CommitRequest:
    """team-a's first message in a secagg round: a signed commitment, built from the
    round's own parameters (the signature binds all of them)."""
    cfg = secagg_config(view)
    commit = SecAggParty(cfg, "team-a", key, secrets.token_bytes).commit()
    return codec.commit_to_request(view.round_id, view.schema_id, commit)


async def _open(agg: RunningAggregator, parties: tuple[str, ...] = PARTIES, **kw: object) -> str:
    spec = OpenRoundSpec(mode=kw.pop("mode", Mode.SECAGG), parties=parties, **kw)  # type: ignore[arg-type]
    return (await agg.manager.open_round(spec)).round_id


async def test_certificate_from_another_ca_is_rejected_and_nothing_stored(
    deployment: Deployment, aggregator: RunningAggregator
) -> None:
    rid = await _open(aggregator)
    rogue_ca = create_ca("rogue")
    rogue = issue_tls_cert(rogue_ca, Identity(Role.PARTY, "team-a"))
    real_ca = load_bundle(deployment.bundle("team-a")).ca_cert_pem
    channel = secure_channel(f"127.0.0.1:{aggregator.port}", rogue, real_ca)
    try:
        stub = round_pb2_grpc.RoundServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Advertise(round_pb2.AdvertiseRequest(round_id=rid), timeout=5)
        # The TLS handshake refuses the certificate, so no RPC runs at all.
        assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED)
    finally:
        await channel.close(None)
    assert aggregator.store.submissions(rid, "advertise") == []


async def test_missing_client_certificate_is_rejected(
    deployment: Deployment, aggregator: RunningAggregator
) -> None:
    ca = load_bundle(deployment.bundle("team-a")).ca_cert_pem
    creds = grpc.ssl_channel_credentials(root_certificates=ca)
    channel = grpc.aio.secure_channel(
        f"127.0.0.1:{aggregator.port}",
        creds,
        options=[("grpc.ssl_target_name_override", "blindsum-aggregator")],
    )
    try:
        stub = round_pb2_grpc.RoundServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListRounds(round_pb2.ListRoundsRequest(), timeout=5)
        assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED)
    finally:
        await channel.close(None)


async def test_revoked_party_is_unauthenticated(
    deployment: Deployment,
    aggregator: RunningAggregator,
    stub_a: round_pb2_grpc.RoundServiceAsyncStub,
) -> None:
    aggregator.store.revoke("team-a")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub_a.ListRounds(round_pb2.ListRoundsRequest())
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_party_revoked_while_calling_is_refused_within_the_check_s_reuse(
    deployment: Deployment,
    aggregator: RunningAggregator,
    stub_a: round_pb2_grpc.RoundServiceAsyncStub,
) -> None:
    """The enrollment check is reused for ENROLLED_TTL_S: a party that was calling is
    refused once that has passed (polled with a bounded loop, no wall-clock assertion)."""
    await stub_a.ListRounds(round_pb2.ListRoundsRequest())
    aggregator.store.revoke("team-a")
    code = None
    for _ in range(200):
        try:
            await stub_a.ListRounds(round_pb2.ListRoundsRequest())
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            break
        await asyncio.sleep(0.05)
    assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_uninvited_party_cannot_tell_a_round_from_no_round(
    deployment: Deployment, aggregator: RunningAggregator
) -> None:
    """An uninvited party gets exactly what it gets for a round id that does not exist
    (NOT_FOUND, the same words), so it cannot probe which rounds exist."""
    rid = await _open(aggregator, parties=("team-b", "team-c", "team-d"))
    ghost = "r-" + "0" * (len(rid) - 2)
    channel, stub = _stub(deployment, aggregator.port, "team-a")

    async def refusal(round_id: str) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetRound(common_pb2.RoundRef(round_id=round_id))
        return err.value.code(), (err.value.details() or "").replace(round_id, "ID")

    try:
        seen, unseen = await refusal(rid), await refusal(ghost)
        assert seen == unseen
        assert seen[0] == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Advertise(
                round_pb2.AdvertiseRequest(
                    round_id=rid,
                    c_public_key=b"\x01" * 32,
                    s_public_key=b"\x02" * 32,
                    signature=b"\x03" * 64,
                )
            )
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await channel.close(None)


async def test_party_cannot_use_admin_or_report_service(
    deployment: Deployment, aggregator: RunningAggregator
) -> None:
    from blindsum.rpc.v1 import admin_pb2, admin_pb2_grpc, report_pb2_grpc

    bundle = load_bundle(deployment.bundle("team-a"))
    channel = secure_channel(f"127.0.0.1:{aggregator.port}", bundle.tls, bundle.ca_cert_pem)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await admin_pb2_grpc.AdminServiceStub(channel).ListRounds(
                admin_pb2.ListAllRoundsRequest()
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await report_pb2_grpc.ReportServiceStub(channel).GetReport(
                common_pb2.RoundRef(round_id="x")
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await channel.close(None)


async def test_malformed_advert_fields_are_invalid_argument(
    aggregator: RunningAggregator, stub_a: round_pb2_grpc.RoundServiceAsyncStub
) -> None:
    rid = await _open(aggregator)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub_a.Advertise(round_pb2.AdvertiseRequest(round_id=rid, c_public_key=b"\x01" * 31))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "c_public_key" in (err.value.details() or "")
    # A well-formed advert whose signature does not verify.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub_a.Advertise(
            round_pb2.AdvertiseRequest(
                round_id=rid,
                schema_id=aggregator.manager.view(rid).schema_id,
                c_public_key=b"\x01" * 32,
                s_public_key=b"\x02" * 32,
                signature=b"\x03" * 64,
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert aggregator.store.submissions(rid, "advertise") == []


async def test_wrong_schema_id_is_invalid_argument(
    deployment: Deployment,
    aggregator: RunningAggregator,
    stub_a: round_pb2_grpc.RoundServiceAsyncStub,
) -> None:
    rid = await _open(aggregator)
    view = aggregator.manager.view(rid)
    key = load_bundle(deployment.bundle("team-a")).identity_key
    assert key is not None
    req = _commit(view, key)
    req.schema_id = "00" * 32
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub_a.Commit(req)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "schema_id" in (err.value.details() or "")


async def test_retry_is_idempotent_and_a_different_second_submission_is_rejected(
    deployment: Deployment,
    aggregator: RunningAggregator,
    stub_a: round_pb2_grpc.RoundServiceAsyncStub,
) -> None:
    rid = await _open(aggregator)
    view = aggregator.manager.view(rid)
    key = load_bundle(deployment.bundle("team-a")).identity_key
    assert key is not None
    req = _commit(view, key)
    first = await stub_a.Commit(req)
    again = await stub_a.Commit(req)
    assert (first.replay, again.replay) == (False, True)
    assert first.digest_hex == again.digest_hex
    other = _commit(view, key)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub_a.Commit(other)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert aggregator.store.submitted_parties(rid, "commit") == ["team-a"]


async def test_replay_from_an_old_round_is_rejected(
    deployment: Deployment,
    aggregator: RunningAggregator,
    stub_a: round_pb2_grpc.RoundServiceAsyncStub,
) -> None:
    old = await _open(aggregator)
    view = aggregator.manager.view(old)
    key = load_bundle(deployment.bundle("team-a")).identity_key
    assert key is not None
    req = _commit(view, key)
    await stub_a.Commit(req)
    await aggregator.manager.abort(old, "test")
    new = await _open(aggregator)
    # The same signed commitment, pointed at the new round: the signature binds the old
    # round's whole configuration.
    req.round_id = new
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub_a.Commit(req)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # And anything sent to the closed round is refused.
    fresh = _commit(view, key)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub_a.Commit(fresh)
    assert err.value.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS)


async def test_wrong_length_masked_vector_is_invalid_argument(
    deployment: Deployment, aggregator: RunningAggregator
) -> None:
    rid = await _open(aggregator, phase_timeout_s=30)
    vectors = {n: party_vector(i) for i, n in enumerate(PARTIES)}
    # Run the round up to the mask phase with four parties stopping after share...
    task = run_parties(
        deployment,
        aggregator.port,
        rid,
        vectors,
        drop_after=dict.fromkeys(PARTIES, Phase.SHARE),
        expire_gone=False,  # the round must sit in the next phase for the test
    )
    await task
    assert aggregator.manager.view(rid).phase is Phase.MASK
    channel, stub = _stub(deployment, aggregator.port, "team-a")
    try:
        view = aggregator.manager.view(rid)
        bad = round_pb2.SubmitMaskedRequest(
            round_id=rid,
            schema_id=view.schema_id,
            masked_vector=b"\x00" * (8 * view.vector_length - 8),
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.SubmitMasked(bad)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "masked_vector" in (err.value.details() or "")
    finally:
        await channel.close(None)
    assert aggregator.store.accumulator(rid) is None


async def test_oversized_message_is_resource_exhausted(
    aggregator: RunningAggregator, stub_a: round_pb2_grpc.RoundServiceAsyncStub
) -> None:
    rid = await _open(aggregator)
    huge = round_pb2.SubmitMaskedRequest(round_id=rid, masked_vector=b"\x00" * (40 * 1024 * 1024))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub_a.SubmitMasked(huge)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The server is still healthy afterwards.
    await stub_a.ListRounds(round_pb2.ListRoundsRequest())


async def test_malformed_ciphertext_is_invalid_argument(
    deployment: Deployment,
    aggregator: RunningAggregator,
    stub_a: round_pb2_grpc.RoundServiceAsyncStub,
) -> None:
    rid = await _open(aggregator, mode=Mode.HE)
    view = aggregator.manager.view(rid)
    from blindsum.protocol.he import make_receipt

    key = load_bundle(deployment.bundle("team-a")).identity_key
    assert key is not None
    chunks = [b"not a ciphertext" * 10]
    ctx = (await aggregator.manager.public_context("team-a", rid)).hash
    sig = make_receipt(key, round_id=rid, schema_id=view.schema_id, chunks=chunks, context=ctx)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub_a.SubmitCiphertext(
            round_pb2.SubmitCiphertextRequest(
                round_id=rid,
                schema_id=view.schema_id,
                chunks=chunks,
                receipt_signature=sig,
                context_hash=ctx,
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert aggregator.store.submissions(rid, "collect") == []


async def test_unknown_round_is_not_found(stub_a: round_pb2_grpc.RoundServiceAsyncStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub_a.GetRound(common_pb2.RoundRef(round_id="r-does-not-exist"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_vector_helpers_are_exact() -> None:
    v = np.array([0, 1, 2**64 - 1], dtype=np.uint64)
    assert np.array_equal(codec.vector_from_bytes(codec.vector_to_bytes(v), 3), v)


async def test_he_submission_retry_is_idempotent_and_a_second_ciphertext_is_refused(
    deployment: Deployment,
    aggregator: RunningAggregator,
    stub_a: round_pb2_grpc.RoundServiceAsyncStub,
) -> None:
    from blindsum.crypto.he import BfvParams, BfvPublicContext, to_centred
    from blindsum.protocol.he import context_hash, context_transcript, make_receipt

    rid = await _open(aggregator, mode=Mode.HE)
    view = aggregator.manager.view(rid)
    bundle = load_bundle(deployment.bundle("team-a"))
    assert bundle.identity_key is not None and bundle.custodian_key is not None
    ctx = await stub_a.GetPublicContext(common_pb2.RoundRef(round_id=rid))
    bundle.custodian_key.verify(ctx.signature, context_transcript(ctx.context))
    public = BfvPublicContext.from_bytes(
        ctx.context, expected=BfvParams(ctx.poly_modulus_degree, ctx.plain_modulus)
    )
    vector = party_vector(1)
    digest = context_hash(ctx.context)

    def request() -> round_pb2.SubmitCiphertextRequest:
        chunks = public.encrypt(to_centred(vector))
        assert bundle.identity_key is not None
        sig = make_receipt(
            bundle.identity_key,
            round_id=rid,
            schema_id=view.schema_id,
            chunks=chunks,
            context=digest,
        )
        return round_pb2.SubmitCiphertextRequest(
            round_id=rid,
            schema_id=view.schema_id,
            chunks=chunks,
            receipt_signature=sig,
            context_hash=digest,
        )

    first = request()
    a1 = await stub_a.SubmitCiphertext(first)
    a2 = await stub_a.SubmitCiphertext(first)
    assert (a1.replay, a2.replay, a1.digest_hex) == (False, True, a2.digest_hex)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub_a.SubmitCiphertext(request())  # fresh randomness: a different ciphertext
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert aggregator.store.submitted_parties(rid, "collect") == ["team-a"]
    # A receipt signed for another round does not verify here.
    forged = request()
    forged.receipt_signature = make_receipt(
        bundle.identity_key,
        round_id="r-other",
        schema_id=view.schema_id,
        chunks=list(forged.chunks),
        context=digest,
    )
    channel, stub_b = _stub(deployment, aggregator.port, "team-b")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub_b.SubmitCiphertext(forged)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await channel.close(None)


async def test_a_ciphertext_under_another_custodians_key_is_refused(
    deployment: Deployment,
    aggregator: RunningAggregator,
    stub_a: round_pb2_grpc.RoundServiceAsyncStub,
) -> None:
    """Issue 12: a ciphertext encrypted under another custodian's key was accepted and
    released as 92 billion contributors. A receipt now binds the hash of the context it
    was encrypted under, and only this round's context is taken. (A party that signs for
    this context over chunks under another key is lying about its input; the check of
    implausible totals refuses what those decrypt to.)"""
    from blindsum.crypto.he import BfvSecretContext, to_centred
    from blindsum.protocol.he import context_hash, make_receipt

    rid = await _open(aggregator, mode=Mode.HE)
    view = aggregator.manager.view(rid)
    key = load_bundle(deployment.bundle("team-a")).identity_key
    assert key is not None
    other = BfvSecretContext.generate()
    other_hash = context_hash(other.public_bytes())
    chunks = other.public().encrypt(to_centred(party_vector(3)))
    sig = make_receipt(
        key, round_id=rid, schema_id=view.schema_id, chunks=chunks, context=other_hash
    )
    request = round_pb2.SubmitCiphertextRequest(
        round_id=rid,
        schema_id=view.schema_id,
        chunks=chunks,
        receipt_signature=sig,
        context_hash=other_hash,
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub_a.SubmitCiphertext(request)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "encrypted under custodian context" in (err.value.details() or "")
    assert "fetch GetPublicContext again" in (err.value.details() or "")
    # Claiming this round's context does not help: the receipt names the other one.
    current = (await aggregator.manager.public_context("team-a", rid)).hash
    request.context_hash = current
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub_a.SubmitCiphertext(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # And a receipt without any context (an older node) is refused by name.
    request.ClearField("context_hash")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub_a.SubmitCiphertext(request)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "(none)" in (err.value.details() or "")
    assert aggregator.store.submissions(rid, "collect") == []


async def test_malformed_shares_are_invalid_argument(
    deployment: Deployment, aggregator: RunningAggregator
) -> None:
    rid = await _open(aggregator, phase_timeout_s=30)
    vectors = {n: party_vector(i) for i, n in enumerate(PARTIES)}
    # Everyone advertises, then stops, so the round sits in the share phase.
    await run_parties(
        deployment,
        aggregator.port,
        rid,
        vectors,
        drop_after=dict.fromkeys(PARTIES, Phase.ADVERTISE),
        expire_gone=False,  # the round must sit in the next phase for the test
    )
    assert aggregator.manager.view(rid).phase is Phase.SHARE
    channel, stub = _stub(deployment, aggregator.port, "team-a")
    try:
        cases = [
            # envelope claiming another sender
            [
                round_pb2.Envelope(
                    sender="team-b", receiver="team-c", nonce=b"\x00" * 12, ciphertext=b"\x00" * 200
                )
            ],
            # wrong nonce length
            [
                round_pb2.Envelope(
                    sender="team-a", receiver="team-b", nonce=b"\x00" * 5, ciphertext=b"\x00" * 200
                )
            ],
            # too few envelopes (one neighbour only)
            [
                round_pb2.Envelope(
                    sender="team-a", receiver="team-b", nonce=b"\x00" * 12, ciphertext=b"\x00" * 200
                )
            ],
        ]
        for envelopes in cases:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.SubmitShares(
                    round_pb2.SubmitSharesRequest(round_id=rid, envelopes=envelopes)
                )
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, envelopes
    finally:
        await channel.close(None)
    assert aggregator.store.submissions(rid, "share") == []


async def test_a_second_aggregator_on_a_busy_port_is_refused(
    deployment: Deployment, aggregator: RunningAggregator, tmp_path: Path
) -> None:
    """gRPC's default SO_REUSEPORT let a second server share the port and steal calls.
    A copy of the aggregator directory (its own SQLite store) on the same port is
    refused with one line, and nothing is left listening or open."""
    other = tmp_path / "copy"
    shutil.copytree(deployment.agg_dir, other)
    (other / "aggregator.sqlite.serving.lock").unlink(missing_ok=True)
    with pytest.raises(Unavailable) as err:
        await start_aggregator(other, listen=f"127.0.0.1:{aggregator.port}", tick=False)
    assert err.value.field == "address" and "in use" in str(err.value)
    assert "\n" not in str(err.value)
    # The first one still answers, and the copy can serve on a free port.
    assert aggregator.manager.list_rounds() == []
    second = await start_aggregator(other, listen="127.0.0.1:0", tick=False)
    await second.stop(grace=None)


async def test_a_second_aggregator_on_the_same_sqlite_store_is_refused(
    deployment: Deployment, aggregator: RunningAggregator
) -> None:
    """Two processes deciding one round from one SQLite file would race; replicas
    need PostgreSQL. The second serve is refused before it listens."""
    with pytest.raises(FailedPrecondition) as err:
        await start_aggregator(deployment.agg_dir, listen="127.0.0.1:0", tick=False)
    assert err.value.field == "store" and "PostgreSQL" in str(err.value)
    # Once the first stops, the store can be served again.
    await aggregator.stop(grace=None)
    again = await start_aggregator(deployment.agg_dir, listen="127.0.0.1:0", tick=False)
    await again.stop(grace=None)


async def test_a_long_abort_reason_is_cut_so_every_later_call_still_gets_it(
    deployment: Deployment, aggregator: RunningAggregator
) -> None:
    """An abort reason travels in the status of every later call about the round; at
    n = 1,000 a reason listing every missing party (12.5 KB) overflowed gRPC's 8 KB
    metadata limit, and parties got RESOURCE_EXHAUSTED instead of the reason."""
    view = await aggregator.manager.open_round(OpenRoundSpec(mode=Mode.SECAGG, parties=PARTIES))
    await aggregator.manager.abort(view.round_id, "x" * 20_000)
    channel, stub = _stub(deployment, aggregator.port, PARTIES[0])
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetRoster(common_pb2.RoundRef(round_id=view.round_id))
        assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "aborted" in (err.value.details() or "")
    finally:
        await channel.close(None)
    assert len(aggregator.manager.view(view.round_id).abort_reason) <= 500


def test_a_list_of_names_in_a_message_is_bounded() -> None:
    names = [f"party-{i:05d}" for i in range(1000)]
    text = name_list(names)
    assert text.startswith("party-00000, party-00001") and text.endswith("and 992 more")
    assert name_list(names[:3]) == "party-00000, party-00001, party-00002"
