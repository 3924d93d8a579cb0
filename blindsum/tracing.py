"""OpenTelemetry spans, when the optional ``otel`` extra is installed (issue 13).

One span per RPC the aggregator serves (``rpc <Method>``, with its status code) and
one per round phase (``phase <name>``, from when it opened to when it closed, with
the round id and mode). They use the OpenTelemetry API only: configure an exporter
the usual way (``opentelemetry-instrument`` with ``OTEL_EXPORTER_OTLP_ENDPOINT``, or
a TracerProvider set by the embedding program). Without the package, every function
here does nothing, and no tracing code runs.

Span attributes are RPC names, status codes, round ids, modes and phases: never a
party's numbers, a key or a report.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

try:
    from opentelemetry import trace as _trace
except ImportError:  # the otel extra is not installed
    _trace = None  # type: ignore[assignment]

_NAME = "blindsum"


def enabled() -> bool:
    """Whether the OpenTelemetry API is installed."""
    return _trace is not None


@contextlib.contextmanager
def span(name: str, **attributes: str | int) -> Iterator[Any]:
    """A span around the block (None when tracing is not installed)."""
    if _trace is None:
        yield None
        return
    with _trace.get_tracer(_NAME).start_as_current_span(name, attributes=attributes) as s:
        yield s


def set_attribute(current: Any, key: str, value: str | int) -> None:
    if current is not None:
        current.set_attribute(key, value)


def record(name: str, start_ms: int, end_ms: int, **attributes: str | int) -> None:
    """A span that already happened: from ``start_ms`` to ``end_ms`` (UTC ms)."""
    if _trace is None:
        return
    s = _trace.get_tracer(_NAME).start_span(
        name, start_time=start_ms * 1_000_000, attributes=attributes
    )
    s.end(end_time=max(start_ms, end_ms) * 1_000_000)
