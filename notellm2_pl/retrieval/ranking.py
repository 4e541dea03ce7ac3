"""The exact ranking kernel of Recall@K: where each query's target ranks in the pool (docs/method.md#recall-at-k).

:func:`rank_targets` counts, for each query, the pool notes scoring higher than its target and those tied with it.
It streams the (query tile x pool tile) score blocks of the shared kernel
:func:`~notellm2_pl.retrieval.scoring.scan_scores` through a :class:`~notellm2_pl.retrieval.scoring.RankCounter`, so
memory stays bounded and every K up to the pool size costs the same.

Tie rule (docs/method.md#ties): a pool note j is *higher* than the target t of query q if
``s(q, j) > s(q, t) + tie_tol`` and *tied* with it if ``|s(q, j) - s(q, t)| <= tie_tol`` (default ``1e-6``, about
eight float32 ulps at 1.0: the same dot product through two BLAS code paths differs by up to ~2e-7 for unit
vectors). Ties are broken at random: with ``h`` higher and ``e`` tied notes the target's rank is uniform on
``h .. h + e``, so its expected rank is ``h + e / 2`` and the probability that it lands in the top K is
``clip((K - h) / (e + 1), 0, 1)`` (:meth:`~notellm2_pl.retrieval.ranks.Ranks.hits`). Recall@K is the mean of that
probability: constant embeddings score exactly chance (``K / P``), never a perfect score, and a duplicate of the
target costs half a place. The target's own row is always excluded by index.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from numpy.typing import ArrayLike

from notellm2_pl.retrieval.ranks import Ranks
from notellm2_pl.retrieval.scoring import DEFAULT_POOL_TILE, DEFAULT_QUERY_TILE, RankCounter, scan_scores


def topk_overlap(approx_scores: np.ndarray, approx_rows: np.ndarray, exact_scores: np.ndarray,
                 exact_rows: np.ndarray, tie_tol: float = 1e-6) -> np.ndarray:
    """Per query, how many of the exact top-k an approximate top-k found, ties counted as found.

    An approximate neighbour counts if it is in the exact list, or if it is not but scores within ``tie_tol`` of the
    exact k-th score or above it (an equally good note the exact list left out by its order of ties); the count is
    capped at the exact list's length. Without ties this is ``|A ∩ E|``.

    Args:
        approx_scores: (Q, k) scores of the approximate neighbours (``-inf`` in unfilled slots).
        approx_rows: (Q, k) their rows (``-1`` in unfilled slots).
        exact_scores: (Q, k) exact top-k scores, best first (``-inf`` in unfilled slots).
        exact_rows: (Q, k) their rows (``-1`` in unfilled slots).
        tie_tol: The tie band of :func:`rank_targets`.

    Returns:
        (Q,) int64 found counts.
    """
    found = np.zeros(approx_rows.shape[0], dtype=np.int64)
    for i, (a_s, a_r, e_s, e_r) in enumerate(zip(approx_scores, approx_rows, exact_scores, exact_rows, strict=True)):
        e_set = set(e_r[e_r >= 0].tolist())
        if not e_set:
            continue
        kth = float(e_s[len(e_set) - 1])
        valid = a_r >= 0
        inside = np.fromiter((r in e_set for r in a_r[valid].tolist()), dtype=bool, count=int(valid.sum()))
        tied = a_s[valid][~inside] >= kth - tie_tol
        found[i] = min(len(e_set), int(inside.sum() + tied.sum()))
    return found


def as_float32_matrix(x: ArrayLike | torch.Tensor, name: str) -> np.ndarray:
    """Return ``x`` (numpy or torch) as a C-contiguous float32 (N, d) array, copying only when needed.

    Raises:
        ValueError: If ``x`` is not 2-D.
    """
    if hasattr(x, "detach"):  # torch.Tensor
        x = x.detach().cpu().float().numpy()
    arr = np.ascontiguousarray(x, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, d) array, got shape {arr.shape}.")
    return arr


def _check_inputs(q: np.ndarray, t_idx: np.ndarray, e: np.ndarray, query_chunk_size: int,
                  pool_chunk_size: int) -> None:
    """Validate the shapes, target rows and chunk sizes of :func:`rank_targets`."""
    n, d = e.shape
    if q.shape[1] != d:
        raise ValueError(f"query_emb has dim {q.shape[1]} but pool_emb has dim {d}; embed both with the same model.")
    if t_idx.shape[0] != q.shape[0]:
        raise ValueError(f"target_index has {t_idx.shape[0]} entries for {q.shape[0]} queries; give one per query.")
    if t_idx.size and (t_idx.min() < 0 or t_idx.max() >= n):
        raise ValueError(f"target_index must lie in [0, {n}) (rows of pool_emb).")
    if query_chunk_size <= 0 or pool_chunk_size <= 0:
        raise ValueError("query_chunk_size and pool_chunk_size must be positive.")


def _pool_positions(pool_indices: np.ndarray | Sequence[int] | None, t_idx: np.ndarray,
                    n: int) -> tuple[np.ndarray | None, int, np.ndarray]:
    """``(pool rows or None for all, pool size, position of each target in the pool or -1)``.

    The target positions let the kernel exclude each target's own column.
    """
    if pool_indices is None:
        return None, n, t_idx
    pool_idx = np.asarray(pool_indices, dtype=np.int64).reshape(-1)
    pool_size = pool_idx.shape[0]
    if pool_size and (pool_idx.min() < 0 or pool_idx.max() >= n):
        raise ValueError(f"pool_indices must lie in [0, {n}) (rows of pool_emb).")
    pos = np.full(n, -1, dtype=np.int64)  # (N,) position of every pool_emb row inside the pool, -1 = not in it
    pos[pool_idx] = np.arange(pool_size, dtype=np.int64)
    if np.count_nonzero(pos >= 0) != pool_size:
        raise ValueError("pool_indices contains duplicates; pass each pool row once (e.g. np.unique(...)).")
    return pool_idx, pool_size, pos[t_idx]


def _target_scores(tq: torch.Tensor, te: torch.Tensor, t_idx: np.ndarray, qc: int) -> np.ndarray:
    """(Q,) score of each query's target, the centre of its tie band.

    Target scores go through the same GEMM path as the pool scores (the diagonal of a query-chunk x target-chunk
    block), so that an exact duplicate of the target usually gets a bit-identical score; ``tie_tol`` covers the rest.
    """
    num_q = tq.shape[0]
    thr = np.empty(num_q, dtype=np.float32)  # (Q,)
    t_idx_t = torch.from_numpy(t_idx)
    for q0 in range(0, num_q, qc):
        q1 = min(q0 + qc, num_q)
        block = torch.mm(tq[q0:q1], te.index_select(0, t_idx_t[q0:q1]).T)  # (b, b)
        thr[q0:q1] = block.diagonal().numpy()
    return thr


def rank_targets(
    query_emb: np.ndarray,
    target_index: np.ndarray | Sequence[int],
    pool_emb: np.ndarray,
    pool_indices: np.ndarray | Sequence[int] | None = None,
    *,
    query_chunk_size: int = DEFAULT_QUERY_TILE,
    pool_chunk_size: int = DEFAULT_POOL_TILE,
    tie_tol: float = 1e-6,
    workers: int | None = None,
) -> Ranks:
    """Exact rank counts of each query's target among the pool, by chunked float32 matrix products.

    ``higher[i] = #{j in pool, j != target_index[i] : <q_i, e_j> > <q_i, e_t> + tie_tol}`` and
    ``ties[i] = #{j in pool, j != target_index[i] : |<q_i, e_j> - <q_i, e_t>| <= tie_tol}`` where ``e_t`` is
    ``pool_emb[target_index[i]]``; ties are broken at random (:class:`Ranks`). The target's own row is excluded by
    index, whether or not it is in ``pool_indices``. Only one ``(query_chunk_size, pool_chunk_size)`` score tile
    exists at a time, so memory is bounded for any pool size and the cost does not depend on K.

    Args:
        query_emb: (Q, d) query embeddings.
        target_index: (Q,) row of each query's target in ``pool_emb``.
        pool_emb: (N, d) embeddings the pool is drawn from (typically all notes).
        pool_indices: (P,) rows of ``pool_emb`` forming the pool, without duplicates; ``None`` means all rows.
            Sorted indices give the most cache-friendly gathers.
        query_chunk_size: Queries per score block.
        pool_chunk_size: Pool rows per score block.
        tie_tol: Half-width of the tie band around the target's score.
        workers: Worker threads of the kernel (``None``: torch's thread count).

    Returns:
        :class:`Ranks` (``higher + ties`` at most ``P``).

    Raises:
        ValueError: On shape mismatches, out-of-range or duplicate indices, or non-positive chunk sizes.
    """
    q = as_float32_matrix(query_emb, "query_emb")
    e = as_float32_matrix(pool_emb, "pool_emb")
    t_idx = np.asarray(target_index, dtype=np.int64).reshape(-1)
    _check_inputs(q, t_idx, e, query_chunk_size, pool_chunk_size)
    pool_idx, pool_size, t_pos = _pool_positions(pool_indices, t_idx, e.shape[0])
    num_q = q.shape[0]
    if num_q == 0 or pool_size == 0:
        return Ranks.strict(np.zeros(num_q, dtype=np.int64))
    qc = min(query_chunk_size, num_q)
    pc = min(pool_chunk_size, pool_size)
    target = _target_scores(torch.from_numpy(q), torch.from_numpy(e), t_idx, qc)
    counter = RankCounter(target, qc, pc, tie_tol)
    scan_scores(q, e, counter, pool_rows=pool_idx, exclude=t_pos, query_tile=qc, pool_tile=pc, workers=workers)
    return counter.ranks()
