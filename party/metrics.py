"""From canonical tickets to one party's per-region metric values (docs/ARCHITECTURE.md).

:func:`compute_metrics` turns a list of :class:`~party.tickets.Ticket` into the
``region -> metric -> value`` mapping that :meth:`blindsum.schema.Schema.encode`
accepts, and a :class:`MetricsSummary` of what was excluded or clipped.
:func:`metrics_vector` does both steps and returns the uint64 vector.

Bounding one customer's influence
---------------------------------
Differential privacy calibrates its noise to the *sensitivity* of the released
numbers: how much one person can change them. Clipping bounds what one ticket
adds to a sum or a bin, but a customer who files a hundred tickets would still
move a region's counts by a hundred. The **per-customer cap** (at most ``cap``
tickets per customer per round, ``schema.per_customer_cap`` by default) is what
makes that change bounded: with the cap, one customer changes any count or bin
by at most ``cap`` and any clipped sum by at most ``cap * clip_hi``, so the DP
noise added at release protects individual customers and not only individual
tickets. The customer key comes from ``customer_of`` (in production the
anonymizer's keyed ``customer_token``), so the cap never needs a raw identity.
When a customer has more tickets, the earliest ``cap`` by ``(created, line)``
are kept and the others are excluded from *all* metrics and counted in
:attr:`MetricsSummary.capped`.

Which tickets each metric counts
--------------------------------
A ticket's status is one of ``open``, ``escalated`` or ``resolved``
(:class:`~party.tickets.Status`; the mapping's ``[status]`` table says which source
words mean which, e.g. "Solved" and "Closed" mean resolved, "Pending" and
"In Progress" mean open).

- ``tickets``: every ticket. ``replied``: tickets with a first reply (a
  ``first_response_at`` or ``first_response_hours`` value). ``escalated``: status
  ``escalated``, or an ``escalated_at`` value whatever the status. ``resolved``:
  status ``resolved``.
- ``csat``/``csat_sum`` and ``nps``: every ticket with a score, whatever its status.
- ``first_response_hours``: every ticket with a first-response time (given, or
  ``first_response_at - created``).
- ``resolution_hours`` and ``resolution_hours_sum`` (:data:`RESOLVED_ONLY`): only
  tickets with status ``resolved`` that have a resolution time (given, or
  ``resolved_at - created``). An open or escalated ticket is left out even when the
  export gives it a ``resolution_hours`` value (often its age so far), and so is a
  reopened ticket with an old ``resolved_at``. The histogram's total is therefore
  at most ``resolved``. A resolved ticket that was escalated on the way counts in
  both ``escalated`` and the resolution metrics.

Clipping
--------
Histogram values are clipped into ``[first edge, last edge)``: a value at or
above the last edge counts in the last bin, one below the first edge in the
first bin. Sum values are clipped into the metric's ``clip = [lo, hi]``. Every
clipped value is counted per metric in :attr:`MetricsSummary.clipped`.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal

from blindsum.errors import ConfigError, InvalidArgument
from blindsum.schema import Metric, MetricKind, Schema
from blindsum.types import U64Vector
from party.tickets import Ticket

__all__ = [
    "KNOWN_METRICS",
    "RESOLVED_ONLY",
    "MetricValues",
    "MetricsSummary",
    "compute_metrics",
    "metrics_vector",
]

#: region -> metric -> count (int), clipped sum (float, or int for integer scores),
#: or histogram bins (list of int). The shape :meth:`Schema.encode` accepts.
MetricValues = dict[str, dict[str, int | float | list[int]]]


#: Metric name -> the kind this module computes for it.
KNOWN_METRICS: dict[str, MetricKind] = {
    "tickets": MetricKind.COUNT,
    "replied": MetricKind.COUNT,
    "escalated": MetricKind.COUNT,
    "resolved": MetricKind.COUNT,
    "csat": MetricKind.HISTOGRAM,
    "csat_sum": MetricKind.SUM,
    "nps": MetricKind.HISTOGRAM,
    "first_response_hours": MetricKind.HISTOGRAM,
    "resolution_hours": MetricKind.HISTOGRAM,
    "resolution_hours_sum": MetricKind.SUM,
}

#: Metrics whose per-ticket values are integer scores (their sums stay integers).
_INTEGER_VALUED = frozenset({"csat", "csat_sum", "nps"})

#: Metrics that only resolved tickets (status ``resolved``) enter; see the module docstring.
RESOLVED_ONLY = frozenset({"resolution_hours", "resolution_hours_sum"})


@dataclass
class MetricsSummary:
    """What :func:`compute_metrics` did with the tickets; holds counts only.

    ``tickets_in == tickets_used + capped + unknown_region``.

    ``unknown_region`` counts the tickets handed to :func:`compute_metrics` whose
    region is not exactly (case included) one of the schema's. The party pipeline
    (``party.pipeline``) already quarantines such rows at ingest as
    ``unknown_region`` and passes on only tickets of the schema's regions, so on
    that path this count is always 0; the rows are in the ingest summary instead.
    """

    tickets_in: int
    tickets_used: int
    capped: int
    unknown_region: int
    clipped: dict[str, int] = field(default_factory=dict)
    per_region: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "tickets_in": self.tickets_in,
            "tickets_used": self.tickets_used,
            "capped": self.capped,
            "unknown_region": self.unknown_region,
            "clipped": dict(self.clipped),
            "per_region": dict(self.per_region),
        }

    def to_json(self) -> str:
        """One-line JSON object of the summary (keys sorted)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))


