"""Typed TOML config: parsing, strict errors naming file and key, dump/load round trip."""

from __future__ import annotations

import enum
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from blindsum.config import MAX_CONFIG_BYTES, dump_config, load_config, parse_config
from blindsum.errors import ConfigError, InvalidArgument


class Mode(enum.Enum):
    SECAGG = "secagg"
    HE = "he"


@dataclass(frozen=True)
class Tls:
    ca_cert: Path
    cert: Path = Path("tls/server.crt")
    key: Path | None = None


@dataclass(frozen=True)
class Server:
    listen: str = "127.0.0.1:7443"
    port: int = 7443
    tick_s: float = 0.25
    debug: bool = False
    names: list[str] = field(default_factory=list)
    peers: tuple[str, ...] = ()
    max_bytes: int | None = None


@dataclass(frozen=True)
class Limits:
    k: int = 3

    def __post_init__(self) -> None:
        if self.k < 1:
            raise InvalidArgument("must be >= 1", field="k")


@dataclass(frozen=True)
class AppConfig:
    tls: Tls
    server: Server = field(default_factory=Server)
    limits: Limits = field(default_factory=Limits)
    mode: Mode = Mode.SECAGG
    log_level: Literal["DEBUG", "INFO"] = "INFO"
    name: str | None = None


GOOD = """
mode = "he"
log_level = "DEBUG"

[tls]
ca_cert = "ca/ca.crt"

[server]
listen = "0.0.0.0:9000"
port = 9000
tick_s = 1
names = ["a", "b"]
peers = ["x"]
"""


def _parse(text: str) -> AppConfig:
    return parse_config(tomllib.loads(text), AppConfig, source="app.toml")


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        _parse(text)
    message = info.value.message
    assert "\n" not in message
    assert message.startswith("app.toml: ")
    return message


def test_parse_good_config() -> None:
    cfg = _parse(GOOD)
    assert cfg == AppConfig(
        tls=Tls(ca_cert=Path("ca/ca.crt")),
        server=Server(listen="0.0.0.0:9000", port=9000, tick_s=1.0, names=["a", "b"], peers=("x",)),
        mode=Mode.HE,
        log_level="DEBUG",
    )
    assert isinstance(cfg.server.tick_s, float)
    assert isinstance(cfg.server.peers, tuple)
    assert cfg.tls.key is None
    assert cfg.limits == Limits()


def test_unknown_top_level_key() -> None:
    assert _error("extra = 1\n" + GOOD) == "app.toml: unknown key extra"


def test_unknown_nested_key() -> None:
    text = GOOD.replace("port = 9000", "port = 9000\nlistn = 'x'")
    assert _error(text) == "app.toml: unknown key server.listn"


def test_missing_required_key() -> None:
    assert _error('[tls]\ncert = "x"\n') == "app.toml: missing key tls.ca_cert"
    assert _error("") == "app.toml: missing key tls"


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ('port = "9000"', "app.toml: server.port: expected int, got str"),
        ("port = true", "app.toml: server.port: expected int, got bool"),
        ("port = 1.5", "app.toml: server.port: expected int, got float"),
        ("debug = 1", "app.toml: server.debug: expected bool, got int"),
        ("tick_s = true", "app.toml: server.tick_s: expected float, got bool"),
        ("listen = 5", "app.toml: server.listen: expected str, got int"),
        ('names = "a"', "app.toml: server.names: expected list[str], got str"),
        ("names = ['a', 2]", "app.toml: server.names[1]: expected str, got int"),
        ("max_bytes = 'x'", "app.toml: server.max_bytes: expected int, got str"),
    ],
)
def test_type_errors_name_key_and_types(snippet: str, expected: str) -> None:
    assert _error(f'[tls]\nca_cert = "c"\n[server]\n{snippet}\n') == expected


def test_section_must_be_table() -> None:
    assert _error('server = 3\n[tls]\nca_cert = "c"\n') == (
        "app.toml: server: expected Server, got int"
    )


