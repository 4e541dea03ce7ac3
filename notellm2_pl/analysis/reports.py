"""Ablation views: run records, the summary table (markdown + CSV), PNG plots and TensorBoard logs.

TensorBoard layout written by :func:`write_tensorboard` under ``<out>/tb`` (``tensorboard --logdir <out>/tb``):

- ``<run id>/``: one TensorBoard run per ablation run, holding its hyperparameters and final metrics as an HParams
  session (the **HParams tab is the ablation table**: filter and sort runs by ``micl``, ``late_fusion``,
  ``loss_weights``, ``num_query_tokens``...), and the same metrics as scalars ``recall/{subset}/{probe}/R@{K}``
  (probe ``full``, ``only_image``, ``only_text``, and ``full_e_v`` for mICL's visual embedding).
- ``sweeps/``: seed-averaged sweep curves ``sweep/{sweep}/{subset}/full/R@{K}`` with the sweep value as the step.
- the root holds the **custom-scalars layout**: one chart per subset (Recall@10, Recall@100) grouping every run's
  probes, and one chart per sweep.

The summary table is variant x subset x probe with R@10 and R@100 (mean over seeds; standard deviations in the CSV).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

TABLE_KS: tuple[int, ...] = (10, 100)
SUBSET_ORDER: tuple[str, ...] = ("all", "shortquery", "shortgtdoc", "longquery", "longgtdoc")
PROBE_ORDER: tuple[str, ...] = ("full", "only_image", "only_text", "full_e_v", "only_image_e_v", "only_text_e_v")

STANDARD_HPARAMS: dict[str, str] = {
    "micl": "model.micl",
    "late_fusion": "model.late_fusion",
    "loss_weights": "model.loss_weights",
    "embed_dim": "model.embed_dim",
    "connector": "model.connector.class_path",
    "num_query_tokens": "model.connector.init_args.num_query_tokens",
    "llm": "model.llm.init_args.pretrained",
    "vision": "model.vision.class_path",
    "splice_mode": "model.splice_mode",
    "max_steps": "trainer.max_steps",
    "max_epochs": "trainer.max_epochs",
}
"""HParams columns every run gets (name -> dotted key of the resolved config)."""


# ------------------------------------------------------------------------------------------------ records
def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts/lists -> ``{"a.b.0.c": value}``; a list of scalars stays one value."""
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out if out or not prefix else {prefix: {}}
    if isinstance(node, list) and any(isinstance(v, (Mapping, list)) for v in node):
        out = {}
        for i, v in enumerate(node):
            out.update(flatten(v, f"{prefix}.{i}" if prefix else str(i)))
        return out
    return {prefix: node}


def _hp_value(v: Any) -> int | float | str:
    if isinstance(v, bool):  # strings, so the HParams tab filters them as discrete values
        return "true" if v else "false"
    if isinstance(v, (int, float, str)):
        return v
    if v is None:
        return "none"
    return json.dumps(v) if isinstance(v, (list, tuple, dict)) else str(v)


def metric_key(subset: str, probe: str, k: int | str) -> str:
    """Scalar tag of one recall: ``recall/{subset}/{probe}/R@{K}``."""
    return f"recall/{subset}/{probe}/R@{k}"


def parse_results(results: Mapping[str, Any]) -> dict[str, float | None]:
    """``evaluate``'s ``results.json`` (``{probe}/{e_m|e_v}/{subset}`` entries) -> ``{metric_key: recall}``."""
    out: dict[str, float | None] = {}
    for name, res in results.items():
        parts = name.split("/")
        if len(parts) != 3:
            continue
        probe, emb, subset = parts
        label = probe if emb == "e_m" else f"{probe}_{emb}"
        for k, v in res.get("recalls", {}).items():
            out[metric_key(subset, label, k)] = None if v is None else float(v)
    return out


def run_hparams(spec: Any, cfg: Mapping[str, Any], changes: Sequence[str] = ()) -> dict[str, Any]:
    """HParams of one run: identity, the standard ablation axes, and the values of the keys its recipe changes."""
    flat = flatten(cfg)
    hp: dict[str, Any] = {"variant": spec.run.name, "seed": spec.seed, "recipe": Path(spec.run.recipe).as_posix(),
                          "changes": ", ".join(changes) or "none", "overrides": " ".join(spec.overrides) or "none"}
    for name, key in STANDARD_HPARAMS.items():
        hp[name] = _hp_value(flat.get(key))
    for c in changes:
        for key, v in flat.items():
            if (key == c or key.startswith(c + ".")) and key not in STANDARD_HPARAMS.values():
                hp[key] = _hp_value(v)
    for sweep, x in dict(spec.run.sweeps).items():
        hp[f"sweep.{sweep}"] = float(x)
    return hp


