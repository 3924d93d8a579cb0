"""he protocol: receipts, the aggregator's accumulator, and the custodian's decrypt gate."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
import pytest

from blindsum.crypto.encoding import encode_parts, format_dst
from blindsum.crypto.he import (
    BfvParams,
    BfvPublicContext,
    BfvSecretContext,
    from_centred,
    to_centred,
)
from blindsum.crypto.sign import SigningKey, VerifyKey
from blindsum.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    InvalidSignature,
    PermissionDenied,
)
from blindsum.protocol.he import (
    HeAccumulator,
    ReceiptRecord,
    authorize_decrypt,
    ciphertext_digest,
    context_hash,
    context_transcript,
    decrypt_request_digest,
    make_receipt,
    receipt_transcript,
    result_transcript,
    verify_receipt,
)
from blindsum.schema import Schema

ROUND = "round-1"
SCHEMA = "ab" * 32
LENGTH = 20


def drbg(seed: bytes) -> Callable[[int], bytes]:
    """Deterministic test randomness: SHAKE-256 over seed || counter."""
    counter = 0

    def rand(n: int) -> bytes:
        nonlocal counter
        counter += 1
        return hashlib.shake_256(seed + counter.to_bytes(8, "big")).digest(n)

    return rand


@pytest.fixture(scope="module")
def secret() -> BfvSecretContext:
    return BfvSecretContext.generate(BfvParams())


@pytest.fixture(scope="module")
def public(secret: BfvSecretContext) -> BfvPublicContext:
    return secret.public()


@pytest.fixture(scope="module")
def ctx(public: BfvPublicContext) -> bytes:
    """The context hash receipts bind: that of the custodian's public context."""
    return context_hash(public.to_bytes())


@pytest.fixture(scope="module")
def keys() -> dict[str, SigningKey]:
    rand = drbg(b"he-protocol")
    return {f"party-{i}": SigningKey.generate(rand) for i in range(4)}


@pytest.fixture(scope="module")
def verify_keys(keys: dict[str, SigningKey]) -> dict[str, VerifyKey]:
    return {name: key.verify_key for name, key in keys.items()}


def vector(i: int) -> list[int]:
    return [(i + 1) * (j + 1) * (-1) ** j for j in range(LENGTH)]


@pytest.fixture(scope="module")
def submissions(
    public: BfvPublicContext, keys: dict[str, SigningKey], ctx: bytes
) -> dict[str, tuple[list[bytes], bytes]]:
    out = {}
    for i, (name, key) in enumerate(keys.items()):
        chunks = public.encrypt(vector(i))
        sig = make_receipt(key, round_id=ROUND, schema_id=SCHEMA, chunks=chunks, context=ctx)
        out[name] = (chunks, sig)
    return out


# -------------------------------------------------------------- transcripts


def test_digest_and_transcripts() -> None:
    chunks = [b"abc", b"def"]
    digest = ciphertext_digest(chunks)
    assert digest == hashlib.sha256(encode_parts(b"abc", b"def")).digest()
    assert ciphertext_digest([b"abcdef"]) != digest  # chunk boundaries count
    ctx = context_hash(b"context-bytes")
    assert ctx == hashlib.sha256(b"context-bytes").digest()
    assert receipt_transcript(ROUND, SCHEMA, digest, ctx) == format_dst(
        "he/receipt/v2", ROUND, SCHEMA, ctx, digest
    )
    assert receipt_transcript("round-2", SCHEMA, digest, ctx) != receipt_transcript(
        ROUND, SCHEMA, digest, ctx
    )
    # Issue 12: the context is bound, so a receipt names the key it was encrypted under.
    assert receipt_transcript(ROUND, SCHEMA, digest, bytes(32)) != receipt_transcript(
        ROUND, SCHEMA, digest, ctx
    )
    with pytest.raises(InvalidArgument, match="digest"):
        receipt_transcript(ROUND, SCHEMA, b"short", ctx)
    with pytest.raises(InvalidArgument, match="context_hash"):
        receipt_transcript(ROUND, SCHEMA, digest, b"short")
    with pytest.raises(InvalidArgument, match="round_id"):
        receipt_transcript("", SCHEMA, digest, ctx)
    with pytest.raises(InvalidArgument, match="chunks"):
        ciphertext_digest([])
    ctx_t = context_transcript(b"context-bytes")
    assert ctx_t == format_dst("he/context", hashlib.sha256(b"context-bytes").digest())
    assert context_transcript(b"context-bytes2") != ctx_t


