"""Checks on a request's raw bytes, before protobuf parses them.

Protobuf turns a few bytes into a large object: an empty repeated sub-message is two
bytes on the wire and tens of bytes once parsed, so 32 MiB of them parse into more
than a gigabyte. The server therefore receives every request as raw bytes, and
:class:`blindsum.transport.auth.AuthorizationInterceptor` checks the caller first,
then the request's size and element count against the method's :class:`Limit`, and
only then parses it (issue 12, "Authorize before parsing").

:func:`count_elements` walks the protobuf wire format under the message's descriptor
without building anything: every field occurrence, at every depth, is one element,
and the walk stops as soon as the budget is spent. Packed repeated scalars count one
element per byte of packed data, an upper bound on what they unpack to.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from blindsum.errors import InvalidArgument

#: Deepest nesting of sub-messages a request may have (ours have at most 2).
MAX_DEPTH = 8

_VARINT, _I64, _LEN, _SGROUP, _EGROUP, _I32 = 0, 1, 2, 3, 4, 5


@dataclass(frozen=True)
class Limit:
    """What one method's request may carry: ``max_bytes`` on the wire and
    ``max_elements`` field occurrences in all (repeated entries count one each)."""

    max_bytes: int
    max_elements: int

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_elements < 1:
            raise InvalidArgument("limits must be positive", field="limit")


class TooLarge(InvalidArgument):
    """A request over its method's byte cap (RESOURCE_EXHAUSTED on the wire)."""


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise InvalidArgument("truncated or overlong varint", field="request")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def count_elements(data: bytes, descriptor: Descriptor, budget: int) -> int:
    """Field occurrences in ``data`` as a ``descriptor`` message, at every depth.

    Raises InvalidArgument(field="request") when the bytes are not well-formed
    protobuf wire format (a truncated field, groups, nesting deeper than
    :data:`MAX_DEPTH`), and InvalidArgument naming the field once more than
    ``budget`` elements are seen. Cost: O(min(elements, budget)) steps.
    """
    view = memoryview(data)
    left = _walk(view, 0, len(view), desc=descriptor, left=budget)
    return budget - left


def _walk(
    buf: memoryview,
    pos: int,
    end: int,
    *,
    desc: Descriptor | None,
    left: int,
    depth: int = 0,
    path: str = "",
) -> int:
    if depth > MAX_DEPTH:
        raise InvalidArgument(f"nested deeper than {MAX_DEPTH}", field=path or "request")
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise InvalidArgument("field number 0", field=path or "request")
        field = desc.fields_by_number.get(number) if desc is not None else None
        name = f"{path}.{field.name}" if path and field else (field.name if field else path)
        left -= 1
        if left < 0:
            raise InvalidArgument(
                "too many elements for this call", field=name or path or "request"
            )
        if wire == _VARINT:
            _, pos = _varint(buf, pos, end)
        elif wire == _I64:
            pos += 8
        elif wire == _I32:
            pos += 4
        elif wire == _LEN:
            length, pos = _varint(buf, pos, end)
            stop = pos + length
            if stop > end:
                raise InvalidArgument("truncated field", field=name or "request")
            if field is not None and field.type == FieldDescriptor.TYPE_MESSAGE:
                left = _walk(
                    buf, pos, stop, desc=field.message_type, left=left, depth=depth + 1, path=name
                )
            elif field is not None and field.type not in (
                FieldDescriptor.TYPE_STRING,
                FieldDescriptor.TYPE_BYTES,
            ):
                left -= length  # packed scalars: at most one element per byte
                if left < 0:
                    raise InvalidArgument("too many elements for this call", field=name)
            pos = stop
        else:
            raise InvalidArgument(f"unsupported wire type {wire}", field=name or "request")
        if pos > end:
            raise InvalidArgument("truncated field", field=name or "request")
    return left


def check(data: bytes, descriptor: Descriptor, limit: Limit, method: str) -> None:
    """Raise TooLarge or InvalidArgument (its message starts with ``method``; ``field``
    names the offending field) unless ``data`` fits ``limit``."""
    if len(data) > limit.max_bytes:
        big = TooLarge(
            f"{method}: request of {len(data)} bytes, this call takes at most {limit.max_bytes}"
        )
        big.field = "request"
        raise big
    try:
        count_elements(data, descriptor, limit.max_elements)
    except InvalidArgument as exc:
        err = InvalidArgument(f"{method}: {exc.message}")
        err.field = exc.field
        raise err from None


#: A refused body at least this large asks for the heap to be trimmed.
TRIM_AFTER_BYTES = 1 << 20
#: At most one trim per this many seconds.
TRIM_INTERVAL_S = 1.0


def _malloc_trim() -> Callable[[], object] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def reclaim() -> None:
        # gRPC keeps a refused call's exception (and so, through its frames, the
        # request) in a reference cycle: collect first, then give the pages back.
        gc.collect()
        trim(0)

    return reclaim


class HeapTrimmer:
    """Give the memory of large refused requests back to the system.

    gRPC holds a body in many small buffers and Python copies it once more; a refused
    call's exception can keep it alive in a reference cycle, and once freed the
    buffers stay in glibc's heap, so a burst of refused 30 MiB requests would leave
    the process hundreds of MiB larger for good. After a refusal of at least
    :data:`TRIM_AFTER_BYTES`, this runs a garbage collection and ``malloc_trim`` on a
    worker thread, at most once per :data:`TRIM_INTERVAL_S`, and once more after the
    last refusal of a burst. Without glibc it does nothing.
    """

    def __init__(
        self, trim: Callable[[], object] | None = None, *, interval_s: float = TRIM_INTERVAL_S
    ) -> None:
        self._trim = trim if trim is not None else _malloc_trim()
        self._interval_s = interval_s
        self._last = -interval_s
        self._pending = self._again = False
        self.trims = 0

    def refused(self, size: int) -> None:
        """Note a refused body of ``size`` bytes (call on the event loop)."""
        if self._trim is None or size < TRIM_AFTER_BYTES:
            return
        if self._pending:
            # Freed after the pending trim may start: trim once more after it.
            self._again = True
            return
        self._schedule(asyncio.get_running_loop())

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        self._pending, self._again = True, False
        delay = max(0.0, self._last + self._interval_s - time.monotonic())
        loop.call_later(delay, lambda: loop.create_task(self._run(loop)))

    async def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            if self._trim is not None:
                await loop.run_in_executor(None, self._trim)
                self.trims += 1
        finally:
            self._last = time.monotonic()
            self._pending = False
            if self._again:
                self._schedule(loop)