def build_record(spec: Any, run_dir: Path, cfg: Mapping[str, Any], ckpt: Path, seconds: float) -> dict[str, Any]:
    """The ``done.json`` content of a finished run: hparams, final metrics, paths."""
    from notellm2_pl.analysis.ablate import read_header

    header = read_header(spec.configs[-1])
    results = json.loads((run_dir / "eval" / "results.json").read_text(encoding="utf-8"))
    sal = run_dir / "saliency" / "saliency.json"
    return {
        "run_id": spec.run_id, "name": spec.run.name, "seed": spec.seed, "recipe": spec.run.recipe,
        "configs": list(spec.configs), "overrides": list(spec.overrides), "sweeps": dict(spec.run.sweeps),
        "plot": spec.run.plot, "changes": list(header.changes),
        "hparams": run_hparams(spec, cfg, header.changes), "metrics": parse_results(results),
        "checkpoint": os.fspath(ckpt), "run_dir": os.fspath(run_dir), "seconds": round(seconds, 1),
        "saliency": os.fspath(sal) if sal.exists() else None,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


# ------------------------------------------------------------------------------------------------ aggregation
def _order(values: Sequence[str], preferred: Sequence[str]) -> list[str]:
    return [v for v in preferred if v in values] + sorted(v for v in values if v not in preferred)


def aggregate(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, tuple[float, float, int]]]:
    """``{variant: {metric: (mean, std, n)}}`` over seeds (std: sample std, 0 for one seed; NaN/None skipped)."""
    by_name: dict[str, dict[str, list[float]]] = {}
    for rec in records:
        d = by_name.setdefault(rec["name"], {})
        for k, v in rec["metrics"].items():
            if v is not None and not math.isnan(v):
                d.setdefault(k, []).append(float(v))
    return {name: {k: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v))
                   for k, v in ms.items()} for name, ms in by_name.items()}


def _axes(agg: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    subsets, probes = set(), set()
    for ms in agg.values():
        for k in ms:
            _, subset, probe, _ = k.split("/")
            subsets.add(subset)
            probes.add(probe)
    return _order(sorted(subsets), SUBSET_ORDER), _order(sorted(probes), PROBE_ORDER)


def summary_rows(names: Sequence[str], records: Sequence[Mapping[str, Any]],
                 ks: Sequence[int] = TABLE_KS) -> list[dict[str, Any]]:
    """Rows of ``summary.csv``: variant x subset x probe with mean/std R@K over seeds."""
    agg = aggregate(records)
    subsets, probes = _axes(agg)
    seeds: dict[str, list[int]] = {}
    for rec in records:
        seeds.setdefault(rec["name"], []).append(int(rec["seed"]))
    rows = []
    for name in names:
        ms = agg.get(name)
        if not ms:
            continue
        for subset in subsets:
            for probe in probes:
                vals = {k: ms.get(metric_key(subset, probe, k)) for k in ks}
                if all(v is None for v in vals.values()):
                    continue
                row: dict[str, Any] = {"variant": name, "subset": subset, "probe": probe,
                                       "seeds": " ".join(map(str, sorted(seeds[name])))}
                for k, v in vals.items():
                    row[f"R@{k}"] = None if v is None else round(v[0], 6)
                    row[f"R@{k}_std"] = None if v is None else round(v[1], 6)
                row["n_seeds"] = max((v[2] for v in vals.values() if v is not None), default=0)
                rows.append(row)
    return rows


def summary_markdown(grid_name: str, names: Sequence[str], records: Sequence[Mapping[str, Any]],
                     ks: Sequence[int] = TABLE_KS) -> str:
    """The ablation table: rows variant x probe, columns subsets, cells ``R@10 / R@100`` (mean over seeds)."""
    agg = aggregate(records)
    subsets, probes = _axes(agg)
    seeds = sorted({int(r["seed"]) for r in records})
    lines = [f"# Ablation summary: grid `{grid_name}`", "",
             f"{len(records)} finished run(s); seeds {', '.join(map(str, seeds))}. Cells: "
             + " / ".join(f"R@{k}" for k in ks) + " on the test split (pool = all test notes minus the subset's "
             "queries), mean over seeds (standard deviations in summary.csv). Probes (docs/method.md#only-image-and-only-text-probes): `full` input; "
             "`only_image` (empty text fields); `only_text` (blank image); `*_e_v`: mICL's visual embedding.", "",
             "| variant | probe | " + " | ".join(subsets) + " |", "|---|---|" + "---|" * len(subsets)]
    for name in names:
        ms = agg.get(name)
        if not ms:
            continue
        for probe in probes:
            cells = []
            for subset in subsets:
                vals = [ms.get(metric_key(subset, probe, k)) for k in ks]
                cells.append(" / ".join("–" if v is None else f"{v[0]:.3f}" for v in vals))
            if all(set(c) <= {"–", " ", "/"} for c in cells):
                continue
            lines.append(f"| {name} | {probe} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_summary(out: Path, names: Sequence[str], grid_name: str,
                  records: Sequence[Mapping[str, Any]]) -> list[Path]:
    """Write ``summary.md`` and ``summary.csv``."""
    from notellm2_pl.atomic import atomic_write_text

    rows = summary_rows(names, records)
    buf = io.StringIO()
    cols = ["variant", "subset", "probe", "seeds", "n_seeds"] + [f"R@{k}{s}" for k in TABLE_KS for s in ("", "_std")]
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in cols})
    atomic_write_text(out / "summary.csv", buf.getvalue())
    atomic_write_text(out / "summary.md", summary_markdown(grid_name, names, records))
    return [out / "summary.md", out / "summary.csv"]


