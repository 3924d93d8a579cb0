"""Ingest: ticket exports (CSV, JSONL) and SQL query results -> canonical :class:`Ticket` s.

A :class:`~party.mapping.Mapping` says which source column feeds which field.
Two kinds of failure are kept apart:

* the whole source is unusable (unreadable, not in the declared encoding,
  empty, no header, a mapped column absent, a failing query): this raises
  :class:`~blindsum.errors.InvalidArgument` with a one-line message naming
  the file (and line / byte offset when known);
* one row is bad (unparseable date, CSAT 7 on a 1..5 scale, unknown status,
  wrong field count, ...): the row is *quarantined* with its line number, a
  short reason code and a message naming the row and column, and ingest goes
  on. Nothing is dropped silently: ``read == accepted + quarantined``, where
  ``read`` counts the records as the reader found them.

Mapped columns. A mapped column (``[columns]`` field or ``[extras]`` name)
absent from the CSV header or SQL result is an error unless the mapping lists
it in ``[columns].optional``. An optional column is absent without complaint,
except when the source has an unmapped column whose name is within one or two
edits of it (``csat_scroe`` / ``csat_score``): that is taken as a typo in the
mapping and refused too. JSONL records may omit keys (exporters often drop
null values), so for JSONL and in-memory rows the check runs once the whole
source is read: a non-optional mapped key that no record has is an error.

Quarantine messages never echo a cell that could hold personal data. The
fields that may hold it (identity, free text, ticket id, extras) are never
shown. A bad date, number or status is quoted only when its shape cannot
carry a name or a phone number: a numeric date (``2024-13-45``,
``31/02/2024 10:00``, with a year 1900..2199), a short number (at most four
integer digits) or a phrase made only of common ticket-workflow or rating
words (``Archived``, ``Waiting on Third Party``, ``Not Good``). Anything else is described by
length and character classes (``a value of 34 characters: letters, digits,
spaces, punctuation``).

CSV recovery. A record whose quoting is broken (the csv module raises: a quote
never closed, text after a closing quote, a field over
:data:`CSV_FIELD_LIMIT`) is quarantined. When it spans several lines, the
reader goes back to the line after its first one, because the broken quote
has probably swallowed real rows. Rows that start on a line the broken record
covered, or on the line right after it, are *in doubt*: they may be text from
inside someone's quoted field. An in-doubt row is accepted only when it is a
single line with exactly the header's field count and no quote character;
any other in-doubt row is quarantined as ``malformed_row`` ("follows a
malformed record (line N); not trusted"). A record whose quoting is well formed but
whose field count is wrong is quarantined as one record with its line span;
the reader does not go back into it, since its quoted newlines are field text,
not rows. Going back is bounded: at most :data:`MAX_CSV_RESYNCS` times and at
most :data:`CSV_REREAD_FACTOR` times the file size re-read in total, or the
file is refused.

JSONL. Each line is parsed on its own; a line that is not valid JSON
(including one nested too deeply for the parser, or a number too long to
convert) or not a JSON object is quarantined as ``malformed_row`` and the
next line is read.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Iterable, Iterator
from collections.abc import Mapping as AbcMapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from blindsum.errors import InvalidArgument
from blindsum.window import TicketWindow
from party.mapping import (
    REQUIRED_FIELDS,
    ColumnSpec,
    Mapping,
    normalize_value,
    to_hours,
)
from party.tickets import (
    FREE_TEXT_FIELDS,
    IDENTITY_FIELDS,
    TIMESTAMP_FIELDS,
    Ticket,
)

#: Files larger than this are refused before reading.
MAX_FILE_BYTES = 512 * 1024 * 1024

#: Quarantine reason codes.
REASONS: tuple[str, ...] = (
    "malformed_row",
    "missing_required",
    "duplicate_id",
    "unknown_status",
    "bad_date",
    "bad_number",
    "bad_duration",
    "out_of_range",
    "bad_value",
    "missing_created",
)

#: Multi-line malformed CSV records after which the file is refused as a whole
#: (each one makes the reader go back and re-read from the record's second line).
MAX_CSV_RESYNCS = 1000

#: Bytes re-read after malformed CSV records, as a multiple of the file size,
#: after which the file is refused (keeps recovery linear in the file size).
CSV_REREAD_FACTOR = 2

#: Largest CSV field accepted (a long e-mail thread fits); set on every CSV read,
#: as ``csv.field_size_limit`` is process-wide.
CSV_FIELD_LIMIT = 16 * 1024 * 1024

_FILE_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_BOM = b"\xef\xbb\xbf"
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")
_CLOCK = re.compile(r"^(\d{1,6}):([0-5]\d)(?::([0-5]\d(?:\.\d+)?))?$")
_SHOW_MAX = 40
#: Fields whose raw values never appear in a message (extras never do either).
_SECRET_FIELDS = frozenset((*IDENTITY_FIELDS, *FREE_TEXT_FIELDS, "ticket_id"))
#: Value shapes that may be quoted in a message (see the module docstring).
_SAFE_NUMBER = re.compile(r"[+-]?\d{1,4}(?:\.\d{1,6})?")
_SAFE_DATE = re.compile(
    r"(?:(?P<y1>\d{4})[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.](?P<y2>\d{4}))"
    r"(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?: ?[AaPp][Mm])?)?"
    r"(?: ?(?:Z|UTC|[+-]\d{2}:?\d{2}))?"
)
_WORD_SPLIT = re.compile(r"[\s_/-]+")
#: Words a status or score label may be quoted with: ticket workflow and
#: satisfaction words, none of them a likely name.
_SAFE_WORD_LINES = (
    "open opened new pending hold on in progress waiting wait for awaiting customer",
    "third party solved resolved closed close escalated escalation reopened reopen",
    "archived deleted spam merged duplicate assigned unassigned active inactive done",
    "complete completed cancelled canceled rejected response reply replied answered",
    "review needs info triage backlog blocked todo to do working investigating under",
    "internal external fixed wontfix not good bad great poor neutral awesome",
    "satisfied unsatisfied dissatisfied very offered unoffered yes no none null nil na",
    "unknown",
)
_SAFE_WORDS = frozenset(word for line in _SAFE_WORD_LINES for word in line.split())
#: Unmapped column names compared with an absent mapped column (typo check).
_MAX_TYPO_CANDIDATES = 1000

_AUTO_COMMON = (
    "%Y-%m-%d %H:%M:%S %z",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d %H:%M",
    "%Y/%m/%d",
    "%d %b %Y %H:%M:%S",
    "%d %b %Y %H:%M",
    "%d %b %Y",
    "%b %d, %Y %I:%M %p",
    "%b %d, %Y %H:%M",
    "%b %d, %Y",
)
_AUTO_DAYFIRST = tuple(
    f"%d{sep}%m{sep}%Y{time}" for sep in ("/", ".", "-") for time in (" %H:%M:%S", " %H:%M", "")
)
_AUTO_MONTHFIRST = tuple(
    f"%m{sep}%d{sep}%Y{time}"
    for sep in ("/", "-")
    for time in (" %H:%M:%S", " %H:%M", " %I:%M:%S %p", " %I:%M %p", "")
)


# ------------------------------------------------------------------ results


@dataclass(frozen=True)
class Quarantined:
    """One bad row: its 1-based line (or SQL row number), reason code, column, message."""

    line: int
    reason: str
    column: str | None
    message: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class IngestSummary:
    """Row counts of one ingest. ``read == accepted + quarantined + outside_window``.

    ``outside_window`` counts the rows left out because their ticket was created outside
    the round's window: not errors, and not quarantined (0 without a window)."""

    source: str
    read: int
    accepted: int
    quarantined: int
    by_reason: dict[str, int] = field(default_factory=dict)
    outside_window: int = 0

    @property
    def in_window(self) -> int:
        """Rows that count for the round: read, less those outside its window."""
        return self.read - self.outside_window

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class IngestResult:
    tickets: list[Ticket]
    quarantine: list[Quarantined]
    summary: IngestSummary


