"""Recall@K of item-to-item retrieval on embeddings: the whole exact protocol (docs/method.md#recall-at-k).

Everything here is a pure function of arrays and id lists; no model is involved. The protocol:

1. :func:`~notellm2_pl.retrieval.pairs.accept_pairs` walks the pair file in order, skips pairs with a missing note
   and accepts ``(q, d)`` only if neither note already appeared (as query or target) in an accepted pair.
2. The pool is every note minus the accepted queries (targets and unpaired notes stay in it), in row order.
3. :func:`~notellm2_pl.retrieval.ranking.rank_targets` gives each query's target its exact 0-based rank: the number
   of pool notes whose score is strictly higher than the target's (ties count in the target's favour).
4. :func:`recall_at_k` is the fraction of queries with ``rank < K``.

Subsets (docs/method.md#short-and-long-subsets): :func:`evaluate_subsets` evaluates each pair set by the same
protocol, with its own accepted queries removed from the pool.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from notellm2_pl.retrieval.pairs import Pair, accept_pairs
from notellm2_pl.retrieval.ranking import as_float32_matrix, rank_targets
from notellm2_pl.retrieval.scoring import DEFAULT_POOL_TILE, DEFAULT_QUERY_TILE

log = logging.getLogger(__name__)

DEFAULT_KS: tuple[int, ...] = (10, 20, 50, 100, 1_000, 10_000, 100_000, 1_000_000)
"""K values of docs/method.md#recall-at-k. K larger than the pool is allowed (its recall is 1.0)."""


def recall_at_k(ranks: np.ndarray | Sequence[int], ks: Iterable[int] = DEFAULT_KS) -> dict[int, float]:
    """Recall@K = mean over queries of ``[rank < K]`` (docs/method.md#recall-at-k step 5).

    Args:
        ranks: (Q,) 0-based target ranks, e.g. from :func:`rank_targets`.
        ks: Cut-offs. Any positive K is allowed; K at or above the pool size gives 1.0.

    Returns:
        ``{K: recall}`` in the order of ``ks``; every recall is ``nan`` when there are no queries.

    Raises:
        ValueError: If some K is not a positive integer.
    """
    r = np.asarray(ranks, dtype=np.int64).reshape(-1)
    out: dict[int, float] = {}
    for k in ks:
        k = int(k)
        if k <= 0:
            raise ValueError(f"K must be a positive integer, got {k}.")
        out[k] = float(np.count_nonzero(r < k) / r.size) if r.size else float("nan")
    return out


