"""Compiled per-tile reductions of the exact scoring kernel: one pass over a score tile while it is in cache.

The GEMM of a ``(b, m)`` score tile costs ``2 d`` FLOPs per score (128 at d = 64); a reduction built from numpy or
torch calls costs several full passes (a compare writing a mask, a count reading it, a row maximum), which on this
hardware takes nearly as long as the GEMM. These loops, compiled by numba (``nogil``, so worker threads run them
concurrently), read each score once with vector compares and touch scalars only where something changes:

* :func:`count_rank`: per row, the number of scores above the row's upper tie bound and the number within its tie
  band (Recall@K's expected ranks under random tie-breaking).
* :func:`topk_update`: each row's running top-k, in (score descending, label ascending) order. A vector count of
  the scores reaching the row's current k-th score skips a row (and then a block of it) where nothing can enter;
  entries that do enter are insertion-sorted into the ``k`` slots.

Compiled code is cached on disk by numba (``cache=True``): the first call in a fresh environment compiles (a few
seconds), later processes load it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

BLOCK = 64
"""Scores per block of a live row in :func:`topk_update`: a block is scanned entry by entry only if it can enter."""


_EXACT_COUNTING = {"reassoc", "nsz", "arcp", "contract"}
"""numba fast-math flags of the counting loops: reassociation lets a count accumulate in float32 vector lanes (8-16
per instruction instead of 4 int64 ones). Counts are whole numbers below 2**24, so every partial sum is exact in any
order; ``nnan`` stays off, so a NaN score compares false and is never counted."""

MAX_TILE_WIDTH = 2**24
"""Widest tile the float32 counters count exactly."""


@njit(nogil=True, cache=True, fastmath=_EXACT_COUNTING)
def _count(scores: np.ndarray, i: int, j0: int, j1: int, t: float) -> int:  # pragma: no cover - jit
    """Number of ``scores[i, j0:j1]`` at least ``t``: vector compares, no branch per entry."""
    c = np.float32(0)
    for j in range(j0, j1):
        c += np.float32(1) if scores[i, j] >= t else np.float32(0)
    return int(c)


@njit(nogil=True, cache=True, fastmath=_EXACT_COUNTING)
def _count_band(scores: np.ndarray, i: int, lo: float, hi: float) -> tuple[int, int]:  # pragma: no cover - jit
    """``(#{j : scores[i, j] > hi}, #{j : lo <= scores[i, j] <= hi})`` in one pass of vector compares."""
    above = np.float32(0)
    reach = np.float32(0)
    for j in range(scores.shape[1]):
        s = scores[i, j]
        above += np.float32(1) if s > hi else np.float32(0)
        reach += np.float32(1) if s >= lo else np.float32(0)
    return int(above), int(reach - above)


@njit(nogil=True, cache=True)
def count_rank(scores: np.ndarray, lo: np.ndarray, hi: np.ndarray, higher: np.ndarray,
               ties: np.ndarray) -> None:  # pragma: no cover - jit
    """Per row of a (b, m) float32 tile: ``higher[i] += #{s > hi[i]}`` and ``ties[i] += #{lo[i] <= s <= hi[i]}``.

    ``-inf`` (excluded) and NaN entries count in neither (m < 2**24).
    """
    for i in range(scores.shape[0]):
        a, t = _count_band(scores, i, lo[i], hi[i])
        higher[i] += a
        ties[i] += t


@njit(nogil=True, cache=True)
def _insert(top_s: np.ndarray, top_p: np.ndarray, i: int, s: float, label: int) -> None:  # pragma: no cover - jit
    """Insert ``(s, label)`` into row ``i`` of the sorted top-k if it beats an entry (score desc, label asc).

    Unfilled slots hold ``(-inf, -1)`` and lose to any entry.
    """
    k = top_s.shape[1]
    q = k
    while q > 0:
        ps, pp = top_s[i, q - 1], top_p[i, q - 1]
        if ps < s or (ps == s and (pp < 0 or pp > label)):
            q -= 1
        else:
            break
    if q == k:
        return
    for r in range(k - 1, q, -1):
        top_s[i, r] = top_s[i, r - 1]
        top_p[i, r] = top_p[i, r - 1]
    top_s[i, q] = s
    top_p[i, q] = label


@njit(nogil=True, cache=True)
def topk_update(scores: np.ndarray, p0: int, labels: np.ndarray, top_s: np.ndarray,
                top_p: np.ndarray) -> None:  # pragma: no cover - jit
    """Fold a (b, m) float32 tile of pool positions ``p0:p0+m`` into rows ``0:b`` of a running top-k.

    Args:
        scores: (b, m) tile; ``-inf`` entries (excluded) never enter.
        p0: Pool position of the tile's first column.
        labels: (P,) int64 label of each pool position, or an empty array to use the position itself.
        top_s: (b, k) float32 running scores, best first (updated in place).
        top_p: (b, k) int64 running labels (updated in place).
    """
    b, m = scores.shape
    k = top_s.shape[1]
    for i in range(b):
        t = top_s[i, k - 1]
        if _count(scores, i, 0, m, t) == 0:
            continue
        for j0 in range(0, m, BLOCK):
            j1 = min(j0 + BLOCK, m)
            if _count(scores, i, j0, j1, t) == 0:
                continue
            for j in range(j0, j1):
                s = scores[i, j]
                if s >= t and s != -np.inf:
                    _insert(top_s, top_p, i, s, p0 + j if labels.size == 0 else labels[p0 + j])
                    t = top_s[i, k - 1]
