"""Ties never score: constant, near-constant and duplicated embeddings through the kernel and ``evaluate``, and the
collapse check that reports such sets instead of reading conclusions from them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from notellm2_pl.retrieval.ranking import Ranks, rank_targets
from notellm2_pl.retrieval.recall import evaluate_pairs, recall_at_k
from notellm2_pl.retrieval.spread import COLLAPSE_SPREAD, embedding_spread


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _dataset(n: int, nq: int) -> tuple[list[str], list[tuple[str, str]]]:
    ids = [f"n{i:04d}" for i in range(n)]
    return ids, [(ids[i], ids[nq + i]) for i in range(nq)]


@pytest.mark.parametrize(("qc", "pc"), [(256, 768), (7, 33)])
def test_constant_embeddings_score_exactly_chance(qc: int, pc: int) -> None:
    n, nq = 600, 100
    ids, pairs = _dataset(n, nq)
    emb = _unit(np.ones((n, 16)))
    res = evaluate_pairs(emb, ids, pairs, ks=(1, 10, 100), query_chunk_size=qc, pool_chunk_size=pc)
    pool = n - nq  # the target is one of the pool's P notes, all tied
    assert res.pool_size == pool
    assert not res.ranks.higher.any() and (res.ranks.ties == pool - 1).all()
    for k in (1, 10, 100):
        assert res.recalls[k] == pytest.approx(k / pool)
    assert np.allclose(res.ranks.expected, (pool - 1) / 2)


def test_near_constant_embeddings_with_float_noise_score_chance() -> None:
    rng = np.random.default_rng(0)
    n, nq = 800, 200
    ids, pairs = _dataset(n, nq)
    base = rng.standard_normal(64)
    emb = _unit(base + 1e-9 * rng.standard_normal((n, 64)) * np.abs(base).max())  # relative noise ~1e-9
    res = evaluate_pairs(emb, ids, pairs, ks=(10,))
    pool = n - nq
    assert res.recalls[10] == pytest.approx(10 / pool, rel=0.05)
    assert embedding_spread(emb).collapsed


def test_duplicates_of_the_target_share_its_place() -> None:
    """A target with d exact duplicates and h notes above it lands in the top K with probability (K - h)/(d + 1)."""
    rng = np.random.default_rng(1)
    n, nq, d = 400, 40, 3
    ids, pairs = _dataset(n, nq)
    emb = _unit(rng.standard_normal((n, 32)))
    targets = np.arange(nq, 2 * nq)
    for j in range(d):  # d copies of each target elsewhere in the pool
        emb[2 * nq + j * nq: 3 * nq + j * nq] = emb[targets]
    res = evaluate_pairs(emb, ids, pairs, ks=(1, 2, 10))
    assert (res.ranks.ties >= d).all()
    for k in (1, 2, 10):
        want = np.clip((k - res.ranks.higher) / (res.ranks.ties + 1), 0, 1).mean()
        assert res.recalls[k] == pytest.approx(want)
    # a query equal to its target with 3 duplicates: rank 0 shared by 4 notes -> R@1 = 1/4
    emb2 = emb.copy()
    emb2[:nq] = emb2[targets]
    res2 = evaluate_pairs(emb2, ids, pairs, ks=(1, 4))
    assert res2.recalls[1] == pytest.approx(1 / (d + 1)) and res2.recalls[4] == pytest.approx(1.0)


def test_recall_from_ranks_and_from_plain_ranks_agree_without_ties() -> None:
    plain = np.array([0, 3, 9, 10, 50])
    assert recall_at_k(plain, (10,)) == recall_at_k(Ranks.strict(plain), (10,)) == {10: 0.6}
    with pytest.raises(ValueError, match="positive"):
        Ranks.strict(plain).hits(0)


def test_kernel_tie_band_is_symmetric() -> None:
    """Pool notes just below the target's score (within the tolerance) are ties too, not wins for the target."""
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    pool = np.array([[0.5, 0.0], [0.5 - 5e-7, 0.0], [0.5 + 5e-7, 0.0], [0.6, 0.0], [0.4, 0.0]], dtype=np.float32)
    r = rank_targets(q, [0], pool, tie_tol=1e-6)
    assert r.higher.tolist() == [1] and r.ties.tolist() == [2]
    r0 = rank_targets(q, [0], pool, tie_tol=0.0)
    assert r0.higher.tolist() == [2] and r0.ties.tolist() == [0]


