"""secagg-core: the secagg state machines in one process, no network.

One round drives :class:`~blindsum.protocol.secagg.SecAggParty` and
:class:`~blindsum.protocol.secagg.SecAggServer` the way the service does: the commit
phase, then advertise over the list L, share, mask, consistency and unmask, with the
degree and threshold the aggregator opens a round with (``params.find`` under the
default threat model, sparse above 64 parties, the threat model in the config), and a
fraction of the parties dropping after the share phase (they never send a masked
vector). It reports:

- party seconds per phase, as the mean over the parties that ran the phase, and their
  sum (``party_total_s``: the compute of one party that goes through the whole round);
- server seconds per phase (totals over all the calls of the phase), and
  ``server_unmask_sum_s`` = add_masked + add_reveals + finish: the streaming sum plus
  the mask removal (with every reconstructed secret checked, issue 10);
- the server's peak traced memory over the mask and unmask phases, measured on a replay
  of the same inputs (tracing slows the code down, so it never runs while timing);
- the bytes a party sends: the real protobuf requests built with :mod:`blindsum.codec`.

Baselines in the same run: ``prg-floor`` (one party generating its masks with
:mod:`blindsum.crypto.prg`, nothing else) and ``sum-floor`` (numpy summing the survivors'
vectors plus regenerating the dropped parties' pair masks with their surviving
neighbours: the least any server must do). The survivors' self masks are not in that
floor, although double masking needs them; ``self_mask_regen_s`` reports their cost.

Old against new parameters (issue 10: "make bench shows the cost of the new parameters
next to the old, as ratios from one run"): the same round, same inputs and same
dropouts, at a few n with a small vector, once with the parameters rounds used before
they had a threat model (``graph.default_degree`` / ``graph.default_threshold``, no
threat model: rows ``old-params``) and once with ``params.find(n,
DEFAULT_THREAT_MODEL)`` and the threat model in the config (rows ``new-params``, which
carry the new/old ratios of party time, server finish time and bytes per party).
"""

from __future__ import annotations

import math
import secrets
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from bench.common import (
    Result,
    Stopwatch,
    best_of,
    format_table,
    parse_scenario_args,
    ratio,
    result_row,
    skipped,
    traced_peaks_mib,
)
from blindsum import codec
from blindsum.crypto import kex, prg, shamir
from blindsum.crypto.sign import SigningKey, VerifyKey
from blindsum.protocol import graph, params
from blindsum.protocol.secagg import (
    Advert,
    Commit,
    Reveal,
    SealedShare,
    SecAggConfig,
    SecAggParty,
    SecAggServer,
)
from blindsum.rpc.v1 import round_pb2
from blindsum.types import RandFn, U64Vector

SCENARIO = "secagg-core"
ROUND_ID = "bench-secagg-0001"
SCHEMA_ID = "bench-schema"
#: The aggregator's default cutoff: complete graph up to 64 parties, sparse above.
SPARSE_ABOVE = 64

PARTY_PHASES = ("commit", "advertise", "share", "mask", "consistency", "unmask")
SERVER_PHASES = (
    "add_commit",
    "close_commit",
    "add_advert",
    "close_advertise",
    "add_shares",
    "close_share",
    "route_envelopes",
    "add_masked",
    "close_mask",
    "add_consistency",
    "close_consistency",
    "add_reveals",
    "finish",
)
#: What the server-cost target measures: the streaming sum and the mask removal.
UNMASK_SUM_PHASES = ("add_masked", "add_reveals", "finish")

#: (n, m, dropout) of the full grid: the issue's n x m x dropout.
FULL_GRID: tuple[tuple[int, int, float], ...] = tuple(
    (n, m, d) for n in (10, 100, 1000) for m in (4096, 16384) for d in (0.0, 0.1)
)
#: Quick mode: every figure the targets need short of n = 1000 (about half a minute).
QUICK_GRID: tuple[tuple[int, int, float], ...] = (
    (10, 4096, 0.1),
    (10, 16384, 0.1),
    (100, 4096, 0.1),
    (100, 16384, 0.0),
    (100, 16384, 0.1),
)
#: Quick mode stops starting new grid points after this many seconds.
QUICK_BUDGET_S = 150.0
#: Shamir share creation parameters of the Flower comparison (k holders, threshold t).
SHAMIR_K, SHAMIR_T = 100, 66