# ------------------------------------------------------------------------------------------------ TensorBoard
def custom_scalar_layout(subsets: Sequence[str], sweeps: Sequence[str], ks: Sequence[int] = TABLE_KS
                         ) -> dict[str, dict[str, list]]:
    """Custom-scalars layout (``SummaryWriter.add_custom_scalars`` format): Recall@K by subset across runs."""
    layout: dict[str, dict[str, list]] = {}
    for k in ks:
        layout[f"Recall@{k} by subset (every run, every probe)"] = {
            f"{subset} R@{k}": ["Multiline", [rf"recall/{subset}/.*/R@{k}$"]] for subset in subsets}
    if sweeps:
        layout["Sweeps (full input, seed mean; step = sweep value)"] = {
            f"{sweep} R@{k}": ["Multiline", [rf"sweep/{sweep}/.*/R@{k}$"]] for sweep in sweeps for k in ks}
    return layout


def write_tensorboard(tb_dir: Path, grid: Any, records: Sequence[Mapping[str, Any]]) -> Path:
    """(Re)write the ablation TensorBoard log dir from the records (module docstring)."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    if tb_dir.exists():
        shutil.rmtree(tb_dir)  # regenerated from the run markers every time: no duplicate sessions
    tb_dir.mkdir(parents=True)
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
    agg = aggregate(records)
    subsets, _ = _axes(agg)
    sweeps = _sweep_points(grid, records)
    if sweeps:
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
    writer = SummaryWriter(log_dir=os.fspath(tb_dir))
    try:
        writer.add_custom_scalars(custom_scalar_layout(subsets, list(sweeps)))
    finally:
        writer.close()
    return tb_dir


def read_run_events(run_dir: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, float]]:
    """Read one TensorBoard run back with TensorBoard's own event reader: ``(hparams, final scalar values)``."""
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


