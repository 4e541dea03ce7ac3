"""Tests for the exact Recall@K protocol (notellm2_pl.retrieval: pairs, ranking, recall, results) and FAISS."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from notellm2_pl.retrieval import faiss_index as fi
from notellm2_pl.retrieval.pairs import accept_pairs, derive_subsets
from notellm2_pl.retrieval.ranking import rank_targets
from notellm2_pl.retrieval.recall import EvalResult, evaluate_pairs, evaluate_subsets, recall_at_k
from notellm2_pl.retrieval.results import format_table, log_to_tensorboard, write_results


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _quantised(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """Vectors with entries in {-2..2}/4: every dot product is exact in float32, so ties are exact."""
    return (rng.integers(-2, 3, size=(n, d)) / 4).astype(np.float32)


def _brute_ranks(q: np.ndarray, t_idx: np.ndarray, e: np.ndarray, pool: np.ndarray, tol: float) -> np.ndarray:
    """Reference: float64 full score matrix, count pool rows (other than the target) strictly above target + tol."""
    s = q.astype(np.float64) @ e[pool].astype(np.float64).T  # (Q, P)
    st = np.einsum("qd,qd->q", q.astype(np.float64), e[t_idx].astype(np.float64))
    above = s > (st + tol)[:, None]
    above &= pool[None, :] != t_idx[:, None]
    return above.sum(1)


def _brute_ties(q: np.ndarray, t_idx: np.ndarray, e: np.ndarray, pool: np.ndarray, tol: float) -> np.ndarray:
    """Reference: pool rows other than the target scoring within ``tol`` of the target (float64)."""
    s = q.astype(np.float64) @ e[pool].astype(np.float64).T  # (Q, P)
    st = np.einsum("qd,qd->q", q.astype(np.float64), e[t_idx].astype(np.float64))
    tied = np.abs(s - st[:, None]) <= tol
    tied &= pool[None, :] != t_idx[:, None]
    return tied.sum(1)


def _naive_ranks(q: np.ndarray, t_idx: np.ndarray, e: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Position of the target after a full descending sort (the textbook method; ties broken arbitrarily)."""
    out = []
    for i in range(q.shape[0]):
        order = pool[np.argsort(-(e[pool] @ q[i]), kind="stable")]
        out.append(int(np.flatnonzero(order == t_idx[i])[0]))
    return np.array(out)


# ------------------------------------------------------------------------------------------------ pair rule


def test_accept_pairs_at_most_once_and_missing() -> None:
    pairs = [
        ("a", "b"),  # accepted
        ("a", "c"),  # a already a query
        ("c", "b"),  # b already a target
        ("x", "d"),  # x missing
        ("c", "d"),  # accepted
        ("e", "e"),  # self pair
        ("d", "e"),  # d already a target
        ("e", "f"),  # accepted
        ("g", "zz"),  # zz missing
    ]
    known = {"a", "b", "c", "d", "e", "f", "g"}
    assert accept_pairs(pairs, known) == [("a", "b"), ("c", "d"), ("e", "f")]
    assert accept_pairs([], known) == []


def test_accept_pairs_missing_does_not_consume_notes() -> None:
    # A skipped pair (missing note) must not mark its other note as used.
    assert accept_pairs([("a", "missing"), ("a", "b")], {"a", "b"}) == [("a", "b")]


# ------------------------------------------------------------------------------------------------ ranks


