"""Recall@K of item-to-item retrieval on embeddings: the whole exact protocol (docs/method.md#recall-at-k).

Everything here is a pure function of arrays and id lists; no model is involved. The protocol:

1. :func:`~notellm2_pl.retrieval.pairs.accept_pairs` walks the pair file in order, skips pairs with a missing note
   and accepts ``(q, d)`` only if neither note already appeared (as query or target) in an accepted pair.
2. The pool is every note minus the accepted queries (targets and unpaired notes stay in it), in row order.
3. :func:`~notellm2_pl.retrieval.ranking.rank_targets` counts, for each query, the pool notes scoring higher than its
   target and those tied with it (docs/method.md#ties).
4. :func:`recall_at_k` is the mean over queries of the probability that the target lands in the top K when ties are
   broken at random (``[rank < K]`` where there are no ties).

:func:`evaluate_protocol` runs steps 1-4 with any ranking function (a sparse text baseline ranks its own way);
:func:`evaluate_subsets` is it on dense embeddings.

Subsets (docs/method.md#short-and-long-subsets): :func:`evaluate_subsets` evaluates each pair set by the same
protocol, with its own accepted queries removed from the pool.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from notellm2_pl.retrieval.pairs import Pair, accept_pairs
from notellm2_pl.retrieval.ranking import as_float32_matrix, rank_targets
from notellm2_pl.retrieval.ranks import Ranks
from notellm2_pl.retrieval.scoring import DEFAULT_POOL_TILE, DEFAULT_QUERY_TILE

log = logging.getLogger(__name__)

DEFAULT_KS: tuple[int, ...] = (10, 20, 50, 100, 1_000, 10_000, 100_000, 1_000_000)
"""K values of docs/method.md#recall-at-k. K larger than the pool is allowed (its recall is 1.0)."""


RankFn = Callable[[np.ndarray, np.ndarray, np.ndarray], Ranks]
"""``rank_fn(query_rows, target_rows, pool_rows) -> Ranks``: rows index the note ids; each target row is in the pool
and must not count against itself."""


def recall_at_k(ranks: Ranks | np.ndarray | Sequence[int], ks: Iterable[int] = DEFAULT_KS) -> dict[int, float]:
    """Recall@K = mean over queries of the probability that the target is in the top K (docs/method.md#recall-at-k).

    Args:
        ranks: :class:`~notellm2_pl.retrieval.ranks.Ranks` (ties broken at random), or (Q,) 0-based ranks
            without ties.
        ks: Cut-offs. Any positive K is allowed; K at or above the pool size gives 1.0.

    Returns:
        ``{K: recall}`` in the order of ``ks``; every recall is ``nan`` when there are no queries.

    Raises:
        ValueError: If some K is not a positive integer.
    """
    r = ranks if isinstance(ranks, Ranks) else Ranks.strict(ranks)
    out: dict[int, float] = {}
    for k in ks:
        hits = r.hits(int(k))
        out[int(k)] = float(hits.mean()) if len(r) else float("nan")
    return out


@dataclass
class EvalResult:
    """Recall@K of one pair set.

    Attributes:
        num_queries: Accepted pairs (queries) after the at-most-once rule.
        pool_size: Notes in the pool (all notes minus the accepted queries).
        recalls: ``{K: Recall@K}``.
        ranks: The targets' :class:`~notellm2_pl.retrieval.ranks.Ranks`, in accepted-pair order.
        num_pairs: Pairs given, before filtering.
        num_missing: Pairs skipped because a note has no embedding.
    """

    num_queries: int
    pool_size: int
    recalls: dict[int, float]
    ranks: Ranks = field(repr=False)
    num_pairs: int = 0
    num_missing: int = 0

    def hits(self, k: int) -> np.ndarray:
        """(num_queries,) probability of each query's target being in the top ``k`` (ties broken at random)."""
        return self.ranks.hits(k)

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
    id_to_row: Mapping[str, int],
    pairs: Sequence[Pair],
    ks: Sequence[int],
    rank_fn: RankFn,
) -> EvalResult:
    """Protocol steps 1-4 on pre-validated inputs."""
    pairs = list(pairs)
    num_missing = sum(1 for q, d in pairs if q not in id_to_row or d not in id_to_row)
    accepted = accept_pairs(pairs, id_to_row.keys())
    n = len(id_to_row)
    q_rows = np.fromiter((id_to_row[q] for q, _ in accepted), dtype=np.int64, count=len(accepted))
    t_rows = np.fromiter((id_to_row[d] for _, d in accepted), dtype=np.int64, count=len(accepted))
    in_pool = np.ones(n, dtype=bool)
    in_pool[q_rows] = False
    pool_indices = np.flatnonzero(in_pool)  # sorted: the pool order never depends on set iteration
    ranks = rank_fn(q_rows, t_rows, pool_indices)
    return EvalResult(
        num_queries=len(accepted),
        pool_size=int(pool_indices.size),
        recalls=recall_at_k(ranks, ks),
        ranks=ranks,
        num_pairs=len(pairs),
        num_missing=num_missing,
    )


def _dense_rank_fn(emb: np.ndarray, query_chunk_size: int, pool_chunk_size: int, tie_tol: float) -> RankFn:
    """The :data:`RankFn` of dense embeddings: :func:`rank_targets` over the rows of ``emb``."""

    def rank_fn(q_rows: np.ndarray, t_rows: np.ndarray, pool_rows: np.ndarray) -> Ranks:
        return rank_targets(emb[q_rows], t_rows, emb, pool_rows, query_chunk_size=query_chunk_size,
                            pool_chunk_size=pool_chunk_size, tie_tol=tie_tol)

    return rank_fn


def evaluate_protocol(
    note_ids: Sequence[str],
    pair_sets: Mapping[str, Sequence[Pair]],
    ks: Sequence[int],
    rank_fn: RankFn,
) -> dict[str, EvalResult]:
    """Run the Recall@K protocol on every pair set with any ranking function (e.g. a sparse text baseline).

    Args:
        note_ids: N unique note ids; rows passed to ``rank_fn`` index this list.
        pair_sets: ``{name: pairs}`` in file order.
        ks: Recall cut-offs.
        rank_fn: ``rank_fn(query_rows, target_rows, pool_rows) -> Ranks`` (:data:`RankFn`).

    Returns:
        ``{name: EvalResult}`` in the order of ``pair_sets``.

    Raises:
        ValueError: If the note ids are not unique.
    """
    id_to_row = _id_index(note_ids, len(note_ids))
    results: dict[str, EvalResult] = {}
    for name, pairs in pair_sets.items():
        res = _evaluate_rows(id_to_row, pairs, ks, rank_fn)
        if res.num_missing:
            log.warning("%s: skipped %d of %d pairs with a note missing from the embeddings.",
                        name, res.num_missing, res.num_pairs)
        results[name] = res
    return results


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
    return _evaluate_rows(id_to_row, pairs, ks, _dense_rank_fn(emb, query_chunk_size, pool_chunk_size, tie_tol))


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
    if len(note_ids) != emb.shape[0]:
        _id_index(note_ids, emb.shape[0])  # raises the length error
    _check_normalised(emb)
    return evaluate_protocol(note_ids, pair_sets, ks, _dense_rank_fn(emb, query_chunk_size, pool_chunk_size, tie_tol))
