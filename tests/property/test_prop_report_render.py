"""Renderers never crash on a report the decoder accepts (issue 12, item 5).

A reader's ``report fetch`` decodes what an aggregator sent, and a hostile aggregator
chooses every number in it. Starting from a real sample report, hypothesis rewrites
the numbers of its cells, statistics and region totals; whatever the decoder accepts,
every format must render.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.report import FORMATS, render
from blindsum import reportdoc
from blindsum.errors import InvalidArgument
from tests.unit.test_report_html import build_sample_report

SAMPLE = json.loads(reportdoc.encode(build_sample_report()))

finite = st.one_of(
    st.integers(-(1 << 40), 1 << 40),
    st.floats(-1e12, 1e12, allow_nan=False),
    st.sampled_from([0, 1, -1, 0.0, 1e-300, 2**53]),
)
# Mostly numbers the decoder takes, sometimes ones it must refuse.
numbers = st.one_of(
    finite, finite, finite, st.none(), st.sampled_from([float("nan"), float("inf"), 1 << 70])
)
CELL_KEYS = ("value", "display", "scale", "noise_sd", "lo", "hi")
STAT_KEYS = ("value", "low", "high")


@st.composite
def hostile_docs(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(json.dumps(SAMPLE))
    for _ in range(draw(st.integers(1, 12))):
        region = draw(st.sampled_from(doc["regions"]))
        target = draw(st.sampled_from(["cell", "stat", "region"]))
        if target == "cell" and region["cells"]:
            cell = draw(st.sampled_from(region["cells"]))
            if cell["lo"] is not None and draw(st.booleans()):
                cell["hi"] = cell["lo"]  # the bin of no width that crashed the renderer
            else:
                cell[draw(st.sampled_from(CELL_KEYS))] = draw(numbers)
        elif target == "stat" and region["stats"]:
            stat = draw(st.sampled_from(region["stats"]))
            stat[draw(st.sampled_from(STAT_KEYS))] = draw(numbers)
        else:
            region["contributors"] = draw(numbers)
    return doc


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_docs())
def test_whatever_the_decoder_accepts_renders_in_every_format(doc: dict[str, Any]) -> None:
    try:
        report = reportdoc.decode(json.dumps(doc).encode())
    except InvalidArgument:
        return
    for fmt in FORMATS:
        assert isinstance(render(report, fmt), str)


def test_a_bin_of_no_width_is_refused_by_the_decoder() -> None:
    doc: dict[str, Any] = json.loads(json.dumps(SAMPLE))
    cell = next(c for r in doc["regions"] for c in r["cells"] if c["lo"] is not None)
    cell["hi"] = cell["lo"]
    try:
        reportdoc.decode(json.dumps(doc).encode())
    except InvalidArgument as exc:
        assert exc.field is not None and exc.field.endswith(".hi")
    else:
        raise AssertionError("a bin with lo == hi was accepted")
