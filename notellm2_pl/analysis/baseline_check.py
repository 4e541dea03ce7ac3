"""Baseline check: does the trained model beat the best zero-training baseline beyond noise?

The baselines (TF-IDF, BM25, untrained backbones, sentence-transformers folders: docs/evaluation.md#baselines) are
ranked on the same pool, pairs and tie rule as the model, so each query's hit probability is comparable one to one.
The check compares the model's ``full/e_m`` Recall@K with the best baseline's on every pair set; the verdict is
taken on ``all``: **ok** when the model leads the best baseline there by at least :data:`MIN_MARGIN` (2) standard
errors of the difference, else a WARNING with the numbers per pair set and what to try.

With per-query hits (``evaluate``) the standard error is the paired one,
:func:`~notellm2_pl.analysis.modality_check.paired_noise` over the same queries (the protocol is deterministic given
the note ids and the pairs, so the model and every baseline rank the same queries in the same order); from summaries
alone (the ``ablate`` table) it is that of two independent binomials,
:func:`~notellm2_pl.analysis.modality_check.difference_noise`, which overstates the noise of a paired comparison (so
the summary says "ok" less readily). Everything here is a pure function.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from notellm2_pl.analysis.modality_check import MIN_MARGIN, difference_noise, paired_noise
from notellm2_pl.data.schema import ALL_PAIRS, EMBEDDING_KEYS, PROBES
from notellm2_pl.retrieval.recall import EvalResult

MODEL_RUN = f"{PROBES[0]}/{EMBEDDING_KEYS[0]}"
"""The run the check compares: the full note's multimodal embedding."""

ADVICE = ("Try: the MiniLM recipe (python -m notellm2_pl fit --config recipes/minilm_effnet.yaml), a longer schedule "
          "(--trainer.max_steps, --trainer.max_epochs), hard negatives (--model.hard_negatives.start_step N), and "
          "check truncation (the truncation line of evaluate: text cut by --data.max_tokens / --data.content_chars is "
          "text the baselines still read); keep what wins on validation")
"""What to try when the model does not beat the baselines."""


@dataclass(frozen=True)
class Comparison:
    """The model against the best baseline of one pair set.

    Attributes:
        subset: Pair set (``all``, ``shortquery``, ...).
        model: The model's Recall@K.
        baseline: Name of the best baseline on this pair set.
        baseline_recall: Its Recall@K.
        num_queries: Queries behind both figures.
        noise: Standard error of the difference.
    """

    subset: str
    model: float
    baseline: str
    baseline_recall: float
    num_queries: int
    noise: float

    @property
    def margin(self) -> float:
        """How far the model is above the baseline, in standard errors (negative: below)."""
        diff = self.model - self.baseline_recall
        if self.noise > 0:
            return diff / self.noise
        return math.copysign(math.inf, diff) if diff else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly fields plus the margin."""
        return {"subset": self.subset, "model": self.model, "baseline": self.baseline,
                "baseline_recall": self.baseline_recall, "num_queries": self.num_queries, "noise": self.noise,
                "margin": self.margin if math.isfinite(self.margin) else None}


@dataclass(frozen=True)
class BaselineCheck:
    """The model against the best baseline on every pair set, with the verdict on ``all``.

    Attributes:
        k: The K of Recall@K.
        comparisons: One per pair set where both have a recall, in the model's pair-set order.
    """

    k: int
    comparisons: tuple[Comparison, ...]

    @property
    def verdict(self) -> Comparison | None:
        """The comparison on ``all`` (None when there is none: no queries or no baseline)."""
        return next((c for c in self.comparisons if c.subset == ALL_PAIRS), None)

    @property
    def ok(self) -> bool:
        """Whether the model leads the best baseline on ``all`` by at least :data:`MIN_MARGIN` standard errors."""
        v = self.verdict
        return v is not None and v.margin >= MIN_MARGIN

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly: ``k``, ``ok``, the rule and the comparisons."""
        return {"k": self.k, "ok": self.ok, "min_margin": MIN_MARGIN, "model": MODEL_RUN,
                "comparisons": [c.to_dict() for c in self.comparisons]}


