"""Property: a secagg round with random absentees and dropouts either returns exactly
the sum over the survivors U3, or aborts at close_mask precisely when some needed secret
has fewer than t holders among the survivors, or at close_consistency precisely when
there are fewer than t signers or some needed secret has fewer than t holders among
them. Parties that never commit are simply not in L: the graph is built over L."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from blindsum.crypto.sign import SigningKey
from blindsum.errors import RoundAborted
from blindsum.protocol import graph
from blindsum.protocol.secagg import SecAggConfig, SecAggParty, SecAggServer, ServerStage
from tests.drbg import drbg

Scenario = tuple[SecAggConfig, frozenset[str], frozenset[str], frozenset[str], bytes]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    n = draw(st.integers(min_value=3, max_value=11))
    degree = draw(st.sampled_from([0, 2, 4]))
    holders = graph.effective_degree(degree, n) + 1
    # SecAggConfig requires 2t > holders.
    threshold = draw(st.integers(min_value=holders // 2 + 1, max_value=min(holders, n - 1)))
    names = tuple(f"q{i}" for i in range(n))
    config = SecAggConfig("round", "schema", names, threshold, 3, degree)
    # |L| >= t is all a round without a threat model asks of the list.
    absent = draw(st.frozensets(st.sampled_from(names), max_size=n - threshold))
    listed = sorted(set(names) - absent)
    dropped = draw(st.frozensets(st.sampled_from(listed), max_size=len(listed) - threshold))
    rest = sorted(set(listed) - dropped)
    silent = draw(st.frozensets(st.sampled_from(rest), max_size=len(rest) - threshold))
    return config, absent, dropped, silent, draw(st.binary(min_size=1, max_size=6))


def _enough_holders(
    nbrs: dict[str, frozenset[str]],
    u3: frozenset[str],
    dropped: frozenset[str],
    responders: frozenset[str],
    t: int,
) -> bool:
    """Every self mask in U3, and every mask key of a dropped party with a neighbour
    in U3, has at least t holders among ``responders``."""
    return all(len((nbrs[u] | {u}) & responders) >= t for u in u3) and all(
        not (nbrs[v] & u3) or len(nbrs[v] & responders) >= t for v in dropped
    )


@settings(max_examples=30, deadline=None)
@given(scenarios())
def test_round_with_dropouts(case: Scenario) -> None:
    config, absent, drop_after_share, silent_at_consistency, seed = case
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
        if p not in absent:
            server.add_commit(party.commit(), vks[p])
    server.close_commit()
    commits = server.commits()
    for p in server.committed:
        server.add_advert(parties[p].advertise(commits, vks), vks[p])
    server.close_advertise()
    assert set(server.u1) == set(config.parties) - absent
    for p in server.u1:
        server.add_shares(p, parties[p].share(server.roster()))
    server.close_share()
    for p in server.u2:
        if p not in drop_after_share:
            server.add_masked(p, parties[p].mask(server.shares_for(p), server.u2, inputs[p]))

    survivors = frozenset(server.u1) - drop_after_share
    if absent:
        event("some parties never committed")
    nbrs = server.neighbours()
    t = config.threshold
    feasible = _enough_holders(nbrs, survivors, drop_after_share, survivors, t)
    if not feasible:
        event("abort at close_mask")
        with pytest.raises(RoundAborted, match="holders among survivors"):
            server.close_mask()
        assert server.stage is ServerStage.ABORTED
        return
    u3, dropped = server.close_mask()
    assert set(u3) == survivors
    assert set(dropped) == drop_after_share
    for p in u3:
        if p not in silent_at_consistency:
            server.add_consistency(p, parties[p].sign_consistency(u3, dropped), vks[p])
    signers = survivors - silent_at_consistency
    assert len(signers) >= t  # by construction of the scenario
    if not _enough_holders(nbrs, survivors, drop_after_share, signers, t):
        event("abort at close_consistency")
        with pytest.raises(RoundAborted, match="holders among signers"):
            server.close_consistency()
        assert server.stage is ServerStage.ABORTED
        return
    event(f"finished, {len(silent_at_consistency)} silent at consistency")
    server.close_consistency()
    assert set(server.consistency_signers) == signers
    signatures = server.consistency_signatures()
    for p in server.consistency_signers:
        server.add_reveals(p, parties[p].unmask(u3, dropped, signatures))
    expected = np.zeros(config.vector_length, dtype=np.uint64)
    for p in u3:
        expected += inputs[p]
    assert np.array_equal(server.finish(), expected)
