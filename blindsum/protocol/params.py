"""Graph degree and Shamir threshold of a secagg round, derived from a threat model.

A round states its :class:`ThreatModel` (the fractions of corrupt and dropped
parties, what the aggregator may do, and two failure targets). :func:`find`
chooses the smallest graph degree k and, for it, a threshold t that meet the
model. :func:`check` evaluates a given (k, t) against the same rules and raises
:class:`~blindsum.errors.UnsafeRequest` naming the rule that fails, so that a
party can recompute the aggregator's choice and refuse a round that does not pass
it. The module is pure: no I/O, no clock and no randomness. Decisions use exact
integer arithmetic; only the reported log2 figures are floats.

Setting (Bell et al., "Secure Single-Server Aggregation with (Poly)Logarithmic
Overhead", CCS 2020, the SecAgg+ graph over the double masking of Bonawitz et
al., "Practical Secure Aggregation for Privacy-Preserving Machine Learning", CCS
2017). There are n parties, of which C = ceil(corrupt_fraction * n) are corrupt
and D = floor(dropout_fraction * n) may drop out. Each party shares its secrets
among its h = k + 1 holders: its closed neighbourhood in the Harary graph H(k, n),
laid over a uniformly random permutation of the parties (:mod:`graph`). Seen from
one party, its k neighbours are then a uniform k-subset of the other n - 1. For
the complete graph, k = n - 1 and h = n. Every probabilistic rule is bounded by a
union over the n parties: n times the tail for one party, capped at 1.

The rules, and what each defends:

- *Privacy against a curious aggregator* (it follows the protocol and sees the
  state of the corrupt parties). A party's secrets fall to its corrupt holders
  alone if they number t or more. Let X ~ Hypergeometric(n - 1, C, k) be the
  corrupt neighbours of an honest party. The rule is n * Pr[X >= t] <= 2**-privacy_bits,
  and t >= 2 when n > 1 (one share must never be enough). This is the
  semi-honest condition of Bell et al.
- *Privacy against a deviating aggregator* (it may lie about who dropped out and
  show different parties different views). In the split view, the aggregator
  tells some of v's holders "v survived" (they reveal shares of the self mask
  b_v) and others "v dropped" (they reveal shares of the mask key s_v). It then
  unmasks v's input alone. The consistency round of Bonawitz et al. makes each
  honest holder sign exactly one view, but the corrupt holders sign both. Let c
  be the smallest integer with n * Pr[X > c] <= 2**-privacy_bits (c = C for the
  complete graph). Two disjoint groups of honest holders that both reach t with
  the c corrupt ones need 2(t - c) <= h - c honest holders. The rule
  2t >= h + c + 1 forbids that, and implies t >= c + 1.
- *Connectivity of the honest survivors* (sparse graphs only; in the complete
  graph they are always connected). If the honest parties that survive are split
  into components, the aggregator learns the sum of each component: a partial
  sum, or a single input. In H(k, n) the remaining positions of the ring fall
  apart only if two disjoint runs of at least k/2 consecutive positions are all
  removed.
  - Curious: removal is not adaptive. The R = C + D corrupt and dropped parties
    sit at random positions. One run of k/2 given positions is all removed with
    probability (R)_{k/2} / (n)_{k/2} (falling factorials). The rule is
    n * (R)_{k/2} / (n)_{k/2} <= 2**-privacy_bits, a union over the n places
    where one such run could start. Cutting the ring takes two runs, so this
    overestimates (Google's finder counts pairs of runs), and errs on the safe side.
  - Deviating: the aggregator chooses up to D dropouts after it has seen the
    graph. Parties refuse a list that declares more than D dropped. To cut two
    runs it must drop every honest party in two windows of k/2 positions. Let
    W ~ Hypergeometric(n, C, k/2) be the corrupt parties in one window, and c_w
    the smallest integer with n * Pr[W > c_w] <= 2**-privacy_bits. Then two
    windows hold at least k - 2 * c_w honest parties, and the rule is
    D < k - 2 * c_w. Cutting off the k neighbours of one party is the same case.
- *Correctness* (both classes). With only the tolerated dropouts, every secret
  the aggregator needs must still have t holders that respond. A surviving party
  has h - Y responding holders, and a dropped one has k - Y' (its own share has
  gone with it), with Y ~ Hypergeometric(n - 1, D, k) and
  Y' ~ Hypergeometric(n - 1, D - 1, k). Y' + 1 dominates Y, so the rule uses
  Z = 1 + Y' (Z = 0 when D = 0): n * Pr[h - Z < t] <= 2**-correctness_bits. For
  the complete graph, Z = D and the rule reads n - D >= t. Corrupt parties that
  withhold their shares are not counted. That is a liveness attack, and the
  colluding aggregator could mount it anyway by aborting.

:class:`Parameters` reports c and two log2 figures for (k, t):
``log2_privacy_failure`` is the union bound (the sum, capped at 1) over the privacy
events that apply:
  - curious: X >= t for some party, plus the connectivity bound;
  - deviating: X >= 2t - h for some party, plus some window holding more than
    (k - D - 1) // 2 corrupt parties.
Each rule is held to 2**-privacy_bits on its own, so the sum can reach
2**(1 - privacy_bits). ``log2_correctness_failure`` is n * Pr[h - Z < t].

What this does not cover:

- The rule for the deviating aggregator's choice of dropouts is our own
  conservative argument, not a result of either paper. So is its union over n
  windows. Bell et al. bound connectivity for dropouts that do not depend on the
  graph, and Google's parameter finder does the same for its semi-malicious
  class.
- The permutation must be uniform and unknown to the adversary when the corrupt
  parties are fixed. Making it so is the job of the graph seed
  (docs/THREAT_MODEL.md); a seed that someone can grind voids every rule here.
  Corruptions chosen after the graph is known are not covered either.
- By default C and D are fractions of the n parties that the graph is built
  over, and an aggregator that chooses the roster also chooses that fraction.
  :func:`assess` and :func:`check` therefore also take absolute counts (the
  roster design in docs/THREAT_MODEL.md bounds corruption that way).
- These are union bounds for one round. Over many rounds the failure
  probabilities add up.
- Malicious inputs, wrong shares and aborts are out of scope.
"""