@pytest.mark.parametrize("seed", [0, 1])
def test_rank_targets_matches_brute_force_random(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, d, nq = 3000, 32, 150
    e = _unit(rng, n, d)
    perm = rng.permutation(n)
    q_rows, t_rows = perm[:nq], perm[nq : 2 * nq]
    pool = np.setdiff1d(np.arange(n), q_rows)
    ours = rank_targets(e[q_rows], t_rows, e, pool, query_chunk_size=64, pool_chunk_size=500).higher
    ref = _brute_ranks(e[q_rows], t_rows, e, pool, tol=1e-6)
    # Differences are only allowed where some pool score is within float32 rounding of the tie boundary.
    bad = np.flatnonzero(ours != ref)
    if bad.size:
        s = e[q_rows[bad]].astype(np.float64) @ e[pool].astype(np.float64).T
        st = np.einsum("qd,qd->q", e[q_rows[bad]].astype(np.float64), e[t_rows[bad]].astype(np.float64))
        near = np.abs(s - (st + 1e-6)[:, None]) < 1e-5
        assert np.all(np.abs(ours[bad] - ref[bad]) <= near.sum(1))
    assert bad.size <= 1
    # With distinct random scores, the naive full-sort method agrees exactly.
    assert np.array_equal(ours[:20], _naive_ranks(e[q_rows[:20]], t_rows[:20], e, pool))


def test_rank_targets_counts_ties_apart() -> None:
    rng = np.random.default_rng(3)
    n, d, nq = 800, 16, 60
    e = _quantised(rng, n, d)
    q_rows, t_rows = np.arange(nq), np.arange(nq, 2 * nq)
    # Plant exact duplicates of some targets in the pool: equal score, a tie (half a place in expectation).
    dup_rows = np.arange(2 * nq, 2 * nq + 20)
    e[dup_rows] = e[t_rows[:20]]
    pool = np.arange(nq, n)
    for tol in (0.0, 1e-6):
        ours = rank_targets(e[q_rows], t_rows, e, pool, query_chunk_size=7, pool_chunk_size=33, tie_tol=tol)
        # exact arithmetic here: ">" above the band, "==" inside it
        assert np.array_equal(ours.higher, _brute_ranks(e[q_rows], t_rows, e, pool, tol=0.0))
        assert np.array_equal(ours.ties, _brute_ties(e[q_rows], t_rows, e, pool, tol=0.0))
    assert (ours.ties[:20] >= 1).all(), "each planted duplicate is a tie"
    assert np.array_equal(ours.expected, ours.higher + ours.ties / 2)
    # Recall@K under random tie-breaking: probability that the target lands in the top K.
    for k in (1, 3, 10):
        want = np.clip((k - ours.higher) / (ours.ties + 1), 0, 1)
        assert np.allclose(ours.hits(k), want)


def test_rank_targets_duplicates_of_target_random() -> None:
    rng = np.random.default_rng(11)
    n, d, nq = 1500, 64, 80
    e = _unit(rng, n, d)
    q_rows, t_rows = np.arange(nq), np.arange(nq, 2 * nq)
    e[2 * nq : 3 * nq] = e[t_rows]  # one exact duplicate of every target, somewhere in the pool
    e[3 * nq : 4 * nq] = e[t_rows]  # and a second one
    pool = np.arange(nq, n)
    for qc, pc in [(256, 8192), (7, 33), (1, 1000)]:
        ours = rank_targets(e[q_rows], t_rows, e, pool, query_chunk_size=qc, pool_chunk_size=pc)
        # float64 reference: both duplicates score exactly the target's score: two ties each, never "higher"
        # (a random pool note within 1e-6 of the target adds one more now and then).
        assert np.array_equal(ours.higher, _brute_ranks(e[q_rows], t_rows, e, pool, tol=1e-6))
        assert np.array_equal(ours.ties, _brute_ties(e[q_rows], t_rows, e, pool, tol=1e-6))
        assert (ours.ties >= 2).all()


def test_rank_targets_chunking_invariant() -> None:
    rng = np.random.default_rng(4)
    e = _unit(rng, 1000, 24)
    q_rows, t_rows = np.arange(50), np.arange(50, 100)
    pool = np.arange(50, 1000)
    base = rank_targets(e[q_rows], t_rows, e, pool, query_chunk_size=10_000, pool_chunk_size=10_000, workers=1).higher
    for qc, pc in [(1, 950), (50, 1), (3, 17), (64, 128), (7, 999)]:
        for workers in (1, 2, 4):  # threads split the queries; each reduces its own rows
            got = rank_targets(e[q_rows], t_rows, e, pool, query_chunk_size=qc, pool_chunk_size=pc,
                               workers=workers).higher
            assert np.array_equal(got, base), (qc, pc, workers)


def test_rank_targets_pool_none_and_target_outside_pool() -> None:
    rng = np.random.default_rng(5)
    e = _unit(rng, 200, 8)
    q, t = e[:5], np.arange(5, 10)
    all_rows = rank_targets(q, t, e).higher  # pool = every row (the queries' own rows included)
    assert np.array_equal(all_rows, _brute_ranks(q, t, e, np.arange(200), 1e-6))
    # Target not in the pool: nothing to exclude, still counts the pool only.
    pool = np.arange(10, 200)
    assert np.array_equal(rank_targets(q, t, e, pool).higher, _brute_ranks(q, t, e, pool, 1e-6))


def test_rank_targets_errors() -> None:
    e = np.eye(4, dtype=np.float32)
    with pytest.raises(ValueError, match="dim"):
        rank_targets(np.ones((1, 3), np.float32), [0], e)
    with pytest.raises(ValueError, match="duplicates"):
        rank_targets(e[:1], [1], e, [1, 1, 2])
    with pytest.raises(ValueError, match="one per query"):
        rank_targets(e[:2], [1], e)


# ------------------------------------------------------------------------------------------------ recall


def test_recall_at_k_and_large_k() -> None:
    ranks = np.array([0, 5, 9, 10, 99])
    r = recall_at_k(ranks, (1, 10, 11, 100, 10**6))
    assert r == {1: 0.2, 10: 0.6, 11: 0.8, 100: 1.0, 10**6: 1.0}
    assert all(math.isnan(v) for v in recall_at_k([], (10,)).values())
    with pytest.raises(ValueError):
        recall_at_k(ranks, (0,))


def test_evaluate_pairs_protocol() -> None:
    rng = np.random.default_rng(6)
    n, d = 500, 16
    e = _unit(rng, n, d)
    ids = [f"n{i}" for i in range(n)]
    pairs = [(f"n{i}", f"n{i + 100}") for i in range(40)]
    pairs += [("n0", "n300"), ("n301", "n100"), ("missing", "n5"), ("n7", "ghost")]  # reused / missing
    res = evaluate_pairs(e, ids, pairs, ks=(1, 10, 100, 10**6))
    assert res.num_queries == 40 and res.pool_size == n - 40
    assert res.num_pairs == 44 and res.num_missing == 2
    pool = np.arange(40, n)
    ref = _brute_ranks(e[:40], np.arange(100, 140), e, pool, 1e-6)
    assert np.array_equal(res.ranks.higher, ref) and not res.ranks.ties.any()
    assert res.recalls[10**6] == 1.0
    assert res.recalls[10] == pytest.approx(np.mean(ref < 10))
    # Perfect embeddings: target == query vector -> rank 0 for all (nothing can tie with a self-match).
    e2 = e.copy()
    e2[100:140] = e2[:40]
    assert evaluate_pairs(e2, ids, pairs, ks=(1,)).recalls[1] == 1.0


def test_evaluate_pairs_bad_ids() -> None:
    e = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match="one id per row"):
        evaluate_pairs(e, ["a", "b"], [])
    with pytest.raises(ValueError, match="Duplicate note id 'a'"):
        evaluate_pairs(e, ["a", "b", "a"], [])


