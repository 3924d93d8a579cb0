from __future__ import annotations

import hashlib

import pytest

from blindsum.errors import InvalidArgument
from blindsum.protocol import graph, secagg

SEED = hashlib.sha256(b"graph test").digest()


def names(n: int) -> list[str]:
    return [f"p{i:03d}" for i in range(n)]


def is_connected(adj: dict[str, frozenset[str]]) -> bool:
    start = next(iter(adj))
    seen = {start}
    todo = [start]
    while todo:
        for v in adj[todo.pop()]:
            if v not in seen:
                seen.add(v)
                todo.append(v)
    return len(seen) == len(adj)


@pytest.mark.parametrize(("n", "degree"), [(5, 2), (10, 4), (40, 22), (41, 6), (100, 28), (9, 3)])
def test_harary_is_regular_symmetric_and_connected(n: int, degree: int) -> None:
    adj = graph.neighbours(names(n), degree, SEED)
    k = degree + degree % 2
    assert set(adj) == set(names(n))
    for party, nbrs in adj.items():
        assert party not in nbrs
        assert len(nbrs) == k
        for other in nbrs:
            assert party in adj[other]
    assert is_connected(adj)


@pytest.mark.parametrize(("n", "degree"), [(1, 0), (2, 0), (6, 0), (6, 5), (6, 7), (7, 5), (7, 6)])
def test_complete_graph_cases(n: int, degree: int) -> None:
    adj = graph.neighbours(names(n), degree, SEED)
    for party in names(n):
        assert adj[party] == frozenset(names(n)) - {party}


def test_odd_degree_rounds_up_to_even() -> None:
    assert graph.effective_degree(3, 20) == 4
    assert graph.effective_degree(4, 20) == 4
    assert graph.effective_degree(0, 20) == 19
    assert graph.effective_degree(18, 20) == 18
    assert graph.effective_degree(17, 19) == 18  # rounds up to n - 1: complete
    adj = graph.neighbours(names(20), 5, SEED)
    assert {len(v) for v in adj.values()} == {6}


def test_deterministic_and_seed_dependent() -> None:
    a = graph.neighbours(names(30), 4, SEED)
    b = graph.neighbours(names(30), 4, SEED)
    c = graph.neighbours(names(30), 4, hashlib.sha256(b"other").digest())
    assert a == b
    assert a != c


def test_not_the_identity_ring() -> None:
    """The permutation is applied: the graph is not simply i ~ i +- 1 in input order."""
    adj = graph.neighbours(names(50), 2, SEED)
    plain_ring = {
        p: frozenset({names(50)[(i - 1) % 50], names(50)[(i + 1) % 50]})
        for i, p in enumerate(names(50))
    }
    assert adj != plain_ring


def test_rejects_duplicates_and_bad_degree() -> None:
    with pytest.raises(InvalidArgument) as info:
        graph.neighbours(["a", "b", "a"], 0, SEED)
    assert info.value.field == "parties"
    with pytest.raises(InvalidArgument) as info:
        graph.neighbours(["a", "b"], -2, SEED)
    assert info.value.field == "degree"


def test_graph_seed_binds_l_and_every_nonce_and_ignores_mapping_order() -> None:
    """The seed hashes H(L) and the opened nonces of L in config order: changing any
    nonce or the list changes it, the order of the mapping does not, and the advertised
    keys are not an input at all (grinding them no longer steers the graph)."""
    config = secagg.SecAggConfig("r", "s", ("alice", "bob", "carol"), 2, 1, 0)
    digest = hashlib.sha256(b"H(L)").digest()
    nonces = {"alice": b"\x01" * 32, "bob": b"\x02" * 32, "carol": b"\x03" * 32}
    seed = secagg.graph_seed(config, digest, nonces)
    assert len(seed) == 32
    assert secagg.graph_seed(config, digest, dict(reversed(nonces.items()))) == seed
    for p in nonces:
        changed = {**nonces, p: b"\x09" * 32}
        assert secagg.graph_seed(config, digest, changed) != seed
    swapped = {**nonces, "alice": nonces["bob"], "bob": nonces["alice"]}
    assert secagg.graph_seed(config, digest, swapped) != seed
    assert secagg.graph_seed(config, hashlib.sha256(b"other L").digest(), nonces) != seed
    fewer = {p: n for p, n in nonces.items() if p != "carol"}
    assert secagg.graph_seed(config, digest, fewer) != seed
    assert not hasattr(graph, "graph_seed")  # the key-hashing seed of v1 is gone


def test_default_degree() -> None:
    assert graph.default_degree(10, cutoff=16) == 0
    assert graph.default_degree(16, cutoff=16) == 0
    assert graph.default_degree(40, cutoff=8) == 22
    assert graph.default_degree(1000, cutoff=8) == 40
    assert graph.default_degree(20, cutoff=4) == 18
    assert graph.default_degree(12, cutoff=4) == 0  # ceil(4*log2 12) = 15 -> 16 >= 11: complete
    for n in range(2, 300):
        k = graph.default_degree(n, cutoff=1)
        assert k == 0 or (k % 2 == 0 and k < n - 1)


def test_default_threshold() -> None:
    assert graph.default_threshold(1) == 1
    assert graph.default_threshold(2) == 2
    assert graph.default_threshold(3) == 2
    assert graph.default_threshold(4) == 3
    assert graph.default_threshold(5) == 4
    assert graph.default_threshold(23) == 16
    with pytest.raises(InvalidArgument):
        graph.default_threshold(0)


@pytest.mark.parametrize(("n", "degree"), [(5, 0), (10, 4), (101, 42), (300, 94), (64, 70)])
def test_one_partys_neighbourhood_is_its_row_of_the_whole_graph(n: int, degree: int) -> None:
    """What a party computes for itself (O(k)) is what everyone's graph says (O(nk))."""
    parties = names(n)
    seed = hashlib.sha256(b"row %d %d" % (n, degree)).digest()
    whole = graph.neighbours(parties, degree, seed)
    for p in parties:
        assert graph.neighbours_of(p, parties, degree, seed) == whole[p]
    with pytest.raises(InvalidArgument) as info:
        graph.neighbours_of("stranger", parties, degree, seed)
    assert info.value.field == "party"