@dataclass
class EvalResult:
    """Recall@K of one pair set.

    Attributes:
        num_queries: Accepted pairs (queries) after the at-most-once rule.
        pool_size: Notes in the pool (all notes minus the accepted queries).
        recalls: ``{K: Recall@K}``.
        ranks: (num_queries,) int64 target ranks, in accepted-pair order.
        num_pairs: Pairs given, before filtering.
        num_missing: Pairs skipped because a note has no embedding.
    """

    num_queries: int
    pool_size: int
    recalls: dict[int, float]
    ranks: np.ndarray = field(repr=False)
    num_pairs: int = 0
    num_missing: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (no ranks; NaN recalls become ``None``)."""
        return {
            "num_queries": self.num_queries,
            "pool_size": self.pool_size,
            "num_pairs": self.num_pairs,
            "num_missing": self.num_missing,
            "recalls": {str(k): (None if math.isnan(v) else v) for k, v in self.recalls.items()},
        }


def _id_index(note_ids: Sequence[str], num_rows: int) -> dict[str, int]:
    """Map note id -> row, checking the length and uniqueness."""
    if len(note_ids) != num_rows:
        raise ValueError(
            f"Got {len(note_ids)} note ids for {num_rows} embedding rows; pass exactly one id per row, in row order."
        )
    id_to_row = dict(zip(note_ids, range(num_rows), strict=True))
    if len(id_to_row) != num_rows:
        seen: set[str] = set()
        dup = None
        for nid in note_ids:
            if nid in seen:
                dup = nid
                break
            seen.add(nid)
        raise ValueError(f"Duplicate note id {dup!r} in note_ids; every embedding row needs a unique id.")
    return id_to_row


def _check_normalised(emb: np.ndarray, tol: float = 1e-3, sample: int = 100_000) -> None:
    """Warn (not fail) if rows are visibly not unit-norm: scores are then inner products, not cosines."""
    rows = emb[:sample]
    if rows.size:
        dev = float(np.abs(np.linalg.norm(rows, axis=1) - 1.0).max())
        if dev > tol:
            log.warning(
                "Embeddings are not L2-normalised (max |norm - 1| = %.3g); ranking by raw inner product. "
                "Normalise them (e / ||e||) for cosine similarity as in docs/method.md#recall-at-k.",
                dev,
            )


def _evaluate_rows(
    emb: np.ndarray,
    id_to_row: Mapping[str, int],
    pairs: Sequence[Pair],
    ks: Sequence[int],
    query_chunk_size: int,
    pool_chunk_size: int,
    tie_tol: float,
) -> EvalResult:
    """Protocol steps 1-5 on pre-validated inputs."""
    pairs = list(pairs)
    num_missing = sum(1 for q, d in pairs if q not in id_to_row or d not in id_to_row)
    accepted = accept_pairs(pairs, id_to_row.keys())
    n = emb.shape[0]
    q_rows = np.fromiter((id_to_row[q] for q, _ in accepted), dtype=np.int64, count=len(accepted))
    t_rows = np.fromiter((id_to_row[d] for _, d in accepted), dtype=np.int64, count=len(accepted))
    in_pool = np.ones(n, dtype=bool)
    in_pool[q_rows] = False
    pool_indices = np.flatnonzero(in_pool)  # sorted: the pool order never depends on set iteration
    ranks = rank_targets(
        emb[q_rows],
        t_rows,
        emb,
        pool_indices,
        query_chunk_size=query_chunk_size,
        pool_chunk_size=pool_chunk_size,
        tie_tol=tie_tol,
    )
    return EvalResult(
        num_queries=len(accepted),
        pool_size=int(pool_indices.size),
        recalls=recall_at_k(ranks, ks),
        ranks=ranks,
        num_pairs=len(pairs),
        num_missing=num_missing,
    )


def evaluate_pairs(
    embeddings: np.ndarray,
    note_ids: Sequence[str],
    pairs: Sequence[Pair],
    ks: Sequence[int] = DEFAULT_KS,
    *,
    query_chunk_size: int = DEFAULT_QUERY_TILE,
    pool_chunk_size: int = DEFAULT_POOL_TILE,
    tie_tol: float = 1e-6,
) -> EvalResult:
    """Run the whole exact Recall@K protocol (docs/method.md#recall-at-k) on one pair set.

    Args:
        embeddings: (N, d) L2-normalised embeddings of every test note (float32 preferred; others are cast).
        note_ids: N unique note ids, in row order.
        pairs: ``(query_id, target_id)`` pairs in file order.
        ks: Recall cut-offs; K above the pool size gives 1.0.
        query_chunk_size: Queries per score block (see :func:`rank_targets`).
        pool_chunk_size: Pool rows per score block.
        tie_tol: Tie tolerance of :func:`rank_targets`.

    Returns:
        The :class:`EvalResult`.

    Raises:
        ValueError: If ids and rows do not match one to one.
    """
    emb = as_float32_matrix(embeddings, "embeddings")
    id_to_row = _id_index(note_ids, emb.shape[0])
    _check_normalised(emb)
    return _evaluate_rows(emb, id_to_row, pairs, ks, query_chunk_size, pool_chunk_size, tie_tol)


def evaluate_subsets(
    embeddings: np.ndarray,
    note_ids: Sequence[str],
    pair_sets: Mapping[str, Sequence[Pair]],
    ks: Sequence[int] = DEFAULT_KS,
    *,
    query_chunk_size: int = DEFAULT_QUERY_TILE,
    pool_chunk_size: int = DEFAULT_POOL_TILE,
    tie_tol: float = 1e-6,
) -> dict[str, EvalResult]:
    """Evaluate several pair sets (``all`` and the short/long subsets) over the same embeddings.

    Each set is filtered and pooled on its own (docs/method.md#short-and-long-subsets): its pool is all notes minus
    *its* accepted queries. Empty sets are reported with ``num_queries=0`` and NaN recalls.

    Args:
        embeddings: (N, d) L2-normalised embeddings of every test note.
        note_ids: N unique note ids, in row order.
        pair_sets: ``{name: pairs}``, e.g. ``{"all": ..., **derive_subsets(...)}``.
        ks: Recall cut-offs.
        query_chunk_size: Queries per score block.
        pool_chunk_size: Pool rows per score block.
        tie_tol: Tie tolerance of :func:`rank_targets`.

    Returns:
        ``{name: EvalResult}`` in the order of ``pair_sets``.
    """
    emb = as_float32_matrix(embeddings, "embeddings")
    id_to_row = _id_index(note_ids, emb.shape[0])
    _check_normalised(emb)
    results: dict[str, EvalResult] = {}
    for name, pairs in pair_sets.items():
        res = _evaluate_rows(emb, id_to_row, pairs, ks, query_chunk_size, pool_chunk_size, tie_tol)
        if res.num_missing:
            log.warning("%s: skipped %d of %d pairs with a note missing from the embeddings.",
                        name, res.num_missing, res.num_pairs)
        results[name] = res
    return results
