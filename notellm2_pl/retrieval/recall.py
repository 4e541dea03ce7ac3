"""Exact Recall@K evaluation for item-to-item retrieval (docs/method.md#recall-at-k and #short-and-long-subsets).

Everything here is a pure function of arrays and id lists; no model is involved. The protocol:

1. :func:`accept_pairs` walks the pair file in order, skips pairs with a missing note and accepts ``(q, d)``
   only if neither note already appeared (as query or target) in an accepted pair.
2. The pool is every note minus the accepted queries (targets and unpaired notes stay in it), in row order.
3. :func:`rank_targets` gives each query's target its exact 0-based rank: the number of pool notes whose
   score is strictly higher than the target's (ties count in the target's favour, see below). It streams
   over query and pool chunks, so memory stays bounded and every K up to the pool size costs the same.
4. :func:`recall_at_k` is the fraction of queries with ``rank < K``.

Tie rule: a pool note j counts against the target t of query q only if ``s(q, j) > s(q, t) + tie_tol``.
Notes that score the same as the target (within ``tie_tol``, default ``1e-6``) rank *behind* it, so a
duplicate of the target never costs a hit. The tolerance absorbs float32 rounding: the same dot product
computed by two BLAS code paths can differ by a few ulps (measured up to ~2e-7 for unit vectors), which would
otherwise make ties depend on chunking. Target scores are computed through the same GEMM path as pool scores, so
exact duplicates usually tie bit for bit even with ``tie_tol=0``; the target's own row is always excluded by index.
Cost of the tolerance: on a 1M-note pool at d=64, about 13 % of queries have one pool note scoring within 1e-6
above their target, which then ranks one place better than under a strict float32 sort.

Subsets (docs/method.md#short-and-long-subsets): each subset pair list is evaluated by the same protocol, with its own accepted
queries removed from the pool. When the dataset ships no subset files, :func:`derive_subsets` builds them
from raw text lengths.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import tempfile
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_KS: tuple[int, ...] = (10, 20, 50, 100, 1_000, 10_000, 100_000, 1_000_000)
"""K values of docs/method.md#recall-at-k. K larger than the pool is allowed (its recall is 1.0)."""

SUBSET_NAMES: tuple[str, ...] = ("shortquery", "shortgtdoc", "longquery", "longgtdoc")
"""Subset names, matching the official ``note_pairs_test_{name}.csv`` files."""

DEFAULT_SHORT_MAX_CHARS: int = 30
"""Default short-text threshold: raw title + content of at most this many characters is "short"."""

DEFAULT_LONG_MIN_CHARS: int = 100
"""Default long-text threshold: raw title + content of at least this many characters is "long".

100 equals the default truncation budget (``title_chars=20`` + ``content_chars=80``): a long note is one whose text
does not fit the model's input.
"""

Pair = tuple[str, str]


# ----------------------------------------------------------------------------------------------------------------
# Pair filtering
# ----------------------------------------------------------------------------------------------------------------


def accept_pairs(pairs: Iterable[Pair], known_ids: Collection[str]) -> list[Pair]:
    """Apply the greedy at-most-once pair rule of docs/method.md#recall-at-k (steps 1-2).

    Pairs are walked in order. A pair is skipped if either note is not in ``known_ids``, if it pairs a note
    with itself, or if either note already appeared as the query or the target of an accepted pair. Each
    note is therefore used at most once and each accepted query has exactly one target.

    Args:
        pairs: ``(query_id, target_id)`` pairs in file order.
        known_ids: Ids of the notes that have an embedding (a ``set`` or dict keys for fast lookups).

    Returns:
        The accepted pairs, in their original order.
    """
    used: set[str] = set()
    accepted: list[Pair] = []
    for q, d in pairs:
        if q not in known_ids or d not in known_ids:
            continue
        if q == d or q in used or d in used:
            continue
        used.add(q)
        used.add(d)
        accepted.append((q, d))
    return accepted


# ----------------------------------------------------------------------------------------------------------------
# Ranking and recall (pure array functions)
# ----------------------------------------------------------------------------------------------------------------


