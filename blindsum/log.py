"""Structured logging: one JSON object per line on stderr, via stdlib :mod:`logging`.

Use ``log = get_logger(__name__)`` then ``log.info("round_opened", round_id=rid, parties=5)``.

Redaction happens in the wrapper, before a :class:`logging.LogRecord` exists, so no
handler (ours, pytest's, or a library's) ever sees the secret:

- a field whose name contains key/secret/seed/share/private/token/password/signature
  is logged as ``"[redacted]"`` (also inside nested mappings);
- ``bytes`` values are logged as ``"<N bytes>"``;
- exceptions are described by :func:`describe_exception`, which never includes the
  arguments of crypto errors.
"""

from __future__ import annotations

import datetime as dt
import enum
import json as _json
import logging
import sys
import traceback
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any, TextIO

from blindsum.errors import BlindsumError, InvalidArgument, InvalidSignature, InvalidTag

REDACTED = "[redacted]"
SENSITIVE_WORDS = (
    "key",
    "secret",
    "seed",
    "share",
    "private",
    "token",
    "password",
    "signature",
)
_LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}
#: Modules whose exceptions may carry key material or plaintext in their args.
_CRYPTO_MODULE_PREFIXES = ("cryptography", "blindsum.crypto", "tenseal", "_tenseal", "nacl")
_FIELDS_ATTR = "blindsum_fields"
_RESERVED = frozenset({"ts", "level", "logger", "event"})
_MAX_TEXT = 300
_MAX_ITEMS = 50


def is_sensitive(name: str) -> bool:
    """True if a field called ``name`` must be redacted."""
    lowered = name.lower()
    return any(word in lowered for word in SENSITIVE_WORDS)


def _safe_value(value: Any, depth: int = 0) -> Any:
    """A JSON-able, secret-free rendering of ``value``."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value if len(value) <= _MAX_TEXT else value[:_MAX_TEXT] + "..."
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if isinstance(value, enum.Enum):
        return _safe_value(value.value, depth)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, BaseException):
        return describe_exception(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if depth >= 3:
        return f"<{type(value).__name__}>"
    if isinstance(value, Mapping):
        return {
            str(k): REDACTED if is_sensitive(str(k)) else _safe_value(v, depth + 1)
            for k, v in list(value.items())[:_MAX_ITEMS]
        }
    if isinstance(value, list | tuple | set | frozenset):
        items = list(value)[:_MAX_ITEMS]
        return [_safe_value(v, depth + 1) for v in items]
    # Other objects: their str(). Key-holding dataclasses hide secrets with field(repr=False).
    return _safe_value(str(value), depth)


def redact_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Apply the redaction rules to a mapping of log fields."""
    return {k: REDACTED if is_sensitive(k) else _safe_value(v) for k, v in fields.items()}


def _is_crypto_error(exc: BaseException) -> bool:
    if isinstance(exc, InvalidSignature | InvalidTag):
        return True
    module = type(exc).__module__ or ""
    return module.startswith(_CRYPTO_MODULE_PREFIXES)


def describe_exception(exc: BaseException) -> str:
    """``Type: message @ file:line``; crypto errors give only ``Type @ file:line``.

    blindsum errors have messages that are safe by contract; other exception
    messages are truncated. Arguments of crypto errors (cryptography, TenSEAL,
    blindsum.crypto, InvalidSignature, InvalidTag) are never included.
    """
    name = type(exc).__qualname__
    where = ""
    tb = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else None
    if tb:
        frame = tb[-1]
        where = f" @ {PurePath(frame.filename).name}:{frame.lineno}"
    if _is_crypto_error(exc):
        return f"{name}{where}"
    text = exc.message if isinstance(exc, BlindsumError) else str(exc)
    if len(text) > _MAX_TEXT:
        text = text[:_MAX_TEXT] + "..."
    return f"{name}: {text}{where}" if text else f"{name}{where}"


