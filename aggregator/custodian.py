"""The he-mode custodian: holder of the BFV secret key.

It hands out a signed public context, and it decrypts an aggregate only when
the request carries at least k receipts from distinct enrolled parties, each
an Ed25519 signature over (round id, schema id, SHA-256 of that party's
ciphertext) checked against the identity certificate in the custodian's own
registry (written at enrollment; the aggregator cannot add parties to it). It
decrypts at most one aggregate per round (a retry of the identical request gets
the same answer), so an aggregator cannot difference two subsets, and it keeps
its own audit trail in its own store.

It runs as its own gRPC service; ``aggregator serve`` starts it in the same
process by default, on its own port, and talks to it over mTLS like a remote one.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar

import grpc

from aggregator.store import Store
from blindsum import codec
from blindsum.crypto.he import BfvSecretContext
from blindsum.crypto.sign import SigningKey, VerifyKey
from blindsum.errors import BlindsumError, InvalidArgument, NotFound, PermissionDenied
from blindsum.log import get_logger
from blindsum.protocol.he import (
    ReceiptRecord,
    SignedPublicContext,
    authorize_decrypt,
    context_hash,
    context_transcript,
    decrypt_request_digest,
    result_transcript,
)
from blindsum.rpc.v1 import custodian_pb2, custodian_pb2_grpc, round_pb2
from blindsum.schema import Schema
from blindsum.transport.auth import peer_identity
from blindsum.transport.errors import error_from_rpc, translate
from blindsum.transport.pki import Identity, Role, verify_identity_cert

log = get_logger("blindsum.custodian")

_DECRYPT_PHASE = "decrypt"
_SELF = "custodian"


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _counts_outcome(
    fn: Callable[Concatenate[Custodian, _P], _R],
) -> Callable[Concatenate[Custodian, _P], _R]:
    """Tell ``on_decrypt`` "refused" when a decryption request is refused (the method
    reports "decrypted" and "replayed" itself)."""

    @functools.wraps(fn)
    def wrapper(custodian: Custodian, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return fn(custodian, *args, **kwargs)
        except BlindsumError:
            custodian._outcome("refused")
            raise

    return wrapper


@dataclass
class Custodian:
    """Custodian core logic, independent of gRPC."""

    secret: BfvSecretContext = field(repr=False)
    signing_key: SigningKey = field(repr=False)
    ca_cert_pem: bytes
    store: Store
    min_receipts: int = 3
    _public: bytes | None = field(default=None, repr=False)
    #: Keys a rotation retired, by the SHA-256 of their public context: kept until the
    #: last round that uses one is done (``aggregator rotate-bfv`` prunes them).
    retired: dict[bytes, BfvSecretContext] = field(default_factory=dict, repr=False)
    #: Told each decryption's outcome: "decrypted", "replayed" or "refused" (metrics).
    on_decrypt: Callable[[str], None] | None = field(default=None, repr=False)

    def _outcome(self, what: str) -> None:
        if self.on_decrypt is not None:
            self.on_decrypt(what)

    def _public_bytes(self) -> bytes:
        if self._public is None:
            self._public = self.secret.public_bytes()
        return self._public

    def _key(self, context: bytes) -> tuple[BfvSecretContext, bytes]:
        """The secret key and public context for the context hash ``context`` (empty:
        the current one); NotFound for a key that was never here or is pruned."""
        current = self._public_bytes()
        if not context or hmac.compare_digest(context, context_hash(current)):
            return self.secret, current
        retired = self.retired.get(context)
        if retired is None:
            raise NotFound(
                f"no key for context {context.hex()[:16]}: never this custodian's, or "
                "retired and pruned",
                field="context_hash",
            )
        return retired, retired.public_bytes()

    def public_context(self, context: bytes = b"") -> SignedPublicContext:
        """The signed public context of ``context`` (empty: the current key)."""
        secret, public = self._key(context)
        return SignedPublicContext(
            context=public,
            signature=self.signing_key.sign(context_transcript(public)),
            params=secret.params,
        )

    @_counts_outcome
    def decrypt(
        self,
        *,
        round_id: str,
        schema_id: str,
        chunks: Sequence[bytes],
        receipts: Sequence[ReceiptRecord],
        vector_length: int,
        min_receipts: int,
        schema_toml: str,
        context: bytes = b"",
    ) -> tuple[list[int], bytes]:
        """Check the receipts, decrypt once per round, sign and audit the result.

        ``context`` names the key: the hash of the public context the parties encrypted
        under, which their receipts bind (empty: the current key).

        The vector length, and so the number of chunks and each chunk's size, come from
        the round's schema (checked against ``schema_id``, its hash), not from the
        aggregator: one decryption can then never open several parties' ciphertexts
        laid side by side as chunks of one long "aggregate"."""
        secret, public = self._key(context)
        expected = _schema_length(schema_toml, schema_id)
        if vector_length != expected:
            raise PermissionDenied(
                f"vector_length {vector_length} is not the schema's {expected}",
                field="vector_length",
            )
        k = max(min_receipts, self.min_receipts)
        verify_keys: dict[str, VerifyKey] = {}
        for i, receipt in enumerate(receipts):
            # The custodian's own registry, not certificates relayed by the aggregator.
            try:
                record = self.store.party(receipt.party)
            except NotFound:
                raise PermissionDenied(
                    f"receipt {i}: {receipt.party!r} is not enrolled with the custodian",
                    field="receipts",
                ) from None
            if record.revoked:
                raise PermissionDenied(
                    f"receipt {i}: {receipt.party!r} is revoked", field="receipts"
                )
            _, raw = verify_identity_cert(
                record.identity_cert_pem,
                self.ca_cert_pem,
                expected=Identity(Role.PARTY, receipt.party),
            )
            verify_keys[receipt.party] = VerifyKey.from_bytes(raw)
        authorize_decrypt(
            round_id=round_id,
            schema_id=schema_id,
            receipts=receipts,
            verify_keys=verify_keys,
            min_receipts=k,
            # Receipts for ciphertexts under any other key are refused here.
            context=context_hash(public),
        )
        parties = [r.party for r in receipts]
        digest = decrypt_request_digest(round_id, schema_id, vector_length, chunks, parties)
        request_digest = digest.hex()
        previous = [s for s in self.store.submissions(round_id, _DECRYPT_PHASE) if s.party == _SELF]
        if previous:
            if previous[0].digest != request_digest:
                self.store.audit(round_id, "decrypt_refused", reason="second aggregate")
                raise PermissionDenied(
                    f"round {round_id!r} was already decrypted; the custodian decrypts one "
                    "aggregate per round",
                    field="Decrypt",
                )
            stored = custodian_pb2.DecryptResponse.FromString(previous[0].payload or b"")
            self._outcome("replayed")
            return list(stored.values), stored.signature
        values = secret.decrypt(chunks, vector_length)
        signature = self.signing_key.sign(
            result_transcript(
                round_id, schema_id, values, receipt_parties=parties, request_digest=digest
            )
        )
        response = custodian_pb2.DecryptResponse(
            round_id=round_id, values=values, signature=signature
        )
        with self.store.transaction():
            self.store.put_submission(
                round_id, _DECRYPT_PHASE, _SELF, request_digest, response.SerializeToString()
            )
            self.store.audit(
                round_id,
                "decrypted",
                schema_id=schema_id,
                receipts=sorted(r.party for r in receipts),
                slots=vector_length,
            )
        log.info("decrypted", round_id=round_id, receipts=len(receipts))
        self._outcome("decrypted")
        return values, signature


def _schema_length(schema_toml: str, schema_id: str) -> int:
    """The vector length of the schema whose hash is ``schema_id``."""
    schema = Schema.from_toml(schema_toml)
    if schema.schema_id != schema_id:
        raise PermissionDenied("the schema text does not hash to schema_id", field="schema_toml")
    return schema.vector_length


class CustodianServicer(custodian_pb2_grpc.CustodianServiceServicer):
    """Thin gRPC layer: decode, call :class:`Custodian`, encode."""

    def __init__(self, custodian: Custodian, *, max_chunks: int = 64) -> None:
        self.custodian = custodian
        self.max_chunks = max_chunks

    @translate
    async def GetPublicContext(  # noqa: N802 - gRPC method name
        self,
        request: custodian_pb2.PublicContextRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> round_pb2.PublicContext:
        peer_identity(context)
        return codec.public_context_to_pb(self.custodian.public_context(request.context_hash))

    @translate
    async def Decrypt(  # noqa: N802 - gRPC method name
        self, request: custodian_pb2.DecryptRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> custodian_pb2.DecryptResponse:
        peer_identity(context)
        if len(request.aggregate_chunks) > self.max_chunks:
            raise InvalidArgument("too many chunks", field="aggregate_chunks")
        receipts = []
        for i, r in enumerate(request.receipts):
            if len(r.ciphertext_sha256) != 32 or len(r.signature) != 64:
                raise InvalidArgument("malformed receipt", field=f"receipts[{i}]")
            receipts.append(ReceiptRecord(r.party, r.ciphertext_sha256, r.signature))
        values, signature = self.custodian.decrypt(
            round_id=request.round_id,
            schema_id=request.schema_id,
            chunks=list(request.aggregate_chunks),
            receipts=receipts,
            vector_length=request.vector_length,
            min_receipts=request.min_receipts,
            schema_toml=request.schema_toml,
            context=request.context_hash,
        )
        return custodian_pb2.DecryptResponse(
            round_id=request.round_id, values=values, signature=signature
        )


class GrpcCustodianClient:
    """The aggregator's view of the custodian, over mTLS with the aggregator's certificate."""

    def __init__(
        self, channel: grpc.aio.Channel, custodian_key: VerifyKey, *, timeout_s: float = 30.0
    ) -> None:
        self._stub = custodian_pb2_grpc.CustodianServiceStub(channel)
        self._key = custodian_key
        self.timeout_s = timeout_s

    async def public_context(self, context: bytes = b"") -> SignedPublicContext:
        """The signed public context whose hash is ``context`` (empty: the current)."""
        try:
            msg = await self._stub.GetPublicContext(
                custodian_pb2.PublicContextRequest(context_hash=context), timeout=self.timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, "CustodianService.GetPublicContext") from None
        signed = codec.public_context_from_pb(msg)
        signed.verify(self._key)
        if context and not hmac.compare_digest(signed.hash, context):
            raise InvalidArgument("the custodian sent another context", field="context_hash")
        return signed

    async def decrypt(
        self,
        *,
        round_id: str,
        schema_id: str,
        chunks: Sequence[bytes],
        receipts: Sequence[ReceiptRecord],
        vector_length: int,
        min_receipts: int,
        schema_toml: str,
        context: bytes = b"",
    ) -> list[int]:
        request = custodian_pb2.DecryptRequest(
            round_id=round_id,
            schema_id=schema_id,
            aggregate_chunks=list(chunks),
            receipts=[
                custodian_pb2.Receipt(
                    party=r.party, ciphertext_sha256=r.digest, signature=r.signature
                )
                for r in receipts
            ],
            vector_length=vector_length,
            min_receipts=min_receipts,
            schema_toml=schema_toml,
            context_hash=context,
        )
        try:
            msg = await self._stub.Decrypt(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, "CustodianService.Decrypt") from None
        values = list(msg.values)
        parties = [r.party for r in receipts]
        digest = decrypt_request_digest(round_id, schema_id, vector_length, chunks, parties)
        self._key.verify(
            msg.signature,
            result_transcript(
                round_id, schema_id, values, receipt_parties=parties, request_digest=digest
            ),
        )
        return values
