"""TenSEAL BFV adapter (blindsum.crypto.he): params, contexts, encrypt/add/decrypt, parsing."""

from __future__ import annotations

import hashlib
import pickle
import random

import numpy as np
import pytest
import tenseal as ts

from blindsum.crypto.he import (
    DEFAULT_PLAIN_MODULUS,
    MAX_CHUNK_BYTES,
    MAX_CHUNKS,
    MAX_CONTEXT_BYTES,
    BfvParams,
    BfvPublicContext,
    BfvSecretContext,
    find_plain_modulus,
    from_centred,
    is_probable_prime,
    to_centred,
)
from blindsum.errors import InvalidArgument
from blindsum.schema import Schema

P = 1099511922689
HALF = (P - 1) // 2


@pytest.fixture(scope="module")
def secret() -> BfvSecretContext:
    return BfvSecretContext.generate(BfvParams())


@pytest.fixture(scope="module")
def public(secret: BfvSecretContext) -> BfvPublicContext:
    return BfvPublicContext.from_bytes(secret.public_bytes(), expected=BfvParams())


@pytest.fixture(scope="module")
def other_secret() -> BfvSecretContext:
    """Different parameters (N = 4096) for mismatch tests."""
    return BfvSecretContext.generate(BfvParams(poly_modulus_degree=4096))


# ------------------------------------------------------------------- params


def _sieve(n: int) -> list[bool]:
    flags = [True] * n
    flags[0] = flags[1] = False
    for i in range(2, int(n**0.5) + 1):
        if flags[i]:
            flags[i * i :: i] = [False] * len(flags[i * i :: i])
    return flags


def test_miller_rabin_matches_sieve() -> None:
    flags = _sieve(20000)
    assert [is_probable_prime(i) for i in range(20000)] == flags
    assert not is_probable_prime(3215031751)  # strong pseudoprime to bases 2, 3, 5, 7
    assert is_probable_prime(2**61 - 1)
    assert not is_probable_prime((2**61 - 1) * 1000003)


