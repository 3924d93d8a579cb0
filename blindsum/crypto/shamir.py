"""Shamir t-of-n secret sharing over GF(2**521 - 1) for secrets of at most 64 bytes.

A secret is read as a big-endian integer, which is the constant term of a random
polynomial of degree ``threshold - 1``; the share of holder ``x`` is the
polynomial at ``x``. Any ``threshold`` shares determine the secret; any fewer
are jointly uniform and independent of it.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from blindsum.crypto import _field
from blindsum.errors import Aborted, InvalidArgument
from blindsum.types import RandFn

#: Bytes of one serialized share value (a field element, big-endian).
SHARE_BYTES = _field.ELEMENT_BYTES
#: Largest secret in bytes (it must be below the field prime).
MAX_SECRET_BYTES = 64
#: Share x-coordinates are in 1..MAX_X.
MAX_X = 1 << 32
# Bytes drawn per random coefficient: 640 bits reduced mod a 521-bit prime
# gives a statistical distance from uniform below 2**-119.
_COEFF_BYTES = 80


def _check_x(x: object, field_name: str = "x") -> int:
    if isinstance(x, bool) or not isinstance(x, int) or not 1 <= x <= MAX_X:
        raise InvalidArgument(f"must be an integer in 1..{MAX_X}", field=field_name)
    return x


def _check_threshold(threshold: object) -> int:
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        raise InvalidArgument("must be an integer >= 1", field="threshold")
    return threshold


@dataclass(frozen=True)
class Share:
    """One share: the polynomial evaluated at ``x``. ``y`` is secret and hidden from ``repr``."""

    x: int
    y: int = field(repr=False)

    def to_bytes(self) -> bytes:
        """The 66-byte big-endian encoding of ``y`` (``x`` travels separately)."""
        return self.y.to_bytes(SHARE_BYTES, "big")

    @classmethod
    def from_bytes(cls, x: int, data: bytes) -> Share:
        """Parse holder ``x``'s share; InvalidArgument unless 66 bytes, y < P, x in 1..2**32."""
        _check_x(x)
        if not isinstance(data, bytes) or len(data) != SHARE_BYTES:
            raise InvalidArgument(f"must be {SHARE_BYTES} bytes", field="share")
        y = int.from_bytes(data, "big")
        if y >= _field.P:
            raise InvalidArgument("is not a field element", field="share")
        return cls(x=x, y=y)


def split(secret: bytes, *, threshold: int, xs: Sequence[int], rand: RandFn) -> dict[int, Share]:
    """Share ``secret`` (1..64 bytes) so that any ``threshold`` of the holders ``xs`` recover it.

    Preconditions: ``1 <= threshold <= len(xs)``; ``xs`` distinct integers in
    1..2**32; ``rand`` is a CSPRNG. Returns ``{x: Share}``.
    """
    if not isinstance(secret, bytes) or not 1 <= len(secret) <= MAX_SECRET_BYTES:
        raise InvalidArgument(f"must be 1..{MAX_SECRET_BYTES} bytes", field="secret")
    threshold = _check_threshold(threshold)
    holders = [_check_x(x, "xs") for x in xs]
    if len(set(holders)) != len(holders):
        raise InvalidArgument("must be distinct", field="xs")
    if threshold > len(holders):
        raise InvalidArgument("exceeds the number of holders", field="threshold")
    coefficients = [int.from_bytes(secret, "big")]
    for _ in range(threshold - 1):
        draw = rand(_COEFF_BYTES)
        if len(draw) != _COEFF_BYTES:
            raise InvalidArgument("returned the wrong number of bytes", field="rand")
        coefficients.append(int.from_bytes(draw, "big") % _field.P)
    return {x: Share(x=x, y=_field.poly_eval(coefficients, x)) for x in holders}


@functools.lru_cache(maxsize=4096)
def lagrange_weights(xs: tuple[int, ...]) -> tuple[int, ...]:
    """Weights ``w`` with ``f(0) = sum(w[i] * f(xs[i]))``; cached per holder set.

    Preconditions: ``xs`` distinct integers in 1..2**32 (InvalidArgument otherwise).
    """
    for x in xs:
        _check_x(x, "xs")
    if len(set(xs)) != len(xs) or not xs:
        raise InvalidArgument("must be distinct and non-empty", field="xs")
    return _field.lagrange_at_zero(xs)


