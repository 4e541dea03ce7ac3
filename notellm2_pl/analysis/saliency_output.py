"""Saliency outputs: the per-layer flow plot, ``saliency.json`` and TensorBoard events.

matplotlib and TensorBoard are imported inside the functions: they are only needed when a result is drawn or logged.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from notellm2_pl.analysis.saliency import FLOWS, SaliencyResult
from notellm2_pl.atomic import atomic_write_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from torch.utils.tensorboard import SummaryWriter

COLOURS: dict[str, str] = {"S_v": "red", "S_t": "green", "S_o": "blue"}


def plot_saliency(results: Sequence[SaliencyResult], path: str | os.PathLike[str] | None = None,
                  ymax: float = 0.8) -> Figure:
    """Plot ``S_v`` (red), ``S_t`` (green), ``S_o`` (blue) against layer, one panel per model.

    Args:
        results: One or more models.
        path: Write a PNG here (None: only return the figure).
        ymax: Upper y limit (docs/method.md#saliency: 0.8; raised automatically if a value is larger).

    Returns:
        The matplotlib figure.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = len(results)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    top = max([ymax] + [float(r.scores.max()) * 1.05 for r in results])
    for ax, res in zip(axes.flat, results):
        layers = np.arange(res.scores.shape[0])
        for i, f in enumerate(FLOWS):
            ax.plot(layers, res.scores[:, i], marker="o", color=COLOURS[f], label=f)
        if len(layers) <= 40:
            ax.set_xticks(layers)
        ax.set_title(res.label, fontsize=10)
        ax.set_xlabel("layer")
        ax.set_ylim(0, top)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig


def log_saliency(result: SaliencyResult, writer: SummaryWriter, tag: str = "saliency") -> None:
    """TensorBoard: per-layer scalars ``{tag}/{S_v|S_t|S_o}`` (step = layer) and the plot as a figure."""
    for i, f in enumerate(FLOWS):
        for layer, v in enumerate(result.scores[:, i]):
            writer.add_scalar(f"{tag}/{f}", float(v), layer)
    writer.add_figure(f"{tag}/plot", plot_saliency([result]), 0, close=True)


def write_saliency(result: SaliencyResult, out_dir: str | os.PathLike[str], tb: bool = True) -> Path:
    """Write ``saliency.json``, ``saliency.png`` and (``tb``) TensorBoard events under ``out_dir/tb``.

    Args:
        result: The saliency of one model.
        out_dir: Output folder (created).
        tb: Also write TensorBoard events.

    Returns:
        The path of ``saliency.json``.
    """
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "saliency.json", json.dumps(result.to_dict(), indent=1))
    plt.close(plot_saliency([result], out / "saliency.png"))
    if tb:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=os.fspath(out / "tb"))
        try:
            log_saliency(result, writer)
        finally:
            writer.close()
    return out / "saliency.json"
