"""The party's data pipeline, composed: ticket export -> ingest -> anonymize -> metrics.

Raw tickets never leave this module's callers: ``tickets_source`` hands the
node only the schema vector, and ``anonymize_export`` writes only anonymized
rows and a lineage summary without raw values.

The round path (``compute``, ``tickets_source``) never loads Presidio or spaCy;
only ``anonymize_export`` does, when it runs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from blindsum.errors import InvalidArgument
from blindsum.schema import Schema
from blindsum.types import U64Vector
from blindsum.window import TicketWindow
from party.ingest import IngestResult, Quarantined, ingest_file, ingest_sql, write_quarantine
from party.mapping import load_mapping
from party.metrics import MetricsSummary, MetricValues, compute_metrics
from party.pseudonym import PartySecret, Pseudonymizer
from party.tickets import Ticket

if TYPE_CHECKING:
    from party.anonymize import LineageSummary

SECRET_FILE = "party.secret"  # noqa: S105 - a file name, not a secret
SQL_PREFIXES = ("sqlite:", "postgresql:", "postgresql+", "postgres:")
#: Quarantine reason of a ticket in a region the party does not serve (party.toml).
UNSERVED_REGION = "unserved_region"


def default_secret_path(bundle: Path | None = None) -> Path:
    """Where the party's HMAC secret lives: in the bundle, else the user's config dir."""
    if bundle is not None:
        return bundle / SECRET_FILE
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "blindsum" / SECRET_FILE


@dataclass(frozen=True)
class TicketSource:
    """A ticket export: a CSV/JSONL file, or a SQL URL with a query."""

    location: str
    mapping: str = "generic"
    query: str | None = None
    quarantine: Path | None = None

    @property
    def is_sql(self) -> bool:
        return self.location.startswith(SQL_PREFIXES)

    @property
    def quarantine_target(self) -> Path:
        """Where rejected rows go: ``--quarantine``, else next to the export file."""
        if self.quarantine is not None:
            return self.quarantine
        if self.is_sql:
            return Path("sql-source.quarantine.jsonl")
        return Path(self.location + ".quarantine.jsonl")

    def ingest(
        self,
        regions: Sequence[str] | None = None,
        served: Sequence[str] = (),
        *,
        window: TicketWindow | None = None,
    ) -> IngestResult:
        """Ingest the source. Rejected rows are never dropped silently: they are
        written to :attr:`quarantine_target` (always, when one was given).

        With ``window`` (the round's), only tickets created in it are kept; the others
        are counted in the summary (``outside_window``), neither errors nor quarantined.

        With ``served`` (the regions this party declares in party.toml), a ticket in
        one of the schema's regions that the party does not serve is quarantined as
        ``unserved_region``: it is left out, not a reason to refuse the round.

        With ``regions`` (the campaign schema's), a ticket whose region is not
        one of them (after a case-insensitive match) is quarantined too, with
        its line, instead of being excluded later without a trace.
        """
        mapping = load_mapping(self.mapping)
        if self.is_sql:
            if not self.query:
                raise InvalidArgument("a SQL source needs --query", field="--query")
            result = ingest_sql(self.location, self.query, mapping, window=window)
        else:
            if self.query:
                raise InvalidArgument("--query only applies to a SQL URL", field="--query")
            result = ingest_file(Path(self.location), mapping, window=window)
        if regions is not None:
            column = mapping.columns["region"].column if "region" in mapping.columns else None
            result = _check_regions(result, regions, column, served)
        if result.quarantine or self.quarantine is not None:
            write_quarantine(result.quarantine, self.quarantine_target)
        return result


_SAFE_REGION = re.compile(r"[A-Za-z0-9 _-]{1,40}")


def _check_regions(
    result: IngestResult, regions: Sequence[str], column: str | None, served: Sequence[str] = ()
) -> IngestResult:
    canonical = {r.casefold(): r for r in regions}
    kept: list[Ticket] = []
    rejected: list[Quarantined] = []
    for ticket in result.tickets:
        region = canonical.get(ticket.region.strip().casefold())
        if region is not None and served and region not in served:
            rejected.append(
                Quarantined(
                    line=ticket.line,
                    reason=UNSERVED_REGION,
                    column=column,
                    message=f"line {ticket.line}: region {region} is not one this party "
                    f"serves (party.toml regions: {', '.join(served)})",
                )
            )
        elif region is None:
            shown = repr(ticket.region) if _SAFE_REGION.fullmatch(ticket.region) else "the value"
            rejected.append(
                Quarantined(
                    line=ticket.line,
                    reason="unknown_region",
                    column=column,
                    message=f"line {ticket.line}: region {shown} is not one of the "
                    f"campaign's regions ({', '.join(regions)})",
                )
            )
        else:
            kept.append(ticket if region == ticket.region else replace(ticket, region=region))
    if not rejected:
        return IngestResult(kept, result.quarantine, result.summary)
    by_reason = dict(result.summary.by_reason)
    for q in rejected:
        by_reason[q.reason] = by_reason.get(q.reason, 0) + 1
    summary = replace(
        result.summary,
        accepted=result.summary.accepted - len(rejected),
        quarantined=result.summary.quarantined + len(rejected),
        by_reason=by_reason,
    )
    quarantine = sorted([*result.quarantine, *rejected], key=lambda q: q.line)
    return IngestResult(kept, quarantine, summary)


@dataclass(frozen=True)
class MetricsRun:
    ingest: IngestResult
    values: MetricValues
    summary: MetricsSummary
    vector: U64Vector
    #: The schema the run was computed for (a pre-flight run is reused only for it).
    schema_id: str
    #: The ticket window it covers (None: the whole export); reused only for the same.
    window: TicketWindow | None = None


def compute(
    source: TicketSource,
    schema: Schema,
    secret: Path | PartySecret,
    *,
    served: Sequence[str] = (),
    window: TicketWindow | None = None,
) -> MetricsRun:
    """Ingest and reduce tickets to the schema vector; the per-customer cap uses HMAC
    tokens under ``secret`` (the party's secret file, created on first use, or a key).
    Tickets outside ``served`` (when given) are quarantined as ``unserved_region``.
    With ``window``, only the tickets created in it count (the round's window)."""
    result = source.ingest(schema.regions, served, window=window)
    key = secret if isinstance(secret, PartySecret) else PartySecret.load_or_create(secret)
    pseudonymizer = Pseudonymizer(key)
    values, summary = compute_metrics(
        result.tickets, schema, customer_of=pseudonymizer.customer_token
    )
    return MetricsRun(result, values, summary, schema.encode(values), schema.schema_id, window)


#: Default of ``max_quarantined_share`` in party.toml.
MAX_QUARANTINED_SHARE = 0.2


@dataclass(frozen=True)
class SubmitPolicy:
    """When an export is too broken to submit. A party that submits an all-zero or
    mostly-missing vector silently shortens every total and lowers the contributor
    counts, so the node refuses before it contacts the aggregator."""

    max_quarantined_share: float = MAX_QUARANTINED_SHARE
    allow_partial: bool = False


def check_submittable(
    run: MetricsRun,
    source: TicketSource,
    schema: Schema,
    policy: SubmitPolicy,
    *,
    schema_name: str = "the round's schema",
    hint: str = "",
) -> None:
    """Raise InvalidArgument (exit 2) when ``run`` has no accepted ticket in any of the
    schema's regions, or, unless ``policy.allow_partial``, when more than
    ``policy.max_quarantined_share`` of the rows were quarantined. The message names the
    quarantine file and the most common reason; ``hint`` is added to what to check.

    With a window, the rules apply to the rows in it: rows outside it count neither as
    read nor as quarantined, and a window without any ticket is nothing to submit."""
    summary = run.ingest.summary
    if summary.read == 0:
        raise InvalidArgument(
            f"the export has no ticket rows; nothing was sent{hint}", field="--tickets"
        )
    if run.window is not None and summary.in_window == 0:
        raise InvalidArgument(
            f"no ticket of the export was created in the window {run.window.describe()} "
            f"(all {summary.read} rows are outside it); nothing was sent",
            field="--tickets",
        )
    seen = f", see {source.quarantine_target}" if summary.quarantined else ""
    top = ""
    if summary.by_reason:
        reason, count = max(summary.by_reason.items(), key=lambda kv: (kv[1], kv[0]))
        top = f"; top reason {reason} ({count} rows)"
    if not run.ingest.tickets:
        raise InvalidArgument(
            f"no accepted ticket in any of {schema_name}'s regions ({', '.join(schema.regions)}): "
            f"{summary.quarantined} of {summary.in_window} rows{_in(run.window)} "
            f"quarantined{top}{seen}; nothing was sent (check --mapping{hint})",
            field="--tickets",
        )
    # Rows of regions the party does not serve are left out on purpose, not broken.
    broken = summary.quarantined - summary.by_reason.get(UNSERVED_REGION, 0)
    share = broken / summary.in_window
    if share > policy.max_quarantined_share and not policy.allow_partial:
        raise InvalidArgument(
            f"{broken} of {summary.in_window} rows{_in(run.window)} ({share:.0%}) quarantined, "
            f"more than max_quarantined_share {policy.max_quarantined_share:.0%}{top}{seen}; "
            "nothing was sent (fix the export or --mapping, or pass --allow-partial)",
            field="--tickets",
        )


def _in(window: TicketWindow | None) -> str:
    return "" if window is None else " in the window"


def tickets_source(
    source: TicketSource,
    secret_path: Path,
    *,
    served: Sequence[str] = (),
    policy: SubmitPolicy | None = None,
    report: Callable[[MetricsRun], None] | None = None,
    preflight: MetricsRun | None = None,
) -> Callable[[Schema, TicketWindow | None], U64Vector]:
    """A vector source for the party node that runs the pipeline for the round's schema
    and ticket window, and refuses (InvalidArgument) an export that ``policy`` finds
    unfit to submit.

    ``preflight`` is a run already made for some schema and window (by :func:`compute`,
    before contacting the aggregator): a round with that same schema and window uses its
    vector once instead of reading the export again. Later rounds read the export afresh.
    """
    checks = policy or SubmitPolicy()
    cached = [preflight] if preflight is not None else []

    def vector(schema: Schema, window: TicketWindow | None) -> U64Vector:
        run = cached.pop() if cached else None
        if run is None or run.schema_id != schema.schema_id or run.window != window:
            run = compute(source, schema, secret_path, served=served, window=window)
            if report is not None:
                report(run)
        check_submittable(run, source, schema, checks)
        return run.vector

    return vector


EXPORT_SUFFIXES = (".csv", ".jsonl", ".ndjson")


def anonymize_export(
    source: TicketSource, secret_path: Path, out: Path
) -> tuple[IngestResult, LineageSummary, Path]:
    """Write the anonymized export to ``out`` and its lineage next to it."""
    if out.suffix.lower() not in EXPORT_SUFFIXES:  # fail before the slow part
        raise InvalidArgument(f"output must end in {', '.join(EXPORT_SUFFIXES)}", field="-o")
    from party.anonymize import Anonymizer, write_export, write_lineage  # noqa: PLC0415 - heavy

    result = source.ingest()
    anonymizer = Anonymizer(PartySecret.load_or_create(secret_path), load_mapping(source.mapping))
    rows, lineage = anonymizer.anonymize(result.tickets)
    extras = [name for t in result.tickets for name, _ in t.extras]  # same order as anonymize()
    columns = [c for c, op in anonymizer.operators(extras).items() if op != "drop"]
    write_export(rows, out, columns=columns)
    lineage_path = out.with_name(out.name + ".lineage.json")
    write_lineage(lineage, lineage_path)
    return result, lineage, lineage_path
