"""The ``he`` protection mode: receipts, the aggregator's running sum, and the
custodian's decryption gate (docs/THREAT_MODEL.md). Pure: no I/O, no gRPC.

Flow: a party encrypts its vector under the custodian's signed public context, signs a
*receipt* over ``(round id, schema id, SHA-256 of its chunks)`` and submits both once.
The aggregator validates and adds the ciphertext to a running sum
(:class:`HeAccumulator`). At close, the custodian calls :func:`authorize_decrypt` on the
receipts before it decrypts the aggregate, then signs :func:`result_transcript`.
"""

from __future__ import annotations

import hashlib
import struct
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from blindsum.crypto.encoding import encode_parts, format_dst
from blindsum.crypto.he import (
    MAX_CHUNK_BYTES,
    MAX_CHUNKS,
    BfvParams,
    BfvPublicContext,
    ParsedSum,
)
from blindsum.crypto.sign import SigningKey, VerifyKey
from blindsum.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    InvalidSignature,
    PermissionDenied,
)

__all__ = [
    "DIGEST_BYTES",
    "HeAccumulator",
    "ReceiptRecord",
    "authorize_decrypt",
    "ciphertext_digest",
    "context_transcript",
    "decrypt_request_digest",
    "make_receipt",
    "receipt_transcript",
    "result_transcript",
    "verify_receipt",
]

#: Length of a ciphertext digest (SHA-256).
DIGEST_BYTES = 32
_SIGNATURE_BYTES = 64
_MAX_PARTY_CHARS = 256
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1