def test_spread_separates_collapsed_from_healthy_sets() -> None:
    rng = np.random.default_rng(2)
    healthy = embedding_spread(rng.standard_normal((500, 64)))
    assert not healthy.collapsed and healthy.spread > 0.9 and healthy.effective_rank > 40
    collapsed = embedding_spread(np.ones((500, 64)) + 2.7e-5 * rng.standard_normal((500, 64)))
    assert collapsed.collapsed and collapsed.spread < COLLAPSE_SPREAD and collapsed.mean_cosine > 0.9999
    anisotropic = embedding_spread(np.ones((500, 64)) + 0.05 * rng.standard_normal((500, 64)))
    assert not anisotropic.collapsed  # a narrow cone that still ranks is not collapse
    assert "COLLAPSED" in collapsed.line("x") and "ok" in healthy.line("y")
    assert not embedding_spread(np.ones((1, 4))).collapsed


def test_evaluate_scores_collapsed_probe_at_chance_and_warns(exported, tmp_path, capsys) -> None:
    """A collapsed only-image set: chance Recall@K, a collapse WARNING naming it, and no modality conclusion."""
    from notellm2_pl.commands.evaluate import main as cli_main
    from notellm2_pl.retrieval.evaluation import load_test_pool
    from notellm2_pl.retrieval.prediction_writer import write_embeddings

    ids, _, _ = load_test_pool(exported["data"])
    rng = np.random.default_rng(3)
    healthy = _unit(rng.standard_normal((len(ids), 16)))
    dead = _unit(np.ones((len(ids), 16)) + 1e-7 * rng.standard_normal((len(ids), 16)))
    write_embeddings(tmp_path / "full", ids, {"e_m": healthy}, probe="full", data_root=str(exported["data"]))
    write_embeddings(tmp_path / "img", ids, {"e_m": dead}, probe="only_image", data_root=str(exported["data"]))
    out = tmp_path / "eval"
    assert cli_main(["--embeddings", str(tmp_path / "full"), str(tmp_path / "img"), "--out", str(out),
                     "--no_tb", "--ks", "10"]) == 0
    text = capsys.readouterr().out
    assert "collapse check: WARNING: only_image/e_m collapsed" in text
    modality = text.split("modality check")[1].split("Wrote")[0]
    assert modality.startswith(", Recall@10: ok") and "only_image" not in modality
    res = json.loads((out / "results.json").read_text())
    got = res["only_image/e_m/all"]
    assert got["recalls"]["10"] == pytest.approx(10 / got["pool_size"], rel=0.2)
    spread = json.loads((out / "spread.json").read_text())
    assert spread["only_image/e_m"]["collapsed"] and not spread["full/e_m"]["collapsed"]


def test_recall_against_exact_counts_tied_neighbours_as_found() -> None:
    """Collapsed vectors: an approximate top-k of other, equally scoring notes is as good as the exact one."""
    from notellm2_pl.retrieval.ranking import topk_overlap

    exact_s = np.array([[0.9, 0.5, 0.5], [0.9, 0.8, 0.7]], dtype=np.float32)
    exact_r = np.array([[1, 2, 3], [1, 2, 3]])
    approx_s = np.array([[0.9, 0.5, 0.5], [0.9, 0.7, 0.6]], dtype=np.float32)
    approx_r = np.array([[1, 7, 8], [1, 3, 9]])  # row 0: 7 and 8 tie with the exact 3rd; row 1: 9 is worse
    assert topk_overlap(approx_s, approx_r, exact_s, exact_r).tolist() == [3, 2]
    assert topk_overlap(approx_s, approx_r, exact_s, exact_r, tie_tol=0.0).tolist() == [3, 2]
    unfilled = np.array([[1, -1, -1]])
    assert topk_overlap(np.array([[0.9, -np.inf, -np.inf]], np.float32), unfilled, exact_s[:1], exact_r[:1]) == [1]


def test_flat_and_hnsw_agree_on_constant_embeddings() -> None:
    from notellm2_pl.retrieval.faiss_index import build_index, recall_vs_exact

    emb = _unit(np.ones((300, 8)))
    flat, hnsw = build_index(emb, "flat"), build_index(emb, "hnsw")
    assert recall_vs_exact(hnsw, flat, emb[:20], k=10) == pytest.approx(1.0)


def test_effective_rank_is_the_same_from_the_gram_side_when_rows_are_few() -> None:
    """Wide sets (d > N) take the N x N Gram matrix: the same non-zero eigenvalues as the d x d covariance."""
    rng = np.random.default_rng(4)
    wide = rng.standard_normal((40, 300))
    got = embedding_spread(wide)
    u = wide / np.linalg.norm(wide, axis=1, keepdims=True)
    c = u - u.mean(axis=0)
    eig = np.clip(np.linalg.eigvalsh(c.T @ c / len(u)), 0, None)
    p = eig[eig > 1e-12] / eig.sum()
    assert got.effective_rank == pytest.approx(float(np.exp(-(p * np.log(p)).sum())), rel=1e-6)
