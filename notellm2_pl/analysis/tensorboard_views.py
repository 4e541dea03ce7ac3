"""The ablation TensorBoard log dir, written from the run records and read back with TensorBoard's own reader.

Layout written by :func:`write_tensorboard` under ``<out>/tb`` (``tensorboard --logdir <out>/tb``):

- ``<run id>/``: one TensorBoard run per ablation run, holding its hyperparameters and final metrics as an HParams
  session (the **HParams tab is the ablation table**: filter and sort runs by ``micl``, ``late_fusion``,
  ``loss_weights``, ``num_query_tokens``...), and the same metrics as scalars ``recall/{subset}/{probe}/R@{K}``
  (probe ``full``, ``only_image``, ``only_text``, and ``full_e_v`` for mICL's visual embedding).
- ``sweeps/``: seed-averaged sweep curves ``sweep/{sweep}/{subset}/full/R@{K}`` with the sweep value as the step.
- the root holds the **custom-scalars layout**: one chart per subset (Recall@10, Recall@100) grouping every run's
  probes, and one chart per sweep.

TensorBoard is imported inside the functions: it is only needed when these views are written or read.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from notellm2_pl.analysis.grid import Grid
from notellm2_pl.analysis.records import metric_key
from notellm2_pl.analysis.summary import TABLE_KS, Aggregate, aggregate, axes, sweep_points

if TYPE_CHECKING:
    from tensorboard.plugins.custom_scalar import layout_pb2

Layout = dict[str, dict[str, list]]
"""``{category: {chart title: ["Multiline", [tag regex]]}}`` (``SummaryWriter.add_custom_scalars`` format)."""


def custom_scalar_layout(subsets: Sequence[str], sweeps: Sequence[str], ks: Sequence[int] = TABLE_KS) -> Layout:
    """Custom-scalars layout: Recall@K by subset across runs, and one chart per sweep and K."""
    layout: Layout = {}
    for k in ks:
        layout[f"Recall@{k} by subset (every run, every probe)"] = {
            f"{subset} R@{k}": ["Multiline", [rf"recall/{subset}/.*/R@{k}$"]] for subset in subsets}
    if sweeps:
        layout["Sweeps (full input, seed mean; step = sweep value)"] = {
            f"{sweep} R@{k}": ["Multiline", [rf"sweep/{sweep}/.*/R@{k}$"]] for sweep in sweeps for k in ks}
    return layout


def _write_runs(tb_dir: Path, records: Sequence[Mapping[str, Any]]) -> None:
    """One TensorBoard run per record: an HParams session and the final recalls as scalars."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    all_hp = sorted({k for r in records for k in r["hparams"]})
    all_metrics = sorted({k for r in records for k, v in r["metrics"].items()
                          if v is not None and k.rsplit("@", 1)[-1] in {str(k_) for k_ in TABLE_KS}})
    discrete: dict[str, list] = {}
    for key in all_hp:
        vals = {r["hparams"].get(key, "n/a") for r in records}
        if all(isinstance(v, str) for v in vals) and len(vals) <= 50:
            discrete[key] = sorted(vals, key=str)
    for rec in records:
        hp = {k: rec["hparams"].get(k, "n/a") for k in all_hp}
        metrics = {k: float(rec["metrics"][k]) for k in all_metrics if rec["metrics"].get(k) is not None}
        writer = SummaryWriter(log_dir=os.fspath(tb_dir / rec["run_id"]))
        try:
            exp, ssi, sei = hparams_summary(hp, {k: 0.0 for k in all_metrics}, hparam_domain_discrete=discrete)
            fw = writer._get_file_writer()
            for s in (exp, ssi, sei):
                fw.add_summary(s)
            for k, v in metrics.items():
                writer.add_scalar(k, v, 0)
        finally:
            writer.close()


def _write_sweeps(tb_dir: Path, sweeps: Mapping[str, Sequence[tuple[float, str]]], agg: Aggregate,
                  subsets: Sequence[str]) -> None:
    """Seed-averaged sweep curves (full input) with the sweep value as the step."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=os.fspath(tb_dir / "sweeps"))
    try:
        for sweep, points in sweeps.items():
            for x, name in points:
                for subset in subsets:
                    for k in TABLE_KS:
                        v = agg[name].get(metric_key(subset, "full", k))
                        if v is not None:
                            writer.add_scalar(f"sweep/{sweep}/{subset}/full/R@{k}", v[0], round(x))
    finally:
        writer.close()


def write_tensorboard(tb_dir: Path, grid: Grid, records: Sequence[Mapping[str, Any]]) -> Path:
    """(Re)write the ablation TensorBoard log dir from the records (module docstring).

    Args:
        tb_dir: The log dir; regenerated from the records every time, so no session is duplicated.
        grid: The grid (its sweeps).
        records: Finished runs.

    Returns:
        ``tb_dir``.
    """
    from torch.utils.tensorboard import SummaryWriter

    if tb_dir.exists():
        shutil.rmtree(tb_dir)
    tb_dir.mkdir(parents=True)
    _write_runs(tb_dir, records)
    agg = aggregate(records)
    subsets, _ = axes(agg)
    sweeps = sweep_points(grid, records)
    if sweeps:
        _write_sweeps(tb_dir, sweeps, agg, subsets)
    writer = SummaryWriter(log_dir=os.fspath(tb_dir))
    try:
        writer.add_custom_scalars(custom_scalar_layout(subsets, list(sweeps)))
    finally:
        writer.close()
    return tb_dir


def read_run_events(run_dir: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, float]]:
    """Read one TensorBoard run back with TensorBoard's own event reader.

    Args:
        run_dir: A run's log dir.

    Returns:
        ``(hparams, final scalar values)``.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    ea = EventAccumulator(os.fspath(run_dir), size_guidance={"scalars": 0})
    ea.Reload()
    hp: dict[str, Any] = {}
    try:
        hp_content = ea.PluginTagToContent("hparams")
    except KeyError:  # a run without an HParams session
        hp_content = {}
    for content in hp_content.values():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        if data.HasField("session_start_info"):
            for k, v in data.session_start_info.hparams.items():
                kind = v.WhichOneof("kind")
                hp[k] = getattr(v, kind) if kind else None
    scalars = {tag: ea.Scalars(tag)[-1].value for tag in ea.Tags()["scalars"]}
    return hp, scalars


def read_layout(tb_dir: str | os.PathLike[str]) -> layout_pb2.Layout | None:
    """The custom-scalars layout stored in a log dir's root, or None."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata

    ea = EventAccumulator(os.fspath(tb_dir), size_guidance={"tensors": 0})
    ea.Reload()
    if metadata.CONFIG_SUMMARY_TAG not in ea.Tags().get("tensors", []):
        return None
    proto = ea.Tensors(metadata.CONFIG_SUMMARY_TAG)[-1].tensor_proto
    return layout_pb2.Layout.FromString(proto.string_val[0])
