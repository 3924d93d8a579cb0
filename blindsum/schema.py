"""Campaign schema: the contract between parties and the aggregator (README, Metrics files).

A schema is parsed strictly from TOML (unknown keys are rejected with the key path),
serializes canonically, and its SHA-256 is the *schema id* bound into every round,
signature and receipt.

Vector layout (derived deterministically): region-major ``region x metric x slot``,
then one contributor indicator per region at the end::

    APAC/tickets, APAC/replied, APAC/csat[1,2), ..., EMEA/tickets, ...,
    APAC/__contributor__, EMEA/__contributor__, ...

Values live in the ring Z_2^64 (``numpy.uint64``); signed values (DP noise) decode as
two's complement.
"""

from __future__ import annotations

import csv
import enum
import hashlib
import importlib.resources
import io
import json
import math
import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from functools import cached_property
from pathlib import Path
from typing import Any, cast

import numpy as np

from blindsum.config import loads_toml, toml_string
from blindsum.errors import BlindsumError, ConfigError, InvalidArgument
from blindsum.types import U64Vector

__all__ = [
    "CONTRIBUTORS_KEY",
    "CONTRIBUTOR_SLOT",
    "MAX_METRICS_FILE_BYTES",
    "MAX_SCHEMA_BYTES",
    "MAX_VECTOR_LENGTH",
    "Metric",
    "MetricKind",
    "RegionValues",
    "Schema",
    "SmallCells",
    "load_metrics_file",
]

#: Slot label of the per-region contributor indicator.
CONTRIBUTOR_SLOT = "__contributor__"
#: Key under which :meth:`Schema.decode` reports each region's contributor count.
CONTRIBUTORS_KEY = "__contributors__"

#: Largest schema text accepted by :meth:`Schema.from_toml`.
MAX_SCHEMA_BYTES = 1 << 20
#: Largest metrics file accepted by :func:`load_metrics_file`.
MAX_METRICS_FILE_BYTES = 16 << 20
#: Upper bound of the vector length a schema may define.
MAX_VECTOR_LENGTH = 1 << 20

_MAX_REGIONS = 1024
_MAX_METRICS = 1024
_MAX_EDGES = 4097
_MAX_ABS_BOUND = 10**15  # edges / clip bounds: integral floats stay exact
_MAX_SCALE = 10**9
_MAX_CAMPAIGN_INT = (1 << 63) - 1
_MAX_DP_WEIGHT = 1e6

_CAMPAIGN_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_METRIC_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_]{0,63}")
_REGION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_UNIT_RE = re.compile(r"[^\x00-\x1f\x7f]{0,32}")
_SAFE_KEY_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_INT_RE = re.compile(r"[+-]?[0-9]{1,20}")
_DECIMAL_RE = re.compile(r"[+-]?([0-9]{1,20}\.[0-9]{0,20}|\.[0-9]{1,20})([eE][+-]?[0-9]{1,3})?")

_U64 = 1 << 64
_I64_MIN = -(1 << 63)

#: Party input for one round: region -> metric -> count (int), sum total in the metric's
#: unit (float or int; encode multiplies by ``scale`` and rounds), or histogram bins.
RegionValues = dict[str, dict[str, int | float | list[int]]]


class SmallCells(enum.Enum):
    """Cell rule for a histogram bin with fewer than ``min_cell`` (released) tickets."""

    #: Merge the bin into its neighbour until the merged bin reaches ``min_cell``.
    MERGE = "merge"
    #: Withhold the bin, and the next-smallest bin of the same histogram with it, so that
    #: the withheld value cannot be recovered as total minus the released bins.
    SUPPRESS = "suppress"


class MetricKind(enum.Enum):
    """How a metric occupies slots of the vector."""

    COUNT = "count"
    SUM = "sum"
    HISTOGRAM = "histogram"


def _num_text(value: float) -> str:
    """Canonical text of a finite number: integral values without a fraction."""
    if value == int(value):
        return str(int(value))
    return repr(float(value))


def _num_canon(value: float) -> int | float:
    """Canonical JSON/TOML value of a finite number (integral -> int, -0.0 -> 0)."""
    if value == int(value):
        return int(value)
    return float(value)


def _safe_key(key: object) -> str:
    """Render an untrusted key for an error message on one line."""
    if isinstance(key, str) and _SAFE_KEY_RE.fullmatch(key):
        return key
    text = repr(key)
    return text[:66] + "..." if len(text) > 69 else text


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def _as_int(value: object) -> int:
    """``int(value)``; precondition: :func:`_is_int` holds."""
    return int(cast(numbers.Integral, value))


def _as_float(value: object) -> float:
    """``float(value)``; precondition: :func:`_is_number` holds."""
    return float(cast(numbers.Real, value))


def _detail(exc: BlindsumError) -> str:
    """The message of ``exc`` without its ``"field: "`` prefix."""
    text = str(exc)
    prefix = f"{exc.field}: " if exc.field else ""
    return text[len(prefix) :] if prefix and text.startswith(prefix) else text


