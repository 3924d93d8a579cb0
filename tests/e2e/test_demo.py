"""End to end: `blindsum demo` as a newcomer runs it, checked independently of its own check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from blindsum.schema import Schema
from party.ingest import ingest_file
from party.mapping import load_mapping
from party.metrics import compute_metrics
from party.pseudonym import PartySecret, Pseudonymizer


def test_demo_both_modes_releases_correct_totals(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "blindsum_app.cli", "demo", "--json", "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["ok"] is True
    # Issue 13: it leaves the weekly campaign scheduled, and shows it.
    assert out["scheduled"].startswith("weekly-kpis: every monday 06:00 UTC; secagg, 5 parties")
    # ...and ends with the audit log checked, and where its metrics were.
    assert out["audit_problems"] == [] and out["audit_events"] > 10
    assert out["metrics_url"].startswith("http://127.0.0.1:")
    secagg, he = out["rounds"]
    assert (secagg["mode"], secagg["state"]) == ("secagg", "complete")
    assert secagg["dropped_parties"] == ["team-epsilon"]
    assert "team-epsilon" not in secagg["included_parties"]
    assert len(secagg["included_parties"]) == 4
    assert (he["mode"], he["state"], len(he["included_parties"])) == ("he", "complete", 5)

    # Recompute the expected totals here: ingest each party's export of that week, cap
    # per customer with that party's own secret, and sum the vectors. Contributor counts
    # are exact; a noisy cell must be within 6 of its own noise sds of the sum (a correct
    # release fails this with probability ~2e-9 per cell).
    schema = Schema.default()
    parties = workdir / "parties"
    for name in ("team-alpha", "team-beta", "team-gamma", "team-delta", "team-epsilon"):
        export = (parties / f"{name}.{secagg['week']}.tickets.csv").read_text()
        assert "@" in export  # the raw export has emails in it...
        assert (parties / name / "party.secret").stat().st_mode & 0o077 == 0
    for rnd in (secagg, he):
        total = np.zeros(schema.vector_length, dtype=np.uint64)
        for name in rnd["included_parties"]:
            path = parties / f"{name}.{rnd['week']}.tickets.csv"
            result = ingest_file(path, load_mapping("generic"))
            assert result.summary.quarantined == 0
            tokens = Pseudonymizer(PartySecret.load_or_create(parties / name / "party.secret"))
            values, _ = compute_metrics(result.tickets, schema, customer_of=tokens.customer_token)
            total += schema.encode(values)
        signed = total.view(np.int64)
        report = rnd["report"]
        assert report["dp"]["mode"] == ("distributed" if rnd["mode"] == "secagg" else "central")
        assert report["dp"]["rho"] > 0 and report["dp"]["remaining_rho"] >= 0
        regions = {r["region"]: r for r in report["regions"]}
        assert regions["Americas"]["suppressed"] is True
        assert regions["Americas"]["cells"] == []
        for region in ("APAC", "EMEA"):
            assert regions[region]["contributors"] == signed[schema.contributor_index(region)]
            cells = {c["slot"]: c for c in regions[region]["cells"]}
            for slot in ("tickets", "escalated", "resolution_hours_sum"):
                cell = cells[slot]
                exact = signed[schema.slot_index(region, slot)]
                assert abs(cell["value"] - exact) <= 6 * cell["noise_sd"], slot
    # The injected service incident is flagged in EMEA in the second week, and only there.
    assert (secagg["incident"], he["incident"]) == (False, True)
    for rnd in (secagg, he):
        for region in rnd["report"]["regions"]:
            breach = [f for f in region["flags"] if f["severity"] == "breach"]
            assert bool(breach) == (rnd["incident"] and region["region"] == "EMEA"), region
    html = Path(out["report_html"])
    assert html.is_file() and "EMEA" in html.read_text()
