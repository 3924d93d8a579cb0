"""Typed adapter over TenSEAL BFV (exact integers) for the ``he`` protection mode.

Only the custodian holds a :class:`BfvSecretContext`. Everything that leaves it is a
*public* context (public key only: no secret key, no relinearization or Galois keys).
Parties and the aggregator hold a :class:`BfvPublicContext`, parsed with a size cap and
a parameter check before use.

A vector of ``length`` values is encrypted as ``ceil(length / N)`` chunks; each chunk is
one serialized TenSEAL ``BFVVector`` holding exactly one ciphertext. Plaintext values are
*centred* integers in ``(-p/2, p/2)``; use :func:`to_centred` / :func:`from_centred` to
move between the Z_2^64 vectors of :mod:`blindsum.schema` and that range.

Encryption randomness comes from SEAL's own generator, which is seeded from the OS
(``std::random_device``); it cannot take a ``RandFn``.

All parsing of untrusted bytes goes through :func:`_parse_vector`: malformed, oversized,
multi-ciphertext, wrong-level or wrong-size input raises InvalidArgument naming the chunk
and never reaches homomorphic arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from blindsum.errors import InvalidArgument
from blindsum.types import U64Vector


def _tenseal() -> Any:
    """TenSEAL, imported on first use: a party in a secagg round never loads it."""
    import tenseal  # noqa: PLC0415 - heavy native library, loaded only for he work

    return tenseal


__all__ = [
    "DEFAULT_PLAIN_MODULUS",
    "MAX_CHUNKS",
    "MAX_CHUNK_BYTES",
    "MAX_CONTEXT_BYTES",
    "MIN_PLAIN_MODULUS",
    "BfvParams",
    "BfvPublicContext",
    "BfvSecretContext",
    "find_plain_modulus",
    "from_centred",
    "is_probable_prime",
    "to_centred",
]

#: Largest serialized context accepted (a public N=8192 context is about 0.55 MB,
#: the secret one about 0.8 MB).
MAX_CONTEXT_BYTES = 16 << 20
#: Largest serialized chunk accepted (one N=8192 ciphertext is about 0.43 MB).
MAX_CHUNK_BYTES = 1 << 20
#: Most chunks per vector: 64 * 8192 = 524288 slots.
MAX_CHUNKS = 64

#: Supported ring degrees, with the total coefficient-modulus bit count of SEAL's
#: 128-bit-secure BFV default (``CoeffModulus::BFVDefault``) that TenSEAL uses.
_COEFF_MODULUS_BITS = {4096: 109, 8192: 218}
#: The plain modulus is a prime >= 2**40 (docs/THREAT_MODEL.md, he).
MIN_PLAIN_MODULUS = 1 << 40
#: SEAL limits the plain modulus to 60 bits.
_MAX_PLAIN_MODULUS_BITS = 60

# Miller-Rabin with these bases is deterministic for every n < 3.3 * 10**24 > 2**64.
_MR_BASES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)
_MR_LIMIT = 3_317_044_064_679_887_385_961_981

_U64 = 1 << 64
_I64_MAX = (1 << 63) - 1


def is_probable_prime(n: int) -> bool:
    """Deterministic Miller-Rabin primality test; precondition ``n < 3.3e24``."""
    if not isinstance(n, int) or isinstance(n, bool):
        raise InvalidArgument("must be an integer", field="n")
    if n >= _MR_LIMIT:
        raise InvalidArgument("too large for the deterministic test", field="n")
    if n < 2:
        return False
    for p in _MR_BASES:
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    for a in _MR_BASES:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def find_plain_modulus(n: int, min_bits: int) -> int:
    """Smallest prime ``p >= 2**min_bits`` with ``p ≡ 1 (mod 2n)`` (so BFV batching works).

    Preconditions: ``n`` a power of two >= 2; ``1 <= min_bits < 60``.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 2 or n & (n - 1):
        raise InvalidArgument("must be a power of two >= 2", field="n")
    if not isinstance(min_bits, int) or not 1 <= min_bits < _MAX_PLAIN_MODULUS_BITS:
        raise InvalidArgument(f"must be in [1, {_MAX_PLAIN_MODULUS_BITS})", field="min_bits")
    step = 2 * n
    k = max(1, -(-((1 << min_bits) - 1) // step))  # smallest k with k*step + 1 >= 2**min_bits
    candidate = k * step + 1
    while not is_probable_prime(candidate):
        candidate += step
    if candidate.bit_length() > _MAX_PLAIN_MODULUS_BITS:
        raise InvalidArgument("no prime within SEAL's 60-bit limit", field="min_bits")
    return candidate


#: ``find_plain_modulus(8192, 40)`` = 1099511922689 (a 41-bit prime ≡ 1 mod 16384).
DEFAULT_PLAIN_MODULUS = find_plain_modulus(8192, 40)


@dataclass(frozen=True)
class BfvParams:
    """BFV parameters. ``plain_modulus`` must be a prime >= 2**40, <= 60 bits, with
    ``plain_modulus ≡ 1 (mod 2 * poly_modulus_degree)``; the degree is 4096 or 8192."""

    poly_modulus_degree: int = 8192
    plain_modulus: int = DEFAULT_PLAIN_MODULUS

    def __post_init__(self) -> None:
        n, p = self.poly_modulus_degree, self.plain_modulus
        if not isinstance(n, int) or isinstance(n, bool) or n not in _COEFF_MODULUS_BITS:
            raise InvalidArgument(
                f"must be one of {sorted(_COEFF_MODULUS_BITS)}", field="params.poly_modulus_degree"
            )
        if not isinstance(p, int) or isinstance(p, bool):
            raise InvalidArgument("must be an integer", field="params.plain_modulus")
        if not MIN_PLAIN_MODULUS <= p < (1 << _MAX_PLAIN_MODULUS_BITS):
            raise InvalidArgument("must be in [2**40, 2**60)", field="params.plain_modulus")
        if p % (2 * n) != 1:
            raise InvalidArgument(
                "must be ≡ 1 mod 2 * poly_modulus_degree", field="params.plain_modulus"
            )
        if not is_probable_prime(p):
            raise InvalidArgument("must be prime", field="params.plain_modulus")

    @property
    def slots(self) -> int:
        """Plaintext slots per ciphertext (= ``poly_modulus_degree``)."""
        return self.poly_modulus_degree

    @property
    def max_abs_value(self) -> int:
        """Largest ``|v|`` of a centred value: ``(p - 1) // 2``."""
        return (self.plain_modulus - 1) // 2

    def chunk_count(self, length: int) -> int:
        """Chunks needed for ``length`` values (InvalidArgument(field="length") if out of range)."""
        if not isinstance(length, int) or isinstance(length, bool) or length < 1:
            raise InvalidArgument("must be an integer >= 1", field="length")
        count = -(-length // self.slots)
        if count > MAX_CHUNKS:
            raise InvalidArgument(
                f"needs {count} chunks, more than MAX_CHUNKS={MAX_CHUNKS}", field="length"
            )
        return count

    def chunk_sizes(self, length: int) -> list[int]:
        """Number of values in each chunk of a ``length``-value vector."""
        count = self.chunk_count(length)
        return [min(self.slots, length - i * self.slots) for i in range(count)]


# ---------------------------------------------------------------- internals


def _params_of(ctx: Any, field: str) -> BfvParams:
    """Read and validate the parameters of a parsed TenSEAL context."""
    try:
        seal = ctx.seal_context().data
        key_data = seal.key_context_data()
        parms = key_data.parms()
        scheme = parms.scheme()
        n = int(parms.poly_modulus_degree())
        # SEAL exposes (p + 1) / 2 as the plain "upper half threshold".
        p = 2 * int(key_data.plain_upper_half_threshold()) - 1
        coeff_bits = int(key_data.total_coeff_modulus_bit_count())
        parameters_set = bool(seal.parameters_set())
    except Exception:  # TenSEAL raises assorted C++-mapped types for bad state
        raise InvalidArgument("cannot read the encryption parameters", field=field) from None
    if scheme != _tenseal().SCHEME_TYPE.BFV.value or not parameters_set:
        raise InvalidArgument("is not a valid BFV context", field=field)
    try:
        params = BfvParams(poly_modulus_degree=n, plain_modulus=p)
    except InvalidArgument as exc:
        raise InvalidArgument(f"unsupported parameters ({exc.field})", field=field) from None
    if coeff_bits != _COEFF_MODULUS_BITS[n]:
        raise InvalidArgument(
            f"coefficient modulus has {coeff_bits} bits, expected {_COEFF_MODULUS_BITS[n]}",
            field=field,
        )
    return params


def _check_context_bytes(data: object, field: str) -> bytes:
    if not isinstance(data, bytes):
        raise InvalidArgument("must be bytes", field=field)
    if not data:
        raise InvalidArgument("is empty", field=field)
    if len(data) > MAX_CONTEXT_BYTES:
        raise InvalidArgument(f"larger than {MAX_CONTEXT_BYTES} bytes", field=field)
    return data


def _parse_context(data: bytes, field: str) -> Any:
    try:
        return _tenseal().context_from(data)
    except Exception:  # TenSEAL maps protobuf/SEAL failures to several exception types
        raise InvalidArgument("is not a serialized TenSEAL context", field=field) from None


def _parse_vector(ctx: Any, data: object, expected_size: int | None, field: str) -> Any:
    """Parse one chunk into a BFVVector of exactly one fresh ciphertext at the first level.

    ``expected_size``: the exact number of values, or None for "1..slots".
    """
    if not isinstance(data, bytes):
        raise InvalidArgument("must be bytes", field=field)
    if not data:
        raise InvalidArgument("is empty", field=field)
    if len(data) > MAX_CHUNK_BYTES:
        raise InvalidArgument(f"larger than {MAX_CHUNK_BYTES} bytes", field=field)
    try:
        vec = _tenseal().bfv_vector_from(ctx, data)
        ciphertexts = vec.ciphertext()
        size = int(vec.size())
        first_parms = list(ctx.seal_context().data.first_parms_id())
        shape_ok = len(ciphertexts) == 1
        ct = ciphertexts[0] if shape_ok else None
        ct_ok = (
            ct is not None
            and int(ct.size()) == 2
            and not ct.is_transparent()
            and not ct.is_ntt_form()
            and list(ct.parms_id()) == first_parms
        )
    except Exception:  # malformed bytes surface as ValueError/RuntimeError/TypeError
        raise InvalidArgument(
            "is not a serialized BFV vector for this context", field=field
        ) from None
    if not shape_ok:
        raise InvalidArgument("must hold exactly one ciphertext", field=field)
    if not ct_ok:
        raise InvalidArgument("is not a fresh ciphertext at this context's level", field=field)
    slots = int(ctx.seal_context().data.key_context_data().parms().poly_modulus_degree())
    if expected_size is None:
        if not 1 <= size <= slots:
            raise InvalidArgument(f"holds {size} values, expected 1..{slots}", field=field)
    elif size != expected_size:
        raise InvalidArgument(f"holds {size} values, expected {expected_size}", field=field)
    return vec


def _check_chunk_list(chunks: object, field: str) -> Sequence[object]:
    if isinstance(chunks, bytes | bytearray | str) or not isinstance(chunks, Sequence):
        raise InvalidArgument("must be a list of byte strings", field=field)
    if not 1 <= len(chunks) <= MAX_CHUNKS:
        raise InvalidArgument(f"must hold between 1 and {MAX_CHUNKS} chunks", field=field)
    return chunks


def _parse_chunks(
    ctx: Any, params: BfvParams, chunks: object, length: int | None, field: str
) -> list[Any]:
    """Parse a chunk list. With ``length``: exact count and sizes. Without: every chunk but
    the last is full and the last holds 1..slots values."""
    items = _check_chunk_list(chunks, field)
    if length is not None:
        sizes: list[int | None] = list(params.chunk_sizes(length))
        if len(items) != len(sizes):
            raise InvalidArgument(
                f"has {len(items)} chunks, expected {len(sizes)} for length {length}",
                field=field,
            )
    else:
        sizes = [params.slots] * (len(items) - 1) + [None]
    return [
        _parse_vector(ctx, item, size, f"{field}[{i}]")
        for i, (item, size) in enumerate(zip(items, sizes, strict=True))
    ]


def _canonical_flags(ctx: Any) -> Any:
    """Pin TenSEAL's automatic-operation flags. Creating any BFV vector flips
    auto_rescale/auto_mod_switch off inside the context, and the flags are serialized;
    pinning them keeps :meth:`BfvSecretContext.public_bytes` byte-stable (parties pin it)."""
    ctx.auto_relin = True
    ctx.auto_rescale = False
    ctx.auto_mod_switch = False
    return ctx


def _serialize(vec: Any) -> bytes:
    data = vec.serialize()
    if not isinstance(data, bytes):  # pragma: no cover - TenSEAL always returns bytes
        raise InvalidArgument("serialization did not return bytes", field="chunks")
    return data


# ------------------------------------------------------------------ contexts


@dataclass(frozen=True)
class ParsedSum:
    """A running homomorphic sum held as TenSEAL vectors (opaque outside this module)."""

    vectors: list[Any] = field(repr=False)


class BfvSecretContext:
    """The custodian's BFV context, including the secret key. Never leaves the custodian
    except via :meth:`to_bytes` into a 0600 file; ``repr`` shows parameters only."""

    __slots__ = ("_ctx", "_params", "_public_bytes")

    def __init__(self, ctx: Any, params: BfvParams) -> None:
        """Internal: use :meth:`generate` or :meth:`from_bytes`."""
        self._ctx = ctx
        self._params = params
        self._public_bytes: bytes | None = None

    @classmethod
    def generate(cls, params: BfvParams | None = None) -> BfvSecretContext:
        """Fresh keys for ``params`` (default :class:`BfvParams`). SEAL draws the randomness
        from the OS. No relinearization or Galois keys are kept (only additions are used)."""
        params = params if params is not None else BfvParams()
        if not isinstance(params, BfvParams):
            raise InvalidArgument("must be BfvParams", field="params")
        ctx = _tenseal().context(
            _tenseal().SCHEME_TYPE.BFV,
            poly_modulus_degree=params.poly_modulus_degree,
            plain_modulus=params.plain_modulus,
        )
        if _params_of(ctx, "params") != params:  # pragma: no cover - defensive
            raise InvalidArgument("TenSEAL did not honour the parameters", field="params")
        return cls(_canonical_flags(ctx), params)

    @classmethod
    def from_bytes(cls, data: bytes, *, expected: BfvParams | None = None) -> BfvSecretContext:
        """Parse :meth:`to_bytes` output (size-checked first); it must hold a secret key."""
        ctx = _parse_context(_check_context_bytes(data, "context"), "context")
        if not ctx.is_private() or not ctx.has_secret_key() or not ctx.has_public_key():
            raise InvalidArgument("does not hold a secret and public key", field="context")
        params = _params_of(ctx, "context")
        if expected is not None and params != expected:
            raise InvalidArgument("has different parameters than expected", field="context")
        return cls(_canonical_flags(ctx), params)

    @property
    def params(self) -> BfvParams:
        return self._params

    def to_bytes(self) -> bytes:
        """Serialized context WITH the secret key: write it only to a 0600 file."""
        data: bytes = _canonical_flags(self._ctx).serialize(
            save_public_key=True,
            save_secret_key=True,
            save_galois_keys=False,
            save_relin_keys=False,
        )
        return data

    def public_bytes(self) -> bytes:
        """Serialized public context: public key only (no secret, relin or Galois keys)."""
        if self._public_bytes is None:
            public = self._ctx.copy()
            public.make_context_public()
            _canonical_flags(public)
            if public.is_private() or public.has_secret_key():  # pragma: no cover - defensive
                raise InvalidArgument("public copy still holds the secret key", field="context")
            self._public_bytes = public.serialize(
                save_public_key=True,
                save_secret_key=False,
                save_galois_keys=False,
                save_relin_keys=False,
            )
        return self._public_bytes

    def public(self) -> BfvPublicContext:
        """The matching public context (parsed from :meth:`public_bytes`)."""
        return BfvPublicContext.from_bytes(self.public_bytes(), expected=self._params)

    def decrypt(self, chunks: Sequence[bytes], length: int) -> list[int]:
        """Decrypt a ``length``-value vector to centred ints in ``(-p/2, p/2)``.

        Validates chunk count, sizes and caps first (InvalidArgument naming ``chunks[i]``).
        """
        vectors = _parse_chunks(self._ctx, self._params, chunks, length, "chunks")
        out: list[int] = []
        for i, vec in enumerate(vectors):
            try:
                values = vec.decrypt()
            except Exception:  # defensive: parsing already validated the ciphertext
                raise InvalidArgument("cannot be decrypted", field=f"chunks[{i}]") from None
            out.extend(int(v) for v in values)
        if len(out) != length:  # pragma: no cover - sizes were checked while parsing
            raise InvalidArgument(f"decrypted {len(out)} values, expected {length}", field="chunks")
        return out

    def __repr__(self) -> str:
        return f"BfvSecretContext(params={self._params!r}, secret_key=<redacted>)"

    def __reduce__(self) -> Any:
        raise TypeError("BfvSecretContext is not picklable; use to_bytes() into a 0600 file")


class BfvPublicContext:
    """A public BFV context (parties encrypt, the aggregator adds). Holds no secret key."""

    __slots__ = ("_ctx", "_data", "_params")

    def __init__(self, ctx: Any, params: BfvParams, data: bytes) -> None:
        """Internal: use :meth:`from_bytes`."""
        self._ctx = ctx
        self._params = params
        self._data = data

    @classmethod
    def from_bytes(cls, data: bytes, *, expected: BfvParams | None = None) -> BfvPublicContext:
        """Parse a public context. The size is checked BEFORE parsing. Rejects a context
        that holds a secret key, lacks a public key, is not BFV, or has unsupported
        parameters or parameters other than ``expected`` (InvalidArgument(field="context"))."""
        ctx = _parse_context(_check_context_bytes(data, "context"), "context")
        if ctx.is_private() or ctx.has_secret_key():
            raise InvalidArgument(
                "holds a secret key; only a public context may be shared", field="context"
            )
        if not ctx.has_public_key():
            raise InvalidArgument("has no public key", field="context")
        params = _params_of(ctx, "context")
        if expected is not None and params != expected:
            raise InvalidArgument("has different parameters than expected", field="context")
        return cls(ctx, params, data)

    @property
    def params(self) -> BfvParams:
        return self._params

    def to_bytes(self) -> bytes:
        """The serialized public context this object was parsed from."""
        return self._data

    def chunk_count(self, length: int) -> int:
        """``ceil(length / slots)``; InvalidArgument if above MAX_CHUNKS."""
        return self._params.chunk_count(length)

    def encrypt(self, values: Sequence[int]) -> list[bytes]:
        """Encrypt centred ints (each ``|v| <= (p-1)/2``) as ``chunk_count(len(values))``
        serialized chunks of at most ``slots`` values."""
        if isinstance(values, bytes | str) or not isinstance(values, Sequence | np.ndarray):
            raise InvalidArgument("must be a sequence of integers", field="values")
        bound = self._params.max_abs_value
        ints: list[int] = []
        for i, v in enumerate(values):
            if isinstance(v, bool | np.bool_) or not isinstance(v, int | np.integer):
                raise InvalidArgument("must be an integer", field=f"values[{i}]")
            iv = int(v)
            if not -bound <= iv <= bound:
                raise InvalidArgument(
                    "outside the centred plaintext range (-p/2, p/2)", field=f"values[{i}]"
                )
            ints.append(iv)
        slots = self._params.slots
        count = self._params.chunk_count(len(ints))
        chunks: list[bytes] = []
        for c in range(count):
            part = ints[c * slots : (c + 1) * slots]
            try:
                vec = _tenseal().bfv_vector(self._ctx, part)
            except Exception:  # pragma: no cover - inputs were validated above
                raise InvalidArgument("encryption failed", field=f"values[{c * slots}:]") from None
            chunks.append(_serialize(vec))
        return chunks

    def check_chunks(self, chunks: Sequence[bytes], length: int) -> None:
        """Validate a ``length``-value ciphertext: count, caps, parse, level and sizes."""
        _parse_chunks(self._ctx, self._params, chunks, length, "chunks")

    def add_chunks(self, acc: list[bytes] | None, chunks: Sequence[bytes]) -> list[bytes]:
        """Homomorphic sum ``acc + chunks`` (``acc`` None: a validated copy of ``chunks``).

        Both lists are validated (count, size caps, parse, level); ``chunks`` must have the
        same count and per-chunk sizes as ``acc``. Malformed input raises
        InvalidArgument(field="chunks[i]") (or ``acc[i]``); it never crashes.
        """
        current = None if acc is None else self.parse_sum(acc)
        return self.add_parsed(current, chunks)[1]

    def parse_sum(self, acc: Sequence[bytes]) -> ParsedSum:
        """Parse a serialized running sum once, for :meth:`add_parsed`."""
        return ParsedSum(_parse_chunks(self._ctx, self._params, acc, None, "acc"))

    def add_parsed(
        self, acc: ParsedSum | None, chunks: Sequence[bytes]
    ) -> tuple[ParsedSum, list[bytes]]:
        """Like :meth:`add_chunks`, with the running sum kept parsed between additions:
        the new sum (parsed, for the next call) and its serialized chunks (to checkpoint).
        ``acc`` is not modified, so a failed addition leaves it as it was."""
        new = _parse_chunks(self._ctx, self._params, chunks, None, "chunks")
        if acc is None:
            return ParsedSum(new), [_serialize(v) for v in new]
        current = acc.vectors
        if len(current) != len(new):
            raise InvalidArgument(
                f"has {len(new)} chunks, the running sum has {len(current)}", field="chunks"
            )
        summed: list[Any] = []
        for i, (a, b) in enumerate(zip(current, new, strict=True)):
            if int(a.size()) != int(b.size()):
                raise InvalidArgument(
                    f"holds {b.size()} values, the running sum {a.size()}", field=f"chunks[{i}]"
                )
            try:
                total = a + b
            except Exception:  # defensive: both were validated against this context
                raise InvalidArgument("cannot be added", field=f"chunks[{i}]") from None
            summed.append(total)
        return ParsedSum(summed), [_serialize(v) for v in summed]

    def __repr__(self) -> str:
        return f"BfvPublicContext(params={self._params!r})"


# ------------------------------------------------------------------- helpers


def to_centred(values: U64Vector) -> list[int]:
    """Interpret a Z_2^64 vector as int64 two's complement (the centred representative)."""
    if not isinstance(values, np.ndarray) or values.dtype != np.uint64 or values.ndim != 1:
        raise InvalidArgument("must be a 1-D numpy uint64 array", field="values")
    return [int(v) for v in values.view(np.int64)]


def from_centred(values: Sequence[int]) -> U64Vector:
    """Map centred ints (each in ``[-2**63, 2**63)``) back into Z_2^64."""
    if isinstance(values, bytes | str) or not isinstance(values, Sequence | np.ndarray):
        raise InvalidArgument("must be a sequence of integers", field="values")
    out = np.empty(len(values), dtype=np.uint64)
    for i, v in enumerate(values):
        if isinstance(v, bool | np.bool_) or not isinstance(v, int | np.integer):
            raise InvalidArgument("must be an integer", field=f"values[{i}]")
        iv = int(v)
        if not -(_I64_MAX + 1) <= iv <= _I64_MAX:
            raise InvalidArgument("outside the int64 range", field=f"values[{i}]")
        out[i] = iv % _U64
    return out
