"""Release step: turn decrypted or unmasked totals into a report.

A region whose contributor indicator sums to fewer than ``min_contributors``
(k) parties is suppressed: its cells and its exact contributor count are
withheld, and only the fact "fewer than k" is released. Readers of a released
region learn its contributor count, which the aggregator learns anyway
(DESIGN §1).
"""

from __future__ import annotations

from collections.abc import Sequence

from blindsum.errors import Internal
from blindsum.model import Cell, Mode, RegionResult, Report
from blindsum.schema import MetricKind, Schema


def build_report(
    schema: Schema,
    totals: Sequence[int],
    *,
    round_id: str,
    mode: Mode,
    min_contributors: int,
    included_parties: tuple[str, ...],
    released_ms: int,
) -> Report:
    """Build the released report from signed per-slot totals (schema layout order)."""
    if len(totals) != schema.vector_length:
        raise Internal(
            f"aggregate has {len(totals)} slots, schema {schema.schema_id[:12]} has "
            f"{schema.vector_length}"
        )
    names = schema.slot_names
    scales = _slot_scales(schema)
    regions = []
    for region in schema.regions:
        contributors = int(totals[schema.contributor_index(region)])
        suppressed = contributors < min_contributors
        prefix = f"{region}/"
        cells: tuple[Cell, ...] = ()
        if not suppressed:
            cells = tuple(
                Cell(name[len(prefix) :], int(totals[i]), scales[i])
                for i, name in enumerate(names)
                if name.startswith(prefix) and i != schema.contributor_index(region)
            )
        regions.append(
            RegionResult(
                region=region,
                suppressed=suppressed,
                contributors=0 if suppressed else contributors,
                cells=cells,
            )
        )
    return Report(
        round_id=round_id,
        schema_id=schema.schema_id,
        mode=mode,
        regions=tuple(regions),
        min_contributors=min_contributors,
        included_parties=included_parties,
        released_ms=released_ms,
    )


def _slot_scales(schema: Schema) -> list[int]:
    """The fixed-point scale of every slot in layout order (1 for counts and bins)."""
    scales = [1] * schema.vector_length
    for region in schema.regions:
        for metric in schema.metrics:
            if metric.kind is MetricKind.SUM:
                scales[schema.slot_index(region, metric.name)] = metric.scale
    return scales
