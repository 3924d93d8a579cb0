"""The release step over real gRPC + mTLS on 127.0.0.1:0: DP rounds, the privacy budget,
party privacy policies, and reading released reports.

Noise comes from a CSPRNG (parties) and OpenDP (central), so values are random; every
check is either exact (counts, ledger, statuses) or a 6-sd tolerance, which a correct
release fails with probability far below 1e-6 per run.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from jsonschema import Draft202012Validator

from aggregator import config as cfgmod
from aggregator.service import RunningAggregator, start_aggregator
from blindsum import codec
from blindsum.bundle import BUNDLE_CONFIG, PartyConfig, load_bundle
from blindsum.config import dump_config, load_config
from blindsum.errors import FailedPrecondition, NotFound
from blindsum.model import (
    DpMode,
    DpSpec,
    Mode,
    OpenRoundSpec,
    Phase,
    Report,
    RoundState,
    RoundView,
)
from blindsum.rpc.v1 import admin_pb2_grpc, common_pb2, report_pb2, report_pb2_grpc
from blindsum.transport.pki import KeyAndCert
from blindsum.transport.tls import secure_channel
from blindsum_app.cli import main as cli_main
from party.node import SimulatedDropout
from tests.conftest import PARTIES, Deployment
from tests.integration.test_rounds_grpc import (
    assert_report_matches,
    open_round,
    party_vector,
    plain_sum,
    run_parties,
)

pytestmark = pytest.mark.timeout(60)

REPORT_SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "report.schema.json"
#: An explicit ledger window, so no test depends on which ISO week it runs in.
WINDOW = "test-window"
CAMPAIGN = "release-tests"
#: The DP tolerance of assert_report_matches: P(|N(0, 1)| > 6) is about 2e-9 per cell.
NOISE_SDS = 6.0


# -- helpers --------------------------------------------------------------------------


def _dp(mode: DpMode, rho: float, campaign: str = CAMPAIGN) -> DpSpec:
    return DpSpec(mode=mode, rho=rho, campaign=campaign, window=WINDOW)


def _set_budget(deployment: Deployment, budget_rho: float) -> None:
    """Rewrite ``[release] budget_rho`` of the copied deployment before it starts."""
    cfg = cfgmod.load(deployment.agg_dir)
    cfg = replace(cfg, release=replace(cfg.release, budget_rho=budget_rho))
    (deployment.agg_dir / cfgmod.CONFIG_NAME).write_text(dump_config(cfg))


def _set_party_policy(deployment: Deployment, name: str, **policy: Any) -> None:
    """Rewrite the privacy keys of one copied bundle's party.toml."""
    path = deployment.bundle(name) / BUNDLE_CONFIG
    config = replace(load_config(path, PartyConfig), **policy)
    path.write_text(dump_config(config))


def _sqlite_path(deployment: Deployment) -> Path:
    url = cfgmod.load(deployment.agg_dir).store.url
    assert url.startswith("sqlite:///"), url
    return cfgmod.resolve(deployment.agg_dir, url.removeprefix("sqlite:///"))


@asynccontextmanager
async def _running(deployment: Deployment) -> AsyncIterator[RunningAggregator]:
    agg = await start_aggregator(deployment.agg_dir, listen="127.0.0.1:0")
    try:
        yield agg
    finally:
        await agg.stop(grace=None)


async def _get_report(deployment: Deployment, port: int, round_id: str) -> report_pb2.Report:
    """ReportService.GetReport with the reader bundle's certificate."""
    reader = load_bundle(deployment.reader)
    channel = secure_channel(f"127.0.0.1:{port}", reader.tls, reader.ca_cert_pem)
    try:
        stub = report_pb2_grpc.ReportServiceStub(channel)
        return await stub.GetReport(common_pb2.RoundRef(round_id=round_id), timeout=10)
    finally:
        await channel.close(None)