@dataclass(frozen=True)
class Metric:
    """One metric of a campaign.

    ``edges`` (histograms) are strictly increasing; bins are ``[e_i, e_{i+1})`` and the
    last edge is the clipping bound. ``clip`` and ``scale`` (sums): each ticket's value is
    clipped into ``clip`` and multiplied by ``scale`` (fixed point).
    """

    name: str
    kind: MetricKind
    edges: tuple[float, ...] = ()
    clip: tuple[float, float] | None = None
    scale: int = 1
    optional: bool = False
    unit: str = ""
    #: Histograms: what the release does with a bin below the campaign's ``min_cell``.
    small_cells: SmallCells = SmallCells.MERGE
    #: Share of a round's zCDP rho spent on this metric, relative to the other metrics.
    dp_weight: float = 1.0

    def __post_init__(self) -> None:
        self._validate("metric")
        # Normalize numbers so that equal schemas compare and hash equal.
        object.__setattr__(self, "edges", tuple(_as_float(e) for e in self.edges))
        if self.clip is not None:
            object.__setattr__(self, "clip", (_as_float(self.clip[0]), _as_float(self.clip[1])))
        object.__setattr__(self, "scale", _as_int(self.scale))
        object.__setattr__(self, "dp_weight", _as_float(self.dp_weight))

    def _validate(self, where: str) -> None:
        if not isinstance(self.name, str) or not _METRIC_NAME_RE.fullmatch(self.name):
            raise ConfigError(
                "metric name must match [a-z0-9][a-z0-9_]* (at most 64 chars)",
                field=f"{where}.name",
            )
        if not isinstance(self.kind, MetricKind):
            raise ConfigError("kind must be a MetricKind", field=f"{where}.kind")
        if not isinstance(self.optional, bool):
            raise ConfigError("optional must be a boolean", field=f"{where}.optional")
        if not isinstance(self.unit, str) or not _UNIT_RE.fullmatch(self.unit):
            raise ConfigError("unit must be at most 32 printable characters", field=f"{where}.unit")
        if not _is_int(self.scale) or not 1 <= self.scale <= _MAX_SCALE:
            raise ConfigError(
                f"scale must be an integer in [1, {_MAX_SCALE}]", field=f"{where}.scale"
            )
        if self.kind is MetricKind.HISTOGRAM:
            _check_edges(self.edges, f"{where}.edges")
        elif self.edges:
            raise ConfigError(
                f"edges is only allowed for histograms, not {self.kind.value}",
                field=f"{where}.edges",
            )
        if self.kind is MetricKind.SUM:
            if self.clip is None:
                raise ConfigError("a sum needs clip = [lo, hi]", field=f"{where}.clip")
            _check_clip(self.clip, f"{where}.clip")
        elif self.clip is not None:
            raise ConfigError(
                f"clip is only allowed for sums, not {self.kind.value}",
                field=f"{where}.clip",
            )
        if not isinstance(self.small_cells, SmallCells):
            raise ConfigError("small_cells must be merge or suppress", field=f"{where}.small_cells")
        if self.kind is not MetricKind.HISTOGRAM and self.small_cells is not SmallCells.MERGE:
            raise ConfigError(
                f"small_cells is only allowed for histograms, not {self.kind.value}",
                field=f"{where}.small_cells",
            )
        if (
            not _is_number(self.dp_weight)
            or not math.isfinite(float(self.dp_weight))
            or not 0 < float(self.dp_weight) <= _MAX_DP_WEIGHT
        ):
            raise ConfigError(
                f"dp_weight must be a number in (0, {_MAX_DP_WEIGHT}]", field=f"{where}.dp_weight"
            )
        if self.kind is not MetricKind.SUM and self.scale != 1:
            raise ConfigError(
                f"scale is only allowed for sums, not {self.kind.value}",
                field=f"{where}.scale",
            )

    @property
    def slots(self) -> int:
        """Number of vector slots per region: 1, or ``len(edges) - 1`` for histograms."""
        if self.kind is MetricKind.HISTOGRAM:
            return len(self.edges) - 1
        return 1

    @cached_property
    def slot_labels(self) -> tuple[str, ...]:
        """Labels of this metric's slots, e.g. ``("tickets",)`` or ``("csat[1,2)", ...)``.

        Cached: the release asks for one bin's label per cell, which is quadratic in the
        bins if the tuple is rebuilt each time (about 17 s for a 4095-bin histogram)."""
        if self.kind is not MetricKind.HISTOGRAM:
            return (self.name,)
        return tuple(
            f"{self.name}[{_num_text(lo)},{_num_text(hi)})"
            for lo, hi in zip(self.edges[:-1], self.edges[1:], strict=True)
        )

    @property
    def sum_bound(self) -> int:
        """``ceil(clip_hi * scale)``: largest fixed-point value of one ticket (sums only)."""
        if self.clip is None:
            raise InvalidArgument("not a sum metric", field=self.name)
        return math.ceil(Decimal(repr(float(self.clip[1]))) * self.scale)

    def max_per_party(self, campaign: Schema) -> int:
        """Per-party, per-region bound of each slot of this metric.

        count/bin: ``max_tickets_per_region``; sum: ``max_tickets_per_region * ceil(hi*scale)``.
        """
        if self.kind is MetricKind.SUM:
            return campaign.max_tickets_per_region * self.sum_bound
        return campaign.max_tickets_per_region

    def to_dict(self) -> dict[str, Any]:
        """Canonical plain-data form (only the keys that apply to this kind)."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind.value}
        if self.kind is MetricKind.HISTOGRAM:
            out["edges"] = [_num_canon(e) for e in self.edges]
        if self.kind is MetricKind.SUM and self.clip is not None:
            out["clip"] = [_num_canon(self.clip[0]), _num_canon(self.clip[1])]
            out["scale"] = self.scale
        if self.kind is MetricKind.HISTOGRAM:
            out["small_cells"] = self.small_cells.value
        out["dp_weight"] = _num_canon(self.dp_weight)
        out["optional"] = self.optional
        out["unit"] = self.unit
        return out

    @property
    def abs_bound(self) -> int:
        """Largest fixed-point magnitude one ticket adds to a slot of this metric:
        ``ceil(max(|lo|, |hi|) * scale)`` for sums, 1 for counts and histogram bins."""
        if self.kind is not MetricKind.SUM or self.clip is None:
            return 1
        worst = max(abs(self.clip[0]), abs(self.clip[1]))
        return math.ceil(Decimal(repr(float(worst))) * self.scale)


def _check_bound_number(value: object, where: str) -> float:
    if not _is_number(value):
        raise ConfigError("must be a number", field=where)
    number = _as_float(value)
    if not math.isfinite(number) or abs(number) > _MAX_ABS_BOUND:
        raise ConfigError(f"must be finite with |x| <= {_MAX_ABS_BOUND}", field=where)
    return number


def _check_edges(edges: object, where: str) -> None:
    if not isinstance(edges, tuple):
        raise ConfigError("edges must be a tuple of numbers", field=where)
    if not 2 <= len(edges) <= _MAX_EDGES:
        raise ConfigError(f"need between 2 and {_MAX_EDGES} edges", field=where)
    previous: float | None = None
    for i, edge in enumerate(edges):
        number = _check_bound_number(edge, f"{where}[{i}]")
        if previous is not None and not number > previous:
            raise ConfigError("edges must be strictly increasing", field=f"{where}[{i}]")
        previous = number


def _check_clip(clip: object, where: str) -> None:
    if not isinstance(clip, tuple) or len(clip) != 2:
        raise ConfigError("clip must be [lo, hi]", field=where)
    lo = _check_bound_number(clip[0], f"{where}[0]")
    hi = _check_bound_number(clip[1], f"{where}[1]")
    if lo < 0:
        raise ConfigError("clip lower bound must be >= 0 (sums are unsigned)", field=where)
    if not lo < hi:
        raise ConfigError("clip needs lo < hi", field=where)


_CAMPAIGN_KEYS = (
    "name",
    "version",
    "max_parties",
    "max_tickets_per_region",
    "per_customer_cap",
    "regions",
)
#: Campaign keys with a default (release rules); always written in canonical form.
_CAMPAIGN_OPTIONAL = {"min_cell": 0, "max_parties_per_customer": 1}
_METRIC_KEYS = {
    "name",
    "kind",
    "edges",
    "clip",
    "scale",
    "optional",
    "unit",
    "small_cells",
    "dp_weight",
}


@dataclass(frozen=True)
class Schema:
    """A validated campaign schema. Construct with :meth:`from_toml`, :meth:`load` or
    :meth:`default`; the constructor validates too."""

    name: str
    version: int
    regions: tuple[str, ...]
    metrics: tuple[Metric, ...]
    max_parties: int
    max_tickets_per_region: int
    per_customer_cap: int
    #: Release rule: histogram bins with fewer released tickets are merged or suppressed
    #: (each metric's ``small_cells``). 0 disables the cell rule.
    min_cell: int = 0
    #: How many parties one customer can appear at in a round (DP sensitivity multiplier).
    max_parties_per_customer: int = 1
    # Derived layout, computed once in __post_init__.
    _offsets: Mapping[str, int] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _CAMPAIGN_NAME_RE.fullmatch(self.name):
            raise ConfigError(
                "campaign name must match [a-z0-9][a-z0-9_.-]* (at most 64 chars)",
                field="campaign.name",
            )
        for key in ("version", "max_parties", "max_tickets_per_region", "per_customer_cap"):
            value = getattr(self, key)
            if not _is_int(value) or not 1 <= value <= _MAX_CAMPAIGN_INT:
                raise ConfigError("must be an integer in [1, 2**63 - 1]", field=f"campaign.{key}")
        if not _is_int(self.min_cell) or not 0 <= self.min_cell <= _MAX_CAMPAIGN_INT:
            raise ConfigError("must be an integer in [0, 2**63 - 1]", field="campaign.min_cell")
        if (
            not _is_int(self.max_parties_per_customer)
            or not 1 <= self.max_parties_per_customer <= self.max_parties
        ):
            raise ConfigError(
                "must be an integer in [1, max_parties]", field="campaign.max_parties_per_customer"
            )
        if not isinstance(self.regions, tuple) or not 1 <= len(self.regions) <= _MAX_REGIONS:
            raise ConfigError(
                f"need between 1 and {_MAX_REGIONS} regions", field="campaign.regions"
            )
        seen: set[str] = set()
        for i, region in enumerate(self.regions):
            if not isinstance(region, str) or not _REGION_RE.fullmatch(region):
                raise ConfigError(
                    "region must match [A-Za-z0-9][A-Za-z0-9_-]* (at most 64 chars)",
                    field=f"campaign.regions[{i}]",
                )
            if region in seen:
                raise ConfigError(f"duplicate region {region}", field=f"campaign.regions[{i}]")
            seen.add(region)
        if not isinstance(self.metrics, tuple) or not 1 <= len(self.metrics) <= _MAX_METRICS:
            raise ConfigError(f"need between 1 and {_MAX_METRICS} metrics", field="metrics")
        offsets: dict[str, int] = {}
        offset = 0
        for i, metric in enumerate(self.metrics):
            if not isinstance(metric, Metric):
                raise ConfigError("not a Metric", field=f"metrics[{i}]")
            if metric.name in offsets:
                raise ConfigError(f"duplicate metric {metric.name}", field=f"metrics[{i}].name")
            offsets[metric.name] = offset
            offset += metric.slots
        length = offset * len(self.regions) + len(self.regions)
        if length > MAX_VECTOR_LENGTH:
            raise ConfigError(
                f"vector length {length} exceeds {MAX_VECTOR_LENGTH}", field="metrics"
            )
        object.__setattr__(self, "_offsets", offsets)

    # ----------------------------------------------------------------- parsing

    @classmethod
    def from_toml(cls, text: str) -> Schema:
        """Parse and validate schema TOML. Raises ConfigError naming the key path."""
        if not isinstance(text, str):
            raise ConfigError("schema text must be str", field="schema")
        if len(text.encode("utf-8", "surrogatepass")) > MAX_SCHEMA_BYTES:
            raise ConfigError(f"schema larger than {MAX_SCHEMA_BYTES} bytes", field="schema")
        data = loads_toml(text, field="schema")
        try:
            return cls._from_data(data)
        except RecursionError:
            raise ConfigError("schema nested too deep", field="schema") from None

    @classmethod
    def load(cls, path: str | Path) -> Schema:
        """Read a schema TOML file (size-checked before reading)."""
        p = Path(path)
        try:
            size = p.stat().st_size
            if size > MAX_SCHEMA_BYTES:
                raise ConfigError(f"schema larger than {MAX_SCHEMA_BYTES} bytes", field=str(p))
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read schema: {exc.strerror}", field=str(p)) from None
        except UnicodeDecodeError:
            raise ConfigError("schema is not valid UTF-8", field=str(p)) from None
        try:
            return cls.from_toml(text)
        except ConfigError as exc:
            raise ConfigError(exc.message, field=str(p)) from None

    @classmethod
    def default(cls) -> Schema:
        """The shipped default schema (``blindsum/schemas/default.toml``)."""
        resource = importlib.resources.files("blindsum").joinpath("schemas/default.toml")
        return cls.from_toml(resource.read_text(encoding="utf-8"))

    @classmethod
    def _from_data(cls, data: Mapping[str, Any]) -> Schema:
        _reject_unknown(data, {"campaign", "metrics"}, "")
        campaign = data.get("campaign")
        if not isinstance(campaign, dict):
            raise ConfigError("missing [campaign] table", field="campaign")
        _reject_unknown(campaign, set(_CAMPAIGN_KEYS) | set(_CAMPAIGN_OPTIONAL), "campaign.")
        for key in _CAMPAIGN_KEYS:
            if key not in campaign:
                raise ConfigError("missing key", field=f"campaign.{key}")
        name = campaign["name"]
        if not isinstance(name, str):
            raise ConfigError("must be a string", field="campaign.name")
        ints: dict[str, int] = {}
        for key in ("version", "max_parties", "max_tickets_per_region", "per_customer_cap"):
            value = campaign[key]
            if not _is_int(value):
                raise ConfigError("must be an integer", field=f"campaign.{key}")
            ints[key] = int(value)
        for key, default in _CAMPAIGN_OPTIONAL.items():
            value = campaign.get(key, default)
            if not _is_int(value):
                raise ConfigError("must be an integer", field=f"campaign.{key}")
            ints[key] = int(value)
        regions = campaign["regions"]
        if not isinstance(regions, list):
            raise ConfigError("must be an array of strings", field="campaign.regions")
        raw_metrics = data.get("metrics")
        if not isinstance(raw_metrics, list):
            raise ConfigError("missing [[metrics]] array of tables", field="metrics")
        metrics = tuple(_metric_from_data(m, f"metrics[{i}]") for i, m in enumerate(raw_metrics))
        return cls(
            name=name,
            version=ints["version"],
            regions=tuple(regions),
            metrics=metrics,
            max_parties=ints["max_parties"],
            max_tickets_per_region=ints["max_tickets_per_region"],
            per_customer_cap=ints["per_customer_cap"],
            min_cell=ints["min_cell"],
            max_parties_per_customer=ints["max_parties_per_customer"],
        )

    # ---------------------------------------------------------- serialization

    def to_dict(self) -> dict[str, Any]:
        """Canonical plain-data form used by :meth:`canonical_json` and :meth:`to_toml`."""
        return {
            "campaign": {
                "name": self.name,
                "version": self.version,
                "max_parties": self.max_parties,
                "max_tickets_per_region": self.max_tickets_per_region,
                "per_customer_cap": self.per_customer_cap,
                "min_cell": self.min_cell,
                "max_parties_per_customer": self.max_parties_per_customer,
                "regions": list(self.regions),
            },
            "metrics": [m.to_dict() for m in self.metrics],
        }

    def canonical_json(self) -> bytes:
        """Canonical JSON: sorted keys, no whitespace, integral numbers without a fraction,
        other floats in shortest round-trip form, UTF-8."""
        return json.dumps(
            self.to_dict(),
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        ).encode("utf-8")

    def to_toml(self) -> str:
        """Canonical TOML text; ``Schema.from_toml(s.to_toml()) == s``."""

        def value(v: object) -> str:
            if isinstance(v, bool):
                return "true" if v else "false"
            if isinstance(v, str):
                return toml_string(v)
            if isinstance(v, int):
                return str(v)
            if isinstance(v, float):
                return repr(v)
            if isinstance(v, list):
                return "[" + ", ".join(value(x) for x in v) + "]"
            raise TypeError(f"cannot render {type(v).__name__}")  # pragma: no cover

        data = self.to_dict()
        lines = ["[campaign]"]
        lines += [f"{k} = {value(v)}" for k, v in data["campaign"].items()]
        for metric in data["metrics"]:
            lines += ["", "[[metrics]]"]
            lines += [f"{k} = {value(v)}" for k, v in metric.items()]
        return "\n".join(lines) + "\n"

    @cached_property
    def schema_id(self) -> str:
        """SHA-256 (hex) of :meth:`canonical_json`."""
        return hashlib.sha256(self.canonical_json()).hexdigest()

    # ----------------------------------------------------------------- layout

    @property
    def _region_stride(self) -> int:
        return sum(m.slots for m in self.metrics)

    @property
    def vector_length(self) -> int:
        """Total number of slots: regions * metric slots + one contributor per region."""
        return len(self.regions) * (self._region_stride + 1)

    @cached_property
    def slot_names(self) -> tuple[str, ...]:
        """Slot names in layout order, e.g. ``"APAC/csat[4,5)"``, ``"APAC/__contributor__"``."""
        names = [
            f"{region}/{label}"
            for region in self.regions
            for metric in self.metrics
            for label in metric.slot_labels
        ]
        names += [f"{region}/{CONTRIBUTOR_SLOT}" for region in self.regions]
        return tuple(names)

    def metric(self, name: str) -> Metric:
        """The metric called ``name``; InvalidArgument if unknown."""
        for m in self.metrics:
            if m.name == name:
                return m
        raise InvalidArgument("unknown metric", field=_safe_key(name))

    def _region_pos(self, region: str) -> int:
        try:
            return self.regions.index(region)
        except ValueError:
            raise InvalidArgument("unknown region", field=_safe_key(region)) from None

    def slot_index(self, region: str, metric: str, bin: int | None = None) -> int:
        """Index of a slot. ``bin`` (0-based) is required for histograms, else must be None."""
        r = self._region_pos(region)
        m = self.metric(metric)
        where = f"{region}.{metric}"
        if m.kind is MetricKind.HISTOGRAM:
            if bin is None or not _is_int(bin) or not 0 <= bin < m.slots:
                raise InvalidArgument(f"bin must be an integer in [0, {m.slots})", field=where)
            sub = _as_int(bin)
        else:
            if bin is not None:
                raise InvalidArgument("bin is only valid for histograms", field=where)
            sub = 0
        return r * self._region_stride + self._offsets[m.name] + sub

    def contributor_index(self, region: str) -> int:
        """Index of the contributor indicator slot of ``region``."""
        return len(self.regions) * self._region_stride + self._region_pos(region)

    def max_per_party_vector(self) -> list[int]:
        """Per-slot bound of one party's vector (contributor slots: 1)."""
        per_region: list[int] = []
        for m in self.metrics:
            per_region += [m.max_per_party(self)] * m.slots
        return per_region * len(self.regions) + [1] * len(self.regions)

    def check_overflow(
        self,
        parties: int,
        modulus_bits: int = 64,
        *,
        signed_headroom_bits: int = 1,
        noise_bound: int = 0,
    ) -> None:
        """Raise InvalidArgument(field="schema") unless every slot satisfies
        ``max_per_party * parties + noise_bound < 2**(modulus_bits - signed_headroom_bits)``."""
        _check_parties(parties, noise_bound)
        if not _is_int(modulus_bits) or not _is_int(signed_headroom_bits):
            raise InvalidArgument("must be integers", field="modulus_bits")
        if not 0 <= signed_headroom_bits < modulus_bits:
            raise InvalidArgument(
                "need 0 <= signed_headroom_bits < modulus_bits", field="signed_headroom_bits"
            )
        bits = modulus_bits - signed_headroom_bits
        self._check_limit(parties, noise_bound, lambda total: total < (1 << bits), f"2**{bits}")

    def check_overflow_mod(self, parties: int, modulus: int, noise_bound: int = 0) -> None:
        """Raise InvalidArgument(field="schema") unless every slot's worst-case sum stays in
        ``(-modulus/2, modulus/2)`` (BFV decrypts centred), with ``noise_bound`` of signed noise."""
        _check_parties(parties, noise_bound)
        if not _is_int(modulus) or modulus < 3:
            raise InvalidArgument("modulus must be an integer >= 3", field="modulus")
        self._check_limit(parties, noise_bound, lambda total: 2 * total < modulus, "modulus/2")

    def _check_limit(
        self, parties: int, noise_bound: int, ok: Callable[[int], bool], bound_text: str
    ) -> None:
        bounds = self.max_per_party_vector()
        worst = max(bounds)
        total = worst * parties + noise_bound
        if not ok(total):
            index = bounds.index(worst)
            raise InvalidArgument(
                f"slot {self.slot_names[index]} may reach {total} with {parties} parties "
                f"(noise bound {noise_bound}), which does not fit below {bound_text}",
                field="schema",
            )

    # ----------------------------------------------------------- encode/decode

    def encode(self, values: Mapping[str, Mapping[str, float | int | Sequence[int]]]) -> U64Vector:
        """Encode one party's per-region values into its uint64 vector.

        Preconditions: counts and histogram bins are non-negative integers, sums are
        non-negative totals in the metric's unit (multiplied by ``scale`` and rounded half
        up), each at most the per-party bound. A region absent from ``values`` encodes zeros
        with contributor 0; a present region sets contributor 1 and must give every
        non-optional metric. Errors are InvalidArgument naming ``"REGION.metric"``.
        """
        if not isinstance(values, Mapping):
            raise InvalidArgument("values must be a mapping of region -> metrics", field="values")
        out = np.zeros(self.vector_length, dtype=np.uint64)
        known = set(self.regions)
        for region in values:
            if region not in known:
                raise InvalidArgument("unknown region", field=_safe_key(region))
        stride = self._region_stride
        for r, region in enumerate(self.regions):
            if region not in values:
                continue
            metrics = values[region]
            if not isinstance(metrics, Mapping):
                raise InvalidArgument("must be a mapping of metric -> value", field=region)
            for name in metrics:
                if name not in self._offsets:
                    raise InvalidArgument("unknown metric", field=f"{region}.{_safe_key(name)}")
            for m in self.metrics:
                where = f"{region}.{m.name}"
                if m.name not in metrics:
                    if m.optional:
                        continue
                    raise InvalidArgument("missing required metric", field=where)
                base = r * stride + self._offsets[m.name]
                slots = self._encode_metric(m, metrics[m.name], where)
                out[base : base + len(slots)] = np.array(slots, dtype=np.uint64)
            out[self.contributor_index(region)] = 1
        return out

    def _encode_metric(self, m: Metric, value: object, where: str) -> list[int]:
        bound = m.max_per_party(self)
        if m.kind is MetricKind.COUNT:
            return [_check_count(value, bound, where)]
        if m.kind is MetricKind.SUM:
            if not _is_number(value):
                raise InvalidArgument("sum must be a number", field=where)
            number = _as_float(value)
            if not math.isfinite(number):
                raise InvalidArgument("sum must be finite", field=where)
            exact = Decimal(_as_int(value)) if _is_int(value) else Decimal(repr(number))
            fixed = int((exact * m.scale).to_integral_value(rounding=ROUND_HALF_UP))
            if fixed < 0:
                raise InvalidArgument("sum must be non-negative", field=where)
            if fixed > bound:
                raise InvalidArgument(f"sum exceeds the per-party bound {bound}", field=where)
            return [fixed]
        if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
            raise InvalidArgument(f"histogram must be a list of {m.slots} integers", field=where)
        if len(value) != m.slots:
            raise InvalidArgument(f"expected {m.slots} bins, got {len(value)}", field=where)
        bins = [_check_count(v, bound, f"{where}[{i}]") for i, v in enumerate(value)]
        if sum(bins) > bound:
            # Each ticket is in at most one bin: the release refuses more (plausible.py).
            raise InvalidArgument(
                f"bins add up to {sum(bins)}, more than the per-party bound {bound}", field=where
            )
        return bins

    def _check_vector(self, vector: object) -> U64Vector:
        if not isinstance(vector, np.ndarray) or vector.dtype != np.uint64 or vector.ndim != 1:
            raise InvalidArgument("must be a 1-D numpy uint64 array", field="vector")
        if vector.shape[0] != self.vector_length:
            raise InvalidArgument(
                f"length {vector.shape[0]} != schema vector length {self.vector_length}",
                field="vector",
            )
        return vector

    def decode_slots(self, vector: U64Vector) -> list[int]:
        """Signed (two's complement) integer per slot."""
        return [int(v) for v in self._check_vector(vector).view(np.int64)]

    def decode(
        self, vector: U64Vector, *, signed: bool = True
    ) -> dict[str, dict[str, float | int | list[int]]]:
        """Decode an (aggregate) vector to region -> metric -> value.

        Counts are ints, histograms lists of ints, sums floats (fixed point / scale). Each
        region also carries its contributor count under :data:`CONTRIBUTORS_KEY`
        (``"__contributors__"``). ``signed`` interprets slots as two's complement.
        """
        vec = self._check_vector(vector)
        raw = [int(v) for v in (vec.view(np.int64) if signed else vec)]
        stride = self._region_stride
        out: dict[str, dict[str, float | int | list[int]]] = {}
        for r, region in enumerate(self.regions):
            entry: dict[str, float | int | list[int]] = {}
            for m in self.metrics:
                base = r * stride + self._offsets[m.name]
                if m.kind is MetricKind.HISTOGRAM:
                    entry[m.name] = raw[base : base + m.slots]
                elif m.kind is MetricKind.SUM:
                    entry[m.name] = raw[base] / m.scale
                else:
                    entry[m.name] = raw[base]
            entry[CONTRIBUTORS_KEY] = raw[self.contributor_index(region)]
            out[region] = entry
        return out


