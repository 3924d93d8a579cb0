"""Hazmat: raw arithmetic in the prime field GF(2**521 - 1).

WARNING: this module is a hazardous building block for :mod:`blindsum.crypto.shamir`.
It performs no validation beyond what Python integers give for free, is not
constant-time, and knows nothing about secrets, encodings or domain separation.
Do not use it directly in protocol code; use :mod:`blindsum.crypto.shamir`.

All functions take and return canonical representatives in ``[0, P)``; callers
must reduce inputs first (``x % P``).
"""

from __future__ import annotations

from collections.abc import Sequence

#: The Mersenne prime 2**521 - 1. Secrets up to 64 bytes (512 bits) fit below it.
P = (1 << 521) - 1

#: Bytes needed to hold any field element (521 bits -> 66 bytes).
ELEMENT_BYTES = 66


def add(a: int, b: int) -> int:
    """Return ``a + b mod P``."""
    return (a + b) % P


def sub(a: int, b: int) -> int:
    """Return ``a - b mod P``."""
    return (a - b) % P


def mul(a: int, b: int) -> int:
    """Return ``a * b mod P``."""
    return (a * b) % P


def inv(a: int) -> int:
    """Return the multiplicative inverse of ``a``. Precondition: ``a % P != 0``."""
    a %= P
    if a == 0:
        raise ZeroDivisionError("zero has no inverse in GF(P)")
    return pow(a, -1, P)


def poly_eval(coefficients: Sequence[int], x: int) -> int:
    """Evaluate ``sum(c_i * x**i)`` at ``x`` (Horner); ``coefficients[0]`` is the constant."""
    acc = 0
    for c in reversed(coefficients):
        acc = (acc * x + c) % P
    return acc


def lagrange_at_zero(xs: Sequence[int]) -> tuple[int, ...]:
    """Lagrange basis weights ``w_i`` such that ``f(0) = sum(w_i * f(x_i))``.

    Precondition: ``xs`` are distinct and non-zero mod P. Uses one modular
    inversion in total (batch inversion of the denominators).
    """
    n = len(xs)
    # Share x-coordinates are small integers (party index + 1), so the products are
    # computed exactly in Python integers and reduced once: the numerator of w_i is the
    # product of all x divided by x_i, which avoids n^2 multiplications modulo P.
    total = 1
    for xj in xs:
        total *= xj
    numerators = [(total // xi) % P for xi in xs]
    denominators: list[int] = []
    for i, xi in enumerate(xs):
        den = 1
        for j, xj in enumerate(xs):
            if i != j:
                den *= xj - xi
                if den.bit_length() > 2048:  # large x values: keep the product bounded
                    den %= P
        denominators.append(den % P)
    inverses = batch_inverse(denominators)
    return tuple((numerators[i] * inverses[i]) % P for i in range(n))


def batch_inverse(values: Sequence[int]) -> list[int]:
    """The inverses of non-zero ``values`` with one modular inversion: prefix products,
    one inverse, then walk back."""
    n = len(values)
    prefix = [1] * (n + 1)
    for i, v in enumerate(values):
        prefix[i + 1] = (prefix[i] * v) % P
    running = inv(prefix[n]) if n else 1
    out = [0] * n
    for i in range(n - 1, -1, -1):
        out[i] = (running * prefix[i]) % P
        running = (running * values[i]) % P
    return out
