"""Benchmark exact Recall@K: our chunked rank counting vs the naive score-and-full-argsort-per-query method.

Default problem: 10,000 accepted queries and a pool of 1,000,000 notes (1,010,000 notes in all, the queries' rows
leave the pool), d=64, L2-normalised float32. Targets are noisy copies of their queries so ranks spread over the
whole range. The naive method is timed on ``--naive-queries`` queries and extrapolated linearly to all queries
(its cost per query is independent of the others); its ranks are checked against ours on those queries.

Run (by hand, not in tests)::

    /work/venv/bin/python benchmarks/bench_recall.py

Peak RSS is the process high-water mark (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) read after each phase, so
the figure after "ours" covers data generation + our evaluation, and the naive phase comes after it.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

import numpy as np

from notellm2_pl.retrieval.recall import DEFAULT_KS, evaluate_pairs
from notellm2_pl.retrieval.results import format_table
from notellm2_pl.retrieval.scoring import DEFAULT_POOL_TILE, DEFAULT_QUERY_TILE


def peak_rss_gb() -> float:
    """Process peak resident set size in GB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def make_data(num_pool: int, num_queries: int, dim: int, seed: int) -> tuple[np.ndarray, list[str], list]:
    """Random unit embeddings; query i is row i, its target row num_queries + i is a noisy copy of it."""
    rng = np.random.default_rng(seed)
    n = num_pool + num_queries
    emb = rng.standard_normal((n, dim), dtype=np.float32)  # (N, d)
    emb[num_queries : 2 * num_queries] = emb[:num_queries] + 2.5 * emb[num_queries : 2 * num_queries]
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    note_ids = [f"n{i:07d}" for i in range(n)]
    pairs = [(note_ids[i], note_ids[num_queries + i]) for i in range(num_queries)]
    return emb, note_ids, pairs


def naive_ranks(emb: np.ndarray, q_rows: np.ndarray, t_rows: np.ndarray, pool: np.ndarray) -> tuple[np.ndarray, float]:
    """Score every pool note per query, fully argsort, find the target. Returns (ranks, seconds)."""
    t0 = time.perf_counter()
    pool_emb = emb[pool]  # (P, d)
    t_pos = np.searchsorted(pool, t_rows)  # pool is sorted
    ranks = np.empty(len(q_rows), dtype=np.int64)
    for i, (qr, tp) in enumerate(zip(q_rows, t_pos)):
        scores = pool_emb @ emb[qr]  # (P,)
        order = np.argsort(-scores)  # full sort, as a top-K-by-sorting evaluator does
        ranks[i] = np.flatnonzero(order == tp)[0]
    return ranks, time.perf_counter() - t0


def main() -> None:
    """Parse arguments, run both methods, print the figures."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", type=int, default=1_000_000, help="pool size (notes other than the queries)")
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--naive-queries", type=int, default=100, help="queries the naive method is timed on")
    ap.add_argument("--query-chunk", type=int, default=DEFAULT_QUERY_TILE)
    ap.add_argument("--pool-chunk", type=int, default=DEFAULT_POOL_TILE)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch  # imported up front (as in any real run) so that its ~2 s import is not timed as "ours"

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), numpy {np.__version__}; load average {os.getloadavg()[0]:.1f}")
    t0 = time.perf_counter()
    emb, note_ids, pairs = make_data(args.pool, args.queries, args.dim, args.seed)
    print(f"data: {len(note_ids):,} notes x d={args.dim}, {len(pairs):,} pairs "
          f"({time.perf_counter() - t0:.1f} s); peak RSS {peak_rss_gb():.2f} GB")

    t0 = time.perf_counter()
    res = evaluate_pairs(emb, note_ids, pairs, DEFAULT_KS, query_chunk_size=args.query_chunk,
                         pool_chunk_size=args.pool_chunk)
    t_ours = time.perf_counter() - t0
    rss_ours = peak_rss_gb()
    print(f"ours (evaluate_pairs, exact chunked, all K): {t_ours:.1f} s for {res.num_queries:,} queries, "
          f"pool {res.pool_size:,}; peak RSS so far {rss_ours:.2f} GB")
    print(format_table({"all": res}))

    n_naive = min(args.naive_queries, args.queries)
    q_rows = np.arange(n_naive)
    t_rows = args.queries + q_rows
    pool = np.arange(args.queries, len(note_ids))
    nranks, t_naive_sub = naive_ranks(emb, q_rows, t_rows, pool)
    t_naive = t_naive_sub * args.queries / n_naive
    ours_sub = res.ranks.higher[:n_naive]  # notes above the tie band; ties are counted apart
    agree = int(np.count_nonzero(nranks == ours_sub))
    # Differences must come from near-ties: the naive float32 sort breaks them arbitrarily, we count them apart.
    explained = 0
    for i in np.flatnonzero(nranks != ours_sub):
        s = emb[pool].astype(np.float64) @ emb[q_rows[i]].astype(np.float64)
        st = float(emb[t_rows[i]].astype(np.float64) @ emb[q_rows[i]].astype(np.float64))
        near = int(np.count_nonzero(np.abs(s - st) < 2e-6)) - 1  # other notes within float32 noise + tie_tol
        explained += int(abs(int(nranks[i]) - int(ours_sub[i])) <= near)
    print(f"naive (score all + full argsort per query): {t_naive_sub:.1f} s for {n_naive} queries, "
          f"extrapolated linearly to {args.queries:,} queries: {t_naive:.0f} s; peak RSS {peak_rss_gb():.2f} GB")
    print(f"naive ranks equal ours on {agree}/{n_naive} queries; the other {n_naive - agree} differ by at most the "
          f"number of pool notes within 2e-6 of the target score (near-ties) on {explained}/{n_naive - agree}")
    print(f"speed-up: {t_naive / t_ours:.1f}x; load average {os.getloadavg()[0]:.1f} (other processes share the cores)")


if __name__ == "__main__":
    main()
