"""PNG plots of an ablation grid: recall by variant, the input probes, sweeps, and the saliency panels.

matplotlib is imported inside :func:`pyplot` (Agg backend): it is only needed when plots are drawn.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from notellm2_pl.analysis.records import metric_key
from notellm2_pl.analysis.saliency import SaliencyResult
from notellm2_pl.analysis.saliency_output import plot_saliency
from notellm2_pl.analysis.summary import TABLE_KS, Aggregate, axes
from notellm2_pl.data.schema import ALL_PAIRS, PROBES, SUBSET_NAMES

if TYPE_CHECKING:
    from types import ModuleType

MISSING = (np.nan, 0.0, 0)
"""Aggregate entry of a metric a variant lacks: drawn as no bar / no point."""


def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` with the non-interactive Agg backend (unless a backend was chosen already)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_variants(path: Path, names: Sequence[str], agg: Aggregate) -> Path | None:
    """Grouped bars: R@10 and R@100 (full input, e_m) of every variant, one bar per subset; None if nothing to plot."""
    names = [n for n in names if n in agg]
    if not names:
        return None
    plt = pyplot()
    subsets, _ = axes(agg)
    fig, rows = plt.subplots(len(TABLE_KS), 1, figsize=(max(6, 1.1 * len(names) * max(1, len(subsets)) / 2.5),
                                                         3.3 * len(TABLE_KS)), squeeze=False)
    width = 0.8 / max(1, len(subsets))
    x = np.arange(len(names))
    for ax, k in zip(rows[:, 0], TABLE_KS):
        for i, subset in enumerate(subsets):
            vals = [agg[n].get(metric_key(subset, "full", k), MISSING) for n in names]
            ax.bar(x + (i - (len(subsets) - 1) / 2) * width, [v[0] for v in vals], width,
                   yerr=[v[1] for v in vals], label=subset, capsize=2)
        ax.set_xticks(x, names, rotation=25, ha="right", fontsize=8)
        ax.set_ylabel(f"R@{k}")
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
    rows[0, 0].set_title("Recall by variant and subset (full input, mean over seeds)")
    rows[0, 0].legend(fontsize=7, ncol=len(subsets))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_probes(path: Path, names: Sequence[str], agg: Aggregate, k: int = 10) -> Path | None:
    """Bars per probe (full / only_image / only_text) for each variant, on ``all`` and ``shortquery``."""
    names = [n for n in names if n in agg and metric_key(ALL_PAIRS, "only_image", k) in agg[n]]
    if not names:
        return None
    plt = pyplot()
    subsets = [s for s in (ALL_PAIRS, SUBSET_NAMES[0]) if any(metric_key(s, "full", k) in agg[n] for n in names)]
    fig, panels = plt.subplots(1, len(subsets), figsize=(max(6, 0.9 * len(names)) * len(subsets) / 1.5, 3.6),
                               squeeze=False)
    x = np.arange(len(names))
    for ax, subset in zip(panels[0], subsets):
        for i, probe in enumerate(PROBES):
            vals = [agg[n].get(metric_key(subset, probe, k), MISSING) for n in names]
            ax.bar(x + (i - 1) * 0.27, [v[0] for v in vals], 0.27, yerr=[v[1] for v in vals], label=probe, capsize=2)
        ax.set_xticks(x, names, rotation=25, ha="right", fontsize=8)
        ax.set_title(f"R@{k} on {subset}: probes", fontsize=10)
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
    panels[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_sweep(path: Path, sweep: str, points: Sequence[tuple[float, str]], agg: Aggregate,
               label: str = "", log_x: bool = False) -> Path:
    """R@10 (solid) and R@100 (dashed) against the sweep value, one colour per subset (full input).

    Args:
        path: PNG to write.
        sweep: Sweep name.
        points: ``[(x, variant), ...]``.
        agg: The aggregate of the grid's records.
        label: X axis label (default: the sweep name).
        log_x: Logarithmic x axis.
    """
    plt = pyplot()
    subsets, _ = axes(agg)
    xs = [p[0] for p in points]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for i, subset in enumerate(subsets):
        for k, style in zip(TABLE_KS, ("-", "--")):
            vals = [agg[n].get(metric_key(subset, "full", k), MISSING) for _, n in points]
            ax.errorbar(xs, [v[0] for v in vals], yerr=[v[1] for v in vals], fmt=style, marker="o", color=f"C{i}",
                        label=f"{subset} R@{k}", capsize=2)
    if log_x:
        ax.set_xscale("log")
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.set_xlabel(label or sweep)
    ax.set_ylabel("recall")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    ax.set_title(f"Sweep: {label or sweep}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_all_saliency(path: Path, names: Sequence[str], records: Sequence[Mapping[str, Any]]) -> Path | None:
    """One saliency panel per variant (its first seed with a saliency result); None if no run has one."""
    chosen = {}
    for rec in sorted(records, key=lambda r: r["seed"]):
        if rec.get("saliency") and rec["name"] not in chosen and Path(rec["saliency"]).exists():
            chosen[rec["name"]] = SaliencyResult.from_dict(json.loads(Path(rec["saliency"]).read_text()))
    results = [chosen[n] for n in names if n in chosen]
    if not results:
        return None
    pyplot().close(plot_saliency(results, path))
    return path