def _check_parties(parties: object, noise_bound: object) -> None:
    if not _is_int(parties) or _as_int(parties) < 1:
        raise InvalidArgument("must be an integer >= 1", field="parties")
    if not _is_int(noise_bound) or _as_int(noise_bound) < 0:
        raise InvalidArgument("must be an integer >= 0", field="noise_bound")


def _check_count(value: object, bound: int, where: str) -> int:
    if not _is_int(value):
        raise InvalidArgument("must be an integer", field=where)
    number = _as_int(value)
    if number < 0:
        raise InvalidArgument("must be non-negative", field=where)
    if number > bound:
        raise InvalidArgument(f"exceeds the per-party bound {bound}", field=where)
    return number


def _reject_unknown(table: Mapping[str, Any], allowed: set[str], prefix: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError("unknown key", field=f"{prefix}{_safe_key(key)}")


def _metric_from_data(data: object, where: str) -> Metric:
    if not isinstance(data, dict):
        raise ConfigError("must be a table", field=where)
    _reject_unknown(data, _METRIC_KEYS, f"{where}.")
    for key in ("name", "kind"):
        if key not in data:
            raise ConfigError("missing key", field=f"{where}.{key}")
    if not isinstance(data["name"], str):
        raise ConfigError("must be a string", field=f"{where}.name")
    try:
        kind = MetricKind(data["kind"])
    except ValueError:
        raise ConfigError(
            "kind must be one of count, sum, histogram", field=f"{where}.kind"
        ) from None
    edges: tuple[float, ...] = ()
    if "edges" in data:
        raw_edges = data["edges"]
        if not isinstance(raw_edges, list):
            raise ConfigError("must be an array of numbers", field=f"{where}.edges")
        edges = tuple(
            _check_bound_number(e, f"{where}.edges[{i}]") for i, e in enumerate(raw_edges)
        )
    clip: tuple[float, float] | None = None
    if "clip" in data:
        raw_clip = data["clip"]
        if not isinstance(raw_clip, list) or len(raw_clip) != 2:
            raise ConfigError("must be [lo, hi]", field=f"{where}.clip")
        clip = (
            _check_bound_number(raw_clip[0], f"{where}.clip[0]"),
            _check_bound_number(raw_clip[1], f"{where}.clip[1]"),
        )
    scale = data.get("scale", 1)
    if not _is_int(scale):
        raise ConfigError("must be an integer", field=f"{where}.scale")
    optional = data.get("optional", False)
    if not isinstance(optional, bool):
        raise ConfigError("must be a boolean", field=f"{where}.optional")
    unit = data.get("unit", "")
    if not isinstance(unit, str):
        raise ConfigError("must be a string", field=f"{where}.unit")
    try:
        small_cells = SmallCells(data.get("small_cells", "merge"))
    except (ValueError, TypeError):
        raise ConfigError("must be merge or suppress", field=f"{where}.small_cells") from None
    dp_weight = data.get("dp_weight", 1.0)
    if not _is_number(dp_weight):
        raise ConfigError("must be a number", field=f"{where}.dp_weight")
    try:
        return Metric(
            name=data["name"],
            kind=kind,
            edges=edges,
            clip=clip,
            scale=_as_int(scale),
            optional=optional,
            unit=unit,
            small_cells=small_cells,
            dp_weight=_as_float(dp_weight),
        )
    except ConfigError as exc:
        # Re-anchor the error at the TOML key path, e.g. "metrics[3].edges".
        field_name = exc.field or "metric"
        suffix = field_name[len("metric") :] if field_name.startswith("metric") else ""
        raise ConfigError(_detail(exc), field=f"{where}{suffix}") from None


# ------------------------------------------------------------- metrics files


def load_metrics_file(path: Path, schema: Schema) -> U64Vector:
    """Load one party's metrics file and encode it with ``schema``.

    ``*.json``: ``{"APAC": {"tickets": 120, "csat": [1, 2, 3, 10, 20], ...}, ...}``.
    ``*.csv``: header ``region,metric,bin,value``; ``bin`` empty for scalar metrics and the
    0-based bin index for histograms (every bin of a given histogram must be listed);
    sums may be decimal numbers. Errors are InvalidArgument on one line naming the file,
    the CSV line, and the field.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_METRICS_FILE_BYTES:
            raise InvalidArgument(f"file larger than {MAX_METRICS_FILE_BYTES} bytes", field=str(p))
        text = p.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise InvalidArgument(f"cannot read metrics file: {exc.strerror}", field=str(p)) from None
    except UnicodeDecodeError:
        raise InvalidArgument("metrics file is not valid UTF-8", field=str(p)) from None
    suffix = p.suffix.lower()
    if suffix == ".json":
        values = _parse_metrics_json(text, p)
    elif suffix == ".csv":
        values = _parse_metrics_csv(text, p, schema)
    else:
        raise InvalidArgument("metrics file must end in .json or .csv", field=str(p))
    try:
        return schema.encode(values)
    except InvalidArgument as exc:
        raise InvalidArgument(_detail(exc), field=f"{p}: {exc.field or 'values'}") from None


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed")


def _parse_metrics_json(text: str, p: Path) -> Mapping[str, Mapping[str, Any]]:
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except (json.JSONDecodeError, ValueError, RecursionError) as exc:
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else "invalid number constant"
        line = exc.lineno if isinstance(exc, json.JSONDecodeError) else 0
        field_name = f"{p}:{line}" if line else str(p)
        raise InvalidArgument(f"invalid JSON: {msg}", field=field_name) from None
    if not isinstance(data, dict):
        raise InvalidArgument("top level must be an object of regions", field=str(p))
    for region, metrics in data.items():
        if not isinstance(metrics, dict):
            raise InvalidArgument(
                "must be an object of metric -> value", field=f"{p}: {_safe_key(region)}"
            )
    return data


def _parse_metrics_csv(text: str, p: Path, schema: Schema) -> RegionValues:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    values: RegionValues = {}
    bins: dict[tuple[str, str], dict[int, int]] = {}
    scalar_seen: set[tuple[str, str]] = set()
    header_done = False
    try:
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            cells = [c.strip() for c in row]
            if not header_done:
                if cells != ["region", "metric", "bin", "value"]:
                    raise InvalidArgument(
                        "header must be region,metric,bin,value", field=f"{p}:{line}"
                    )
                header_done = True
                continue
            if len(cells) != 4:
                raise InvalidArgument(f"expected 4 columns, got {len(cells)}", field=f"{p}:{line}")
            region, name, bin_text, value_text = cells
            where = f"{p}:{line}: {_safe_key(region)}.{_safe_key(name)}"
            if region not in schema.regions:
                raise InvalidArgument("unknown region", field=f"{p}:{line}: {_safe_key(region)}")
            try:
                metric = schema.metric(name)
            except InvalidArgument:
                raise InvalidArgument("unknown metric", field=where) from None
            key = (region, name)
            if metric.kind is MetricKind.HISTOGRAM:
                if not bin_text:
                    raise InvalidArgument("histogram rows need a bin index", field=where)
                index = _parse_int(bin_text, f"{where}.bin")
                if not 0 <= index < metric.slots:
                    raise InvalidArgument(f"bin must be in [0, {metric.slots})", field=where)
                slot_map = bins.setdefault(key, {})
                if index in slot_map:
                    raise InvalidArgument(f"duplicate row for bin {index}", field=where)
                count = _parse_int(value_text, f"{where}[{index}]")
                slot_map[index] = _check_count(
                    count, metric.max_per_party(schema), f"{where}[{index}]"
                )
                continue
            if bin_text:
                raise InvalidArgument("bin must be empty for a scalar metric", field=where)
            if key in scalar_seen:
                raise InvalidArgument("duplicate row", field=where)
            scalar_seen.add(key)
            parsed: int | float
            if metric.kind is MetricKind.SUM:
                parsed = _parse_number(value_text, where)
            else:
                parsed = _parse_int(value_text, where)
            schema._encode_metric(metric, parsed, where)  # range check now, naming the line
            values.setdefault(region, {})[name] = parsed
    except csv.Error as exc:
        raise InvalidArgument(f"invalid CSV: {exc}", field=f"{p}:{reader.line_num}") from None
    if not header_done:
        raise InvalidArgument("empty file: header region,metric,bin,value expected", field=str(p))
    for (region, name), slot_map in bins.items():
        metric = schema.metric(name)
        missing = [i for i in range(metric.slots) if i not in slot_map]
        if missing:
            shown = ", ".join(str(i) for i in missing[:10]) + (", ..." if len(missing) > 10 else "")
            raise InvalidArgument(f"missing bins {shown}", field=f"{p}: {region}.{name}")
        values.setdefault(region, {})[name] = [slot_map[i] for i in range(metric.slots)]
    return values


def _parse_int(text: str, where: str) -> int:
    if not _INT_RE.fullmatch(text):
        raise InvalidArgument("must be an integer", field=where)
    return int(text)


def _parse_number(text: str, where: str) -> int | float:
    if _INT_RE.fullmatch(text):
        return int(text)
    if not re.fullmatch(
        r"[+-]?([0-9]{1,20}\.[0-9]{0,20}|\.[0-9]{1,20})([eE][+-]?[0-9]{1,3})?", text
    ):
        raise InvalidArgument("must be a decimal number", field=where)
    number = float(text)
    if not math.isfinite(number):
        raise InvalidArgument("must be finite", field=where)
    return number
