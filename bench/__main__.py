"""``python -m bench``: run the benchmarks, print one table, check the issue's targets.

Usage::

    python -m bench                 # quick mode (default): every scenario, small grids
    python -m bench --full          # the whole grid (n = 1000 takes a while)
    python -m bench --only secagg-core,he-core
    python -m bench secagg-core --parties 1000 --length 16384 --dropout 0.1
    python -m bench scale --sizes 100,1000      # needs PostgreSQL on 127.0.0.1:5432
    python -m bench scale-memory --rounds 200

Writes ``bench/results/latest.json`` (machine info, mode, every Result, the targets) and
the plots ``server_time_vs_n.png`` and ``party_time_vs_m.png`` beside it. A scenario
whose module is missing, whose peer cannot be imported, or that fails, becomes a
skipped row with the reason: one broken peer never hides the other figures.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from bench import plots  # matplotlib itself is imported lazily, inside write_plots
from bench.common import Result, format_params, format_table, machine_info, result_row, skipped

#: Scenario name on the command line -> (module, the scenario name its Results carry).
SCENARIOS: dict[str, tuple[str, str]] = {
    "secagg-core": ("bench.secagg_core", "secagg-core"),
    "he-core": ("bench.he_core", "he-core"),
    "service": ("bench.service", "service"),
    "scale": ("bench.scale", "scale"),
    "scale-memory": ("bench.scale_memory", "scale-memory"),
    "flower": ("bench.peers_flower", "flower-secaggplus"),
    "mpyc": ("bench.peers_mpyc", "mpyc-sum"),
    "reconnect": ("bench.reconnect", "reconnect"),
}

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_scenario(name: str) -> tuple[ModuleType | None, str]:
    """Import a scenario module: ``(module, "")`` or ``(None, why it is unavailable)``."""
    module_name = SCENARIOS[name][0]
    try:
        return importlib.import_module(module_name), ""
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return None, f"{module_name.replace('.', '/')}.py is not present"
        return None, f"{module_name} cannot import {exc.name!r}"
    except Exception as exc:
        return None, f"{module_name} failed to import: {type(exc).__name__}: {exc}"


def run_scenario(name: str, quick: bool) -> tuple[list[Result], float]:
    """Run one scenario's ``run(quick)``; failures become one skipped Result."""
    scenario = SCENARIOS[name][1]
    start = time.perf_counter()
    module, reason = load_scenario(name)
    if module is None:
        return [skipped(scenario, "-", {}, reason)], 0.0
    try:
        results = list(module.run(quick))
    except Exception as exc:
        _say(traceback.format_exc())
        results = [skipped(scenario, "-", {}, f"failed: {type(exc).__name__}: {exc}")]
    return results, time.perf_counter() - start


def key_metrics_of(name: str) -> tuple[str, ...]:
    """The scenario module's ``KEY_METRICS`` (headline metrics), if it declares them."""
    module = sys.modules.get(SCENARIOS[name][0])
    value = getattr(module, "KEY_METRICS", ()) if module is not None else ()
    return tuple(value) if isinstance(value, tuple | list) else ()


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """One of the issue's targets, evaluated on this run's figures.

    ``status`` is MET, MISSED or NOT RUN. ``proxy`` marks a figure measured at other
    parameters than the target names (quick mode), which ``detail`` spells out.
    """

    name: str
    status: str
    value: float
    limit: float
    relation: str  # "<=" or ">="
    detail: str
    proxy: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "value": self.value if math.isfinite(self.value) else None,
            "limit": self.limit,
            "relation": self.relation,
            "detail": self.detail,
            "proxy": self.proxy,
        }

    def line(self) -> str:
        shown = f"{self.value:.2f}x" if math.isfinite(self.value) else "n/a"
        tag = f"{self.status} (proxy)" if self.proxy else self.status
        target = f"target {self.relation} {self.limit:g}x"
        return f"  {tag:<16} {self.name}: {shown} ({target}) {self.detail}"


