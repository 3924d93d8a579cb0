"""The released report as a JSON document ("blindsum.report/v1").

One format serves every consumer: the aggregator stores it, report readers fetch it
over gRPC (inside ``Report.document``), ``report show --format json`` prints it, and
``docs/report.schema.json`` documents it. The decoder is strict: it checks the size
before parsing, rejects unknown or missing keys and wrong types, and names the JSON
path of the first problem, so a corrupt stored release or a tampered response gives a
clear error instead of a half-built report.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from blindsum.errors import InvalidArgument
from blindsum.model import (
    Cell,
    CellStatus,
    DpMode,
    DpRelease,
    Flag,
    FlagKind,
    Lineage,
    MetricNoise,
    Mode,
    RegionResult,
    Report,
    Severity,
    Slo,
    SloKind,
    Statistic,
    TrendPoint,
)

FORMAT = "blindsum.report/v1"
#: Largest document accepted by :func:`decode` (a default-schema report is ~30 KB).
MAX_REPORT_BYTES = 4 << 20

_E = TypeVar("_E")


# -- encode ---------------------------------------------------------------------


def to_doc(report: Report) -> dict[str, Any]:
    """The report as plain JSON data (the documented schema)."""
    dp = report.dp
    lineage = report.lineage
    return {
        "format": FORMAT,
        "round_id": report.round_id,
        "schema_id": report.schema_id,
        "mode": report.mode.value,
        "released_unix_ms": report.released_ms,
        "min_contributors": report.min_contributors,
        "included_parties": list(report.included_parties),
        "dp": {
            "mode": dp.mode.value,
            "rho": dp.rho,
            "epsilon": dp.epsilon,
            "delta": dp.delta,
            "rho_vs_aggregator": dp.rho_vs_aggregator,
            "campaign": dp.campaign,
            "window": dp.window,
            "budget_rho": dp.budget_rho,
            "spent_rho": dp.spent_rho,
            "remaining_rho": dp.remaining_rho,
            "expected_parties": dp.expected_parties,
            "noisy_parties": dp.noisy_parties,
            "noise": [
                {"metric": n.metric, "l1": n.l1, "l2": n.l2, "sigma": n.sigma, "rho": n.rho}
                for n in dp.noise
            ],
        },
        "lineage": None
        if lineage is None
        else {
            "software_version": lineage.software_version,
            "anonymization_rules": lineage.anonymization_rules,
            "schema_name": lineage.schema_name,
            "schema_version": lineage.schema_version,
            "min_cell": lineage.min_cell,
            "confidence": lineage.confidence,
        },
        "slos": [
            {"statistic": s.statistic, "kind": s.kind.value, "threshold": s.threshold}
            for s in report.slos
        ],
        "regions": [_region_doc(r) for r in report.regions],
    }


def _region_doc(r: RegionResult) -> dict[str, Any]:
    return {
        "region": r.region,
        "suppressed": r.suppressed,
        "contributors": None if r.suppressed else r.contributors,
        "cells": [
            {
                "slot": c.slot,
                "metric": c.metric,
                "status": c.status.value,
                "value": c.value,
                "scale": c.scale,
                "display": c.display,
                "noise_sd": c.noise_sd,
                "lo": c.lo,
                "hi": c.hi,
            }
            for c in r.cells
        ],
        "stats": [
            {
                "name": s.name,
                "value": s.value,
                "low": s.low,
                "high": s.high,
                "unit": s.unit,
                "note": s.note,
            }
            for s in r.stats
        ],
        "flags": [
            {
                "kind": f.kind.value,
                "severity": f.severity.value,
                "statistic": f.statistic,
                "value": f.value,
                "threshold": f.threshold,
                "reason": f.reason,
            }
            for f in r.flags
        ],
        "trend": [
            {
                "round_id": t.round_id,
                "released_unix_ms": t.released_ms,
                "statistic": t.statistic,
                "value": t.value,
                "low": t.low,
                "high": t.high,
                "window": t.window,
            }
            for t in r.trend
        ],
    }


def encode(report: Report) -> bytes:
    """Canonical UTF-8 JSON (sorted keys, no NaN/Infinity)."""
    return json.dumps(
        to_doc(report), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


# -- decode ---------------------------------------------------------------------


def decode(data: bytes, *, field: str = "report") -> Report:
    """Parse and validate a document; InvalidArgument names the JSON path on any problem."""
    if not isinstance(data, bytes | bytearray):
        raise InvalidArgument("must be bytes", field=field)
    if len(data) > MAX_REPORT_BYTES:
        raise InvalidArgument(
            f"report is {len(data)} bytes, more than the {MAX_REPORT_BYTES} allowed", field=field
        )
    try:
        doc = json.loads(
            bytes(data).decode("utf-8"),
            parse_constant=_reject_constant,
            object_pairs_hook=_no_duplicate_keys,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidArgument(f"not valid JSON: {exc}", field=field) from None
    except RecursionError:
        raise InvalidArgument("JSON nested too deeply", field=field) from None
    return from_doc(doc, field=field)


def from_doc(doc: object, *, field: str = "report") -> Report:
    d = _obj(doc, _REPORT_KEYS, field)
    if d["format"] != FORMAT:
        raise InvalidArgument(f"format must be {FORMAT!r}", field=f"{field}.format")
    dp = _obj(d["dp"], _DP_KEYS, f"{field}.dp")
    lineage: Lineage | None = None
    if d["lineage"] is not None:
        lin = _obj(d["lineage"], _LINEAGE_KEYS, f"{field}.lineage")
        lineage = Lineage(
            software_version=_str(lin, "software_version", f"{field}.lineage"),
            anonymization_rules=_str(lin, "anonymization_rules", f"{field}.lineage"),
            schema_name=_str(lin, "schema_name", f"{field}.lineage"),
            schema_version=_count(lin, "schema_version", f"{field}.lineage"),
            min_cell=_count(lin, "min_cell", f"{field}.lineage"),
            confidence=_num(lin, "confidence", f"{field}.lineage"),
        )
    dp_field = f"{field}.dp"
    release = DpRelease(
        mode=_enum(DpMode, dp, "mode", dp_field),
        rho=_num(dp, "rho", dp_field, nonneg=True),
        epsilon=_num(dp, "epsilon", dp_field, nonneg=True),
        delta=_num(dp, "delta", dp_field, nonneg=True),
        rho_vs_aggregator=_opt_num(dp, "rho_vs_aggregator", dp_field),
        campaign=_str(dp, "campaign", dp_field),
        window=_str(dp, "window", dp_field),
        budget_rho=_num(dp, "budget_rho", dp_field, nonneg=True),
        spent_rho=_num(dp, "spent_rho", dp_field, nonneg=True),
        expected_parties=_count(dp, "expected_parties", dp_field),
        noisy_parties=_count(dp, "noisy_parties", dp_field),
        noise=tuple(
            _noise(n, f"{dp_field}.noise[{i}]") for i, n in enumerate(_list(dp, "noise", dp_field))
        ),
    )
    return Report(
        round_id=_str(d, "round_id", field),
        schema_id=_str(d, "schema_id", field),
        mode=_enum(Mode, d, "mode", field),
        regions=tuple(
            _region(r, f"{field}.regions[{i}]") for i, r in enumerate(_list(d, "regions", field))
        ),
        min_contributors=_count(d, "min_contributors", field),
        included_parties=tuple(
            _as_str(p, f"{field}.included_parties[{i}]")
            for i, p in enumerate(_list(d, "included_parties", field))
        ),
        released_ms=_released_ms(d, field),
        dp=release,
        lineage=lineage,
        slos=tuple(_slo(s, f"{field}.slos[{i}]") for i, s in enumerate(_list(d, "slos", field))),
    )


_REPORT_KEYS = frozenset(
    {
        "format",
        "round_id",
        "schema_id",
        "mode",
        "released_unix_ms",
        "min_contributors",
        "included_parties",
        "dp",
        "lineage",
        "slos",
        "regions",
    }
)
_DP_KEYS = frozenset(
    {
        "mode",
        "rho",
        "epsilon",
        "delta",
        "rho_vs_aggregator",
        "campaign",
        "window",
        "budget_rho",
        "spent_rho",
        "remaining_rho",
        "expected_parties",
        "noisy_parties",
        "noise",
    }
)
_LINEAGE_KEYS = frozenset(
    {
        "software_version",
        "anonymization_rules",
        "schema_name",
        "schema_version",
        "min_cell",
        "confidence",
    }
)
_REGION_DETAIL = ("cells", "stats", "flags", "trend")
#: Latest release time accepted (year 9999), so renderers can format every date.
_MAX_RELEASED_MS = 253_402_300_799_000
_REGION_KEYS = frozenset(
    {"region", "suppressed", "contributors", "cells", "stats", "flags", "trend"}
)
_CELL_KEYS = frozenset(
    {"slot", "metric", "status", "value", "scale", "display", "noise_sd", "lo", "hi"}
)
_STAT_KEYS = frozenset({"name", "value", "low", "high", "unit", "note"})
_FLAG_KEYS = frozenset({"kind", "severity", "statistic", "value", "threshold", "reason"})
_TREND_KEYS = frozenset(
    {"round_id", "released_unix_ms", "statistic", "value", "low", "high", "window"}
)
#: Trend keys a document may lack: reports stored before the key existed (read as null).
_TREND_ADDED = frozenset({"window"})
_NOISE_KEYS = frozenset({"metric", "l1", "l2", "sigma", "rho"})
_SLO_KEYS = frozenset({"statistic", "kind", "threshold"})


def _region(doc: object, field: str) -> RegionResult:
    d = _obj(doc, _REGION_KEYS, field)
    suppressed = d["suppressed"]
    if not isinstance(suppressed, bool):
        raise InvalidArgument("must be a boolean", field=f"{field}.suppressed")
    contributors = 0 if suppressed else _count(d, "contributors", field)
    if suppressed and (d["contributors"] is not None or any(d[k] for k in _REGION_DETAIL)):
        raise InvalidArgument(
            "a suppressed region carries no contributors, cells, stats, flags or trend",
            field=field,
        )
    return RegionResult(
        region=_str(d, "region", field),
        suppressed=suppressed,
        contributors=contributors,
        cells=tuple(
            _cell(c, f"{field}.cells[{i}]") for i, c in enumerate(_list(d, "cells", field))
        ),
        stats=tuple(
            _stat(s, f"{field}.stats[{i}]") for i, s in enumerate(_list(d, "stats", field))
        ),
        flags=tuple(
            _flag(f, f"{field}.flags[{i}]") for i, f in enumerate(_list(d, "flags", field))
        ),
        trend=tuple(
            _trend(t, f"{field}.trend[{i}]") for i, t in enumerate(_list(d, "trend", field))
        ),
    )


def _cell(doc: object, field: str) -> Cell:
    d = _obj(doc, _CELL_KEYS, field)
    status = _enum(CellStatus, d, "status", field)
    value = None if d["value"] is None else _int(d, "value", field)
    if (value is None) != (status is CellStatus.SUPPRESSED):
        raise InvalidArgument("value must be null exactly when suppressed", field=f"{field}.value")
    scale = _count(d, "scale", field)
    if scale < 1:
        raise InvalidArgument("must be at least 1", field=f"{field}.scale")
    lo, hi = _opt_num(d, "lo", field), _opt_num(d, "hi", field)
    if (lo is None) != (hi is None):
        raise InvalidArgument("a bin needs both lo and hi, or neither", field=f"{field}.hi")
    if lo is not None and hi is not None and not lo < hi:
        # A bin of no width cannot be drawn (nor come from a schema, whose edges rise).
        raise InvalidArgument("must be greater than lo", field=f"{field}.hi")
    return Cell(
        slot=_str(d, "slot", field),
        value=value,
        scale=scale,
        noise_sd=_num(d, "noise_sd", field, nonneg=True),
        status=status,
        metric=_str(d, "metric", field),
        lo=lo,
        hi=hi,
    )


def _stat(doc: object, field: str) -> Statistic:
    d = _obj(doc, _STAT_KEYS, field)
    return Statistic(
        name=_str(d, "name", field),
        value=_opt_num(d, "value", field),
        low=_opt_num(d, "low", field),
        high=_opt_num(d, "high", field),
        unit=_str(d, "unit", field),
        note=_str(d, "note", field),
    )


def _flag(doc: object, field: str) -> Flag:
    d = _obj(doc, _FLAG_KEYS, field)
    return Flag(
        kind=_enum(FlagKind, d, "kind", field),
        severity=_enum(Severity, d, "severity", field),
        statistic=_str(d, "statistic", field),
        value=_num(d, "value", field),
        threshold=_num(d, "threshold", field),
        reason=_str(d, "reason", field),
    )


def _trend(doc: object, field: str) -> TrendPoint:
    d = _obj(doc, _TREND_KEYS, field, optional=_TREND_ADDED)
    window = d.get("window")
    return TrendPoint(
        round_id=_str(d, "round_id", field),
        released_ms=_released_ms(d, field),
        statistic=_str(d, "statistic", field),
        value=_opt_num(d, "value", field),
        low=_opt_num(d, "low", field),
        high=_opt_num(d, "high", field),
        window=None if window is None else _str(d, "window", field),
    )


def _noise(doc: object, field: str) -> MetricNoise:
    d = _obj(doc, _NOISE_KEYS, field)
    return MetricNoise(
        metric=_str(d, "metric", field),
        l1=_count(d, "l1", field),
        l2=_count(d, "l2", field),
        sigma=_num(d, "sigma", field, nonneg=True),
        rho=_num(d, "rho", field, nonneg=True),
    )


def _slo(doc: object, field: str) -> Slo:
    d = _obj(doc, _SLO_KEYS, field)
    return Slo(
        statistic=_str(d, "statistic", field),
        kind=_enum(SloKind, d, "kind", field),
        threshold=_num(d, "threshold", field),
    )


# -- strict accessors --------------------------------------------------------------


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed")


def _released_ms(d: Mapping[str, Any], field: str) -> int:
    value = _count(d, "released_unix_ms", field)
    if value > _MAX_RELEASED_MS:
        raise InvalidArgument("must be before the year 10000", field=f"{field}.released_unix_ms")
    return value


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _obj(
    doc: object, keys: frozenset[str], field: str, *, optional: frozenset[str] = frozenset()
) -> Mapping[str, Any]:
    """``doc`` as an object with exactly ``keys`` (those in ``optional`` may be absent)."""
    if not isinstance(doc, dict):
        raise InvalidArgument("must be an object", field=field)
    missing = sorted(keys - optional - doc.keys())
    if missing:
        raise InvalidArgument(f"missing key {missing[0]!r}", field=field)
    unknown = sorted(doc.keys() - keys)
    if unknown:
        raise InvalidArgument(f"unknown key {unknown[0]!r}", field=field)
    return doc


def _as_str(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgument("must be a string", field=field)
    if any("\ud800" <= ch <= "\udfff" for ch in value):
        raise InvalidArgument("contains a lone surrogate", field=field)
    return value


def _str(d: Mapping[str, Any], key: str, field: str) -> str:
    return _as_str(d[key], f"{field}.{key}")


def _int(d: Mapping[str, Any], key: str, field: str, *, lo: int = -(1 << 63)) -> int:
    value = d[key]
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value < (1 << 63):
        raise InvalidArgument(
            f"must be an integer in [{lo}, 2**63)" if lo else "must be a non-negative integer",
            field=f"{field}.{key}",
        )
    return value


def _count(d: Mapping[str, Any], key: str, field: str) -> int:
    return _int(d, key, field, lo=0)


def _num(d: Mapping[str, Any], key: str, field: str, *, nonneg: bool = False) -> float:
    value = d[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument("must be a finite number", field=f"{field}.{key}")
    try:
        number = float(value)
    except OverflowError:
        raise InvalidArgument("must be a finite number", field=f"{field}.{key}") from None
    if not math.isfinite(number) or (nonneg and number < 0):
        raise InvalidArgument(
            "must be a finite number" + (" >= 0" if nonneg else ""), field=f"{field}.{key}"
        )
    return number


def _opt_num(d: Mapping[str, Any], key: str, field: str) -> float | None:
    return None if d[key] is None else _num(d, key, field)


def _list(d: Mapping[str, Any], key: str, field: str) -> list[Any]:
    value = d[key]
    if not isinstance(value, list):
        raise InvalidArgument("must be an array", field=f"{field}.{key}")
    return value


def _enum(kind: Callable[[Any], _E], d: Mapping[str, Any], key: str, field: str) -> _E:
    try:
        return kind(d[key])
    except ValueError:
        raise InvalidArgument(f"unknown value {d[key]!r}", field=f"{field}.{key}") from None
