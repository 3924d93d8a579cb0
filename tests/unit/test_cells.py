"""aggregator.cells: released cells of one region and the MERGE / SUPPRESS cell rules."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from aggregator.cells import region_cells
from blindsum.errors import InvalidArgument
from blindsum.model import Cell, CellStatus
from blindsum.schema import Schema

EDGES = (0, 1, 2, 4, 8, 16)


def schema_with(
    min_cell: int, small_cells: str = "merge", edges: Sequence[float] = EDGES
) -> Schema:
    """Two regions; a count, a histogram ``h`` and a fixed-point sum."""
    return Schema.from_toml(
        f"""
[campaign]
name = "cells"
version = 1
max_parties = 10
max_tickets_per_region = 1000
per_customer_cap = 5
min_cell = {min_cell}
regions = ["APAC", "EMEA"]

[[metrics]]
name = "tickets"
kind = "count"

[[metrics]]
name = "h"
kind = "histogram"
edges = [{", ".join(str(e) for e in edges)}]
small_cells = "{small_cells}"

[[metrics]]
name = "hours_sum"
kind = "sum"
clip = [0, 100]
scale = 10
"""
    )


def released(
    schema: Schema,
    bins: Sequence[int],
    sds: Sequence[float] | None = None,
    *,
    region: str = "APAC",
) -> tuple[Cell, ...]:
    """Cells of ``region`` with histogram ``bins`` (EMEA gets different values, so a
    mix-up of regions would show)."""
    totals = [0] * schema.vector_length
    sigma = [0.0] * schema.vector_length
    for name in schema.regions:
        mine = name == region
        totals[schema.slot_index(name, "tickets")] = 100 if mine else 999
        totals[schema.slot_index(name, "hours_sum")] = 1234 if mine else 999
        sigma[schema.slot_index(name, "hours_sum")] = 7.5 if mine else 99.0
        for b in range(schema.metric("h").slots):
            index = schema.slot_index(name, "h", b)
            totals[index] = bins[b] if mine else 999
            sigma[index] = (sds[b] if sds is not None else 0.0) if mine else 99.0
        totals[schema.contributor_index(name)] = 3
    return region_cells(schema, region, totals, sigma)


def hist(cells: Sequence[Cell]) -> list[tuple[str, int | None, CellStatus]]:
    return [(c.slot, c.value, c.status) for c in cells if c.metric == "h"]


R, M, S = CellStatus.RELEASED, CellStatus.MERGED, CellStatus.SUPPRESSED


def test_no_rule_when_min_cell_is_zero() -> None:
    schema = schema_with(0)
    cells = released(schema, [3, 0, -2, 40, 1], [1.0, 2.0, 3.0, 4.0, 5.0])
    assert [c.slot for c in cells] == ["tickets", *schema.metric("h").slot_labels, "hours_sum"]
    assert hist(cells) == [
        ("h[0,1)", 3, R),
        ("h[1,2)", 0, R),
        ("h[2,4)", -2, R),
        ("h[4,8)", 40, R),
        ("h[8,16)", 1, R),
    ]
    bins = [c for c in cells if c.metric == "h"]
    assert [(c.lo, c.hi) for c in bins] == [(0, 1), (1, 2), (2, 4), (4, 8), (8, 16)]
    assert [c.noise_sd for c in bins] == [1.0, 2.0, 3.0, 4.0, 5.0]
    total = cells[-1]
    assert (total.metric, total.value, total.scale, total.noise_sd) == ("hours_sum", 1234, 10, 7.5)
    assert total.display == 123.4
    assert (cells[0].metric, cells[0].value, cells[0].scale) == ("tickets", 100, 1)


def test_region_is_taken_from_its_own_slots() -> None:
    schema = schema_with(0)
    cells = released(schema, [5, 6, 7, 8, 9], region="EMEA")
    assert [c.value for c in cells] == [100, 5, 6, 7, 8, 9, 1234]


def test_merge_smallest_bin_into_smaller_neighbour_until_all_reach_min_cell() -> None:
    schema = schema_with(10)
    # 2 (bin 3) is smallest: neighbours 15 and 30 -> joins 15 (17). Then 3 (bin 0) joins
    # its only neighbour 20 (23). Everything is >= 10 now.
    cells = released(schema, [3, 20, 15, 2, 30], [1.0, 2.0, 3.0, 4.0, 5.0])
    assert hist(cells) == [("h[0,2)", 23, M), ("h[2,8)", 17, M), ("h[8,16)", 30, R)]
    bins = [c for c in cells if c.metric == "h"]
    assert [(c.lo, c.hi) for c in bins] == [(0, 2), (2, 8), (8, 16)]
    assert bins[0].noise_sd == pytest.approx(math.sqrt(1 + 4))
    assert bins[1].noise_sd == pytest.approx(math.sqrt(9 + 16))
    assert bins[2].noise_sd == 5.0
    # Non-histogram cells are untouched by the rule.
    assert cells[0].value == 100 and cells[-1].value == 1234


def test_merge_tie_breaks_are_deterministic() -> None:
    schema = schema_with(10)
    # Equal neighbours: merge into the left one.
    assert hist(released(schema, [30, 20, 5, 20, 30])) == [
        ("h[0,1)", 30, R),
        ("h[1,4)", 25, M),
        ("h[4,8)", 20, R),
        ("h[8,16)", 30, R),
    ]
    # Two equally small bins: the leftmost goes first (bin 0 -> 25), then bin 4 joins
    # its only neighbour.
    assert hist(released(schema, [5, 20, 40, 20, 5])) == [
        ("h[0,2)", 25, M),
        ("h[2,4)", 40, R),
        ("h[4,16)", 25, M),
    ]


def test_merge_cascades_through_consecutive_small_bins() -> None:
    schema = schema_with(10)
    assert hist(released(schema, [40, 3, 2, 4, 1])) == [("h[0,1)", 40, R), ("h[1,16)", 10, M)]


def test_merge_negative_noisy_value_counts_as_small() -> None:
    schema = schema_with(10)
    cells = hist(released(schema, [40, 12, -3, 30, 11]))
    # -3 joins 12 (9, still small), which then joins its smaller neighbour 30 (39).
    assert cells == [("h[0,1)", 40, R), ("h[1,8)", 39, M), ("h[8,16)", 11, R)]


def test_merge_whole_histogram_reaching_min_cell_is_one_merged_cell() -> None:
    schema = schema_with(10)
    cells = [c for c in released(schema, [2, 3, 1, 2, 4], [1.0] * 5) if c.metric == "h"]
    assert [(c.slot, c.value, c.status, c.lo, c.hi) for c in cells] == [("h[0,16)", 12, M, 0, 16)]
    assert cells[0].noise_sd == pytest.approx(math.sqrt(5))


def test_merge_all_small_histogram_is_suppressed() -> None:
    schema = schema_with(10)
    cells = [c for c in released(schema, [2, 3, 1, 0, 1], [2.0] * 5) if c.metric == "h"]
    assert [(c.slot, c.value, c.status, c.lo, c.hi) for c in cells] == [("h[0,16)", None, S, 0, 16)]
    assert cells[0].display is None


def test_merged_labels_use_the_slot_label_number_format() -> None:
    schema = schema_with(10, edges=(0, 0.5, 1, 2.25, 48))
    assert schema.metric("h").slot_labels == ("h[0,0.5)", "h[0.5,1)", "h[1,2.25)", "h[2.25,48)")
    # 3 joins 4 (7), then 5 joins its only neighbour 7 (12).
    cells = [c for c in released(schema, [30, 4, 3, 5]) if c.metric == "h"]
    assert [(c.slot, c.value, c.status, c.lo, c.hi) for c in cells] == [
        ("h[0,0.5)", 30, R, 0, 0.5),
        ("h[0.5,48)", 12, M, 0.5, 48),
    ]


def test_suppress_small_bin_with_complementary_bin() -> None:
    schema = schema_with(10, "suppress")
    cells = released(schema, [3, 20, 15, 30, 12], [1.0, 2.0, 3.0, 4.0, 5.0])
    # 3 is withheld; so is the smallest other bin (12), so 3 is not total - released.
    assert hist(cells) == [
        ("h[0,1)", None, S),
        ("h[1,2)", 20, R),
        ("h[2,4)", 15, R),
        ("h[4,8)", 30, R),
        ("h[8,16)", None, S),
    ]
    bins = [c for c in cells if c.metric == "h"]
    assert [c.noise_sd for c in bins] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert [(c.lo, c.hi) for c in bins] == [(0, 1), (1, 2), (2, 4), (4, 8), (8, 16)]


def test_suppress_complementary_tie_takes_leftmost() -> None:
    schema = schema_with(10, "suppress")
    assert [v for _, v, _ in hist(released(schema, [40, 15, 3, 15, 20]))] == [
        40,
        None,
        None,
        15,
        20,
    ]


def test_suppress_two_small_bins_need_no_complement() -> None:
    schema = schema_with(10, "suppress")
    assert [v for _, v, _ in hist(released(schema, [3, 20, -1, 30, 12]))] == [
        None,
        20,
        None,
        30,
        12,
    ]


def test_suppress_all_when_fewer_than_two_bins_remain() -> None:
    schema = schema_with(10, "suppress")
    assert [s for _, _, s in hist(released(schema, [3, 4, 5, 30, 9]))] == [S] * 5
    two = schema_with(10, "suppress", edges=(0, 1, 2))
    assert [s for _, _, s in hist(released(two, [3, 50]))] == [S, S]
    # Nothing small: every bin is released, however few.
    assert [s for _, _, s in hist(released(two, [10, 50]))] == [R, R]


def test_default_schema_cells_follow_metric_order() -> None:
    schema = Schema.default()
    totals = [50] * schema.vector_length
    cells = region_cells(schema, "EMEA", totals, [0.0] * schema.vector_length)
    expected = [label for m in schema.metrics for label in m.slot_labels]
    assert [c.slot for c in cells] == expected
    assert all(c.status is R for c in cells)


@pytest.mark.parametrize(
    ("totals_len", "sigma", "field"),
    [
        (-1, 0.0, "totals"),
        (0, -1.0, "sigma[0]"),
        (0, math.nan, "sigma[0]"),
    ],
)
def test_invalid_inputs(totals_len: int, sigma: float, field: str) -> None:
    schema = schema_with(0)
    n = schema.vector_length
    with pytest.raises(InvalidArgument) as info:
        region_cells(schema, "APAC", [0] * (n + totals_len), [sigma] + [0.0] * (n - 1))
    assert info.value.field == field


def test_sigma_length_and_region_are_checked() -> None:
    schema = schema_with(0)
    n = schema.vector_length
    with pytest.raises(InvalidArgument) as info:
        region_cells(schema, "APAC", [0] * n, [0.0] * (n - 1))
    assert info.value.field == "sigma"
    with pytest.raises(InvalidArgument) as info:
        region_cells(schema, "Mars", [0] * n, [0.0] * n)
    assert info.value.field == "region"
