"""Campaign schema: parsing, canonical form, layout, encode/decode, overflow, loaders."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from blindsum.errors import ConfigError, InvalidArgument
from blindsum.schema import (
    CONTRIBUTORS_KEY,
    Metric,
    MetricKind,
    Schema,
    load_metrics_file,
)

SMALL = """
[campaign]
name = "t"
version = 1
max_parties = 10
max_tickets_per_region = 100
per_customer_cap = 2
regions = ["A", "B"]

[[metrics]]
name = "n"
kind = "count"

[[metrics]]
name = "h"
kind = "histogram"
edges = [0, 0.5, 2]

[[metrics]]
name = "s"
kind = "sum"
clip = [0, 7.5]
scale = 10

[[metrics]]
name = "o"
kind = "count"
optional = true
"""


@pytest.fixture(scope="module")
def default() -> Schema:
    return Schema.default()


@pytest.fixture(scope="module")
def small() -> Schema:
    return Schema.from_toml(SMALL)


def full_values() -> dict[str, dict[str, float | int | list[int]]]:
    return {
        "APAC": {
            "tickets": 120,
            "replied": 100,
            "csat": [1, 2, 3, 10, 20],
            "csat_sum": 144.0,
            "nps": [0, 0, 5],
            "escalated": 3,
            "resolved": 110,
            "first_response_hours": [1, 2, 3, 4, 5, 6, 7],
            "resolution_hours": [0, 1, 2, 3, 4, 5, 6, 7],
            "resolution_hours_sum": 123.45,
        }
    }


# ------------------------------------------------------------------ default


def test_default_loads_with_expected_layout(default: Schema) -> None:
    assert default.name == "support-kpis"
    assert default.regions == ("APAC", "EMEA", "Americas")
    assert [m.name for m in default.metrics][:4] == ["tickets", "replied", "csat", "csat_sum"]
    csat = default.metric("csat")
    assert csat.kind is MetricKind.HISTOGRAM
    assert csat.slots == 5
    assert csat.slot_labels[3] == "csat[4,5)"
    assert default.metric("first_response_hours").slot_labels[0] == "first_response_hours[0,0.5)"
    assert default.metric("nps").optional
    # 29 metric slots per region (1+1+5+1+3+1+1+7+8+1), 3 regions, 3 contributor slots
    assert default.vector_length == 3 * 29 + 3
    assert len(default.slot_names) == default.vector_length
    assert default.slot_names[-3:] == (
        "APAC/__contributor__",
        "EMEA/__contributor__",
        "Americas/__contributor__",
    )
    assert default.slot_names[default.slot_index("EMEA", "csat", 3)] == "EMEA/csat[4,5)"
    assert default.slot_index("EMEA", "tickets") == 29
    assert default.contributor_index("Americas") == default.vector_length - 1
    assert default.metric("resolution_hours_sum").max_per_party(default) == 100000 * 7200
    bounds = default.max_per_party_vector()
    assert bounds[default.contributor_index("APAC")] == 1
    assert bounds[default.slot_index("APAC", "csat_sum")] == 100000 * 5


def test_slot_index_bad_arguments(default: Schema) -> None:
    with pytest.raises(InvalidArgument, match=r"APAC\.csat"):
        default.slot_index("APAC", "csat")
    with pytest.raises(InvalidArgument, match=r"APAC\.csat"):
        default.slot_index("APAC", "csat", 5)
    with pytest.raises(InvalidArgument, match=r"APAC\.tickets"):
        default.slot_index("APAC", "tickets", 0)
    with pytest.raises(InvalidArgument, match="Mars"):
        default.slot_index("Mars", "tickets")
    with pytest.raises(InvalidArgument, match="nope"):
        default.slot_index("APAC", "nope")
    with pytest.raises(InvalidArgument, match="Mars"):
        default.contributor_index("Mars")


def test_load_from_file(tmp_path: Path, small: Schema) -> None:
    path = tmp_path / "s.toml"
    path.write_text(SMALL)
    assert Schema.load(path) == small
    path.write_text(SMALL.replace('kind = "count"\n\n[[metrics]]\nname = "h"', 'kind = "cnt"'))
    with pytest.raises(ConfigError, match=r"s\.toml"):
        Schema.load(path)
    with pytest.raises(ConfigError, match="missing"):
        Schema.load(tmp_path / "missing.toml")


# ------------------------------------------------------------ canonical / id


def test_schema_id_stable_and_canonical(default: Schema, small: Schema) -> None:
    assert default.schema_id == Schema.default().schema_id
    assert len(default.schema_id) == 64
    assert Schema.from_toml(default.to_toml()) == default
    assert Schema.from_toml(default.to_toml()).schema_id == default.schema_id
    # formatting, comments and key order do not change the id
    reordered = SMALL.replace('name = "n"\nkind = "count"', 'kind = "count"   # c\nname = "n"')
    assert Schema.from_toml(reordered).schema_id == small.schema_id
    # an integral float edge is the same number as the int
    assert (
        Schema.from_toml(SMALL.replace("[0, 0.5, 2]", "[0.0, 0.5, 2.0]")).schema_id
        == small.schema_id
    )
    blob = small.canonical_json()
    assert b" " not in blob
    assert json.loads(blob)["metrics"][1]["edges"] == [0, 0.5, 2]
    assert blob == json.dumps(json.loads(blob), sort_keys=True, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    "change",
    [
        lambda s: dataclasses.replace(s, name="t2"),
        lambda s: dataclasses.replace(s, version=2),
        lambda s: dataclasses.replace(s, max_parties=11),
        lambda s: dataclasses.replace(s, max_tickets_per_region=101),
        lambda s: dataclasses.replace(s, per_customer_cap=3),
        lambda s: dataclasses.replace(s, regions=("B", "A")),
        lambda s: dataclasses.replace(s, metrics=s.metrics[::-1]),
        lambda s: dataclasses.replace(
            s, metrics=(dataclasses.replace(s.metrics[0], unit="x"), *s.metrics[1:])
        ),
        lambda s: dataclasses.replace(
            s, metrics=(dataclasses.replace(s.metrics[0], optional=True), *s.metrics[1:])
        ),
        lambda s: dataclasses.replace(
            s,
            metrics=(
                s.metrics[0],
                dataclasses.replace(s.metrics[1], edges=(0, 0.25, 2)),
                *s.metrics[2:],
            ),
        ),
        lambda s: dataclasses.replace(
            s, metrics=(*s.metrics[:2], dataclasses.replace(s.metrics[2], scale=100), s.metrics[3])
        ),
        lambda s: dataclasses.replace(
            s,
            metrics=(*s.metrics[:2], dataclasses.replace(s.metrics[2], clip=(0, 8)), s.metrics[3]),
        ),
    ],
)
def test_schema_id_changes_with_any_change(
    small: Schema, change: Callable[[Schema], Schema]
) -> None:
    changed = change(small)
    assert changed != small
    assert changed.schema_id != small.schema_id
    assert Schema.from_toml(changed.to_toml()) == changed


# ------------------------------------------------------------- bad schemas


def _replace(old: str, new: str) -> str:
    assert old in SMALL
    return SMALL.replace(old, new, 1)


N = 'name = "n"\nkind = "count"'
MT = "max_tickets_per_region"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (_replace('kind = "histogram"', 'kind = "histogram"\negdes = [1]'), "metrics[1].egdes"),
        (_replace("per_customer_cap = 2", "per_customer_cap = 2\nextra = 1"), "campaign.extra"),
        (SMALL + "\n[other]\nx = 1\n", "other"),
        (_replace('regions = ["A", "B"]', 'regions = ["A", "A"]'), "campaign.regions[1]"),
        (_replace('regions = ["A", "B"]', 'regions = ["A", "B/C"]'), "campaign.regions[1]"),
        (_replace('regions = ["A", "B"]', "regions = []"), "campaign.regions"),
        (_replace('regions = ["A", "B"]', "regions = [1]"), "campaign.regions[0]"),
        (_replace('name = "h"', 'name = "n"'), "metrics[1].name"),
        (_replace('name = "h"', 'name = "Bad-Name"'), "metrics[1].name"),
        (_replace('name = "h"', 'name = "__contributor__"'), "metrics[1].name"),
        (_replace("[0, 0.5, 2]", "[0, 2, 0.5]"), "metrics[1].edges[2]"),
        (_replace("[0, 0.5, 2]", "[0, 0, 2]"), "metrics[1].edges[1]"),
        (_replace("[0, 0.5, 2]", "[0]"), "metrics[1].edges"),
        (_replace("[0, 0.5, 2]", '[0, "1"]'), "metrics[1].edges[1]"),
        (_replace("[0, 0.5, 2]", "[0, inf]"), "metrics[1].edges[1]"),
        (_replace("[0, 0.5, 2]", "[0, nan]"), "metrics[1].edges[1]"),
        (_replace("edges = [0, 0.5, 2]\n", ""), "metrics[1].edges"),
        (_replace("clip = [0, 7.5]", "clip = [5, 1]"), "metrics[2].clip"),
        (_replace("clip = [0, 7.5]", "clip = [-1, 1]"), "metrics[2].clip"),
        (_replace("clip = [0, 7.5]", "clip = [0]"), "metrics[2].clip"),
        (_replace("clip = [0, 7.5]\n", ""), "metrics[2].clip"),
        (_replace("scale = 10", "scale = 0"), "metrics[2].scale"),
        (_replace("scale = 10", "scale = 1.5"), "metrics[2].scale"),
        (
            _replace('name = "n"\nkind = "count"', 'name = "n"\nkind = "count"\nscale = 2'),
            "metrics[0].scale",
        ),
        (
            _replace('name = "n"\nkind = "count"', 'name = "n"\nkind = "count"\nclip = [0, 1]'),
            "metrics[0].clip",
        ),
        (
            _replace('name = "n"\nkind = "count"', 'name = "n"\nkind = "count"\nedges = [0, 1]'),
            "metrics[0].edges",
        ),
        (_replace('name = "n"\nkind = "count"', 'name = "n"\nkind = "gauge"'), "metrics[0].kind"),
        (_replace('name = "n"\nkind = "count"', 'kind = "count"'), "metrics[0].name"),
        (_replace("optional = true", 'optional = "yes"'), "metrics[3].optional"),
        (_replace('name = "t"', 'name = "T T"'), "campaign.name"),
        (_replace("version = 1", "version = 0"), "campaign.version"),
        (_replace("max_parties = 10", "max_parties = -1"), "campaign.max_parties"),
        (_replace("max_parties = 10", "max_parties = true"), "campaign.max_parties"),
        (_replace("max_parties = 10\n", ""), "campaign.max_parties"),
        (
            _replace("max_tickets_per_region = 100", "max_tickets_per_region = 1.0"),
            "campaign.max_tickets_per_region",
        ),
        ("[campaign\n", "schema"),
        ('[campaign]\nname = "t"\n', "campaign.version"),
        ("x = 1", "x"),
    ],
)
def test_bad_schema_names_the_field(text: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        Schema.from_toml(text)
    assert info.value.field == field
    assert "\n" not in str(info.value)


def test_metric_constructor_validates() -> None:
    with pytest.raises(ConfigError, match="edges"):
        Metric("h", MetricKind.HISTOGRAM, edges=(1.0,))
    with pytest.raises(ConfigError, match="clip"):
        Metric("s", MetricKind.SUM)
    m = Metric("h", MetricKind.HISTOGRAM, edges=(1, 2))
    assert m.edges == (1.0, 2.0)
    assert isinstance(m.edges[0], float)


# ------------------------------------------------------------- encode/decode


def test_encode_decode_round_trip(default: Schema) -> None:
    values = full_values()
    vec = default.encode(values)
    assert vec.dtype == np.uint64
    assert vec.shape == (default.vector_length,)
    assert vec[default.slot_index("APAC", "csat", 4)] == 20
    assert vec[default.slot_index("APAC", "resolution_hours_sum")] == 1235  # 123.45 * 10, half up
    assert vec[default.contributor_index("APAC")] == 1
    assert vec[default.contributor_index("EMEA")] == 0
    assert not vec[default.slot_index("EMEA", "tickets")]
    out = default.decode(vec)
    apac = out["APAC"]
    assert apac["tickets"] == 120
    assert apac["csat"] == [1, 2, 3, 10, 20]
    assert apac["csat_sum"] == 144.0
    assert apac["resolution_hours_sum"] == pytest.approx(123.5)
    assert apac[CONTRIBUTORS_KEY] == 1
    assert out["EMEA"][CONTRIBUTORS_KEY] == 0
    assert out["EMEA"]["csat"] == [0] * 5


def test_optional_metric_may_be_missing(default: Schema) -> None:
    values = full_values()
    del values["APAC"]["nps"]
    vec = default.encode(values)
    assert not vec[default.slot_index("APAC", "nps", 2)]


def test_decode_signed_two_complement(small: Schema) -> None:
    a = small.encode({"A": {"n": 5, "h": [1, 2], "s": 1.5}})
    noise = np.zeros(small.vector_length, dtype=np.uint64)
    noise[small.slot_index("A", "n")] = np.uint64(2**64 - 7)  # -7
    noise[small.slot_index("B", "s")] = np.uint64(2**64 - 25)  # -2.5 at scale 10
    total = a + noise  # wraps in Z_2^64
    out = small.decode(total)
    assert out["A"]["n"] == -2
    assert out["B"]["s"] == -2.5
    assert small.decode_slots(total)[small.slot_index("A", "n")] == -2
    unsigned = small.decode(total, signed=False)
    assert unsigned["A"]["n"] == 2**64 - 2


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"Mars": {}}, "Mars"),
        ({"A": {"n": 1, "h": [0, 0], "s": 0, "x": 1}}, "A.x"),
        ({"A": {"h": [0, 0], "s": 0}}, "A.n"),
        ({"A": {"n": -1, "h": [0, 0], "s": 0}}, "A.n"),
        ({"A": {"n": 101, "h": [0, 0], "s": 0}}, "A.n"),
        ({"A": {"n": 1.0, "h": [0, 0], "s": 0}}, "A.n"),
        ({"A": {"n": True, "h": [0, 0], "s": 0}}, "A.n"),
        ({"A": {"n": 1, "h": [0, 0, 0], "s": 0}}, "A.h"),
        ({"A": {"n": 1, "h": 3, "s": 0}}, "A.h"),
        ({"A": {"n": 1, "h": [0, -1], "s": 0}}, "A.h[1]"),
        ({"A": {"n": 1, "h": [0, 101], "s": 0}}, "A.h[1]"),
        ({"A": {"n": 1, "h": [0, 0], "s": -0.1}}, "A.s"),
        ({"A": {"n": 1, "h": [0, 0], "s": 750.1}}, "A.s"),
        ({"A": {"n": 1, "h": [0, 0], "s": float("nan")}}, "A.s"),
        ({"A": {"n": 1, "h": [0, 0], "s": "1"}}, "A.s"),
        ({"A": [1]}, "A"),
    ],
)
def test_encode_errors_name_the_field(small: Schema, values: object, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        small.encode(values)  # type: ignore[arg-type]  # deliberately bad input
    assert info.value.field == field


def test_encode_bounds_are_inclusive(small: Schema) -> None:
    vec = small.encode({"B": {"n": 100, "h": [60, 40], "s": 750}})
    assert vec[small.slot_index("B", "s")] == 7500
    assert small.max_per_party_vector()[small.slot_index("B", "s")] == 7500
    # A histogram counts each ticket once: its bins add up to at most the bound.
    with pytest.raises(InvalidArgument, match="bins add up to 101") as info:
        small.encode({"B": {"n": 100, "h": [100, 1], "s": 750}})
    assert info.value.field == "B.h"


def test_decode_rejects_bad_vectors(small: Schema) -> None:
    with pytest.raises(InvalidArgument, match="vector"):
        small.decode(np.zeros(small.vector_length + 1, dtype=np.uint64))
    with pytest.raises(InvalidArgument, match="vector"):
        small.decode(np.zeros(small.vector_length, dtype=np.int64))  # wrong dtype on purpose


# ----------------------------------------------------------------- overflow


def test_overflow_checks(default: Schema, small: Schema) -> None:
    default.check_overflow(default.max_parties, noise_bound=2**40)
    huge = dataclasses.replace(default, max_parties=2**50)
    with pytest.raises(InvalidArgument) as info:
        huge.check_overflow(huge.max_parties)
    assert info.value.field == "schema"
    assert "resolution_hours_sum" in str(info.value)
    # exact boundary: 7500 * parties + noise < 2**15
    small.check_overflow(4, modulus_bits=16, noise_bound=2767)
    with pytest.raises(InvalidArgument):
        small.check_overflow(4, modulus_bits=16, noise_bound=2768)
    with pytest.raises(InvalidArgument, match="parties"):
        small.check_overflow(0)
    with pytest.raises(InvalidArgument, match="noise_bound"):
        small.check_overflow(1, noise_bound=-1)


def test_overflow_mod(small: Schema) -> None:
    p = 1099511922689
    small.check_overflow_mod(10, p)
    # centred range: 2 * (7500 * parties + noise) < p
    small.check_overflow_mod(1, 15001)
    with pytest.raises(InvalidArgument) as info:
        small.check_overflow_mod(1, 15000)
    assert info.value.field == "schema"
    with pytest.raises(InvalidArgument, match="modulus"):
        small.check_overflow_mod(1, 1)


# ------------------------------------------------------------ metrics files


def test_load_metrics_json(tmp_path: Path, default: Schema) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps(full_values()))
    vec = load_metrics_file(path, default)
    assert np.array_equal(vec, default.encode(full_values()))


def test_load_metrics_csv(tmp_path: Path, small: Schema) -> None:
    path = tmp_path / "m.csv"
    path.write_text("region,metric,bin,value\nA,n,,3\nA,h,1,4\nA,h,0,2\n\nA,s,,1.25\n")
    vec = load_metrics_file(path, small)
    assert np.array_equal(vec, small.encode({"A": {"n": 3, "h": [2, 4], "s": 1.25}}))


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ("region,metric,value\n", "m.csv:1"),
        ("region,metric,bin,value\nA,n,,3\nA,h,0,2\nA,s,,1\n", "m.csv: A.h"),  # bin 1 missing
        ("region,metric,bin,value\nA,n,,x\n", "m.csv:2: A.n"),
        ("region,metric,bin,value\nA,n,,3\nA,n,,3\n", "m.csv:3: A.n"),
        ("region,metric,bin,value\nA,n,0,3\n", "m.csv:2: A.n"),
        ("region,metric,bin,value\nA,h,,3\n", "m.csv:2: A.h"),
        ("region,metric,bin,value\nA,h,2,3\n", "m.csv:2: A.h"),
        ("region,metric,bin,value\nA,h,0,-3\n", "m.csv:2: A.h[0]"),
        ("region,metric,bin,value\nA,s,,nan\n", "m.csv:2: A.s"),
        ("region,metric,bin,value\nA,s,,1e9\n", "m.csv:2: A.s"),
        ("region,metric,bin,value\nZ,n,,1\n", "m.csv:2: Z"),
        ("region,metric,bin,value\nA,zz,,1\n", "m.csv:2: A.zz"),
        ("region,metric,bin,value\nA,n,,1,9\n", "m.csv:2"),
        ("region,metric,bin,value\nA,n,,1\n", "m.csv: A.h"),  # required metric missing
        ("", "m.csv"),
    ],
)
def test_metrics_csv_errors_name_file_line_field(
    tmp_path: Path, small: Schema, body: str, where: str
) -> None:
    path = tmp_path / "m.csv"
    path.write_text(body)
    with pytest.raises(InvalidArgument) as info:
        load_metrics_file(path, small)
    assert info.value.field is not None
    assert info.value.field.endswith(where), info.value.field
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ("[1, 2]", "m.json"),
        ("{", "m.json:1"),
        ('{"A": {"n": NaN}}', "m.json"),
        ('{"A": 3}', "m.json: A"),
        ('{"A": {"n": 1, "h": [1], "s": 1}}', "m.json: A.h"),
        ('{"A": {"n": 1, "h": [1, 2], "s": 1, "q": 1}}', "m.json: A.q"),
    ],
)
def test_metrics_json_errors(tmp_path: Path, small: Schema, body: str, where: str) -> None:
    path = tmp_path / "m.json"
    path.write_text(body)
    with pytest.raises(InvalidArgument) as info:
        load_metrics_file(path, small)
    assert info.value.field is not None
    assert info.value.field.endswith(where), info.value.field


def test_metrics_file_other_errors(tmp_path: Path, small: Schema) -> None:
    with pytest.raises(InvalidArgument, match=r"\.json or \.csv"):
        (tmp_path / "m.txt").write_text("x")
        load_metrics_file(tmp_path / "m.txt", small)
    with pytest.raises(InvalidArgument, match="cannot read"):
        load_metrics_file(tmp_path / "none.json", small)
    bad = tmp_path / "b.json"
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(InvalidArgument, match="UTF-8"):
        load_metrics_file(bad, small)
