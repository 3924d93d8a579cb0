"""Property: a secagg round with random dropouts either returns exactly the sum over
the survivors, or aborts at close_mask precisely when some needed secret has fewer
than t holders among the survivors."""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from blindsum.crypto.sign import SigningKey
from blindsum.errors import RoundAborted
from blindsum.protocol import graph
from blindsum.protocol.secagg import SecAggConfig, SecAggParty, SecAggServer, ServerStage
from blindsum.types import RandFn


def drbg(seed: bytes) -> RandFn:
    counter = itertools.count()

    def rand(n: int) -> bytes:
        return hashlib.shake_256(seed + next(counter).to_bytes(8, "big")).digest(n)

    return rand


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[SecAggConfig, frozenset[str], bytes]:
    n = draw(st.integers(min_value=3, max_value=11))
    degree = draw(st.sampled_from([0, 2, 4]))
    k = graph.effective_degree(degree, n)
    threshold = draw(st.integers(min_value=2, max_value=min(k + 1, n - 1)))
    names = tuple(f"q{i}" for i in range(n))
    config = SecAggConfig("round", "schema", names, threshold, 3, degree)
    dropped = draw(st.frozensets(st.sampled_from(names), max_size=n - threshold))
    return config, dropped, draw(st.binary(min_size=1, max_size=6))


@settings(max_examples=30, deadline=None)
@given(scenarios())
def test_round_with_dropouts(case: tuple[SecAggConfig, frozenset[str], bytes]) -> None:
    config, drop_after_share, seed = case
    ids = {p: SigningKey.generate(drbg(seed + b"id" + p.encode())) for p in config.parties}
    vks = {p: k.verify_key for p, k in ids.items()}
    parties = {p: SecAggParty(config, p, ids[p], drbg(seed + p.encode())) for p in config.parties}
    gen = drbg(seed + b"x")
    inputs = {
        p: np.frombuffer(gen(8 * config.vector_length), dtype="<u8").astype(np.uint64)
        for p in config.parties
    }
    server = SecAggServer(config)
    for p, party in parties.items():
        server.add_advert(party.advertise(), vks[p])
    server.close_advertise()
    for p in server.u1:
        server.add_shares(p, parties[p].share(server.roster(), vks))
    server.close_share()
    for p in server.u2:
        if p not in drop_after_share:
            server.add_masked(p, parties[p].mask(server.shares_for(p), server.u2, inputs[p]))

    survivors = frozenset(config.parties) - drop_after_share
    nbrs = server.neighbours()
    t = config.threshold
    feasible = all(len((nbrs[u] | {u}) & survivors) >= t for u in survivors) and all(
        not (nbrs[v] & survivors) or len(nbrs[v] & survivors) >= t for v in drop_after_share
    )
    event(f"feasible={feasible}")
    if not feasible:
        with pytest.raises(RoundAborted, match="holders among survivors"):
            server.close_mask()
        assert server.stage is ServerStage.ABORTED
        return
    u3, dropped = server.close_mask()
    assert set(u3) == survivors
    assert set(dropped) == drop_after_share
    for p in u3:
        server.add_reveals(p, parties[p].unmask(u3, dropped))
    expected = np.zeros(config.vector_length, dtype=np.uint64)
    for p in u3:
        expected += inputs[p]
    assert np.array_equal(server.finish(), expected)
