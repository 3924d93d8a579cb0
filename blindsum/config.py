"""Typed TOML configuration: one frozen dataclass tree per process, unknown keys rejected.

Supported field types: ``str``, ``int`` (not bool), ``float`` (int accepted),
``bool``, ``Path``, ``Enum`` subclasses (by value), ``Literal[...]`` of str/int,
``list[X]`` and ``tuple[X, ...]`` of those scalars, ``X | None``, and nested
dataclasses (TOML tables / sections). A missing key takes the field's default;
a missing ``X | None`` key without a default is None; otherwise it is an error.

Errors are :class:`~blindsum.errors.ConfigError` with a one-line message naming
the file and the dotted key, e.g. ``aggregator.toml: unknown key server.listn``.
Paths are kept as written (callers resolve relative paths against their base).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from blindsum.errors import BlindsumError, ConfigError

T = TypeVar("T")

#: Config files are small; refuse anything bigger before parsing it.
MAX_CONFIG_BYTES = 1024 * 1024

_SCALARS: tuple[type, ...] = (str, int, float, bool, Path)

#: Deepest nesting of tables, dotted keys, arrays and inline tables a TOML text may
#: have. Ours nest three or four deep; a schema of 50,000 nested tables made the
#: parser recurse until it failed (issue 12), so depth is checked before parsing.
MAX_TOML_DEPTH = 32


def toml_depth(text: str) -> int:
    """An upper bound on the nesting depth of ``text`` as TOML, without parsing it.

    Per line, the dots in a table header or before a key's ``=`` (each is a level),
    plus the brackets and braces open at that point (string contents skipped, so a
    URL in a value costs nothing). Over-counts quoted keys that contain dots, which
    only makes the bound safer. O(len(text)).
    """
    deepest = open_brackets = 0
    quote = ""
    for line in text.splitlines():
        key_dots = 0
        in_key = open_brackets == 0 and not quote
        i = 0
        while i < len(line):
            ch = line[i]
            if quote:
                if line.startswith(quote, i):
                    i += len(quote)
                    quote = ""
                    continue
                if ch == "\\" and quote in ('"', '"""'):
                    i += 2
                    continue
            elif line.startswith(('"""', "'''"), i):
                quote = line[i : i + 3]
                i += 3
                continue
            elif ch in "\"'":
                quote = ch
            elif ch == "#":
                break
            elif ch in "[{":
                open_brackets += 1
            elif ch in "]}":
                open_brackets = max(0, open_brackets - 1)
            elif ch == "=" and in_key:
                in_key = False
            elif ch == "." and in_key:
                key_dots += 1
            deepest = max(deepest, open_brackets + key_dots)
            i += 1
        if quote in ('"', "'"):  # a one-line string never spans lines
            quote = ""
        deepest = max(deepest, open_brackets + key_dots)
    return deepest


def loads_toml(text: str, *, field: str, max_depth: int = MAX_TOML_DEPTH) -> dict[str, Any]:
    """``tomllib.loads`` for text that may be hostile: its depth is checked first, and
    any parser failure (recursion included) is a one-line ConfigError naming ``field``."""
    depth = toml_depth(text)
    if depth > max_depth:
        raise ConfigError(f"TOML nested {depth} deep, at most {max_depth} allowed", field=field)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"invalid TOML: {err}", field=field) from None
    except RecursionError:
        raise ConfigError("TOML nested too deep", field=field) from None


def load_config(path: Path, cls: type[T]) -> T:
    """Read and parse the TOML file ``path`` into ``cls`` (a frozen dataclass)."""
    path = Path(path)
    source = str(path)
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError("config file not found", field=source) from None
    except OSError as err:
        raise ConfigError(f"cannot read config file ({err.strerror})", field=source) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file larger than {MAX_CONFIG_BYTES} bytes", field=source)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("config file is not UTF-8", field=source) from None
    data = loads_toml(text, field=source)
    return parse_config(data, cls, source=source)