class Logger:
    """Thin wrapper over :class:`logging.Logger` taking ``(event, **fields)``."""

    __slots__ = ("_bound", "_logger")

    def __init__(self, logger: logging.Logger, bound: Mapping[str, Any] | None = None) -> None:
        self._logger = logger
        self._bound: dict[str, Any] = redact_fields(bound or {})

    @property
    def name(self) -> str:
        return self._logger.name

    def bind(self, **fields: Any) -> Logger:
        """A logger that adds ``fields`` to every event."""
        merged = dict(self._bound)
        merged.update(redact_fields(fields))
        child = Logger(self._logger)
        child._bound = merged
        return child

    def is_enabled_for(self, level: int) -> bool:
        return self._logger.isEnabledFor(level)

    def log(
        self, level: int, event: str, /, *, exc: BaseException | None = None, **fields: Any
    ) -> None:
        if not self._logger.isEnabledFor(level):
            return
        data = dict(self._bound)
        data.update(redact_fields(fields))
        if exc is not None:
            data["error"] = describe_exception(exc)
        # stacklevel=3: attribute the record to the caller of debug()/info()/...
        self._logger.log(level, "%s", event, extra={_FIELDS_ATTR: data}, stacklevel=3)

    def debug(self, event: str, /, *, exc: BaseException | None = None, **fields: Any) -> None:
        self.log(logging.DEBUG, event, exc=exc, **fields)

    def info(self, event: str, /, *, exc: BaseException | None = None, **fields: Any) -> None:
        self.log(logging.INFO, event, exc=exc, **fields)

    def warning(self, event: str, /, *, exc: BaseException | None = None, **fields: Any) -> None:
        self.log(logging.WARNING, event, exc=exc, **fields)

    def error(self, event: str, /, *, exc: BaseException | None = None, **fields: Any) -> None:
        self.log(logging.ERROR, event, exc=exc, **fields)


def get_logger(name: str) -> Logger:
    """The structured logger for ``name`` (usually ``__name__``)."""
    return Logger(logging.getLogger(name))


def _record_payload(record: logging.LogRecord) -> dict[str, Any]:
    ts = dt.datetime.fromtimestamp(record.created, dt.UTC)
    payload: dict[str, Any] = {
        "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": record.levelname.lower(),
        "logger": record.name,
    }
    fields = getattr(record, _FIELDS_ATTR, None)
    if isinstance(fields, dict):
        payload["event"] = record.getMessage()
        for k, v in fields.items():
            payload[f"{k}_" if k in _RESERVED else k] = v
    else:
        # A record from a library logger: its message, but never its traceback text.
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        payload["event"] = _safe_value(message)
    if record.exc_info and record.exc_info[1] is not None:
        payload["error"] = describe_exception(record.exc_info[1])
    return payload


class JsonFormatter(logging.Formatter):
    """One compact JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        return _json.dumps(_record_payload(record), ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """Human-readable ``ts LEVEL logger event key=value ...``."""

    def format(self, record: logging.LogRecord) -> str:
        payload = _record_payload(record)
        head = f"{payload.pop('ts')} {payload.pop('level').upper():7} {payload.pop('logger')}"
        event = payload.pop("event")
        parts = [head, str(event)]
        for k, v in payload.items():
            text = v if isinstance(v, str) else _json.dumps(v, ensure_ascii=False, default=str)
            if isinstance(v, str) and (not v or any(c.isspace() or c in '"=' for c in v)):
                text = _json.dumps(v, ensure_ascii=False)
            parts.append(f"{k}={text}")
        return " ".join(parts)


class _BlindsumHandler(logging.StreamHandler[TextIO]):
    """Marker subclass so :func:`configure` can replace only its own handler."""


def configure(level: str = "INFO", *, stream: TextIO | None = None, json: bool = True) -> None:
    """Install one handler on the root logger (idempotent; replaces a previous one).

    ``level`` is DEBUG, INFO, WARNING, ERROR or CRITICAL (case-insensitive).
    ``stream`` defaults to stderr; ``json=False`` selects the key=value format.
    """
    numeric = _LEVELS.get(level.upper()) if isinstance(level, str) else None
    if numeric is None:
        raise InvalidArgument(f"unknown log level {level!r}", field="log_level")
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _BlindsumHandler)]:
        root.removeHandler(old)
        old.close()
    handler = _BlindsumHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    root.addHandler(handler)
    root.setLevel(numeric)
