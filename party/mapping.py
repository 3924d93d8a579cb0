"""Column-mapping files: how one ticket export maps onto the canonical :class:`Ticket`.

A mapping is a small TOML file (see ``docs/MAPPINGS.md``). It says where the
rows come from (``[source]``), how dates are written (``[dates]``), which
source column feeds which canonical field (``[columns]``) and which of those
columns a file may lack (``[columns].optional``), how the source's
status vocabulary maps onto open / escalated / resolved (``[status]``), the
CSAT and NPS scales (``[scales]``), text values that mean "empty" or stand for
a score (``[values]``), extra columns carried into the anonymized export
(``[extras]``) and the anonymization operator per field (``[anonymize]``).

Parsing is strict: an unknown table, key, canonical field or operator is a
:class:`~blindsum.errors.ConfigError` naming the file and the dotted key.

A mapped column (a ``[columns]`` field or an ``[extras]`` name) must be present
in the source (the CSV header, the SQL result, or at least one JSONL record)
unless it is listed in ``[columns].optional``; the required fields (ticket_id,
region, status) can never be optional. This turns a misspelled column name
into an error instead of a column of empty values.
Three presets ship with the package: ``generic``, ``zendesk`` (Zendesk-like)
and ``freshdesk`` (Freshdesk-like); :func:`load_mapping` loads them by name.
"""

from __future__ import annotations

import codecs
import importlib.resources
import re
import zoneinfo
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

from blindsum.config import loads_toml
from blindsum.errors import ConfigError
from party.tickets import CANONICAL_FIELDS, DURATION_FIELDS, TIMESTAMP_FIELDS, Status

#: Anonymization operators a mapping may name (implemented in ``party.anonymize``).
OPERATORS = frozenset(
    {
        "keep",
        "drop",
        "redact",
        "pseudonym",
        "token",
        "scrub",
        "generalize:day",
        "generalize:week",
        "generalize:month",
        "age_band",
        "year",
    }
)

#: Shipped presets, loadable by bare name.
PRESETS: tuple[str, ...] = ("generic", "zendesk", "freshdesk")

#: Canonical fields every mapping must map (a row without them is quarantined).
REQUIRED_FIELDS: tuple[str, ...] = ("ticket_id", "region", "status")

#: ``[source].format`` values. ``auto`` infers csv / jsonl from the file extension.
FORMATS: tuple[str, ...] = ("auto", "csv", "jsonl", "sql")

#: Duration units a ``[columns]`` duration may be given in (see :func:`to_hours`).
DURATION_UNITS: tuple[str, ...] = ("hours", "minutes", "seconds", "days")

#: Special ``[dates].formats`` entries (anything else must be a strptime pattern).
DATE_KEYWORDS: tuple[str, ...] = ("iso", "auto")

#: Mapping files are small; refuse anything bigger before parsing it.
MAX_MAPPING_BYTES = 1024 * 1024

_TIMESTAMP_OPERATORS = frozenset({"generalize:day", "generalize:week", "generalize:month", "year"})
_EXTRAS_ONLY_OPERATORS = frozenset({"age_band"})
_EXTRA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_SCALE_LIMIT = 1000
_TOP_KEYS = (
    "mapping",
    "source",
    "dates",
    "columns",
    "status",
    "scales",
    "values",
    "extras",
    "anonymize",
)


@dataclass(frozen=True)
class ColumnSpec:
    """Where a canonical field comes from: a source column and, for durations, its unit."""

    column: str
    unit: str | None = None


@dataclass(frozen=True)
class MappedColumn:
    """How a mapping names one source column: its dotted key, field / extras name, flags."""

    key: str
    name: str
    optional: bool
    required: bool