def _hours_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start).total_seconds() / 3600.0


def _first_response_hours(ticket: Ticket) -> float | None:
    if ticket.first_response_hours is not None:
        return ticket.first_response_hours
    return _hours_between(ticket.created, ticket.first_response_at)


def _resolution_hours(ticket: Ticket) -> float | None:
    if ticket.resolution_hours is not None:
        return ticket.resolution_hours
    return _hours_between(ticket.created, ticket.resolved_at)


def _value_of(name: str, ticket: Ticket) -> float | None:
    """The per-ticket input of a histogram or sum metric, or None when absent.

    Resolution metrics read only resolved tickets: an open or escalated ticket's
    ``resolution_hours`` (some exports fill it with the ticket's age so far) is not
    a resolution time.
    """
    if name in ("csat", "csat_sum"):
        return None if ticket.csat is None else float(ticket.csat)
    if name == "nps":
        return None if ticket.nps is None else float(ticket.nps)
    if name == "first_response_hours":
        return _first_response_hours(ticket)
    # resolution_hours and resolution_hours_sum (RESOLVED_ONLY)
    if not ticket.resolved:
        return None
    return _resolution_hours(ticket)


def _count_of(name: str, ticket: Ticket) -> bool:
    if name == "tickets":
        return True
    if name == "replied":
        return ticket.replied
    if name == "escalated":
        return ticket.escalated
    return ticket.resolved  # "resolved"


def _check_schema(schema: Schema) -> None:
    for metric in schema.metrics:
        expected = KNOWN_METRICS.get(metric.name)
        if expected is None:
            if metric.optional:
                continue  # nothing computes it; an optional metric may be omitted
            raise ConfigError(
                "no ticket computation for this required metric "
                f"(known: {', '.join(sorted(KNOWN_METRICS))})",
                field=f"metrics.{metric.name}",
            )
        if metric.kind is not expected:
            raise ConfigError(
                f"metric must be a {expected.value} to be computed from tickets, "
                f"not a {metric.kind.value}",
                field=f"metrics.{metric.name}",
            )


def _age_key(ticket: Ticket) -> tuple[bool, float, int]:
    """Sort key: earliest ``created`` first (naive read as UTC), undated last, then line."""
    created = ticket.created
    if created is None:
        return (True, 0.0, ticket.line)
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return (False, created.timestamp(), ticket.line)


def _apply_cap(
    tickets: Sequence[Ticket], customer_of: Callable[[Ticket], str], cap: int
) -> tuple[list[Ticket], int]:
    """Keep at most ``cap`` tickets per customer, the earliest by (created, line)."""
    by_customer: dict[str, list[int]] = defaultdict(list)
    for index, ticket in enumerate(tickets):
        key = customer_of(ticket)
        if not isinstance(key, str):
            raise InvalidArgument(
                f"customer_of must return a str, got {type(key).__name__}",
                field=f"line {ticket.line}",
            )
        by_customer[key].append(index)
    dropped: set[int] = set()
    for indexes in by_customer.values():
        if len(indexes) > cap:
            ordered = sorted(indexes, key=lambda i: (_age_key(tickets[i]), i))
            dropped.update(ordered[cap:])
    # Preserve input order among the kept tickets.
    kept = [t for i, t in enumerate(tickets) if i not in dropped]
    return kept, len(dropped)


def _histogram(metric: Metric, values: list[float]) -> tuple[list[int], int]:
    edges = metric.edges
    lo, hi = edges[0], edges[-1]
    bins = [0] * metric.slots
    clipped = 0
    for value in values:
        if value < lo:
            clipped += 1
            index = 0
        elif value >= hi:
            clipped += 1
            index = metric.slots - 1
        else:
            index = bisect_right(edges, value) - 1
        bins[index] += 1
    return bins, clipped


def _clipped_sum(metric: Metric, values: list[float]) -> tuple[float, int]:
    if metric.clip is None:  # pragma: no cover - Metric validation guarantees a clip
        raise ConfigError("a sum needs clip", field=f"metrics.{metric.name}")
    lo, hi = metric.clip
    clipped = 0
    parts: list[float] = []
    for value in values:
        if value < lo or value > hi:
            clipped += 1
        parts.append(min(max(value, lo), hi))
    return math.fsum(parts), clipped