#: Which degree and threshold a round gets: "new" is what the aggregator opens rounds
#: with since issue 10 (``params.find`` under the default threat model, which goes into
#: the config); "old" is the rule before it (``graph.default_degree`` and
#: ``graph.default_threshold``, no threat model).
ParamRule = Literal["old", "new"]
#: The threat model of "new" rounds: the aggregator's default.
THREAT_MODEL = params.DEFAULT_THREAT_MODEL
#: Old against new parameters: the n of quick and full mode, the vector length, dropout.
PARAMS_QUICK_NS = (100, 300)
PARAMS_FULL_NS = (100, 300, 1000)
PARAMS_M = 1024
PARAMS_DROPOUT = 0.1
#: Quick mode starts no new n of the comparison after this many seconds in it.
PARAMS_QUICK_BUDGET_S = 120.0
#: System names of the comparison's rows.
OLD_PARAMS, NEW_PARAMS = "old-params", "new-params"

#: Headline metrics of this scenario's table rows (``python -m bench`` reads it).
KEY_METRICS = (
    "party_total_s",
    "server_unmask_sum_s",
    "server_peak_mib",
    "party_sent_bytes",
)


# --------------------------------------------------------------------------- one round


@dataclass
class RoundTrace:
    """Everything the server received in a round, to replay it (for the memory pass)."""

    config: SecAggConfig
    commits: list[tuple[Commit, VerifyKey]] = field(default_factory=list)
    adverts: list[tuple[Advert, VerifyKey]] = field(default_factory=list)
    shares: dict[str, list[SealedShare]] = field(default_factory=dict)
    masked: dict[str, U64Vector] = field(default_factory=dict)
    signatures: dict[str, tuple[bytes, VerifyKey]] = field(default_factory=dict)
    reveals: dict[str, list[Reveal]] = field(default_factory=dict)


@dataclass
class RoundRun:
    """The outcome and timings of one simulated round."""

    config: SecAggConfig
    party: Stopwatch
    server: Stopwatch
    result: U64Vector
    expected: U64Vector
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    neighbours: dict[str, frozenset[str]]
    sent_bytes: dict[str, int]
    trace: RoundTrace

    @property
    def sum_ok(self) -> bool:
        return bool(np.array_equal(self.result, self.expected))

    def party_total(self) -> float:
        """Mean compute of a party over the whole round (sum of the per-phase means)."""
        return sum(self.party.mean(p) for p in PARTY_PHASES)

    def mean_pair_masks(self) -> int:
        """Pair masks a surviving party generates: its neighbours in U2 (here all of U1)."""
        counts = [len(self.neighbours[p]) for p in self.survivors]
        return round(sum(counts) / len(counts)) if counts else 0


def make_config(
    n: int, m: int, *, sparse_above: int = SPARSE_ABOVE, rule: ParamRule = "new"
) -> SecAggConfig:
    """The round config the aggregator would open (``rule="new"``), or the one it opened
    before issue 10 (``rule="old"``): see :data:`ParamRule`."""
    names = tuple(f"party-{i:04d}" for i in range(n))
    threat: params.ThreatModel | None = None
    if rule == "new":
        chosen = params.find(n, THREAT_MODEL, sparse_above=sparse_above)
        degree, threshold, threat = chosen.wire_degree(), chosen.threshold, THREAT_MODEL
    else:
        degree = graph.default_degree(n, sparse_above)
        threshold = graph.default_threshold(graph.effective_degree(degree, n) + 1)
    return SecAggConfig(
        round_id=ROUND_ID,
        schema_id=SCHEMA_ID,
        parties=names,
        threshold=threshold,
        vector_length=m,
        graph_degree=degree,
        threat=threat,
    )


def drop_count(config: SecAggConfig, dropout: float) -> int:
    """How many parties drop after sharing: ``round(dropout * n)``, capped so that the
    survivors still reach the floor every party enforces (t, or n - D in a sparse round
    with a threat model)."""
    n = len(config.parties)
    return max(0, min(round(dropout * n), n - config.min_survivors()))