def test_result_transcript() -> None:
    digest = bytes(range(32))

    def t(
        round_id: str = ROUND,
        schema_id: str = SCHEMA,
        values: list[int] | None = None,
        parties: list[str] | None = None,
        request: bytes = digest,
    ) -> bytes:
        return result_transcript(
            round_id,
            schema_id,
            [1, -2, 3] if values is None else values,
            receipt_parties=["a", "b"] if parties is None else parties,
            request_digest=request,
        )

    base = t()
    assert base != t(values=[1, -2, 4])
    assert base != t(values=[1, -2, 3, 0])
    assert base != t(round_id="r2")
    assert base != t(schema_id="cd" * 32)
    # It binds the receipt set (in any order) and the request it answers.
    assert base == t(parties=["b", "a"])
    assert base != t(parties=["a"])
    assert base != t(parties=["a", "b", "c"])
    assert base != t(request=bytes(32))
    assert base.startswith(b"blindsum/v1/he/result/v2\x00")
    t(values=[-(2**63), 2**63 - 1])
    with pytest.raises(InvalidArgument, match=r"values\[0\]"):
        t(values=[2**63])
    with pytest.raises(InvalidArgument, match="request_digest"):
        t(request=b"short")
    assert decrypt_request_digest(ROUND, SCHEMA, 3, [b"x"], ["b", "a"]) == decrypt_request_digest(
        ROUND, SCHEMA, 3, [b"x"], ["a", "b"]
    )
    assert decrypt_request_digest(ROUND, SCHEMA, 3, [b"x"], ["a"]) != decrypt_request_digest(
        ROUND, SCHEMA, 4, [b"x"], ["a"]
    )