@dataclass(frozen=True)
class Mapping:
    """A parsed, validated mapping file. Treat the dict fields as read-only.

    ``status_vocab`` maps a lowercased, stripped source value to a :class:`Status`;
    ``empty_values``, ``csat_labels`` and ``nps_labels`` are keyed the same way.
    Duration columns always carry a unit (``hours`` when the file gives none).
    ``optional`` holds the canonical fields and extras names whose source column
    a file may lack (from ``[columns].optional``).
    ``origin`` names the file (or preset) in later error messages.
    """

    name: str
    version: int
    format: str
    delimiter: str
    encoding: str
    date_formats: tuple[str, ...]
    dayfirst: bool
    timezone: str
    columns: dict[str, ColumnSpec]
    status_vocab: dict[str, Status]
    csat_scale: tuple[int, int]
    nps_scale: tuple[int, int]
    extras: dict[str, str]
    operators: dict[str, str]
    empty_values: frozenset[str] = frozenset()
    optional: frozenset[str] = frozenset()
    csat_labels: dict[str, int] = field(default_factory=dict)
    nps_labels: dict[str, int] = field(default_factory=dict)
    origin: str = ""

    def zone(self) -> tzinfo:
        """The zone applied to naive timestamps (validated when the mapping was loaded)."""
        return resolve_timezone(self.timezone)

    def required_columns(self) -> dict[str, str]:
        """Canonical field -> source column for the fields every row must have."""
        return {f: self.columns[f].column for f in REQUIRED_FIELDS}

    def mapped_columns(self) -> dict[str, MappedColumn]:
        """Source column -> how the mapping names it, in mapping order ([columns], then [extras]).

        When several keys name the same column, the first one is reported; the
        column is optional only when every key naming it is optional, and
        required when any of them is a required field.
        """
        keyed = [(f"columns.{name}", name, spec.column) for name, spec in self.columns.items()]
        keyed += [(f"extras.{name}", name, column) for name, column in self.extras.items()]
        found: dict[str, MappedColumn] = {}
        for key, name, column in keyed:
            optional = name in self.optional
            required = key.startswith("columns.") and name in REQUIRED_FIELDS
            before = found.get(column)
            if before is None:
                found[column] = MappedColumn(key, name, optional, required)
            else:
                found[column] = MappedColumn(
                    before.key,
                    before.name,
                    before.optional and optional,
                    before.required or required,
                )
        return found


def to_hours(value: float, unit: str) -> float:
    """Convert a duration in ``unit`` to hours (minutes / 60, not minutes * (1/60))."""
    if unit == "hours":
        return value
    if unit == "minutes":
        return value / 60.0
    if unit == "seconds":
        return value / 3600.0
    if unit == "days":
        return value * 24.0
    raise ConfigError(f"unknown duration unit {unit!r}", field="unit")


def resolve_timezone(name: str) -> tzinfo:
    """``UTC`` or an IANA zone name -> tzinfo. Raises ConfigError when unknown."""
    if name.upper() in ("UTC", "Z"):
        return UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"unknown time zone {name!r}", field="dates.timezone") from None


# ------------------------------------------------------------------ loading


def load_mapping(path_or_preset: str | Path) -> Mapping:
    """Load a mapping file, or a shipped preset when given a bare preset name.

    A ``str`` without a path separator and without the ``.toml`` suffix is a
    preset name (``generic``, ``zendesk``, ``freshdesk``); anything else is a path.
    """
    if isinstance(path_or_preset, str) and _looks_like_preset(path_or_preset):
        if path_or_preset not in PRESETS:
            raise ConfigError(
                f"unknown mapping preset (known: {', '.join(PRESETS)}; or give a .toml path)",
                field=path_or_preset,
            )
        return _load_preset(path_or_preset)
    path = Path(path_or_preset)
    origin = str(path)
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_MAPPING_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError("mapping file not found", field=origin) from None
    except IsADirectoryError:
        raise ConfigError("mapping path is a directory", field=origin) from None
    except OSError as err:
        raise ConfigError(f"cannot read mapping file ({err.strerror})", field=origin) from None
    if len(raw) > MAX_MAPPING_BYTES:
        raise ConfigError(f"mapping file larger than {MAX_MAPPING_BYTES} bytes", field=origin)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("mapping file is not UTF-8", field=origin) from None
    return mapping_from_toml(text, origin=origin)


def _looks_like_preset(text: str) -> bool:
    return "/" not in text and "\\" not in text and not text.endswith(".toml")