def party_sent_bytes(
    commit: Commit,
    advert: Advert,
    shares: Sequence[SealedShare],
    y: U64Vector,
    signature: bytes,
    reveals: Sequence[Reveal],
) -> int:
    """Serialized size of the six requests a surviving party sends in a round."""
    messages = (
        codec.commit_to_request(ROUND_ID, SCHEMA_ID, commit),
        codec.advert_to_request(ROUND_ID, SCHEMA_ID, advert),
        round_pb2.SubmitSharesRequest(round_id=ROUND_ID, envelopes=codec.shares_to_pb(shares)),
        round_pb2.SubmitMaskedRequest(
            round_id=ROUND_ID, schema_id=SCHEMA_ID, masked_vector=codec.vector_to_bytes(y)
        ),
        round_pb2.SubmitConsistencyRequest(round_id=ROUND_ID, signature=signature),
        round_pb2.SubmitUnmaskRequest(round_id=ROUND_ID, shares=codec.reveals_to_pb(reveals)),
    )
    return sum(msg.ByteSize() for msg in messages)


def _random_vector(rng: np.random.Generator, m: int) -> U64Vector:
    vec: U64Vector = rng.integers(0, 1 << 64, size=m, dtype=np.uint64, endpoint=False)
    return vec


def simulate_round(
    n: int, m: int, dropout: float, *, rand: RandFn, seed: int, rule: ParamRule = "new"
) -> RoundRun:
    """Run one whole round with :func:`drop_count` parties dropping after sharing.

    ``rand`` feeds every key and seed (``secrets.token_bytes`` for real figures, a
    seeded generator in tests); ``seed`` picks the inputs and who drops, so two rounds
    with the same ``seed`` and different ``rule`` sum the same vectors and lose the same
    parties.
    """
    config = make_config(n, m, rule=rule)
    rng = np.random.default_rng(seed)
    identities = {p: SigningKey.generate(rand) for p in config.parties}
    verify_keys = {p: k.verify_key for p, k in identities.items()}
    parties = {p: SecAggParty(config, p, identities[p], rand) for p in config.parties}
    server = SecAggServer(config)
    party_sw, server_sw = Stopwatch(), Stopwatch()
    trace = RoundTrace(config)
    commits: dict[str, Commit] = {}
    adverts: dict[str, Advert] = {}
    sent: dict[str, list[SealedShare]] = {}
    ys: dict[str, U64Vector] = {}

    for p, party in parties.items():
        with party_sw.phase("commit"):
            commit = party.commit()
        with server_sw.phase("add_commit"):
            server.add_commit(commit, verify_keys[p])
        commits[p] = commit
        trace.commits.append((commit, verify_keys[p]))
    with server_sw.phase("close_commit"):
        server.close_commit()
    listed = server.commits()

    for p in server.committed:
        with party_sw.phase("advertise"):
            advert = parties[p].advertise(listed, verify_keys)
        with server_sw.phase("add_advert"):
            server.add_advert(advert, verify_keys[p])
        adverts[p] = advert
        trace.adverts.append((advert, verify_keys[p]))
    with server_sw.phase("close_advertise"):
        server.close_advertise()
    roster = server.roster()

    for p in server.u1:
        with party_sw.phase("share"):
            shares = parties[p].share(roster)
        with server_sw.phase("add_shares"):
            server.add_shares(p, shares)
        sent[p] = shares
        trace.shares[p] = shares
    with server_sw.phase("close_share"):
        server.close_share()

    drops = drop_count(config, dropout)
    leaving = {config.parties[i] for i in rng.choice(n, size=drops, replace=False)}
    expected = np.zeros(m, dtype=np.uint64)
    u2 = server.u2
    for p in u2:
        if p in leaving:
            continue
        x = _random_vector(rng, m)
        with server_sw.phase("route_envelopes"):
            inbox = server.shares_for(p)
        with party_sw.phase("mask"):
            y = parties[p].mask(inbox, u2, x)
        with server_sw.phase("add_masked"):
            server.add_masked(p, y)
        expected += x
        ys[p] = y
    with server_sw.phase("close_mask"):
        survivors, dropped = server.close_mask()
    trace.masked = dict(ys)

    signatures: dict[str, bytes] = {}
    for p in survivors:
        with party_sw.phase("consistency"):
            sig = parties[p].sign_consistency(survivors, dropped)
        with server_sw.phase("add_consistency"):
            server.add_consistency(p, sig, verify_keys[p])
        signatures[p] = sig
        trace.signatures[p] = (sig, verify_keys[p])
    with server_sw.phase("close_consistency"):
        server.close_consistency()
    published = server.consistency_signatures()

    sent_bytes: dict[str, int] = {}
    for p in server.consistency_signers:
        with party_sw.phase("unmask"):
            reveals = parties[p].unmask(survivors, dropped, published)
        with server_sw.phase("add_reveals"):
            server.add_reveals(p, reveals)
        trace.reveals[p] = reveals
        sent_bytes[p] = party_sent_bytes(
            commits[p], adverts[p], sent[p], ys[p], signatures[p], reveals
        )
    with server_sw.phase("finish"):
        result = server.finish()

    return RoundRun(
        config=config,
        party=party_sw,
        server=server_sw,
        result=result,
        expected=expected,
        survivors=survivors,
        dropped=dropped,
        neighbours=server.neighbours(),
        sent_bytes=sent_bytes,
        trace=trace,
    )


