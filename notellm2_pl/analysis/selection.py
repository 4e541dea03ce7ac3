"""Choices made on validation, and the test table of what was chosen (``selection.md``).

A grid that re-selects a setting names its rows ``VARIANT@CANDIDATE`` (e.g. ``notellm2@one_rate``). For each variant
the candidate whose kept checkpoints score the higher validation Recall@K (mean over seeds; a tie keeps the
candidate listed first) is chosen, and only then is the test split read: one table of the chosen candidates, and the
paper's order of the five main variants checked step by step on it (docs/ablations.md, "Selection protocol").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from notellm2_pl.analysis.records import metric_key
from notellm2_pl.data.schema import ALL_PAIRS, SUBSET_NAMES

SEPARATOR = "@"
PAPER_STEPS: tuple[tuple[str, str], ...] = (
    ("basic", "micl"), ("micl", "late_fusion_only"), ("micl", "basic_late_fusion"),
    ("late_fusion_only", "notellm2"), ("basic_late_fusion", "notellm2"))
"""The paper's order as pairs (lower, higher): basic < mICL < late fusion only, basic + late fusion < NoteLLM-2."""
ORDER_SUBSETS: tuple[str, ...] = ("shortquery", "shortgtdoc", ALL_PAIRS)


@dataclass(frozen=True)
class Choice:
    """The candidate a variant keeps.

    Attributes:
        variant: Row name before ``@``.
        candidate: Kept candidate (row name after ``@``).
        validation: ``{candidate: mean validation Recall@K of its kept checkpoints}`` in listing order.
    """

    variant: str
    candidate: str
    validation: dict[str, float]

    @property
    def row(self) -> str:
        """The grid row of the kept candidate."""
        return f"{self.variant}{SEPARATOR}{self.candidate}"


def split_name(name: str) -> tuple[str, str] | None:
    """``("notellm2", "one_rate")`` for ``"notellm2@one_rate"``; None for a row that is no candidate."""
    variant, sep, candidate = name.partition(SEPARATOR)
    return (variant, candidate) if sep and variant and candidate else None


def choose(names: Sequence[str], kept_validation: Mapping[str, Sequence[float]]) -> list[Choice]:
    """Each variant's candidate with the best mean validation score.

    Args:
        names: Grid rows in listing order (rows without ``@`` are ignored).
        kept_validation: ``{row: [kept validation Recall@K per seed]}``; rows with no finished run are skipped.

    Returns:
        One choice per variant, in order of first appearance.
    """
    scores: dict[str, dict[str, float]] = {}
    for name in names:
        parts = split_name(name)
        values = [v for v in kept_validation.get(name, []) if not np.isnan(v)]
        if parts and values:
            scores.setdefault(parts[0], {})[parts[1]] = float(np.mean(values))
    return [Choice(variant, max(cands, key=cands.__getitem__), cands)  # max keeps the first of equals
            for variant, cands in scores.items()]


def _recall(metrics: Mapping[str, tuple[float, ...]], subset: str, probe: str, k: int) -> float | None:
    v = metrics.get(metric_key(subset, probe, k))
    return None if v is None else v[0]


def order_lines(test: Mapping[str, Mapping[str, tuple[float, ...]]], k: int = 10) -> list[str]:
    """The paper's order checked step by step on the chosen candidates' test recall (full input).

    Args:
        test: ``{variant: {metric key: (mean, ...)}}`` of the chosen candidates.
        k: Recall cut-off.
    """
    lines = []
    for subset in ORDER_SUBSETS:
        steps, failed = [], []
        for low, high in PAPER_STEPS:
            a, b = (_recall(test.get(v, {}), subset, "full", k) for v in (low, high))
            if a is None or b is None:
                continue
            steps.append(f"{low} {a:.3f} {'<' if a < b else '>='} {high} {b:.3f}")
            if not a < b:
                failed.append(f"{low} < {high}")
        if steps:
            verdict = "holds" if not failed else "does not hold (" + "; ".join(failed) + ")"
            lines.append(f"- `{subset}`: {verdict}: " + ", ".join(steps) + ".")
    return lines


def selection_markdown(choices: Sequence[Choice], test: Mapping[str, Mapping[str, tuple[float, ...]]],
                       k: int = 10) -> str:
    """``selection.md``: the validation scores and choices, then the chosen candidates' test table and order check.

    Args:
        choices: From :func:`choose`.
        test: ``{row: {metric key: (mean, std, n)}}`` (:func:`notellm2_pl.analysis.summary.aggregate`).
        k: Recall cut-off of the test table (R@100 is shown next to it).
    """
    rule = (f"Each variant keeps the candidate with the higher validation R@{k} of its kept checkpoints (mean over "
            "seeds; a tie keeps the one listed first). The test split is read after the choice, for the table below.")
    lines = ["# Selection on validation", "", rule, "", f"| variant | candidate: validation R@{k} | kept |",
             "|---|---|---|"]
    for c in choices:
        cells = ", ".join(f"{cand} {v:.3f}" for cand, v in c.validation.items())
        lines.append(f"| {c.variant} | {cells} | **{c.candidate}** |")
    subsets = [ALL_PAIRS, *SUBSET_NAMES]
    lines += ["", "## Test, the kept candidates", "", f"Full input, R@{k} / R@100 on the test split.", "",
              "| variant | kept | " + " | ".join(subsets) + " |", "|---|---|" + "---|" * len(subsets)]
    chosen = {c.variant: test.get(c.row, {}) for c in choices}
    for c in choices:
        cells = [" / ".join("–" if (v := _recall(chosen[c.variant], s, "full", kk)) is None else f"{v:.3f}"
                            for kk in (k, 100)) for s in subsets]
        lines.append(f"| {c.variant} | {c.candidate} | " + " | ".join(cells) + " |")
    order = order_lines(chosen, k)
    if order:
        intro = f"basic < mICL < late fusion only, basic + late fusion < NoteLLM-2, test R@{k}, full input:"
        lines += ["", "## The paper's order on the kept candidates", "", intro, "", *order]
    return "\n".join(lines) + "\n"


def has_candidates(names: Sequence[str]) -> bool:
    """Whether any row is a ``VARIANT@CANDIDATE`` candidate."""
    return any(split_name(n) for n in names)


def kept_scores(curves: Mapping[str, Mapping[str, Sequence[float]]],
                records: Mapping[str, Mapping[str, Any]]) -> dict[str, list[float]]:
    """``{row: [kept validation Recall@K per seed]}`` from per-run validation curves.

    Args:
        curves: ``{run folder name: {"val/recall": [...], ...}}``.
        records: ``{run folder name: its record}`` (``name`` is the grid row).
    """
    out: dict[str, list[float]] = {}
    for run, curve in curves.items():
        rec = curve.get("val/recall", [])
        if rec and run in records:
            out.setdefault(str(records[run]["name"]), []).append(max(rec))
    return out
