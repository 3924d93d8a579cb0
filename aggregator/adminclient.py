"""The admin's gRPC client for a running aggregator, built from its directory.

``aggregator open-round``, ``abort`` and the demo talk to ``aggregator serve`` with
the admin certificate that ``aggregator init`` wrote into the directory. The
address is the one the server wrote when it bound (``DIR/aggregator.addr``), else
``[server] listen``. A server that is still starting is waited for, up to a
``connect_timeout_s``, and an unreachable one gets a message that says what to run.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from aggregator import config as cfgmod
from blindsum import codec
from blindsum.log import get_logger
from blindsum.rpc.v1 import admin_pb2, admin_pb2_grpc
from blindsum.transport.errors import error_from_rpc
from blindsum.transport.pki import KeyAndCert
from blindsum.transport.tls import secure_channel

log = get_logger("blindsum.adminclient")

#: Deadline of one admin call once connected.
RPC_TIMEOUT_S = 30.0


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


async def admin_call(
    directory: Path, rpc: str, request: Any, *, connect_timeout_s: float = 0.0
) -> Any:
    """Call ``AdminService.<rpc>`` once.

    With ``connect_timeout_s`` it first waits, up to that many seconds, until a
    connection to the server is up (re-reading its address, which a starting server
    writes when it has bound). The call itself is never repeated: a request that may
    have reached the server (``open-round`` without ``--round-id``) is not sent twice.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0.0, connect_timeout_s)
    waited = False
    while True:
        channel = admin_channel(directory)
        try:
            remaining = deadline - loop.time()
            if remaining > 0:
                try:
                    await asyncio.wait_for(channel.channel_ready(), timeout=min(remaining, 2.0))
                except TimeoutError:
                    if not waited:
                        log.info("admin_waiting_for_server", address=admin_address(directory))
                        waited = True
                    continue  # closes this channel; the address may change meanwhile
            stub = admin_pb2_grpc.AdminServiceStub(channel)
            try:
                return await getattr(stub, rpc)(request, timeout=RPC_TIMEOUT_S)
            except grpc.aio.AioRpcError as exc:
                # "Start the server" only if we never got through to one.
                connected = channel.get_state() is grpc.ChannelConnectivity.READY
                raise error_from_rpc(
                    exc,
                    f"AdminService.{rpc}",
                    server="" if connected else f"the aggregator at {admin_address(directory)}",
                    advice=f"start it with `blindsum aggregator serve {directory}`, or wait "
                    "longer with --connect-timeout",
                ) from None
        finally:
            await channel.close(None)


# -- campaigns, as the CLI and the demo show them -----------------------------------


def _when(at_ms: int) -> str:
    if not at_ms:
        return "-"
    return datetime.fromtimestamp(at_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def campaign_json(info: admin_pb2.CampaignInfo) -> dict[str, Any]:
    spec = codec.open_round_from_pb(info.spec)
    return {
        "name": info.name,
        "schedule": info.schedule,
        "paused": info.paused,
        "mode": spec.mode.value,
        "parties": list(spec.parties),
        "min_contributors": spec.min_contributors,
        "dp": None if spec.dp is None else spec.dp.mode.value,
        "next_run_unix_ms": info.next_run_unix_ms,
        "last_round_id": info.last_round_id,
        "last_round_state": info.last_round_state,
    }


def format_campaign(info: admin_pb2.CampaignInfo) -> str:
    spec = codec.open_round_from_pb(info.spec)
    state = "paused" if info.paused else f"next round {_when(info.next_run_unix_ms)}"
    last = (
        f"; last round {info.last_round_id} ({info.last_round_state})" if info.last_round_id else ""
    )
    dp = "" if spec.dp is None else f", dp {spec.dp.mode.value}"
    return (
        f"{info.name}: {info.schedule}; {spec.mode.value}, {len(spec.parties)} parties, "
        f"k {spec.min_contributors}{dp}; {state}{last}"
    )