def server_peak_mib(trace: RoundTrace) -> tuple[float, float, U64Vector]:
    """Replay a round's inputs into a fresh server; return the traced peak MiB of the
    mask phase, of the mask and unmask phases together, and the replayed result.

    Commits, adverts and shares are replayed before tracing starts, and the masked
    vectors and reveals were built beforehand, so only what the server itself allocates
    counts.
    """
    server = SecAggServer(trace.config)
    for commit, vk in trace.commits:
        server.add_commit(commit, vk)
    server.close_commit()
    for advert, vk in trace.adverts:
        server.add_advert(advert, vk)
    server.close_advertise()
    for p, shares in trace.shares.items():
        server.add_shares(p, shares)
    server.close_share()
    out: list[U64Vector] = []

    def mask_phase() -> None:
        for p, y in trace.masked.items():
            server.add_masked(p, y)
        server.close_mask()

    def unmask_phase() -> None:
        for p, (sig, vk) in trace.signatures.items():
            server.add_consistency(p, sig, vk)
        server.close_consistency()
        for p, reveals in trace.reveals.items():
            server.add_reveals(p, reveals)
        out.append(server.finish())

    mask_peak, unmask_peak = traced_peaks_mib([mask_phase, unmask_phase])
    return mask_peak, max(mask_peak, unmask_peak), out[0]


# --------------------------------------------------------------------------- baselines


def prg_floor_seconds(m: int, pair_masks: int, *, rand: RandFn, repeat: int) -> float:
    """Best-of seconds for one party to generate its masks: one self mask and
    ``pair_masks`` pair masks of length ``m`` from :mod:`blindsum.crypto.prg` (no key
    agreement, no arithmetic: the PRG output alone)."""
    self_seed = rand(32)
    pair_seeds = [rand(32) for _ in range(pair_masks)]

    def work() -> None:
        prg.self_mask(self_seed, round_id=ROUND_ID, party="party-0000", length=m)
        for i, seed in enumerate(pair_seeds):
            prg.pair_mask(seed, round_id=ROUND_ID, a="party-0000", b=f"party-{i + 1:04d}", length=m)

    seconds, _ = best_of(work, repeat)
    return seconds


@dataclass(frozen=True)
class SumFloor:
    """The sum-floor figures (seconds): floor = sum + regenerated pair masks."""

    floor_s: float
    sum_s: float
    regen_s: float
    self_mask_regen_s: float
    regenerated_pairs: int


