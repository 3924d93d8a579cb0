"""Exact samplers of blindsum.dp.sampler against their theoretical distributions.

Statistical tests draw from a seeded CsprngSource, so each is deterministic. Each
rejects at p < 1e-4: a correct sampler would fail a given test with probability 1e-4
over the choice of seed, and with the fixed seed it passes (or fails) every time.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from fractions import Fraction

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from scipy import stats

from blindsum.dp.sampler import (
    CsprngSource,
    bernoulli,
    bernoulli_exp,
    discrete_gaussian,
    discrete_gaussian_pmf,
    discrete_gaussian_variance,
    discrete_gaussian_vector,
    discrete_laplace,
)
from blindsum.errors import InvalidArgument

P_REJECT = 1e-4
SEED = bytes(range(32))


def _rng(tag: int) -> CsprngSource:
    return CsprngSource.from_seed(bytes([tag]) * 32)


def _chi2_pvalue(
    samples: Sequence[int], pmf: Callable[[int], float], limit: int, width: int = 1
) -> float:
    """Chi-square goodness-of-fit p-value of symmetric integer ``samples`` against ``pmf``.

    Integers in [-limit, limit] are grouped into bins of ``width``; the mass outside
    (split evenly, the distributions are symmetric) joins the end bins; adjacent bins are
    merged until each expects at least 5 samples.
    """
    n = len(samples)
    probs = [pmf(x) for x in range(-limit, limit + 1)]
    tail = max(0.0, 1.0 - math.fsum(probs)) / 2
    probs[0] += tail
    probs[-1] += tail
    counts = Counter(min(max(s, -limit), limit) + limit for s in samples)
    raw = [
        (math.fsum(probs[i : i + width]), sum(counts[j] for j in range(i, i + width)))
        for i in range(0, len(probs), width)
    ]
    expected: list[float] = []
    observed: list[int] = []
    acc_e, acc_o = 0.0, 0
    for e, o in raw:
        acc_e += e * n
        acc_o += o
        if acc_e >= 5:
            expected.append(acc_e)
            observed.append(acc_o)
            acc_e, acc_o = 0.0, 0
    expected[-1] += acc_e
    observed[-1] += acc_o
    scale = n / math.fsum(expected)
    assert len(expected) >= 3
    return float(stats.chisquare(observed, [e * scale for e in expected]).pvalue)


# ---------------------------------------------------------------------- CsprngSource


def test_randbelow_reads_the_aes_ctr_keystream() -> None:
    """randbelow(256) needs exactly one keystream byte and never rejects."""
    reference = Cipher(algorithms.AES256(SEED), modes.CTR(bytes(16))).encryptor()
    stream = reference.update(bytes(20000))
    rng = CsprngSource.from_seed(SEED)
    assert [rng.randbelow(256) for _ in range(20000)] == list(stream)


def test_randbelow_rejects_instead_of_reducing() -> None:
    """n = 200 needs 8 bits; bytes >= 200 are skipped, never reduced modulo 200."""
    stream = Cipher(algorithms.AES256(SEED), modes.CTR(bytes(16))).encryptor().update(bytes(4096))
    rng = CsprngSource.from_seed(SEED)
    expected = [b for b in stream if b < 200][:1000]
    assert [rng.randbelow(200) for _ in range(1000)] == expected


def test_source_is_deterministic_per_seed_and_hides_it() -> None:
    a = [CsprngSource.from_seed(SEED).randbelow(1 << 100) for _ in range(3)]
    assert len(set(a)) == 1
    other = CsprngSource.from_seed(bytes(32)).randbelow(1 << 100)
    assert other != a[0]
    rng = CsprngSource.from_seed(SEED)
    assert SEED.hex() not in repr(rng)
    assert "secret" in repr(rng)
    assert CsprngSource().randbelow(1 << 64) != CsprngSource().randbelow(1 << 64)


@pytest.mark.parametrize("seed", [b"", bytes(16), bytes(33)])
def test_source_needs_a_32_byte_seed(seed: bytes) -> None:
    with pytest.raises(InvalidArgument) as info:
        CsprngSource.from_seed(seed)
    assert info.value.field == "seed"


@pytest.mark.parametrize("n", [0, -1, True])
def test_randbelow_rejects_bad_bounds(n: int) -> None:
    with pytest.raises(InvalidArgument) as info:
        CsprngSource.from_seed(SEED).randbelow(n)
    assert info.value.field == "n"


def test_randbelow_is_uniform() -> None:
    """Chi-square of 60,000 draws of randbelow(10) against uniform; rate 1e-4."""
    rng = _rng(1)
    counts = Counter(rng.randbelow(10) for _ in range(60000))
    assert stats.chisquare([counts[i] for i in range(10)]).pvalue > P_REJECT


# ------------------------------------------------------------------------- Bernoulli


@pytest.mark.parametrize("p", [Fraction(1, 3), Fraction(7, 8), Fraction(1, 1000)])
def test_bernoulli_frequency(p: Fraction) -> None:
    """Exact two-sided binomial test of 20,000 draws; false-failure rate 1e-4 per case."""
    rng = _rng(2)
    hits = sum(bernoulli(p, rng) for _ in range(20000))
    assert stats.binomtest(hits, 20000, float(p)).pvalue > P_REJECT


def test_bernoulli_edges_and_validation() -> None:
    rng = _rng(3)
    assert not any(bernoulli(Fraction(0), rng) for _ in range(100))
    assert all(bernoulli(Fraction(1), rng) for _ in range(100))
    for bad in (Fraction(-1, 2), Fraction(3, 2)):
        with pytest.raises(InvalidArgument) as info:
            bernoulli(bad, rng)
        assert info.value.field == "p"
    with pytest.raises(InvalidArgument):
        bernoulli(0.5, rng)  # type: ignore[arg-type]


@pytest.mark.parametrize("gamma", [Fraction(1, 2), Fraction(1), Fraction(5, 2), Fraction(7)])
def test_bernoulli_exp_frequency(gamma: Fraction) -> None:
    """Exact binomial test of 20,000 draws against exp(-gamma); rate 1e-4 per case."""
    rng = _rng(4)
    hits = sum(bernoulli_exp(gamma, rng) for _ in range(20000))
    assert stats.binomtest(hits, 20000, math.exp(-float(gamma))).pvalue > P_REJECT


def test_bernoulli_exp_validation() -> None:
    with pytest.raises(InvalidArgument) as info:
        bernoulli_exp(Fraction(-1, 3), _rng(5))
    assert info.value.field == "gamma"


# ----------------------------------------------------------- Laplace and Gaussian


def test_discrete_laplace_fits_its_pmf() -> None:
    """Chi-square of 20,000 DLap(3) draws against
    (1 - e^(-1/3)) / (1 + e^(-1/3)) e^(-|x|/3); rate 1e-4."""
    t = 3
    q = math.exp(-1 / t)
    rng = _rng(6)
    samples = [discrete_laplace(t, rng) for _ in range(20000)]
    p = _chi2_pvalue(samples, lambda x: (1 - q) / (1 + q) * q ** abs(x), limit=40 * t)
    assert p > P_REJECT


def test_discrete_laplace_validation() -> None:
    for bad in (0, -3):
        with pytest.raises(InvalidArgument) as info:
            discrete_laplace(bad, _rng(7))
        assert info.value.field == "t"


@pytest.mark.parametrize(
    ("sigma2", "limit", "width"),
    [
        (Fraction(1, 4), 12, 1),
        (Fraction(2), 30, 1),
        (Fraction(30), 60, 1),
        # sigma ~ 100: bins of 20 integers over +-11 sigma.
        (Fraction(10007), 1100, 20),
    ],
)
def test_discrete_gaussian_fits_its_pmf(sigma2: Fraction, limit: int, width: int) -> None:
    """Chi-square of 20,000 draws of N_Z(0, sigma2) against the exact pmf; rate 1e-4."""
    rng = _rng(8)
    samples = [discrete_gaussian(sigma2, rng) for _ in range(20000)]
    assert all(type(s) is int for s in samples)
    p = _chi2_pvalue(samples, lambda x: discrete_gaussian_pmf(x, float(sigma2)), limit, width)
    assert p > P_REJECT


def test_discrete_gaussian_large_sigma_moments() -> None:
    """sigma = 1e5: sample variance of 4,000 draws against sigma^2 by a chi-square
    (4000 df, two-sided) test; rate 1e-4 (the discrete Gaussian's moments match the
    normal's to ~1e-8 relative at this sigma)."""
    sigma2 = Fraction(10**10)
    rng = _rng(9)
    samples = [discrete_gaussian(sigma2, rng) for _ in range(4000)]
    stat = math.fsum(x * x for x in samples) / discrete_gaussian_variance(1e10)
    tail = min(stats.chi2.cdf(stat, 4000), stats.chi2.sf(stat, 4000))
    assert 2 * tail > P_REJECT


def test_discrete_gaussian_validation() -> None:
    rng = _rng(10)
    for bad in (Fraction(0), Fraction(-1)):
        with pytest.raises(InvalidArgument) as info:
            discrete_gaussian(bad, rng)
        assert info.value.field == "sigma2"
    with pytest.raises(InvalidArgument):
        discrete_gaussian(2.0, rng)  # type: ignore[arg-type]


def test_vector_none_slots_are_zero_and_seeded_output_repeats() -> None:
    sigma2s: list[Fraction | None] = [Fraction(100), None, Fraction(9, 4), None, Fraction(100)]
    a = discrete_gaussian_vector(sigma2s, _rng(11))
    assert len(a) == 5
    assert a[1] == 0 and a[3] == 0
    assert a == discrete_gaussian_vector(sigma2s, _rng(11))
    assert discrete_gaussian_vector([], _rng(11)) == []
    with pytest.raises(InvalidArgument) as info:
        discrete_gaussian_vector([Fraction(1), Fraction(0)], _rng(11))
    assert info.value.field == "sigma2s[1]"


# ------------------------------------------------------------- float references


def _direct(sigma2: float, power: int) -> float:
    """sum x^power exp(-x^2/(2 sigma2)) / sum exp(...), by brute force over +-40 sigma."""
    limit = int(40 * math.sqrt(sigma2)) + 40
    w = [(x, math.exp(-x * x / (2 * sigma2))) for x in range(-limit, limit + 1)]
    return math.fsum(x**power * v for x, v in w) / math.fsum(v for _, v in w)


@pytest.mark.parametrize("sigma2", [0.1, 0.25, 1.0, 2.0, 30.0, 500.0])
def test_reference_helpers_match_brute_force(sigma2: float) -> None:
    assert discrete_gaussian_variance(sigma2) == pytest.approx(_direct(sigma2, 2), rel=1e-12)
    for x in (0, 1, 3):
        limit = int(40 * math.sqrt(sigma2)) + 40
        z = math.fsum(math.exp(-y * y / (2 * sigma2)) for y in range(-limit, limit + 1))
        assert discrete_gaussian_pmf(x, sigma2) == pytest.approx(
            math.exp(-x * x / (2 * sigma2)) / z, rel=1e-12
        )


def test_variance_is_close_to_sigma2_from_sigma_one() -> None:
    assert discrete_gaussian_variance(0.25) < 0.25 * 0.9  # far below for small sigma
    for sigma2 in (1.0, 4.0, 1e4, 1e10):
        var = discrete_gaussian_variance(sigma2)
        assert var <= sigma2
        assert var == pytest.approx(sigma2, rel=1e-6)


def test_reference_validation() -> None:
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(InvalidArgument) as info:
            discrete_gaussian_variance(bad)
        assert info.value.field == "sigma2"
    with pytest.raises(InvalidArgument) as info:
        discrete_gaussian_pmf(1.5, 2.0)  # type: ignore[arg-type]
    assert info.value.field == "x"
