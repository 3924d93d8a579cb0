"""The benchmark harness runs at toy sizes and reports sane figures (bench/ is not part
of `make test` otherwise; this keeps it from rotting). Needs no peer: no matplotlib,
flwr, mpyc or psutil."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np

from bench import he_core, secagg_core
from bench.__main__ import evaluate_targets
from bench.common import Result, Stopwatch, best_of, ratio, result_row, traced_peaks_mib
from tests.drbg import drbg


def by_system(results: list[Result]) -> dict[str, Result]:
    return {r.system: r for r in results}


def assert_finite_positive(metrics: dict[str, float], *keys: str) -> None:
    for key in keys:
        assert math.isfinite(metrics[key]) and metrics[key] > 0, key


def test_secagg_core_toy_round_is_correct_and_reports_ratios() -> None:
    results = secagg_core.run_config(4, 64, 0.25, rand=drbg(b"bench"), seed=7, repeat=1)
    rows = by_system(results)
    assert set(rows) == {"blindsum", "prg-floor", "sum-floor"}
    ours = rows["blindsum"]
    assert not ours.skipped
    assert ours.params["n"] == 4 and ours.params["t"] == 3
    assert (ours.params["survivors"], ours.params["dropped"]) == (3, 1)
    assert ours.metrics["sum_ok"] == 1.0
    assert_finite_positive(
        ours.metrics,
        "party_total_s",
        "server_unmask_sum_s",
        "server_peak_mib",
        "party_vs_prg_floor_ratio",
        "server_vs_sum_floor_ratio",
        "bytes_vs_plaintext_ratio",
    )
    for phase in secagg_core.PARTY_PHASES:
        assert ours.metrics[f"party_{phase}_s"] > 0
    assert ours.metrics["plaintext_bytes"] == 64 * 8
    # The masked vector alone is the plaintext's size; adverts, shares and reveals add more.
    assert ours.metrics["party_sent_bytes"] > 64 * 8
    assert rows["prg-floor"].metrics["pair_masks"] == 3  # complete graph of 4
    assert rows["sum-floor"].metrics["regenerated_pairs"] == 3  # the dropped party's pairs
    json.dumps([r.to_json() for r in results])


def test_simulated_round_sum_matches_inputs_with_seeded_randomness() -> None:
    first = secagg_core.simulate_round(5, 16, 0.2, rand=drbg(b"a"), seed=3)
    second = secagg_core.simulate_round(5, 16, 0.2, rand=drbg(b"a"), seed=3)
    assert first.sum_ok
    assert np.array_equal(first.result, second.result)
    assert first.dropped == second.dropped and len(first.dropped) == 1
    peak_mask, peak_all, replayed = secagg_core.server_peak_mib(first.trace)
    assert 0 < peak_mask <= peak_all
    assert np.array_equal(replayed, first.expected)


def test_shamir_share_seconds_is_positive() -> None:
    assert 0 < secagg_core.shamir_share_seconds(5, 3, repeat=2) < 10


def test_he_core_toy_round_is_correct_and_reports_ratios() -> None:
    results = he_core.run_config(4, 64, seed=5, distinct=2)
    rows = by_system(results)
    assert set(rows) == {"blindsum", "raw-tenseal"}
    ours, raw = rows["blindsum"], rows["raw-tenseal"]
    assert ours.metrics["sum_ok"] == 1.0 and raw.metrics["sum_ok"] == 1.0
    assert ours.params["distinct_inputs"] == 2 and ours.metrics["chunks"] == 1
    assert_finite_positive(
        ours.metrics,
        "party_total_s",
        "server_add_s",
        "custodian_decrypt_s",
        "party_vs_raw_ratio",
        "sum_vs_raw_ratio",
        "decrypt_vs_raw_ratio",
        "round_vs_raw_ratio",
        "bytes_vs_plaintext_ratio",
    )
    # One BFV ciphertext of 8192 slots is far bigger than 64 plaintext words.
    assert ours.metrics["party_sent_bytes"] > 100 * 64 * 8


def test_he_inputs_expected_sum_cycles_distinct_vectors() -> None:
    inputs = he_core.make_inputs(5, 8, seed=1, distinct=2)
    a, b = (v.astype(np.int64) for v in inputs.vectors)
    assert inputs.expected == [int(v) for v in 3 * a + 2 * b]


def test_harness_helpers() -> None:
    calls = itertools.count(1)
    seconds, value = best_of(lambda: next(calls), repeat=3)
    assert value == 3 and seconds >= 0
    sw = Stopwatch()
    for _ in range(2):
        with sw.phase("x"):
            pass
    assert sw.counts["x"] == 2 and sw.mean("x") == sw.seconds["x"] / 2
    assert math.isnan(ratio(1.0, 0.0)) and ratio(3.0, 2.0) == 1.5
    peaks = traced_peaks_mib([lambda: bytearray(1 << 20), lambda: None])
    assert peaks[0] >= 1.0 and peaks[1] < peaks[0]
    row = result_row(Result("s", "x", {"n": 3}, {"a_s": 0.5, "b_ratio": 2.0}))
    assert row[2] == "n=3" and "a_s=500.0ms" in row[3] and "b=2.00x" in row[4]


def test_targets_are_judged_or_marked_not_run() -> None:
    params = {"n": 100, "m": 16384, "dropout": 0.1, "mode": "secagg"}
    small = {"n": 10, "m": 16384, "dropout": 0.1, "mode": "secagg"}
    results = [
        Result(
            "secagg-core",
            "blindsum",
            params,
            {
                "party_vs_prg_floor_ratio": 2.0,
                "server_vs_sum_floor_ratio": 4.0,
                "bytes_vs_plaintext_ratio": 1.1,
                "server_peak_mib": 1.2,
            },
        ),
        Result("secagg-core", "blindsum", small, {"server_peak_mib": 1.0}),
        Result(
            "flower-secaggplus",
            "flower",
            {"op": "share-secret", "n": 100, "k": 100, "t": 66},
            {"share_secret_s": 0.6, "flower_vs_blindsum_ratio": 120.0},
        ),
    ]
    targets = {t.name: t for t in evaluate_targets(results)}
    assert targets["secagg party cost (party total / PRG floor)"].status == "MET"
    server = targets["secagg server cost (unmask-and-sum / sum floor)"]
    assert (server.status, server.proxy) == ("MISSED", True)  # measured at n=100, not 1000
    memory = targets["secagg server peak memory, larger n / smaller n"]
    assert memory.status == "MET" and math.isclose(memory.value, 1.2)
    assert targets["secagg bytes per party / plaintext"].status == "MET"
    assert targets["he bytes per party / plaintext"].status == "NOT RUN"
    assert targets["Shamir share creation speed-up over Flower"].status == "MET"
    assert targets["service secagg round / plaintext round"].status == "NOT RUN"