def _as_float32_2d(x: Any, name: str) -> np.ndarray:
    """Return ``x`` as a C-contiguous float32 (N, d) array, copying only when needed."""
    if hasattr(x, "detach"):  # torch.Tensor without importing torch
        x = x.detach().cpu().float().numpy()
    arr = np.ascontiguousarray(x, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, d) array, got shape {arr.shape}.")
    return arr


def rank_targets(
    query_emb: np.ndarray,
    target_index: np.ndarray | Sequence[int],
    pool_emb: np.ndarray,
    pool_indices: np.ndarray | Sequence[int] | None = None,
    *,
    query_chunk_size: int = 1024,
    pool_chunk_size: int = 8192,
    tie_tol: float = 1e-6,
) -> np.ndarray:
    """Exact 0-based rank of each query's target among the pool, by chunked float32 matrix products.

    ``rank[i] = #{j in pool, j != target_index[i] : <q_i, e_j> > <q_i, e_t> + tie_tol}`` where ``e_t`` is
    ``pool_emb[target_index[i]]``. Pool notes scoring within ``tie_tol`` of the target (duplicates included)
    rank behind it (ties in the target's favour). The target's own row is excluded by index, whether or not
    it is in ``pool_indices``. Only one ``(query_chunk_size, pool_chunk_size)`` score block exists at a time,
    so memory is bounded for any pool size and the cost does not depend on K.

    Args:
        query_emb: (Q, d) query embeddings.
        target_index: (Q,) row of each query's target in ``pool_emb``.
        pool_emb: (N, d) embeddings the pool is drawn from (typically all notes).
        pool_indices: (P,) rows of ``pool_emb`` forming the pool, without duplicates; ``None`` means all rows.
            Sorted indices give the most cache-friendly gathers.
        query_chunk_size: Queries per score block.
        pool_chunk_size: Pool rows per score block.
        tie_tol: Scores at most this much above the target's score count as ties (in the target's favour).

    Returns:
        (Q,) int64 ranks, each in ``[0, P]``.

    Raises:
        ValueError: On shape mismatches, out-of-range or duplicate indices, or non-positive chunk sizes.
    """
    q = _as_float32_2d(query_emb, "query_emb")
    e = _as_float32_2d(pool_emb, "pool_emb")
    n, d = e.shape
    if q.shape[1] != d:
        raise ValueError(f"query_emb has dim {q.shape[1]} but pool_emb has dim {d}; embed both with the same model.")
    t_idx = np.asarray(target_index, dtype=np.int64).reshape(-1)
    if t_idx.shape[0] != q.shape[0]:
        raise ValueError(f"target_index has {t_idx.shape[0]} entries for {q.shape[0]} queries; give one per query.")
    if t_idx.size and (t_idx.min() < 0 or t_idx.max() >= n):
        raise ValueError(f"target_index must lie in [0, {n}) (rows of pool_emb).")
    if query_chunk_size <= 0 or pool_chunk_size <= 0:
        raise ValueError("query_chunk_size and pool_chunk_size must be positive.")

    # Position of every pool_emb row inside the pool (-1 = not in the pool), to exclude each target's own column.
    if pool_indices is None:
        pool_idx = None
        pool_size = n
        t_pos = t_idx
    else:
        pool_idx = np.asarray(pool_indices, dtype=np.int64).reshape(-1)
        pool_size = pool_idx.shape[0]
        if pool_size and (pool_idx.min() < 0 or pool_idx.max() >= n):
            raise ValueError(f"pool_indices must lie in [0, {n}) (rows of pool_emb).")
        pos = np.full(n, -1, dtype=np.int64)
        pos[pool_idx] = np.arange(pool_size, dtype=np.int64)
        if np.count_nonzero(pos >= 0) != pool_size:
            raise ValueError("pool_indices contains duplicates; pass each pool row once (e.g. np.unique(...)).")
        t_pos = pos[t_idx]

    num_q = q.shape[0]
    ranks = np.zeros(num_q, dtype=np.int64)
    if num_q == 0 or pool_size == 0:
        return ranks
    import torch  # local: the output helpers of this module do not need it

    tq = torch.from_numpy(q)  # (Q, d), shares memory
    te = torch.from_numpy(e)  # (N, d), shares memory
    qc = min(query_chunk_size, num_q)
    pc = min(pool_chunk_size, pool_size)

    # Target scores through the same GEMM path as the pool scores (the diagonal of a query-chunk x target-chunk
    # block), so that an exact duplicate of the target usually gets a bit-identical score; tie_tol covers the rest.
    thr = np.empty(num_q, dtype=np.float32)  # (Q,)
    t_idx_t = torch.from_numpy(t_idx)
    for q0 in range(0, num_q, qc):
        q1 = min(q0 + qc, num_q)
        block = torch.mm(tq[q0:q1], te.index_select(0, t_idx_t[q0:q1]).T)  # (b, b)
        thr[q0:q1] = block.diagonal().numpy()
    thr += np.float32(tie_tol)

    score_flat = torch.empty(qc * pc, dtype=torch.float32)
    mask_flat = np.empty(qc * pc, dtype=np.uint8)
    pool_idx_t = None if pool_idx is None else torch.from_numpy(pool_idx)
    for p0 in range(0, pool_size, pc):
        p1 = min(p0 + pc, pool_size)
        m = p1 - p0
        chunk = te[p0:p1] if pool_idx_t is None else te.index_select(0, pool_idx_t[p0:p1])  # (m, d)
        chunk_t = chunk.T  # (d, m) view: GEMM reads the row-major chunk as transposed, no copy
        for q0 in range(0, num_q, qc):
            q1 = min(q0 + qc, num_q)
            b = q1 - q0
            scores_t = score_flat[: b * m].view(b, m)  # contiguous (b, m)
            torch.mm(tq[q0:q1], chunk_t, out=scores_t)
            scores = scores_t.numpy()  # (b, m), same memory
            higher = mask_flat[: b * m].reshape(b, m)  # (b, m) 0/1
            np.greater(scores, thr[q0:q1, None], out=higher.view(bool))
            ranks[q0:q1] += np.add.reduce(higher, axis=1, dtype=np.int32)
            # Never count a target against itself (its column may round above its own threshold if tie_tol=0).
            local = t_pos[q0:q1] - p0  # (b,)
            rows = np.flatnonzero((local >= 0) & (local < m))
            if rows.size:
                ranks[q0 + rows] -= higher[rows, local[rows]]
    return ranks


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