def test_default_plain_modulus() -> None:
    assert find_plain_modulus(8192, 40) == P == DEFAULT_PLAIN_MODULUS
    assert P % 16384 == 1
    assert P >= 2**40
    # smallest: no candidate 1 (mod 16384) in [2**40, P) is prime
    first = -(-(2**40 - 1) // 16384) * 16384 + 1
    assert all(not is_probable_prime(c) for c in range(first, P, 16384))
    assert pow(3, P - 1, P) == 1
    assert BfvParams().plain_modulus == P
    assert BfvParams().slots == 8192
    small = find_plain_modulus(16, 10)
    assert small >= 1024
    assert small % 32 == 1
    assert is_probable_prime(small)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"poly_modulus_degree": 1000}, "params.poly_modulus_degree"),
        ({"poly_modulus_degree": 16384}, "params.poly_modulus_degree"),
        ({"plain_modulus": 65537}, "params.plain_modulus"),  # < 2**40
        ({"plain_modulus": P + 16384}, "params.plain_modulus"),  # not prime
        ({"plain_modulus": P + 2}, "params.plain_modulus"),  # not 1 mod 2N
        ({"plain_modulus": 2**61 - 1}, "params.plain_modulus"),  # > 60 bits
    ],
)
def test_bad_params(kwargs: dict[str, int], field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        BfvParams(**kwargs)
    assert info.value.field == field


def test_find_plain_modulus_bad_args() -> None:
    with pytest.raises(InvalidArgument, match="n"):
        find_plain_modulus(1000, 40)
    with pytest.raises(InvalidArgument, match="min_bits"):
        find_plain_modulus(8192, 60)


def test_chunk_count(public: BfvPublicContext) -> None:
    assert public.chunk_count(1) == 1
    assert public.chunk_count(8192) == 1
    assert public.chunk_count(8193) == 2
    assert public.chunk_count(MAX_CHUNKS * 8192) == MAX_CHUNKS
    with pytest.raises(InvalidArgument, match="length"):
        public.chunk_count(MAX_CHUNKS * 8192 + 1)
    with pytest.raises(InvalidArgument, match="length"):
        public.chunk_count(0)


# ------------------------------------------------------------------ centred


def test_centred_round_trip() -> None:
    vec = np.array([0, 1, 2**63 - 1, 2**63, 2**64 - 1], dtype=np.uint64)
    centred = to_centred(vec)
    assert centred == [0, 1, 2**63 - 1, -(2**63), -1]
    assert np.array_equal(from_centred(centred), vec)
    with pytest.raises(InvalidArgument, match=r"values\[0\]"):
        from_centred([2**63])
    with pytest.raises(InvalidArgument, match="values"):
        to_centred(np.zeros(3, dtype=np.int64))  # wrong dtype on purpose


# ------------------------------------------------------- encrypt/add/decrypt


def test_sum_of_party_vectors(secret: BfvSecretContext, public: BfvPublicContext) -> None:
    schema = Schema.default()
    rng = random.Random(7)
    total = np.zeros(schema.vector_length, dtype=np.uint64)
    acc: list[bytes] | None = None
    for party in range(4):
        values: dict[str, dict[str, float | int | list[int]]] = {
            region: {
                "tickets": rng.randrange(1000),
                "replied": rng.randrange(1000),
                "csat": [rng.randrange(100) for _ in range(5)],
                "csat_sum": rng.randrange(500),
                "escalated": rng.randrange(50),
                "resolved": rng.randrange(900),
                "first_response_hours": [rng.randrange(100) for _ in range(7)],
                "resolution_hours": [rng.randrange(100) for _ in range(8)],
                "resolution_hours_sum": rng.randrange(10000) / 10,
            }
            for region in schema.regions[: party % 3 + 1]
        }
        vec = schema.encode(values)
        # signed DP-like noise, two's complement in Z_2^64
        noise = from_centred([rng.randrange(-5000, 5000) for _ in range(schema.vector_length)])
        vec = vec + noise
        total = total + vec
        chunks = public.encrypt(to_centred(vec))
        assert len(chunks) == 1
        public.check_chunks(chunks, schema.vector_length)
        acc = public.add_chunks(acc, chunks)
    assert acc is not None
    decrypted = secret.decrypt(acc, schema.vector_length)
    assert decrypted == to_centred(total)
    assert np.array_equal(from_centred(decrypted), total)
    assert any(v < 0 for v in decrypted)


def test_chunking_longer_than_one_ciphertext(
    secret: BfvSecretContext, public: BfvPublicContext
) -> None:
    length = 2 * 8192 + 5
    a = [(i * 7919) % 100000 - 50000 for i in range(length)]
    b = [HALF - 50000 if i % 2 else -(HALF - 50000) for i in range(length)]
    ca, cb = public.encrypt(a), public.encrypt(b)
    assert len(ca) == len(cb) == 3
    assert secret.decrypt(ca, length) == a
    total = public.add_chunks(public.add_chunks(None, ca), cb)
    assert secret.decrypt(total, length) == [x + y for x, y in zip(a, b, strict=True)]
    with pytest.raises(InvalidArgument, match="chunks"):
        secret.decrypt(ca, length - 1)  # last chunk holds 5 values, not 4
    with pytest.raises(InvalidArgument, match="chunks"):
        secret.decrypt(ca[:2], length)


def test_centred_range_wraps_mod_p(secret: BfvSecretContext, public: BfvPublicContext) -> None:
    """The sum is computed mod p: going past p/2 wraps, which check_overflow_mod prevents."""
    acc = public.add_chunks(public.add_chunks(None, public.encrypt([HALF])), public.encrypt([1]))
    assert secret.decrypt(acc, 1) == [HALF + 1 - P]


@pytest.mark.parametrize("bad", [HALF + 1, -(HALF + 1), 2**63, True, 1.0, "1"])
def test_encrypt_rejects_out_of_range(public: BfvPublicContext, bad: object) -> None:
    with pytest.raises(InvalidArgument) as info:
        public.encrypt([0, bad])  # type: ignore[list-item]  # deliberately bad value
    assert info.value.field == "values[1]"


def test_encrypt_rejects_bad_lengths(public: BfvPublicContext) -> None:
    with pytest.raises(InvalidArgument, match="length"):
        public.encrypt([])
    with pytest.raises(InvalidArgument, match="values"):
        public.encrypt(b"\x01\x02")


# ----------------------------------------------------------------- contexts


def test_public_context_has_no_secret_key(secret: BfvSecretContext) -> None:
    data = secret.public_bytes()
    parsed = ts.context_from(data)
    assert not parsed.is_private()
    assert not parsed.has_secret_key()
    assert not parsed.has_relin_keys()
    assert not parsed.has_galois_keys()
    assert parsed.has_public_key()
    assert len(data) < len(secret.to_bytes())


def test_public_from_bytes_rejects_secret_context(secret: BfvSecretContext) -> None:
    with pytest.raises(InvalidArgument) as info:
        BfvPublicContext.from_bytes(secret.to_bytes())
    assert info.value.field == "context"
    assert "secret" in str(info.value)


def test_public_from_bytes_rejects_other_params(
    public: BfvPublicContext, other_secret: BfvSecretContext
) -> None:
    other = BfvPublicContext.from_bytes(other_secret.public_bytes())
    assert other.params.poly_modulus_degree == 4096
    with pytest.raises(InvalidArgument, match="context"):
        BfvPublicContext.from_bytes(other_secret.public_bytes(), expected=BfvParams())
    with pytest.raises(InvalidArgument, match="context"):
        BfvSecretContext.from_bytes(other_secret.to_bytes(), expected=BfvParams())
    # a ciphertext made under other parameters does not parse under ours
    foreign = other.encrypt([1, 2, 3])
    with pytest.raises(InvalidArgument) as info:
        public.add_chunks(None, foreign)
    assert info.value.field == "chunks[0]"


def test_public_from_bytes_rejects_ckks_and_garbage() -> None:
    ckks = ts.context(
        ts.SCHEME_TYPE.CKKS, poly_modulus_degree=8192, coeff_mod_bit_sizes=[60, 40, 60]
    )
    ckks.make_context_public()
    for data in (ckks.serialize(), b"\x00" * 100, b"not a context", b""):
        with pytest.raises(InvalidArgument) as info:
            BfvPublicContext.from_bytes(data)
        assert info.value.field == "context"


def test_context_size_checked_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_parse(_data: bytes) -> None:
        raise AssertionError("parsed an oversized context")

    monkeypatch.setattr(ts, "context_from", must_not_parse)
    with pytest.raises(InvalidArgument, match="larger than"):
        BfvPublicContext.from_bytes(b"\x00" * (MAX_CONTEXT_BYTES + 1))


def test_secret_context_round_trip_and_repr(
    secret: BfvSecretContext, public: BfvPublicContext
) -> None:
    chunks = public.encrypt([5, -6, 7])
    again = BfvSecretContext.from_bytes(secret.to_bytes(), expected=BfvParams())
    assert again.decrypt(chunks, 3) == [5, -6, 7]
    # byte-stable across reloads and use (parties pin the signed public context)
    assert again.public_bytes() == secret.public_bytes()
    assert again.to_bytes() == secret.to_bytes()
    text = repr(secret)
    assert str(secret) == text
    assert "redacted" in text
    assert len(text) < 200  # parameters only, no key material
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    with pytest.raises(InvalidArgument, match="secret"):
        BfvSecretContext.from_bytes(secret.public_bytes())


# ------------------------------------------------------------ bad ciphertexts


def test_malformed_chunks_raise_and_never_crash(public: BfvPublicContext) -> None:
    good = public.encrypt(list(range(10)))
    rng = random.Random(1)
    data = good[0]
    for _ in range(25):
        cut = data[: rng.randrange(len(data))]
        with pytest.raises(InvalidArgument) as info:
            public.check_chunks([cut], 10)
        assert info.value.field == "chunks[0]"
    for _ in range(25):
        flipped = bytearray(data)
        for _ in range(rng.randrange(1, 8)):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        try:  # a flip inside the payload may still parse: then it must add cleanly
            public.add_chunks(good, [bytes(flipped)])
        except InvalidArgument as exc:
            assert exc.field == "chunks[0]"
    for junk in (b"\x00", hashlib.sha256(b"x").digest() * 100):
        with pytest.raises(InvalidArgument, match=r"chunks\[0\]"):
            public.add_chunks(None, [junk])


def test_chunk_caps_and_shapes(public: BfvPublicContext) -> None:
    good = public.encrypt(list(range(10)))
    with pytest.raises(InvalidArgument, match=r"chunks\[0\]: larger than"):
        public.add_chunks(None, [b"\x00" * (MAX_CHUNK_BYTES + 1)])
    with pytest.raises(InvalidArgument, match="chunks"):
        public.add_chunks(None, [])
    with pytest.raises(InvalidArgument, match="chunks"):
        public.add_chunks(None, good * (MAX_CHUNKS + 1))
    with pytest.raises(InvalidArgument, match=r"chunks\[1\]"):
        full = public.encrypt(list(range(8200)))[0]
        public.add_chunks(None, [full, "x"])  # type: ignore[list-item]  # deliberately bad
    with pytest.raises(InvalidArgument, match="chunks"):
        public.add_chunks(None, good[0])  # type: ignore[arg-type]  # bytes, not a list of chunks
    # wrong number of values in a chunk
    with pytest.raises(InvalidArgument, match=r"chunks\[0\]: holds 10 values, expected 11"):
        public.check_chunks(good, 11)
    with pytest.raises(InvalidArgument, match=r"chunks\[0\]"):
        public.add_chunks(good, public.encrypt(list(range(9))))
    # a non-final chunk must be full
    with pytest.raises(InvalidArgument, match=r"chunks\[0\]"):
        public.add_chunks(None, good + good)
    # count mismatch against the running sum
    with pytest.raises(InvalidArgument, match="chunks"):
        public.add_chunks(public.encrypt(list(range(8200))), good)


def test_multi_ciphertext_chunk_rejected(
    secret: BfvSecretContext, public: BfvPublicContext
) -> None:
    # TenSEAL silently packs > N values into several ciphertexts in one vector
    sneaky = ts.bfv_vector(ts.context_from(secret.public_bytes()), list(range(8192 + 10)))
    data = sneaky.serialize()
    assert len(data) <= MAX_CHUNK_BYTES
    with pytest.raises(InvalidArgument, match="exactly one ciphertext"):
        public.add_chunks(None, [data])