def _check_id(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidArgument("must be a non-empty string", field=field)
    return value


def _check_party(party: object, field: str = "party") -> str:
    if not isinstance(party, str) or not 1 <= len(party) <= _MAX_PARTY_CHARS:
        raise InvalidArgument(f"must be a string of 1..{_MAX_PARTY_CHARS} chars", field=field)
    return party


def _check_digest(digest: object, field: str = "digest") -> bytes:
    if not isinstance(digest, bytes) or len(digest) != DIGEST_BYTES:
        raise InvalidArgument(f"must be {DIGEST_BYTES} bytes", field=field)
    return digest


def _check_chunk_bytes(chunks: object, field: str = "chunks") -> list[bytes]:
    """Cheap structural checks (count, type, size cap) before hashing or parsing."""
    if isinstance(chunks, bytes | bytearray | str) or not isinstance(chunks, Sequence):
        raise InvalidArgument("must be a list of byte strings", field=field)
    if not 1 <= len(chunks) <= MAX_CHUNKS:
        raise InvalidArgument(f"must hold between 1 and {MAX_CHUNKS} chunks", field=field)
    for i, chunk in enumerate(chunks):
        if not isinstance(chunk, bytes):
            raise InvalidArgument("must be bytes", field=f"{field}[{i}]")
        if not 1 <= len(chunk) <= MAX_CHUNK_BYTES:
            raise InvalidArgument(f"must be 1..{MAX_CHUNK_BYTES} bytes", field=f"{field}[{i}]")
    return list(chunks)


# --------------------------------------------------------------- transcripts


def ciphertext_digest(chunks: Sequence[bytes]) -> bytes:
    """SHA-256 over ``encode_parts(*chunks)`` (length-prefixed, so chunk boundaries count).

    Precondition: 1..MAX_CHUNKS chunks of bytes, each within MAX_CHUNK_BYTES.
    """
    return hashlib.sha256(encode_parts(*_check_chunk_bytes(chunks))).digest()


def context_hash(context_bytes: bytes) -> bytes:
    """SHA-256 of a serialized public context: what a receipt binds."""
    if not isinstance(context_bytes, bytes) or not context_bytes:
        raise InvalidArgument("must be non-empty bytes", field="context")
    return hashlib.sha256(context_bytes).digest()


def receipt_transcript(round_id: str, schema_id: str, digest: bytes, context: bytes) -> bytes:
    """What a party signs as its receipt: ``format_dst("he/receipt/v2", round, schema,
    context hash, ciphertext digest)``. Binding the hash of the custodian context the
    party encrypted under means a ciphertext under any other key is refused on arrival,
    and by the custodian, instead of decrypting to garbage (issue 12)."""
    return format_dst(
        "he/receipt/v2",
        _check_id(round_id, "round_id"),
        _check_id(schema_id, "schema_id"),
        _check_digest(context, "context_hash"),
        _check_digest(digest),
    )


def make_receipt(
    identity: SigningKey,
    *,
    round_id: str,
    schema_id: str,
    chunks: Sequence[bytes],
    context: bytes,
) -> bytes:
    """The party's Ed25519 receipt signature over its ciphertext ``chunks``, encrypted
    under the public context whose :func:`context_hash` is ``context``."""
    return identity.sign(
        receipt_transcript(round_id, schema_id, ciphertext_digest(chunks), context)
    )


def verify_receipt(
    verify_key: VerifyKey,
    signature: bytes,
    *,
    round_id: str,
    schema_id: str,
    digest: bytes,
    context: bytes,
) -> None:
    """Return if ``signature`` is ``verify_key``'s receipt for ``digest`` under the
    context hash ``context``; else raise InvalidSignature."""
    verify_key.verify(signature, receipt_transcript(round_id, schema_id, digest, context))


def context_transcript(context_bytes: bytes) -> bytes:
    """What the custodian signs to publish its public context:
    ``format_dst("he/context", sha256(context_bytes))``."""
    if not isinstance(context_bytes, bytes) or not context_bytes:
        raise InvalidArgument("must be non-empty bytes", field="context")
    return format_dst("he/context", hashlib.sha256(context_bytes).digest())


@dataclass(frozen=True)
class SignedPublicContext:
    """The custodian's public BFV context and its signature over ``context_transcript``."""

    context: bytes
    signature: bytes
    params: BfvParams

    def verify(self, custodian_key: VerifyKey) -> None:
        """Raise InvalidSignature unless the pinned custodian key signed this context."""
        custodian_key.verify(self.signature, context_transcript(self.context))

    @property
    def hash(self) -> bytes:
        """:func:`context_hash` of the context, as receipts bind it."""
        return context_hash(self.context)

    def open(self) -> BfvPublicContext:
        """Parse the context (size-checked) and check it carries the signed parameters."""
        return BfvPublicContext.from_bytes(self.context, expected=self.params)


def decrypt_request_digest(
    round_id: str,
    schema_id: str,
    vector_length: int,
    chunks: Sequence[bytes],
    receipt_parties: Sequence[str],
) -> bytes:
    """SHA-256 of one decryption request: what the custodian decrypts at most once per
    round, and what its signed result names."""
    return hashlib.sha256(
        encode_parts(round_id, schema_id, vector_length, *chunks, *sorted(receipt_parties))
    ).digest()


def result_transcript(
    round_id: str,
    schema_id: str,
    values: Sequence[int],
    *,
    receipt_parties: Sequence[str],
    request_digest: bytes,
) -> bytes:
    """What the custodian signs over a decrypted result: round id, schema id, the sorted
    parties whose receipts backed it, the digest of the request it answered
    (:func:`decrypt_request_digest`), the number of values and the SHA-256 of the values
    as big-endian int64 (they must fit in int64). A signed result therefore says which
    receipts and which aggregate it is the decryption of (label ``he/result/v2``)."""
    if len(request_digest) != 32:
        raise InvalidArgument("must be 32 bytes", field="request_digest")
    if isinstance(values, bytes | str) or not isinstance(values, Sequence):
        raise InvalidArgument("must be a sequence of integers", field="values")
    packed = bytearray()
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int):
            raise InvalidArgument("must be an integer", field=f"values[{i}]")
        if not _I64_MIN <= v <= _I64_MAX:
            raise InvalidArgument("outside the int64 range", field=f"values[{i}]")
        packed += struct.pack(">q", v)
    parties = sorted(receipt_parties)
    return format_dst(
        "he/result/v2",
        _check_id(round_id, "round_id"),
        _check_id(schema_id, "schema_id"),
        len(parties),
        *parties,
        request_digest,
        len(values),
        hashlib.sha256(bytes(packed)).digest(),
    )


# ---------------------------------------------------------------- aggregator


@dataclass(frozen=True)
class ReceiptRecord:
    """A party's receipt as stored by the aggregator and forwarded to the custodian."""

    party: str
    digest: bytes
    signature: bytes