def test_derive_and_evaluate_subsets(tmp_path) -> None:
    lens = {"a": 5, "b": 200, "c": 30, "d": 31, "e": 100, "f": 99}
    pairs = [("a", "b"), ("c", "d"), ("e", "f"), ("b", "a"), ("a", "zz")]
    subs = derive_subsets(pairs, lens, short_max_chars=30, long_min_chars=100)
    assert subs == {
        "shortquery": [("a", "b"), ("c", "d")],
        "shortgtdoc": [("b", "a")],
        "longquery": [("e", "f"), ("b", "a")],
        "longgtdoc": [("a", "b")],
    }
    with pytest.raises(ValueError, match="must be <"):
        derive_subsets(pairs, lens, short_max_chars=100, long_min_chars=100)

    rng = np.random.default_rng(7)
    ids = list(lens)
    e = _unit(rng, len(ids), 8)
    results = evaluate_subsets(e, ids, {"all": pairs, **subs, "empty": []}, ks=(1, 2, 1000))
    # Each subset's pool drops only its own accepted queries.
    assert results["all"].num_queries == 3 and results["all"].pool_size == 3
    assert results["shortgtdoc"].num_queries == 1 and results["shortgtdoc"].pool_size == 5
    assert results["empty"].num_queries == 0 and math.isnan(results["empty"].recalls[1])
    assert results["all"].recalls[1000] == 1.0

    table = format_table(results)
    assert "R@1k" in table and "shortquery" in table and table.count("\n") == len(results) + 1

    pj, pc = tmp_path / "out" / "recall.json", tmp_path / "out" / "recall.csv"
    write_results(results, pj, pc)
    data = json.loads(pj.read_text())
    assert data["all"]["recalls"]["1000"] == 1.0 and data["empty"]["recalls"]["1"] is None
    lines = pc.read_text().splitlines()
    assert lines[0] == "subset,num_queries,pool_size,R@1,R@2,R@1000" and len(lines) == len(results) + 1
    assert sorted(os.listdir(tmp_path / "out")) == ["recall.csv", "recall.json"]  # no temp files left


def test_write_results_atomic_on_failure(tmp_path, monkeypatch) -> None:
    res = {"all": EvalResult(num_queries=1, pool_size=2, recalls={10: 1.0}, ranks=np.zeros(1, np.int64))}
    path = tmp_path / "r.json"
    write_results(res, path)
    before = path.read_text()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    res["all"].recalls[10] = 0.5
    with pytest.raises(OSError):
        write_results(res, path)
    assert path.read_text() == before
    assert os.listdir(tmp_path) == ["r.json"]