def read_layout(tb_dir: str | os.PathLike[str]) -> Any:
    """The custom-scalars layout (``layout_pb2.Layout``) stored in a log dir's root, or None."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata

    ea = EventAccumulator(os.fspath(tb_dir), size_guidance={"tensors": 0})
    ea.Reload()
    if metadata.CONFIG_SUMMARY_TAG not in ea.Tags().get("tensors", []):
        return None
    proto = ea.Tensors(metadata.CONFIG_SUMMARY_TAG)[-1].tensor_proto
    return layout_pb2.Layout.FromString(proto.string_val[0])


# ------------------------------------------------------------------------------------------------ plots
def _sweep_points(grid: Any, records: Sequence[Mapping[str, Any]]) -> dict[str, list[tuple[float, str]]]:
    names = {r["name"] for r in records}
    out: dict[str, list[tuple[float, str]]] = {}
    for run in grid.runs:
        if run.name not in names:
            continue
        for sweep, x in dict(run.sweeps).items():
            out.setdefault(sweep, []).append((float(x), run.name))
    return {k: sorted(v) for k, v in out.items() if len(v) > 1}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_variants(path: Path, names: Sequence[str], agg: Mapping[str, Mapping[str, tuple]]) -> Path | None:
    """Grouped bars: R@10 and R@100 (full input, e_m) of every variant, one bar per subset."""
    names = [n for n in names if n in agg]
    if not names:
        return None
    plt = _plt()
    subsets, _ = _axes(agg)
    fig, axes = plt.subplots(len(TABLE_KS), 1, figsize=(max(6, 1.1 * len(names) * max(1, len(subsets)) / 2.5),
                                                         3.3 * len(TABLE_KS)), squeeze=False)
    width = 0.8 / max(1, len(subsets))
    x = np.arange(len(names))
    for ax, k in zip(axes[:, 0], TABLE_KS):
        for i, subset in enumerate(subsets):
            vals = [agg[n].get(metric_key(subset, "full", k), (np.nan, 0.0, 0)) for n in names]
            ax.bar(x + (i - (len(subsets) - 1) / 2) * width, [v[0] for v in vals], width,
                   yerr=[v[1] for v in vals], label=subset, capsize=2)
        ax.set_xticks(x, names, rotation=25, ha="right", fontsize=8)
        ax.set_ylabel(f"R@{k}")
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].set_title("Recall by variant and subset (full input, mean over seeds)")
    axes[0, 0].legend(fontsize=7, ncol=len(subsets))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_probes(path: Path, names: Sequence[str], agg: Mapping[str, Mapping[str, tuple]], k: int = 10
                ) -> Path | None:
    """Bars per probe (full / only_image / only_text) for each variant, on ``all`` and ``shortquery``."""
    probes = ("full", "only_image", "only_text")
    names = [n for n in names if n in agg and metric_key("all", "only_image", k) in agg[n]]
    if not names:
        return None
    plt = _plt()
    subsets = [s for s in ("all", "shortquery") if any(metric_key(s, "full", k) in agg[n] for n in names)]
    fig, axes = plt.subplots(1, len(subsets), figsize=(max(6, 0.9 * len(names)) * len(subsets) / 1.5, 3.6),
                             squeeze=False)
    x = np.arange(len(names))
    for ax, subset in zip(axes[0], subsets):
        for i, probe in enumerate(probes):
            vals = [agg[n].get(metric_key(subset, probe, k), (np.nan, 0.0, 0)) for n in names]
            ax.bar(x + (i - 1) * 0.27, [v[0] for v in vals], 0.27, yerr=[v[1] for v in vals], label=probe, capsize=2)
        ax.set_xticks(x, names, rotation=25, ha="right", fontsize=8)
        ax.set_title(f"R@{k} on {subset}: probes", fontsize=10)
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_sweep(path: Path, sweep: str, points: Sequence[tuple[float, str]], agg: Mapping[str, Mapping[str, tuple]],
               label: str = "", log_x: bool = False) -> Path:
    """R@10 (solid) and R@100 (dashed) against the sweep value, one colour per subset (full input)."""
    plt = _plt()
    subsets, _ = _axes(agg)
    xs = [p[0] for p in points]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for i, subset in enumerate(subsets):
        for k, style in zip(TABLE_KS, ("-", "--")):
            vals = [agg[n].get(metric_key(subset, "full", k), (np.nan, 0.0, 0)) for _, n in points]
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
    """One saliency panel per variant (its first seed with a saliency result)."""
    from notellm2_pl.analysis.saliency import SaliencyResult, plot_saliency

    chosen = {}
    for rec in sorted(records, key=lambda r: r["seed"]):
        if rec.get("saliency") and rec["name"] not in chosen and Path(rec["saliency"]).exists():
            chosen[rec["name"]] = SaliencyResult.from_dict(json.loads(Path(rec["saliency"]).read_text()))
    results = [chosen[n] for n in names if n in chosen]
    if not results:
        return None
    _plt().close(plot_saliency(results, path))
    return path


def write_reports(out: Path, grid: Any, records: Sequence[Mapping[str, Any]]) -> list[Path]:
    """Summary table, plots and TensorBoard views of the finished runs; returns the written paths."""
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
    for sweep, points in _sweep_points(grid, records).items():
        meta = grid.sweeps.get(sweep, {}) or {}
        paths.append(plot_sweep(out / f"sweep_{sweep}.png", sweep, points, agg, meta.get("label", sweep),
                                bool(meta.get("log_x", False))))
    paths.append(write_tensorboard(out / "tb", grid, records))
    return paths