# ----------------------------------------------------------------------------------------------------------------
# Whole protocol
# ----------------------------------------------------------------------------------------------------------------


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
    id_to_row = {nid: i for i, nid in enumerate(note_ids)}
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
    query_chunk_size: int = 1024,
    pool_chunk_size: int = 8192,
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
    emb = _as_float32_2d(embeddings, "embeddings")
    id_to_row = _id_index(note_ids, emb.shape[0])
    _check_normalised(emb)
    return _evaluate_rows(emb, id_to_row, pairs, ks, query_chunk_size, pool_chunk_size, tie_tol)


def evaluate_subsets(
    embeddings: np.ndarray,
    note_ids: Sequence[str],
    pair_sets: Mapping[str, Sequence[Pair]],
    ks: Sequence[int] = DEFAULT_KS,
    *,
    query_chunk_size: int = 1024,
    pool_chunk_size: int = 8192,
    tie_tol: float = 1e-6,
) -> dict[str, EvalResult]:
    """Evaluate several pair sets (``all`` and the short/long subsets) over the same embeddings.

    Each set is filtered and pooled on its own (docs/method.md#short-and-long-subsets): its pool is all notes minus *its* accepted
    queries. Empty sets are reported with ``num_queries=0`` and NaN recalls.

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
    emb = _as_float32_2d(embeddings, "embeddings")
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


# ----------------------------------------------------------------------------------------------------------------
# Subsets
# ----------------------------------------------------------------------------------------------------------------


def derive_subsets(
    pairs: Sequence[Pair],
    text_len: Mapping[str, int],
    short_max_chars: int = DEFAULT_SHORT_MAX_CHARS,
    long_min_chars: int = DEFAULT_LONG_MIN_CHARS,
) -> dict[str, list[Pair]]:
    """Build the short/long pair subsets from raw text lengths, for datasets without subset files.

    Rule (applied to the raw pairs, before the at-most-once filter, which then runs per subset):

    - ``shortquery``: ``text_len[query] <= short_max_chars``
    - ``shortgtdoc``: ``text_len[target] <= short_max_chars``
    - ``longquery``:  ``text_len[query] >= long_min_chars``
    - ``longgtdoc``:  ``text_len[target] >= long_min_chars``

    ``text_len`` should be the raw length (title + content characters, before any truncation). Pairs with a note
    missing from ``text_len`` go in no subset. Defaults: short = at most 30 characters (the text says little, the
    image has to carry the note); long = at least 100 characters (more than the default 20 + 80 character
    title/content truncation budget).

    Args:
        pairs: ``(query_id, target_id)`` pairs in file order.
        text_len: Raw text length per note id.
        short_max_chars: Largest length that counts as short.
        long_min_chars: Smallest length that counts as long.

    Returns:
        ``{"shortquery": [...], "shortgtdoc": [...], "longquery": [...], "longgtdoc": [...]}``, pairs in file order.

    Raises:
        ValueError: If the thresholds are negative or overlap (``short_max_chars >= long_min_chars``).
    """
    if short_max_chars < 0 or long_min_chars < 0:
        raise ValueError("short_max_chars and long_min_chars must be >= 0.")
    if short_max_chars >= long_min_chars:
        raise ValueError(
            f"short_max_chars ({short_max_chars}) must be < long_min_chars ({long_min_chars}) so that no note is "
            "both short and long."
        )
    out: dict[str, list[Pair]] = {name: [] for name in SUBSET_NAMES}
    for q, d in pairs:
        lq, ld = text_len.get(q), text_len.get(d)
        if lq is None or ld is None:
            continue
        if lq <= short_max_chars:
            out["shortquery"].append((q, d))
        if ld <= short_max_chars:
            out["shortgtdoc"].append((q, d))
        if lq >= long_min_chars:
            out["longquery"].append((q, d))
        if ld >= long_min_chars:
            out["longgtdoc"].append((q, d))
    return out


# ----------------------------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------------------------


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


def _atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to a temp file in the target folder, fsync, then ``os.replace`` it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_results(
    results: Mapping[str, EvalResult],
    path_json: str | os.PathLike[str] | None = None,
    path_csv: str | os.PathLike[str] | None = None,
) -> None:
    """Write results as JSON and/or CSV, each atomically (temp file + ``os.replace``).

    JSON: ``{subset: {num_queries, pool_size, num_pairs, num_missing, recalls: {"K": value}}}`` with NaN as ``null``.
    CSV: header ``subset,num_queries,pool_size,R@K...``, one row per subset, NaN as an empty cell.

    Args:
        results: ``{subset: EvalResult}``.
        path_json: Destination of the JSON file, or ``None`` to skip it.
        path_csv: Destination of the CSV file, or ``None`` to skip it.
    """
    if path_json is not None:
        payload = {name: res.to_dict() for name, res in results.items()}
        _atomic_write_text(path_json, json.dumps(payload, indent=2, allow_nan=False) + "\n")
    if path_csv is not None:
        ks = _all_ks(results)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["subset", "num_queries", "pool_size"] + [f"R@{k}" for k in ks])
        for name, res in results.items():
            vals = [res.recalls.get(k, float("nan")) for k in ks]
            w.writerow([name, res.num_queries, res.pool_size] + ["" if math.isnan(v) else repr(v) for v in vals])
        _atomic_write_text(path_csv, buf.getvalue())


def log_to_tensorboard(
    results: Mapping[str, EvalResult],
    writer_or_log_dir: Any,
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
        from torch.utils.tensorboard import SummaryWriter

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