def test_log_to_tensorboard() -> None:
    res = {
        "all": EvalResult(1, 2, {10: 0.5, 100: 1.0}, np.zeros(1, np.int64)),
        "longgtdoc": EvalResult(0, 3, {10: float("nan")}, np.zeros(0, np.int64)),
    }

    class FakeWriter:
        def __init__(self) -> None:
            self.scalars: dict[str, float] = {}

        def add_scalar(self, tag: str, value: float, global_step: int = 0) -> None:
            self.scalars[tag] = value

        def flush(self) -> None:
            pass

    w = FakeWriter()
    log_to_tensorboard(res, w, prefix="test/e_m")
    assert w.scalars == {"test/e_m/recall/all/R@10": 0.5, "test/e_m/recall/all/R@100": 1.0}
    w2 = FakeWriter()
    log_to_tensorboard(res, w2)
    assert set(w2.scalars) == {"recall/all/R@10", "recall/all/R@100"}


def test_log_to_tensorboard_log_dir(tmp_path) -> None:
    pytest.importorskip("tensorboard")
    res = {"all": EvalResult(1, 2, {10: 0.5}, np.zeros(1, np.int64))}
    log_to_tensorboard(res, tmp_path / "tb")
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tb"))


# ------------------------------------------------------------------------------------------------ FAISS


def test_faiss_flat_matches_brute_force() -> None:
    rng = np.random.default_rng(8)
    e, q = _unit(rng, 2000, 32), _unit(rng, 100, 32)
    ids = [f"note{i}" for i in range(2000)]
    idx = fi.build_index(e, "flat", ids=ids)
    assert idx.kind == "flat" and idx.ntotal == 2000
    k = 20
    scores, got = fi.search(idx, q, k, batch_size=13)
    s = q.astype(np.float64) @ e.astype(np.float64).T
    ref_pos = np.argsort(-s, axis=1)[:, :k]
    for i in range(q.shape[0]):
        got_pos = {int(x[4:]) for x in got[i]}
        assert np.allclose(scores[i], s[i, ref_pos[i]], atol=1e-5)
        diff = got_pos ^ set(ref_pos[i].tolist())
        kth = s[i, ref_pos[i, -1]]
        # Any disagreement must be a near-tie at the k-th score.
        assert all(abs(s[i, j] - kth) < 1e-6 for j in diff)
    # k larger than the index is clamped.
    s_all, _ = fi.search(idx, q[:2], 10_000)
    assert s_all.shape == (2, 2000)


@pytest.mark.parametrize("kind,params", [("ivf", {"nlist": 16, "nprobe": 4}), ("hnsw", {"M": 8, "ef_search": 16})])
def test_faiss_approx_recall_vs_exact(kind: str, params: dict) -> None:
    rng = np.random.default_rng(9)
    e, q = _unit(rng, 3000, 16), _unit(rng, 50, 16)
    exact = fi.build_index(e, "flat")
    approx = fi.build_index(e, kind, **params)
    assert approx.kind == kind
    r = fi.recall_vs_exact(approx, exact, q, k=10)
    assert 0.0 <= r <= 1.0
    assert r > 0.3
    assert fi.recall_vs_exact(exact, exact, q, k=10) == 1.0
    if kind == "ivf":
        fi.set_search_params(approx, nprobe=16)  # all lists -> exact
        assert fi.recall_vs_exact(approx, exact, q, k=10) == pytest.approx(1.0, abs=0.02)
        with pytest.raises(ValueError, match="HNSW"):
            fi.set_search_params(approx, ef_search=10)


def test_faiss_save_load_roundtrip(tmp_path) -> None:
    rng = np.random.default_rng(10)
    e, q = _unit(rng, 500, 16), _unit(rng, 10, 16)
    for kind, ids in [("flat", [f"id{i}" for i in range(500)]), ("ivf", np.arange(1000, 1500)), ("hnsw", None)]:
        idx = fi.build_index(e, kind, ids=ids, nlist=8, nprobe=3, M=8, ef_search=20)
        path = tmp_path / kind / "index.faiss"
        fi.save_index(idx, path)
        assert sorted(os.listdir(path.parent)) == ["index.faiss", "index.faiss.ids.npy"]
        back = fi.load_index(path)
        assert back.kind == kind and np.array_equal(back.ids, idx.ids)
        s0, i0 = fi.search(idx, q, 5)
        s1, i1 = fi.search(back, q, 5)
        assert np.array_equal(i0, i1) and np.allclose(s0, s1)
    os.remove(tmp_path / "flat" / "index.faiss.ids.npy")
    with pytest.raises(FileNotFoundError, match="save_index"):
        fi.load_index(tmp_path / "flat" / "index.faiss")


def test_faiss_errors() -> None:
    e = np.eye(4, dtype=np.float32)
    with pytest.raises(ValueError, match="choose one of"):
        fi.build_index(e, "lsh")
    with pytest.raises(ValueError, match="ids"):
        fi.build_index(e, "flat", ids=[1, 2])
    idx = fi.build_index(e)
    with pytest.raises(ValueError, match="dim"):
        fi.search(idx, np.ones((1, 3), np.float32), 1)
