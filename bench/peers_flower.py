"""flower-secaggplus: blindsum's secagg against Flower's SecAgg+ (the ``flwr`` package).

Two comparisons, both measured in this run:

1. **Components** at the same k (share holders) and t (threshold), by default the
   issue's k = 100, t = 66 with n = k clients on a complete graph, each calling the two
   libraries' own primitives:

   - ``share-secret``: Shamir-share one 32-byte secret. Flower's ``create_shares`` (GF(2^128)
     per 16-byte chunk, pycryptodome's pure-Python field) against blindsum's
     :func:`bench.secagg_core.shamir_share_seconds` (one polynomial over GF(2^521 - 1));
   - ``share-client``: what one client shares per round. Flower shares its 32-byte mask
     seed and its PEM-encoded P-384 private key (about 300 bytes, so 20 chunks); blindsum
     shares its 32-byte seed and its 32-byte X25519 key;
   - ``reconstruct-survivor``: recover a survivor's self-mask seed from t shares;
   - ``reconstruct-dropped``: recover a dropped client's mask key from t shares and load
     it as a key (blindsum: cold Lagrange weights; ``warm_`` is with the cache hit that
     a complete graph gives every secret after the first);
   - ``mask``: one client's masking of an m-vector: the self mask plus n - 1 pair masks,
     each after a key agreement, mirroring Flower's ``_collect_masked_vectors`` (ECDH on
     P-384 from PEM, HKDF, ``pseudo_rand_gen``: numpy's MT19937 seeded by a 32-bit fold)
     and blindsum's ``SecAggParty._masked_vector`` (X25519, HKDF, AES-256-CTR);
   - ``mask-prg``: the same with the pairwise keys agreed beforehand (the PRG floor).

2. **Full round** in Flower's own simulation runtime (``flwr.simulation``, Ray backend)
   in a child process: ServerApp with ``SecAggPlusWorkflow``, ClientApp with
   ``secaggplus_mod``, a fraction of the clients failing in ``fit`` (so they drop after
   sharing, as in secagg-core). The same simulation first runs a warm-up and a plain
   FedAvg round, so ``plain_round_s`` is the runtime's own floor. Ray is bound to
   127.0.0.1 and Flower's and Ray's telemetry are switched off. Beside it, blindsum's
   in-process round (:func:`bench.secagg_core.simulate_round`) at the same n, m and
   dropout: its ``round_s`` is every party's and the server's compute from the commit
   phase to the finish, run one after the other in one process.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    Result,
    best_of,
    format_table,
    optional_import,
    package_version,
    parse_scenario_args,
    ratio,
    result_row,
    skipped,
)
from bench.secagg_core import (
    SHAMIR_K,
    SHAMIR_T,
    drop_count,
    make_config,
    shamir_share_seconds,
    simulate_round,
)
from blindsum.crypto import kex, prg, shamir
from blindsum.protocol import graph
from blindsum.types import U64Vector

SCENARIO = "flower-secaggplus"
FLOWER = "flower"
BLINDSUM = "blindsum"

#: Headline metrics of this scenario's table rows.
KEY_METRICS = (
    "share_secret_s",
    "share_client_s",
    "reconstruct_survivor_s",
    "reconstruct_dropped_s",
    "mask_s",
    "mask_prg_s",
    "round_s",
    "plain_round_s",
)

#: Vector lengths of the masking components (quick, full).
QUICK_MASK_LENGTHS = (16384,)
FULL_MASK_LENGTHS = (4096, 16384)
#: (n, m, dropout) of the full-round comparison (quick, full).
QUICK_ROUNDS: tuple[tuple[int, int, float], ...] = ((10, 4096, 0.1),)
FULL_ROUNDS: tuple[tuple[int, int, float], ...] = (
    (10, 4096, 0.0),
    (10, 4096, 0.1),
    (10, 16384, 0.1),
    (50, 4096, 0.1),
)
#: A simulated round is cut off (its process group killed) after this many seconds.
ROUND_TIMEOUT_S = 600.0

#: Flower's default mask modulus (SecAggPlusWorkflow ``modulus_range``).
FLOWER_MOD_RANGE = 1 << 32
#: Flower's default quantization range: the client's integers lie below it.
FLOWER_QUANT_RANGE = 1 << 22
SECRET_BYTES = 32

#: Switches read by flwr and ray when they are imported or start: no telemetry leaves
#: the machine, and Ray resolves its node address to loopback instead of the host's
#: routable address (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is the switch that does that).
CHILD_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "PYTHONUNBUFFERED": "1",
}
_MARKER = "BENCH-FLOWER-RESULT "
_ROUND_ID = "bench-flower-0001"


# --------------------------------------------------------------------------- Flower


@dataclass(frozen=True)
class Flower:
    """The Flower modules the components call (typed Any: mypy never needs flwr)."""

    shamir: Any  # flwr.common.secure_aggregation.crypto.shamir
    utils: Any  # ...secaggplus_utils (pseudo_rand_gen)
    arith: Any  # ...ndarrays_arithmetic
    sym: Any  # ...crypto.symmetric_encryption (generate_shared_key)
    asym: Any  # flwr.supercore.primitives.asymmetric (P-384 keys, PEM)


def load_flower() -> tuple[Flower | None, str]:
    """Import Flower's SecAgg+ primitives, or return (None, why not).

    Telemetry is switched off first: flwr reads FLWR_TELEMETRY_ENABLED once, on import.
    """
    if importlib.util.find_spec("flwr") is None:
        return None, "flwr is not installed in this environment (make bench installs it)"
    os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
    names = {
        "shamir": "flwr.common.secure_aggregation.crypto.shamir",
        "utils": "flwr.common.secure_aggregation.secaggplus_utils",
        "arith": "flwr.common.secure_aggregation.ndarrays_arithmetic",
        "sym": "flwr.common.secure_aggregation.crypto.symmetric_encryption",
        "asym": "flwr.supercore.primitives.asymmetric",
    }
    modules: dict[str, Any] = {}
    for key, name in names.items():
        module, why = optional_import(name)
        if module is None:
            return None, f"Flower is not usable here: {why}"
        modules[key] = module
    return Flower(**modules), ""


def flower_version() -> str:
    """The installed flwr version (for the Results' params)."""
    return package_version("flwr") or "?"


# --------------------------------------------------------------------------- components


@dataclass(frozen=True)
class ComponentCase:
    """One component comparison: n clients, k share holders, threshold t, length m."""

    n: int
    k: int
    t: int
    m: int


def _flower_key_pair(fl: Flower) -> tuple[bytes, bytes]:
    """(PEM private, PEM public) of a fresh P-384 pair, as Flower's ``_setup`` makes."""
    sk, pk = fl.asym.generate_key_pairs()
    return bytes(fl.asym.private_key_to_bytes(sk)), bytes(fl.asym.public_key_to_bytes(pk))


def _flower_mask(
    fl: Flower,
    seed: bytes,
    own_private: bytes | None,
    me: int,
    peers: Sequence[tuple[int, bytes]],
    params: list[Any],
) -> list[Any]:
    """Flower's client masking (``_collect_masked_vectors``) of the quantized ``params``.

    ``peers`` are (node id, PEM public key), or (node id, agreed key) when
    ``own_private`` is None (the PRG-only variant).
    """
    dims = [a.shape for a in params]
    out = fl.arith.parameters_addition(
        params, fl.utils.pseudo_rand_gen(seed, FLOWER_MOD_RANGE, dims)
    )
    for nid, peer in peers:
        if own_private is None:
            key = peer
        else:
            key = fl.sym.generate_shared_key(
                fl.asym.bytes_to_private_key(own_private), fl.asym.bytes_to_public_key(peer)
            )
        pair = fl.utils.pseudo_rand_gen(key, FLOWER_MOD_RANGE, dims)
        if me > nid:
            out = fl.arith.parameters_addition(out, pair)
        else:
            out = fl.arith.parameters_subtraction(out, pair)
    result: list[Any] = fl.arith.parameters_mod(out, FLOWER_MOD_RANGE)
    return result


def _blindsum_mask(
    b_seed: bytes,
    own_private: bytes | None,
    me: str,
    peers: Sequence[tuple[str, bytes]],
    x: U64Vector,
) -> U64Vector:
    """blindsum's client masking (``SecAggParty._masked_vector``) of ``x``.

    ``peers`` are (party, X25519 public key), or (party, agreed secret) when
    ``own_private`` is None (the PRG-only variant).
    """
    m = int(x.shape[0])
    y = x.copy()
    y += prg.self_mask(b_seed, round_id=_ROUND_ID, party=me, length=m)
    for v, peer in peers:
        shared = peer if own_private is None else kex.agree(own_private, peer)
        pair = prg.pair_mask(shared, round_id=_ROUND_ID, a=me, b=v, length=m)
        if v > me:
            y += pair
        else:
            y -= pair
    return y


def _params(case: ComponentCase, op: str, *, with_m: bool, version: str) -> dict[str, Any]:
    params: dict[str, Any] = {"op": op, "n": case.n, "k": case.k, "t": case.t, "mode": "secagg"}
    if with_m:
        params["m"] = case.m
    params["flwr"] = version
    return params


def _pair(
    case: ComponentCase,
    op: str,
    metric: str,
    flower_s: float,
    blindsum_s: float,
    *,
    with_m: bool = False,
    version: str = "?",
    flower_extra: dict[str, float] | None = None,
    blindsum_extra: dict[str, float] | None = None,
) -> list[Result]:
    """The Flower row (with the Flower / blindsum ratio) and the blindsum row of one op."""
    params = _params(case, op, with_m=with_m, version=version)
    flower_metrics = {metric: flower_s, **(flower_extra or {})}
    flower_metrics["flower_vs_blindsum_ratio"] = ratio(flower_s, blindsum_s)
    blindsum_metrics = {metric: blindsum_s, **(blindsum_extra or {})}
    return [
        Result(SCENARIO, FLOWER, params, flower_metrics),
        Result(SCENARIO, BLINDSUM, dict(params), blindsum_metrics),
    ]


def _share_components(
    fl: Flower, case: ComponentCase, flower_repeat: int, repeat: int, version: str
) -> list[Result]:
    """share-secret and share-client."""
    seed = secrets.token_bytes(SECRET_BYTES)
    pem, _ = _flower_key_pair(fl)
    secret_s, shares = best_of(lambda: fl.shamir.create_shares(seed, case.t, case.k), flower_repeat)
    pem_s, pem_shares = best_of(lambda: fl.shamir.create_shares(pem, case.t, case.k), flower_repeat)
    ok = float(fl.shamir.combine_shares(shares[: case.t]) == seed)
    ours_s = shamir_share_seconds(case.k, case.t, repeat)
    results = _pair(
        case,
        "share-secret",
        "share_secret_s",
        secret_s,
        ours_s,
        version=version,
        flower_extra={"secret_bytes": float(SECRET_BYTES), "round_trip_ok": ok},
        blindsum_extra={"secret_bytes": float(SECRET_BYTES)},
    )
    # A client shares two secrets: both 32 bytes in blindsum (so twice the figure above),
    # the mask seed and the PEM private key in Flower (timed above, one after the other).
    results += _pair(
        case,
        "share-client",
        "share_client_s",
        secret_s + pem_s,
        2 * ours_s,
        version=version,
        flower_extra={"key_bytes": float(len(pem)), "key_share_bytes": float(len(pem_shares[0]))},
        blindsum_extra={"key_bytes": 32.0, "key_share_bytes": float(shamir.SHARE_BYTES)},
    )
    return results


def _reconstruct_components(
    fl: Flower, case: ComponentCase, flower_repeat: int, repeat: int, version: str
) -> list[Result]:
    """reconstruct-survivor (seed) and reconstruct-dropped (mask key), from t shares."""
    seed = secrets.token_bytes(SECRET_BYTES)
    pem, _ = _flower_key_pair(fl)
    fl_seed_shares = fl.shamir.create_shares(seed, case.t, case.k)[: case.t]
    fl_key_shares = fl.shamir.create_shares(pem, case.t, case.k)[: case.t]
    xs = list(range(1, case.k + 1))
    keys = kex.KeyPair.generate(secrets.token_bytes)
    our_seed_shares = list(
        shamir.split(seed, threshold=case.t, xs=xs, rand=secrets.token_bytes).values()
    )[: case.t]
    our_key_shares = list(
        shamir.split(keys.private, threshold=case.t, xs=xs, rand=secrets.token_bytes).values()
    )[: case.t]

    def ours_seed(cold: bool) -> bytes:
        if cold:
            shamir.lagrange_weights.cache_clear()
        return shamir.reconstruct(our_seed_shares, threshold=case.t, secret_len=SECRET_BYTES)

    def ours_key(cold: bool) -> bytes:
        if cold:
            shamir.lagrange_weights.cache_clear()
        secret = shamir.reconstruct(our_key_shares, threshold=case.t, secret_len=SECRET_BYTES)
        return kex.KeyPair.from_private(secret).public

    def flower_key() -> bytes:
        secret = fl.shamir.combine_shares(fl_key_shares)
        return bytes(fl.asym.private_key_to_bytes(fl.asym.bytes_to_private_key(secret)))

    fl_seed_s, fl_seed = best_of(lambda: fl.shamir.combine_shares(fl_seed_shares), flower_repeat)
    fl_key_s, fl_key = best_of(flower_key, flower_repeat)
    seed_s, got_seed = best_of(lambda: ours_seed(True), repeat)
    warm_seed_s, _ = best_of(lambda: ours_seed(False), repeat)
    key_s, got_key = best_of(lambda: ours_key(True), repeat)
    warm_key_s, _ = best_of(lambda: ours_key(False), repeat)
    results = _pair(
        case,
        "reconstruct-survivor",
        "reconstruct_survivor_s",
        fl_seed_s,
        seed_s,
        version=version,
        flower_extra={"recovered_ok": float(fl_seed == seed)},
        blindsum_extra={
            "warm_reconstruct_survivor_s": warm_seed_s,
            "recovered_ok": float(got_seed == seed),
        },
    )
    results += _pair(
        case,
        "reconstruct-dropped",
        "reconstruct_dropped_s",
        fl_key_s,
        key_s,
        version=version,
        flower_extra={"recovered_ok": float(fl_key == pem)},
        blindsum_extra={
            "warm_reconstruct_dropped_s": warm_key_s,
            "recovered_ok": float(got_key == keys.public),
        },
    )
    return results


def _mask_components(
    fl: Flower, case: ComponentCase, flower_repeat: int, repeat: int, version: str
) -> list[Result]:
    """mask and mask-prg: one client's self mask plus n - 1 pair masks of length m."""
    rng = np.random.default_rng(5)
    peers = case.n - 1
    # Flower: node ids 1..n, we are node 1 + n // 2 (both mask signs occur).
    me_nid = 1 + case.n // 2
    fl_sk, _ = _flower_key_pair(fl)
    fl_peers = [(nid, _flower_key_pair(fl)[1]) for nid in range(1, case.n + 1) if nid != me_nid]
    fl_agreed = [
        (
            nid,
            fl.sym.generate_shared_key(
                fl.asym.bytes_to_private_key(fl_sk), fl.asym.bytes_to_public_key(pk)
            ),
        )
        for nid, pk in fl_peers
    ]
    quantized = rng.integers(0, FLOWER_QUANT_RANGE, size=case.m, dtype=np.int64)
    fl_params = [np.array([1]), quantized]  # factor_combine: [weight factor] + parameters
    fl_seed = secrets.token_bytes(SECRET_BYTES)
    # blindsum: parties p-0000.., we are the one in the middle.
    me = f"p-{case.n // 2:04d}"
    own = kex.KeyPair.generate(secrets.token_bytes)
    our_peers = [
        (f"p-{i:04d}", kex.KeyPair.generate(secrets.token_bytes).public)
        for i in range(case.n)
        if f"p-{i:04d}" != me
    ]
    our_agreed = [(v, kex.agree(own.private, pub)) for v, pub in our_peers]
    x: U64Vector = rng.integers(0, 1 << 63, size=case.m, dtype=np.uint64)
    b_seed = secrets.token_bytes(SECRET_BYTES)

    fl_mask_s, _ = best_of(
        lambda: _flower_mask(fl, fl_seed, fl_sk, me_nid, fl_peers, fl_params), flower_repeat
    )
    fl_prg_s, _ = best_of(
        lambda: _flower_mask(fl, fl_seed, None, me_nid, fl_agreed, fl_params), flower_repeat
    )
    mask_s, _ = best_of(lambda: _blindsum_mask(b_seed, own.private, me, our_peers, x), repeat)
    prg_s, _ = best_of(lambda: _blindsum_mask(b_seed, None, me, our_agreed, x), repeat)
    counts = {"pair_masks": float(peers)}
    results = _pair(
        case,
        "mask",
        "mask_s",
        fl_mask_s,
        mask_s,
        with_m=True,
        version=version,
        flower_extra=dict(counts),
        blindsum_extra=dict(counts),
    )
    results += _pair(case, "mask-prg", "mask_prg_s", fl_prg_s, prg_s, with_m=True, version=version)
    return results


def component_results(
    fl: Flower, case: ComponentCase, *, flower_repeat: int, repeat: int, masks: bool = True
) -> list[Result]:
    """Every component comparison at ``case`` (share creation first: the run's target
    check reads the first Flower share figure at k = 100, t = 66)."""
    version = flower_version()
    results = _share_components(fl, case, flower_repeat, repeat, version)
    results += _reconstruct_components(fl, case, flower_repeat, repeat, version)
    if masks:
        results += _mask_components(fl, case, flower_repeat, repeat, version)
    return results


# --------------------------------------------------------------------------- full round


def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def round_shape(n: int, m: int, dropout: float) -> tuple[int, int, int]:
    """(share holders k, threshold t, clients that drop) as blindsum's round would have.

    The same rule as :func:`bench.secagg_core.simulate_round`, so both systems drop the
    same number of clients after sharing.
    """
    config = make_config(n, m)
    k = graph.effective_degree(config.graph_degree, n) + 1
    return k, config.threshold, drop_count(config, dropout)


def simulate_flower_round(
    n: int, m: int, dropout: float, *, timeout_s: float = ROUND_TIMEOUT_S
) -> tuple[dict[str, float] | None, str]:
    """Run one Flower SecAgg+ round in its simulation runtime in a child process.

    Returns (metrics, "") or (None, why it did not run). The child's whole process group
    (Ray's daemons and workers included) is killed when ``timeout_s`` passes.
    """
    if importlib.util.find_spec("flwr") is None:
        return None, "flwr is not installed in this environment (make bench installs it)"
    if importlib.util.find_spec("ray") is None:
        return None, (
            "Flower's simulation runtime needs Ray (the flwr[simulation] extra), "
            "which is not installed here"
        )
    k, t, drops = round_shape(n, m, dropout)
    argv = [
        sys.executable,
        "-m",
        "bench.peers_flower",
        "simulate",
        str(n),
        str(m),
        str(k),
        str(t),
        str(drops),
    ]
    proc = subprocess.Popen(
        argv,
        cwd=_repo_root(),
        env=dict(os.environ, **CHILD_ENV),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        proc.communicate()
        return None, f"the Flower simulation did not finish within {timeout_s:.0f}s"
    finally:
        _kill_group(proc)  # Ray daemons share the group; never leave one behind
    for line in out.decode("utf-8", "replace").splitlines():
        if line.startswith(_MARKER):
            doc = json.loads(line[len(_MARKER) :])
            return {str(key): float(value) for key, value in doc.items()}, ""
    tail = err.decode("utf-8", "replace").strip().splitlines()[-3:]
    return None, f"the Flower simulation failed (exit {proc.returncode}): {' | '.join(tail)}"


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child's process group, if any of it is left."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _client_vector(partition: int, m: int) -> Any:
    """Client ``partition``'s float update: uniform in [-1, 1) from a fixed seed."""
    return np.random.default_rng([11, partition]).uniform(-1.0, 1.0, m).astype(np.float32)


def _simulation_main(argv: Sequence[str]) -> int:
    """Child process: ``python -m bench.peers_flower simulate N M K T DROPS`` (internal).

    Runs three rounds in one Flower simulation (warm-up plain, plain, SecAgg+), clients
    with partition id below DROPS raising in ``fit`` during the SecAgg+ round, and
    prints one marker line with the timings and the aggregate's error.
    """
    n, m, k, t, drops = (int(a) for a in argv)
    os.environ.update(CHILD_ENV)
    client_mod = importlib.import_module("flwr.client")
    clientapp = importlib.import_module("flwr.clientapp")
    mods = importlib.import_module("flwr.client.mod")
    common = importlib.import_module("flwr.common")
    server = importlib.import_module("flwr.server")
    serverapp = importlib.import_module("flwr.serverapp")
    strategies = importlib.import_module("flwr.server.strategy")
    workflows = importlib.import_module("flwr.server.workflow")
    defaults = importlib.import_module("flwr.server.workflow.default_workflows")
    wf_constants = importlib.import_module("flwr.server.workflow.constant")
    sa_constants = importlib.import_module("flwr.common.secure_aggregation.secaggplus_constants")
    compat = importlib.import_module("flwr.compat.common.recorddict_compat")
    simulation = importlib.import_module("flwr.simulation")
    secagg_round = 3

    def fit(self: Any, parameters: Any, config: dict[str, Any]) -> Any:
        partition = int(self.partition)
        if int(config.get("round", 0)) == secagg_round and partition < drops:
            raise RuntimeError("bench: this client drops after sharing")
        return [_client_vector(partition, m)], 1, {}

    bench_client = type("BenchClient", (client_mod.NumPyClient,), {"fit": fit})

    def client_fn(context: Any) -> Any:
        client = bench_client()
        client.partition = int(context.node_config["partition-id"])
        return client.to_client()

    def secagg_only(msg: Any, ctxt: Any, call_next: Any) -> Any:
        """secaggplus_mod for the SecAgg+ round's messages, nothing for plain rounds."""
        if sa_constants.RECORD_KEY_CONFIGS in msg.content.config_records:
            return mods.secaggplus_mod(msg, ctxt, call_next)
        return call_next(msg, ctxt)

    client_app = clientapp.ClientApp(client_fn=client_fn, mods=[secagg_only])
    timings: dict[str, float] = {}
    # max_weight 1: every client reports one example, so Flower quantizes at full scale.
    secagg = workflows.SecAggPlusWorkflow(
        num_shares=k, reconstruction_threshold=t, max_weight=1.0, timeout=None
    )

    def fit_workflow(grid: Any, context: Any) -> None:
        config = context.state.config_records[wf_constants.MAIN_CONFIGS_RECORD]
        current = int(config[wf_constants.Key.CURRENT_ROUND])
        start = time.perf_counter()
        if current == secagg_round:
            secagg(grid, context)
        else:
            defaults.default_fit_workflow(grid, context)
        timings[f"round{current}_s"] = time.perf_counter() - start

    app = serverapp.ServerApp()

    def server_main(grid: Any, context: Any) -> None:
        strategy = strategies.FedAvg(
            fraction_fit=1.0,
            fraction_evaluate=0.0,
            min_fit_clients=n,
            min_evaluate_clients=0,
            min_available_clients=n,
            on_fit_config_fn=lambda rnd: {"round": rnd},
            initial_parameters=common.ndarrays_to_parameters([np.zeros(m, dtype=np.float32)]),
        )
        legacy = server.LegacyContext(
            context=context, config=server.ServerConfig(num_rounds=secagg_round), strategy=strategy
        )
        workflows.DefaultWorkflow(fit_workflow=fit_workflow)(grid, legacy)
        record = legacy.state.array_records[wf_constants.MAIN_PARAMS_RECORD]
        got = common.parameters_to_ndarrays(
            compat.arrayrecord_to_parameters(record, keep_input=True)
        )
        expected = np.mean([_client_vector(p, m) for p in range(drops, n)], axis=0)
        timings["aggregate_max_error"] = float(np.max(np.abs(got[0] - expected)))

    app.main()(server_main)
    start = time.perf_counter()
    simulation.run_simulation(
        server_app=app,
        client_app=client_app,
        num_supernodes=n,
        backend_config={
            "client_resources": {"num_cpus": 1},
            "init_args": {"_node_ip_address": "127.0.0.1", "num_cpus": os.cpu_count() or 1},
        },
    )
    timings["simulation_s"] = time.perf_counter() - start
    if f"round{secagg_round}_s" not in timings or "aggregate_max_error" not in timings:
        print("the SecAgg+ round did not complete", file=sys.stderr)
        return 1
    doc = {
        "round_s": timings[f"round{secagg_round}_s"],
        "plain_round_s": timings["round2_s"],
        "warmup_round_s": timings["round1_s"],
        "simulation_s": timings["simulation_s"],
        "aggregate_max_error": timings["aggregate_max_error"],
    }
    print(_MARKER + json.dumps(doc), flush=True)
    return 0


def round_results(
    n: int, m: int, dropout: float, *, timeout_s: float = ROUND_TIMEOUT_S
) -> list[Result]:
    """The Flower simulated round and blindsum's in-process round at (n, m, dropout)."""
    k, t, drops = round_shape(n, m, dropout)
    params: dict[str, Any] = {
        "op": "round",
        "n": n,
        "m": m,
        "dropout": dropout,
        "mode": "secagg",
        "k": k,
        "t": t,
        "dropped": drops,
    }
    run = simulate_round(n, m, dropout, rand=secrets.token_bytes, seed=2024)
    ours_s = run.party.total() + run.server.total()
    ours = Result(
        SCENARIO,
        BLINDSUM,
        dict(params),
        {
            "round_s": ours_s,
            "party_total_s": run.party_total(),
            "server_total_s": run.server.total(),
            "sum_ok": float(run.sum_ok),
        },
    )
    got, why = simulate_flower_round(n, m, dropout, timeout_s=timeout_s)
    if got is None:
        return [skipped(SCENARIO, FLOWER, params, why), ours]
    metrics = dict(got)
    metrics["secagg_overhead_s"] = got["round_s"] - got["plain_round_s"]
    metrics["flower_vs_blindsum_ratio"] = ratio(got["round_s"], ours_s)
    metrics["overhead_vs_blindsum_ratio"] = ratio(metrics["secagg_overhead_s"], ours_s)
    metrics["sum_ok"] = float(got["aggregate_max_error"] < 1e-3)
    return [Result(SCENARIO, FLOWER, {**params, "flwr": flower_version()}, metrics), ours]


# --------------------------------------------------------------------------- entry points


def _skipped_components(case: ComponentCase, why: str) -> list[Result]:
    ops = (
        "share-secret",
        "share-client",
        "reconstruct-survivor",
        "reconstruct-dropped",
        "mask",
        "mask-prg",
    )
    return [
        skipped(SCENARIO, FLOWER, _params(case, op, with_m=op.startswith("mask"), version="-"), why)
        for op in ops
    ]


def run_cases(
    cases: Sequence[ComponentCase],
    rounds: Sequence[tuple[int, int, float]],
    *,
    flower_repeat: int,
    repeat: int,
    progress: Callable[[str], None] | None = None,
) -> list[Result]:
    """Components at every case (share and reconstruct ops once per (k, t)), then rounds."""
    fl, why = load_flower()
    results: list[Result] = []
    seen: set[tuple[int, int]] = set()
    for case in cases:
        if fl is None:
            results += _skipped_components(case, why)
            continue
        if progress is not None:
            progress(f"{SCENARIO}: components n={case.n} k={case.k} t={case.t} m={case.m}")
        if (case.k, case.t) in seen:
            results += _mask_components(fl, case, flower_repeat, repeat, flower_version())
        else:
            seen.add((case.k, case.t))
            results += component_results(fl, case, flower_repeat=flower_repeat, repeat=repeat)
    for n, m, dropout in rounds:
        if progress is not None:
            progress(f"{SCENARIO}: full round n={n} m={m} dropout={dropout}")
        results += round_results(n, m, dropout)
    return results


def _progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def run(quick: bool) -> list[Result]:
    """Components at k = 100, t = 66 (n = 100), then the simulated full round(s)."""
    lengths = QUICK_MASK_LENGTHS if quick else FULL_MASK_LENGTHS
    cases = [ComponentCase(SHAMIR_K, SHAMIR_K, SHAMIR_T, m) for m in lengths]
    return run_cases(
        cases,
        QUICK_ROUNDS if quick else FULL_ROUNDS,
        flower_repeat=1 if quick else 3,
        repeat=5 if quick else 10,
        progress=_progress,
    )


def main(argv: Sequence[str]) -> int:
    """``python -m bench flower [--parties N] [--length M] [--dropout F] [--full]``.

    With any of --parties/--length/--dropout: the components at k = n (complete graph,
    the threshold blindsum's aggregator would choose for a complete graph of n) and the
    full round at (n, m, dropout).
    """
    args = parse_scenario_args(argv, "python -m bench flower")
    if args.mode not in (None, "secagg"):
        print("Flower SecAgg+ compares with secagg only", file=sys.stderr)
        return 2
    if args.parties is None and args.length is None and args.dropout is None:
        results = run(quick=not args.full)
    else:
        n = args.parties or SHAMIR_K
        if n < 3:
            print("SecAgg+ needs at least 3 clients", file=sys.stderr)
            return 2
        m = args.length or 16384
        dropout = args.dropout or 0.0
        t = SHAMIR_T if n == SHAMIR_K else make_config(n, m, sparse_above=n).threshold
        results = run_cases(
            [ComponentCase(n, n, t, m)],
            [(n, m, dropout)],
            flower_repeat=1,
            repeat=5,
            progress=_progress,
        )
    print(format_table([result_row(r, KEY_METRICS) for r in results]))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "simulate":
        sys.exit(_simulation_main(sys.argv[2:]))
    print("usage: python -m bench.peers_flower simulate N M K T DROPS (internal)", file=sys.stderr)
    sys.exit(2)