def check_submission(
    public: BfvPublicContext,
    *,
    round_id: str,
    schema_id: str,
    vector_length: int,
    party: str,
    chunks: Sequence[bytes],
    signature: bytes,
    verify_key: VerifyKey,
    context: bytes,
) -> ReceiptRecord:
    """Every check :meth:`HeAccumulator.add` makes, without adding: the receipt verifies
    under ``verify_key`` for the context hash ``context`` (that of ``public``), and the
    ciphertext parses under ``public`` as ``vector_length`` values. A ciphertext that
    passes can be stored on its own and summed when the phase closes (any two that pass
    have the same chunk count and sizes, so they add)."""
    _check_party(party)
    items = _check_chunk_bytes(chunks)
    if not isinstance(signature, bytes) or len(signature) != _SIGNATURE_BYTES:
        raise InvalidArgument(f"must be {_SIGNATURE_BYTES} bytes", field="signature")
    digest = hashlib.sha256(encode_parts(*items)).digest()
    verify_receipt(
        verify_key,
        signature,
        round_id=_check_id(round_id, "round_id"),
        schema_id=_check_id(schema_id, "schema_id"),
        digest=digest,
        context=context,
    )
    public.check_chunks(items, vector_length)
    return ReceiptRecord(party=party, digest=digest, signature=signature)