def _load_preset(name: str) -> Mapping:
    resource = importlib.resources.files("party").joinpath("mappings", f"{name}.toml")
    return mapping_from_toml(resource.read_text(encoding="utf-8"), origin=f"{name}.toml (preset)")


def mapping_from_toml(text: str, *, origin: str = "mapping") -> Mapping:
    """Parse mapping TOML text; ``origin`` names it in every error."""
    data = loads_toml(text, field=origin)
    return parse_mapping(data, origin=origin)


def parse_mapping(data: AbcMapping[str, Any], *, origin: str = "mapping") -> Mapping:
    """Validate already-parsed TOML data and build a :class:`Mapping`."""
    p = _Parser(origin)
    p.keys(data, _TOP_KEYS, "")

    meta = p.table(data, "mapping", required=True)
    p.keys(meta, ("name", "version"), "mapping")
    name = p.string(meta, "name", "mapping", required=True) or ""
    version = p.integer(meta, "version", "mapping", default=1)
    if version < 1:
        raise p.error("mapping.version must be >= 1")

    source = p.table(data, "source")
    p.keys(source, ("format", "delimiter", "encoding"), "source")
    fmt = p.string(source, "format", "source") or "auto"
    if fmt not in FORMATS:
        raise p.error(f"source.format must be one of {', '.join(FORMATS)}")
    delimiter = p.string(source, "delimiter", "source") or ","
    if len(delimiter) != 1 or delimiter in '"\r\n':
        raise p.error("source.delimiter must be one character (not a quote or newline)")
    encoding = p.encoding(p.string(source, "encoding", "source") or "utf-8")

    dates = p.table(data, "dates")
    p.keys(dates, ("formats", "dayfirst", "timezone"), "dates")
    date_formats = p.date_formats(dates.get("formats", ["iso"]))
    dayfirst = p.boolean(dates, "dayfirst", "dates", default=False)
    tz_name = p.string(dates, "timezone", "dates") or "UTC"
    try:
        resolve_timezone(tz_name)
    except ConfigError:
        raise p.error(f"dates.timezone: unknown time zone {tz_name!r}") from None

    column_table = p.table(data, "columns", required=True)
    columns = p.columns({k: v for k, v in column_table.items() if k != "optional"})
    status_vocab = p.status(data.get("status"))

    scales = p.table(data, "scales")
    p.keys(scales, ("csat", "nps"), "scales")
    csat_scale = p.scale(scales, "csat", (1, 5))
    nps_scale = p.scale(scales, "nps", (0, 10))

    values = p.table(data, "values")
    p.keys(values, ("empty", "csat", "nps"), "values")
    empty_values = frozenset(
        _norm(v) for v in p.string_list(values.get("empty", []), "values.empty")
    )
    csat_labels = p.labels(values.get("csat", {}), "values.csat", csat_scale)
    nps_labels = p.labels(values.get("nps", {}), "values.nps", nps_scale)

    extras = p.extras(p.table(data, "extras"))
    operators = p.operators(p.table(data, "anonymize"), extras)
    optional = p.optional(column_table.get("optional", []), columns, extras)

    return Mapping(
        name=name,
        version=version,
        format=fmt,
        delimiter=delimiter,
        encoding=encoding,
        date_formats=date_formats,
        dayfirst=dayfirst,
        timezone=tz_name,
        columns=columns,
        status_vocab=status_vocab,
        csat_scale=csat_scale,
        nps_scale=nps_scale,
        extras=extras,
        operators=operators,
        empty_values=empty_values,
        optional=optional,
        csat_labels=csat_labels,
        nps_labels=nps_labels,
        origin=origin,
    )


def _norm(value: str) -> str:
    """How vocabulary values are compared: stripped and case-folded."""
    return value.strip().casefold()


def normalize_value(value: str) -> str:
    """Public form of the vocabulary key normalization (strip + casefold)."""
    return _norm(value)