def sum_floor(
    vectors: Sequence[U64Vector],
    dropped_pairs: Mapping[str, Sequence[tuple[str, bytes]]],
    m: int,
    *,
    survivors: int,
    rand: RandFn,
    repeat: int,
) -> SumFloor:
    """Best-of seconds of the least a server must do to unmask: sum ``vectors`` into a
    running total, then for each dropped party agree with each surviving neighbour
    (``dropped_pairs[v]`` = [(neighbour, its s public key)]) and subtract the pair mask.

    A fresh key stands in for each dropped party's reconstructed s key: the agreement
    costs the same. ``self_mask_regen_s`` times ``survivors`` self masks (not in the floor).
    """
    keys = {v: kex.KeyPair.generate(rand) for v in dropped_pairs}
    pairs = sum(len(v) for v in dropped_pairs.values())

    def add_all() -> U64Vector:
        total = np.zeros(m, dtype=np.uint64)
        for vec in vectors:
            total += vec
        return total

    def regen(total: U64Vector) -> None:
        for v, neighbours in dropped_pairs.items():
            private = keys[v].private
            for w, public in neighbours:
                shared = kex.agree(private, public)
                total -= prg.pair_mask(shared, round_id=ROUND_ID, a=v, b=w, length=m)

    def work() -> tuple[float, float]:
        start = time.perf_counter()
        total = add_all()
        middle = time.perf_counter()
        regen(total)
        return middle - start, time.perf_counter() - middle

    floor_s, (sum_s, regen_s) = best_of(work, repeat)
    seeds = [rand(32) for _ in range(survivors)]

    def self_masks() -> None:
        for i, seed in enumerate(seeds):
            prg.self_mask(seed, round_id=ROUND_ID, party=f"party-{i:04d}", length=m)

    self_s, _ = best_of(self_masks, repeat)
    return SumFloor(floor_s, sum_s, regen_s, self_s, pairs)


def shamir_share_seconds(k: int, t: int, repeat: int) -> float:
    """Best-of seconds to Shamir-share ONE 32-byte secret among ``k`` holders with
    threshold ``t`` (:func:`blindsum.crypto.shamir.split`). A secagg party shares two
    secrets per round (its s key and its self-mask seed)."""
    secret = secrets.token_bytes(32)
    xs = list(range(1, k + 1))
    seconds, _ = best_of(
        lambda: shamir.split(secret, threshold=t, xs=xs, rand=secrets.token_bytes), repeat
    )
    return seconds


# --------------------------------------------------------------------------- results


def run_config(
    n: int, m: int, dropout: float, *, rand: RandFn, seed: int, repeat: int
) -> list[Result]:
    """One grid point: the blindsum round, then prg-floor and sum-floor on its data."""
    run = simulate_round(n, m, dropout, rand=rand, seed=seed)
    mask_peak, peak, replayed = server_peak_mib(run.trace)
    pair_masks = run.mean_pair_masks()
    prg_s = prg_floor_seconds(m, pair_masks, rand=rand, repeat=repeat)
    survivors = frozenset(run.survivors)
    s_public = {a.party: a.s_public for a, _ in run.trace.adverts}
    dropped_pairs = {
        v: [(w, s_public[w]) for w in run.config.ordered(run.neighbours[v] & survivors)]
        for v in run.dropped
    }
    floor = sum_floor(
        list(run.trace.masked.values()),
        dropped_pairs,
        m,
        survivors=len(run.survivors),
        rand=rand,
        repeat=repeat,
    )
    params: dict[str, Any] = {
        "n": n,
        "m": m,
        "dropout": dropout,
        "mode": "secagg",
        "degree": graph.effective_degree(run.config.graph_degree, n),
        "t": run.config.threshold,
        "survivors": len(run.survivors),
        "dropped": len(run.dropped),
    }
    party_total = run.party_total()
    unmask_sum = run.server.total(UNMASK_SUM_PHASES)
    plaintext = 8 * m
    mean_sent = sum(run.sent_bytes.values()) / len(run.sent_bytes)
    metrics: dict[str, float] = {
        "party_total_s": party_total,
        "server_unmask_sum_s": unmask_sum,
        "server_peak_mib": peak,
        "party_sent_bytes": mean_sent,
        "server_peak_mask_mib": mask_peak,
        "server_total_s": run.server.total(),
        "plaintext_bytes": float(plaintext),
        "sum_ok": float(run.sum_ok and bool(np.array_equal(replayed, run.expected))),
    }
    metrics.update({f"party_{p}_s": run.party.mean(p) for p in PARTY_PHASES})
    metrics.update({f"server_{p}_s": run.server.seconds.get(p, 0.0) for p in SERVER_PHASES})
    metrics["party_vs_prg_floor_ratio"] = ratio(party_total, prg_s)
    metrics["server_vs_sum_floor_ratio"] = ratio(unmask_sum, floor.floor_s)
    metrics["bytes_vs_plaintext_ratio"] = ratio(mean_sent, plaintext)
    return [
        Result(SCENARIO, "blindsum", params, metrics),
        Result(
            SCENARIO,
            "prg-floor",
            dict(params),
            {"prg_floor_s": prg_s, "pair_masks": float(pair_masks)},
        ),
        Result(
            SCENARIO,
            "sum-floor",
            dict(params),
            {
                "sum_floor_s": floor.floor_s,
                "sum_s": floor.sum_s,
                "regen_pairs_s": floor.regen_s,
                "self_mask_regen_s": floor.self_mask_regen_s,
                "regenerated_pairs": float(floor.regenerated_pairs),
            },
        ),
    ]


