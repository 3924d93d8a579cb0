"""Structured logging: JSON lines, key=value text, redaction of secrets."""

from __future__ import annotations

import enum
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag as CryptoInvalidTag

from blindsum import log
from blindsum.errors import InvalidArgument, InvalidSignature, NotFound

SECRET = "s3cr3t-VALUE-do-not-log"


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """Configure JSON logging into a buffer; restore the root logger afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    buf = io.StringIO()
    log.configure("DEBUG", stream=buf)
    try:
        yield buf
    finally:
        for h in list(root.handlers):
            if h not in saved_handlers:
                root.removeHandler(h)
        root.setLevel(saved_level)


def _lines(buf: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line]


class Color(enum.Enum):
    RED = "red"


@pytest.mark.parametrize(
    "name",
    [
        "key",
        "api_key",
        "secret",
        "seed",
        "self_mask_seed",
        "share",
        "key_share",
        "private_key",
        "token",
        "PASSWORD",
        "signature",
    ],
)
def test_sensitive_field_is_redacted(stream: io.StringIO, name: str) -> None:
    fields: dict[str, Any] = {name: SECRET}
    log.get_logger("blindsum.test").info("event", **fields)
    text = stream.getvalue()
    assert SECRET not in text
    (line,) = _lines(stream)
    assert line[name] == log.REDACTED


def test_sensitive_bytes_and_nested_values_are_redacted(stream: io.StringIO) -> None:
    logger = log.get_logger("blindsum.test")
    logger.warning(
        "nested",
        payload={"round": "r1", "seed": SECRET, "inner": {"password": SECRET}},
        blob=SECRET.encode(),
        items=[SECRET.encode(), 3],
    )
    text = stream.getvalue()
    assert SECRET not in text
    (line,) = _lines(stream)
    assert line["payload"] == {
        "round": "r1",
        "seed": log.REDACTED,
        "inner": {"password": log.REDACTED},
    }
    assert line["blob"] == f"<{len(SECRET)} bytes>"
    assert line["items"] == [f"<{len(SECRET)} bytes>", 3]


def test_redaction_happens_before_any_handler(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        log.get_logger("blindsum.test").info("ev", private=SECRET, raw=SECRET.encode())
    assert SECRET not in caplog.text
    assert all(SECRET not in str(vars(r)) for r in caplog.records)


def test_json_line_shape(stream: io.StringIO) -> None:
    log.get_logger("blindsum.agg").info(
        "round_opened",
        round_id="r-1",
        parties=5,
        ratio=0.5,
        ok=True,
        none=None,
        color=Color.RED,
        path=Path("/tmp/x"),
    )
    (line,) = _lines(stream)
    assert line["event"] == "round_opened"
    assert line["level"] == "info"
    assert line["logger"] == "blindsum.agg"
    assert isinstance(line["ts"], str) and line["ts"].endswith("Z")
    assert line["round_id"] == "r-1"
    assert line["parties"] == 5
    assert line["ratio"] == 0.5
    assert line["ok"] is True
    assert line["none"] is None
    assert line["color"] == "red"
    assert line["path"] == "/tmp/x"


def test_reserved_field_names_do_not_clobber(stream: io.StringIO) -> None:
    log.get_logger("blindsum.t").info("real_event", event="fake", level="fake")
    (line,) = _lines(stream)
    assert line["event"] == "real_event"
    assert line["level"] == "info"
    assert line["event_"] == "fake"


def test_level_filtering() -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    buf = io.StringIO()
    try:
        log.configure("warning", stream=buf)
        logger = log.get_logger("blindsum.t")
        logger.debug("d")
        logger.info("i")
        logger.warning("w")
        logger.error("e")
        assert [line["event"] for line in _lines(buf)] == ["w", "e"]
    finally:
        for h in list(root.handlers):
            if h not in saved_handlers:
                root.removeHandler(h)
        root.setLevel(saved_level)


def test_bad_level_rejected() -> None:
    with pytest.raises(InvalidArgument) as info:
        log.configure("LOUD")
    assert info.value.field == "log_level"


def test_configure_is_idempotent(stream: io.StringIO) -> None:
    buf2 = io.StringIO()
    log.configure("DEBUG", stream=buf2)
    log.get_logger("blindsum.t").info("once")
    assert stream.getvalue() == ""
    assert len(_lines(buf2)) == 1


def test_text_format(stream: io.StringIO) -> None:
    buf = io.StringIO()
    log.configure("INFO", stream=buf, json=False)
    log.get_logger("blindsum.t").info("phase", round_id="r1", note="two words", key=SECRET)
    text = buf.getvalue()
    assert SECRET not in text
    assert " INFO " in text
    assert "blindsum.t phase" in text
    assert "round_id=r1" in text
    assert 'note="two words"' in text
    assert "key=[redacted]" in text


def test_bind_adds_fields_and_redacts(stream: io.StringIO) -> None:
    logger = log.get_logger("blindsum.t").bind(round_id="r9", token=SECRET)
    logger.info("x", party="p1")
    (line,) = _lines(stream)
    assert line["round_id"] == "r9"
    assert line["party"] == "p1"
    assert line["token"] == log.REDACTED
    assert SECRET not in stream.getvalue()


def test_crypto_exception_args_never_logged(stream: io.StringIO) -> None:
    logger = log.get_logger("blindsum.t")
    for exc in (
        CryptoInvalidTag(SECRET),
        InvalidSignature(SECRET, field="sig"),
    ):
        try:
            raise exc
        except Exception as caught:
            logger.error("failed", exc=caught)
    text = stream.getvalue()
    assert SECRET not in text
    errors = [line["error"] for line in _lines(stream)]
    assert str(errors[0]).startswith("InvalidTag")
    assert str(errors[1]).startswith("InvalidSignature")


def test_ordinary_exception_detail_is_logged(stream: io.StringIO) -> None:
    try:
        raise NotFound("no such round", field="round_id")
    except NotFound as err:
        log.get_logger("blindsum.t").warning("lookup", exc=err)
    (line,) = _lines(stream)
    error = str(line["error"])
    assert error.startswith("NotFound: round_id: no such round @ test_log.py:")


def test_library_records_are_formatted_without_tracebacks(stream: io.StringIO) -> None:
    lib = logging.getLogger("somelib")
    lib.warning("hello %s", "world")
    try:
        raise CryptoInvalidTag(SECRET)
    except CryptoInvalidTag:
        lib.exception("boom")
    lines = _lines(stream)
    assert lines[0]["event"] == "hello world"
    assert lines[0]["logger"] == "somelib"
    assert lines[1]["event"] == "boom"
    assert str(lines[1]["error"]).startswith("InvalidTag")
    assert SECRET not in stream.getvalue()
    assert "Traceback" not in stream.getvalue()


def test_is_sensitive() -> None:
    assert log.is_sensitive("ca_key_path")
    assert log.is_sensitive("Signature")
    assert not log.is_sensitive("round_id")
    assert not log.is_sensitive("party")