async def _get_report_error(
    deployment: Deployment, port: int, round_id: str
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _get_report(deployment, port, round_id)
    return err.value


async def _admin_open_round_error(
    deployment: Deployment, port: int, spec: OpenRoundSpec
) -> grpc.aio.AioRpcError:
    """AdminService.OpenRound with the admin certificate; the call must fail."""
    cfg = cfgmod.load(deployment.agg_dir)
    tls = KeyAndCert(
        key_pem=cfgmod.resolve(deployment.agg_dir, cfg.tls.admin_key).read_bytes(),
        cert_pem=cfgmod.resolve(deployment.agg_dir, cfg.tls.admin_cert).read_bytes(),
    )
    ca = cfgmod.resolve(deployment.agg_dir, cfg.tls.ca_cert).read_bytes()
    channel = secure_channel(f"127.0.0.1:{port}", tls, ca, server_name=cfg.server.server_name)
    try:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.OpenRound(codec.open_round_to_pb(spec), timeout=10)
    finally:
        await channel.close(None)
    return err.value


def _validator() -> Draft202012Validator:
    schema = json.loads(REPORT_SCHEMA.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _assert_valid_document(msg: report_pb2.Report) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(msg.document)
    errors = [e.message for e in _validator().iter_errors(doc)]
    assert errors == []
    return doc


async def _run_complete(
    deployment: Deployment, agg: RunningAggregator, round_id: str, offset: int = 0
) -> list[int]:
    """All five parties take part; returns the plaintext sum of their vectors."""
    vectors = {n: party_vector(offset + i) for i, n in enumerate(PARTIES)}
    results = await run_parties(deployment, agg.port, round_id, vectors)
    assert all(
        isinstance(r, RoundView) and r.state is RoundState.COMPLETE for r in results.values()
    ), results
    return plain_sum(list(vectors.values()))


# -- 1, 2: DP rounds --------------------------------------------------------------------


async def test_distributed_dp_secagg_round_with_dropout(
    deployment: Deployment, aggregator: RunningAggregator
) -> None:
    view = await open_round(aggregator, dp=_dp(DpMode.DISTRIBUTED, 0.5))
    # Noise is sized for the threshold (t = 4 of 5 under the default threat model: 2t >=
    # h + c + 1 with c = 1 corrupt of 5): the fewest parties a round can complete with,
    # whatever the aggregator does with dropouts.
    assert view.threshold == 4
    assert view.dp.expected_parties == view.threshold
    vectors = {n: party_vector(i) for i, n in enumerate(PARTIES)}
    results = await run_parties(
        deployment, aggregator.port, view.round_id, vectors, drop_after={"team-e": Phase.SHARE}
    )
    assert isinstance(results["team-e"], SimulatedDropout)

    report = aggregator.manager.report(view.round_id)
    included = PARTIES[:4]
    assert report.included_parties == included
    assert_report_matches(report, plain_sum([vectors[n] for n in included]), noise_sds=NOISE_SDS)
    dp = report.dp
    assert dp.mode is DpMode.DISTRIBUTED
    assert dp.noisy_parties == len(included)
    assert dp.expected_parties == 4
    assert dp.rho == pytest.approx(0.5)
    # Four parties' noise reached the aggregator, as many as the noise was sized for:
    # one dropout does not weaken the guarantee against it.
    assert dp.rho_vs_aggregator == pytest.approx(dp.rho)
    ledger = aggregator.manager.store.ledger(CAMPAIGN)
    assert [(e.window, e.round_id, e.rho) for e in ledger] == [(WINDOW, view.round_id, dp.rho)]
    assert dp.spent_rho == dp.rho

    msg = await _get_report(deployment, aggregator.port, view.round_id)
    assert codec.report_from_pb(msg) == report
    doc = _assert_valid_document(msg)
    assert doc["dp"]["mode"] == "distributed"


async def test_central_dp_he_round(deployment: Deployment, aggregator: RunningAggregator) -> None:
    view = await open_round(aggregator, mode=Mode.HE, dp=_dp(DpMode.CENTRAL, 0.5))
    expected = await _run_complete(deployment, aggregator, view.round_id, offset=20)

    report = aggregator.manager.report(view.round_id)
    assert set(report.included_parties) == set(PARTIES)
    assert_report_matches(report, expected, noise_sds=NOISE_SDS)
    dp = report.dp
    assert dp.mode is DpMode.CENTRAL
    assert dp.rho == pytest.approx(0.5)
    # The aggregator (with the custodian) saw exact totals: no guarantee against it.
    assert dp.rho_vs_aggregator is None
    assert dp.noisy_parties == 0
    ledger = aggregator.manager.store.ledger(CAMPAIGN)
    assert [(e.window, e.round_id, e.rho) for e in ledger] == [(WINDOW, view.round_id, dp.rho)]

    msg = await _get_report(deployment, aggregator.port, view.round_id)
    assert codec.report_from_pb(msg) == report
    doc = _assert_valid_document(msg)
    assert doc["dp"]["rho_vs_aggregator"] is None


# -- 3, 4: the privacy budget ----------------------------------------------------------


async def test_budget_refused_at_open_creates_nothing(deployment: Deployment) -> None:
    _set_budget(deployment, 1.0)
    async with _running(deployment) as agg:
        first = await open_round(agg, mode=Mode.HE, dp=_dp(DpMode.CENTRAL, 0.6))
        await _run_complete(deployment, agg, first.round_id)
        assert [e.round_id for e in agg.store.ledger(CAMPAIGN)] == [first.round_id]

        # 0.6 spent + 0.6 > 1.0: refused before anything is created.
        spec = OpenRoundSpec(
            mode=Mode.HE, parties=PARTIES, round_id="r-over-budget", dp=_dp(DpMode.CENTRAL, 0.6)
        )
        err = await _admin_open_round_error(deployment, agg.port, spec)
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "budget" in (err.details() or "")
        with pytest.raises(NotFound):
            agg.store.round("r-over-budget")
        assert [v.round_id for v in agg.manager.list_rounds()] == [first.round_id]
        assert [e.round_id for e in agg.store.ledger(CAMPAIGN)] == [first.round_id]

        # Another campaign has its own budget.
        other = await open_round(agg, mode=Mode.HE, dp=_dp(DpMode.CENTRAL, 0.6, "other"))
        assert other.state is RoundState.OPEN


async def test_budget_refused_at_release_aborts_second_round(deployment: Deployment) -> None:
    _set_budget(deployment, 1.0)
    async with _running(deployment) as agg:
        # Both fit the empty window when opened, but not together.
        first = await open_round(agg, mode=Mode.HE, dp=_dp(DpMode.CENTRAL, 0.6))
        second = await open_round(agg, mode=Mode.HE, dp=_dp(DpMode.CENTRAL, 0.6))
        await _run_complete(deployment, agg, first.round_id, offset=30)
        report = agg.manager.report(first.round_id)

        vectors = {n: party_vector(40 + i) for i, n in enumerate(PARTIES)}
        results = await run_parties(deployment, agg.port, second.round_id, vectors)
        assert all(
            isinstance(r, RoundView) and r.state is RoundState.ABORTED for r in results.values()
        ), results
        final = agg.manager.view(second.round_id)
        assert final.state is RoundState.ABORTED
        assert "privacy budget exhausted" in final.abort_reason
        with pytest.raises(NotFound):
            agg.store.release(second.round_id)
        with pytest.raises(FailedPrecondition, match="aborted"):
            agg.manager.report(second.round_id)
        ledger = agg.store.ledger(CAMPAIGN)
        assert [(e.round_id, e.rho) for e in ledger] == [(first.round_id, report.dp.rho)]
        assert agg.store.ledger_spent(CAMPAIGN, WINDOW) == report.dp.rho


# -- 5: the party's own privacy policy -------------------------------------------------


async def test_party_policy_refuses_round_before_sending(
    deployment: Deployment, aggregator: RunningAggregator
) -> None:
    _set_party_policy(deployment, "team-a", min_dp="distributed")
    _set_party_policy(deployment, "team-b", max_rho=0.1)
    view = await open_round(aggregator, dp=_dp(DpMode.CENTRAL, 0.5))
    # team-c keeps the default policy: the same round is acceptable to it.
    vectors = {n: party_vector(i) for i, n in enumerate(PARTIES[:3])}
    results = await run_parties(deployment, aggregator.port, view.round_id, vectors)

    refused_mode = results["team-a"]
    assert isinstance(refused_mode, FailedPrecondition)
    assert refused_mode.field == "dp.mode" and "dp.mode" in str(refused_mode)
    refused_rho = results["team-b"]
    assert isinstance(refused_rho, FailedPrecondition)
    assert refused_rho.field == "dp.rho" and "0.5" in str(refused_rho)
    accepted = results["team-c"]
    assert isinstance(accepted, RoundView) and accepted.state is RoundState.ABORTED

    final = aggregator.manager.view(view.round_id)
    # The round ends in the commit phase: one commitment is below the list floor.
    assert final.committed == ("team-c",)
    assert final.advertised == ()
    for name in ("team-a", "team-b"):
        assert not (deployment.bundle(name) / "state" / f"{view.round_id}.json").exists()
    assert (deployment.bundle("team-c") / "state" / f"{view.round_id}.json").exists()


async def test_party_max_rho_refuses_distributed_round(
    deployment: Deployment, aggregator: RunningAggregator
) -> None:
    _set_party_policy(deployment, "team-a", min_dp="distributed", max_rho=0.1)
    view = await open_round(aggregator, mode=Mode.HE, dp=_dp(DpMode.DISTRIBUTED, 0.5))
    results = await run_parties(
        deployment, aggregator.port, view.round_id, {"team-a": party_vector(0)}
    )
    refused = results["team-a"]
    assert isinstance(refused, FailedPrecondition) and refused.field == "dp.rho"
    assert aggregator.manager.view(view.round_id).submitted == ()
    assert aggregator.store.submissions(view.round_id, Phase.COLLECT.value) == []
    assert not (deployment.bundle("team-a") / "state" / f"{view.round_id}.json").exists()


# -- 6: reading reports over gRPC ------------------------------------------------------


async def test_reader_report_statuses_and_corrupt_release(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    async with _running(deployment) as agg:
        view = await open_round(agg, mode=Mode.HE, dp=_dp(DpMode.CENTRAL, 0.5))
        early = await _get_report_error(deployment, agg.port, view.round_id)
        assert early.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "not completed" in (early.details() or "")

        await _run_complete(deployment, agg, view.round_id, offset=50)
        msg = await _get_report(deployment, agg.port, view.round_id)
        fetched: Report = codec.report_from_pb(msg)
        assert fetched == agg.manager.report(view.round_id)
        assert fetched.dp.mode is DpMode.CENTRAL

        unknown = await _get_report_error(deployment, agg.port, "r-no-such-round")
        assert unknown.code() == grpc.StatusCode.NOT_FOUND

    # The aggregator is stopped: overwrite the stored document behind its back.
    with closing(sqlite3.connect(_sqlite_path(deployment))) as conn, conn:
        changed = conn.execute(
            "UPDATE releases SET report = ? WHERE round_id = ?", (b"{not json", view.round_id)
        ).rowcount
    assert changed == 1

    async with _running(deployment) as agg:
        corrupt = await _get_report_error(deployment, agg.port, view.round_id)
        # RoundManager.report raises a plain BlindsumError, which translate() maps to
        # INTERNAL with its (safe) message.
        assert corrupt.code() == grpc.StatusCode.INTERNAL
        assert "corrupt" in (corrupt.details() or "")
        assert view.round_id in (corrupt.details() or "")

    capsys.readouterr()
    code = cli_main(["report", "show", str(deployment.agg_dir), view.round_id])
    assert code != 0
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1, err_lines
    assert err_lines[0].startswith("blindsum: error:")
    assert view.round_id in err_lines[0] and "corrupt" in err_lines[0]


# -- 7: the report document's JSON schema ----------------------------------------------


async def test_fetched_document_validates_against_json_schema(
    deployment: Deployment, aggregator: RunningAggregator
) -> None:
    view = await open_round(aggregator, mode=Mode.HE, dp=_dp(DpMode.DISTRIBUTED, 0.5))
    await _run_complete(deployment, aggregator, view.round_id, offset=70)
    msg = await _get_report(deployment, aggregator.port, view.round_id)
    doc = _assert_valid_document(msg)
    assert doc["round_id"] == view.round_id
    assert doc["dp"]["mode"] == "distributed"
    assert doc["dp"]["noisy_parties"] == len(PARTIES)

    # The schema constrains the document: a forged DP mode or a missing key fails.
    validator = _validator()
    assert not validator.is_valid({**doc, "dp": {**doc["dp"], "mode": "none"}})
    assert not validator.is_valid({k: v for k, v in doc.items() if k != "dp"})
