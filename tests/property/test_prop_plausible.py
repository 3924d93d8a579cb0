"""The plausibility checks before a release (aggregator/plausible.py, issue 12 item 3):
no sum of honest vectors is ever rejected, and the attacks the issue found are."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.plausible import implausible, reason
from blindsum.schema import MetricKind, Schema

SCHEMA = Schema.default()
M = SCHEMA.max_tickets_per_region


@st.composite
def honest_vector(draw: st.DrawFn) -> list[int]:
    """One honest party: per region it sends, k <= M tickets, every histogram spread
    over at most k tickets, every sum within k times its per-ticket bound."""
    values: dict[str, dict[str, int | list[int]]] = {}
    for region in SCHEMA.regions:
        if not draw(st.booleans()):
            continue
        k = draw(st.integers(0, M))
        per: dict[str, int | list[int]] = {}
        for m in SCHEMA.metrics:
            if m.kind is MetricKind.COUNT:
                per[m.name] = draw(st.integers(0, k))
            elif m.kind is MetricKind.HISTOGRAM:
                left, bins = k, []
                for _ in range(m.slots):
                    b = draw(st.integers(0, left))
                    bins.append(b)
                    left -= b
                per[m.name] = bins
            else:
                assert m.clip is not None
                per[m.name] = draw(st.integers(0, k * int(m.clip[1])))
        values[region] = per
    return [int(x) for x in SCHEMA.encode(values)]


def _sum(vectors: list[list[int]]) -> list[int]:
    return [int(x) for x in np.sum(np.array(vectors, dtype=object), axis=0)]


@settings(max_examples=60, deadline=None)
@given(st.lists(honest_vector(), min_size=1, max_size=6), st.integers(0, 3))
def test_honest_sums_are_never_rejected(vectors: list[list[int]], extra: int) -> None:
    totals = _sum(vectors)
    # Parties that are included but sent nothing for a region are fine too.
    assert implausible(SCHEMA, totals, len(vectors) + extra) == []


def _honest(n: int) -> list[list[int]]:
    region = {
        m.name: ([3] * m.slots if m.kind is MetricKind.HISTOGRAM else 5) for m in SCHEMA.metrics
    }
    return [
        [int(x) for x in SCHEMA.encode(dict.fromkeys(SCHEMA.regions, region))] for _ in range(n)
    ]


def _with(vector: list[int], changes: dict[int, int]) -> list[int]:
    out = list(vector)
    for i, v in changes.items():
        out[i] = v
    return out


def test_the_attacks_of_issue_12_are_rejected_naming_the_cell() -> None:
    honest = _honest(3)
    zero = [0] * SCHEMA.vector_length
    apac_tickets = SCHEMA.slot_index("APAC", "tickets")
    apac_c = SCHEMA.contributor_index("APAC")
    emea_c = SCHEMA.contributor_index("EMEA")
    attacks = {
        # a billion tickets in one region
        "APAC/tickets above its bound": _with(zero, {apac_tickets: 1_000_000_000, apac_c: 1}),
        # "contributors 1002" with 4 parties in the round
        "EMEA/contributors above the 4 parties": _with(zero, {emea_c: 1000}),
        # -3 contributors to push a region with 3 honest contributors under k
        "APAC/tickets above its bound 0": _with(zero, {apac_c: -3}),
        # bins that cancel the honest parties' bins
        "APAC/csat[1,2) below its lower bound 0": _with(
            zero, {SCHEMA.slot_index("APAC", "csat", 0): -12}
        ),
    }
    for expected, bad in attacks.items():
        found = implausible(SCHEMA, _sum([*honest, bad]), 4)
        assert found, expected
        assert any(expected in f for f in found), (expected, found)
        assert reason(found).startswith("implausible totals: ")
        # Names and bounds only: no cell's value (an exact sum) is ever in the reason.
        honest_total = str(_sum(honest)[SCHEMA.slot_index("APAC", "tickets")])
        assert honest_total not in reason(found) and "1000000015" not in reason(found)


def test_noise_widens_every_bound_but_not_the_contributors() -> None:
    honest = _honest(2)
    totals = _sum(honest)
    tickets = SCHEMA.slot_index("EMEA", "tickets")
    noisy = _with(totals, {tickets: totals[tickets] - 40})
    assert implausible(SCHEMA, _with(totals, {tickets: -40}), 2, slack=50) == []
    assert implausible(SCHEMA, noisy, 2, slack=50) == []
    assert implausible(SCHEMA, _with(totals, {tickets: -60}), 2, slack=50)
    c = SCHEMA.contributor_index("EMEA")
    assert implausible(SCHEMA, _with(totals, {c: 3}), 2, slack=50)


def test_a_reason_names_a_few_cells_and_counts_the_rest() -> None:
    found = [f"cell {i}" for i in range(10)]
    text = reason(found)
    assert "cell 0" in text and "cell 9" not in text and text.endswith("and 4 more")
