"""Property: pairwise masks cancel, so the sum of masked inputs minus the self masks is
the sum of the inputs, for any n, inputs and graph (complete or sparse)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from blindsum.crypto import kex, prg
from blindsum.crypto.sign import SigningKey
from blindsum.protocol import graph
from blindsum.protocol.secagg import SecAggConfig, SecAggParty
from blindsum.types import U64Vector
from tests.drbg import drbg

u64 = st.integers(min_value=0, max_value=2**64 - 1)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=14),
    degree=st.sampled_from([0, 2, 3, 4, 6]),
    length=st.integers(min_value=1, max_value=9),
    seed=st.binary(min_size=1, max_size=6),
)
def test_pairwise_masks_cancel(n: int, degree: int, length: int, seed: bytes) -> None:
    names = [f"u{i}" for i in range(n)]
    keys = {p: kex.KeyPair.generate(drbg(seed + p.encode())) for p in names}
    nbrs = graph.neighbours(names, degree, hashlib.sha256(seed).digest())
    total = np.zeros(length, dtype=np.uint64)
    for i, u in enumerate(names):
        for v in nbrs[u]:
            shared = kex.agree(keys[u].private, keys[v].public)
            pm = prg.pair_mask(shared, round_id="r", a=u, b=v, length=length)
            if names.index(v) > i:
                total += pm
            else:
                total -= pm
    assert not total.any()


@st.composite
def rounds(draw: st.DrawFn) -> tuple[SecAggConfig, list[U64Vector], bytes]:
    n = draw(st.integers(min_value=2, max_value=10))
    degree = draw(st.sampled_from([0, 2, 4]))
    k = graph.effective_degree(degree, n)
    threshold = draw(st.integers(min_value=max(2, (k + 1) // 2 + 1), max_value=k + 1))
    length = draw(st.integers(min_value=1, max_value=6))
    config = SecAggConfig(
        round_id=draw(st.text(min_size=1, max_size=8)),
        schema_id="schema",
        parties=tuple(f"party{i}" for i in range(n)),
        threshold=threshold,
        vector_length=length,
        graph_degree=degree,
    )
    inputs = [
        np.array(draw(st.lists(u64, min_size=length, max_size=length)), dtype=np.uint64)
        for _ in range(n)
    ]
    return config, inputs, draw(st.binary(min_size=1, max_size=6))


@settings(max_examples=30, deadline=None)
@given(rounds())
def test_masked_sum_minus_self_masks_is_input_sum(
    case: tuple[SecAggConfig, list[U64Vector], bytes],
) -> None:
    config, inputs, seed = case
    ids = {p: SigningKey.generate(drbg(seed + b"id" + p.encode())) for p in config.parties}
    parties = {p: SecAggParty(config, p, ids[p], drbg(seed + p.encode())) for p in config.parties}
    vks = {p: k.verify_key for p, k in ids.items()}
    commits = {p: party.commit() for p, party in parties.items()}
    adverts = {p: party.advertise(commits, vks) for p, party in parties.items()}
    inbox: dict[str, list[object]] = {p: [] for p in config.parties}
    for party in parties.values():
        for env in party.share(adverts):
            inbox[env.receiver].append(env)
    u2 = list(config.parties)
    length = config.vector_length
    y_sum = np.zeros(length, dtype=np.uint64)
    x_sum = np.zeros(length, dtype=np.uint64)
    self_sum = np.zeros(length, dtype=np.uint64)
    for i, p in enumerate(config.parties):
        y = parties[p].mask(inbox[p], u2, inputs[i])  # type: ignore[arg-type]  # list of SealedShare
        y_sum += y
        x_sum += inputs[i]
        b_seed = bytes.fromhex(json.loads(parties[p].to_state())["b_seed"])
        self_sum += prg.self_mask(b_seed, round_id=config.round_id, party=p, length=length)
    assert np.array_equal(y_sum - self_sum, x_sum)