def test_enum_and_literal_values_checked() -> None:
    assert "mode: expected one of ['secagg', 'he']" in _error(
        'mode = "plain"\n[tls]\nca_cert = "c"\n'
    )
    assert "log_level: expected one of ['DEBUG', 'INFO']" in _error(
        'log_level = "LOUD"\n[tls]\nca_cert = "c"\n'
    )


def test_post_init_validation_becomes_config_error() -> None:
    message = _error('[tls]\nca_cert = "c"\n[limits]\nk = 0\n')
    assert message == "app.toml: limits: k: must be >= 1"


def test_optional_set_and_path_empty_rejected() -> None:
    cfg = _parse('name = "n"\n[tls]\nca_cert = "c"\nkey = "k.pem"\n')
    assert cfg.name == "n"
    assert cfg.tls.key == Path("k.pem")
    assert "tls.ca_cert: expected Path" in _error('[tls]\nca_cert = ""\n')


def test_large_int_and_negative_ok() -> None:
    cfg = _parse('[tls]\nca_cert = "c"\n[server]\nport = -1\nmax_bytes = 33554432\n')
    assert cfg.server.port == -1
    assert cfg.server.max_bytes == 32 * 1024 * 1024


TRICKY = [
    "",
    "plain",
    'quote " and \\ backslash',
    "new\nline\ttab\rcr",
    "ctl \x00\x01\x1f\x7f",
    "unicode é ü 漢字 🙂",
    '\'single\' and """ triple',
    "".join(chr(c) for c in range(128)),
]


@pytest.mark.parametrize("text", TRICKY)
def test_dump_round_trip_strings(text: str) -> None:
    cfg = AppConfig(
        tls=Tls(ca_cert=Path("c"), key=Path("/abs/k.pem")),
        server=Server(listen=text, names=[text, "x"], peers=(text,)),
        name=text,
    )
    dumped = dump_config(cfg)
    assert parse_config(tomllib.loads(dumped), AppConfig, source="dump") == cfg


def test_dump_round_trip_all_types(tmp_path: Path) -> None:
    cfg = AppConfig(
        tls=Tls(ca_cert=Path("ca/ca.crt")),
        server=Server(port=0, tick_s=1e-5, debug=True, names=[], peers=("a", "b"), max_bytes=2**40),
        limits=Limits(k=7),
        mode=Mode.HE,
        log_level="DEBUG",
    )
    path = tmp_path / "app.toml"
    path.write_text(dump_config(cfg), encoding="utf-8")
    assert load_config(path, AppConfig) == cfg
    text = path.read_text(encoding="utf-8")
    assert "[server]" in text and "[tls]" in text
    assert "key =" not in text  # None is omitted


def test_dump_float_specials() -> None:
    cfg = AppConfig(tls=Tls(ca_cert=Path("c")), server=Server(tick_s=float("inf")))
    assert _parse(dump_config(cfg)).server.tick_s == float("inf")


def test_load_config_file_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml: config file not found"):
        load_config(missing, AppConfig)
    bad = tmp_path / "bad.toml"
    bad.write_text("[tls\nca_cert = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.toml: invalid TOML") as info:
        load_config(bad, AppConfig)
    assert "\n" not in info.value.message
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(ConfigError, match="larger than"):
        load_config(big, AppConfig)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(binary, AppConfig)


def test_load_config_error_names_file(tmp_path: Path) -> None:
    path = tmp_path / "aggregator.toml"
    path.write_text('[tls]\nca_cert = "c"\n[server]\nlistn = "x"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, AppConfig)
    assert info.value.message == f"{path}: unknown key server.listn"
    assert isinstance(info.value, InvalidArgument)


def test_parse_config_requires_dataclass() -> None:
    with pytest.raises(TypeError):
        parse_config({}, dict, source="x")
