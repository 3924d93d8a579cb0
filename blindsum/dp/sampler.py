"""Exact discrete Gaussian sampling driven by a CSPRNG.

The samplers follow Canonne, Kamath and Steinke, "The Discrete Gaussian for Differential
Privacy" (NeurIPS 2020, arXiv:2004.00010), Algorithms 1-3. They use only integer and
rational arithmetic: floating-point noise generation leaks the low-order bits of the
noiseless value (Mironov 2012), so no float ever touches a sample. Every random decision
is a :meth:`RandomSource.randbelow` call, which :class:`CsprngSource` answers from an
AES-256-CTR keystream by rejection sampling (no modulo bias).

Internally a rational ``gamma`` travels as an integer pair ``(num, den)`` because
:class:`fractions.Fraction` arithmetic is several times slower and a party samples a
whole vector per round.

The float helpers :func:`discrete_gaussian_pmf` and :func:`discrete_gaussian_variance`
are numerical references for tests and documentation; the samplers never use them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from fractions import Fraction
from typing import Protocol

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from blindsum.errors import InvalidArgument

__all__ = [
    "SEED_BYTES",
    "CsprngSource",
    "RandomSource",
    "bernoulli",
    "bernoulli_exp",
    "discrete_gaussian",
    "discrete_gaussian_pmf",
    "discrete_gaussian_variance",
    "discrete_gaussian_vector",
    "discrete_laplace",
]

#: Length of a :class:`CsprngSource` seed (an AES-256 key).
SEED_BYTES = 32

_BUFFER_BYTES = 8192  # keystream generated per AES call; amortizes the call overhead
_ZERO_BUFFER = bytes(_BUFFER_BYTES)
_ZERO_BLOCK = bytes(16)


class RandomSource(Protocol):
    """A source of uniform integers. Samplers take one so tests can inject a seeded one."""

    def randbelow(self, n: int) -> int:
        """A uniform integer in ``[0, n)``; precondition ``n >= 1``."""
        ...


class CsprngSource:
    """AES-256-CTR keystream keyed by a 32-byte seed, read as uniform integers.

    The key is used for exactly one keystream (initial counter block zero), so the
    fixed counter block is safe. ``CsprngSource()`` draws the seed from ``os.urandom``;
    :meth:`from_seed` exists for reproducible tests. The seed is not kept as an
    attribute and never appears in ``repr``.
    """

    __slots__ = ("_buf", "_encryptor", "_pos")

    def __init__(self, seed: bytes | None = None) -> None:
        if seed is None:
            seed = os.urandom(SEED_BYTES)
        if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
            raise InvalidArgument(f"must be {SEED_BYTES} bytes", field="seed")
        self._encryptor = Cipher(algorithms.AES256(seed), modes.CTR(_ZERO_BLOCK)).encryptor()
        self._buf = b""
        self._pos = 0

    @classmethod
    def from_seed(cls, seed: bytes) -> CsprngSource:
        """A deterministic source for tests and reproducible vectors."""
        return cls(seed)

    def __repr__(self) -> str:
        return "CsprngSource(<secret seed>)"

    def _take(self, count: int) -> bytes:
        """The next ``count`` keystream bytes."""
        end = self._pos + count
        if end > len(self._buf):
            rest = self._buf[self._pos :]
            fresh = b""
            while len(rest) + len(fresh) < count:
                fresh += self._encryptor.update(_ZERO_BUFFER)
            self._buf = rest + fresh
            self._pos, end = 0, count
        out = self._buf[self._pos : end]
        self._pos = end
        return out

    def randbelow(self, n: int) -> int:
        """Uniform in ``[0, n)``: draw ``bit_length(n - 1)`` bits and retry when ``>= n``.

        Each try succeeds with probability above 1/2, and accepted values are exactly
        uniform, unlike ``x % n``.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidArgument("must be an integer >= 1", field="n")
        if n == 1:
            return 0
        bits = (n - 1).bit_length()
        nbytes = (bits + 7) >> 3
        mask = (1 << bits) - 1
        while True:
            value = int.from_bytes(self._take(nbytes), "little") & mask
            if value < n:
                return value


# ------------------------------------------------------------------ exact samplers


def _as_fraction(value: object, field: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, Fraction | int):
        raise InvalidArgument("must be a Fraction or an int (exact, not float)", field=field)
    return Fraction(value)