def parse_config(data: Mapping[str, Any], cls: type[T], *, source: str) -> T:
    """Build ``cls`` from already-parsed TOML ``data``; ``source`` names it in errors."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"{cls!r} is not a dataclass type")
    if not isinstance(data, Mapping):
        raise ConfigError("top level must be a table", field=source)
    return _build(cls, data, source, "")


def _dotted(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, Mapping):
        return "table"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        return " | ".join(_describe(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list[{_describe(typing.get_args(tp)[0])}]"
    if origin is tuple:
        return f"tuple[{_describe(typing.get_args(tp)[0])}, ...]"
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp))


def _build(cls: type[T], data: Mapping[str, Any], source: str, prefix: str) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]  # cls is checked to be a dataclass type
    for key in data:
        if key not in fields:
            raise ConfigError(f"unknown key {_dotted(prefix, str(key))}", field=source)
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        dotted = _dotted(prefix, name)
        tp = hints[name]
        if name in data:
            kwargs[name] = _convert(data[name], tp, source, dotted)
            continue
        has_default = (
            f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        )
        if has_default:
            continue
        if _is_optional(tp):
            kwargs[name] = None
        elif _is_dataclass_type(tp) and _all_defaults(tp):
            kwargs[name] = _build(tp, {}, source, dotted)
        else:
            raise ConfigError(f"missing key {dotted}", field=source)
    try:
        return cls(**kwargs)
    except BlindsumError as err:
        where = prefix or "config"
        raise ConfigError(f"{where}: {err.message}", field=source) from None
    except (TypeError, ValueError) as err:
        where = prefix or "config"
        raise ConfigError(f"{where}: {err}", field=source) from None


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _all_defaults(tp: type) -> bool:
    return all(
        f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        for f in dataclasses.fields(tp)
        if f.init
    )


def _is_optional(tp: Any) -> bool:
    return typing.get_origin(tp) in (types.UnionType, typing.Union) and type(None) in (
        typing.get_args(tp)
    )


def _convert(value: Any, tp: Any, source: str, dotted: str) -> Any:
    def mismatch() -> ConfigError:
        return ConfigError(
            f"{dotted}: expected {_describe(tp)}, got {_type_name(value)}", field=source
        )

    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(members) != 1:
            raise TypeError(f"{dotted}: only X | None unions are supported")
        return _convert(value, members[0], source, dotted)
    if origin is list or origin is tuple:
        args = typing.get_args(tp)
        if origin is tuple and (len(args) != 2 or args[1] is not Ellipsis):
            raise TypeError(f"{dotted}: only tuple[X, ...] is supported")
        if not isinstance(value, list):
            raise mismatch()
        items = [_convert(v, args[0], source, f"{dotted}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        for option in allowed:
            if type(value) is type(option) and value == option:
                return option
        raise ConfigError(f"{dotted}: expected one of {list(allowed)!r}", field=source)
    if _is_dataclass_type(tp):
        if not isinstance(value, Mapping):
            raise mismatch()
        return _build(tp, value, source, dotted)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        for member in tp:
            if type(member.value) is type(value) and member.value == value:
                return member
        choices = [m.value for m in tp]
        raise ConfigError(f"{dotted}: expected one of {choices!r}", field=source)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise mismatch()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise mismatch()
    if tp is float:
        if isinstance(value, float):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        raise mismatch()
    if tp is str:
        if isinstance(value, str):
            return value
        raise mismatch()
    if tp is Path:
        if isinstance(value, str) and value:
            return Path(value)
        raise mismatch()
    raise TypeError(f"{dotted}: unsupported config field type {tp!r}")


# --------------------------------------------------------------------------- dump


def dump_config(obj: Any) -> str:
    """TOML text for a config dataclass instance; :func:`parse_config` reads it back.

    Scalars come first, then one ``[section]`` per nested dataclass. ``None``
    values are omitted (TOML has no null), so they load back as None only if
    that is the field's default.
    """
    if not (dataclasses.is_dataclass(obj) and not isinstance(obj, type)):
        raise TypeError("dump_config expects a dataclass instance")
    lines: list[str] = []
    _dump_table(obj, "", lines)
    return "\n".join(lines).strip("\n") + "\n"


def _dump_table(obj: Any, prefix: str, lines: list[str]) -> None:
    sections: list[tuple[str, Any]] = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is None:
            continue
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            sections.append((f.name, value))
            continue
        lines.append(f"{f.name} = {_toml_value(value, _dotted(prefix, f.name))}")
    for name, value in sections:
        header = _dotted(prefix, name)
        lines.append("")
        lines.append(f"[{header}]")
        _dump_table(value, header, lines)


def _toml_value(value: Any, dotted: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return _toml_value(value.value, dotted)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, Path):
        return toml_string(str(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v, dotted) for v in value) + "]"
    raise TypeError(f"{dotted}: cannot write {type(value).__name__} as TOML")


_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def toml_string(text: str) -> str:
    """A TOML basic string for ``text`` (quotes, backslashes and controls escaped)."""
    out = ['"']
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)
