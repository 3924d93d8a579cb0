"""TOML from others is depth-checked before it is parsed (issue 12, item 5)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blindsum.config import MAX_TOML_DEPTH, loads_toml, toml_depth
from blindsum.errors import ConfigError
from blindsum.schema import Schema
from party.mapping import mapping_from_toml


def _nested_tables(depth: int) -> str:
    return "[" + ".".join(["a"] * depth) + "]\nx = 1\n"


def _nested_arrays(depth: int) -> str:
    return "x = " + "[" * depth + "]" * depth + "\n"


def _nested_inline(depth: int) -> str:
    return "x = " + "{y = " * depth + "1" + "}" * depth + "\n"


@pytest.mark.parametrize("build", [_nested_tables, _nested_arrays, _nested_inline])
def test_deep_toml_is_refused_before_parsing(build: object) -> None:
    assert callable(build)
    for text in (build(50_000), build(MAX_TOML_DEPTH + 1)):
        with pytest.raises(ConfigError, match="nested") as info:
            loads_toml(text, field="where")
        assert info.value.field == "where"
    assert loads_toml(build(4), field="where")


def test_hostile_schema_and_mapping_get_one_line_errors() -> None:
    deep = _nested_tables(50_000)
    with pytest.raises(ConfigError) as info:
        Schema.from_toml(deep)
    assert info.value.field == "schema" and "\n" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        mapping_from_toml(deep, origin="m.toml")
    assert info.value.field == "m.toml"


def test_strings_and_comments_do_not_count() -> None:
    text = "url = \"https://a.b.c.d.e.f.g/[[[[{{{{\"  # a.b.c [[[[\nname = 'x.y.z'\n"
    assert toml_depth(text) == 0
    multi = 'doc = """\n[[[[[[ a.b.c.d\n"""\nk = 1\n'
    assert toml_depth(multi) == 0
    assert toml_depth("[a.b]\nc.d = [1, [2]]\n") >= 3


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.integers(), lambda kids: st.lists(kids, max_size=3), max_leaves=20))
def test_the_bound_is_never_below_the_real_array_depth(value: object) -> None:
    def depth(v: object) -> int:
        return 1 + max((depth(x) for x in v), default=0) if isinstance(v, list) else 0

    def dump(v: object) -> str:
        return "[" + ", ".join(dump(x) for x in v) + "]" if isinstance(v, list) else str(v)

    assert toml_depth(f"x = {dump(value)}\n") >= depth(value)
