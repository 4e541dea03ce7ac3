"""The one exact scoring kernel of the retrieval paths: tiled float32 GEMM fused with a per-tile reduction.

:func:`scan_scores` streams every ``(query tile x pool tile)`` block of inner products through a reducer while the
block is still in cache, so the full ``(Q, P)`` score matrix never exists. Two reducers use it, each one compiled
pass over the tile (:mod:`~notellm2_pl.retrieval.tile_kernels`):

* :class:`RankCounter`: for each query, the number of pool notes scoring above its target and the number tied with
  it (the exact Recall@K ranks of :func:`~notellm2_pl.retrieval.ranking.rank_targets`).
* :class:`TopKMerger`: each query's running top-k, merged tile by tile (the neighbour table of
  :mod:`~notellm2_pl.retrieval.neighbour_table`). A row where no score reaches the query's current k-th costs one
  vector count; entries that do are insertion-sorted into the k slots.

Parallelism: the queries are split across worker threads (one per core by default), each running one-thread GEMMs
and its own reductions, so reductions overlap other cores' GEMMs instead of leaving them idle. OpenMP's thread count
is per thread, so every worker sets its own to one (two-thread GEMMs on two workers oversubscribe the cores).

Tile shapes: the score tile must stay in the core's L2 cache between the GEMM that writes it and the reduction that
reads it, next to the GEMM's operands; a tile too small pays the per-tile Python overhead. 256 x 768 (768 KB of
scores) was fastest for both paths at d = 64 on the 2-core reference machine (2 MB of L2 per core): about 1.22x the
FLOP floor, against about 1.45x with 1024 x 1024 tiles (4 MB). ``benchmarks/bench_neighbours.py`` measures
the GEMM rate over tile shapes and both paths against their FLOP floor on any machine
(docs/evaluation.md#speed-of-the-exact-paths).

Order rule of the top-k: score descending, then pool position (or label) ascending, as a stable descending argsort
would. Each query can exclude one pool position (its own row); an excluded entry scores ``-inf`` in the tile and is
never counted or returned.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from typing import Protocol

import numpy as np
import torch

from notellm2_pl.retrieval.ranks import Ranks

DEFAULT_QUERY_TILE = 256
"""Queries per score tile (with :data:`DEFAULT_POOL_TILE`: the fast tile shape at d = 64, see the module docstring)."""

DEFAULT_POOL_TILE = 768
"""Pool rows per score tile."""


class TileReducer(Protocol):
    """Consumes one score tile: ``scores[i, j] = <query q0 + i, pool entry p0 + j>`` (writable, reused after)."""

    def __call__(self, q0: int, p0: int, scores: np.ndarray) -> None:
        """Fold the ``(b, m)`` tile of queries ``q0:q0+b`` and pool positions ``p0:p0+m`` into the state."""


def scan_scores(queries: np.ndarray, pool_emb: np.ndarray, reduce: TileReducer, *,
                pool_rows: np.ndarray | None = None, exclude: np.ndarray | None = None,
                query_tile: int = DEFAULT_QUERY_TILE, pool_tile: int = DEFAULT_POOL_TILE,
                workers: int | None = None) -> None:
    """Stream every ``(query tile x pool tile)`` float32 score block through ``reduce``.

    The queries are split into ``workers`` contiguous ranges, one thread each. Every worker runs its own one-thread
    GEMMs into its own reused score buffer and reduces the block right after, so one core's reduction overlaps the
    other cores' GEMMs (numpy and torch release the GIL). Within a worker the pool is traversed once (outer loop,
    each pool tile gathered once) and its queries are the inner loop. Reducers must accept concurrent calls on
    disjoint query rows (both reducers here do). While a multi-worker scan runs, torch's intra-op thread count is 1
    (process-wide), and restored after.

    Args:
        queries: (Q, d) C-contiguous float32 query embeddings.
        pool_emb: (N, d) C-contiguous float32 embeddings the pool is drawn from.
        reduce: Called with ``(q0, p0, scores)`` for each block; ``p0`` is a pool *position* (index into
            ``pool_rows`` when given, else a row of ``pool_emb``).
        pool_rows: (P,) rows of ``pool_emb`` forming the pool, in pool order; ``None`` means every row.
        exclude: (Q,) pool position each query must not score (``-1``: none); it reads ``-inf`` in the tile.
        query_tile: Queries per block.
        pool_tile: Pool entries per block.
        workers: Worker threads (``None``: torch's intra-op thread count); capped by the number of query tiles.

    Raises:
        ValueError: On non-positive tile sizes or worker count.
    """
    if query_tile <= 0 or pool_tile <= 0:
        raise ValueError("query_tile and pool_tile must be positive.")
    workers = torch.get_num_threads() if workers is None else workers
    if workers <= 0:
        raise ValueError(f"workers must be positive, got {workers}.")
    num_q = queries.shape[0]
    pool_size = pool_emb.shape[0] if pool_rows is None else pool_rows.shape[0]
    if num_q == 0 or pool_size == 0:
        return
    qt, pt = min(query_tile, num_q), min(pool_tile, pool_size)
    scan = _RangeScan(queries, pool_emb, reduce, pool_rows, exclude, qt, pt)
    workers = min(workers, -(-num_q // qt))
    if workers == 1:
        scan(0, num_q)
        return
    bounds = np.linspace(0, num_q, workers + 1).round().astype(int)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="scan_scores") as pool:
            for job in [pool.submit(scan, int(lo), int(hi), 1) for lo, hi in pairwise(bounds)]:
                job.result()
    finally:
        torch.set_num_threads(threads)


class _RangeScan:
    """The tile loop of :func:`scan_scores` over one contiguous range of queries (one worker's share)."""

    def __init__(self, queries: np.ndarray, pool_emb: np.ndarray, reduce: TileReducer, pool_rows: np.ndarray | None,
                 exclude: np.ndarray | None, qt: int, pt: int) -> None:
        self.tq = torch.from_numpy(queries)  # (Q, d), shares memory
        self.te = torch.from_numpy(pool_emb)  # (N, d), shares memory
        self.rows = None if pool_rows is None else torch.from_numpy(pool_rows)
        self.pool_size = pool_emb.shape[0] if pool_rows is None else pool_rows.shape[0]
        self.reduce, self.exclude, self.qt, self.pt = reduce, exclude, qt, pt

    def __call__(self, q_lo: int, q_hi: int, threads: int | None = None) -> None:
        if threads is not None:
            torch.set_num_threads(threads)  # OpenMP's thread count is per thread: a new worker must set its own
        tiles = [(q0, min(q0 + self.qt, q_hi)) for q0 in range(q_lo, q_hi, self.qt)]
        spans = [self._excluded_span(q0, q1) for q0, q1 in tiles]
        buf = torch.empty(min(self.qt, q_hi - q_lo) * self.pt, dtype=torch.float32)
        views: dict[tuple[int, int], tuple[torch.Tensor, np.ndarray]] = {}  # (b, m) -> contiguous tile, numpy view
        for p0 in range(0, self.pool_size, self.pt):
            p1 = min(p0 + self.pt, self.pool_size)
            chunk = self.te[p0:p1] if self.rows is None else self.te.index_select(0, self.rows[p0:p1])  # (m, d)
            chunk_t = chunk.T  # (d, m) view: the GEMM reads the row-major chunk as transposed, no copy
            for (q0, q1), span in zip(tiles, spans, strict=True):
                shape = (q1 - q0, p1 - p0)
                if shape not in views:
                    block = buf[: shape[0] * shape[1]].view(shape)
                    views[shape] = block, block.numpy()  # same memory
                block, scores = views[shape]
                torch.mm(self.tq[q0:q1], chunk_t, out=block)
                if span is not None and span[0] < p1 and span[1] >= p0:
                    mask_excluded(scores, self.exclude[q0:q1] - p0)
                self.reduce(q0, p0, scores)

    def _excluded_span(self, q0: int, q1: int) -> tuple[int, int] | None:
        """Lowest and highest pool position excluded by queries ``q0:q1`` (``None``: none), to skip other tiles."""
        if self.exclude is None:
            return None
        ex = self.exclude[q0:q1]
        ex = ex[ex >= 0]
        return (int(ex.min()), int(ex.max())) if ex.size else None


def mask_excluded(scores: np.ndarray, local: np.ndarray) -> None:
    """Set ``scores[i, local[i]] = -inf`` where ``local[i]`` lies inside the tile."""
    rows = np.flatnonzero((local >= 0) & (local < scores.shape[1]))
    if rows.size:
        scores[rows, local[rows]] = -np.inf


class RankCounter:
    """Counts, per query, the pool entries scoring above its target and those tied with it (one pass per tile).

    A pool entry scoring more than ``tie_tol`` above the target's score counts as *higher*; one within ``tie_tol``
    of it (either side) as a *tie* (docs/method.md#ties). Concurrent calls on disjoint query rows are safe.

    Args:
        target_scores: (Q,) float32 score of each query's target.
        query_tile: Largest tile height (kept for a stable signature).
        pool_tile: Largest tile width (at most :data:`~notellm2_pl.retrieval.tile_kernels.MAX_TILE_WIDTH`).
        tie_tol: Half-width of the tie band around each target score.

    Raises:
        ValueError: If ``pool_tile`` is too wide to count exactly, or ``tie_tol`` is negative.

    Attributes:
        higher: (Q,) int64 running counts of pool entries above the tie band.
        ties: (Q,) int64 running counts of pool entries inside it.
    """

    def __init__(self, target_scores: np.ndarray, query_tile: int, pool_tile: int, tie_tol: float = 1e-6) -> None:
        from notellm2_pl.retrieval.tile_kernels import MAX_TILE_WIDTH, count_rank

        if pool_tile > MAX_TILE_WIDTH:
            raise ValueError(f"pool_tile must be at most {MAX_TILE_WIDTH} to count exactly, got {pool_tile}.")
        if not tie_tol >= 0:
            raise ValueError(f"tie_tol must be >= 0, got {tie_tol}.")
        self._count = count_rank
        target = np.asarray(target_scores, dtype=np.float32)
        self.lo = np.ascontiguousarray(target - np.float32(tie_tol))
        self.hi = np.ascontiguousarray(target + np.float32(tie_tol))
        self.higher = np.zeros(target.shape[0], dtype=np.int64)
        self.ties = np.zeros(target.shape[0], dtype=np.int64)

    def __call__(self, q0: int, p0: int, scores: np.ndarray) -> None:
        q1 = q0 + scores.shape[0]
        self._count(scores, self.lo[q0:q1], self.hi[q0:q1], self.higher[q0:q1], self.ties[q0:q1])

    def ranks(self) -> Ranks:
        """The counts so far as :class:`~notellm2_pl.retrieval.ranks.Ranks`."""
        return Ranks(self.higher, self.ties)


class TopKMerger:
    """Running top-k of each query over the pool, by (score descending, pool position ascending).

    Each tile is folded in by one compiled pass (:func:`~notellm2_pl.retrieval.tile_kernels.topk_update`): rows
    where no score reaches the current k-th are skipped after a vector count, entries that enter are
    insertion-sorted. Concurrent calls on disjoint query rows are safe.

    Args:
        num_queries: Q.
        k: Neighbours kept per query.
        query_tile: Largest tile height (kept for a stable signature).
        pool_tile: Largest tile width.
        labels: (P,) int64 label of each pool position, stored and ordered instead of the position (e.g. catalogue
            rows when the pool is a subset); must be non-negative and unique.

    Attributes:
        scores: (Q, k) float32 best scores, best first; ``-inf`` in slots not (yet) filled.
        positions: (Q, k) int64 pool positions (or labels) of those entries; ``-1`` in unfilled slots. Callers may
            preset both arrays (e.g. with an earlier top-k) before scanning more pool entries.
    """

    def __init__(self, num_queries: int, k: int, query_tile: int, pool_tile: int,
                 labels: np.ndarray | None = None) -> None:
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}.")
        from notellm2_pl.retrieval.tile_kernels import topk_update

        self._update = topk_update
        self.k = k
        self.labels = np.empty(0, dtype=np.int64) if labels is None else np.ascontiguousarray(labels, dtype=np.int64)
        self.scores = np.full((num_queries, k), -np.inf, dtype=np.float32)
        self.positions = np.full((num_queries, k), -1, dtype=np.int64)

    def __call__(self, q0: int, p0: int, scores: np.ndarray) -> None:
        b = scores.shape[0]
        self._update(scores, p0, self.labels, self.scores[q0:q0 + b], self.positions[q0:q0 + b])


def exact_topk(queries: np.ndarray, pool_emb: np.ndarray, k: int, *, pool_rows: np.ndarray | None = None,
               exclude: np.ndarray | None = None, query_tile: int = DEFAULT_QUERY_TILE,
               pool_tile: int = DEFAULT_POOL_TILE, start: tuple[np.ndarray, np.ndarray] | None = None,
               workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of each query over the pool by :func:`scan_scores` + :class:`TopKMerger`.

    Args:
        queries: (Q, d) C-contiguous float32 query embeddings.
        pool_emb: (N, d) C-contiguous float32 embeddings.
        k: Neighbours per query.
        pool_rows: (P,) rows of ``pool_emb`` forming the pool (``None``: all). Results are *rows of pool_emb*.
        exclude: (Q,) pool position each query must not return (its own row), ``-1`` for none.
        query_tile: Queries per score tile.
        pool_tile: Pool entries per score tile.
        start: ``(scores, rows)`` (Q, k) top-k to merge into (an earlier result over other pool rows).
        workers: Worker threads of :func:`scan_scores` (``None``: torch's thread count).

    Returns:
        ``(scores, rows)``: (Q, k) float32 and int64, best first (score descending, row ascending); slots beyond the
        pool are ``-inf`` / ``-1``.
    """
    merger = TopKMerger(queries.shape[0], k, query_tile, pool_tile, labels=pool_rows)
    if start is not None:
        merger.scores[...], merger.positions[...] = start
    scan_scores(queries, pool_emb, merger, pool_rows=pool_rows, exclude=exclude, query_tile=query_tile,
                pool_tile=pool_tile, workers=workers)
    return merger.scores, merger.positions