# ------------------------------------------------------------------ public API


def ingest_file(
    path: Path,
    mapping: Mapping,
    *,
    quarantine_path: Path | None = None,
    window: TicketWindow | None = None,
) -> IngestResult:
    """Read a CSV or JSONL ticket export through ``mapping``.

    The format is ``mapping.format``, or inferred from the extension (``.csv``,
    ``.jsonl``, ``.ndjson``) when it is ``auto``. Rows are streamed; the file
    must be at most :data:`MAX_FILE_BYTES`. Raises InvalidArgument for a
    whole-file failure; bad rows are quarantined (and written to
    ``quarantine_path`` as JSONL, mode 0600, when given).

    With a ``window``, only rows whose ticket was created in it are read further: the
    others are counted (``outside_window``), not converted and not quarantined, and a
    row without a usable created time is quarantined (``missing_created`` or
    ``bad_date``), since it cannot be placed in any window.
    """
    path = Path(path)
    label = str(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InvalidArgument("file not found", field=label) from None
    except OSError as err:
        raise InvalidArgument(f"cannot read file ({err.strerror})", field=label) from None
    if not path.is_file():
        raise InvalidArgument("not a regular file", field=label)
    if size > MAX_FILE_BYTES:
        raise InvalidArgument(f"file larger than {MAX_FILE_BYTES} bytes", field=label)
    if size == 0:
        raise InvalidArgument("empty file", field=label)
    fmt = _file_format(path, mapping, label)
    collector = _Collector(mapping, label, window)
    try:
        with path.open("rb") as fh:
            if fmt == "csv":
                _read_csv(fh, mapping, label, collector, size)
            else:
                _read_jsonl(fh, mapping, label, collector)
    except OSError as err:
        raise InvalidArgument(f"cannot read file ({err.strerror})", field=label) from None
    return collector.finish(quarantine_path)


def ingest_sql(
    url: str,
    query: str,
    mapping: Mapping,
    *,
    quarantine_path: Path | None = None,
    window: TicketWindow | None = None,
) -> IngestResult:
    """Run ``query`` against the SQLAlchemy ``url`` and ingest its rows (numbered from 1).
    ``window`` selects rows as in :func:`ingest_file`.

    Result columns are matched to the mapping like a CSV header. The query runs
    in a transaction that is rolled back. A plain ``postgresql://`` URL uses
    psycopg 3. In the query, ``:name`` is a bind parameter: write ``\\:`` for a
    literal colon. Raises InvalidArgument (password hidden) when the database
    cannot be reached or the query fails.
    """
    import sqlalchemy  # noqa: PLC0415  # imported on use: only the SQL source needs it
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError  # noqa: PLC0415  # as above

    try:
        sa_url = sqlalchemy.engine.make_url(url)
    except (ArgumentError, ValueError):
        raise InvalidArgument("not a valid SQLAlchemy database URL", field="sql") from None
    label = sa_url.render_as_string(hide_password=True)
    if sa_url.drivername == "postgresql":
        sa_url = sa_url.set(drivername="postgresql+psycopg")
    database = sa_url.database or ""
    if (
        sa_url.get_backend_name() == "sqlite"
        and database not in ("", ":memory:")
        and not database.startswith("file:")
        and not Path(database).is_file()
    ):
        raise InvalidArgument("SQLite database file not found", field=label)
    try:
        engine = sqlalchemy.create_engine(sa_url)
    except (SQLAlchemyError, ImportError) as err:
        raise InvalidArgument(f"cannot use database URL ({_one_line(err)})", field=label) from None
    collector = _Collector(mapping, label, window)
    try:
        with engine.connect() as conn:
            result = conn.execution_options(stream_results=True).execute(sqlalchemy.text(query))
            if not result.returns_rows:
                raise InvalidArgument("query returned no result set", field=label)
            header = list(map(str, result.keys()))
            positions = _resolve_header(header, mapping, label, "query result")
            for number, row in enumerate(result, start=1):
                values = {column: row[index] for column, index in positions.items()}
                collector.add(number, values)
    except SQLAlchemyError as err:
        raise InvalidArgument(f"query failed ({_one_line(err)})", field=label) from None
    finally:
        engine.dispose()
    return collector.finish(quarantine_path)


def ingest_rows(
    rows: Iterable[AbcMapping[str, object]],
    mapping: Mapping,
    *,
    source: str = "rows",
    quarantine_path: Path | None = None,
    window: TicketWindow | None = None,
) -> IngestResult:
    """Ingest in-memory records (column -> value), numbered from 1.

    Useful for generated rows and tests. Keys are matched exactly; a mapped
    column missing from a record is empty. Raises InvalidArgument when a
    mapped column that is not optional appears in none of the records.
    ``window`` selects rows as in :func:`ingest_file`.
    """
    collector = _Collector(mapping, source, window)
    tracker = _KeyTracker(mapping)
    for number, row in enumerate(rows, start=1):
        tracker.see(row)
        collector.add(number, {c: row[c] for c in tracker.columns if c in row})
    tracker.check(collector.read, mapping, source, "in any record")
    return collector.finish(quarantine_path)


def write_quarantine(entries: Iterable[Quarantined], path: Path) -> None:
    """Write quarantine entries as JSONL to ``path`` with mode 0600 (replacing it)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for entry in entries:
                fh.write(json.dumps(entry.to_dict(), sort_keys=True) + "\n")
    except OSError as err:
        raise InvalidArgument(
            f"cannot write quarantine file ({err.strerror})", field=str(path)
        ) from None


# ------------------------------------------------------------------ file readers


def _file_format(path: Path, mapping: Mapping, label: str) -> str:
    if mapping.format in ("csv", "jsonl"):
        return mapping.format
    if mapping.format == "sql":
        raise InvalidArgument(
            f"mapping {mapping.name!r} is for a SQL source, not a file", field=label
        )
    fmt = _FILE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InvalidArgument(
            "cannot tell the format from the extension (use .csv, .jsonl or .ndjson, "
            "or set [source].format in the mapping)",
            field=label,
        )
    return fmt


class _Lines:
    """Binary lines -> decoded text, tracking line numbers and byte offsets.

    ``line`` is the number of the last line returned and ``text`` its text;
    ``record_start`` the first line of the record being read and
    ``resync_offset`` the byte offset just after it (where to resume when that
    record turns out malformed).
    """

    def __init__(self, fh: IO[bytes], encoding: str, label: str, line: int, offset: int) -> None:
        self.fh = fh
        self.encoding = encoding
        self.label = label
        self.line = line
        self.offset = offset
        self.text = ""
        self.record_start: int | None = None
        self.resync_offset = offset
        fh.seek(offset)

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        raw = self.fh.readline()
        if not raw:
            raise StopIteration
        start = self.offset
        self.offset += len(raw)
        self.line += 1
        if self.record_start is None:
            self.record_start = self.line
            self.resync_offset = self.offset
        if start == 0 and raw.startswith(_BOM) and self.encoding == "utf-8":
            raw = raw[len(_BOM) :]
            start += len(_BOM)
        try:
            self.text = raw.decode(self.encoding)
        except UnicodeDecodeError as err:
            raise InvalidArgument(
                f"line {self.line}: not valid {self.encoding} at byte offset {start + err.start} "
                "(set [source].encoding in the mapping)",
                field=self.label,
            ) from None
        return self.text


def _read_csv(
    fh: IO[bytes], mapping: Mapping, label: str, collector: _Collector, size: int
) -> None:
    csv.field_size_limit(CSV_FIELD_LIMIT)
    lines = _Lines(fh, mapping.encoding, label, 0, 0)
    reader = csv.reader(lines, delimiter=mapping.delimiter, strict=True)
    header: list[str] | None = None
    while header is None:
        lines.record_start = None
        try:
            row = next(reader)
        except StopIteration:
            raise InvalidArgument("empty file (no header row)", field=label) from None
        except csv.Error as err:
            raise InvalidArgument(
                f"line {lines.record_start or lines.line}: malformed CSV header ({err})",
                field=label,
            ) from None
        if any(cell.strip() for cell in row):
            header = [cell.strip() for cell in row]
    header_line = lines.record_start or lines.line
    positions = _resolve_header(header, mapping, label, f"file header (line {header_line})")
    width = len(header)

    budget = CSV_REREAD_FACTOR * size
    reread = 0
    resyncs = 0
    # (first line of the last broken record, last line whose rows are in doubt)
    doubt: tuple[int, int] | None = None
    resume: tuple[int, int] | None = (lines.line, lines.offset)
    while resume is not None:
        lines = _Lines(fh, mapping.encoding, label, resume[0], resume[1])
        reader = csv.reader(lines, delimiter=mapping.delimiter, strict=True)
        resume = None
        while True:
            lines.record_start = None
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as err:
                start, end = lines.record_start or lines.line, lines.line
                collector.reject(
                    Quarantined(
                        start, "malformed_row", None, f"{_span(start, end)}: malformed CSV ({err})"
                    )
                )
                doubt = (start, max(end + 1, doubt[1] if doubt else 0))
                if end == start:
                    continue
                # The record swallowed following lines (e.g. an unclosed quote):
                # resume on the line after its first one so those rows are not lost.
                resyncs += 1
                reread += lines.offset - lines.resync_offset
                if resyncs > MAX_CSV_RESYNCS or reread > budget:
                    raise InvalidArgument(
                        f"too many malformed multi-line records (more than {MAX_CSV_RESYNCS}, "
                        f"or more than {CSV_REREAD_FACTOR}x the file re-read; "
                        "check [source].delimiter and quoting)",
                        field=label,
                    ) from None
                resume = (start, lines.resync_offset)
                break
            start, end = lines.record_start or lines.line, lines.line
            if len(row) <= 1 and not "".join(row).strip():
                continue  # a blank line is not a record
            if doubt is not None and start <= doubt[1]:
                trusted = end == start and len(row) == width and '"' not in lines.text
                if not trusted:
                    message = f"follows a malformed record (line {doubt[0]}); not trusted"
                    collector.reject(
                        Quarantined(start, "malformed_row", None, f"{_span(start, end)}: {message}")
                    )
                    continue
            if len(row) != width:
                message = f"{len(row)} fields, header has {width}"
                collector.reject(
                    Quarantined(start, "malformed_row", None, f"{_span(start, end)}: {message}")
                )
                continue
            collector.add(start, {c: row[i] for c, i in positions.items()})


def _span(start: int, end: int) -> str:
    return f"line {start}" if end == start else f"lines {start}-{end}"


class _ConstantNotAllowed(ValueError):
    """A JSON NaN / Infinity constant (not valid JSON, though Python reads it)."""


def _reject_constant(name: str) -> object:
    raise _ConstantNotAllowed(f"{name} is not allowed")


def _parse_json_line(text: str) -> tuple[object, str | None]:
    """One JSONL line -> (value, None), or (None, why it is not valid JSON)."""
    try:
        return json.loads(text, parse_constant=_reject_constant), None
    except RecursionError:
        return None, "nested too deeply"
    except _ConstantNotAllowed as err:
        return None, str(err)
    except json.JSONDecodeError as err:
        return None, err.msg  # a fixed phrase; never the line's content
    except ValueError:  # e.g. an integer longer than Python converts
        return None, "unreadable value"


def _read_jsonl(fh: IO[bytes], mapping: Mapping, label: str, collector: _Collector) -> None:
    lines = _Lines(fh, mapping.encoding, label, 0, 0)
    tracker = _KeyTracker(mapping)
    for text in lines:
        line = lines.line
        lines.record_start = None
        if not text.strip():
            continue
        obj, problem = _parse_json_line(text)
        if problem is not None:
            collector.reject(
                Quarantined(line, "malformed_row", None, f"line {line}: not valid JSON ({problem})")
            )
            continue
        if not isinstance(obj, dict):
            collector.reject(
                Quarantined(line, "malformed_row", None, f"line {line}: not a JSON object")
            )
            continue
        tracker.see(obj)
        collector.add(line, {c: obj[c] for c in tracker.columns if c in obj})
    if collector.read == 0:
        raise InvalidArgument("empty file (no records)", field=label)
    tracker.check(collector.read, mapping, label, "in any record")


class _KeyTracker:
    """For keyed records: which mapped columns occur in some record, and which other keys."""

    def __init__(self, mapping: Mapping) -> None:
        self.expected = mapping.mapped_columns()
        self.columns = tuple(self.expected)
        self.seen: set[str] = set()
        self.others: set[str] = set()

    def see(self, row: AbcMapping[str, object]) -> None:
        if len(self.seen) < len(self.columns):
            self.seen.update(c for c in self.columns if c in row)
        if len(self.others) < _MAX_TYPO_CANDIDATES:
            self.others.update(k for k in row if isinstance(k, str) and k not in self.expected)

    def check(self, read: int, mapping: Mapping, label: str, where: str) -> None:
        if read == 0:
            return
        missing = [c for c in self.columns if c not in self.seen]
        _check_missing(missing, mapping, sorted(self.others), label, where)


def _resolve_header(header: list[str], mapping: Mapping, label: str, where: str) -> dict[str, int]:
    """Mapped source column -> index in ``header`` (exact name, else unique case-insensitive).

    Raises InvalidArgument when a mapped column is absent and not optional, or
    absent and optional but with a near-identical unmapped name in ``header``.
    """
    exact: dict[str, list[int]] = {}
    folded: dict[str, list[int]] = {}
    for index, name in enumerate(header):
        exact.setdefault(name, []).append(index)
        folded.setdefault(name.casefold(), []).append(index)
    positions: dict[str, int] = {}
    for column in mapping.mapped_columns():
        found = exact.get(column) or folded.get(column.casefold()) or []
        if len(found) > 1:
            raise InvalidArgument(
                f"mapping column {column!r} appears {len(found)} times in the {where}",
                field=label,
            )
        if found:
            positions[column] = found[0]
    if not positions:
        raise InvalidArgument(
            f"none of the mapping's columns is in the {where} "
            f"(no header row, or not a {mapping.name!r} export?)",
            field=label,
        )
    used = set(positions.values())
    others = [name for i, name in enumerate(header) if i not in used and name]
    missing = [c for c in mapping.mapped_columns() if c not in positions]
    _check_missing(missing, mapping, others[:_MAX_TYPO_CANDIDATES], label, f"in {where}")
    return positions


def _check_missing(
    missing: list[str], mapping: Mapping, others: list[str], label: str, where: str
) -> None:
    """Raise for the absent mapped columns that are not allowed to be absent (one line)."""
    mapped = mapping.mapped_columns()
    problems: list[tuple[int, str]] = []
    for column in missing:
        info = mapped[column]
        hint = _near_miss(column, others)
        message = f"mapping column {column!r} ({info.key}) not {where}"
        if hint is not None:
            problems.append((1, f"{message}, which has {hint!r}: a typo in the mapping?"))
        elif info.required:
            problems.append((0, message))
        elif not info.optional:
            problems.append(
                (2, f"{message}; fix the name, or list {info.name} in columns.optional")
            )
    if not problems:
        return
    problems.sort(key=lambda p: p[0])
    message = problems[0][1]
    if len(problems) > 1:
        more = len(problems) - 1
        message += f" ({more} more mapped column{'s' if more > 1 else ''} missing too)"
    raise InvalidArgument(message, field=label)


def _fold_name(name: str) -> str:
    return re.sub(r"[\s_-]+", "_", name.strip().casefold())


def _near_miss(column: str, candidates: Iterable[str]) -> str | None:
    """The candidate name closest to ``column`` within 1 edit (short names) or 2, if any.

    Names are compared case-insensitively with spaces, ``_`` and ``-`` alike;
    an edit is an insertion, deletion, substitution or swap of neighbours.
    """
    target = _fold_name(column)
    limit = 1 if len(target) < 8 else 2
    best: tuple[int, str] | None = None
    for candidate in candidates:
        name = _fold_name(candidate)
        if abs(len(name) - len(target)) > limit or len(candidate) > 200:
            continue
        distance = _edit_distance(target, name)
        if distance <= limit and (best is None or distance < best[0]):
            best = (distance, candidate)
    return None if best is None else best[1]


def _edit_distance(a: str, b: str) -> int:
    """Optimal string alignment distance (Levenshtein plus adjacent swaps)."""
    before: list[int] = []
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                current[j] = min(current[j], before[j - 2] + 1)
        before, previous = previous, current
    return previous[len(b)]


def _one_line(err: BaseException) -> str:
    orig = getattr(err, "orig", None)
    text = str(orig if orig is not None else err).strip()
    first = text.splitlines()[0] if text else type(err).__name__
    return first[:200]


# ------------------------------------------------------------------ row conversion


class _Bad(Exception):
    """A row problem; becomes one quarantine entry."""

    def __init__(self, reason: str, column: str | None, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.column = column
        self.message = message


class _Collector:
    """Turns records into tickets or quarantine entries and counts them."""

    def __init__(self, mapping: Mapping, label: str, window: TicketWindow | None = None) -> None:
        if window is not None and "created" not in mapping.columns:
            raise InvalidArgument(
                "maps no created column, and a round's window picks its tickets by their "
                "created time (add columns.created)",
                field=mapping.origin,
            )
        self.converter = _Converter(mapping)
        self.label = label
        self.window = window
        self.tickets: list[Ticket] = []
        self.quarantine: list[Quarantined] = []
        self.seen_ids: dict[str, int] = {}
        self.read = 0
        self.outside_window = 0

    def _in_window(self, line: int, values: AbcMapping[str, object]) -> bool:
        """Whether the record's created time is in the window; raises _Bad when the
        record has none that can be read, since it then belongs to no window."""
        if self.window is None:
            return True
        column = self.converter.mapping.columns["created"].column
        created = self.converter.timestamp(line, "created", column, values.get(column))
        if created is None:
            raise _Bad(
                "missing_created",
                column,
                f"line {line}, column {column!r} (created): empty, so the ticket cannot be "
                "placed in the round's window",
            )
        return self.window.contains(created)

    def add(self, line: int, values: AbcMapping[str, object]) -> None:
        self.read += 1
        try:
            if not self._in_window(line, values):
                self.outside_window += 1
                return
            ticket = self.converter.convert(line, values)
            first = self.seen_ids.get(ticket.ticket_id)
            if first is not None:
                column = self.converter.mapping.columns["ticket_id"].column
                raise _Bad(
                    "duplicate_id",
                    column,
                    f"line {line}, column {column!r}: ticket id already seen at line {first}",
                )
        except _Bad as bad:
            self.quarantine.append(Quarantined(line, bad.reason, bad.column, bad.message))
            return
        self.seen_ids[ticket.ticket_id] = line
        self.tickets.append(ticket)

    def reject(self, entry: Quarantined) -> None:
        self.read += 1
        self.quarantine.append(entry)

    def finish(self, quarantine_path: Path | None) -> IngestResult:
        by_reason: dict[str, int] = {}
        for entry in self.quarantine:
            by_reason[entry.reason] = by_reason.get(entry.reason, 0) + 1
        summary = IngestSummary(
            source=self.label,
            read=self.read,
            accepted=len(self.tickets),
            quarantined=len(self.quarantine),
            by_reason=dict(sorted(by_reason.items())),
            outside_window=self.outside_window,
        )
        if quarantine_path is not None:
            write_quarantine(self.quarantine, quarantine_path)
        return IngestResult(tickets=self.tickets, quarantine=self.quarantine, summary=summary)


class _Converter:
    """One record (source column -> raw value) -> :class:`Ticket`, or raises :class:`_Bad`."""

    def __init__(self, mapping: Mapping) -> None:
        self.mapping = mapping
        self.zone: tzinfo = mapping.zone()
        formats: list[str] = []
        for fmt in mapping.date_formats:
            if fmt == "auto":
                formats.append("iso")
                formats.extend(_AUTO_DAYFIRST if mapping.dayfirst else _AUTO_MONTHFIRST)
                formats.extend(_AUTO_COMMON)
            else:
                formats.append(fmt)
        self.date_formats = tuple(dict.fromkeys(formats))
        # Required fields first, so a row missing one reports that before anything else.
        order = [f for f in REQUIRED_FIELDS if f in mapping.columns]
        order += [f for f in mapping.columns if f not in REQUIRED_FIELDS]
        self.order = tuple(order)

    def convert(self, line: int, values: AbcMapping[str, object]) -> Ticket:
        kwargs: dict[str, Any] = {}
        for name in self.order:
            spec = self.mapping.columns[name]
            value = self._field(line, name, spec, values.get(spec.column))
            if value is None and name in REQUIRED_FIELDS:
                raise _Bad(
                    "missing_required",
                    spec.column,
                    f"line {line}, column {spec.column!r} ({name}): required value is empty",
                )
            kwargs[name] = value
        self._derive(line, kwargs, "first_response_hours", "first_response_at")
        self._derive(line, kwargs, "resolution_hours", "resolved_at")
        extras: list[tuple[str, str]] = []
        for name, column in self.mapping.extras.items():
            text = self._text(line, name, column, values.get(column))
            extras.append((name, text or ""))
        return Ticket(line=line, extras=tuple(extras), **kwargs)

    # ---- per field

    def _field(self, line: int, name: str, spec: ColumnSpec, raw: object) -> object:
        if name in TIMESTAMP_FIELDS:
            return self.timestamp(line, name, spec.column, raw)
        if name in ("first_response_hours", "resolution_hours"):
            return self._duration(line, name, spec, raw)
        if name in ("csat", "nps"):
            return self._score(line, name, spec.column, raw)
        text = self._text(line, name, spec.column, raw)
        if name == "status" and text is not None:
            status = self.mapping.status_vocab.get(normalize_value(text))
            if status is None:
                raise _Bad(
                    "unknown_status",
                    spec.column,
                    f"line {line}, column {spec.column!r} (status): unknown status "
                    f"{_show(text, name)} (add it to [status] in the mapping)",
                )
            return status
        return text

    def _empty(self, raw: object) -> bool:
        if raw is None:
            return True
        if isinstance(raw, float) and math.isnan(raw):
            return True
        if isinstance(raw, str):
            text = raw.strip()
            return not text or normalize_value(text) in self.mapping.empty_values
        return False

    def _text(self, line: int, name: str, column: str, raw: object) -> str | None:
        if self._empty(raw):
            return None
        if isinstance(raw, str):
            return raw.strip()
        if isinstance(raw, bool):
            return "true" if raw else "false"
        if isinstance(raw, int | Decimal):
            return str(raw)
        if isinstance(raw, float):
            return repr(raw) if math.isfinite(raw) else None
        if isinstance(raw, datetime | date):
            return raw.isoformat()
        raise _Bad(
            "bad_value",
            column,
            f"line {line}, column {column!r} ({name}): expected text, got {type(raw).__name__}",
        )

    def timestamp(self, line: int, name: str, column: str, raw: object) -> datetime | None:
        if self._empty(raw):
            return None
        if isinstance(raw, datetime):
            return self._to_utc(raw)
        if isinstance(raw, date):
            return self._to_utc(datetime(raw.year, raw.month, raw.day))
        if isinstance(raw, str):
            text = raw.strip()
            for fmt in self.date_formats:
                try:
                    if fmt == "iso":
                        parsed = datetime.fromisoformat(text)
                    else:
                        parsed = datetime.strptime(text, fmt)
                except ValueError:
                    continue
                return self._to_utc(parsed)
        raise _Bad(
            "bad_date",
            column,
            f"line {line}, column {column!r} ({name}): unparseable date {_show(raw, name)} "
            f"(formats: {', '.join(self.mapping.date_formats)})",
        )

    def _to_utc(self, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            value = value.replace(tzinfo=self.zone)
        return value.astimezone(UTC)

    def _number(self, line: int, name: str, column: str, raw: object) -> float:
        value: float | None = None
        if isinstance(raw, bool):
            value = None
        elif isinstance(raw, int | float | Decimal):
            value = float(raw)
        elif isinstance(raw, str) and _NUMBER.match(raw.strip()):
            value = float(raw.strip())
        if value is None or not math.isfinite(value):
            raise _Bad(
                "bad_number",
                column,
                f"line {line}, column {column!r} ({name}): not a number {_show(raw, name)}",
            )
        return value

    def _duration(self, line: int, name: str, spec: ColumnSpec, raw: object) -> float | None:
        if self._empty(raw):
            return None
        clock = _CLOCK.match(raw.strip()) if isinstance(raw, str) else None
        if clock is not None:
            hours = int(clock.group(1)) + int(clock.group(2)) / 60.0
            hours += float(clock.group(3) or 0.0) / 3600.0
        else:
            hours = to_hours(self._number(line, name, spec.column, raw), spec.unit or "hours")
        if hours < 0:
            raise _Bad(
                "bad_duration",
                spec.column,
                f"line {line}, column {spec.column!r} ({name}): negative duration",
            )
        return hours

    def _score(self, line: int, name: str, column: str, raw: object) -> int | None:
        if self._empty(raw):
            return None
        if name == "csat":
            scale, labels = self.mapping.csat_scale, self.mapping.csat_labels
        else:
            scale, labels = self.mapping.nps_scale, self.mapping.nps_labels
        if isinstance(raw, str) and normalize_value(raw) in labels:
            return labels[normalize_value(raw)]
        value = self._number(line, name, column, raw)
        if not value.is_integer():
            raise _Bad(
                "bad_number",
                column,
                f"line {line}, column {column!r} ({name}): not a whole score {_show(raw, name)}",
            )
        score = int(value)
        if not scale[0] <= score <= scale[1]:
            raise _Bad(
                "out_of_range",
                column,
                f"line {line}, column {column!r} ({name}): {_show(score, name, quote=False)} "
                f"is outside the scale {scale[0]}..{scale[1]}",
            )
        return score

    def _derive(self, line: int, kwargs: dict[str, Any], hours: str, end: str) -> None:
        """Fill a missing duration from ``end - created``; a negative one is a bad row."""
        if kwargs.get(hours) is not None:
            return
        start_at = kwargs.get("created")
        end_at = kwargs.get(end)
        if not isinstance(start_at, datetime) or not isinstance(end_at, datetime):
            return
        value = (end_at - start_at).total_seconds() / 3600.0
        if value < 0:
            column = self.mapping.columns[end].column
            raise _Bad(
                "bad_duration",
                column,
                f"line {line}, column {column!r} ({end}): before the created time",
            )
        kwargs[hours] = value


def _show(raw: object, name: str, *, quote: bool = True) -> str:
    """A bad value of a non-sensitive field, as a message shows it.

    The value is quoted (``repr``, or as is with ``quote=False``) only when
    :func:`_safe_shape` says it cannot carry personal data; otherwise it is
    described by type, length and character classes.
    """
    if name in _SECRET_FIELDS:
        return "(value hidden)"
    if isinstance(raw, bytes | bytearray | memoryview):
        return f"(a binary value of {_count(len(raw), 'byte')})"
    if isinstance(raw, dict):
        return "(an object)"
    if isinstance(raw, list | tuple):
        return "(a list)"
    if isinstance(raw, bool):
        text = "true" if raw else "false"
    elif isinstance(raw, str | int | float | Decimal | datetime | date):
        text = str(raw).strip()
    else:
        return f"(a value of type {type(raw).__name__})"
    if _safe_shape(text):
        return repr(text) if quote else text
    return f"({_describe(text)})"


def _safe_shape(text: str) -> bool:
    """True for a short number, a numeric date or a phrase of ticket-workflow words."""
    if not text or len(text) > _SHOW_MAX:
        return False
    if _SAFE_NUMBER.fullmatch(text):
        return True
    date = _SAFE_DATE.fullmatch(text)
    if date is not None:
        return 1900 <= int(date.group("y1") or date.group("y2")) <= 2199
    words = [w for w in _WORD_SPLIT.split(text.casefold()) if w]
    return bool(words) and text.isascii() and all(w in _SAFE_WORDS for w in words)


def _describe(text: str) -> str:
    """``a value of N characters: letters, digits, ...``: the shape, never the content."""
    kinds = [
        kind
        for kind, test in (
            ("letters", str.isalpha),
            ("digits", str.isdigit),
            ("spaces", str.isspace),
            ("punctuation", lambda c: c.isprintable() and not c.isalnum() and not c.isspace()),
            ("control characters", lambda c: not c.isprintable() and not c.isspace()),
        )
        if any(test(c) for c in text)
    ]
    if not text:
        return "an empty value"
    return f"a value of {_count(len(text), 'character')}: {', '.join(kinds)}"


def _count(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"
