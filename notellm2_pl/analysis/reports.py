"""Every report of an ablation grid, from its finished runs' records: table, plots and TensorBoard views.

Outputs under the grid's folder: ``summary.md`` / ``summary.csv`` (:mod:`notellm2_pl.analysis.summary`), PNG plots
(:mod:`notellm2_pl.analysis.plots`) and ``tb/`` (:mod:`notellm2_pl.analysis.tensorboard_views`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from notellm2_pl.analysis.grid import Grid
from notellm2_pl.analysis.plots import plot_all_saliency, plot_probes, plot_sweep, plot_variants
from notellm2_pl.analysis.summary import aggregate, sweep_points, write_summary
from notellm2_pl.analysis.tensorboard_views import write_tensorboard


def write_reports(out: Path, grid: Grid, records: Sequence[Mapping[str, Any]]) -> list[Path]:
    """Summary table, plots and TensorBoard views of the finished runs.

    Args:
        out: The grid's output folder.
        grid: The grid (row order, which runs are plotted, sweeps).
        records: The finished runs' records.

    Returns:
        The written paths (the ``tb`` folder last).
    """
    out.mkdir(parents=True, exist_ok=True)
    names = [r.name for r in grid.runs]
    names += sorted({r["name"] for r in records} - set(names))
    plotted = [r.name for r in grid.runs if r.plot]
    paths = write_summary(out, names, grid.name, records)
    agg = aggregate(records)
    for p in (plot_variants(out / "recall_by_variant.png", plotted, agg),
              plot_probes(out / "probes.png", plotted, agg),
              plot_all_saliency(out / "saliency.png", names, records)):
        if p is not None:
            paths.append(p)
    for sweep, points in sweep_points(grid, records).items():
        meta = grid.sweeps.get(sweep, {}) or {}
        paths.append(plot_sweep(out / f"sweep_{sweep}.png", sweep, points, agg, meta.get("label", sweep),
                                bool(meta.get("log_x", False))))
    paths.append(write_tensorboard(out / "tb", grid, records))
    return paths