def _matches(result: Result, scenario: str, system: str, params: Mapping[str, Any]) -> bool:
    return (
        not result.skipped
        and result.scenario == scenario
        and result.system == system
        and all(result.params.get(k) == v for k, v in params.items())
    )


def find(results: Sequence[Result], scenario: str, system: str, **params: Any) -> list[Result]:
    """Results of ``system`` in ``scenario`` whose params include ``params``."""
    return [r for r in results if _matches(r, scenario, system, params)]


def _judge(
    name: str,
    value: float,
    limit: float,
    relation: str,
    detail: str,
    proxy: bool = False,
) -> Target:
    if not math.isfinite(value):
        return Target(name, "NOT RUN", value, limit, relation, detail, proxy)
    met = value <= limit if relation == "<=" else value >= limit
    return Target(name, "MET" if met else "MISSED", value, limit, relation, detail, proxy)


def _ratio_target(
    name: str,
    candidates: Sequence[Result],
    metric: str,
    limit: float,
    wanted: str,
    *,
    exact: Callable[[Result], bool],
) -> Target:
    """Judge ``metric`` on the exact-parameter result, else on the largest-n candidate
    (marked as a proxy), else NOT RUN."""
    usable = [r for r in candidates if math.isfinite(r.metrics.get(metric, math.nan))]
    if not usable:
        return Target(name, "NOT RUN", math.nan, limit, "<=", f"needs {wanted}")
    hits = [r for r in usable if exact(r)]
    proxy = not hits
    chosen = hits[0] if hits else max(usable, key=lambda r: int(r.params.get("n", 0)))
    detail = f"at {format_params(chosen.params)}"
    if proxy:
        detail += f" (target is at {wanted}: run --full)"
    return _judge(name, chosen.metrics[metric], limit, "<=", detail, proxy)


def _flower_share_ratio(results: Sequence[Result]) -> tuple[float, str]:
    """Flower's share-creation time over blindsum's at k = 100, t = 66, or (NaN, why).

    The Flower scenario times both in one process: op ``share-secret`` is one 32-byte
    secret, ``share-client`` the two secrets a client shares; its Flower rows carry
    ``flower_vs_blindsum_ratio``.
    """
    for op in ("share-secret", "share-client"):
        for r in find(results, "flower-secaggplus", "flower", op=op, k=100, t=66):
            value = r.metrics.get("flower_vs_blindsum_ratio", math.nan)
            if math.isfinite(value):
                return value, f"Flower / blindsum, op={op} k=100 t=66 n={r.params.get('n')}"
    why = next((r.skipped for r in results if r.scenario == "flower-secaggplus" and r.skipped), "")
    detail = "no Flower share-creation figure at k=100 t=66"
    return math.nan, f"{detail} ({why})" if why else detail


