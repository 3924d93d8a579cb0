"""Release cell rules: from one region's signed totals to its released cells (pure).

:func:`region_cells` turns a region's slice of the aggregate into :class:`Cell` values in
schema metric order (counts and sums one cell each, histograms one cell per bin), then
applies the campaign's cell rule to every histogram when ``schema.min_cell > 0``:

- ``SmallCells.MERGE``: the smallest bin below ``min_cell`` is merged with its smaller
  neighbour, repeatedly, until every group reaches ``min_cell`` or the histogram is one
  group. A merged cell carries the group's sum, ``noise_sd = sqrt(sum of variances)``, the
  span ``[lo, hi)`` of its bins and the label ``name[lo,hi)``. A one-group histogram still
  below ``min_cell`` is released as a single SUPPRESSED cell.
- ``SmallCells.SUPPRESS``: every bin below ``min_cell`` is withheld (value None). When
  exactly one bin is withheld, the smallest other bin is withheld with it (complementary
  suppression), so that the withheld value is not simply "histogram total minus the
  released bins". When fewer than two bins would remain, the whole histogram is withheld.

Tie-breaks are deterministic: the leftmost smallest bin goes first, and between two equal
neighbours a bin merges into the left (lower) one.

The rules act on the *released* values
--------------------------------------
With DP on, the totals given here already carry the noise, so the cell rule is
post-processing: it costs no privacy budget, and nothing it reveals (which bins merged,
which were withheld) goes beyond the DP guarantee of the noisy totals. Deciding on the
exact values instead would leak them through the pattern of merges, outside that
guarantee. The price is that the rule is about noisy counts: a bin whose true count is
above ``min_cell`` can be merged or withheld, and one whose true count is below can be
released.

What a reader can and cannot infer
----------------------------------
*DP off.* A released bin is exact. A MERGED cell gives the exact total of its range and
says that some bin in the range had fewer than ``min_cell`` tickets; it does not say how
the total splits across the bins. A SUPPRESSED bin hides its count, but if the
histogram's total is released elsewhere (for example ``resolved`` for the resolution-time
histogram) a reader learns the *sum* of the withheld bins; complementary suppression is
what keeps a single bin from being learnt this way. These rules are a disclosure
heuristic, not a privacy guarantee: another released total can still pin a split down.
For example, ``csat_sum`` and the histogram's total are two linear equations in the CSAT
scores, so two merged or withheld CSAT bins can be solved exactly. Only DP bounds what a
reader learns about one customer.

*DP on.* Every value is noisy and the rule is post-processing, so a reader learns no more
about any customer than the DP guarantee allows, whatever the cells' statuses. A merged
cell is the noisy sum of its bins, with the standard deviation given. A withheld bin had
a *noisy* value below ``min_cell``, which says little about its true count when the noise
sd is comparable to ``min_cell``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from blindsum.errors import InvalidArgument
from blindsum.model import Cell, CellStatus
from blindsum.schema import Metric, MetricKind, Schema, SmallCells

__all__ = ["region_cells"]


@dataclass(frozen=True)
class _Group:
    """A run of consecutive bins ``first..last`` (inclusive) of one histogram."""

    first: int
    last: int
    value: int
    variance: float


def region_cells(
    schema: Schema, region: str, totals: Sequence[int], sigma: Sequence[float]
) -> tuple[Cell, ...]:
    """The released cells of ``region``, in schema metric order (no contributor slot).

    ``totals`` are the signed per-slot totals of the whole vector (schema layout) and
    ``sigma`` the standard deviation of each slot's DP noise (0 without DP). Histograms get
    the cell rule of the module docstring when ``schema.min_cell > 0``.
    """
    _check_inputs(schema, totals, sigma)
    if region not in schema.regions:
        raise InvalidArgument("unknown region", field="region")
    cells: list[Cell] = []
    for metric in schema.metrics:
        if metric.kind is not MetricKind.HISTOGRAM:
            index = schema.slot_index(region, metric.name)
            cells.append(
                Cell(
                    slot=metric.name,
                    value=int(totals[index]),
                    scale=metric.scale,
                    noise_sd=float(sigma[index]),
                    metric=metric.name,
                )
            )
            continue
        indexes = [schema.slot_index(region, metric.name, b) for b in range(metric.slots)]
        values = [int(totals[i]) for i in indexes]
        sds = [float(sigma[i]) for i in indexes]
        cells.extend(_histogram_cells(metric, values, sds, schema.min_cell))
    return tuple(cells)


def _check_inputs(schema: Schema, totals: Sequence[int], sigma: Sequence[float]) -> None:
    if len(totals) != schema.vector_length:
        raise InvalidArgument(
            f"has {len(totals)} slots, the schema {schema.vector_length}", field="totals"
        )
    if len(sigma) != schema.vector_length:
        raise InvalidArgument(
            f"has {len(sigma)} slots, the schema {schema.vector_length}", field="sigma"
        )
    for i, sd in enumerate(sigma):
        if not math.isfinite(sd) or sd < 0:
            raise InvalidArgument("noise sd must be finite and >= 0", field=f"sigma[{i}]")


def _histogram_cells(
    metric: Metric, values: list[int], sds: list[float], min_cell: int
) -> list[Cell]:
    if min_cell <= 0:
        return [_bin_cell(metric, i, values[i], sds[i]) for i in range(len(values))]
    if metric.small_cells is SmallCells.MERGE:
        return _merge(metric, values, sds, min_cell)
    return _suppress(metric, values, sds, min_cell)


def _bin_cell(
    metric: Metric,
    index: int,
    value: int | None,
    sd: float,
    status: CellStatus = CellStatus.RELEASED,
) -> Cell:
    return Cell(
        slot=metric.slot_labels[index],
        value=value,
        noise_sd=sd,
        status=status,
        metric=metric.name,
        lo=metric.edges[index],
        hi=metric.edges[index + 1],
    )


def _span_label(metric: Metric, first: int, last: int) -> str:
    """``name[lo,hi)`` over bins ``first..last``, in exactly the number format of
    :attr:`Metric.slot_labels` (taken from those labels, so the two cannot drift)."""
    labels = metric.slot_labels
    head = labels[first].rsplit(",", 1)[0]  # "name[lo"
    tail = labels[last].rsplit(",", 1)[1]  # "hi)"
    return f"{head},{tail}"


def _merge(metric: Metric, values: list[int], sds: list[float], min_cell: int) -> list[Cell]:
    groups = [_Group(i, i, v, sd * sd) for i, (v, sd) in enumerate(zip(values, sds, strict=True))]
    while len(groups) > 1:
        small = [i for i, g in enumerate(groups) if g.value < min_cell]
        if not small:
            break
        # The smallest group first; min() keeps the leftmost on ties.
        at = min(small, key=lambda i: groups[i].value)
        left = at - 1 if at > 0 else None
        right = at + 1 if at + 1 < len(groups) else None
        if left is None or (right is not None and groups[right].value < groups[left].value):
            into = right
        else:
            into = left
        if into is None:  # pragma: no cover - len(groups) > 1 guarantees a neighbour
            break
        a, b = sorted((at, into))
        merged = _Group(
            groups[a].first,
            groups[b].last,
            groups[a].value + groups[b].value,
            groups[a].variance + groups[b].variance,
        )
        groups[a : b + 1] = [merged]
    cells: list[Cell] = []
    for group in groups:
        sd = math.sqrt(group.variance)
        if group.first == group.last and group.value >= min_cell:
            cells.append(_bin_cell(metric, group.first, group.value, sd))
            continue
        too_small = group.value < min_cell  # only possible for a one-group histogram
        cells.append(
            Cell(
                slot=_span_label(metric, group.first, group.last),
                value=None if too_small else group.value,
                noise_sd=sd,
                status=CellStatus.SUPPRESSED if too_small else CellStatus.MERGED,
                metric=metric.name,
                lo=metric.edges[group.first],
                hi=metric.edges[group.last + 1],
            )
        )
    return cells


def _suppress(metric: Metric, values: list[int], sds: list[float], min_cell: int) -> list[Cell]:
    withheld = {i for i, v in enumerate(values) if v < min_cell}
    if len(withheld) == 1:
        others = [i for i in range(len(values)) if i not in withheld]
        if others:
            # The smallest other bin; min() keeps the leftmost on ties.
            withheld.add(min(others, key=lambda i: values[i]))
    if withheld and len(values) - len(withheld) < 2:
        withheld = set(range(len(values)))
    return [
        _bin_cell(metric, i, None, sds[i], CellStatus.SUPPRESSED)
        if i in withheld
        else _bin_cell(metric, i, values[i], sds[i])
        for i in range(len(values))
    ]