def _check_bound(schema: Schema, metric: Metric, region: str, value: int | float) -> None:
    bound = metric.max_per_party(schema)
    if metric.kind is MetricKind.SUM:
        # The same fixed-point rounding as Schema.encode (half up).
        exact = Decimal(repr(float(value))) * metric.scale
        fixed: int | float = int(exact.to_integral_value(rounding=ROUND_HALF_UP))
    else:
        fixed = value
    if fixed > bound:
        raise InvalidArgument(
            f"value exceeds the schema's per-party bound {bound}"
            + (" (fixed point)" if metric.kind is MetricKind.SUM else ""),
            field=f"{region}.{metric.name}",
        )


def compute_metrics(
    tickets: Sequence[Ticket],
    schema: Schema,
    *,
    customer_of: Callable[[Ticket], str],
    cap: int | None = None,
) -> tuple[MetricValues, MetricsSummary]:
    """Compute one party's per-region metric values for ``schema``.

    Preconditions: ``tickets`` come from ingest (finite numbers; ``created``
    timezone-aware when set). ``customer_of`` maps a ticket to its customer key
    (the anonymizer's ``customer_token``; ``lambda t: t.ticket_id`` treats every
    ticket as its own customer). ``cap`` defaults to ``schema.per_customer_cap``.

    Tickets whose region is not in the schema are excluded and counted; then at
    most ``cap`` tickets per customer are kept (see the module docstring for why
    this bounds DP sensitivity). Only regions with at least one ticket appear
    in the result, so an absent region encodes contributor 0. The optional
    ``nps`` histogram is given for every present region when any used ticket
    has an NPS score, and omitted otherwise; other optional metrics this module
    does not know are omitted. Raises ConfigError when the schema has a
    required metric this module cannot compute, and InvalidArgument (naming
    ``REGION.metric`` or the ticket line) when a value is NaN or a count
    exceeds the schema's per-party bound.
    """
    if cap is None:
        cap = schema.per_customer_cap
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise InvalidArgument("cap must be an integer >= 1", field="cap")
    _check_schema(schema)

    known_regions = set(schema.regions)
    in_schema = [t for t in tickets if t.region in known_regions]
    unknown_region = len(tickets) - len(in_schema)
    used, capped = _apply_cap(in_schema, customer_of, cap)

    by_region: dict[str, list[Ticket]] = {region: [] for region in schema.regions}
    for ticket in used:
        by_region[ticket.region].append(ticket)

    metrics = [m for m in schema.metrics if m.name in KNOWN_METRICS]
    has_nps = any(t.nps is not None for t in used)
    clipped = {m.name: 0 for m in metrics if m.kind is not MetricKind.COUNT}

    values: MetricValues = {}
    for region in schema.regions:
        group = by_region[region]
        if not group:
            continue
        if len(group) > schema.max_tickets_per_region:
            raise InvalidArgument(
                f"{len(group)} tickets exceed the schema's per-party bound "
                f"max_tickets_per_region = {schema.max_tickets_per_region}",
                field=f"{region}.tickets",
            )
        entry: dict[str, int | float | list[int]] = {}
        for metric in metrics:
            if metric.name == "nps" and metric.optional and not has_nps:
                continue
            if metric.kind is MetricKind.COUNT:
                count = sum(1 for t in group if _count_of(metric.name, t))
                _check_bound(schema, metric, region, count)
                entry[metric.name] = count
                continue
            inputs: list[float] = []
            for ticket in group:
                value = _value_of(metric.name, ticket)
                if value is None:
                    continue
                if math.isnan(value):
                    raise InvalidArgument(
                        f"{metric.name} is not a number", field=f"line {ticket.line}"
                    )
                inputs.append(value)
            if metric.kind is MetricKind.HISTOGRAM:
                bins, n_clipped = _histogram(metric, inputs)
                for b in bins:
                    _check_bound(schema, metric, region, b)
                entry[metric.name] = bins
            else:
                total, n_clipped = _clipped_sum(metric, inputs)
                _check_bound(schema, metric, region, total)
                if metric.name in _INTEGER_VALUED and total.is_integer():
                    entry[metric.name] = int(total)
                else:
                    entry[metric.name] = total
            clipped[metric.name] += n_clipped
        values[region] = entry

    summary = MetricsSummary(
        tickets_in=len(tickets),
        tickets_used=len(used),
        capped=capped,
        unknown_region=unknown_region,
        clipped=clipped,
        per_region={region: len(by_region[region]) for region in schema.regions},
    )
    return values, summary


def metrics_vector(
    tickets: Sequence[Ticket],
    schema: Schema,
    *,
    customer_of: Callable[[Ticket], str],
    cap: int | None = None,
) -> U64Vector:
    """:func:`compute_metrics` then :meth:`Schema.encode`: the party's uint64 vector."""
    values, _ = compute_metrics(tickets, schema, customer_of=customer_of, cap=cap)
    return schema.encode(values)
