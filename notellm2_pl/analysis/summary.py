"""The ablation table: run records aggregated over seeds, as ``summary.md`` and ``summary.csv``.

The table is variant x subset x probe with R@10 and R@100 (mean over seeds; standard deviations in the CSV).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from notellm2_pl.analysis import baseline_summary
from notellm2_pl.analysis.grid import Grid
from notellm2_pl.analysis.modality_check import check_records, collapsed_runs, format_modality_check
from notellm2_pl.analysis.records import metric_key
from notellm2_pl.atomic import atomic_write_text
from notellm2_pl.data.schema import ALL_PAIRS, EMBEDDING_KEYS, PROBES, SUBSET_NAMES

TABLE_KS: tuple[int, ...] = (10, 100)
SUBSET_ORDER: tuple[str, ...] = (ALL_PAIRS, *SUBSET_NAMES)
PROBE_ORDER: tuple[str, ...] = (*PROBES, *(f"{p}_{EMBEDDING_KEYS[1]}" for p in PROBES))
"""Probe labels in table order: the probes of ``e_m``, then those of mICL's visual embedding ``e_v``."""

Aggregate = dict[str, dict[str, tuple[float, float, int]]]
"""``{variant: {metric key: (mean, std, number of seeds)}}``."""


def _order(values: Sequence[str], preferred: Sequence[str]) -> list[str]:
    return [v for v in preferred if v in values] + sorted(v for v in values if v not in preferred)


def aggregate(records: Sequence[Mapping[str, Any]]) -> Aggregate:
    """``{variant: {metric: (mean, std, n)}}`` over seeds (std: sample std, 0 for one seed; NaN/None skipped)."""
    by_name: dict[str, dict[str, list[float]]] = {}
    for rec in records:
        d = by_name.setdefault(rec["name"], {})
        for k, v in rec["metrics"].items():
            if v is not None and not math.isnan(v):
                d.setdefault(k, []).append(float(v))
    return {name: {k: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v))
                   for k, v in ms.items()} for name, ms in by_name.items()}


def axes(agg: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """``(subsets, probes)`` present in an aggregate, in table order (:data:`SUBSET_ORDER`, :data:`PROBE_ORDER`)."""
    subsets, probes = set(), set()
    for ms in agg.values():
        for k in ms:
            _, subset, probe, _ = k.split("/")
            subsets.add(subset)
            probes.add(probe)
    return _order(sorted(subsets), SUBSET_ORDER), _order(sorted(probes), PROBE_ORDER)


def sweep_points(grid: Grid, records: Sequence[Mapping[str, Any]]) -> dict[str, list[tuple[float, str]]]:
    """``{sweep: [(x, variant), ...]}`` sorted by x, for sweeps with at least two finished variants."""
    names = {r["name"] for r in records}
    out: dict[str, list[tuple[float, str]]] = {}
    for run in grid.runs:
        if run.name not in names:
            continue
        for sweep, x in dict(run.sweeps).items():
            out.setdefault(sweep, []).append((float(x), run.name))
    return {k: sorted(v) for k, v in out.items() if len(v) > 1}


def summary_rows(names: Sequence[str], records: Sequence[Mapping[str, Any]],
                 ks: Sequence[int] = TABLE_KS) -> list[dict[str, Any]]:
    """Rows of ``summary.csv``: variant x subset x probe with mean/std R@K over seeds.

    Args:
        names: Variants in table order.
        records: Finished runs.
        ks: Recall cut-offs.
    """
    agg = aggregate(records)
    subsets, probes = axes(agg)
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
    """The ablation table: rows variant x probe, columns subsets, cells ``R@10 / R@100`` (mean over seeds).

    Args:
        grid_name: Title.
        names: Variants in table order.
        records: Finished runs.
        ks: Recall cut-offs.
    """
    agg = aggregate(records)
    subsets, probes = axes(agg)
    seeds = sorted({int(r["seed"]) for r in records})
    lines = [f"# Ablation summary: grid `{grid_name}`", "",
             f"{len(records)} finished run(s); seeds {', '.join(map(str, seeds))}. Cells: "
             + " / ".join(f"R@{k}" for k in ks) + " on the test split (pool = all test notes minus the subset's "
             "queries), mean over seeds (standard deviations in summary.csv). Probes "
             "(docs/method.md#only-image-and-only-text-probes): `full` input; "
             "`only_image` (empty text fields); `only_text` (blank image); `*_e_v`: mICL's visual embedding."
             + baseline_summary.intro(records), "",
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
    lines += baseline_summary.markdown_rows(records, subsets, ks)
    return "\n".join(lines + collapse_lines(names, records) + modality_lines(names, records)
                     + baseline_summary.check_lines(names, records)) + "\n"


def collapse_lines(names: Sequence[str], records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The summary's "Collapse check" section: embedding sets whose spread collapsed, per variant and seed."""
    lines = ["", "## Collapse check", "", ("Embedding sets whose notes all map to nearly the same vector "
             "(docs/method.md#collapsed-embeddings): their Recall@K is chance and the modality check ignores them."),
             ""]
    found = [f"- WARNING: {rec['name']} seed {rec['seed']}: {run} collapsed (spread "
             f"{rec['spread'][run]['spread']:.2g})" for name in names for rec in records if rec["name"] == name
             for run in collapsed_runs(rec)]
    return lines + (found or ["ok: no embedding set collapsed."])


def modality_lines(names: Sequence[str], records: Sequence[Mapping[str, Any]], k: int = 10) -> list[str]:
    """The summary's "Modality check" section: variants whose full input scores below a probe, or that none does."""
    lines = ["", "## Modality check", "", ("Full input against its only-text and only-image probes, "
             f"R@{k} mean over seeds (docs/evaluation.md, \"Modality check\")."), ""]
    flagged = False
    for name in names:
        findings = check_records(records, name, k)
        if findings:
            flagged = True
            lines += ["```", format_modality_check(findings, k, label=name), "```"]
    if not flagged:
        lines.append("ok: every variant's full input scores at least as well as its text alone and its image alone.")
    return lines


def write_summary(out: Path, names: Sequence[str], grid_name: str,
                  records: Sequence[Mapping[str, Any]]) -> list[Path]:
    """Write ``summary.md`` and ``summary.csv`` (atomically); returns their paths."""
    rows = summary_rows(names, records) + baseline_summary.csv_rows(records, TABLE_KS)
    buf = io.StringIO()
    cols = ["variant", "subset", "probe", "seeds", "n_seeds"] + [f"R@{k}{s}" for k in TABLE_KS for s in ("", "_std")]
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in cols})
    atomic_write_text(out / "summary.csv", buf.getvalue())
    atomic_write_text(out / "summary.md", summary_markdown(grid_name, names, records))
    return [out / "summary.md", out / "summary.csv"]
