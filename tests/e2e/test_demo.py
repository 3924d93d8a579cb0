"""End to end: `blindsum demo` as a newcomer runs it, checked independently of its own check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from blindsum.schema import Schema, load_metrics_file


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

    # Recompute the expected totals here from the metrics files the demo wrote.
    schema = Schema.default()
    for rnd in (secagg, he):
        total = np.zeros(schema.vector_length, dtype=np.uint64)
        for name in rnd["included_parties"]:
            total += load_metrics_file(workdir / "parties" / f"{name}.metrics.json", schema)
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
