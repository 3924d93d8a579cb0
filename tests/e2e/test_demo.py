"""End to end: `blindsum demo` as a newcomer runs it, checked independently of its own check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from blindsum.schema import Schema
from party.anonymize import PartySecret, Pseudonymizer
from party.ingest import ingest_file
from party.mapping import load_mapping
from party.metrics import compute_metrics


def test_demo_both_modes_releases_correct_totals(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "blindsum.cli", "demo", "--json", "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["ok"] is True
    secagg, he = out["rounds"]
    assert (secagg["mode"], secagg["state"]) == ("secagg", "complete")
    assert secagg["dropped_parties"] == ["team-epsilon"]
    assert "team-epsilon" not in secagg["included_parties"]
    assert len(secagg["included_parties"]) == 4
    assert (he["mode"], he["state"], len(he["included_parties"])) == ("he", "complete", 5)

    # Recompute the expected totals here: ingest each party's export, cap per
    # customer with that party's own secret, and sum the vectors.
    schema = Schema.default()
    parties = workdir / "parties"
    for name in ("team-alpha", "team-beta", "team-gamma", "team-delta", "team-epsilon"):
        export = (parties / f"{name}.tickets.csv").read_text()
        assert "@" in export  # the raw export has emails in it...
        assert (parties / name / "party.secret").stat().st_mode & 0o077 == 0
    for rnd in (secagg, he):
        total = np.zeros(schema.vector_length, dtype=np.uint64)
        for name in rnd["included_parties"]:
            result = ingest_file(parties / f"{name}.tickets.csv", load_mapping("generic"))
            assert result.summary.quarantined == 0
            tokens = Pseudonymizer(PartySecret.load_or_create(parties / name / "party.secret"))
            values, _ = compute_metrics(result.tickets, schema, customer_of=tokens.customer_token)
            total += schema.encode(values)
        signed = total.view(np.int64)
        regions = {r["region"]: r for r in rnd["report"]["regions"]}
        assert regions["Americas"]["suppressed"] is True
        assert regions["Americas"]["cells"] == {}
        for region in ("APAC", "EMEA"):
            assert regions[region]["contributors"] == signed[schema.contributor_index(region)]
            tickets = signed[schema.slot_index(region, "tickets")]
            assert regions[region]["cells"]["tickets"] == tickets
            hours = signed[schema.slot_index(region, "resolution_hours_sum")] / 10
            assert abs(regions[region]["cells"]["resolution_hours_sum"] - hours) < 1e-9
    # ...and the injected service failure shows in the released EMEA escalation count.
    he_regions = {r["region"]: r for r in he["report"]["regions"]}
    emea, apac = he_regions["EMEA"]["cells"], he_regions["APAC"]["cells"]
    assert emea["escalated"] / emea["tickets"] > apac["escalated"] / apac["tickets"]