def reconstruct(shares: Sequence[Share], *, threshold: int, secret_len: int) -> bytes:
    """Recover a secret of ``secret_len`` bytes from at least ``threshold`` distinct shares.

    Uses the ``threshold`` shares with the smallest x (canonical, so the weight
    cache hits). Repeated identical shares are tolerated; two different values
    for one x raise InvalidArgument. The result is not authenticated: corrupted
    shares give a wrong secret, or InvalidArgument if it does not fit.
    """
    threshold = _check_threshold(threshold)
    if (
        isinstance(secret_len, bool)
        or not isinstance(secret_len, int)
        or not 1 <= secret_len <= MAX_SECRET_BYTES
    ):
        raise InvalidArgument(f"must be in 1..{MAX_SECRET_BYTES}", field="secret_len")
    by_x: dict[int, int] = {}
    for share in shares:
        if not isinstance(share, Share):
            raise InvalidArgument("must be Share objects", field="shares")
        _check_x(share.x, "shares")
        if not 0 <= share.y < _field.P:
            raise InvalidArgument("is not a field element", field="shares")
        previous = by_x.setdefault(share.x, share.y)
        if previous != share.y:
            raise InvalidArgument("contain conflicting values for one x", field="shares")
    if len(by_x) < threshold:
        raise InvalidArgument(f"need {threshold} distinct shares, got {len(by_x)}", field="shares")
    xs = tuple(sorted(by_x)[:threshold])
    weights = lagrange_weights(xs)
    value = 0
    for x, w in zip(xs, weights, strict=True):
        value = (value + w * by_x[x]) % _field.P
    if value >= 1 << (8 * secret_len):
        raise InvalidArgument("does not fit the expected length", field="secret")
    return value.to_bytes(secret_len, "big")


def _lagrange_at(xs: tuple[int, ...], x: int) -> tuple[int, ...]:
    """Weights ``w`` with ``f(x) = sum(w[i] * f(xs[i]))`` for a point ``x`` not in ``xs``.

    The x are small integers, so products are exact before one reduction, and the
    denominators share one modular inversion (``_field.batch_inverse``).
    """
    numerators: list[int] = []
    denominators: list[int] = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                num *= x - xj
                den *= xi - xj
        numerators.append(num % _field.P)
        denominators.append(den % _field.P)
    inverses = _field.batch_inverse(denominators)
    return tuple((n * d) % _field.P for n, d in zip(numerators, inverses, strict=True))


def _value_at(points: Mapping[int, int], xs: tuple[int, ...], x: int) -> int:
    weights = lagrange_weights(xs) if x == 0 else _lagrange_at(xs, x)
    value = 0
    for xi, w in zip(xs, weights, strict=True):
        value = (value + w * points[xi]) % _field.P
    return value


@dataclass(frozen=True)
class Recovered:
    """A secret that passed its check, and which shares disagree with it.

    ``bad`` are the x of shares that are not on the polynomial the verified
    secret came from; ``checked`` are the x that were compared (the t used and
    one more when there is one, or every share once a bad one was found).
    """

    secret: bytes = field(repr=False)
    bad: tuple[int, ...]
    checked: tuple[int, ...]


def _subsets(xs: Sequence[int], threshold: int, limit: int) -> Iterator[tuple[int, ...]]:
    """t-subsets of ``xs``: the first t after leaving out 0, 1, 2, ... shares, each once."""
    seen: set[tuple[int, ...]] = set()
    for left_out in range(len(xs) - threshold + 1):
        for skip in itertools.combinations(xs, left_out):
            subset = tuple(x for x in xs if x not in skip)[:threshold]
            if subset in seen:
                continue
            seen.add(subset)
            yield subset
            if len(seen) >= limit:
                return


# -- Reed-Solomon decoding (Gao 2003) for locating bad shares ----------------------


