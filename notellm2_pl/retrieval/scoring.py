"""The one exact scoring kernel of the retrieval paths: tiled float32 GEMM fused with a per-tile reduction.

:func:`scan_scores` streams every ``(query tile x pool tile)`` block of inner products through a reducer while the
block is still in cache, so the full ``(Q, P)`` score matrix never exists. Two reducers use it:

* :class:`RankCounter`: for each query, the number of pool notes scoring above a per-query threshold (the exact
  Recall@K rank of :func:`~notellm2_pl.retrieval.ranking.rank_targets`).
* :class:`TopKMerger`: each query's running top-k, merged tile by tile (the neighbour table of
  :mod:`~notellm2_pl.retrieval.neighbour_table`). A pool entry enters a tile's candidates only if it beats the
  query's current k-th score, so after the first pool tile a tile costs one compare pass plus a handful of candidates.

Parallelism: the queries are split across worker threads (one per core by default), each running one-thread GEMMs
and its own reductions, so reductions overlap other cores' GEMMs instead of leaving them idle. Reductions start with a
row maximum of the tile (one read pass, far cheaper than the GEMM): rows where nothing can change are skipped.

Tile shapes: small tiles keep the GEMM output in cache for the reduction pass, large ones amortise the GEMM's packing
and the per-tile Python overhead; 1024 x 1024 was fastest for both paths at d = 64 on the 2-core reference machine.
``benchmarks/bench_neighbours.py`` measures the GEMM rate over tile shapes and both paths against their FLOP floor
on any machine (docs/evaluation.md#speed-of-the-exact-paths).

Order rule of the top-k: score descending, then pool position ascending (as a stable descending argsort would). Each
query can exclude one pool position (its own row); an excluded entry scores ``-inf`` in the tile and is never counted
or returned.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from typing import Protocol

import numpy as np
import torch

DEFAULT_QUERY_TILE = 1024
"""Queries per score tile (with :data:`DEFAULT_POOL_TILE`: the fast tile shape at d = 64, see the module docstring)."""

DEFAULT_POOL_TILE = 1024
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
            for job in [pool.submit(scan, int(lo), int(hi)) for lo, hi in pairwise(bounds)]:
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

    def __call__(self, q_lo: int, q_hi: int) -> None:
        qt, pt = self.qt, self.pt
        buf = torch.empty(min(qt, q_hi - q_lo) * pt, dtype=torch.float32)
        for p0 in range(0, self.pool_size, pt):
            p1 = min(p0 + pt, self.pool_size)
            m = p1 - p0
            chunk = self.te[p0:p1] if self.rows is None else self.te.index_select(0, self.rows[p0:p1])  # (m, d)
            chunk_t = chunk.T  # (d, m) view: the GEMM reads the row-major chunk as transposed, no copy
            for q0 in range(q_lo, q_hi, qt):
                b = min(q0 + qt, q_hi) - q0
                block = buf[: b * m].view(b, m)  # contiguous (b, m)
                torch.mm(self.tq[q0:q0 + b], chunk_t, out=block)
                scores = block.numpy()  # (b, m), same memory
                if self.exclude is not None:
                    _mask_excluded(scores, self.exclude[q0:q0 + b] - p0)
                self.reduce(q0, p0, scores)


_LOCAL = threading.local()


def _scratch(nbytes: int) -> np.ndarray:
    """This thread's reusable byte buffer, at least ``nbytes`` long (grown on demand; never shared by threads)."""
    buf = getattr(_LOCAL, "buf", None)
    if buf is None or buf.size < nbytes:
        buf = _LOCAL.buf = np.empty(nbytes, dtype=np.uint8)
    return buf[:nbytes]


def _row_max(scores: np.ndarray) -> np.ndarray:
    """(b,) maximum of each row of a (b, m) tile: one vectorised read pass, no mask written."""
    return torch.amax(torch.from_numpy(scores), dim=1).numpy()


def _mask_excluded(scores: np.ndarray, local: np.ndarray) -> None:
    """Set ``scores[i, local[i]] = -inf`` where ``local[i]`` lies inside the tile."""
    rows = np.flatnonzero((local >= 0) & (local < scores.shape[1]))
    if rows.size:
        scores[rows, local[rows]] = -np.inf


class RankCounter:
    """Counts, per query, the pool entries scoring strictly above its threshold.

    A tile's row maximum (one cheap read pass) skips the rows where nothing beats the threshold; the others get a
    compare pass and a byte count. Concurrent calls on disjoint query rows are safe.

    Args:
        thresholds: (Q,) float32 score a pool entry must exceed to count.
        query_tile: Largest tile height (kept for a stable signature; scratch is per thread).
        pool_tile: Largest tile width.

    Attributes:
        counts: (Q,) int64 running counts.
    """

    def __init__(self, thresholds: np.ndarray, query_tile: int, pool_tile: int) -> None:
        self.thr = np.ascontiguousarray(thresholds, dtype=np.float32)
        self.counts = np.zeros(self.thr.shape[0], dtype=np.int64)

    def __call__(self, q0: int, p0: int, scores: np.ndarray) -> None:
        b, m = scores.shape
        thr = self.thr[q0:q0 + b]
        live = np.flatnonzero(_row_max(scores) > thr)  # rows with at least one entry above
        if live.size == 0:
            return
        if live.size * 2 < b:
            scores, thr = scores[live], thr[live]  # (L, m) copy of the few live rows
        higher = _scratch(scores.shape[0] * m).reshape(scores.shape[0], m)  # 0/1 bytes
        np.greater(scores, thr[:, None], out=higher.view(bool))
        if scores.shape[0] == b:
            self.counts[q0:q0 + b] += row_counts(higher)
        else:
            self.counts[q0 + live] += row_counts(higher)


