"""The compiled per-tile reductions of the exact kernel, against plain numpy on ties, NaN, labels and presets."""

from __future__ import annotations

import numpy as np
import pytest

from notellm2_pl.retrieval.scoring import RankCounter, exact_topk
from notellm2_pl.retrieval.tile_kernels import MAX_TILE_WIDTH, count_rank, topk_update


def _quantised(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Scores on a coarse grid: many exact ties."""
    return (rng.integers(-4, 5, size=shape) / 4).astype(np.float32)


@pytest.mark.parametrize("width", [1, 15, 64, 1000])
def test_count_rank_splits_above_and_tied_and_skips_nan(width: int) -> None:
    rng = np.random.default_rng(width)
    scores = _quantised(rng, (9, width))
    scores[0, 0] = np.nan
    scores[1, 0] = -np.inf  # an excluded entry counts in neither
    centre = _quantised(rng, (9, 1))[:, 0]  # centres equal to many scores
    lo, hi = centre - np.float32(0.25), centre  # a band [centre - 0.25, centre], one grid step wide
    higher = np.full(9, 5, dtype=np.int64)
    ties = np.full(9, 2, dtype=np.int64)
    count_rank(scores, lo, hi, higher, ties)
    s = np.nan_to_num(scores, nan=-np.inf)
    assert np.array_equal(higher, 5 + np.sum(s > hi[:, None], axis=1))
    assert np.array_equal(ties, 2 + np.sum((s >= lo[:, None]) & (s <= hi[:, None]), axis=1))


def test_topk_update_orders_ties_by_label_not_position() -> None:
    """Labels decreasing with position: among equal scores the lowest *label* wins, across tiles."""
    rng = np.random.default_rng(0)
    scores = _quantised(rng, (6, 300))
    scores[1, 10] = -np.inf  # an excluded entry never enters
    scores[2, :] = np.nan  # a row of NaN enters nothing
    labels = np.arange(1000, 700, -1, dtype=np.int64)  # (300,) position j has label 1000 - j
    top_s = np.full((6, 8), -np.inf, dtype=np.float32)
    top_p = np.full((6, 8), -1, dtype=np.int64)
    for p0 in range(0, 300, 70):  # tiles of 70 columns
        topk_update(np.ascontiguousarray(scores[:, p0:p0 + 70]), p0, labels, top_s, top_p)
    for i in (0, 1, 3, 4, 5):
        order = np.lexsort((labels, -scores[i]))[:8]  # score desc, then label asc
        assert np.array_equal(top_p[i], labels[order]), i
        assert np.array_equal(top_s[i], scores[i, order])
    assert (top_p[2] == -1).all() and np.isneginf(top_s[2]).all()


def test_exact_topk_resumed_from_a_preset_equals_one_pass() -> None:
    """A top-k over the second half of the pool, started from the first half's, equals the whole pass (ties too)."""
    rng = np.random.default_rng(3)
    pool = (rng.integers(-2, 3, size=(400, 6)) / 4).astype(np.float32)
    queries = pool[:37].copy()
    whole = exact_topk(queries, pool, 12, query_tile=16, pool_tile=50)
    rows = np.arange(200, 400)
    first = exact_topk(queries, pool, 12, pool_rows=np.arange(200), query_tile=16, pool_tile=50)
    resumed = exact_topk(queries, pool, 12, pool_rows=rows, start=first, query_tile=16, pool_tile=50)
    assert np.array_equal(resumed[1], whole[1]) and np.array_equal(resumed[0], whole[0])


def test_rank_counter_refuses_tiles_too_wide_to_count_exactly() -> None:
    with pytest.raises(ValueError, match="pool_tile"):
        RankCounter(np.zeros(3, dtype=np.float32), 4, MAX_TILE_WIDTH + 1)
