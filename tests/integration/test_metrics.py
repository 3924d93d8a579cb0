"""Issue 13, item 2: ``/metrics`` on the probe port of a real aggregator, scraped after
a real secagg round and a real he round, with the values checked."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from prometheus_client.parser import text_string_to_metric_families

from aggregator import config as cfgmod
from aggregator.check import audit_log
from aggregator.metrics import cert_not_after_ms
from aggregator.service import RunningAggregator, start_aggregator
from aggregator.store import now_ms
from blindsum.model import DpMode, DpSpec, Mode, OpenRoundSpec, RoundState
from tests.conftest import PARTIES, Deployment
from tests.integration.test_hostile_bytes import _raw_calls
from tests.integration.test_release_grpc import _get_report as fetch_report
from tests.integration.test_rounds_grpc import party_vector, run_parties
from tests.unit.test_probes import get

GET_ROUND = "/blindsum.rpc.v1.RoundService/GetRound"


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """(sample name, sorted labels) -> value, for every sample of the exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: Samples, metric: str, /, **labels: str) -> float:
    return found[(metric, tuple(sorted(labels.items())))]


async def test_metrics_after_a_secagg_and_an_he_round(deployment: Deployment) -> None:
    cfg = cfgmod.load(deployment.agg_dir)
    cfg = replace(cfg, metrics=cfgmod.MetricsSection(listen="127.0.0.1:0"))
    running = await start_aggregator(deployment.agg_dir, listen="127.0.0.1:0", config=cfg)
    try:
        assert running.probes is not None
        port = running.probes.port
        vectors = {n: party_vector(i) for i, n in enumerate(PARTIES)}
        rounds = {}
        for mode in (Mode.SECAGG, Mode.HE):
            spec = OpenRoundSpec(
                mode=mode,
                parties=PARTIES,
                dp=DpSpec(mode=DpMode.CENTRAL, rho=0.25, campaign="metrics-test"),
            )
            view = await running.manager.open_round(spec)
            await run_parties(deployment, running.port, view.round_id, vectors, expire_gone=False)
            assert running.manager.view(view.round_id).state is RoundState.COMPLETE
            rounds[mode] = running.manager.view(view.round_id)
        # A reader may not call the round service: refused before its body is read.
        refused = await _raw_calls(deployment.reader, running.port, GET_ROUND, [b""])
        assert refused[0][0].name == "PERMISSION_DENIED"

        status, body = await get(port, "/metrics")
        assert status == 200
        found = samples(body.decode())
    finally:
        await running.stop(grace=None)

    n = len(PARTIES)
    assert value(found, "blindsum_rounds", mode="secagg", state="complete") == 1
    assert value(found, "blindsum_rounds", mode="he", state="complete") == 1
    for phase in ("commit", "advertise", "share", "mask", "consistency", "unmask"):
        assert (
            value(found, "blindsum_phase_duration_seconds_count", mode="secagg", phase=phase) == 1
        )
    assert value(found, "blindsum_phase_duration_seconds_count", mode="he", phase="collect") == 1
    for rpc in ("Commit", "Advertise", "SubmitShares", "SubmitMasked", "SubmitUnmask"):
        assert value(found, "blindsum_rpc_calls_total", rpc=rpc, code="OK") == n, rpc
    assert value(found, "blindsum_rpc_calls_total", rpc="SubmitCiphertext", code="OK") == n
    assert value(found, "blindsum_rpc_calls_total", rpc="GetRound", code="PERMISSION_DENIED") == 1
    assert value(found, "blindsum_refused_calls_total", role="reader", reason="role") == 1
    assert value(found, "blindsum_custodian_decryptions_total", outcome="decrypted") == 1
    # Two releases charged the campaign's window; the budget is [release] budget_rho.
    window = rounds[Mode.SECAGG].dp.window
    assert window == rounds[Mode.HE].dp.window
    spent = value(found, "blindsum_dp_budget_spent_rho", campaign="metrics-test", window=window)
    assert spent == rounds[Mode.SECAGG].dp.rho + rounds[Mode.HE].dp.rho > 0
    left = value(found, "blindsum_dp_budget_left_rho", campaign="metrics-test", window=window)
    assert left == cfg.release.budget_rho - spent
    # Days left, as the certificates themselves say (within the minute the test took).
    server_pem = cfgmod.resolve(deployment.agg_dir, cfg.tls.cert).read_bytes()
    days = (cert_not_after_ms(server_pem) - now_ms()) / 86_400_000
    got = value(found, "blindsum_certificate_expiry_days", kind="server", name="server")
    assert got > 0 and abs(got - days) < 0.01
    for kind in ("ca", "admin", "custodian"):
        assert value(found, "blindsum_certificate_expiry_days", kind=kind, name=kind) > 0
    for party in PARTIES:
        days = value(found, "blindsum_certificate_expiry_days", kind="party_identity", name=party)
        assert days > 0
    assert value(found, "blindsum_store_up") == 1
    assert value(found, "blindsum_store_statement_seconds_count") > 0
    assert any(name == "blindsum_build_info" for name, _ in found)
    # Nothing in it names a value of a party's or a key: only the families above.
    assert {name.split("_")[0] for name, _ in found} == {"blindsum"}


async def test_fetches_and_refusals_are_audited_and_the_chain_verifies(
    deployment: Deployment, aggregator: RunningAggregator
) -> None:
    """Issue 13, item 7: a reader's report fetch and a refused call land in the audit
    log with who did it; `aggregator audit --verify` finds both stores' chains whole,
    and names the row when one is edited afterwards."""
    spec = OpenRoundSpec(mode=Mode.HE, parties=PARTIES)
    view = await aggregator.manager.open_round(spec)
    vectors = {n: party_vector(i) for i, n in enumerate(PARTIES)}
    await run_parties(deployment, aggregator.port, view.round_id, vectors)
    await fetch_report(deployment, aggregator.port, view.round_id)
    refused = await _raw_calls(deployment.reader, aggregator.port, GET_ROUND, [b""])
    assert refused[0][0].name == "PERMISSION_DENIED"
    reader = "spiffe://blindsum/reader/reader-1"
    store = aggregator.store
    fetched = [e[3] for e in store.audit_log(view.round_id) if e[2] == "report_fetched"]
    assert fetched == [{"who": reader}]
    for _ in range(600):  # the refusal is written off the event loop: a bounded wait
        calls = [e[3] for e in store.audit_log("") if e[2] == "call_refused"]
        if calls:
            break
        await asyncio.sleep(0.02)
    assert calls == [{"who": reader, "rpc": "GetRound", "reason": "role"}]
    enrolled = [e[3]["party"] for e in store.audit_log("") if e[2] == "party_enrolled"]
    assert enrolled == list(PARTIES)

    log = audit_log(deployment.agg_dir, verify=True)
    assert log.problems == []
    assert log.heads["aggregator"].startswith("hmac:")
    assert log.heads["custodian"].startswith("sha256:")
    assert any(r[0] == "custodian" and r[4] == "decrypted" for r in log.rows)
    # An intruder edits who fetched the report: the row is named.
    row = next(r for r in store.audit_rows(view.round_id) if r[3] == "report_fetched")
    store._exec("UPDATE audit SET detail_json = ? WHERE id = ?", ('{"who": "nobody"}', row[0]))
    problems = audit_log(deployment.agg_dir, verify=True).problems
    assert problems == [
        f"aggregator store: audit row {row[0]} (report_fetched) does not follow the row "
        "before it: it was altered, or a row before it was deleted"
    ]
