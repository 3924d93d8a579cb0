"""Property tests: schema TOML round trip and encode/decode round trip."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from blindsum.schema import CONTRIBUTORS_KEY, Metric, MetricKind, Schema

_names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
_regions = st.from_regex(r"[A-Z][A-Za-z0-9_-]{0,6}", fullmatch=True)
_bound = st.one_of(
    st.integers(-1000, 1000).map(float),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=64),
)


@st.composite
def metrics(draw: st.DrawFn, name: str) -> Metric:
    kind = draw(st.sampled_from(list(MetricKind)))
    unit = draw(st.sampled_from(["", "hours", "µs", 'a "q" \\ b']))
    optional = draw(st.booleans())
    if kind is MetricKind.HISTOGRAM:
        edges = draw(st.lists(_bound, min_size=2, max_size=6, unique=True))
        return Metric(name, kind, edges=tuple(sorted(edges)), optional=optional, unit=unit)
    if kind is MetricKind.SUM:
        lo = draw(st.floats(0, 100, allow_nan=False))
        hi = lo + draw(st.floats(0.001, 100, allow_nan=False))
        scale = draw(st.integers(1, 1000))
        return Metric(name, kind, clip=(lo, hi), scale=scale, optional=optional, unit=unit)
    return Metric(name, kind, optional=optional, unit=unit)


@st.composite
def schemas(draw: st.DrawFn) -> Schema:
    names = draw(st.lists(_names, min_size=1, max_size=5, unique=True))
    regions = draw(st.lists(_regions, min_size=1, max_size=4, unique=True))
    return Schema(
        name=draw(st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,10}", fullmatch=True)),
        version=draw(st.integers(1, 2**40)),
        regions=tuple(regions),
        metrics=tuple(draw(metrics(n)) for n in names),
        max_parties=draw(st.integers(1, 10**6)),
        max_tickets_per_region=draw(st.integers(1, 10**6)),
        per_customer_cap=draw(st.integers(1, 100)),
    )


@settings(max_examples=150, deadline=None)
@given(schemas())
def test_toml_round_trip_preserves_schema_and_id(schema: Schema) -> None:
    text = schema.to_toml()
    again = Schema.from_toml(text)
    assert again == schema
    assert again.schema_id == schema.schema_id
    assert again.to_toml() == text
    assert again.canonical_json() == schema.canonical_json()
    assert len(schema.slot_names) == schema.vector_length
    assert len(set(schema.slot_names)) == schema.vector_length


@st.composite
def schema_and_values(draw: st.DrawFn) -> tuple[Schema, dict[str, dict[str, object]]]:
    schema = draw(schemas())
    values: dict[str, dict[str, object]] = {}
    for region in schema.regions:
        if not draw(st.booleans()):
            continue
        entry: dict[str, object] = {}
        for m in schema.metrics:
            if m.optional and draw(st.booleans()):
                continue
            bound = m.max_per_party(schema)
            if m.kind is MetricKind.HISTOGRAM:
                # each ticket in at most one bin: the bins add up to at most the bound
                left, bins = bound, []
                for _ in range(m.slots):
                    bins.append(draw(st.integers(0, left)))
                    left -= bins[-1]
                entry[m.name] = draw(st.permutations(bins))
            elif m.kind is MetricKind.SUM:
                # an exact fixed-point value so that decode recovers it exactly
                entry[m.name] = draw(st.integers(0, bound)) / m.scale
            else:
                entry[m.name] = draw(st.integers(0, bound))
        values[region] = entry
    return schema, values


@settings(max_examples=150, deadline=None)
@given(schema_and_values())
def test_encode_decode_round_trip(case: tuple[Schema, dict[str, dict[str, object]]]) -> None:
    schema, values = case
    vec = schema.encode(values)  # type: ignore[arg-type]  # generated values have the right shapes
    assert vec.dtype == np.uint64
    decoded = schema.decode(vec)
    bounds = schema.max_per_party_vector()
    assert all(int(v) <= b for v, b in zip(vec, bounds, strict=True))
    for region in schema.regions:
        present = region in values
        assert decoded[region][CONTRIBUTORS_KEY] == int(present)
        for m in schema.metrics:
            got = decoded[region][m.name]
            given_value = values.get(region, {}).get(m.name)
            if given_value is None:
                expected: object = [0] * m.slots if m.kind is MetricKind.HISTOGRAM else 0
                assert got == expected
            elif m.kind is MetricKind.SUM:
                assert round(float(got) * m.scale) == round(float(given_value) * m.scale)  # type: ignore[arg-type]  # sums decode to float
            else:
                assert got == given_value


@settings(max_examples=100, deadline=None)
@given(schema_and_values(), st.integers(1, 20))
def test_sum_of_encodings_decodes_to_sum(
    case: tuple[Schema, dict[str, dict[str, object]]], parties: int
) -> None:
    schema, values = case
    vec = schema.encode(values)  # type: ignore[arg-type]  # generated values have the right shapes
    total = np.zeros_like(vec)
    for _ in range(parties):
        total = total + vec
    slots = schema.decode_slots(total)
    assert slots == [int(v) * parties for v in vec]