def _usable(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def baseline_check(model: Mapping[str, float], baselines: Mapping[str, Mapping[str, float]],
                   num_queries: Mapping[str, int], noise: Mapping[tuple[str, str], float] | None = None,
                   k: int = 10) -> BaselineCheck:
    """Compare the model's Recall@K with the best baseline's on every pair set.

    Args:
        model: ``{pair set: Recall@K}`` of the model.
        baselines: ``{baseline: {pair set: Recall@K}}``.
        num_queries: ``{pair set: queries}``.
        noise: ``{(baseline, pair set): standard error of the difference}`` where known (paired); else the
            independent-binomial one.
        k: The K (reported only).

    Returns:
        The :class:`BaselineCheck`, ``all`` first and the other pair sets by name; the best baseline of a pair set is
        the one with the highest recall there (the first one listed on a tie).
    """
    comparisons = []
    for subset, value in sorted(model.items(), key=lambda item: (item[0] != ALL_PAIRS, item[0])):  # all first
        scored = [(name, r[subset]) for name, r in baselines.items() if _usable(r.get(subset))]
        if not _usable(value) or not scored:
            continue
        best, best_recall = max(scored, key=lambda item: item[1])  # max keeps the first of equal values
        n = int(num_queries.get(subset, 0))
        se = (noise or {}).get((best, subset), difference_noise(value, best_recall, n))
        comparisons.append(Comparison(subset, float(value), best, float(best_recall), n, float(se)))
    return BaselineCheck(k, tuple(comparisons))


def _recall(res: EvalResult, k: int) -> float:
    """Recall@``k`` from the per-query hits (any K, whether or not it was reported); NaN without queries."""
    return float(res.hits(k).mean()) if res.num_queries else float("nan")


def check_results(model: Mapping[str, EvalResult], baselines: Mapping[str, Mapping[str, EvalResult]],
                  k: int = 10) -> BaselineCheck:
    """:func:`baseline_check` on evaluation results, with the paired standard error from the per-query hits.

    Args:
        model: ``{pair set: EvalResult}`` of the model's ``full/e_m``.
        baselines: ``{baseline: {pair set: EvalResult}}``.
        k: The K of Recall@K.

    Returns:
        The check. A baseline whose query count differs from the model's on a pair set (e.g. embeddings that miss
        some notes) gets the independent-binomial standard error there.
    """
    recalls = {s: _recall(r, k) for s, r in model.items()}
    base = {name: {s: _recall(r, k) for s, r in subsets.items()} for name, subsets in baselines.items()}
    noise = {}
    for name, subsets in baselines.items():
        for subset, res in subsets.items():
            mine = model.get(subset)
            if mine is not None and res.num_queries == mine.num_queries and mine.num_queries >= 2:
                noise[(name, subset)] = paired_noise(mine.hits(k), res.hits(k))
    return baseline_check(recalls, base, {s: r.num_queries for s, r in model.items()}, noise, k)


def format_baseline_check(check: BaselineCheck, label: str = "") -> str:
    """The ``baseline check`` lines a command prints: the verdict, the numbers and what to try."""
    head = f"baseline check{f' ({label})' if label else ''}, Recall@{check.k}:"
    v = check.verdict
    if v is None:
        return f"{head} skipped (no queries on {ALL_PAIRS} pairs, or no baseline)."
    lines = []
    for c in check.comparisons:
        rel = ">" if c.model > c.baseline_recall else ("=" if c.model == c.baseline_recall else "<")
        lines.append(f"  {c.subset}: model {c.model:.3f} {rel} {c.baseline} {c.baseline_recall:.3f} "
                     f"({c.margin:+.1f} standard errors, n={c.num_queries})")
    if check.ok:
        behind = [line for line, c in zip(lines, check.comparisons, strict=True) if c.model < c.baseline_recall]
        return "\n".join([f"{head} ok: the model ({MODEL_RUN} {v.model:.3f}) beats the best baseline ({v.baseline} "
                          f"{v.baseline_recall:.3f}) on {ALL_PAIRS} pairs by {v.margin:.1f} standard errors "
                          f"(n={v.num_queries})" + (", though not on every pair set:" if behind else ".")] + behind)
    warning = (f"{head} WARNING: the model does not beat the best baseline on {ALL_PAIRS} pairs by {MIN_MARGIN:g} "
               "standard errors")
    return "\n".join([warning, *lines, f"  {ADVICE}."])

