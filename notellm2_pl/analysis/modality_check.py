"""Modality check: does the whole note retrieve worse than one of its parts alone?

A healthy multimodal model scores at least as well on the full note as on its text alone (image blanked out) or its
image alone (text blanked out). When the full input scores below a probe beyond noise, one modality drowns the
other: below ``only_text`` the image drowns the text (weak images mixed in too strongly); below ``only_image`` the
text drowns the image (the image neglect that mICL and late fusion exist to fix). The probes are defined in
docs/method.md#only-image-and-only-text-probes.

Every subset where a probe scores above the full input is reported with its margin in standard errors of the
difference; a margin of at least :data:`MIN_MARGIN` (2) is a WARNING, a smaller one a note "within noise".
With per-query ranks (``evaluate``) the standard error is the paired one, ``std(hit_full - hit_probe) / sqrt(n)``
over the same queries; from summaries alone (the ``ablate`` table) it is that of two independent binomials,
``sqrt(p_full (1 - p_full) / n + p_probe (1 - p_probe) / n)``, which overstates the noise of a paired comparison.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from notellm2_pl.data.schema import EMBEDDING_KEYS, PROBES
from notellm2_pl.retrieval.recall import EvalResult

MIN_MARGIN = 2.0
"""Standard errors by which a probe must lead the full input for a WARNING (below: a note, within noise)."""

PROBE_ADVICE = {
    "only_text": ("the image drowns the text. Try: basic and mICL-alone variants on your data "
                  "(python -m notellm2_pl ablate --grid quick --data.root YOUR_DATA), a lower weight on the e_v loss "
                  "(--model.loss_weights), or late fusion off (--model.encoder.late_fusion false); keep what wins on "
                  "validation"),
    "only_image": ("the text drowns the image (image neglect). Try: mICL with late fusion (--model.encoder.micl true "
                   "--model.encoder.late_fusion true), more visual tokens, or a higher weight on the e_v loss "
                   "(--model.loss_weights); keep what wins on validation"),
}


@dataclass(frozen=True)
class ModalityFinding:
    """One subset where the full note scores below a probe.

    Attributes:
        subset: Pair set (``all``, ``shortquery``, ...).
        probe: ``only_text`` or ``only_image``.
        full: Recall@K of the full input.
        probe_recall: Recall@K of the probe.
        num_queries: Queries behind both figures.
        noise: Standard error of the difference.
    """

    subset: str
    probe: str
    full: float
    probe_recall: float
    num_queries: int
    noise: float

    @property
    def significant(self) -> bool:
        """Whether the probe leads by at least :data:`MIN_MARGIN` standard errors."""
        return self.margin >= MIN_MARGIN

    @property
    def margin(self) -> float:
        """How far the probe is above the full input, in standard errors."""
        return (self.probe_recall - self.full) / self.noise if self.noise > 0 else math.inf


def difference_noise(p_a: float, p_b: float, n: int) -> float:
    """Standard error of ``p_a - p_b`` for two recall estimates over ``n`` queries each."""
    if n <= 0:
        return math.inf
    return math.sqrt(max(p_a * (1 - p_a), 0.0) / n + max(p_b * (1 - p_b), 0.0) / n)


def paired_noise(hits_a: np.ndarray, hits_b: np.ndarray) -> float:
    """Standard error of ``mean(hits_a) - mean(hits_b)`` over the same queries (one hit probability per query)."""
    d = np.asarray(hits_a, dtype=np.float64) - np.asarray(hits_b, dtype=np.float64)
    if d.size < 2:
        return math.inf
    se = float(d.std(ddof=1) / math.sqrt(d.size))
    return se if se > 0 else 1.0 / d.size  # every difference equal: count one query's worth, never zero


def modality_check(recalls: Mapping[str, Mapping[str, float]], num_queries: Mapping[str, int],
                   noise: Mapping[tuple[str, str], float] | None = None) -> list[ModalityFinding]:
    """Subsets where a probe scores above the full input (any margin; :attr:`ModalityFinding.significant` tells).

    Args:
        recalls: ``{probe: {subset: Recall@K}}`` with probe ``full`` and any of ``only_text`` / ``only_image``.
        num_queries: ``{subset: queries}``.
        noise: ``{(probe, subset): standard error}`` where known (paired); else the independent-binomial one.

    Returns:
        The findings, in subset order of ``recalls["full"]``; empty for a healthy model.
    """
    findings = []
    for subset, full in recalls.get("full", {}).items():
        n = int(num_queries.get(subset, 0))
        for probe in ("only_text", "only_image"):
            value = recalls.get(probe, {}).get(subset)
            if value is None or full is None or math.isnan(value) or math.isnan(full) or value <= full:
                continue
            se = (noise or {}).get((probe, subset), difference_noise(full, value, n))
            findings.append(ModalityFinding(subset, probe, full, value, n, se))
    return findings


def check_results(results: Mapping[str, Mapping[str, EvalResult]], k: int = 10,
                  key: str = EMBEDDING_KEYS[0], collapsed: Collection[str] = ()) -> list[ModalityFinding]:
    """:func:`modality_check` over evaluation results named ``{probe}/{key}`` (what ``evaluate`` produces), with
    the paired standard error from the per-query hits.

    Args:
        results: ``{run name: {pair set: EvalResult}}``; runs of other keys or without Recall@``k`` are ignored.
        k: The K of Recall@K to compare.
        key: Embedding key whose probes are compared (``e_m``: the note embedding).
        collapsed: Run names whose embeddings collapsed: no conclusion is drawn from them (nothing at all when the
            full input collapsed).
    """
    if f"{PROBES[0]}/{key}" in collapsed:
        return []
    runs = {name.partition("/")[0]: subsets for name, subsets in results.items()
            if name.partition("/")[2] == key and name.partition("/")[0] in PROBES and name not in collapsed}
    recalls = {p: {s: r.recalls[k] for s, r in subsets.items() if k in r.recalls} for p, subsets in runs.items()}
    counts = {s: r.num_queries for s, r in runs.get("full", {}).items()}
    noise = {}
    for probe in ("only_text", "only_image"):
        for subset, res in runs.get(probe, {}).items():
            full = runs.get("full", {}).get(subset)
            if full is not None and len(full.ranks) == len(res.ranks):
                noise[(probe, subset)] = paired_noise(full.hits(k), res.hits(k))
    return modality_check(recalls, counts, noise)


def collapsed_runs(record: Mapping[str, Any]) -> list[str]:
    """Run names (``{probe}/{key}``) whose embeddings collapsed in one finished-run record (its ``spread``)."""
    return [name for name, sp in (record.get("spread") or {}).items() if sp.get("collapsed")]


def check_records(records: Sequence[Mapping[str, Any]], name: str, k: int = 10) -> list[ModalityFinding]:
    """:func:`modality_check` of one ablation variant, on its Recall@``k`` averaged over seeds.

    A probe whose ``e_m`` collapsed in some seed is left out (all probes, if the full input collapsed).

    Args:
        records: Finished-run records (``done.json``: ``metrics`` keyed ``recall/{subset}/{probe}/R@{K}``, and
            ``num_queries``; runs recorded before ``num_queries`` existed read it from ``eval/results.json``).
        name: The variant.
        k: The K of Recall@K to compare.
    """
    sums: dict[str, dict[str, list[float]]] = {}
    counts: dict[str, int] = {}
    mine = [r for r in records if r["name"] == name]
    dead = {run.partition("/")[0] for rec in mine for run in collapsed_runs(rec)
            if run.partition("/")[2] == EMBEDDING_KEYS[0]}
    if PROBES[0] in dead:
        return []
    for rec in mine:
        for key, value in rec["metrics"].items():
            _, subset, probe, cut = key.split("/")
            if cut == f"R@{k}" and probe in PROBES and probe not in dead and value is not None:
                sums.setdefault(probe, {}).setdefault(subset, []).append(float(value))
        counts.update(rec.get("num_queries") or _counts_from_results(rec))
    recalls = {p: {s: sum(v) / len(v) for s, v in subsets.items()} for p, subsets in sums.items()}
    return modality_check(recalls, counts)


def _counts_from_results(rec: Mapping[str, Any]) -> dict[str, int]:
    path = Path(rec.get("run_dir", "")) / "eval" / "results.json"
    if not path.is_file():
        return {}
    prefix = f"{PROBES[0]}/{EMBEDDING_KEYS[0]}/"
    results = json.loads(path.read_text(encoding="utf-8"))
    return {n[len(prefix):]: int(r["num_queries"]) for n, r in results.items() if n.startswith(prefix)}


def format_modality_check(findings: list[ModalityFinding], k: int, label: str = "") -> str:
    """The ``modality check`` lines a command prints: the numbers and what to try, or that all is well."""
    head = f"modality check{f' ({label})' if label else ''}, Recall@{k}:"
    if not findings:
        return f"{head} ok: the full note scores at least as well as its text alone and its image alone."
    strong = [f for f in findings if f.significant]
    lines = [f"{head} " + ("WARNING" if strong else f"ok within noise (no probe leads by {MIN_MARGIN:g} standard "
                                                     "errors)")]
    for f in findings:
        where = (f"  {f.subset}: full {f.full:.3f} < {f.probe} {f.probe_recall:.3f} "
                 f"({f.margin:.1f} standard errors, n={f.num_queries})")
        lines.append(f"{where}: {PROBE_ADVICE[f.probe]}." if f.significant else f"{where}: within noise.")
    return "\n".join(lines)
