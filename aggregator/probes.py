"""Plain-HTTP liveness and readiness probes (``[metrics] listen``).

Every aggregator RPC, gRPC health included, needs a client certificate, and
Kubernetes probes speak neither mTLS nor, for gRPC probes, TLS at all. This small
HTTP/1.1 server answers them without any credentials, so it says nothing but
"alive" and "ready" (and why not):

- ``GET /healthz``: 200 ``ok`` whenever the event loop runs this handler (liveness);
- ``GET /readyz``: 200 ``ok`` while :class:`Readiness` has no problem, else 503 with
  a one-line reason (the store does not answer, the remote custodian is unreachable,
  the process is stopping);
- any other path 404, any other method 405, a malformed request 400.

The server runs on the aggregator's own event loop (asyncio streams): a loop that is
blocked or dead cannot answer ``/healthz``, which is what a liveness probe is for.
Requests are parsed with hard bounds (line length, header count, a read timeout, a
cap on open connections) and bodies are never read. Routes are a table of
path -> handler, so another endpoint (a Prometheus ``/metrics``) is one
:meth:`ProbeServer.add_route` call.

Nothing here is authenticated: bind it to loopback unless the probes come from
elsewhere (the kubelet dials the pod's IP, so a pod binds ``0.0.0.0``). Binding
beyond loopback is the operator's choice.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc

from blindsum.errors import ConfigError, Unavailable
from blindsum.log import get_logger

log = get_logger("blindsum.aggregator.probes")

#: Longest request line or header line accepted, in bytes.
MAX_LINE = 4096
#: Most header lines read before a request is refused.
MAX_HEADERS = 64
#: Seconds a client has to send its whole request head.
READ_TIMEOUT_S = 5.0
#: Connections served at once; more are closed unanswered.
MAX_CONNECTIONS = 32

TEXT = "text/plain; charset=utf-8"
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


def parse_listen(value: str, *, field: str = "metrics.listen") -> tuple[str, int] | None:
    """``HOST:PORT`` (``[::1]:9464`` for IPv6) as (host, port); None for "" (off).

    ConfigError naming ``field`` for anything else: no port, a port out of range, an
    empty host, whitespace.
    """
    if value == "":
        return None
    why = f'expected HOST:PORT such as 127.0.0.1:9464, or "" for off; got {value!r}'
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit() or any(c.isspace() for c in value):
        raise ConfigError(why, field=field)
    port = int(port_text)
    if port > 65535:
        raise ConfigError(why, field=field)
    if host.startswith("[") or host.endswith("]"):
        inner = host[1:-1] if host.startswith("[") and host.endswith("]") else ""
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            raise ConfigError(why, field=field) from None
        host = inner
    elif ":" in host:  # an IPv6 address without brackets: the port would be ambiguous
        raise ConfigError(why, field=field)
    return host, port


class CustodianWatch:
    """Whether a remote custodian is reachable, from its gRPC channel's connectivity.

    Cheap: no RPC, only the channel's state (asking it to connect if idle). The
    answer sticks between the states that settle it: TRANSIENT_FAILURE (or SHUTDOWN)
    means unreachable until the channel is READY again, so a channel that retries
    (CONNECTING) does not flap between the two.
    """

    def __init__(self, state: Callable[[], grpc.ChannelConnectivity]) -> None:
        self._state = state
        self._reachable = True

    @classmethod
    def of(cls, channel: grpc.aio.Channel) -> CustodianWatch:
        return cls(lambda: channel.get_state(try_to_connect=True))

    def problem(self) -> str | None:
        state = self._state()
        if state is grpc.ChannelConnectivity.READY:
            self._reachable = True
        elif state in (
            grpc.ChannelConnectivity.TRANSIENT_FAILURE,
            grpc.ChannelConnectivity.SHUTDOWN,
        ):
            self._reachable = False
        return None if self._reachable else "custodian unreachable"


@dataclass
class Readiness:
    """What ``/readyz`` answers, kept up to date by the aggregator.

    ``store`` is set by the ticker at the same moments it turns gRPC health
    NOT_SERVING and back (aggregator/service.py ``_ticker``), so the two never
    disagree. Reasons are fixed phrases: the probe is unauthenticated, so the
    details (hosts, driver errors) stay in the log.
    """

    store: str | None = None
    custodian: CustodianWatch | None = None
    stopping: bool = False

    def problem(self) -> str | None:
        """Why the aggregator should get no traffic now, or None when it is ready."""
        if self.stopping:
            return "stopping"
        if self.store is not None:
            return self.store
        if self.custodian is not None:
            return self.custodian.problem()
        return None


@dataclass(frozen=True)
class Response:
    status: int
    body: str
    content_type: str = TEXT
    headers: tuple[tuple[str, str], ...] = ()


#: A route's handler: called on the event loop for GET and HEAD of its path; one that
#: reads the store returns an awaitable (and does the reading off the loop).
Handler = Callable[[], Response | Awaitable[Response]]


class _BadRequest(Exception):
    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


class ProbeServer:
    """The HTTP probe server; ``await start()``, ``await stop()``."""

    def __init__(self, host: str, port: int, readiness: Readiness) -> None:
        self.host = host
        self.port = port
        self.readiness = readiness
        self.routes: dict[str, Handler] = {"/healthz": self._healthz, "/readyz": self._readyz}
        self._server: asyncio.Server | None = None
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)

    def add_route(self, path: str, handler: Handler) -> None:
        """Serve ``handler`` at ``path`` (for example a Prometheus ``/metrics``)."""
        if not path.startswith("/") or path in self.routes:
            raise ValueError(f"bad or duplicate route {path!r}")
        self.routes[path] = handler

    def _healthz(self) -> Response:
        return Response(200, "ok\n")

    def _readyz(self) -> Response:
        problem = self.readiness.problem()
        return Response(200, "ok\n") if problem is None else Response(503, f"{problem}\n")

    async def start(self) -> int:
        """Bind and start serving; the bound port (useful with port 0).

        Unavailable(field="metrics.listen") if the address cannot be bound."""
        try:
            self._server = await asyncio.start_server(
                self._serve, self.host, self.port, limit=MAX_LINE
            )
        except OSError as exc:
            raise Unavailable(
                f"cannot listen on {self.host}:{self.port} ({exc.strerror or exc})",
                field="metrics.listen",
            ) from None
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("probes_listening", host=self.host, port=self.port)
        return self.port

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), READ_TIMEOUT_S)
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._slots.locked():
            writer.close()
            return
        async with self._slots:
            try:
                try:
                    async with asyncio.timeout(READ_TIMEOUT_S):
                        method, path = await _read_head(reader)
                except _BadRequest as exc:
                    await _send(writer, Response(exc.status, f"{exc}\n"), head_only=False)
                    return
                except TimeoutError:
                    return
                response = await self._dispatch(method, path)
                await _send(writer, response, head_only=method == "HEAD")
            except (ConnectionError, OSError):
                pass  # the client went away
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    async def _dispatch(self, method: str, path: str) -> Response:
        if method not in ("GET", "HEAD"):
            return Response(405, "only GET and HEAD\n", headers=(("Allow", "GET, HEAD"),))
        handler = self.routes.get(path)
        if handler is None:
            return Response(404, "not found\n")
        try:
            answer = handler()
            return await answer if inspect.isawaitable(answer) else answer
        except Exception as exc:
            log.error("probe_failed", path=path, exc=exc)
            return Response(503, "probe failed\n")


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise _BadRequest(431, "request line or header too long") from None
    except asyncio.IncompleteReadError:
        raise _BadRequest(400, "incomplete request") from None


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str]:
    """The method and path of one request; its headers are read (bounded) and ignored."""
    line = (await _read_line(reader)).rstrip(b"\r\n")
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1.") or not parts[1].startswith(b"/"):
        raise _BadRequest(400, "malformed request line")
    try:
        method, target = parts[0].decode("ascii"), parts[1].decode("ascii")
    except UnicodeDecodeError:
        raise _BadRequest(400, "malformed request line") from None
    for _ in range(MAX_HEADERS):
        if (await _read_line(reader)) in (b"\r\n", b"\n"):
            return method, target.split("?", 1)[0]
    raise _BadRequest(431, "too many header lines")


async def _send(writer: asyncio.StreamWriter, response: Response, *, head_only: bool) -> None:
    body = response.body.encode("utf-8")
    lines = [
        f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "Connection: close",
        *(f"{name}: {value}" for name, value in response.headers),
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("ascii"))
    if not head_only:
        writer.write(body)
    await writer.drain()


async def start_probes(listen: str, readiness: Readiness) -> ProbeServer | None:
    """Start the probe server on ``listen`` (``[metrics] listen``); None when "" (off)."""
    address = parse_listen(listen)
    if address is None:
        return None
    server = ProbeServer(address[0], address[1], readiness)
    await server.start()
    return server


__all__ = [
    "CustodianWatch",
    "ProbeServer",
    "Readiness",
    "Response",
    "parse_listen",
    "start_probes",
]