def _trim(a: list[int]) -> list[int]:
    while a and a[-1] == 0:
        a.pop()
    return a


def _poly_mul(a: Sequence[int], b: Sequence[int]) -> list[int]:
    if not a or not b:
        return []
    out = [0] * (len(a) + len(b) - 1)
    for i, ai in enumerate(a):
        if ai:
            for j, bj in enumerate(b):
                out[i + j] += ai * bj
    return _trim([c % _field.P for c in out])


def _poly_sub(a: Sequence[int], b: Sequence[int]) -> list[int]:
    out = [0] * max(len(a), len(b))
    for i, c in enumerate(a):
        out[i] = c
    for i, c in enumerate(b):
        out[i] = (out[i] - c) % _field.P
    return _trim(out)


def _poly_divmod(a: Sequence[int], b: Sequence[int]) -> tuple[list[int], list[int]]:
    """Quotient and remainder of a / b (coefficients lowest first; b not zero)."""
    rem = [c % _field.P for c in a]
    _trim(rem)
    if len(rem) < len(b):
        return [], rem
    lead = _field.inv(b[-1])
    quot = [0] * (len(rem) - len(b) + 1)
    while len(rem) >= len(b) and rem:
        shift = len(rem) - len(b)
        coef = (rem[-1] * lead) % _field.P
        quot[shift] = coef
        for i, bi in enumerate(b):
            rem[shift + i] = (rem[shift + i] - coef * bi) % _field.P
        _trim(rem)
    return _trim(quot), rem


def _interpolate(points: Mapping[int, int], xs: Sequence[int]) -> tuple[list[int], list[int]]:
    """(g0, g1): g0 = prod (X - x), g1 the polynomial of degree < m through the points."""
    g0 = [1]
    for x in xs:
        g0 = _poly_mul(g0, [-x % _field.P, 1])
    g1: list[int] = []
    for xi in xs:
        basis, _ = _poly_divmod(g0, [-xi % _field.P, 1])
        denom = 1
        for xj in xs:
            if xj != xi:
                denom = (denom * (xi - xj)) % _field.P
        scale = (points[xi] * _field.inv(denom)) % _field.P
        g1 = _poly_sub(g1, [(-scale * c) % _field.P for c in basis])
    return g0, g1


def _decode(points: Mapping[int, int], threshold: int) -> list[int] | None:
    """The polynomial of degree < t that all but at most (m - t) // 2 points lie on, by
    Gao's algorithm, in O(m^2) field operations; None when there is none."""
    xs = sorted(points)
    m = len(xs)
    g0, g1 = _interpolate(points, xs)
    # Extended Euclid on (g0, g1), stopped at the first remainder of degree < (m + t) / 2.
    r0, r1 = g0, g1
    v0: list[int] = []
    v1: list[int] = [1]
    while r1 and 2 * (len(r1) - 1) >= m + threshold:
        q, r = _poly_divmod(r0, r1)
        r0, r1 = r1, r
        v0, v1 = v1, _poly_sub(v0, _poly_mul(q, v1))
    if not v1:
        return None
    f, rem = _poly_divmod(r1, v1)
    if rem or len(f) > threshold:
        return None
    return f


