"""The public neighbour graph of a secagg round (Bell et al. 2020, "SecAgg+").

With a complete graph every party masks with, and shares its secrets among,
all other parties: O(n) work and messages per party. For large n, Bell et al.
(CCS 2020) show that a random k-regular graph with k = O(log n) keeps both
properties the protocol needs (the honest parties stay connected, and no
party's secrets can be recovered by fewer than t colluders among its
neighbours) with overwhelming probability. We use a Harary graph H(k, n) over a
pseudo-random permutation of the parties, as they do.

The permutation's seed comes from blindsum.protocol.secagg.graph_seed: a hash
of the list L of signed commitments and of the nonces they open, so that nobody
knows it before L is fixed (docs/THREAT_MODEL.md, "The roster"). The degree and
threshold come from blindsum.protocol.params, derived from the round's threat
model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from blindsum.crypto import prg
from blindsum.crypto.encoding import format_dst
from blindsum.errors import InvalidArgument


def _check_count(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument("must be a non-negative integer", field=field)
    return value


def effective_degree(degree: int, n: int) -> int:
    """The degree :func:`neighbours` really uses for ``n`` parties.

    ``n - 1`` (complete) when ``degree`` is 0 or the rounded-up even degree is at
    least ``n - 1``; otherwise ``degree`` rounded up to the next even number.
    """
    degree = _check_count(degree, "degree")
    n = _check_count(n, "parties")
    even = degree + (degree % 2)
    if degree == 0 or even >= n - 1:
        return max(n - 1, 0)
    return even


def _permutation(n: int, seed: bytes) -> list[int]:
    """Fisher-Yates shuffle of ``range(n)`` driven by the public PRG.

    Each draw uses 128 bits reduced mod (i + 1); the bias is below 2**-96 for
    any realistic n, and the permutation is public anyway.
    """
    words = prg.expand(seed, format_dst("graph/perm"), 2 * n)
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        r = (int(words[2 * i]) << 64) | int(words[2 * i + 1])
        j = r % (i + 1)
        order[i], order[j] = order[j], order[i]
    return order


def neighbours(parties: Sequence[str], degree: int, seed: bytes) -> dict[str, frozenset[str]]:
    """The neighbour sets of ``parties`` (symmetric, never containing the party itself).

    ``degree`` 0, or a degree reaching n - 1, gives the complete graph. Otherwise
    odd degrees are rounded up to the next even k and the result is the Harary
    graph H(k, n) over a permutation of ``parties``: position i is adjacent to
    positions i +- 1 .. i +- k/2 (mod n), so every party has exactly k neighbours.
    Preconditions: ``parties`` distinct; everyone passes them in the same order;
    ``seed`` at least 16 bytes (from ``secagg.graph_seed``).
    """
    names, ring, half = _ring(parties, degree, seed)
    if ring is None:
        everyone = frozenset(names)
        return {p: everyone - {p} for p in names}
    position = {p: i for i, p in enumerate(ring)}
    return {p: _adjacent(ring, position[p], half) for p in names}


def neighbours_of(party: str, parties: Sequence[str], degree: int, seed: bytes) -> frozenset[str]:
    """``neighbours(parties, degree, seed)[party]``, without building every party's set.

    A party needs only its own neighbourhood: O(n) for the permutation and O(k) for
    the set, instead of O(n * k). Same preconditions; InvalidArgument(field="party")
    when ``party`` is not in ``parties``.
    """
    names, ring, half = _ring(parties, degree, seed)
    if party not in names:
        raise InvalidArgument("is not one of the parties", field="party")
    if ring is None:
        return frozenset(names) - {party}
    return _adjacent(ring, ring.index(party), half)


def _ring(
    parties: Sequence[str], degree: int, seed: bytes
) -> tuple[list[str], list[str] | None, int]:
    """(the names, the ring of the Harary graph over a permutation of them or None
    for the complete graph, k / 2). InvalidArgument if the names are not distinct."""
    names = list(parties)
    if len(set(names)) != len(names):
        raise InvalidArgument("must be distinct", field="parties")
    n = len(names)
    k = effective_degree(degree, n)
    if k >= n - 1:
        return names, None, 0
    return names, [names[i] for i in _permutation(n, seed)], k // 2


def _adjacent(ring: list[str], pos: int, half: int) -> frozenset[str]:
    """The parties at positions pos +- 1 .. pos +- half (mod n) of the ring."""
    n = len(ring)
    return frozenset(ring[(pos + d) % n] for step in range(1, half + 1) for d in (step, -step))


def default_degree(n: int, cutoff: int) -> int:
    """The degree rounds used before they had a threat model (0 means complete).

    Rounds now take theirs from ``params.find``; this rule stays as the baseline
    of ``make bench`` and for in-process tests that need any valid degree.
    Complete for ``n <= cutoff``. Above it, k = ceil(4 * log2(n)) rounded up to
    an even number (n = 40 gives 22, n = 1000 gives 40). Bell et al. 2020 prove
    that k = O(log n) suffices, with a constant that grows with the tolerated
    fractions of corrupt and dropped parties; 4 * log2(n) is our conservative
    choice for the default threshold of 2/3 of the holders. Deployments that
    expect heavy dropout or collusion should configure a larger degree.
    Returns 0 (complete) when that k would reach n - 1 anyway.
    """
    n = _check_count(n, "parties")
    cutoff = _check_count(cutoff, "cutoff")
    if n <= cutoff or n < 2:
        return 0
    k = math.ceil(4 * math.log2(n))
    k += k % 2
    return 0 if k >= n - 1 else k


def default_threshold(holders: int) -> int:
    """The threshold rounds used before they had a threat model: ceil(2 * holders / 3), >= 2.

    It ignores corrupt holders (docs/THREAT_MODEL.md); rounds now take their
    threshold from ``params.find``, and this rule stays as the bench baseline.

    A party's shares are held by its closed neighbourhood N(u) | {u} (all n
    parties for the complete graph). Returns 1 only when ``holders == 1``.
    The result always satisfies what SecAggConfig requires:
    ``2 * t > holders`` (ceil(2h/3) > h/2, so two disjoint groups of holders
    cannot both reach t) and ``t <= holders``.
    """
    holders = _check_count(holders, "holders")
    if holders < 1:
        raise InvalidArgument("must be at least 1", field="holders")
    if holders == 1:
        return 1
    return max(2, -(-2 * holders // 3))
