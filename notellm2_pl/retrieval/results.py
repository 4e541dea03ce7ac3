"""Recall@K results for people and tools: a console table, JSON/CSV files (atomic) and TensorBoard scalars."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from notellm2_pl.atomic import atomic_write_bytes, atomic_write_text
from notellm2_pl.retrieval.recall import EvalResult

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter


def _k_label(k: int) -> str:
    """``1000 -> "1k"``, ``1000000 -> "1M"``, else the number."""
    if k >= 1_000_000 and k % 1_000_000 == 0:
        return f"{k // 1_000_000}M"
    if k >= 1_000 and k % 1_000 == 0:
        return f"{k // 1_000}k"
    return str(k)


def _all_ks(results: Mapping[str, EvalResult]) -> list[int]:
    ks: list[int] = []
    for res in results.values():
        for k in res.recalls:
            if k not in ks:
                ks.append(k)
    return ks


def format_table(results: Mapping[str, EvalResult], digits: int = 4) -> str:
    """Render results as a fixed-width console table: one row per subset, one column per K.

    Args:
        results: ``{subset: EvalResult}``, e.g. from :func:`evaluate_subsets`.
        digits: Decimals shown per recall.

    Returns:
        The table as a string (no trailing newline).
    """
    ks = _all_ks(results)
    header = ["subset", "queries", "pool"] + [f"R@{_k_label(k)}" for k in ks]
    rows = [header]
    for name, res in results.items():
        cells = [name, str(res.num_queries), str(res.pool_size)]
        for k in ks:
            v = res.recalls.get(k, float("nan"))
            cells.append("-" if math.isnan(v) else f"{v:.{digits}f}")
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for j, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_results(
    results: Mapping[str, EvalResult],
    path_json: str | os.PathLike[str] | None = None,
    path_csv: str | os.PathLike[str] | None = None,
) -> None:
    """Write results as JSON and/or CSV, each atomically (:mod:`notellm2_pl.atomic`).

    JSON: ``{subset: {num_queries, pool_size, num_pairs, num_missing, recalls: {"K": value}}}`` with NaN as ``null``.
    CSV: header ``subset,num_queries,pool_size,R@K...``, one row per subset, NaN as an empty cell.

    Args:
        results: ``{subset: EvalResult}``.
        path_json: Destination of the JSON file, or ``None`` to skip it.
        path_csv: Destination of the CSV file, or ``None`` to skip it.
    """
    if path_json is not None:
        payload = {name: res.to_dict() for name, res in results.items()}
        atomic_write_text(path_json, json.dumps(payload, indent=2, allow_nan=False) + "\n")
    if path_csv is not None:
        ks = _all_ks(results)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["subset", "num_queries", "pool_size"] + [f"R@{k}" for k in ks])
        for name, res in results.items():
            vals = [res.recalls.get(k, float("nan")) for k in ks]
            w.writerow([name, res.num_queries, res.pool_size] + ["" if math.isnan(v) else repr(v) for v in vals])
        atomic_write_bytes(path_csv, buf.getvalue().encode("utf-8"))  # bytes: the csv writer chose the line ends


def log_to_tensorboard(
    results: Mapping[str, EvalResult],
    writer_or_log_dir: SummaryWriter | str | os.PathLike[str],
    prefix: str = "",
    step: int = 0,
) -> None:
    """Log every recall as a scalar ``{prefix}/recall/{subset}/R@{K}`` (``recall/{subset}/R@{K}`` without prefix).

    Empty subsets (NaN recalls) are skipped.

    Args:
        results: ``{subset: EvalResult}``.
        writer_or_log_dir: A ``torch.utils.tensorboard.SummaryWriter`` (left open) or a log directory (a writer is
            created there, flushed and closed).
        prefix: Tag prefix, e.g. ``"test/e_m"``.
        step: Global step of the scalars.
    """
    own = isinstance(writer_or_log_dir, (str, os.PathLike))
    if own:
        from torch.utils.tensorboard import SummaryWriter  # tensorboard is imported only when a log dir is given

        writer = SummaryWriter(log_dir=os.fspath(writer_or_log_dir))
    else:
        writer = writer_or_log_dir
    try:
        for name, res in results.items():
            for k, v in res.recalls.items():
                if math.isnan(v):
                    continue
                tag = "/".join(p for p in (prefix.strip("/"), "recall", name, f"R@{k}") if p)
                writer.add_scalar(tag, v, global_step=step)
        writer.flush()
    finally:
        if own:
            writer.close()
