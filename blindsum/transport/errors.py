"""The one table between blindsum error codes and gRPC status codes.

Server side, :func:`translate` wraps every async servicer method: a
:class:`~blindsum.errors.BlindsumError` becomes its status with its (safe) message;
anything unexpected is logged here and reaches the client only as
``INTERNAL: internal error in <RPC>``. Client side, :func:`error_from_rpc` turns an
:class:`grpc.aio.AioRpcError` back into a typed error.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

import grpc
import grpc.aio

from blindsum.errors import (
    Aborted,
    AlreadyExists,
    BlindsumError,
    ErrorCode,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from blindsum.log import get_logger

_log = get_logger(__name__)

StatusCode = grpc.StatusCode

#: ErrorCode -> gRPC status. Every ErrorCode has an entry (a unit test checks it).
STATUS_FOR: Mapping[ErrorCode, grpc.StatusCode] = MappingProxyType(
    {
        ErrorCode.INVALID_ARGUMENT: StatusCode.INVALID_ARGUMENT,
        ErrorCode.NOT_FOUND: StatusCode.NOT_FOUND,
        ErrorCode.ALREADY_EXISTS: StatusCode.ALREADY_EXISTS,
        ErrorCode.PERMISSION_DENIED: StatusCode.PERMISSION_DENIED,
        ErrorCode.UNAUTHENTICATED: StatusCode.UNAUTHENTICATED,
        ErrorCode.FAILED_PRECONDITION: StatusCode.FAILED_PRECONDITION,
        ErrorCode.RESOURCE_EXHAUSTED: StatusCode.RESOURCE_EXHAUSTED,
        ErrorCode.ABORTED: StatusCode.ABORTED,
        ErrorCode.UNAVAILABLE: StatusCode.UNAVAILABLE,
        ErrorCode.INTERNAL: StatusCode.INTERNAL,
    }
)

#: gRPC status -> error class raised on the client. Statuses we never send map to
#: the nearest class (DEADLINE_EXCEEDED is transient like UNAVAILABLE).
ERROR_FOR: Mapping[grpc.StatusCode, type[BlindsumError]] = MappingProxyType(
    {
        StatusCode.INVALID_ARGUMENT: InvalidArgument,
        StatusCode.OUT_OF_RANGE: InvalidArgument,
        StatusCode.NOT_FOUND: NotFound,
        StatusCode.ALREADY_EXISTS: AlreadyExists,
        StatusCode.PERMISSION_DENIED: PermissionDenied,
        StatusCode.UNAUTHENTICATED: Unauthenticated,
        StatusCode.FAILED_PRECONDITION: FailedPrecondition,
        StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
        StatusCode.ABORTED: Aborted,
        StatusCode.CANCELLED: Aborted,
        StatusCode.UNAVAILABLE: Unavailable,
        StatusCode.DEADLINE_EXCEEDED: Unavailable,
        StatusCode.INTERNAL: Internal,
        StatusCode.UNKNOWN: Internal,
        StatusCode.UNIMPLEMENTED: Internal,
        StatusCode.DATA_LOSS: Internal,
        StatusCode.OK: Internal,  # an AioRpcError never carries OK; be total anyway
    }
)

#: Statuses worth retrying (with backoff): the server may not have seen the call,
#: and every mutating RPC is idempotent. ABORTED and RESOURCE_EXHAUSTED are final.
TRANSIENT: frozenset[grpc.StatusCode] = frozenset(
    {StatusCode.UNAVAILABLE, StatusCode.DEADLINE_EXCEEDED}
)

_HANDSHAKE_HINTS = ("ssl", "tls", "handshake", "certificate", "x509")

S = TypeVar("S")
Req = TypeVar("Req")
Resp = TypeVar("Resp")
Ctx = TypeVar("Ctx", bound="grpc.aio.ServicerContext[Any, Any]")


def is_transient(code: grpc.StatusCode) -> bool:
    """True for statuses a client should retry with backoff."""
    return code in TRANSIENT


def translate(
    fn: Callable[[S, Req, Ctx], Awaitable[Resp]],
) -> Callable[[S, Req, Ctx], Coroutine[Any, Any, Resp]]:
    """Decorate an async unary servicer method ``(self, request, context)``.

    BlindsumError -> ``context.abort(STATUS_FOR[code], message)``; a gRPC abort
    passes through; any other exception is logged with detail and becomes
    ``INTERNAL: internal error in <RPC>`` without the exception text.
    """
    rpc = fn.__name__

    @functools.wraps(fn)
    async def wrapper(self: S, request: Req, context: Ctx) -> Resp:
        try:
            return await fn(self, request, context)
        except grpc.aio.AbortError:
            raise
        except BlindsumError as err:
            status = STATUS_FOR.get(err.code, StatusCode.INTERNAL)
            _log.info(
                "rpc_failed", rpc=rpc, code=status.name, error_type=type(err).__name__, exc=err
            )
            await context.abort(status, err.message)
        except Exception as err:
            _log.error("rpc_internal_error", rpc=rpc, exc=err)
            await context.abort(StatusCode.INTERNAL, f"internal error in {rpc}")

    return wrapper


def error_from_rpc(
    e: grpc.aio.AioRpcError, rpc: str, *, server: str = "", advice: str = ""
) -> BlindsumError:
    """The typed error for a failed call; the message is prefixed with ``rpc``.

    An UNAVAILABLE whose details mention TLS, or a closed socket (how a client
    sees the server reject its certificate under TLS 1.3), says that the TLS
    handshake may have failed, since grpc reports nothing more specific. Any other
    UNAVAILABLE says "cannot reach ``server``" when the caller names it, followed by
    ``advice`` (what to run or check), so every client words it the same way.
    """
    code = e.code()
    details = e.details() or ""
    cls = ERROR_FOR.get(code, Internal)
    if code == StatusCode.UNAVAILABLE:
        debug = e.debug_error_string() or ""
        haystack = f"{details} {debug}".lower()
        if any(hint in haystack for hint in _HANDSHAKE_HINTS):
            return cls(
                "connection failed; the TLS handshake may have failed "
                f"(certificate rejected or wrong CA): {details}",
                field=rpc,
            )
        if "socket closed" in haystack:
            # With TLS 1.3 a client whose certificate the server rejects sees only this.
            return cls(
                "connection closed by the server; it may have rejected our client "
                f"certificate (issued by another CA?): {details}",
                field=rpc,
            )
        if server:
            tail = f"; {advice}" if advice else ""
            return cls(f"cannot reach {server} ({details}){tail}", field=rpc)
        return cls(f"server unavailable: {details}", field=rpc)
    if code == StatusCode.DEADLINE_EXCEEDED:
        return cls(f"deadline exceeded: {details}", field=rpc)
    if code == StatusCode.UNIMPLEMENTED:
        return cls(f"not implemented by the server: {details}", field=rpc)
    return cls(details or code.name.lower(), field=rpc)