class _Parser:
    """Validation helpers that raise ConfigError naming ``origin`` and the dotted key."""

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def error(self, message: str) -> ConfigError:
        return ConfigError(message, field=self.origin)

    def keys(self, table: AbcMapping[str, Any], allowed: tuple[str, ...], prefix: str) -> None:
        for key in table:
            if key not in allowed:
                raise self.error(f"unknown key {_dotted(prefix, key)}")

    def table(
        self, data: AbcMapping[str, Any], key: str, *, required: bool = False
    ) -> dict[str, Any]:
        value = data.get(key)
        if value is None:
            if required:
                raise self.error(f"missing [{key}] table")
            return {}
        if not isinstance(value, dict):
            raise self.error(f"{key} must be a table")
        return value

    def string(
        self, table: AbcMapping[str, Any], key: str, prefix: str, *, required: bool = False
    ) -> str | None:
        value = table.get(key)
        dotted = _dotted(prefix, key)
        if value is None:
            if required:
                raise self.error(f"missing key {dotted}")
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.error(f"{dotted} must be a non-empty string")
        return value

    def integer(self, table: AbcMapping[str, Any], key: str, prefix: str, *, default: int) -> int:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(f"{_dotted(prefix, key)} must be an integer")
        return value

    def boolean(self, table: AbcMapping[str, Any], key: str, prefix: str, *, default: bool) -> bool:
        value = table.get(key, default)
        if not isinstance(value, bool):
            raise self.error(f"{_dotted(prefix, key)} must be true or false")
        return value

    def string_list(self, value: object, dotted: str) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(f"{dotted} must be an array of strings")
        return list(value)

    def encoding(self, name: str) -> str:
        try:
            info = codecs.lookup(name)
        except LookupError:
            raise self.error(f"source.encoding: unknown encoding {name!r}") from None
        # Rows are split on b"\n" before decoding, so the encoding must keep ASCII as is.
        probe = 'ticket_id,"x";\r\n'
        try:
            ascii_safe = probe.encode(info.name) == probe.encode("ascii")
        except (UnicodeError, LookupError):
            ascii_safe = False
        if not ascii_safe or info.name.startswith(("utf-16", "utf-32")):
            raise self.error(f"source.encoding: {name!r} is not ASCII-compatible (use utf-8)")
        return info.name

    def date_formats(self, value: object) -> tuple[str, ...]:
        formats = self.string_list(value, "dates.formats")
        if not formats:
            raise self.error("dates.formats must not be empty")
        sample = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)
        for i, fmt in enumerate(formats):
            if fmt in DATE_KEYWORDS:
                continue
            if "%" not in fmt:
                raise self.error(
                    f"dates.formats[{i}] must be 'iso', 'auto' or a strptime pattern with %"
                )
            try:
                datetime.strptime(sample.strftime(fmt), fmt)
            except ValueError as err:
                raise self.error(f"dates.formats[{i}]: invalid strptime pattern ({err})") from None
        return tuple(formats)

    def columns(self, table: AbcMapping[str, Any]) -> dict[str, ColumnSpec]:
        columns: dict[str, ColumnSpec] = {}
        for key, value in table.items():
            dotted = f"columns.{key}"
            if key not in CANONICAL_FIELDS:
                raise self.error(f"unknown key {dotted} (not a canonical ticket field)")
            if isinstance(value, str):
                column, unit = value, None
            elif isinstance(value, dict):
                self.keys(value, ("column", "unit"), dotted)
                column = self.string(value, "column", dotted, required=True) or ""
                unit = self.string(value, "unit", dotted)
            else:
                raise self.error(
                    f"{dotted} must be a column name or {{ column = ..., unit = ... }}"
                )
            if not column.strip():
                raise self.error(f"{dotted} must name a non-empty column")
            if key in DURATION_FIELDS:
                unit = unit or "hours"
                if unit not in DURATION_UNITS:
                    raise self.error(f"{dotted}.unit must be one of {', '.join(DURATION_UNITS)}")
            elif unit is not None:
                raise self.error(f"{dotted}.unit is only allowed for duration fields")
            columns[key] = ColumnSpec(column=column.strip(), unit=unit)
        for required in REQUIRED_FIELDS:
            if required not in columns:
                raise self.error(f"missing key columns.{required} (required field)")
        return columns

    def optional(
        self, value: object, columns: dict[str, ColumnSpec], extras: dict[str, str]
    ) -> frozenset[str]:
        names = self.string_list(value, "columns.optional")
        seen: set[str] = set()
        for i, name in enumerate(names):
            dotted = f"columns.optional[{i}]"
            if name in REQUIRED_FIELDS:
                raise self.error(f"{dotted}: {name} is a required field and cannot be optional")
            if name not in columns and name not in extras:
                raise self.error(f"{dotted}: {name!r} is not a field in [columns] or [extras]")
            if name in seen:
                raise self.error(f"{dotted}: {name} is listed twice")
            seen.add(name)
        return frozenset(seen)

    def status(self, value: object) -> dict[str, Status]:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise self.error("status must be a table")
        self.keys(value, tuple(s.value for s in Status), "status")
        vocab: dict[str, Status] = {}
        for key, words in value.items():
            status = Status(key)
            for word in self.string_list(words, f"status.{key}"):
                norm = _norm(word)
                if not norm:
                    raise self.error(f"status.{key} contains an empty value")
                other = vocab.get(norm)
                if other is not None and other is not status:
                    raise self.error(
                        f"status value {word.strip()!r} is listed under both "
                        f"{other.value} and {status.value}"
                    )
                vocab[norm] = status
        for status in Status:  # the canonical names are always understood
            vocab.setdefault(status.value, status)
        return vocab

    def scale(
        self, table: AbcMapping[str, Any], key: str, default: tuple[int, int]
    ) -> tuple[int, int]:
        value = table.get(key)
        if value is None:
            return default
        ok = (
            isinstance(value, list)
            and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        )
        if not ok:
            raise self.error(f"scales.{key} must be [low, high] integers")
        low, high = int(value[0]), int(value[1])
        if not (-_SCALE_LIMIT <= low < high <= _SCALE_LIMIT):
            raise self.error(f"scales.{key} must have low < high within +-{_SCALE_LIMIT}")
        return (low, high)

    def labels(self, value: object, dotted: str, scale: tuple[int, int]) -> dict[str, int]:
        if not isinstance(value, dict):
            raise self.error(f"{dotted} must be a table of label = score")
        labels: dict[str, int] = {}
        for label, score in value.items():
            if isinstance(score, bool) or not isinstance(score, int):
                raise self.error(f"{dotted}.{label} must be an integer score")
            if not scale[0] <= score <= scale[1]:
                raise self.error(f"{dotted}.{label} is outside the scale {scale[0]}..{scale[1]}")
            norm = _norm(label)
            if not norm:
                raise self.error(f"{dotted} has an empty label")
            labels[norm] = score
        return labels

    def extras(self, table: AbcMapping[str, Any]) -> dict[str, str]:
        extras: dict[str, str] = {}
        for key, value in table.items():
            dotted = f"extras.{key}"
            if key in CANONICAL_FIELDS or key in ("line", "extras"):
                raise self.error(f"{dotted}: name collides with a canonical ticket field")
            if not _EXTRA_NAME.match(key):
                raise self.error(f"{dotted}: name must be letters, digits and _ (max 64)")
            if not isinstance(value, str) or not value.strip():
                raise self.error(f"{dotted} must name a non-empty source column")
            extras[key] = value.strip()
        return extras

    def operators(self, table: AbcMapping[str, Any], extras: dict[str, str]) -> dict[str, str]:
        operators: dict[str, str] = {}
        for key, value in table.items():
            dotted = f"anonymize.{key}"
            is_extra = key in extras
            if key not in CANONICAL_FIELDS and not is_extra:
                raise self.error(
                    f"unknown key {dotted} (not a canonical field or an [extras] name)"
                )
            if not isinstance(value, str) or value not in OPERATORS:
                raise self.error(f"{dotted} must be one of {', '.join(sorted(OPERATORS))}")
            if value in _TIMESTAMP_OPERATORS and not (is_extra or key in TIMESTAMP_FIELDS):
                raise self.error(f"{dotted}: {value} applies only to timestamps or extras")
            if value in _EXTRAS_ONLY_OPERATORS and not is_extra:
                raise self.error(f"{dotted}: {value} applies only to [extras] columns")
            operators[key] = value
        return operators


def _dotted(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key
