from __future__ import annotations

import hashlib

import pytest

from blindsum.errors import InvalidArgument
from blindsum.protocol import graph

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


def test_graph_seed_binds_every_key_and_ignores_mapping_order() -> None:
    a = {"alice": (b"\x01" * 32, b"\x02" * 32), "bob": (b"\x03" * 32, b"\x04" * 32)}
    b = {"bob": (b"\x03" * 32, b"\x04" * 32), "alice": (b"\x01" * 32, b"\x02" * 32)}
    assert graph.graph_seed(a) == graph.graph_seed(b)
    assert len(graph.graph_seed(a)) == 32
    changed = dict(a)
    changed["bob"] = (b"\x03" * 32, b"\x05" * 32)
    assert graph.graph_seed(changed) != graph.graph_seed(a)
    swapped = {"alice": (b"\x02" * 32, b"\x01" * 32), "bob": a["bob"]}
    assert graph.graph_seed(swapped) != graph.graph_seed(a)


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
