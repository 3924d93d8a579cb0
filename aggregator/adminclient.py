"""The admin's gRPC client for a running aggregator, built from its directory.

``aggregator open-round``, ``abort`` and the demo talk to ``aggregator serve`` with
the admin certificate that ``aggregator init`` wrote into the directory. The
address is the one the server wrote when it bound (``DIR/aggregator.addr``), else
``[server] listen``. A server that is still starting is waited for, up to a
``connect_timeout_s``, and an unreachable one gets a message that says what to run.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from aggregator import config as cfgmod
from blindsum.errors import Unavailable
from blindsum.rpc.v1 import admin_pb2_grpc
from blindsum.transport.errors import error_from_rpc
from blindsum.transport.pki import KeyAndCert
from blindsum.transport.tls import secure_channel

#: Deadline of one admin call once connected.
RPC_TIMEOUT_S = 30.0
#: Pause between connection attempts while waiting for a server that is starting.
RETRY_PAUSE_S = 0.25


def admin_address(directory: Path) -> str:
    """Where ``aggregator serve DIR`` listens: the bound address it wrote, else the config's."""
    path = directory / cfgmod.ADDRESS_FILE
    if path.exists():
        written = path.read_text().strip()
        if written:
            return written
    return cfgmod.load(directory).server.listen


def admin_channel(directory: Path) -> grpc.aio.Channel:
    """A secure channel to the aggregator under the admin certificate of ``directory``."""
    cfg = cfgmod.load(directory)
    tls = KeyAndCert(
        key_pem=cfgmod.resolve(directory, cfg.tls.admin_key).read_bytes(),
        cert_pem=cfgmod.resolve(directory, cfg.tls.admin_cert).read_bytes(),
    )
    ca = cfgmod.resolve(directory, cfg.tls.ca_cert).read_bytes()
    return secure_channel(admin_address(directory), tls, ca, server_name=cfg.server.server_name)


def unreachable(directory: Path, rpc: str, detail: str) -> Unavailable:
    """The one-line error for a server that does not answer, saying what to run."""
    return Unavailable(
        f"cannot reach the aggregator at {admin_address(directory)} ({detail}); "
        f"start it with `blindsum aggregator serve {directory}`, or wait longer with "
        "--connect-timeout",
        field=f"AdminService.{rpc}",
    )


async def admin_call(
    directory: Path, rpc: str, request: Any, *, connect_timeout_s: float = 0.0
) -> Any:
    """Call ``AdminService.<rpc>``. While the server cannot be reached (refused, not yet
    listening), retry for up to ``connect_timeout_s`` seconds, re-reading its address
    each time; any answer from the server, error or not, ends the wait."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0.0, connect_timeout_s)
    while True:
        channel = admin_channel(directory)
        try:
            stub = admin_pb2_grpc.AdminServiceStub(channel)
            try:
                return await getattr(stub, rpc)(request, timeout=RPC_TIMEOUT_S)
            except grpc.aio.AioRpcError as exc:
                if exc.code() is not grpc.StatusCode.UNAVAILABLE:
                    raise error_from_rpc(exc, f"AdminService.{rpc}") from None
                if loop.time() >= deadline:
                    err = error_from_rpc(exc, f"AdminService.{rpc}")
                    if "TLS" in err.message or "certificate" in err.message:
                        raise err from None
                    raise unreachable(directory, rpc, exc.details() or "unavailable") from None
        finally:
            await channel.close(None)
        await asyncio.sleep(RETRY_PAUSE_S)
