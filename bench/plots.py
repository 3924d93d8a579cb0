"""The two plots of ``docs/BENCHMARKS.md``, drawn from one run's Results.

- ``server_time_vs_n.png``: secagg server unmask-and-sum time and its sum floor against
  n (one line per m), and the he aggregator + custodian time against raw TenSEAL.
- ``party_time_vs_m.png``: a secagg party's total compute and its PRG floor against m
  (one line per n), and an he party's encryption against raw TenSEAL.

matplotlib is optional (it lives in the bench venv only): without it, the plots are
skipped with a message and the rest of the run is unaffected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import Result, optional_import

SERVER_PLOT = "server_time_vs_n.png"
PARTY_PLOT = "party_time_vs_m.png"

#: Secagg figures are drawn at this dropout fraction (the issue's 10%).
PLOT_DROPOUT = 0.1

Series = dict[int, list[tuple[int, float]]]


def _series(
    results: Sequence[Result],
    scenario: str,
    system: str,
    metric: str,
    *,
    x: str,
    group: str,
    dropout: float | None = None,
) -> Series:
    """{group value: sorted [(x, metric)]} over the non-skipped matching Results."""
    out: Series = {}
    for r in results:
        if r.skipped or r.scenario != scenario or r.system != system or metric not in r.metrics:
            continue
        if "op" in r.params or x not in r.params or group not in r.params:
            continue
        if dropout is not None and r.params.get("dropout") != dropout:
            continue
        out.setdefault(int(r.params[group]), []).append((int(r.params[x]), r.metrics[metric]))
    return {k: sorted(v) for k, v in sorted(out.items())}


def _draw(ax: Any, series: Series, *, label: str, style: str, group: str, marker: str = "o") -> int:
    """Plot one line per group; returns how many lines were drawn."""
    for key, points in series.items():
        xs = [p[0] for p in points]
        ys = [p[1] * 1000.0 for p in points]  # milliseconds
        ax.plot(xs, ys, style, marker=marker, label=f"{label}, {group}={key}")
    return len(series)


def _finish(ax: Any, title: str, xlabel: str, drawn: int) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("milliseconds (log)")
    ax.set_xscale("log", base=2 if xlabel.startswith("m") else 10)
    ax.set_yscale("log")
    ticker, _ = optional_import("matplotlib.ticker")
    if ticker is not None:  # plain numbers (0.5, 20, 300) rather than 5 x 10^-1
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.grid(True, which="both", alpha=0.3)
    if drawn:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no data in this run", ha="center", transform=ax.transAxes)


@dataclass(frozen=True)
class _Line:
    """One measured quantity: (scenario, system, metric) and its legend label."""

    scenario: str
    system: str
    metric: str
    label: str


@dataclass(frozen=True)
class _Panel:
    """blindsum against its baseline in one subplot."""

    title: str
    subject: _Line
    baseline: _Line
    #: Secagg panels are drawn at PLOT_DROPOUT; he has no dropout.
    dropout: float | None = None


def _figure(
    plt: Any,
    results: Sequence[Result],
    path: Path,
    *,
    x: str,
    group: str,
    xlabel: str,
    panels: Sequence[_Panel],
) -> None:
    """One figure with a subplot per panel: the subject solid, its baseline dashed."""
    fig, axes = plt.subplots(1, len(panels), figsize=(12, 4.8))
    for ax, panel in zip(axes, panels, strict=True):
        drawn = 0
        for line, style, marker in ((panel.subject, "-", "o"), (panel.baseline, "--", "x")):
            series = _series(
                results,
                line.scenario,
                line.system,
                line.metric,
                x=x,
                group=group,
                dropout=panel.dropout,
            )
            drawn += _draw(ax, series, label=line.label, style=style, group=group, marker=marker)
        _finish(ax, panel.title, xlabel, drawn)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _server_plot(plt: Any, results: Sequence[Result], path: Path) -> None:
    _figure(
        plt,
        results,
        path,
        x="n",
        group="m",
        xlabel="n parties",
        panels=(
            _Panel(
                f"secagg server ({PLOT_DROPOUT:.0%} dropout)",
                _Line("secagg-core", "blindsum", "server_unmask_sum_s", "blindsum unmask+sum"),
                _Line("secagg-core", "sum-floor", "sum_floor_s", "sum floor"),
                dropout=PLOT_DROPOUT,
            ),
            _Panel(
                "he aggregator sum",
                _Line("he-core", "blindsum", "server_add_s", "blindsum aggregator sum"),
                _Line("he-core", "raw-tenseal", "server_add_s", "raw TenSEAL sum"),
            ),
        ),
    )


def _party_plot(plt: Any, results: Sequence[Result], path: Path) -> None:
    _figure(
        plt,
        results,
        path,
        x="m",
        group="n",
        xlabel="m (vector length)",
        panels=(
            _Panel(
                f"secagg party ({PLOT_DROPOUT:.0%} dropout)",
                _Line("secagg-core", "blindsum", "party_total_s", "blindsum party total"),
                _Line("secagg-core", "prg-floor", "prg_floor_s", "PRG floor"),
                dropout=PLOT_DROPOUT,
            ),
            _Panel(
                "he party",
                _Line("he-core", "blindsum", "party_total_s", "blindsum encrypt+receipt"),
                _Line("he-core", "raw-tenseal", "party_encrypt_s", "raw TenSEAL encrypt"),
            ),
        ),
    )


def write_plots(results: Sequence[Result], out_dir: Path) -> list[str]:
    """Write both PNGs into ``out_dir``; returns one message per plot (or the skip)."""
    mpl, reason = optional_import("matplotlib")
    if mpl is None:
        return [f"plots skipped: {reason} (install bench/requirements.txt)"]
    mpl.use("Agg")
    plt, reason = optional_import("matplotlib.pyplot")
    if plt is None:
        return [f"plots skipped: {reason}"]
    out_dir.mkdir(parents=True, exist_ok=True)
    messages = []
    for name, draw in ((SERVER_PLOT, _server_plot), (PARTY_PLOT, _party_plot)):
        path = out_dir / name
        draw(plt, results, path)
        messages.append(f"wrote {path}")
    return messages
