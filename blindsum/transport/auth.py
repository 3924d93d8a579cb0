"""Peer identity from the verified client certificate, and per-service authorization.

Who is rejected where:

- A client with **no certificate**, or a certificate that does **not chain to the
  blindsum CA**, is rejected in the TLS handshake itself, because the server
  credentials require and verify client certificates
  (``require_client_auth=True``). No RPC runs; the client sees ``UNAVAILABLE``.
  gRPC's Python API can only require-and-verify, so this cannot be turned into an
  RPC-level status.
- A certificate that chains to the CA but carries no valid
  ``spiffe://blindsum/<role>/<name>`` URI SAN, or whose identity ``is_known``
  rejects (not enrolled, revoked), gets ``UNAUTHENTICATED``.
- A valid identity whose role the policy does not allow for the service gets
  ``PERMISSION_DENIED``; a service absent from the policy gets ``UNIMPLEMENTED``.
- Only then is the request body looked at: it arrives as raw bytes, is checked
  against the method's :class:`~blindsum.transport.wire.Limit` (over its byte cap:
  ``RESOURCE_EXHAUSTED``; too many elements or not protobuf: ``INVALID_ARGUMENT``)
  and parsed (``INVALID_ARGUMENT`` naming the method if it does not parse). So a
  caller the policy refuses never gets a byte parsed.

Identity always comes from the certificate (``auth_context``), never from metadata.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import grpc
import grpc.aio
from google.protobuf.message import DecodeError

from blindsum import tracing
from blindsum.errors import InvalidArgument, Unauthenticated, Unavailable
from blindsum.log import get_logger
from blindsum.transport import wire
from blindsum.transport.pki import Identity, Role, cert_not_before_ms, identity_from_cert_pem

_log = get_logger(__name__)

#: The standard health service: open to any authenticated (and known) peer.
HEALTH_SERVICE = "grpc.health.v1.Health"
#: A refused call: its status and details.
Refusal: TypeAlias = "tuple[grpc.StatusCode, str]"
#: A parsed request, or why it was refused.
Parsed: TypeAlias = "tuple[Any, Refusal | None]"
#: What a request may carry where the interceptor has no limit for its method.
DEFAULT_LIMIT = wire.Limit(max_bytes=64 * 1024, max_elements=1024)
_PEM_CERT_KEY = "x509_pem_cert"

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

#: Why a call was refused before its servicer ran, by the status it got (metrics).
_REFUSAL_REASONS = {
    grpc.StatusCode.UNAUTHENTICATED: "unauthenticated",
    grpc.StatusCode.PERMISSION_DENIED: "role",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "too_large",
    grpc.StatusCode.INVALID_ARGUMENT: "malformed",
    grpc.StatusCode.UNAVAILABLE: "registry_unavailable",
    grpc.StatusCode.INTERNAL: "internal",
}


class CallObserver(Protocol):
    """What the interceptor reports, for metrics: every call's final status, and every
    refusal before the servicer ran (the caller's role, or "none", and why)."""

    def call(self, method: str, code: grpc.StatusCode | None) -> None: ...

    def refusal(self, role: str, reason: str, *, who: str, method: str) -> None: ...


Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"

if TYPE_CHECKING:
    _InterceptorBase = grpc.aio.ServerInterceptor[Any, Any]
else:  # the runtime class is not generic
    _InterceptorBase = grpc.aio.ServerInterceptor


def peer_identity(context: Context) -> Identity:
    """The caller's identity from its TLS client certificate's URI SAN.

    Raises Unauthenticated if the connection carries no client certificate or
    the certificate has no valid blindsum identity.
    """
    auth = context.auth_context()
    certs = list(auth.get(_PEM_CERT_KEY, ()))
    if len(certs) != 1:
        raise Unauthenticated("no client certificate on this connection", field="peer")
    return identity_from_cert_pem(certs[0])


def peer_cert_issued_ms(context: Context) -> int:
    """The not-before time (UTC ms) of the caller's client certificate (0 without one)."""
    certs = list(context.auth_context().get(_PEM_CERT_KEY, ()))
    return cert_not_before_ms(certs[0]) if len(certs) == 1 else 0


def _service_of(method: str) -> str:
    """``"/pkg.Service/Method"`` -> ``"pkg.Service"`` ("" if malformed)."""
    parts = method.split("/")
    if len(parts) != 3 or parts[0] or not parts[1] or not parts[2]:
        return ""
    return parts[1]


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


class AuthorizationInterceptor(_InterceptorBase):
    """Allow a call only if the peer's role is in ``policy[service]``.

    ``policy`` maps full service names (``"blindsum.rpc.v1.RoundService"``) to the
    roles allowed to call them; everything else is denied. ``is_known`` (optional)
    checks enrollment, revocation and renewal (given the identity and the not-before
    time of its certificate, in ms): it answers at once (a bool) or, when it has to
    ask a database, returns an awaitable that must not block the event loop.

    The peer certificate is only reachable from the servicer context, so the check
    runs inside a wrapper around the method handler, before the servicer method.
    """

    def __init__(
        self,
        policy: Mapping[str, frozenset[Role]],
        is_known: Callable[[Identity, int], bool | Awaitable[bool]] | None = None,
        *,
        limits: Mapping[str, wire.Limit] | None = None,
        default_limit: wire.Limit = DEFAULT_LIMIT,
        observer: CallObserver | None = None,
    ) -> None:
        checked: dict[str, frozenset[Role]] = {}
        for service, roles in policy.items():
            if not service or "/" in service:
                raise InvalidArgument(f"bad service name {service!r}", field="policy")
            if not all(isinstance(r, Role) for r in roles):
                raise InvalidArgument(f"roles for {service} must be Role values", field="policy")
            checked[service] = frozenset(roles)
        self._policy: Mapping[str, frozenset[Role]] = MappingProxyType(checked)
        self._is_known = is_known
        for method in limits or {}:
            if not _service_of(method):
                raise InvalidArgument(f"bad method name {method!r}", field="limits")
        self._limits: Mapping[str, wire.Limit] = MappingProxyType(dict(limits or {}))
        self._default_limit = default_limit
        self.trimmer = wire.HeapTrimmer()
        self._observer = observer

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        method = handler_call_details.method
        service = _service_of(method)
        if service != HEALTH_SERVICE and service not in self._policy:
            _log.warning("rpc_denied", method=method, reason="unknown_service")
            return _abort_handler(grpc.StatusCode.UNIMPLEMENTED, f"unknown service {service!r}")
        handler = await continuation(handler_call_details)
        if handler is None:
            # Unknown method of a known service: grpc itself answers UNIMPLEMENTED.
            return handler
        return self._wrap(handler, service, method)

    async def _refusal(self, service: str, method: str, context: Context) -> Refusal | None:
        """Why the peer may not call ``service`` (a status and details), or None."""
        try:
            identity = peer_identity(context)
        except Unauthenticated as err:
            _log.warning("rpc_denied", method=method, reason="no_identity", exc=err)
            return grpc.StatusCode.UNAUTHENTICATED, err.message
        if self._is_known is not None:
            try:
                # Only a party's certificate can have been replaced by a renewal.
                issued = peer_cert_issued_ms(context) if identity.role is Role.PARTY else 0
                answer = self._is_known(identity, issued)
                known = await answer if inspect.isawaitable(answer) else answer
            except Unavailable as err:
                # The registry is away (its database): a retryable condition, not a bug.
                _log.warning("rpc_identity_check_unavailable", method=method, exc=err)
                return grpc.StatusCode.UNAVAILABLE, f"{method}: {err.message}"
            except Exception as err:
                _log.error("rpc_identity_check_failed", method=method, peer=identity.uri, exc=err)
                return grpc.StatusCode.INTERNAL, f"internal error in {method}"
            if not known:
                _log.warning("rpc_denied", method=method, peer=identity.uri, reason="not_known")
                return (
                    grpc.StatusCode.UNAUTHENTICATED,
                    f"{identity.uri} is not enrolled, has been revoked, or presents a "
                    "certificate that a renewal replaced",
                )
        if service == HEALTH_SERVICE:
            return None
        if identity.role not in self._policy[service]:
            _log.warning("rpc_denied", method=method, peer=identity.uri, reason="role")
            return (
                grpc.StatusCode.PERMISSION_DENIED,
                f"role {identity.role.value} may not call {service}",
            )
        return None

    def _parser(self, handler: Handler, method: str) -> Callable[[bytes], Parsed]:
        """Check raw request bytes against the method's limit, then parse them: the
        request, or a refusal (nothing raised, so no traceback keeps the bytes)."""
        deserialize = handler.request_deserializer
        message_type = getattr(deserialize, "__self__", None)
        descriptor = getattr(message_type, "DESCRIPTOR", None)
        limit = self._limits.get(method, self._default_limit)
        name = getattr(descriptor, "name", "request")
        trimmer = self.trimmer

        def parse(raw: bytes) -> Parsed:
            size = len(raw)
            try:
                # A handler that takes raw bytes (_wrap refuses a deserializer without a
                # descriptor, so that is the only case here): the byte cap still holds.
                if deserialize is None or descriptor is None:
                    if size > limit.max_bytes:
                        raise wire.TooLarge(f"{method}: request too large")
                    return raw, None
                wire.check(raw, descriptor, limit, method)
                return deserialize(raw), None
            except wire.TooLarge as err:
                _log.warning("rpc_refused", method=method, reason="too_large", size=size)
                trimmer.refused(size)
                return None, (grpc.StatusCode.RESOURCE_EXHAUSTED, err.message)
            except InvalidArgument as err:
                _log.warning("rpc_refused", method=method, reason="malformed", field=err.field)
                trimmer.refused(size)
                return None, (grpc.StatusCode.INVALID_ARGUMENT, err.message)
            except (DecodeError, ValueError, TypeError):
                _log.warning("rpc_refused", method=method, reason="undecodable")
                trimmer.refused(size)
                return None, (
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"{method}: request body is not a valid {name}",
                )

        return parse

    def _admit(
        self, service: str, method: str, parse: Callable[[bytes], Parsed]
    ) -> Callable[[list[bytes], Context], Awaitable[Any]]:
        """Authorize, then check and parse: the request, or the call aborted. The raw
        body comes in a one-item list that is emptied before any abort, so no frame
        in the abort's traceback holds a refused body."""
        refusal_of, trimmer, observer = self._refusal, self.trimmer, self._observer

        async def admit(box: list[bytes], context: Context) -> Any:
            refusal = await refusal_of(service, method, context)
            request = None
            if refusal is None:
                request, refusal = parse(box[0])
            else:
                trimmer.refused(len(box[0]))
            box.clear()
            if refusal is not None:
                if observer is not None:
                    role, who = _caller(context)
                    reason = _REFUSAL_REASONS.get(refusal[0], "other")
                    observer.refusal(role, reason, who=who, method=method)
                await context.abort(*refusal)
            return request

        return admit

    def _wrap(self, handler: Handler, service: str, method: str) -> Handler:
        observer = self._observer
        rpc_name = method.rsplit("/", 1)[-1]

        def observe(context: Context, current: Any) -> None:
            code = context.code()
            tracing.set_attribute(
                current, "rpc.grpc.status_code", (code or grpc.StatusCode.OK).name
            )
            if observer is not None:
                observer.call(method, code)

        if handler.request_deserializer is not None and not hasattr(
            getattr(handler.request_deserializer, "__self__", None), "DESCRIPTOR"
        ):
            # Fail closed: a request that cannot be checked before it is parsed is refused.
            return _abort_handler(
                grpc.StatusCode.UNIMPLEMENTED, f"{method}: no request type to check"
            )
        if handler.unary_unary is not None:
            # grpc-stubs types behaviours for the sync API; aio passes an aio context.
            inner_uu: Callable[..., Any] = handler.unary_unary
            admit_uu = self._admit(service, method, self._parser(handler, method))

            # The request arrives as raw bytes (no deserializer): nothing is parsed
            # before the caller is authorized and the bytes fit the method's limit.
            async def unary_unary(raw: bytes, context: Context) -> Any:
                box = [raw]
                del raw
                with tracing.span(f"rpc {rpc_name}", **{"rpc.method": method}) as current:
                    try:
                        request = await admit_uu(box, context)
                        return await _maybe_await(inner_uu(request, context))
                    finally:
                        observe(context, current)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary,
                request_deserializer=None,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            # grpc-stubs types behaviours for the sync API; aio passes an aio context.
            inner_us: Callable[..., Any] = handler.unary_stream
            admit_us = self._admit(service, method, self._parser(handler, method))

            async def unary_stream(raw: bytes, context: Context) -> None:
                box = [raw]
                del raw
                with tracing.span(f"rpc {rpc_name}", **{"rpc.method": method}) as current:
                    try:
                        request = await admit_us(box, context)
                        await _drain(inner_us(request, context), context)
                    finally:
                        observe(context, current)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream,
                request_deserializer=None,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None or handler.stream_stream is not None:
            # Fail closed: gRPC would parse each streamed message before this check
            # could run. blindsum serves no client-streaming call.
            return _abort_handler(
                grpc.StatusCode.UNIMPLEMENTED, f"{method}: client-streaming calls are not served"
            )
        return _abort_handler(grpc.StatusCode.UNIMPLEMENTED, f"unsupported handler for {method}")


async def _drain(result: Any, context: Context) -> None:
    """Run a streaming behaviour: an (async) iterator of responses, or a coroutine
    that writes with ``context.write`` itself."""
    if hasattr(result, "__aiter__"):
        async for item in result:
            await context.write(item)
    elif inspect.isawaitable(result):
        await result
    elif isinstance(result, Iterable):
        for item in result:
            await context.write(item)


def _caller(context: Context) -> tuple[str, str]:
    """The caller's role and identity URI, or ("none", "unknown") without one."""
    try:
        identity = peer_identity(context)
    except Unauthenticated:
        return "none", "unknown"
    return identity.role.value, identity.uri


def _abort_handler(code: grpc.StatusCode, details: str) -> Handler:
    async def abort(_request: Any, context: Context) -> Any:
        await context.abort(code, details)

    return grpc.unary_unary_rpc_method_handler(abort)