from __future__ import annotations

import enum
import functools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

from blindsum.errors import Internal, InvalidArgument, UnsafeRequest
from blindsum.protocol import graph

#: Allowed range of :attr:`ThreatModel.privacy_bits`.
PRIVACY_BITS_RANGE = (8, 128)
#: Allowed range of :attr:`ThreatModel.correctness_bits`.
CORRECTNESS_BITS_RANGE = (4, 64)
#: Fractions of corrupt and of dropped parties must be below this.
MAX_FRACTION = 0.5


class Adversary(enum.Enum):
    """What the aggregator may do, besides seeing the corrupt parties' state."""

    CURIOUS = "curious"  # follows the protocol
    DEVIATING = "deviating"  # may lie about who dropped, show different views, ...


def _check_count(value: object, field: str, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidArgument(f"must be an integer >= {low}", field=field)
    return value


def _check_fraction(value: object, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument("must be a number", field=field)
    if not 0 <= value < MAX_FRACTION:  # also rejects NaN
        raise InvalidArgument(f"must be in [0, {MAX_FRACTION})", field=field)


def _check_bits(value: object, field: str, bounds: tuple[int, int]) -> None:
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgument(f"must be an integer in {low}..{high}", field=field)


def _share(fraction: float, n: int) -> Fraction:
    # The fraction is read as the shortest decimal that round-trips (what a config
    # file says), so 0.29 * 100 gives 29 where float arithmetic gives 28.
    return Fraction(str(fraction)) * _check_count(n, "parties")


@dataclass(frozen=True)
class ThreatModel:
    """What a round must withstand.

    ``corrupt_fraction`` and ``dropout_fraction`` are in [0, 0.5). The finder
    aims at a privacy failure of at most 2**-``privacy_bits`` per rule (8..128)
    and a correctness failure of at most 2**-``correctness_bits`` (4..64), both
    union bounds over the parties of one round.
    """

    corrupt_fraction: float
    dropout_fraction: float
    adversary: Adversary = Adversary.DEVIATING
    privacy_bits: int = 40
    correctness_bits: int = 20

    def __post_init__(self) -> None:
        _check_fraction(self.corrupt_fraction, "corrupt_fraction")
        _check_fraction(self.dropout_fraction, "dropout_fraction")
        if not isinstance(self.adversary, Adversary):
            raise InvalidArgument("must be an Adversary", field="adversary")
        _check_bits(self.privacy_bits, "privacy_bits", PRIVACY_BITS_RANGE)
        _check_bits(self.correctness_bits, "correctness_bits", CORRECTNESS_BITS_RANGE)

    def corrupt(self, n: int) -> int:
        """C = ceil(corrupt_fraction * n), at most n - 1, the fraction read as its decimal.

        Rounded up, in the adversary's favour: a positive fraction tolerates at least
        one corrupt party however small the round, so a 5-party round at 10 % still
        withstands one party colluding with the aggregator.
        """
        # Never all parties: a corrupt party's own input is not a secret to protect.
        return min(math.ceil(_share(self.corrupt_fraction, n)), max(n - 1, 0))

    def dropouts(self, n: int) -> int:
        """D = floor(dropout_fraction * n), with the fraction read as its decimal.

        Rounded down: the dropouts a round promises to survive, never more.
        """
        return math.floor(_share(self.dropout_fraction, n))


def _check_model(model: object) -> ThreatModel:
    if not isinstance(model, ThreatModel):
        raise InvalidArgument("must be a ThreatModel", field="model")
    return model


#: 10 % corrupt, 10 % dropouts, a deviating aggregator, 2**-40 and 2**-20.
DEFAULT_THREAT_MODEL = ThreatModel(0.1, 0.1, Adversary.DEVIATING, 40, 20)

_JSON_KEYS = frozenset(
    {"corrupt_fraction", "dropout_fraction", "adversary", "privacy_bits", "correctness_bits"}
)
#: Longest accepted :func:`threat_from_json` document, in characters.
MAX_THREAT_JSON = 1024


def threat_to_json(model: ThreatModel) -> str:
    """``model`` as a compact JSON object with sorted keys (floats keep their repr)."""
    model = _check_model(model)
    return json.dumps(
        {
            "adversary": model.adversary.value,
            "correctness_bits": model.correctness_bits,
            "corrupt_fraction": model.corrupt_fraction,
            "dropout_fraction": model.dropout_fraction,
            "privacy_bits": model.privacy_bits,
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def threat_from_json(text: str) -> ThreatModel:
    """The inverse of :func:`threat_to_json`; every key required, unknown keys refused.

    Raises InvalidArgument(field="threat") for malformed documents and the
    field's own InvalidArgument for bad values.
    """
    if not isinstance(text, str) or len(text) > MAX_THREAT_JSON:
        raise InvalidArgument(
            f"must be a JSON string of at most {MAX_THREAT_JSON} characters", field="threat"
        )
    try:
        doc = json.loads(text)
    except ValueError:
        raise InvalidArgument("is not valid JSON", field="threat") from None
    if not isinstance(doc, dict) or set(doc) != _JSON_KEYS:
        raise InvalidArgument(f"must be an object with keys {sorted(_JSON_KEYS)}", field="threat")
    try:
        adversary = Adversary(doc["adversary"])
    except (ValueError, TypeError):
        raise InvalidArgument("is not a known adversary", field="adversary") from None
    return ThreatModel(
        corrupt_fraction=doc["corrupt_fraction"],
        dropout_fraction=doc["dropout_fraction"],
        adversary=adversary,
        privacy_bits=doc["privacy_bits"],
        correctness_bits=doc["correctness_bits"],
    )


@dataclass(frozen=True)
class Parameters:
    """A graph degree and threshold for ``parties`` parties, with what they give.

    ``degree`` is the effective degree k (n - 1 when ``complete``), ``holders``
    is h = k + 1, ``corrupt`` and ``dropouts`` are C and D. ``corrupt_holders``
    is c, the quantile of corrupt holders that the privacy rules use (C for the
    complete graph). The log2 figures are described in the module docstring;
    they are -inf when the probability is exactly 0 and at most 0.
    """

    parties: int
    degree: int
    complete: bool
    threshold: int
    holders: int
    corrupt: int
    dropouts: int
    corrupt_holders: int
    log2_privacy_failure: float
    log2_correctness_failure: float

    def wire_degree(self) -> int:
        """What ``SecAggConfig.graph_degree`` takes: 0 for the complete graph, else k."""
        return 0 if self.complete else self.degree


# --------------------------------------------------------------------------- tails


def _check_hypergeometric(population: int, successes: int, draws: int) -> None:
    _check_count(population, "population")
    _check_count(successes, "successes")
    _check_count(draws, "draws")
    if successes > population or draws > population:
        raise InvalidArgument("successes and draws must not exceed population", field="draws")


def _terms_down(population: int, successes: int, draws: int) -> Iterator[tuple[int, int]]:
    """(j, C(successes, j) * C(population - successes, draws - j)) for j from the top down.

    The terms are the numerators of the probabilities; their denominator is
    C(population, draws). Consecutive terms follow by an exact integer ratio.
    """
    failures = population - successes
    low, top = max(0, draws - failures), min(successes, draws)
    term = math.comb(successes, top) * math.comb(failures, draws - top)
    for j in range(top, low - 1, -1):
        yield j, term
        term = term * j * (failures - draws + j) // ((successes - j + 1) * (draws - j + 1))


def _tail_numerator(population: int, successes: int, draws: int, at_least: int) -> int:
    total = 0
    for j, term in _terms_down(population, successes, draws):
        if j < at_least:
            break
        total += term
    return total


def hypergeometric_tail(population: int, successes: int, draws: int, at_least: int) -> Fraction:
    """Pr[X >= at_least], exactly, for X ~ Hypergeometric(population, successes, draws).

    X counts the successes among ``draws`` items drawn without replacement from
    ``population`` items of which ``successes`` are successes.
    """
    _check_hypergeometric(population, successes, draws)
    if isinstance(at_least, bool) or not isinstance(at_least, int):
        raise InvalidArgument("must be an integer", field="at_least")
    numerator = _tail_numerator(population, successes, draws, at_least)
    return Fraction(numerator, math.comb(population, draws))


def _quantile(population: int, successes: int, draws: int, union: int, bits: int) -> int:
    """The smallest c >= 0 with union * Pr[X > c] <= 2**-bits (X as in hypergeometric_tail)."""
    # The tail numerator S passes while union * 2**bits * S <= C(population, draws),
    # that is while S <= limit (S is an integer).
    limit = math.comb(population, draws) // (union << bits)
    total = 0
    for j, term in _terms_down(population, successes, draws):
        total += term
        if total > limit:
            return j  # Pr[X >= j] fails, Pr[X > j] passed
    # The full sum is C(population, draws) > limit, so the loop always returns.
    raise Internal("quantile search ran past the support")


def _union(n: int, p: Fraction) -> Fraction:
    return min(Fraction(1), n * p)


def _log2(p: Fraction) -> float:
    if p <= 0:
        return -math.inf
    if p >= 1:
        return 0.0
    return math.log2(p.numerator) - math.log2(p.denominator)


def _power(log2: float) -> str:
    if log2 == -math.inf:
        return "0"
    return "1" if log2 >= 0 else f"2^{log2:.1f}"


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class _Failure:
    rule: str
    message: str


def _correctness_quantile(n: int, k: int, dropouts: int, bits: int) -> int:
    """Smallest z with n * Pr[Z > z] <= 2**-bits, Z = 1 + Hypergeometric(n - 1, D - 1, k)."""
    if dropouts == 0:
        return 0
    return 1 + _quantile(n - 1, dropouts - 1, k, n, bits)


def _correctness_failure(n: int, k: int, t: int, dropouts: int) -> Fraction:
    """n * Pr[h - Z < t], capped at 1 (see the module docstring)."""
    if dropouts == 0:
        return Fraction(1 if t > k + 1 else 0)
    # h - Z < t  <=>  Y' > h - 1 - t = k - t  <=>  Y' >= k - t + 1
    return _union(n, hypergeometric_tail(n - 1, dropouts - 1, k, k - t + 1))


def _falling_ratio(n: int, removed: int, run: int) -> Fraction:
    """(removed)_run / (n)_run: all ``run`` given positions are among ``removed`` random ones."""
    return Fraction(math.perm(removed, run), math.perm(n, run))


def _evaluate(
    n: int, k: int, t: int, *, corrupt: int, dropouts: int, model: ThreatModel
) -> tuple[Parameters, _Failure | None]:
    """Every rule for effective degree k (n - 1 = complete) and threshold t."""
    complete = k >= n - 1
    h = k + 1
    pbits, cbits = model.privacy_bits, model.correctness_bits
    deviating = model.adversary is Adversary.DEVIATING
    failures: list[_Failure] = []

    c = _quantile(n - 1, corrupt, k, n, pbits)  # = corrupt for the complete graph
    if n > 1 and t < 2:
        failures.append(_Failure("threshold", f"t = {t} < 2 (a single share would open a secret)"))
    if deviating:
        privacy = _union(n, hypergeometric_tail(n - 1, corrupt, k, 2 * t - h))
        if 2 * t < h + c + 1:
            failures.append(
                _Failure(
                    "threshold",
                    f"2t = {2 * t} < h + c + 1 = {h + c + 1} (deviating aggregator,"
                    f" c = {c} corrupt holders of {h}; split view {_power(_log2(privacy))})",
                )
            )
    else:
        privacy = _union(n, hypergeometric_tail(n - 1, corrupt, k, t))
        if t < c + 1:
            failures.append(
                _Failure(
                    "threshold",
                    f"t = {t} < c + 1 = {c + 1} (curious aggregator, c = {c} corrupt holders"
                    f" of {h}; n*Pr[X >= t] = {_power(_log2(privacy))} > 2^-{pbits})",
                )
            )

    connectivity = Fraction(0)
    if not complete:
        run = k // 2
        if deviating:
            c_w = _quantile(n, corrupt, run, n, pbits)
            # Two views can cut the ring at a window W of k/2 positions: the honest
            # members of W are declared dropped in one view, and their mask keys are
            # revealed by the k/2 + 1 holders outside W that signed it plus the corrupt
            # ones inside. No window may be cuttable: t > k/2 + 1 + X(W).
            cut = _union(n, hypergeometric_tail(n, corrupt, run, max(t - run - 1, 0)))
            privacy += cut
            if t < run + 2 + c_w:
                failures.append(
                    _Failure(
                        "threshold",
                        f"t = {t} < k/2 + 2 + c_w = {run + 2 + c_w} (deviating aggregator:"
                        f" two views could cut the ring at a window of {run}, c_w = {c_w}"
                        f" corrupt in it; {_power(_log2(cut))})",
                    )
                )
            allowed = (k - dropouts - 1) // 2  # most corrupt per window that still passes
            connectivity = (
                Fraction(1)
                if allowed < 0
                else _union(n, hypergeometric_tail(n, corrupt, run, allowed + 1))
            )
            if dropouts >= k - 2 * c_w:
                failures.append(
                    _Failure(
                        "connectivity",
                        f"D = {dropouts} >= k - 2*c_w = {k} - 2*{c_w} = {k - 2 * c_w}"
                        f" (deviating aggregator choosing dropouts after seeing the graph;"
                        f" c_w = {c_w} corrupt in a window of {run})",
                    )
                )
        else:
            removed = corrupt + dropouts
            connectivity = _union(n, _falling_ratio(n, removed, run))
            if connectivity * (1 << pbits) > 1:
                failures.append(
                    _Failure(
                        "connectivity",
                        f"n*(R)_{run}/(n)_{run} = {_power(_log2(connectivity))} > 2^-{pbits}"
                        f" (R = C + D = {removed} removed at random, k = {k})",
                    )
                )

    correctness = _correctness_failure(n, k, t, dropouts)
    if correctness * (1 << cbits) > 1:
        if complete:
            detail = f"n - D = {n} - {dropouts} = {n - dropouts} < t = {t} (complete graph)"
        else:
            detail = (
                f"n*Pr[h - Z < t] = {_power(_log2(correctness))} > 2^-{cbits}"
                f" (t = {t} of h = {h} holders, D = {dropouts} dropouts)"
            )
        failures.append(_Failure("correctness", detail))

    params = Parameters(
        parties=n,
        degree=k,
        complete=complete,
        threshold=t,
        holders=h,
        corrupt=corrupt,
        dropouts=dropouts,
        corrupt_holders=c,
        log2_privacy_failure=_log2(min(Fraction(1), privacy + connectivity)),
        log2_correctness_failure=_log2(correctness),
    )
    return params, (failures[0] if failures else None)


def _checked(
    n: int,
    degree: int,
    threshold: int,
    model: ThreatModel,
    *,
    corrupt: int | None,
    dropouts: int | None,
) -> tuple[Parameters, _Failure | None]:
    n = _check_count(n, "parties", low=1)
    degree = _check_count(degree, "degree")
    threshold = _check_count(threshold, "threshold")
    model = _check_model(model)
    corrupt = model.corrupt(n) if corrupt is None else _check_count(corrupt, "corrupt")
    dropouts = model.dropouts(n) if dropouts is None else _check_count(dropouts, "dropouts")
    k = graph.effective_degree(degree, n)
    # An honest party has at most n - 1 corrupt others, and at most n parties drop.
    return _evaluate(
        n, k, threshold, corrupt=min(corrupt, n - 1), dropouts=min(dropouts, n), model=model
    )


def assess(
    n: int,
    degree: int,
    threshold: int,
    model: ThreatModel,
    *,
    corrupt: int | None = None,
    dropouts: int | None = None,
) -> Parameters:
    """Evaluate degree ``degree`` and threshold ``threshold`` for ``n`` parties.

    ``degree`` 0, or one reaching n - 1, means the complete graph; odd degrees
    round up to even as in :func:`graph.effective_degree`. ``corrupt`` and
    ``dropouts``, when given, are absolute counts C and D that replace the
    model's fractions of n (for a graph over fewer parties than were invited);
    counts above n - 1 corrupt or n dropped are capped there. Never raises for
    a failing rule (see :func:`check`); raises InvalidArgument for bad inputs.
    """
    return _checked(n, degree, threshold, model, corrupt=corrupt, dropouts=dropouts)[0]


def check(
    n: int,
    degree: int,
    threshold: int,
    model: ThreatModel,
    *,
    corrupt: int | None = None,
    dropouts: int | None = None,
) -> Parameters:
    """:func:`assess`, then UnsafeRequest if any rule fails.

    The error's ``field`` is the first failing rule ("threshold", "connectivity"
    or "correctness") and its one-line message gives the numbers.
    """
    params, failure = _checked(n, degree, threshold, model, corrupt=corrupt, dropouts=dropouts)
    if failure is not None:
        raise UnsafeRequest(failure.message, field=failure.rule)
    return params


# --------------------------------------------------------------------------- finder


def _least_threshold(n: int, h: int, c: int, adversary: Adversary, c_w: int = -1) -> int:
    """The smallest t the privacy rules of ``adversary`` allow (>= 2 when n > 1).

    ``c_w`` (sparse deviating graphs only) is the corrupt-in-a-window quantile of
    the window rule t >= k/2 + 2 + c_w.
    """
    floor = 2 if n > 1 else 1
    if adversary is Adversary.DEVIATING:
        t = max(floor, (h + c + 2) // 2)  # ceil((h + c + 1) / 2)
        if c_w >= 0:
            t = max(t, (h - 1) // 2 + 2 + c_w)
        return t
    return max(floor, c + 1)


def _first_connected_degree(n: int, removed: int, bits: int) -> int:
    """Smallest even k with n * (removed)_{k/2} * 2**bits <= (n)_{k/2} (curious rule).

    The ratio only falls as k grows, so the rule holds for every larger k too.
    Returns n (or more) when no k below n - 1 passes.
    """
    numerator, denominator, run = n << bits, 1, 0
    while numerator > denominator and 2 * run < n - 1:
        numerator *= removed - run
        denominator *= n - run
        run += 1
    return max(2, 2 * run)


def _lower_bound(n: int, k: int, corrupt: int, dropouts: int, model: ThreatModel) -> int:
    """A degree below which no even degree >= k can pass (k itself if k may pass).

    All three quantiles used here (corrupt holders, dropped holders, corrupt in a
    window) only grow with k, so a bound computed at k holds for every larger k.
    """
    c = _quantile(n - 1, corrupt, k, n, model.privacy_bits)
    z = _correctness_quantile(n, k, dropouts, model.correctness_bits)
    if model.adversary is Adversary.DEVIATING:
        # correctness with t = ceil((h + c + 1) / 2): z <= h - t  =>  k >= c + 2z
        bound = c + 2 * z
        c_w = _quantile(n, corrupt, k // 2, n, model.privacy_bits)
        bound = max(bound, dropouts + 1 + 2 * c_w)
        # correctness with the window rule t = k/2 + 2 + c_w: z <= h - t => k >= 2(1 + z + c_w)
        bound = max(bound, 2 * (1 + z + c_w))
    else:
        # correctness with t = max(2, c + 1): z <= h - t  =>  k >= max(c, 1) + z
        bound = max(c, 1) + z
    return max(k, bound)


@functools.lru_cache(maxsize=256)
def _find(n: int, model: ThreatModel, sparse_above: int) -> Parameters:
    corrupt, dropouts = model.corrupt(n), model.dropouts(n)
    if n > sparse_above:
        k = 2
        if model.adversary is Adversary.CURIOUS:
            k = _first_connected_degree(n, corrupt + dropouts, model.privacy_bits)
        while k < n - 1:
            bound = _lower_bound(n, k, corrupt, dropouts, model)
            if bound == k:
                c = _quantile(n - 1, corrupt, k, n, model.privacy_bits)
                c_w = (
                    _quantile(n, corrupt, k // 2, n, model.privacy_bits)
                    if model.adversary is Adversary.DEVIATING
                    else -1
                )
                t = _least_threshold(n, k + 1, c, model.adversary, c_w)
                params, failure = _evaluate(
                    n, k, t, corrupt=corrupt, dropouts=dropouts, model=model
                )
                if failure is None:
                    return params
                bound = k + 1
            k = bound + bound % 2
    t = _least_threshold(n, n, corrupt, model.adversary)
    params, failure = _evaluate(n, n - 1, t, corrupt=corrupt, dropouts=dropouts, model=model)
    if failure is not None:
        raise UnsafeRequest(
            f"no graph meets the threat model for {n} parties ({model.adversary.value}"
            f" aggregator, C = {corrupt}, D = {dropouts}); the complete graph with the"
            f" least safe threshold fails: {failure.message}",
            field=failure.rule,
        )
    return params


def find(n: int, model: ThreatModel, *, sparse_above: int = 64) -> Parameters:
    """The smallest even degree, and a threshold for it, that pass :func:`check`.

    Rounds of at most ``sparse_above`` parties use the complete graph, and so do
    larger ones when no sparse degree below n - 1 passes. The threshold is the
    least that the privacy rule allows (c + 1 against a curious aggregator,
    ceil((h + c + 1) / 2) against a deviating one, at least 2), which is also
    the best for correctness. Raises UnsafeRequest, naming the rule, when even
    the complete graph cannot meet ``model``. Results are cached.

    Against a curious aggregator t = c + 1 can be at most half of the holders;
    a config that also insists on 2t > h (the deviating rule with c = 0) must
    raise t to h // 2 + 1 and check again.
    """
    n = _check_count(n, "parties", low=1)
    model = _check_model(model)
    sparse_above = _check_count(sparse_above, "sparse_above")
    return _find(n, model, sparse_above)