def shamir_result(repeat: int) -> Result:
    """Shamir share creation at the Flower comparison's k and t."""
    seconds = shamir_share_seconds(SHAMIR_K, SHAMIR_T, repeat)
    params = {"op": "shamir-share", "k": SHAMIR_K, "t": SHAMIR_T, "mode": "secagg"}
    return Result(SCENARIO, "blindsum", params, {"shamir_share_s": seconds})


# --------------------------------------------------------------------------- old vs new


def _params_metrics(run: RoundRun) -> dict[str, float]:
    """The comparison's figures of one round: party and server compute, bytes, checks."""
    return {
        "party_total_s": run.party_total(),
        "server_finish_s": run.server.seconds.get("finish", 0.0),
        "party_sent_bytes": sum(run.sent_bytes.values()) / len(run.sent_bytes),
        "server_total_s": run.server.total(),
        "party_commit_advertise_s": run.party.mean("commit") + run.party.mean("advertise"),
        "party_share_s": run.party.mean("share"),
        "server_unmask_sum_s": run.server.total(UNMASK_SUM_PHASES),
        "sum_ok": float(run.sum_ok),
    }


def compare_params(
    n: int,
    *,
    m: int = PARAMS_M,
    dropout: float = PARAMS_DROPOUT,
    rand: RandFn = secrets.token_bytes,
    seed: int = 2010,
) -> list[Result]:
    """The same round (inputs, dropouts) with the old and with the new parameters.

    The ``new-params`` row carries the new/old ratios of the mean party compute, the
    server's finish (mask removal, with every secret checked) and the bytes a party
    sends, all from this one run.
    """
    rows: list[Result] = []
    metrics: dict[ParamRule, dict[str, float]] = {}
    rules: tuple[tuple[ParamRule, str], ...] = (("old", OLD_PARAMS), ("new", NEW_PARAMS))
    for rule, system in rules:
        run = simulate_round(n, m, dropout, rand=rand, seed=seed, rule=rule)
        metrics[rule] = _params_metrics(run)
        point: dict[str, Any] = {
            "n": n,
            "m": m,
            "dropout": dropout,
            "mode": "secagg",
            "k": graph.effective_degree(run.config.graph_degree, n),
            "t": run.config.threshold,
            "op": "params",
            "threat": "none" if rule == "old" else "default",
            "dropped": len(run.dropped),
        }
        rows.append(Result(SCENARIO, system, point, metrics[rule]))
    old, new = metrics["old"], metrics["new"]
    rows[-1].metrics.update(
        {
            "party_total_vs_old_ratio": ratio(new["party_total_s"], old["party_total_s"]),
            "server_finish_vs_old_ratio": ratio(new["server_finish_s"], old["server_finish_s"]),
            "bytes_vs_old_ratio": ratio(new["party_sent_bytes"], old["party_sent_bytes"]),
        }
    )
    return rows