def _bernoulli_exp(num: int, den: int, rng: RandomSource) -> bool:
    """Bernoulli(exp(-num/den)) for ``num >= 0, den >= 1`` (CKS Algorithm 1)."""
    if num == 0:
        return True
    # exp(-gamma) = exp(-1)^floor(gamma) * exp(-frac(gamma)): sample the factors.
    whole, num = divmod(num, den)
    for _ in range(whole):
        if not _bernoulli_exp_small(1, 1, rng):
            return False
    return _bernoulli_exp_small(num, den, rng)


def _bernoulli_exp_small(num: int, den: int, rng: RandomSource) -> bool:
    """Bernoulli(exp(-gamma)) for ``gamma = num/den`` in [0, 1].

    Draw A_k ~ Bernoulli(gamma/k) for k = 1, 2, ... until the first A_k = 0; the
    stopping index is odd with probability sum_j (-gamma)^j / j! = exp(-gamma).
    """
    k = 1
    while rng.randbelow(den * k) < num:
        k += 1
    return k % 2 == 1


def _discrete_laplace(t: int, rng: RandomSource) -> int:
    """Discrete Laplace with scale ``t >= 1``: P[x] proportional to exp(-|x|/t).

    CKS Algorithm 2 with s = 1: U uniform in [0, t) accepted with probability
    exp(-U/t), plus t times a Geometric(1 - exp(-1)), then a uniform sign with -0 rejected.
    """
    while True:
        u = rng.randbelow(t)
        if not _bernoulli_exp(u, t, rng):
            continue
        v = 0
        while _bernoulli_exp_small(1, 1, rng):
            v += 1
        x = u + t * v
        negative = rng.randbelow(2) == 1
        if negative and x == 0:
            continue
        return -x if negative else x


