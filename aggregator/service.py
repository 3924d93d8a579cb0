"""gRPC servicers and server assembly for the aggregator.

Servicers are thin: they take the caller's identity from its certificate,
decode with :mod:`blindsum.codec`, call the :class:`RoundManager`, and encode.
Errors are translated to status codes in one place (``@translate``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from aggregator import config as cfgmod
from aggregator.access import AccessWatch, ServiceObserver
from aggregator.admin import RETIRED_DIR, load_mac_key
from aggregator.campaigns import CampaignStatus
from aggregator.custodian import Custodian, CustodianServicer, GrpcCustodianClient
from aggregator.metrics import Metrics, aggregator_certs, expiring, party_certs
from aggregator.probes import (
    CustodianWatch,
    ProbeServer,
    Readiness,
    Response,
    parse_listen,
    start_probes,
)
from aggregator.release import policy_from_config
from aggregator.rounds import Ack, CustodianClient, RoundManager, RoundSettings
from aggregator.store import PartyRecord, Store, now_ms, open_store
from blindsum import codec
from blindsum.crypto.he import BfvSecretContext
from blindsum.crypto.sign import SigningKey, VerifyKey
from blindsum.errors import ConfigError, InvalidArgument, NotFound, PermissionDenied, Unavailable
from blindsum.log import get_logger
from blindsum.model import Report
from blindsum.protocol.he import context_hash
from blindsum.protocol.secagg import Complaint
from blindsum.rpc.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    common_pb2,
    custodian_pb2_grpc,
    report_pb2,
    report_pb2_grpc,
    round_pb2,
    round_pb2_grpc,
)
from blindsum.transport import wire
from blindsum.transport.auth import AuthorizationInterceptor, peer_identity
from blindsum.transport.errors import translate
from blindsum.transport.pki import Identity, KeyAndCert, Role
from blindsum.transport.server import (
    HealthServicer,
    add_health,
    add_secure_port,
    create_server,
)
from blindsum.transport.tls import MAX_MESSAGE_BYTES, secure_channel, server_credentials

log = get_logger("blindsum.aggregator")

ADDRESS_FILE = cfgmod.ADDRESS_FILE


Ctx = grpc.aio.ServicerContext[Any, Any]


def _ack(ack: Ack) -> common_pb2.Ack:
    return common_pb2.Ack(digest_hex=ack.digest_hex, replay=ack.replay)


def _party(context: Ctx) -> str:
    ident = peer_identity(context)
    if ident.role is not Role.PARTY:
        raise PermissionDenied("only party certificates may call the round service")
    return ident.name


class RoundServicer(round_pb2_grpc.RoundServiceServicer):
    def __init__(self, manager: RoundManager) -> None:
        self.m = manager

    @translate
    async def ListRounds(  # noqa: N802 - gRPC method name
        self, request: round_pb2.ListRoundsRequest, context: Ctx
    ) -> round_pb2.ListRoundsResponse:
        party = _party(context)
        views = await self.m.offload(self.m.list_rounds, party=party, only_open=request.only_open)
        return round_pb2.ListRoundsResponse(rounds=[codec.round_view_to_pb(v) for v in views])

    @translate
    async def GetRound(  # noqa: N802 - gRPC method name
        self, request: common_pb2.RoundRef, context: Ctx
    ) -> common_pb2.RoundInfo:
        party = _party(context)
        if request.wait_ms:
            # The long poll's first look is the answer when the phase already moved (and
            # it checks the invitation): no separate read first.
            known = codec.phase_from_pb(request.known_phase, field="RoundRef.known_phase")
            view = await self.m.watch(request.round_id, known, request.wait_ms, party=party)
        else:
            view = await self.m.offload(self.m.party_view, request.round_id, party)
        return codec.round_view_to_pb(view)

    @translate
    async def Commit(  # noqa: N802 - gRPC method name
        self, request: round_pb2.CommitRequest, context: Ctx
    ) -> common_pb2.Ack:
        party = _party(context)
        await self.m.offload(self.m.require_invited, party, request.round_id)
        commit = codec.commit_from_request(party, request)
        ack = await self.m.commit(
            party, request.round_id, request.schema_id, commit, request.SerializeToString()
        )
        return _ack(ack)

    @translate
    async def GetCommits(  # noqa: N802 - gRPC method name
        self, request: common_pb2.RoundRef, context: Ctx
    ) -> round_pb2.CommitList:
        party = _party(context)
        return await self.m.commits(party, request.round_id)

    @translate
    async def Advertise(  # noqa: N802 - gRPC method name
        self, request: round_pb2.AdvertiseRequest, context: Ctx
    ) -> common_pb2.Ack:
        party = _party(context)
        await self.m.offload(self.m.require_invited, party, request.round_id)
        advert = codec.advert_from_request(party, request)
        ack = await self.m.advertise(
            party, request.round_id, request.schema_id, advert, request.SerializeToString()
        )
        return _ack(ack)

    @translate
    async def GetRoster(  # noqa: N802 - gRPC method name
        self, request: common_pb2.RoundRef, context: Ctx
    ) -> round_pb2.Roster:
        party = _party(context)
        return await self.m.roster(party, request.round_id)

    @translate
    async def SubmitShares(  # noqa: N802 - gRPC method name
        self, request: round_pb2.SubmitSharesRequest, context: Ctx
    ) -> common_pb2.Ack:
        party = _party(context)
        invited = await self.m.offload(self.m.require_invited, party, request.round_id)
        shares = codec.shares_from_pb(request.envelopes, max_count=invited)
        ack = await self.m.submit_shares(
            party, request.round_id, shares, request.SerializeToString()
        )
        return _ack(ack)

    @translate
    async def GetEnvelopes(  # noqa: N802 - gRPC method name
        self, request: common_pb2.RoundRef, context: Ctx
    ) -> round_pb2.EnvelopeSet:
        party = _party(context)
        shares, u2 = await self.m.envelopes(party, request.round_id)
        return round_pb2.EnvelopeSet(
            round_id=request.round_id, envelopes=codec.shares_to_pb(shares), shared=u2
        )

    @translate
    async def SubmitMasked(  # noqa: N802 - gRPC method name
        self, request: round_pb2.SubmitMaskedRequest, context: Ctx
    ) -> common_pb2.Ack:
        party = _party(context)
        complaints: list[Complaint] = []
        if request.complaints:
            invited = await self.m.offload(self.m.require_invited, party, request.round_id)
            complaints = codec.complaints_from_pb(party, request.complaints, max_count=invited)
        ack = await self.m.submit_masked(
            party, request.round_id, request.schema_id, request.masked_vector, complaints
        )
        return _ack(ack)

    @translate
    async def GetUnmaskRequest(  # noqa: N802 - gRPC method name
        self, request: common_pb2.RoundRef, context: Ctx
    ) -> round_pb2.UnmaskRequest:
        party = _party(context)
        return await self.m.unmask_request(party, request.round_id)

    @translate
    async def SubmitConsistency(  # noqa: N802 - gRPC method name
        self, request: round_pb2.SubmitConsistencyRequest, context: Ctx
    ) -> common_pb2.Ack:
        party = _party(context)
        if len(request.signature) != 64:
            raise InvalidArgument("expected a 64-byte Ed25519 signature", field="signature")
        ack = await self.m.submit_consistency(
            party, request.round_id, request.signature, request.SerializeToString()
        )
        return _ack(ack)

    @translate
    async def SubmitUnmask(  # noqa: N802 - gRPC method name
        self, request: round_pb2.SubmitUnmaskRequest, context: Ctx
    ) -> common_pb2.Ack:
        party = _party(context)
        invited = await self.m.offload(self.m.require_invited, party, request.round_id)
        reveals = codec.reveals_from_pb(request.shares, max_count=2 * invited)
        ack = await self.m.submit_unmask(
            party, request.round_id, reveals, request.SerializeToString()
        )
        return _ack(ack)

    @translate
    async def GetPublicContext(  # noqa: N802 - gRPC method name
        self, request: common_pb2.RoundRef, context: Ctx
    ) -> round_pb2.PublicContext:
        party = _party(context)
        return codec.public_context_to_pb(await self.m.public_context(party, request.round_id))

    @translate
    async def SubmitCiphertext(  # noqa: N802 - gRPC method name
        self, request: round_pb2.SubmitCiphertextRequest, context: Ctx
    ) -> common_pb2.Ack:
        party = _party(context)
        ack = await self.m.submit_ciphertext(
            party,
            request.round_id,
            request.schema_id,
            list(request.chunks),
            request.receipt_signature,
            context=request.context_hash,
        )
        return _ack(ack)


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, manager: RoundManager) -> None:
        self.m = manager

    @translate
    async def OpenRound(  # noqa: N802 - gRPC method name
        self, request: admin_pb2.OpenRoundRequest, context: Ctx
    ) -> common_pb2.RoundInfo:
        spec = codec.open_round_from_pb(request)
        return codec.round_view_to_pb(await self.m.open_round(spec))

    @translate
    async def GetStatus(  # noqa: N802 - gRPC method name
        self, request: common_pb2.RoundRef, context: Ctx
    ) -> common_pb2.RoundInfo:
        return codec.round_view_to_pb(await self.m.offload(self.m.view, request.round_id))

    @translate
    async def ListRounds(  # noqa: N802 - gRPC method name
        self, request: admin_pb2.ListAllRoundsRequest, context: Ctx
    ) -> admin_pb2.ListAllRoundsResponse:
        return admin_pb2.ListAllRoundsResponse(
            rounds=[codec.round_view_to_pb(v) for v in await self.m.offload(self.m.list_rounds)]
        )

    @translate
    async def AbortRound(  # noqa: N802 - gRPC method name
        self, request: admin_pb2.AbortRoundRequest, context: Ctx
    ) -> common_pb2.RoundInfo:
        return codec.round_view_to_pb(await self.m.abort(request.round_id, request.reason))

    @translate
    async def SaveCampaign(  # noqa: N802 - gRPC method name
        self, request: admin_pb2.SaveCampaignRequest, context: Ctx
    ) -> admin_pb2.CampaignInfo:
        spec = codec.open_round_from_pb(request.spec)
        status = await self.m.save_campaign(
            request.name, request.schedule, spec, overwrite=request.replace
        )
        return campaign_to_pb(status)

    @translate
    async def ListCampaigns(  # noqa: N802 - gRPC method name
        self, request: admin_pb2.ListCampaignsRequest, context: Ctx
    ) -> admin_pb2.ListCampaignsResponse:
        listed = await self.m.list_campaigns()
        return admin_pb2.ListCampaignsResponse(campaigns=[campaign_to_pb(c) for c in listed])

    @translate
    async def SetCampaignPaused(  # noqa: N802 - gRPC method name
        self, request: admin_pb2.SetCampaignPausedRequest, context: Ctx
    ) -> admin_pb2.CampaignInfo:
        return campaign_to_pb(await self.m.set_campaign_paused(request.name, request.paused))

    @translate
    async def DeleteCampaign(  # noqa: N802 - gRPC method name
        self, request: admin_pb2.CampaignRef, context: Ctx
    ) -> admin_pb2.CampaignInfo:
        return campaign_to_pb(await self.m.delete_campaign(request.name))


def campaign_to_pb(status: CampaignStatus) -> admin_pb2.CampaignInfo:
    c = status.campaign
    return admin_pb2.CampaignInfo(
        name=c.name,
        schedule=str(c.schedule),
        paused=c.paused,
        spec=codec.open_round_to_pb(c.spec),
        created_unix_ms=c.created_ms,
        next_run_unix_ms=status.next_run_ms,
        last_round_id=status.last_round_id,
        last_round_state=status.last_round_state,
    )


class ReportServicer(report_pb2_grpc.ReportServiceServicer):
    def __init__(self, manager: RoundManager, watch: AccessWatch | None = None) -> None:
        self.m = manager
        self.watch = watch

    @translate
    async def GetReport(  # noqa: N802 - gRPC method name
        self, request: common_pb2.RoundRef, context: Ctx
    ) -> report_pb2.Report:
        who = peer_identity(context).uri
        watch = self.watch

        def fetch() -> Report:
            report = self.m.report(request.round_id)
            if watch is not None:
                watch.report_fetched(who, report.round_id)  # every fetch is audited
            return report

        return codec.report_to_pb(await self.m.offload(fetch))


POLICY = {
    "blindsum.rpc.v1.RoundService": frozenset({Role.PARTY}),
    "blindsum.rpc.v1.AdminService": frozenset({Role.ADMIN}),
    "blindsum.rpc.v1.ReportService": frozenset({Role.READER, Role.ADMIN}),
}
CUSTODIAN_POLICY = {"blindsum.rpc.v1.CustodianService": frozenset({Role.AGGREGATOR})}

#: Wire bytes one list entry may take: an envelope (two names of at most 256
#: characters, a nonce, a sealed pair of shares) or a revealed share, with room.
ENTRY_BYTES = 1024
#: Most ciphertext chunks an he submission or decryption carries.
MAX_CHUNKS = 4096


def request_limits(max_parties: int, max_vector_length: int) -> dict[str, wire.Limit]:
    """Per-method caps on a request's wire bytes and elements, checked before it is
    parsed (``AuthorizationInterceptor``). They follow what a method can carry in a
    round of ``max_parties`` and ``max_vector_length``; every other method takes
    ``auth.DEFAULT_LIMIT`` (64 KiB, 1,024 elements)."""
    n, m = max_parties, max_vector_length
    rs, admin = "/blindsum.rpc.v1.RoundService/", "/blindsum.rpc.v1.AdminService/"
    return {
        rs + "SubmitShares": wire.Limit(4096 + n * ENTRY_BYTES, 16 + 6 * n),
        rs + "SubmitUnmask": wire.Limit(4096 + n * ENTRY_BYTES, 16 + 5 * n),
        # The vector, and at most one complaint per other party.
        rs + "SubmitMasked": wire.Limit(4096 + 8 * m + n * ENTRY_BYTES, 16 + 4 * n),
        rs + "SubmitCiphertext": wire.Limit(MAX_MESSAGE_BYTES, 16 + MAX_CHUNKS),
        admin + "OpenRound": wire.Limit((1 << 20) + n * 300, 256 + n),
    }


def custodian_limits(max_parties: int) -> dict[str, wire.Limit]:
    """The custodian's one large call: the aggregate's chunks, one receipt (three
    fields) per party, the schema."""
    return {
        "/blindsum.rpc.v1.CustodianService/Decrypt": wire.Limit(
            MAX_MESSAGE_BYTES, 64 + MAX_CHUNKS + 4 * max_parties
        ),
    }


#: How long a party's enrollment check is reused for its later calls: a revocation
#: (or an enrollment) takes effect within this long.
ENROLLED_TTL_S = 1.0


def _enrolled(
    store: Store, clock_ms: Callable[[], int] = now_ms
) -> Callable[[Identity, int], bool | Awaitable[bool]]:
    """Whether a caller is enrolled, not revoked, and not presenting a certificate that
    a renewal replaced once its overlap is over. A party's record is read from the
    store (off the event loop) and reused for ENROLLED_TTL_S, so a party polling the
    round costs no query per call."""
    seen: dict[str, tuple[float, PartyRecord | None]] = {}

    def read(name: str) -> PartyRecord | None:
        try:
            record: PartyRecord | None = store.party(name)
        except NotFound:
            record = None
        if len(seen) > 100_000:
            seen.clear()  # bounded: a flood of names cannot grow it without end
        seen[name] = (time.monotonic(), record)
        return record

    def judge(record: PartyRecord | None, issued_ms: int) -> bool:
        return record is not None and record.accepts(issued_ms, clock_ms())

    def is_known(identity: Identity, issued_ms: int) -> bool | Awaitable[bool]:
        if identity.role is not Role.PARTY:
            return True
        hit = seen.get(identity.name)
        if hit is not None and time.monotonic() - hit[0] < ENROLLED_TTL_S:
            return judge(hit[1], issued_ms)

        async def fresh() -> bool:
            return judge(await asyncio.to_thread(read, identity.name), issued_ms)

        return fresh()

    return is_known


@dataclass
class RunningAggregator:
    """A started aggregator (and embedded custodian); ``stop()`` shuts both down."""

    server: grpc.aio.Server
    port: int
    manager: RoundManager
    store: Store
    custodian_server: grpc.aio.Server | None = None
    custodian_port: int = 0
    channels: list[grpc.aio.Channel] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    health: HealthServicer | None = None
    #: What the plain-HTTP /readyz answers; the ticker keeps it in step with health.
    readiness: Readiness = field(default_factory=Readiness)
    #: The ``[metrics] listen`` probe server, when configured.
    probes: ProbeServer | None = None

    async def stop(self, grace: float | None = 2.0) -> None:
        self.readiness.stopping = True
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.server.stop(grace)
        for channel in self.channels:
            await channel.close(None)
        if self.custodian_server is not None:
            await self.custodian_server.stop(grace)
        with contextlib.suppress(Exception):  # a store that is away keeps them to expiry
            self.manager.release_leases()
        self.manager.close()
        if self.probes is not None:
            await self.probes.stop()
        self.store.close()


def _read(directory: Path, value: str) -> bytes:
    return cfgmod.resolve(directory, value).read_bytes()


def load_custodian(directory: Path, cfg: cfgmod.AggregatorConfig) -> Custodian:
    key_dir = cfgmod.resolve(directory, cfg.custodian.key_dir)
    secret = BfvSecretContext.from_bytes((key_dir / "bfv-secret.bin").read_bytes())
    signing = SigningKey.from_pem((key_dir / "signing.key").read_bytes())
    store = open_store(cfg.custodian.store_url, base_dir=directory)
    retired = {}
    for path in sorted((key_dir / RETIRED_DIR).glob("*.bin")):
        old = BfvSecretContext.from_bytes(path.read_bytes())
        retired[context_hash(old.public_bytes())] = old
    return Custodian(
        secret=secret,
        signing_key=signing,
        ca_cert_pem=_read(directory, cfg.tls.ca_cert),
        store=store,
        min_receipts=cfg.custodian.min_receipts,
        retired=retired,
    )


async def start_custodian(
    directory: Path,
    cfg: cfgmod.AggregatorConfig,
    listen: str,
    *,
    metrics: Metrics | None = None,
) -> tuple[grpc.aio.Server, int, Custodian]:
    custodian = load_custodian(directory, cfg)
    if metrics is not None:
        custodian.on_decrypt = metrics.decryption
    key_dir = cfgmod.resolve(directory, cfg.custodian.key_dir)
    tls = KeyAndCert(
        key_pem=(key_dir / "tls.key").read_bytes(), cert_pem=(key_dir / "tls.crt").read_bytes()
    )
    limits = custodian_limits(cfg.rounds.max_parties)
    server = create_server([AuthorizationInterceptor(CUSTODIAN_POLICY, limits=limits)])
    custodian_pb2_grpc.add_CustodianServiceServicer_to_server(CustodianServicer(custodian), server)
    add_health(server)
    port = add_secure_port(server, listen, server_credentials(tls, custodian.ca_cert_pem))
    await server.start()
    log.info("custodian_listening", port=port)
    return server, port, custodian


async def start_aggregator(
    directory: Path,
    *,
    listen: str | None = None,
    config: cfgmod.AggregatorConfig | None = None,
    tick: bool = True,
    clock_ms: Callable[[], int] | None = None,
) -> RunningAggregator:
    """Start the aggregator (and the embedded custodian) from ``directory``.

    ``clock_ms`` replaces the wall clock that phase deadlines are measured on (tests
    pass a clock they can step, so no test waits for a deadline in real time)."""
    cfg = config or cfgmod.load(directory)
    if not cfg.rounds.lease_ttl_s > 0:
        raise ConfigError("must be a positive number of seconds", field="rounds.lease_ttl_s")
    if cfg.server.max_concurrent_rpcs < 1:
        raise ConfigError("must be a positive count", field="server.max_concurrent_rpcs")
    parse_listen(cfg.metrics.listen)  # a malformed address fails before anything starts
    ca_pem = _read(directory, cfg.tls.ca_cert)
    tls = KeyAndCert(key_pem=_read(directory, cfg.tls.key), cert_pem=_read(directory, cfg.tls.cert))
    mac_key = load_mac_key(directory, cfg)
    store = open_store(cfg.store.url, base_dir=directory)
    store.use_mac_key(mac_key)
    custodian_server: grpc.aio.Server | None = None
    server: grpc.aio.Server | None = None
    probes: ProbeServer | None = None
    channels: list[grpc.aio.Channel] = []
    readiness = Readiness()
    metrics = Metrics() if cfg.metrics.listen else None
    try:
        # One SQLite file serves one process; refused before anything listens.
        store.claim_serving()
        custodian_client: CustodianClient | None = None
        custodian_port = 0
        key_dir = cfgmod.resolve(directory, cfg.custodian.key_dir)
        custodian_pub = key_dir / "signing.pub"
        if cfg.custodian.embedded:
            custodian_server, custodian_port, _ = await start_custodian(
                directory, cfg, cfg.custodian.listen, metrics=metrics
            )
            target = f"127.0.0.1:{custodian_port}"
        else:
            target = cfg.custodian.address
        if target:
            channel = secure_channel(target, tls, ca_pem, server_name=cfg.custodian.server_name)
            channels.append(channel)
            custodian_client = GrpcCustodianClient(
                channel, VerifyKey.from_bytes(bytes.fromhex(custodian_pub.read_text().strip()))
            )
            if not cfg.custodian.embedded:
                readiness.custodian = CustodianWatch.of(channel)
        manager = RoundManager(
            store,
            ca_cert_pem=ca_pem,
            settings=RoundSettings(
                default_phase_timeout_s=cfg.rounds.default_phase_timeout_s,
                sparse_above=cfg.rounds.sparse_above,
                max_parties=cfg.rounds.max_parties,
                max_vector_length=cfg.rounds.max_vector_length,
                default_min_contributors=cfg.rounds.default_min_contributors,
                release=policy_from_config(**dataclasses.asdict(cfg.release)),
                threat=cfg.rounds.threat(),
                lease_ttl_ms=int(cfg.rounds.lease_ttl_s * 1000),
            ),
            custodian=custodian_client,
            clock_ms=clock_ms or now_ms,
        )
        manager.start()
        if metrics is not None:
            manager.metrics = metrics
            metrics.watch_store(
                store,
                budget_rho=manager.settings.release.budget_rho,
                certs=lambda: aggregator_certs(directory, cfg),
                clock_ms=clock_ms or now_ms,
            )
        loop = asyncio.get_running_loop()
        watch = AccessWatch(
            store,
            cfg.audit,
            clock_ms=clock_ms or now_ms,
            run=lambda fn: _background(loop, fn),
            metrics=metrics,
        )
        limits = request_limits(cfg.rounds.max_parties, cfg.rounds.max_vector_length)
        interceptor = AuthorizationInterceptor(
            POLICY,
            _enrolled(store, clock_ms or now_ms),
            limits=limits,
            observer=ServiceObserver(metrics, watch),
        )
        server = create_server(
            [interceptor], maximum_concurrent_rpcs=cfg.server.max_concurrent_rpcs
        )
        round_pb2_grpc.add_RoundServiceServicer_to_server(RoundServicer(manager), server)
        admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(manager), server)
        report_pb2_grpc.add_ReportServiceServicer_to_server(ReportServicer(manager, watch), server)
        health = add_health(server)
        # Every service has a status from the start (the store just answered); he
        # rounds need the custodian: a remote one is NOT_SERVING until the ticker sees
        # its channel connect.
        await _set_health(health, serving=True)
        await health.set(HE_SERVICE, _status(cfg.custodian.embedded))
        port = add_secure_port(server, listen or cfg.server.listen, server_credentials(tls, ca_pem))
        await server.start()
        host = (listen or cfg.server.listen).rsplit(":", 1)[0]
        (directory / ADDRESS_FILE).write_text(f"{host}:{port}\n")
        for line in expiring(aggregator_certs(directory, cfg) + party_certs(store), now_ms()):
            log.warning("certificate_expiring", detail=line)
        probes = await start_probes(cfg.metrics.listen, readiness)
        if probes is not None and metrics is not None:
            probes.add_route("/metrics", _metrics_route(metrics))
        running = RunningAggregator(
            server=server,
            port=port,
            manager=manager,
            store=store,
            custodian_server=custodian_server,
            custodian_port=custodian_port,
            channels=channels,
            health=health,
            readiness=readiness,
            probes=probes,
        )
        if tick:
            running.tasks.append(
                asyncio.create_task(_ticker(manager, cfg.server.tick_interval_s, health, readiness))
            )
    except BaseException:
        # Nothing half-started is left behind: no listening custodian, no open store.
        if probes is not None:
            await probes.stop()
        if server is not None:
            await server.stop(None)
        for channel in channels:
            await channel.close(None)
        if custodian_server is not None:
            await custodian_server.stop(None)
        store.close()
        raise
    log.info("aggregator_listening", port=port, custodian_port=custodian_port)
    return running


def _background(loop: asyncio.AbstractEventLoop, fn: Callable[[], None]) -> None:
    """Run ``fn`` (a store write) on a worker thread; its failure is logged, not raised."""

    def run() -> None:
        try:
            fn()
        except Exception as exc:
            log.warning("background_write_failed", exc=exc)

    loop.run_in_executor(None, run)


def _metrics_route(metrics: Metrics) -> Callable[[], Awaitable[Response]]:
    """``/metrics``: the exposition, built off the event loop (it reads the store)."""

    async def route() -> Response:
        body, content_type = await asyncio.to_thread(metrics.exposition)
        return Response(200, body.decode("utf-8"), content_type=content_type)

    return route


#: Services whose health follows the store's.
STORE_SERVICES = ("", "blindsum.rpc.v1.RoundService", "blindsum.rpc.v1.AdminService")
#: The health name of he rounds: SERVING while the store answers and the custodian can
#: be reached (an embedded one always can). Secagg rounds do not need the custodian, so
#: the services above stay SERVING without it.
HE_SERVICE = "blindsum.he"
#: The ticker logs a continuing failure at most this often (with a count).
TICK_LOG_EVERY_S = 30.0


async def _set_health(
    health: HealthServicer | None, serving: bool, readiness: Readiness | None = None
) -> None:
    if readiness is not None:
        readiness.store = None if serving else "store unavailable"
    if health is None:
        return
    for service in STORE_SERVICES:
        await health.set(service, _status(serving))


def _status(serving: bool) -> Any:
    return (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )


async def _ticker(
    manager: RoundManager,
    interval: float,
    health: HealthServicer | None = None,
    readiness: Readiness | None = None,
) -> None:
    """Advance rounds every ``interval`` seconds and keep gRPC health (and the HTTP
    /readyz) honest: while the store does not answer, health says NOT_SERVING (so probes
    and load balancers stop sending calls), and the failure is logged once, then every
    TICK_LOG_EVERY_S."""
    loop = asyncio.get_running_loop()
    failing: str | None = None
    failures = 0
    logged_at = -math.inf
    he_serving: bool | None = None
    while True:
        await asyncio.sleep(interval)
        custodian = None if readiness is None else readiness.custodian
        he_now = failing != "store_unavailable" and (custodian is None or not custodian.problem())
        if health is not None and he_now != he_serving:
            await health.set(HE_SERVICE, _status(he_now))
            he_serving = he_now
        try:
            await manager.offload(manager.store.ping)
            await manager.tick()
        except Exception as exc:
            kind = "store_unavailable" if isinstance(exc, Unavailable) else "tick_failed"
            failures += 1
            if failing != kind or loop.time() - logged_at >= TICK_LOG_EVERY_S:
                log.error(kind, exc=exc, failures=failures)
                logged_at = loop.time()
            if kind == "store_unavailable" and failing != kind:
                await _set_health(health, serving=False, readiness=readiness)
            elif kind != "store_unavailable" and failing == "store_unavailable":
                await _set_health(health, serving=True, readiness=readiness)
            failing = kind
            continue
        if failing is not None:
            log.info("tick_recovered", failures=failures)
            if failing == "store_unavailable":
                await _set_health(health, serving=True, readiness=readiness)
            failing, failures = None, 0


async def serve_forever(directory: Path, *, listen: str | None = None) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully."""
    running = await start_aggregator(directory, listen=listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"aggregator listening on port {running.port}", flush=True)
    await stop.wait()
    log.info("aggregator_stopping")
    await running.stop(grace=5.0)
    # A stale address would send the next admin call to whatever reuses the port.
    with contextlib.suppress(OSError):
        (directory / ADDRESS_FILE).unlink()


async def serve_custodian_forever(directory: Path, *, listen: str) -> None:
    """Run only the custodian service (for a custodian deployed apart from the aggregator)."""
    cfg = cfgmod.load(directory)
    server, port, custodian = await start_custodian(directory, cfg, listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"custodian listening on port {port}", flush=True)
    await stop.wait()
    await server.stop(5.0)
    custodian.store.close()


__all__ = ["RunningAggregator", "serve_forever", "start_aggregator"]