def run_params(
    ns: Sequence[int],
    *,
    budget_s: float = math.inf,
    m: int = PARAMS_M,
    rand: RandFn = secrets.token_bytes,
    progress: Callable[[str], None] | None = None,
) -> list[Result]:
    """:func:`compare_params` at each n in order; past ``budget_s`` the rest are skipped."""
    results: list[Result] = []
    start = time.perf_counter()
    for n in ns:
        spent = time.perf_counter() - start
        if spent > budget_s:
            reason = f"quick-mode time cap: {spent:.0f}s spent of {budget_s:.0f}s"
            point = {"n": n, "m": m, "dropout": PARAMS_DROPOUT, "mode": "secagg", "op": "params"}
            results += [skipped(SCENARIO, s, point, reason) for s in (OLD_PARAMS, NEW_PARAMS)]
            continue
        if progress is not None:
            progress(f"{SCENARIO}: old vs new parameters, n={n} m={m}")
        results += compare_params(n, m=m, rand=rand)
    return results


def run_grid(
    grid: Sequence[tuple[int, int, float]],
    *,
    budget_s: float = math.inf,
    rand: RandFn = secrets.token_bytes,
    repeat: int = 3,
    progress: Callable[[str], None] | None = None,
) -> list[Result]:
    """Run the grid points in order; once ``budget_s`` is spent, later points are
    recorded as skipped rather than run."""
    results: list[Result] = []
    start = time.perf_counter()
    for i, (n, m, dropout) in enumerate(grid):
        params = {"n": n, "m": m, "dropout": dropout, "mode": "secagg"}
        spent = time.perf_counter() - start
        if spent > budget_s:
            reason = f"quick-mode time cap: {spent:.0f}s spent of {budget_s:.0f}s"
            results.append(skipped(SCENARIO, "blindsum", params, reason))
            continue
        if progress is not None:
            progress(f"{SCENARIO}: n={n} m={m} dropout={dropout}")
        results.extend(run_config(n, m, dropout, rand=rand, seed=1000 + i, repeat=repeat))
    return results


def _progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def run(quick: bool) -> list[Result]:
    """The secagg-core scenario: the quick or the full grid, Shamir share creation, then
    the old against the new parameters."""
    grid = QUICK_GRID if quick else FULL_GRID
    budget = QUICK_BUDGET_S if quick else math.inf
    results = run_grid(grid, budget_s=budget, progress=_progress)
    results.append(shamir_result(repeat=5))
    results += run_params(
        PARAMS_QUICK_NS if quick else PARAMS_FULL_NS,
        budget_s=PARAMS_QUICK_BUDGET_S if quick else math.inf,
        progress=_progress,
    )
    return results


def main(argv: Sequence[str]) -> int:
    """``python -m bench secagg-core [--parties N] [--length M] [--dropout F] [--full]
    [--compare-params]``.

    ``--compare-params`` runs only the old-against-new comparison: at --parties (and
    --length) if given, else at the quick or full n.
    """
    args = parse_scenario_args(argv, "python -m bench secagg-core")
    if args.mode not in (None, "secagg"):
        print("secagg-core runs secagg only", file=sys.stderr)
        return 2
    compare = "--compare-params" in args.extra
    unknown = [a for a in args.extra if a != "--compare-params"]
    if unknown:
        print(f"unknown arguments: {' '.join(unknown)}", file=sys.stderr)
        return 2
    if args.parties is not None and args.parties < 2:
        print("secagg needs at least 2 parties", file=sys.stderr)
        return 2
    if compare:
        ns = (args.parties,) if args.parties else (PARAMS_FULL_NS if args.full else PARAMS_QUICK_NS)
        results = run_params(ns, m=args.length or PARAMS_M, progress=_progress)
    elif args.parties is None and args.length is None and args.dropout is None:
        results = run(quick=not args.full)
    else:
        point = (args.parties or 100, args.length or 16384, args.dropout or 0.0)
        results = run_grid([point], progress=_progress)
    print(format_table([result_row(r, KEY_METRICS) for r in results]))
    return 0
