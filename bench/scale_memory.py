"""Scenario ``scale-memory`` (issue 11, item 6): finished rounds leave memory.

One aggregator process (SQLite store) runs 200 sequential small secagg rounds (4
parties, m = 16); its VmRSS after round 20 and after round 200 are compared (target:
at most 1.2x). The code lives in :mod:`bench.scale` (:func:`bench.scale.memory_run`);
this module is its entry in the scenario registry. Alone:
``python -m bench scale-memory [--rounds R]``.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench import scale
from bench.common import Result

SCENARIO = scale.MEMORY_SCENARIO
#: Headline metrics of this scenario's table rows.
KEY_METRICS = ("rss_after_20_mib", "rss_after_200_mib", "round_mean_s", "agg_peak_rss_mib")


def run(quick: bool) -> list[Result]:
    return scale.run_memory(quick)


def main(argv: Sequence[str]) -> int:
    return scale.main(["--memory", *argv])