def test_receipt_verifies_and_binds_everything(
    public: BfvPublicContext, keys: dict[str, SigningKey], ctx: bytes
) -> None:
    key = keys["party-0"]
    chunks = public.encrypt(vector(0))
    sig = make_receipt(key, round_id=ROUND, schema_id=SCHEMA, chunks=chunks, context=ctx)
    digest = ciphertext_digest(chunks)
    verify_receipt(
        key.verify_key, sig, round_id=ROUND, schema_id=SCHEMA, digest=digest, context=ctx
    )
    with pytest.raises(InvalidSignature):  # under another custodian context
        verify_receipt(
            key.verify_key, sig, round_id=ROUND, schema_id=SCHEMA, digest=digest, context=bytes(32)
        )
    changed = bytearray(chunks[0])
    changed[len(changed) // 2] ^= 1
    bad_digest = ciphertext_digest([bytes(changed)])
    with pytest.raises(InvalidSignature):
        verify_receipt(
            key.verify_key, sig, round_id=ROUND, schema_id=SCHEMA, digest=bad_digest, context=ctx
        )
    with pytest.raises(InvalidSignature):
        verify_receipt(
            key.verify_key, sig, round_id="other", schema_id=SCHEMA, digest=digest, context=ctx
        )
    with pytest.raises(InvalidSignature):
        verify_receipt(
            key.verify_key, sig, round_id=ROUND, schema_id="cd" * 32, digest=digest, context=ctx
        )
    with pytest.raises(InvalidSignature):
        verify_receipt(
            keys["party-1"].verify_key,
            sig,
            round_id=ROUND,
            schema_id=SCHEMA,
            digest=digest,
            context=ctx,
        )


# --------------------------------------------------------------- accumulator


def test_accumulate_and_decrypt(
    secret: BfvSecretContext,
    public: BfvPublicContext,
    submissions: dict[str, tuple[list[bytes], bytes]],
    verify_keys: dict[str, VerifyKey],
    ctx: bytes,
) -> None:
    acc = HeAccumulator(ROUND, SCHEMA, public, LENGTH)
    with pytest.raises(FailedPrecondition):
        acc.aggregate()
    records = []
    for name, (chunks, sig) in submissions.items():
        records.append(acc.add(name, chunks, sig, verify_key=verify_keys[name]))
    assert len(acc) == 4
    assert [r.party for r in acc.receipts()] == list(submissions)
    assert records[0].digest == ciphertext_digest(submissions["party-0"][0])
    expected = [sum(vector(i)[j] for i in range(4)) for j in range(LENGTH)]
    assert secret.decrypt(acc.aggregate(), LENGTH) == expected
    authorize_decrypt(
        round_id=ROUND,
        schema_id=SCHEMA,
        receipts=acc.receipts(),
        verify_keys=verify_keys,
        min_receipts=4,
        context=ctx,
    )


def test_add_is_idempotent_per_party(
    secret: BfvSecretContext,
    public: BfvPublicContext,
    submissions: dict[str, tuple[list[bytes], bytes]],
) -> None:
    acc = HeAccumulator(ROUND, SCHEMA, public, LENGTH)
    chunks, sig = submissions["party-0"]
    first = acc.add("party-0", chunks, sig)
    again = acc.add("party-0", list(chunks), sig)
    assert again == first
    assert len(acc) == 1
    assert secret.decrypt(acc.aggregate(), LENGTH) == vector(0)  # added once only
    other_chunks, other_sig = submissions["party-1"]
    with pytest.raises(AlreadyExists) as info:
        acc.add("party-0", other_chunks, other_sig)
    assert info.value.field == "party"
    assert secret.decrypt(acc.aggregate(), LENGTH) == vector(0)


def test_add_rejects_bad_input_without_changing_state(
    secret: BfvSecretContext,
    public: BfvPublicContext,
    submissions: dict[str, tuple[list[bytes], bytes]],
    verify_keys: dict[str, VerifyKey],
) -> None:
    acc = HeAccumulator(ROUND, SCHEMA, public, LENGTH)
    chunks0, sig0 = submissions["party-0"]
    acc.add("party-0", chunks0, sig0)
    chunks1, sig1 = submissions["party-1"]
    # the receipt of party-1 presented as party-2's
    with pytest.raises(InvalidSignature):
        acc.add("party-2", chunks1, sig1, verify_key=verify_keys["party-2"])
    # a changed chunk no longer matches the receipt
    changed = bytearray(chunks1[0])
    changed[100] ^= 0xFF
    with pytest.raises(InvalidSignature):
        acc.add("party-1", [bytes(changed)], sig1, verify_key=verify_keys["party-1"])
    # malformed ciphertext, wrong length, wrong signature size
    with pytest.raises(InvalidArgument, match=r"chunks\[0\]"):
        acc.add("party-3", [b"\x00" * 64], sig1)
    with pytest.raises(InvalidArgument, match=r"chunks\[0\]"):
        acc.add("party-3", public.encrypt([1] * (LENGTH + 1)), sig1)
    with pytest.raises(InvalidArgument, match="signature"):
        acc.add("party-3", chunks1, b"short")
    with pytest.raises(InvalidArgument, match="party"):
        acc.add("", chunks1, sig1)
    assert [r.party for r in acc.receipts()] == ["party-0"]
    assert secret.decrypt(acc.aggregate(), LENGTH) == vector(0)


def test_first_submission_length_is_checked(public: BfvPublicContext) -> None:
    acc = HeAccumulator(ROUND, SCHEMA, public, LENGTH)
    with pytest.raises(InvalidArgument, match=r"chunks\[0\]: holds 5 values, expected 20"):
        acc.add("party-0", public.encrypt([1] * 5), b"\x00" * 64)
    with pytest.raises(InvalidArgument, match="length"):
        HeAccumulator(ROUND, SCHEMA, public, 0)


def test_restore_resumes_the_round(
    secret: BfvSecretContext,
    public: BfvPublicContext,
    submissions: dict[str, tuple[list[bytes], bytes]],
) -> None:
    acc = HeAccumulator(ROUND, SCHEMA, public, LENGTH)
    for name in ("party-0", "party-1"):
        acc.add(name, *submissions[name])
    saved_sum, saved_receipts = acc.aggregate(), acc.receipts()

    resumed = HeAccumulator(ROUND, SCHEMA, public, LENGTH)
    resumed.restore(saved_sum, saved_receipts)
    assert resumed.receipts() == saved_receipts
    assert resumed.add("party-0", *submissions["party-0"]) == saved_receipts[0]  # still idempotent
    resumed.add("party-2", *submissions["party-2"])
    expected = [sum(vector(i)[j] for i in range(3)) for j in range(LENGTH)]
    assert secret.decrypt(resumed.aggregate(), LENGTH) == expected
    with pytest.raises(FailedPrecondition):
        resumed.restore(saved_sum, saved_receipts)

    empty = HeAccumulator(ROUND, SCHEMA, public, LENGTH)
    empty.restore([], [])
    assert len(empty) == 0
    with pytest.raises(InvalidArgument, match="party"):
        HeAccumulator(ROUND, SCHEMA, public, LENGTH).restore(
            saved_sum, [saved_receipts[0], saved_receipts[0]]
        )
    with pytest.raises(InvalidArgument, match="sum_chunks"):
        HeAccumulator(ROUND, SCHEMA, public, LENGTH).restore(saved_sum, [])
    with pytest.raises(InvalidArgument, match=r"chunks\[0\]"):
        HeAccumulator(ROUND, SCHEMA, public, LENGTH).restore([b"junk"], saved_receipts)


# ------------------------------------------------------------------ custodian


def _receipts(
    submissions: dict[str, tuple[list[bytes], bytes]], names: list[str]
) -> list[ReceiptRecord]:
    return [
        ReceiptRecord(name, ciphertext_digest(submissions[name][0]), submissions[name][1])
        for name in names
    ]


def test_authorize_decrypt_threshold(
    submissions: dict[str, tuple[list[bytes], bytes]], verify_keys: dict[str, VerifyKey], ctx: bytes
) -> None:
    three = _receipts(submissions, ["party-0", "party-1", "party-2"])
    authorize_decrypt(
        round_id=ROUND,
        schema_id=SCHEMA,
        receipts=three,
        verify_keys=verify_keys,
        min_receipts=3,
        context=ctx,
    )
    with pytest.raises(PermissionDenied) as info:
        authorize_decrypt(
            round_id=ROUND,
            schema_id=SCHEMA,
            receipts=three[:2],
            verify_keys=verify_keys,
            min_receipts=3,
            context=ctx,
        )
    assert "2 valid receipts" in str(info.value)
    assert info.value.field == "receipts"


def test_authorize_decrypt_refuses_duplicates_and_strangers(
    submissions: dict[str, tuple[list[bytes], bytes]], verify_keys: dict[str, VerifyKey], ctx: bytes
) -> None:
    two = _receipts(submissions, ["party-0", "party-1"])
    with pytest.raises(PermissionDenied) as info:
        authorize_decrypt(
            round_id=ROUND,
            schema_id=SCHEMA,
            receipts=[*two, two[0]],
            verify_keys=verify_keys,
            min_receipts=3,
            context=ctx,
        )
    assert info.value.field == "receipts[2].party"
    unknown = {k: v for k, v in verify_keys.items() if k != "party-1"}
    with pytest.raises(PermissionDenied) as info:
        authorize_decrypt(
            round_id=ROUND,
            schema_id=SCHEMA,
            receipts=two,
            verify_keys=unknown,
            min_receipts=1,
            context=ctx,
        )
    assert info.value.field == "receipts[1].party"


def test_authorize_decrypt_refuses_bad_signatures(
    submissions: dict[str, tuple[list[bytes], bytes]], verify_keys: dict[str, VerifyKey], ctx: bytes
) -> None:
    good = _receipts(submissions, ["party-0", "party-1", "party-2"])
    forged = ReceiptRecord("party-1", good[1].digest, good[0].signature)
    with pytest.raises(InvalidSignature) as info:
        authorize_decrypt(
            round_id=ROUND,
            schema_id=SCHEMA,
            receipts=[good[0], forged, good[2]],
            verify_keys=verify_keys,
            min_receipts=2,
            context=ctx,
        )
    assert info.value.field == "receipts[1]"
    with pytest.raises(InvalidSignature):  # receipts are bound to the round
        authorize_decrypt(
            round_id="round-2",
            schema_id=SCHEMA,
            receipts=good,
            verify_keys=verify_keys,
            min_receipts=1,
            context=ctx,
        )
    with pytest.raises(InvalidArgument, match="min_receipts"):
        authorize_decrypt(
            round_id=ROUND,
            schema_id=SCHEMA,
            receipts=good,
            verify_keys=verify_keys,
            min_receipts=0,
            context=ctx,
        )


def test_end_to_end_with_schema_vectors(
    secret: BfvSecretContext, public: BfvPublicContext, keys: dict[str, SigningKey], ctx: bytes
) -> None:
    """Z_2^64 party vectors with signed noise -> centred -> encrypt -> sum -> decrypt."""
    schema = Schema.default()
    schema.check_overflow_mod(len(keys), public.params.plain_modulus, noise_bound=100)
    acc = HeAccumulator(ROUND, schema.schema_id, public, schema.vector_length)
    total = np.zeros(schema.vector_length, dtype=np.uint64)
    for i, (name, key) in enumerate(keys.items()):
        vec = schema.encode(
            {
                "EMEA": {
                    "tickets": 10 + i,
                    "replied": 5,
                    "csat": [0, 0, 1, 2, 3],
                    "csat_sum": 14,
                    "escalated": 1,
                    "resolved": 9,
                    "first_response_hours": [1] * 7,
                    "resolution_hours": [2] * 8,
                    "resolution_hours_sum": 12.5,
                }
            }
        )
        noise = [-((i * 37 + j) % 100) for j in range(schema.vector_length)]
        for region in schema.regions:  # contributor indicators carry no noise
            noise[schema.contributor_index(region)] = 0
        vec = vec + from_centred(noise)
        total = total + vec
        chunks = public.encrypt(to_centred(vec))
        sig = make_receipt(
            key, round_id=ROUND, schema_id=schema.schema_id, chunks=chunks, context=ctx
        )
        acc.add(name, chunks, sig, verify_key=key.verify_key)
    authorize_decrypt(
        round_id=ROUND,
        schema_id=schema.schema_id,
        receipts=acc.receipts(),
        verify_keys={n: k.verify_key for n, k in keys.items()},
        min_receipts=3,
        context=ctx,
    )
    result = from_centred(secret.decrypt(acc.aggregate(), schema.vector_length))
    assert np.array_equal(result, total)
    decoded = schema.decode(result)
    assert decoded["EMEA"]["__contributors__"] == 4
    assert decoded["APAC"]["__contributors__"] == 0
    assert decoded["EMEA"]["tickets"] == 10 + 11 + 12 + 13 + sum(
        -((i * 37 + schema.slot_index("EMEA", "tickets")) % 100) for i in range(4)
    )
