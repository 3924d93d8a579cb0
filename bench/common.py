"""Shared harness for the benchmarks: results, timers, memory peaks, machine info.

Every scenario module returns :class:`Result` records; ``python -m bench`` prints them
in one table and writes them to ``bench/results/latest.json``. Timings on a shared,
2-core machine are noisy, so each scenario measures its baseline in the same process
and run as the subject and reports the ratio: the ratio is the figure to trust.

Peers (flwr, mpyc, matplotlib, psutil) are optional: import them with
:func:`optional_import` and return a skipped :class:`Result` when they are missing, so
the harness never crashes for want of a peer and mypy never needs their stubs.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import math
import os
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

#: Packages whose versions are recorded with every run (None when not installed).
VERSIONED_PACKAGES = (
    "blindsum",
    "numpy",
    "tenseal",
    "grpcio",
    "cryptography",
    "protobuf",
    "flwr",
    "mpyc",
    "matplotlib",
    "psutil",
)

_MIB = float(1 << 20)


@dataclass(frozen=True)
class Result:
    """One measurement: a system in a scenario at some parameters.

    ``metrics`` keys carry their unit as a suffix: ``_s`` (seconds), ``_bytes``,
    ``_mib``; ratios end in ``_ratio`` and flags (1.0 true, 0.0 false) in ``_ok``.
    A non-empty ``skipped`` says why the measurement did not run; ``metrics`` is then
    usually empty.
    """

    scenario: str
    system: str
    params: dict[str, Any]
    metrics: dict[str, float]
    skipped: str = ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (non-finite floats become None, since JSON has no NaN)."""
        doc = asdict(self)
        doc["metrics"] = {k: _json_float(v) for k, v in self.metrics.items()}
        return doc


def _json_float(value: float) -> float | None:
    return value if math.isfinite(value) else None


def skipped(scenario: str, system: str, params: Mapping[str, Any], reason: str) -> Result:
    """A Result that records why a measurement did not run (reason must be non-empty)."""
    return Result(scenario, system, dict(params), {}, skipped=reason or "skipped")


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, or NaN when the denominator is not a positive number.

    NaN (never an exception) keeps one broken baseline from hiding every other figure.
    """
    if not (math.isfinite(numerator) and math.isfinite(denominator)) or denominator <= 0:
        return math.nan
    return numerator / denominator


def optional_import(name: str) -> tuple[Any | None, str]:
    """Import an optional peer module: ``(module, "")``, or ``(None, reason)`` when absent.

    Typed ``Any`` on purpose: mypy must not need the peer's stubs (or the peer) at all.
    """
    try:
        return importlib.import_module(name), ""
    except Exception as exc:  # ImportError, or a peer that fails while importing
        return None, f"{name} is not importable here ({type(exc).__name__}: {exc})"


# --------------------------------------------------------------------------- timing


def best_of(fn: Callable[[], T], repeat: int) -> tuple[float, T]:
    """Run ``fn`` ``repeat`` times (at least once); return (minimum wall seconds, last result).

    The minimum is the least disturbed run: other processes on the machine only ever
    add time, never remove it.
    """
    start = time.perf_counter()
    result = fn()
    best = time.perf_counter() - start
    for _ in range(repeat - 1):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


class Stopwatch:
    """Accumulates wall seconds per named phase; one instance may serve many actors.

    ``with sw.phase("mask"): ...`` adds the block's duration to ``seconds["mask"]`` and
    one to ``counts["mask"]``, so :meth:`mean` gives the per-call average (for example
    the mean party time of a phase when every party times itself on one stopwatch).
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed
            self.counts[name] = self.counts.get(name, 0) + 1

    def total(self, names: Sequence[str] | None = None) -> float:
        """Sum of the accumulated seconds of ``names`` (default: every phase)."""
        keys = self.seconds if names is None else names
        return sum(self.seconds.get(k, 0.0) for k in keys)

    def mean(self, name: str) -> float:
        """Mean seconds per call of ``name`` (0.0 if it never ran)."""
        count = self.counts.get(name, 0)
        return self.seconds.get(name, 0.0) / count if count else 0.0


def traced_peak_mib(fn: Callable[[], T]) -> tuple[float, T]:
    """Run ``fn`` under tracemalloc; return (peak MiB allocated during the call, result).

    Counts Python objects and numpy buffers allocated while ``fn`` runs (numpy reports
    its allocations to tracemalloc); memory that existed before the call is not
    counted. Tracing slows Python down several times: never time the same call.
    """
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return (peak - base) / _MIB, result