def evaluate_targets(results: Sequence[Result]) -> list[Target]:
    """The issue's targets, judged on this run's ratios."""
    targets: list[Target] = []
    secagg = find(results, "secagg-core", "blindsum", m=16384, dropout=0.1)
    targets.append(
        _ratio_target(
            "secagg party cost (party total / PRG floor)",
            [r for r in secagg if r.params.get("n") == 100],
            "party_vs_prg_floor_ratio",
            3.0,
            "n=100 m=16384 dropout=0.1",
            exact=lambda r: r.params.get("n") == 100,
        )
    )
    value, detail = _flower_share_ratio(results)
    targets.append(_judge("Shamir share creation speed-up over Flower", value, 50.0, ">=", detail))
    targets.append(
        _ratio_target(
            "secagg server cost (unmask-and-sum / sum floor)",
            secagg,
            "server_vs_sum_floor_ratio",
            3.0,
            "n=1000 m=16384 dropout=0.1",
            exact=lambda r: r.params.get("n") == 1000,
        )
    )
    targets.append(_memory_target(secagg))
    # Survivors send the same five messages at any dropout; prefer the 10% figure.
    secagg_bytes = sorted(
        find(results, "secagg-core", "blindsum", n=100, m=16384),
        key=lambda r: r.params.get("dropout") != 0.1,
    )
    targets.append(
        _ratio_target(
            "secagg bytes per party / plaintext",
            secagg_bytes,
            "bytes_vs_plaintext_ratio",
            1.25,
            "n=100 m=16384",
            exact=lambda r: True,
        )
    )
    he = find(results, "he-core", "blindsum", m=16384)
    targets.append(
        _ratio_target(
            "he bytes per party / plaintext",
            he,
            "bytes_vs_plaintext_ratio",
            8.0,
            "n=100 m=16384",
            exact=lambda r: r.params.get("n") == 100,
        )
    )
    targets.append(
        _ratio_target(
            "service secagg round / plaintext round",
            find(results, "service", "blindsum", m=4096, mode="secagg"),
            "vs_plaintext_ratio",
            4.0,
            "n=50 m=4096",
            exact=lambda r: r.params.get("n") == 50,
        )
    )
    targets.append(
        _ratio_target(
            "service he round / (raw TenSEAL + plaintext round)",
            find(results, "service", "blindsum", m=4096, mode="he"),
            "vs_floor_ratio",
            2.0,
            "n=50 m=4096",
            exact=lambda r: r.params.get("n") == 50,
        )
    )
    targets += _scale_targets(results)
    return targets


def _scale_targets(results: Sequence[Result]) -> list[Target]:
    """Issue 11, items 9 and 6: the ``scale`` and ``scale-memory`` scenarios."""
    out: list[Target] = []
    at_1000 = [r for r in results if r.scenario == "scale" and r.params.get("n") == 1000]
    name = "scale: n=1000 round / default phase timeout"
    if at_1000 and "round_s" in at_1000[0].metrics:
        r = at_1000[0]
        value = r.metrics["round_s"] / float(r.params["phase_timeout_s"])
        detail = f"round {r.metrics['round_s']:.1f}s, timeout {r.params['phase_timeout_s']}s"
        if r.skipped:
            value, detail = math.inf, f"{detail}; {r.skipped}"
            out.append(Target(name, "MISSED", value, 1.0, "<=", detail))
        else:
            out.append(_judge(name, value, 1.0, "<=", detail))
    else:
        out.append(Target(name, "NOT RUN", math.nan, 1.0, "<=", "needs scale at n=1000"))
    cpu = [
        r.metrics["cpu_per_party_3000_vs_300_ratio"]
        for r in find(results, "scale", "blindsum", n=3000)
        if "cpu_per_party_3000_vs_300_ratio" in r.metrics
    ]
    out.append(
        _judge(
            "scale: aggregator CPU per party, n=3000 / n=300",
            cpu[0] if cpu else math.nan,
            1.5,
            "<=",
            "needs scale --full" if not cpu else "",
        )
    )
    stmts = [
        r.metrics["statements_vs_smallest_ratio"]
        for r in find(results, "scale", "blindsum")
        if "statements_vs_smallest_ratio" in r.metrics
    ]
    out.append(
        _judge(
            "scale: statements per submission, largest n / smallest n",
            max(stmts) if stmts else math.nan,
            1.1,
            "<=",
            "constant in n (10% slack)",
        )
    )
    mem = [
        v
        for r in find(results, "scale-memory", "blindsum")
        for k, v in r.metrics.items()
        if k.startswith("rss_") and k.endswith("_ratio")
    ]
    out.append(
        _judge(
            "scale-memory: aggregator RSS after 200 rounds / after 20",
            mem[0] if mem else math.nan,
            1.2,
            "<=",
            "",
        )
    )
    return out


#: Flat memory: the peak at the larger n may exceed the smaller n's by at most this factor
#: (10x the parties; a server that kept the vectors would grow about 10x).
MEMORY_GROWTH_LIMIT = 1.5


