"""The baselines in the ablation summary: their rows, once per grid, and the baseline check of every variant.

Every run's ``evaluate`` computed the baselines on the grid's test pool (from the cache after the first run:
:mod:`notellm2_pl.analysis.baselines`), and its record keeps them (``baselines``: recalls and query counts per pair
set). :func:`grid_baselines` collects them once per grid (text baselines are the same in every run; an untrained
backbone is named by its backbone, so different backbones give different rows), :func:`markdown_rows` and
:func:`csv_rows` render them in ``summary.md`` / ``summary.csv`` with the probe label ``baseline``, and
:func:`check_lines` is the summary's "Baseline check" section: each variant's full-input Recall@10 on ``all`` (mean
over seeds) against the best baseline, with the standard error of two independent binomials
(:mod:`notellm2_pl.analysis.baseline_check`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from notellm2_pl.analysis.baseline_check import ADVICE, MIN_MARGIN, BaselineCheck, baseline_check
from notellm2_pl.data.schema import ALL_PAIRS, PROBES

PROBE_LABEL = "baseline"
"""The probe column of a baseline row."""

GridBaselines = dict[str, dict[str, dict[int, tuple[float, float, int]]]]
"""``{baseline: {pair set: {K: (mean, std, runs)}}}``."""


def grid_baselines(records: Sequence[Mapping[str, Any]]) -> tuple[GridBaselines, dict[str, int]]:
    """The baselines the grid's runs recorded, each averaged over the runs that carry it (identical values in the
    usual case: one dataset, one cache).

    Args:
        records: Finished-run records (``baselines`` as :func:`~notellm2_pl.analysis.baselines.baseline_recalls`
            writes it; records without are skipped).

    Returns:
        ``(recalls, {pair set: queries})``.
    """
    values: dict[str, dict[str, dict[int, list[float]]]] = {}
    counts: dict[str, int] = {}
    for rec in records:
        for name, entry in (rec.get("baselines") or {}).items():
            for subset, recalls in entry.get("recalls", {}).items():
                for k, v in recalls.items():
                    if v is not None and not math.isnan(float(v)):
                        values.setdefault(name, {}).setdefault(subset, {}).setdefault(int(k), []).append(float(v))
            counts.update(entry.get("num_queries", {}))
    out = {name: {s: {k: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v))
                      for k, v in ks.items()} for s, ks in subsets.items()} for name, subsets in values.items()}
    return out, counts


def intro(records: Sequence[Mapping[str, Any]]) -> str:
    """The summary intro's sentence on the ``baseline`` rows ("" when no run recorded baselines)."""
    if not grid_baselines(records)[0]:
        return ""
    return (f" `{PROBE_LABEL}` rows: zero-training baselines on the same pool and pairs, once per grid "
            "(docs/evaluation.md#baselines).")


def markdown_rows(records: Sequence[Mapping[str, Any]], subsets: Sequence[str], ks: Sequence[int]) -> list[str]:
    """``| baseline | baseline | R@K / R@K | ...`` rows of the summary table, one per baseline, columns ``subsets``."""
    rows = []
    for name, per_subset in grid_baselines(records)[0].items():
        cells = [" / ".join("–" if (v := per_subset.get(s, {}).get(k)) is None else f"{v[0]:.3f}" for k in ks)
                 for s in subsets]
        rows.append(f"| {name} | {PROBE_LABEL} | " + " | ".join(cells) + " |")
    return rows


def csv_rows(records: Sequence[Mapping[str, Any]], ks: Sequence[int]) -> list[dict[str, Any]]:
    """Rows of ``summary.csv`` for the baselines (probe ``baseline``, no seeds; std over runs, 0 when identical)."""
    rows = []
    for name, per_subset in grid_baselines(records)[0].items():
        for subset, by_k in per_subset.items():
            row: dict[str, Any] = {"variant": name, "subset": subset, "probe": PROBE_LABEL, "seeds": "", "n_seeds": 0}
            for k in ks:
                v = by_k.get(k)
                row[f"R@{k}"] = None if v is None else round(v[0], 6)
                row[f"R@{k}_std"] = None if v is None else round(v[1], 6)
            rows.append(row)
    return rows


def variant_check(records: Sequence[Mapping[str, Any]], name: str, k: int = 10) -> BaselineCheck:
    """The baseline check of one variant: its full-input Recall@``k`` (mean over seeds) against the grid's
    baselines, independent-binomial noise."""
    baselines, counts = grid_baselines(records)
    model: dict[str, list[float]] = {}
    for rec in (r for r in records if r["name"] == name):
        for key, value in rec["metrics"].items():
            _, subset, probe, cut = key.split("/")
            if probe == PROBES[0] and cut == f"R@{k}" and value is not None:
                model.setdefault(subset, []).append(float(value))
        counts.update(rec.get("num_queries") or {})
    recalls = {s: float(np.mean(v)) for s, v in model.items()}
    base = {b: {s: by_k[k][0] for s, by_k in subsets.items() if k in by_k} for b, subsets in baselines.items()}
    return baseline_check(recalls, base, counts, None, k)


def check_lines(names: Sequence[str], records: Sequence[Mapping[str, Any]], k: int = 10) -> list[str]:
    """The summary's "Baseline check" section (empty when no run recorded baselines)."""
    if not grid_baselines(records)[0]:
        return []
    intro = (f"Each variant's full input against the best zero-training baseline on {ALL_PAIRS} pairs, R@{k} mean over "
             f"seeds; ok when it leads by {MIN_MARGIN:g} standard errors of two independent binomials "
             "(docs/evaluation.md#baselines).")
    lines = ["", "## Baseline check", "", intro, "",
             "| variant | model | best baseline | baseline | margin | verdict |", "|---|---|---|---|---|---|"]
    warned = False
    for name in names:
        v = variant_check(records, name, k).verdict
        if v is None:
            continue
        ok = v.margin >= MIN_MARGIN
        warned |= not ok
        lines.append(f"| {name} | {v.model:.3f} | {v.baseline} | {v.baseline_recall:.3f} | {v.margin:+.1f} SE | "
                     f"{'ok' if ok else 'WARNING'} |")
    return lines + (["", f"WARNING rows: {ADVICE}."] if warned else [])