def traced_peaks_mib(steps: Sequence[Callable[[], object]]) -> list[float]:
    """Run ``steps`` in order under one tracemalloc session; return each step's peak MiB.

    Every peak is measured from the memory in use before the first step, so what an
    earlier step kept alive counts in the later peaks (``max`` of the list is the peak
    over all the steps), while memory from before the first step never counts.
    """
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    peaks: list[float] = []
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        for step in steps:
            tracemalloc.reset_peak()
            step()
            _, peak = tracemalloc.get_traced_memory()
            peaks.append((peak - base) / _MIB)
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return peaks


# --------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else what platform reports."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def package_version(name: str) -> str | None:
    """Installed version of distribution ``name``, or None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """CPU model, core counts, OS, Python and the versions of blindsum and its peers."""
    affinity = getattr(os, "sched_getaffinity", None)
    usable = len(affinity(0)) if affinity is not None else os.cpu_count()
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "versions": {name: package_version(name) for name in VERSIONED_PACKAGES},
    }


# --------------------------------------------------------------------------- CLI and table


@dataclass(frozen=True)
class ScenarioArgs:
    """The common command-line parameters of ``python -m bench <scenario>``."""

    parties: int | None = None
    length: int | None = None
    dropout: float | None = None
    mode: str | None = None
    full: bool = False
    extra: list[str] = field(default_factory=list)


def parse_scenario_args(argv: Sequence[str], prog: str) -> ScenarioArgs:
    """Parse ``[--parties N] [--length M] [--dropout F] [--mode secagg|he] [--full]``.

    Unknown arguments are kept in ``extra`` for the scenario to interpret.
    """
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--parties", type=int, default=None)
    parser.add_argument("--length", type=int, default=None)
    parser.add_argument("--dropout", type=float, default=None)
    parser.add_argument("--mode", choices=("secagg", "he"), default=None)
    parser.add_argument("--full", action="store_true")
    ns, extra = parser.parse_known_args(list(argv))
    if ns.parties is not None and ns.parties < 1:
        parser.error("--parties must be at least 1")
    if ns.length is not None and ns.length < 1:
        parser.error("--length must be at least 1")
    if ns.dropout is not None and not 0.0 <= ns.dropout < 1.0:
        parser.error("--dropout must be in [0, 1)")
    return ScenarioArgs(ns.parties, ns.length, ns.dropout, ns.mode, ns.full, extra)


#: Parameters shown in the table's params column, in this order, when present.
_PARAM_ORDER = ("n", "m", "dropout", "mode", "k", "t", "op")


def format_params(params: Mapping[str, Any]) -> str:
    """Compact ``n=100 m=16384 dropout=0.1`` rendering of the well-known parameters."""
    parts = [f"{key}={params[key]}" for key in _PARAM_ORDER if key in params]
    return " ".join(parts)


def format_value(key: str, value: float) -> str:
    """Render one metric with its unit, from the key's suffix."""
    if not math.isfinite(value):
        return "n/a"
    if key.endswith("_s"):
        return f"{value * 1000:.1f}ms" if value < 1.0 else f"{value:.2f}s"
    if key.endswith("_bytes"):
        return f"{value / 1024:.1f}KiB" if value >= 1024 else f"{value:.0f}B"
    if key.endswith("_mib"):
        return f"{value:.2f}MiB"
    if key.endswith("_ratio"):
        return f"{value:.2f}x"
    if key.endswith("_ok"):
        return "yes" if value else "NO"
    return f"{value:g}"


def format_table(rows: Sequence[tuple[str, str, str, str, str]]) -> str:
    """Left-aligned text table of (scenario, system, params, metrics, ratio) rows."""
    header = ("scenario", "system", "params", "key metrics", "vs baseline")
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(5)]
    lines = []
    for i, row in enumerate((header, *rows)):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def result_row(result: Result, key_metrics: Sequence[str] = ()) -> tuple[str, str, str, str, str]:
    """One table row: the headline metrics, and every ``_ratio`` metric.

    ``key_metrics`` names the headline metrics (those the result has); the result's own
    first non-ratio metrics fill the row up to four.
    """
    params = format_params(result.params)
    if result.skipped:
        return (result.scenario, result.system, params, f"SKIPPED: {result.skipped}", "")
    names = [k for k in key_metrics if k in result.metrics]
    for key in result.metrics:  # fill up to four with the result's own first metrics
        if len(names) >= 4:
            break
        if key not in names and not key.endswith("_ratio"):
            names.append(key)
    shown = " ".join(f"{k}={format_value(k, result.metrics[k])}" for k in names)
    ratios = " ".join(
        f"{k.removesuffix('_ratio')}={format_value(k, v)}"
        for k, v in result.metrics.items()
        if k.endswith("_ratio")
    )
    return (result.scenario, result.system, params, shown, ratios)
