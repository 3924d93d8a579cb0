"""Totals no honest set of parties can produce are never released (issue 12, item 3).

Neither mode lets the aggregator see a party's input, so a malicious party can send
any vector: a billion tickets, a contributor count of -3 that hides a region, bins
that cancel other parties' bins. What the aggregator can check is the sum. Every slot
of an honest party's vector lies within the schema's per-party bounds, and every
honest party that sent tickets for a region marks itself as one of its contributors
(1 in the region's contributor slot, 0 otherwise). So, with c the region's
contributor total and n the parties in the sum:

- 0 <= c <= n, exactly (contributor slots carry no noise);
- every slot lies within c times its per-party bounds: [0, c*M] for counts and
  histogram bins (M = ``max_tickets_per_region``), and [c*M*min(0, lo), c*M*hi] for
  sums, lo and hi the clip bounds in fixed point; so a region with no contributors
  has nothing in it;
- the bins of one histogram add up to at most c*M (one bin per ticket).

In DISTRIBUTED DP mode the parties' noise is in every slot (never in the contributor
slots): each bound widens by the noise bound of the plan as released. In CENTRAL mode
the check runs on the exact totals, before any noise.

What this does not catch: a party that stays within the bounds. It can still add up
to M tickets per region, any plausible histogram, or claim to contribute to a region
it has no tickets in. docs/THREAT_MODEL.md says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal

from blindsum.schema import MetricKind, Schema

#: Most offending cells named in a reason (the rest are counted).
MAX_NAMED = 6


def _per_ticket_low(lo: float, scale: int) -> int:
    return math.floor(Decimal(repr(float(lo))) * scale)


def implausible(
    schema: Schema, totals: Sequence[int], included: int, *, slack: int = 0
) -> list[str]:
    """The cells of ``totals`` (signed) that ``included`` honest parties cannot produce,
    as "REGION/SLOT above its bound ..." texts; empty when every check passes. ``slack``
    is a per-slot noise bound (0 unless the parties added noise).

    The texts name cells and the bound each one broke, never a cell's value: the reason
    is shown to every party and reader, and the values are exact sums, before noise
    and suppression (a party could otherwise read an honest party's input back by
    pushing its cell out of bounds by a known offset)."""
    if len(totals) != schema.vector_length:
        return [f"{len(totals)} slots, the schema has {schema.vector_length}"]
    found: list[str] = []
    cap = schema.max_tickets_per_region
    labels = schema.slot_names
    for region in schema.regions:
        c = int(totals[schema.contributor_index(region)])
        if not 0 <= c <= included:
            side = "below 0" if c < 0 else f"above the {included} parties in the sum"
            found.append(f"{region}/contributors {side}")
            c = min(max(c, 0), included)
        for metric in schema.metrics:
            if metric.kind is MetricKind.SUM and metric.clip is not None:
                low = c * cap * min(0, _per_ticket_low(metric.clip[0], metric.scale))
                high = c * cap * metric.sum_bound
            else:
                low, high = 0, c * cap
            bins = metric.slots if metric.kind is MetricKind.HISTOGRAM else None
            first = schema.slot_index(region, metric.name, 0 if bins else None)
            for i in range(first, first + metric.slots):
                value = int(totals[i])
                if value < low - slack:
                    found.append(f"{labels[i]} below its lower bound {low}")
                elif value > high + slack:
                    found.append(
                        f"{labels[i]} above its bound {high} for the region's contributors"
                    )
            if bins:
                total = sum(int(totals[i]) for i in range(first, first + bins))
                if total > high + slack * bins:
                    found.append(
                        f"{region}/{metric.name} bins add up to more than {high}, the bound "
                        "for the region's contributors"
                    )
    return found


def reason(found: Sequence[str]) -> str:
    """One line naming the first few offending cells."""
    named = "; ".join(found[:MAX_NAMED])
    more = len(found) - MAX_NAMED
    return f"implausible totals: {named}" + (f"; and {more} more" if more > 0 else "")