def _memory_target(secagg: Sequence[Result]) -> Target:
    """Server peak memory at the largest n over the peak at the next smaller n (same m)."""
    name = "secagg server peak memory, larger n / smaller n"
    by_n = {int(r.params["n"]): r for r in secagg if "server_peak_mib" in r.metrics}
    if len(by_n) < 2:
        return Target(name, "NOT RUN", math.nan, MEMORY_GROWTH_LIMIT, "<=", "needs two n")
    sizes = sorted(by_n)
    big, small = by_n[sizes[-1]].metrics, by_n[sizes[-2]].metrics
    value = big["server_peak_mib"] / small["server_peak_mib"]
    detail = (
        f"n={sizes[-2]}: {small['server_peak_mib']:.2f} MiB, "
        f"n={sizes[-1]}: {big['server_peak_mib']:.2f} MiB at m=16384 dropout=0.1 "
        f"(mask phase alone: {small.get('server_peak_mask_mib', math.nan):.2f} -> "
        f"{big.get('server_peak_mask_mib', math.nan):.2f} MiB)"
    )
    proxy = sizes[-1] != 1000
    if proxy:
        detail += " (target compares n=100 with n=1000: run --full)"
    return _judge(name, value, MEMORY_GROWTH_LIMIT, "<=", detail, proxy)


# --------------------------------------------------------------------------- output


def table(results: Sequence[Result], names: Sequence[str]) -> str:
    """The one table of the run, each scenario's blindsum rows with its headline metrics."""
    headline: dict[str, tuple[str, ...]] = {}
    for name in names:
        headline[SCENARIOS[name][1]] = key_metrics_of(name)
    return format_table([result_row(r, headline.get(r.scenario, ())) for r in results])


def write_json(
    path: Path,
    *,
    mode: str,
    results: Sequence[Result],
    targets: Sequence[Target],
    seconds: Mapping[str, float],
) -> None:
    doc = {
        "machine": machine_info(),
        "mode": mode,
        "finished_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "scenario_seconds": dict(seconds),
        "results": [r.to_json() for r in results],
        "targets": [t.to_json() for t in targets],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="blindsum benchmarks. A scenario name first runs that scenario alone: "
        + ", ".join(SCENARIOS),
    )
    parser.add_argument("--full", action="store_true", help="run the whole grid")
    parser.add_argument(
        "--only", default="", help="comma-separated scenarios to run (default: all)"
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument(
        "--out", type=Path, default=RESULTS_DIR, help="folder for latest.json and the plots"
    )
    return parser.parse_args(list(argv))


def run_all(argv: Sequence[str]) -> int:
    """Run the scenarios, print the table and targets, write the JSON and the plots."""
    args = _parse(argv)
    names = [s for s in args.only.split(",") if s] if args.only else list(SCENARIOS)
    unknown = [s for s in names if s not in SCENARIOS]
    if unknown:
        _say(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
        return 2
    quick = not args.full
    mode = "quick" if quick else "full"
    results: list[Result] = []
    seconds: dict[str, float] = {}
    for name in names:
        _say(f"== {name} ({mode})")
        got, spent = run_scenario(name, quick)
        results.extend(got)
        seconds[name] = spent
        _say(f"== {name}: {spent:.1f}s")
    targets = evaluate_targets(results)
    print(table(results, names))
    print()
    print("targets (ratios from this run):")
    for target in targets:
        print(target.line())
    out_json = args.out / "latest.json"
    write_json(out_json, mode=mode, results=results, targets=targets, seconds=seconds)
    print(f"\nwrote {out_json}")
    if not args.no_plots:
        for message in plots.write_plots(results, args.out):
            print(message)
    return 0


def main(argv: Sequence[str]) -> int:
    if argv and argv[0] in SCENARIOS:
        module, reason = load_scenario(argv[0])
        if module is None:
            print(f"{argv[0]}: skipped: {reason}")
            return 0
        code = module.main(list(argv[1:]))
        return int(code or 0)
    return run_all(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
