"""Issue 13, item 5: renewing a party's certificates under the same identity. A round
runs across the renewal with the party still on its old certificates (the overlap);
after the overlap the old ones are refused and the renewed ones work."""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import pytest

from aggregator.admin import renew
from aggregator.service import start_aggregator
from aggregator.store import open_store
from blindsum.bundle import load_bundle
from blindsum.errors import FailedPrecondition, InvalidArgument
from blindsum.model import Mode, OpenRoundSpec, RoundState
from blindsum.rpc.v1 import round_pb2, round_pb2_grpc
from blindsum.transport.tls import secure_channel
from tests.conftest import PARTIES, Deployment
from tests.integration.test_rounds_grpc import party_vector, run_parties

DAY_MS = 86_400_000


async def _list_rounds(bundle_dir: Path, port: int) -> grpc.StatusCode:
    bundle = load_bundle(bundle_dir)
    channel = secure_channel(f"127.0.0.1:{port}", bundle.tls, bundle.ca_cert_pem)
    try:
        await round_pb2_grpc.RoundServiceStub(channel).ListRounds(
            round_pb2.ListRoundsRequest(), timeout=10
        )
    except grpc.aio.AioRpcError as err:
        return err.code()
    finally:
        await channel.close(None)
    return grpc.StatusCode.OK


async def test_a_round_across_a_renewal_and_the_old_certificates_refused_after(
    deployment: Deployment, tmp_path: Path
) -> None:
    clock = [1_800_000_000_000]
    team_a = deployment.bundle("team-a")
    old = tmp_path / "team-a-before"
    shutil.copytree(team_a, old)
    renewed_ms, until = renew(deployment.agg_dir, "team-a", bundle=team_a, overlap_days=7)
    assert until - renewed_ms >= 7 * DAY_MS - 60_000
    new_tls = load_bundle(team_a).tls.cert_pem
    assert new_tls != load_bundle(old).tls.cert_pem
    same_key = load_bundle(team_a).identity_key, load_bundle(old).identity_key
    assert same_key[0] is not None and same_key[1] is not None
    assert same_key[0].public_bytes == same_key[1].public_bytes  # the same identity
    clock[0] = renewed_ms + DAY_MS  # inside the overlap
    running = await start_aggregator(
        deployment.agg_dir, listen="127.0.0.1:0", clock_ms=lambda: clock[0]
    )
    try:
        # The round runs with team-a still on the certificates it had before.
        shutil.move(team_a, tmp_path / "team-a-renewed")
        shutil.copytree(old, team_a)
        view = await running.manager.open_round(OpenRoundSpec(mode=Mode.SECAGG, parties=PARTIES))
        vectors = {n: party_vector(i) for i, n in enumerate(PARTIES)}
        await run_parties(deployment, running.port, view.round_id, vectors, expire_gone=False)
        assert running.manager.view(view.round_id).state is RoundState.COMPLETE
        assert await _list_rounds(old, running.port) == grpc.StatusCode.OK
        # After the overlap: the old certificates are refused, the renewed ones are not.
        clock[0] = until + 1
        assert await _list_rounds(old, running.port) == grpc.StatusCode.UNAUTHENTICATED
        assert await _list_rounds(tmp_path / "team-a-renewed", running.port) == grpc.StatusCode.OK
        assert await _list_rounds(deployment.bundle("team-b"), running.port) == grpc.StatusCode.OK
    finally:
        await running.stop(grace=None)
    store = open_store("sqlite:///aggregator.sqlite", base_dir=deployment.agg_dir, readonly=True)
    try:
        renewed = [e[3] for e in store.audit_log("") if e[2] == "party_renewed"]
    finally:
        store.close()
    assert renewed == [{"party": "team-a", "old_certs_until_ms": until}]


def test_renew_refuses_a_foreign_bundle_or_a_revoked_party(
    deployment: Deployment, tmp_path: Path
) -> None:
    with pytest.raises(InvalidArgument, match="not the bundle of party 'team-a'"):
        renew(deployment.agg_dir, "team-a", bundle=deployment.bundle("team-b"))
    with pytest.raises(InvalidArgument, match="overlap"):
        renew(deployment.agg_dir, "team-a", bundle=deployment.bundle("team-a"), overlap_days=-1)
    from aggregator.admin import revoke

    revoke(deployment.agg_dir, "team-c")
    with pytest.raises(FailedPrecondition, match="revoked"):
        renew(deployment.agg_dir, "team-c", bundle=deployment.bundle("team-c"))


async def test_the_servers_certificates_are_renewed_in_place(deployment: Deployment) -> None:
    """renew-server: new keys, the same names, a later end; parties connect as before,
    since they trust the CA, and he rounds reach the renewed custodian."""
    from cryptography import x509

    from aggregator.admin import renew_server

    cert = deployment.agg_dir / "tls" / "server.crt"
    custodian = deployment.agg_dir / "custodian" / "tls.crt"
    before = [x509.load_pem_x509_certificate(p.read_bytes()) for p in (cert, custodian)]
    written = renew_server(deployment.agg_dir)
    assert written == [
        "tls/server.crt",
        "tls/server.key",
        "custodian/tls.crt",
        "custodian/tls.key",
    ]
    after = [x509.load_pem_x509_certificate(p.read_bytes()) for p in (cert, custodian)]
    for old_cert, new_cert in zip(before, after, strict=True):
        assert new_cert.serial_number != old_cert.serial_number
        assert new_cert.public_key() != old_cert.public_key()
        san = x509.SubjectAlternativeName
        assert new_cert.extensions.get_extension_for_class(san).value == (
            old_cert.extensions.get_extension_for_class(san).value
        )
        assert new_cert.not_valid_after_utc >= old_cert.not_valid_after_utc
    running = await start_aggregator(deployment.agg_dir, listen="127.0.0.1:0")
    try:
        view = await running.manager.open_round(OpenRoundSpec(mode=Mode.HE, parties=PARTIES))
        vectors = {n: party_vector(i) for i, n in enumerate(PARTIES)}
        await run_parties(deployment, running.port, view.round_id, vectors, expire_gone=False)
        assert running.manager.view(view.round_id).state is RoundState.COMPLETE
    finally:
        await running.stop(grace=None)