_GROUP_WORDS = 128
"""Words of 8 one-byte lanes summed at once by :func:`row_counts`: each lane stays <= 128, so no carries."""


def row_counts(mask: np.ndarray) -> np.ndarray:
    """(b,) number of ones in each row of a C-contiguous (b, m) 0/1 ``uint8`` array.

    When ``m`` is a multiple of 1024 the bytes are summed as 8-lane 64-bit words (8x fewer additions than a byte
    reduction with a widening cast); otherwise by a plain byte reduction.
    """
    b, m = mask.shape
    if m % (8 * _GROUP_WORDS) or not mask.flags.c_contiguous:
        return np.add.reduce(mask, axis=1, dtype=np.int64)
    words = mask.view(np.uint64).reshape(b, m // (8 * _GROUP_WORDS), _GROUP_WORDS)  # (b, g, 128) 8 lanes each
    lanes = np.add.reduce(words, axis=2)  # (b, g) uint64, every byte lane <= 128
    return np.add.reduce(lanes.view(np.uint8).reshape(b, -1), axis=1, dtype=np.int64)


class TopKMerger:
    """Running top-k of each query over the pool, by (score descending, pool position ascending).

    Args:
        num_queries: Q.
        k: Neighbours kept per query.
        query_tile: Largest tile height (kept for a stable signature; scratch is per thread).
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
        self.k = k
        self.labels = labels
        self.scores = np.full((num_queries, k), -np.inf, dtype=np.float32)
        self.positions = np.full((num_queries, k), -1, dtype=np.int64)

    def __call__(self, q0: int, p0: int, scores: np.ndarray) -> None:
        b, m = scores.shape
        kth = self.scores[q0:q0 + b, -1]  # (b,) the score a new entry must beat (ties: lower position wins)
        if m > self.k and np.isneginf(kth).any():
            # Some query has free slots (first tile): keep only this tile's own top-k (ties at its k-th included).
            part = np.partition(scores, m - self.k, axis=1)[:, m - self.k]  # (b,) k-th best of the tile
            kth = np.maximum(kth, np.nextafter(part, np.float32(-np.inf)))  # >= part, and > kth
            live = np.arange(b)
        else:
            live = np.flatnonzero(_row_max(scores) > kth)  # rows where some entry beats the k-th
            if live.size == 0:
                return
            if live.size < b:
                scores, kth = scores[live], kth[live]  # (L, m) copy of the live rows
        mask = _scratch(scores.shape[0] * m).reshape(scores.shape[0], m).view(bool)  # (L, m)
        np.greater(scores, kth[:, None], out=mask)
        flat = np.flatnonzero(mask.reshape(-1))  # 1-D bool scan: far faster than a 2-D np.nonzero
        if flat.size:
            local = flat // m
            pos = p0 + (flat - local * m)
            self.merge(q0, live[local], scores.reshape(-1)[flat], pos if self.labels is None else self.labels[pos])

    def merge(self, q0: int, rows: np.ndarray, cand_scores: np.ndarray, cand_pos: np.ndarray) -> None:
        """Merge candidates ``(rows[i] + q0, cand_scores[i], cand_pos[i])`` into the running top-k.

        ``rows`` must be sorted ascending (as ``np.nonzero`` gives them); any positions are allowed.
        """
        counts = np.bincount(rows)  # (max row + 1,)
        hit = np.flatnonzero(counts)  # tile rows with candidates
        width = self.k + int(counts.max())
        slot = np.searchsorted(hit, rows)  # (C,) row of each candidate inside the padded block
        start = np.cumsum(counts) - counts  # first candidate of each tile row
        col = self.k + np.arange(rows.size) - start[rows]  # (C,) column of each candidate
        s = np.full((hit.size, width), -np.inf, dtype=np.float32)  # (R, k + c_max)
        p = np.full((hit.size, width), -1, dtype=np.int64)
        s[:, : self.k] = self.scores[q0 + hit]
        p[:, : self.k] = self.positions[q0 + hit]
        s[slot, col] = cand_scores
        p[slot, col] = cand_pos
        # Unfilled slots (-inf, -1) must sort last: give them the largest position.
        tie_key = np.where(p < 0, np.iinfo(np.int64).max, p)
        order = np.lexsort((tie_key, -s), axis=1)[:, : self.k]  # (R, k) by score desc, then position asc
        self.scores[q0 + hit] = np.take_along_axis(s, order, axis=1)
        self.positions[q0 + hit] = np.take_along_axis(p, order, axis=1)


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