def _off_polynomial(
    points: Mapping[int, int], secret: bytes, threshold: int, max_bad: int
) -> tuple[int, ...]:
    """The shares off the sharing polynomial, when that is certain; else ().

    The candidate f must have f(0) = the verified secret and more than
    t - 2 + ``max_bad`` shares on it: another polynomial g with g(0) = f(0) meets
    the honest shares in at most t - 2 points, so with at most ``max_bad`` colluding
    holders no g reaches that many, and colluders cannot get honest holders named.
    It must also be the only polynomial most shares agree with (2a > m + t - 2).
    Candidates come from Reed-Solomon decoding, then from (t - 1)-subsets through
    (0, secret), within SEARCH_WORK field multiplications.
    """
    xs = sorted(points)
    m = len(xs)
    value = int.from_bytes(secret, "big")

    def verdict(agree: int, off: tuple[int, ...]) -> tuple[int, ...] | None:
        if agree > threshold - 2 + max_bad and 2 * agree > m + threshold - 2:
            return off
        return None

    decoded = _decode(points, threshold)
    if decoded is not None and (decoded[0] if decoded else 0) == value:
        off = tuple(x for x in xs if _field.poly_eval(decoded, x) != points[x])
        found = verdict(m - len(off), off)
        if found is not None:
            return found
    with_zero = {0: value, **points}
    budget = max(4, SEARCH_WORK // max(1, m * threshold * threshold))
    for subset in _subsets(xs, threshold - 1, budget):
        basis = (0, *subset)
        off = tuple(
            x for x in xs if x not in subset and _value_at(with_zero, basis, x) != points[x]
        )
        found = verdict(m - len(off), off)
        if found is not None:
            return found
    return ()


#: Field multiplications the subset search may spend on one secret (about a second).
SEARCH_WORK = 2_000_000


def recover(
    shares: Sequence[Share],
    *,
    threshold: int,
    secret_len: int,
    verify: Callable[[bytes], bool],
    max_attempts: int = 4096,
    max_bad: int = 0,
) -> Recovered:
    """Reconstruct a secret that ``verify`` accepts, and find shares that disagree with it.

    Tries the t shares with the smallest x and checks one more share against
    their polynomial. If the secret fails ``verify`` or that share disagrees, it
    decodes the shares as a Reed-Solomon codeword (Gao's algorithm, O(m^2) field
    operations), which finds the secret and every bad share whenever
    e <= (m - t) / 2; beyond that radius it searches t-subsets, leaving out as
    few shares as possible, up to ``max_attempts`` and at most SEARCH_WORK field
    multiplications. Shares are named bad only when that is certain with up to
    ``max_bad`` colluding holders (more than t - 2 + max_bad shares agree with the
    decoded polynomial); otherwise ``bad`` is empty and the secret is still
    returned. InvalidArgument when fewer than t distinct shares are given, or when
    two shares claim the same x with different values; Aborted when no subset
    verifies.
    """
    threshold = _check_threshold(threshold)
    points: dict[int, int] = {}
    for share in shares:
        if not isinstance(share, Share):
            raise InvalidArgument("must be Share objects", field="shares")
        _check_x(share.x, "shares")
        if not 0 <= share.y < _field.P:
            raise InvalidArgument("is not a field element", field="shares")
        if points.setdefault(share.x, share.y) != share.y:
            raise InvalidArgument("contain conflicting values for one x", field="shares")
    xs = sorted(points)
    if len(xs) < threshold:
        raise InvalidArgument(f"need {threshold} distinct shares, got {len(xs)}", field="shares")

    def attempt(subset: tuple[int, ...]) -> bytes | None:
        value = _value_at(points, subset, 0)
        if value >= 1 << (8 * secret_len):
            return None
        secret = value.to_bytes(secret_len, "big")
        return secret if verify(secret) else None

    first = tuple(xs[:threshold])
    secret = attempt(first)
    if secret is not None:
        if len(xs) == threshold:
            return Recovered(secret, (), first)
        extra = xs[threshold]
        if _value_at(points, first, extra) == points[extra]:
            return Recovered(secret, (), (*first, extra))
        return Recovered(secret, _off_polynomial(points, secret, threshold, max_bad), tuple(xs))
    decoded = _decode(points, threshold)
    if decoded is not None:
        value = decoded[0] if decoded else 0
        if value < 1 << (8 * secret_len):
            secret = value.to_bytes(secret_len, "big")
            if verify(secret):
                return Recovered(
                    secret, _off_polynomial(points, secret, threshold, max_bad), tuple(xs)
                )
    budget = min(max_attempts, max(16, SEARCH_WORK // (threshold * threshold)))
    for subset in _subsets(xs, threshold, budget):
        secret = attempt(subset)
        if secret is not None:
            bad = _off_polynomial(points, secret, threshold, max_bad)
            return Recovered(secret, bad, tuple(xs))
    raise Aborted(
        f"no {threshold} of the {len(xs)} shares reconstruct a secret that passes its check",
        field="shares",
    )