class HeAccumulator:
    """The aggregator's running homomorphic sum for one he round.

    ``add`` is idempotent per party: resubmitting the identical ciphertext returns the
    stored record; a different one raises AlreadyExists. Every ``add`` either fully
    applies or leaves the state unchanged. Thread-safe.
    """

    def __init__(
        self,
        round_id: str,
        schema_id: str,
        public: BfvPublicContext,
        vector_length: int,
    ) -> None:
        self.round_id = _check_id(round_id, "round_id")
        # The context hash receipts are checked against: that of ``public``, computed
        # when a receipt is first checked.
        self._context: bytes | None = None
        self.schema_id = _check_id(schema_id, "schema_id")
        if not isinstance(public, BfvPublicContext):
            raise InvalidArgument("must be a BfvPublicContext", field="public")
        self.public = public
        public.chunk_count(vector_length)  # validates 1 <= length <= MAX_CHUNKS * slots
        self.vector_length = vector_length
        self._sum: list[bytes] | None = None
        # The same sum kept parsed, so each addition parses only the new ciphertext; None
        # after a restore until the next addition parses the checkpoint once.
        self._parsed: ParsedSum | None = None
        self._records: dict[str, ReceiptRecord] = {}
        self._lock = threading.Lock()

    def add(
        self,
        party: str,
        chunks: Sequence[bytes],
        signature: bytes,
        *,
        verify_key: VerifyKey | None = None,
    ) -> ReceiptRecord:
        """Validate ``chunks`` (count, caps, parse, sizes) and add them to the running sum.

        With ``verify_key``, the receipt ``signature`` is verified first (InvalidSignature).
        Same party again: the stored record if the digest is identical, else AlreadyExists.
        """
        _check_party(party)
        items = _check_chunk_bytes(chunks)
        if not isinstance(signature, bytes) or len(signature) != _SIGNATURE_BYTES:
            raise InvalidArgument(f"must be {_SIGNATURE_BYTES} bytes", field="signature")
        digest = hashlib.sha256(encode_parts(*items)).digest()
        with self._lock:
            existing = self._records.get(party)
            if existing is not None:
                if existing.digest == digest:
                    return existing
                raise AlreadyExists(
                    "already submitted a different ciphertext in this round", field="party"
                )
            if verify_key is not None:
                if self._context is None:
                    self._context = context_hash(self.public.to_bytes())
                verify_receipt(
                    verify_key,
                    signature,
                    round_id=self.round_id,
                    schema_id=self.schema_id,
                    digest=digest,
                    context=self._context,
                )
            if self._sum is None:
                self.public.check_chunks(items, self.vector_length)
            elif self._parsed is None:
                self._parsed = self.public.parse_sum(self._sum)
            parsed, new_sum = self.public.add_parsed(self._parsed, items)
            record = ReceiptRecord(party=party, digest=digest, signature=signature)
            self._parsed = parsed
            self._sum = new_sum
            self._records[party] = record
            return record

    def aggregate(self) -> list[bytes]:
        """The summed ciphertext chunks; FailedPrecondition if nothing was added."""
        with self._lock:
            if self._sum is None:
                raise FailedPrecondition("no ciphertexts were submitted", field="round")
            return list(self._sum)

    def receipts(self) -> list[ReceiptRecord]:
        """Receipts in submission order."""
        with self._lock:
            return list(self._records.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def restore(self, sum_chunks: Sequence[bytes], receipts: Sequence[ReceiptRecord]) -> None:
        """Reload durable state after a restart. Precondition: this accumulator is empty.

        ``sum_chunks`` is validated against the context and vector length; ``receipts`` must
        name distinct parties. Empty ``receipts`` requires empty ``sum_chunks``.
        """
        if isinstance(receipts, str | bytes) or not isinstance(receipts, Sequence):
            raise InvalidArgument("must be a list of ReceiptRecord", field="receipts")
        records: dict[str, ReceiptRecord] = {}
        for i, rec in enumerate(receipts):
            if not isinstance(rec, ReceiptRecord):
                raise InvalidArgument("must be a ReceiptRecord", field=f"receipts[{i}]")
            _check_party(rec.party, f"receipts[{i}].party")
            _check_digest(rec.digest, f"receipts[{i}].digest")
            if not isinstance(rec.signature, bytes):
                raise InvalidArgument("must be bytes", field=f"receipts[{i}].signature")
            if rec.party in records:
                raise InvalidArgument("duplicate party", field=f"receipts[{i}].party")
            records[rec.party] = rec
        if not records:
            if len(sum_chunks):
                raise InvalidArgument("a sum without receipts", field="sum_chunks")
            new_sum: list[bytes] | None = None
        else:
            items = _check_chunk_bytes(sum_chunks, "sum_chunks")
            self.public.check_chunks(items, self.vector_length)
            new_sum = items
        with self._lock:
            if self._sum is not None or self._records:
                raise FailedPrecondition("restore needs an empty accumulator", field="round")
            self._sum = new_sum
            self._records = records


# ------------------------------------------------------------------ custodian


def authorize_decrypt(
    *,
    round_id: str,
    schema_id: str,
    receipts: Sequence[ReceiptRecord],
    verify_keys: Mapping[str, VerifyKey],
    min_receipts: int,
    context: bytes,
) -> None:
    """The custodian's gate before decrypting an aggregate. Returns only if at least
    ``min_receipts`` receipts from distinct enrolled parties all verify, each for the
    custodian's own context hash ``context``.

    Strict: a receipt from a party without a key in ``verify_keys``, or a second receipt
    from the same party -> PermissionDenied naming ``receipts[i].party``; a receipt that
    does not verify -> InvalidSignature naming ``receipts[i]``; fewer than ``min_receipts``
    -> PermissionDenied naming the count.
    """
    _check_id(round_id, "round_id")
    _check_id(schema_id, "schema_id")
    if isinstance(min_receipts, bool) or not isinstance(min_receipts, int) or min_receipts < 1:
        raise InvalidArgument("must be an integer >= 1", field="min_receipts")
    if isinstance(receipts, str | bytes) or not isinstance(receipts, Sequence):
        raise InvalidArgument("must be a list of receipts", field="receipts")
    seen: set[str] = set()
    for i, rec in enumerate(receipts):
        if not isinstance(rec, ReceiptRecord):
            raise InvalidArgument("must be a ReceiptRecord", field=f"receipts[{i}]")
        party = _check_party(rec.party, f"receipts[{i}].party")
        if party in seen:
            raise PermissionDenied("duplicate receipt for one party", field=f"receipts[{i}].party")
        key = verify_keys.get(party)
        if key is None:
            raise PermissionDenied("party is not enrolled", field=f"receipts[{i}].party")
        _check_digest(rec.digest, f"receipts[{i}].digest")
        try:
            verify_receipt(
                key,
                rec.signature,
                round_id=round_id,
                schema_id=schema_id,
                digest=rec.digest,
                context=context,
            )
        except InvalidSignature:
            raise InvalidSignature("receipt does not verify", field=f"receipts[{i}]") from None
        seen.add(party)
    if len(seen) < min_receipts:
        raise PermissionDenied(
            f"{len(seen)} valid receipts from distinct parties, {min_receipts} required",
            field="receipts",
        )