def _gaussian_params(sigma2: Fraction) -> tuple[int, int, int]:
    """``(p, q, t)`` with sigma^2 = p/q and the Laplace scale t = floor(sigma) + 1."""
    p, q = sigma2.numerator, sigma2.denominator
    # floor(sqrt(p/q)) == isqrt(floor(p/q)) because isqrt is monotone on the integers.
    return p, q, math.isqrt(p // q) + 1


def _discrete_gaussian(p: int, q: int, t: int, rng: RandomSource) -> int:
    """N_Z(0, p/q) by rejection from DLap(t) (CKS Algorithm 3).

    Accept Y with probability exp(-(|Y| - sigma^2/t)^2 / (2 sigma^2)). With
    a = |Y| q t - p, that exponent is a^2 / (2 p q t^2), an exact rational.
    """
    two_pq_t2 = 2 * p * q * t * t
    while True:
        y = _discrete_laplace(t, rng)
        a = abs(y) * q * t - p
        if _bernoulli_exp(a * a, two_pq_t2, rng):
            return y


def bernoulli(p: Fraction, rng: RandomSource) -> bool:
    """True with probability exactly ``p`` (a rational in [0, 1])."""
    prob = _as_fraction(p, "p")
    if not 0 <= prob <= 1:
        raise InvalidArgument("must be in [0, 1]", field="p")
    return rng.randbelow(prob.denominator) < prob.numerator


def bernoulli_exp(gamma: Fraction, rng: RandomSource) -> bool:
    """True with probability exactly ``exp(-gamma)``, ``gamma >= 0`` (CKS Algorithm 1)."""
    g = _as_fraction(gamma, "gamma")
    if g < 0:
        raise InvalidArgument("must be >= 0", field="gamma")
    return _bernoulli_exp(g.numerator, g.denominator, rng)


def discrete_laplace(t: int, rng: RandomSource) -> int:
    """A sample of the discrete Laplace distribution with integer scale ``t >= 1``:
    ``P[x] = (1 - e^(-1/t)) / (1 + e^(-1/t)) * e^(-|x|/t)`` (CKS Algorithm 2)."""
    if isinstance(t, bool) or not isinstance(t, int) or t < 1:
        raise InvalidArgument("must be an integer >= 1", field="t")
    return _discrete_laplace(t, rng)


def discrete_gaussian(sigma2: Fraction, rng: RandomSource) -> int:
    """A sample of N_Z(0, sigma2): ``P[x]`` proportional to ``exp(-x^2 / (2 sigma2))``.

    ``sigma2 > 0`` is exact (Fraction or int) so that the distribution sampled is exactly
    the one the privacy analysis assumes. Expected number of DLap draws is below 2.
    """
    s2 = _as_fraction(sigma2, "sigma2")
    if s2 <= 0:
        raise InvalidArgument("must be > 0", field="sigma2")
    return _discrete_gaussian(*_gaussian_params(s2), rng)


def discrete_gaussian_vector(sigma2s: Sequence[Fraction | None], rng: RandomSource) -> list[int]:
    """Independent N_Z(0, sigma2s[i]) per slot; ``None`` slots are 0 (not noised).

    Slots with the same variance share the derived integer parameters, which is the
    common case (one variance per metric).
    """
    params: dict[Fraction, tuple[int, int, int]] = {}
    out: list[int] = []
    for i, sigma2 in enumerate(sigma2s):
        if sigma2 is None:
            out.append(0)
            continue
        cached = params.get(sigma2) if isinstance(sigma2, Fraction) else None
        if cached is None:
            s2 = _as_fraction(sigma2, f"sigma2s[{i}]")
            if s2 <= 0:
                raise InvalidArgument("must be > 0", field=f"sigma2s[{i}]")
            cached = params[s2] = _gaussian_params(s2)
        out.append(_discrete_gaussian(*cached, rng))
    return out


# ---------------------------------------------------- float references (tests, docs)

_LOG_TINY = 745.0  # exp(-745) underflows to 0.0 in binary64


def _check_sigma2(sigma2: float) -> float:
    if isinstance(sigma2, bool) or not isinstance(sigma2, int | float | Fraction):
        raise InvalidArgument("must be a number", field="sigma2")
    value = float(sigma2)
    if not math.isfinite(value) or value <= 0:
        raise InvalidArgument("must be finite and > 0", field="sigma2")
    return value


def _dual_terms(sigma2: float) -> list[tuple[int, float]]:
    """``(k, exp(-2 pi^2 sigma2 k^2))`` for k >= 1 until the term underflows.

    Poisson summation turns the slowly converging sum over x of exp(-x^2/(2 sigma2))
    into sqrt(2 pi sigma2) * sum_k exp(-2 pi^2 sigma2 k^2), which converges in a few
    terms for sigma2 >= 1.
    """
    terms: list[tuple[int, float]] = []
    k = 1
    while 2 * math.pi**2 * sigma2 * k * k < _LOG_TINY:
        terms.append((k, math.exp(-2 * math.pi**2 * sigma2 * k * k)))
        k += 1
    return terms


def _direct_range(sigma2: float) -> range:
    """The integers whose weight exp(-x^2/(2 sigma2)) does not underflow."""
    limit = math.isqrt(int(2 * sigma2 * _LOG_TINY)) + 1
    return range(-limit, limit + 1)


def _normalizer(sigma2: float) -> float:
    """sum over all integers x of exp(-x^2 / (2 sigma2))."""
    if sigma2 >= 1:
        dual = 1 + 2 * math.fsum(w for _, w in _dual_terms(sigma2))
        return math.sqrt(2 * math.pi * sigma2) * dual
    return math.fsum(math.exp(-x * x / (2 * sigma2)) for x in _direct_range(sigma2))


def discrete_gaussian_pmf(x: int, sigma2: float) -> float:
    """P[X = x] for X ~ N_Z(0, sigma2), computed numerically (truncated exact series)."""
    s2 = _check_sigma2(sigma2)
    if isinstance(x, bool) or not isinstance(x, int):
        raise InvalidArgument("must be an integer", field="x")
    return math.exp(-x * x / (2 * s2)) / _normalizer(s2)


def discrete_gaussian_variance(sigma2: float) -> float:
    """Var[X] for X ~ N_Z(0, sigma2), computed numerically.

    For sigma2 >= 1 Poisson summation gives
    ``sigma2 * (1 + 2 sum_k e_k (1 - 4 pi^2 sigma2 k^2)) / (1 + 2 sum_k e_k)`` with
    ``e_k = exp(-2 pi^2 sigma2 k^2)``: slightly *below* sigma2, by a relative
    ~8 pi^2 sigma2 exp(-2 pi^2 sigma2) < 1e-6 (CKS 2020 show Var <= sigma2 always).
    """
    s2 = _check_sigma2(sigma2)
    if s2 >= 1:
        terms = _dual_terms(s2)
        den = 1 + 2 * math.fsum(w for _, w in terms)
        num = 1 + 2 * math.fsum(w * (1 - 4 * math.pi**2 * s2 * k * k) for k, w in terms)
        return s2 * num / den
    weights = [(x, math.exp(-x * x / (2 * s2))) for x in _direct_range(s2)]
    return math.fsum(x * x * w for x, w in weights) / math.fsum(w for _, w in weights)
