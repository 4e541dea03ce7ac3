"""Baselines in every evaluation: sparse text baselines against brute force, the baseline check, the cache, the
evaluate command, and the model baselines (sentence-transformers folder, untrained backbones)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from notellm2_pl.data.tables import Note

WORDS = ["red", "blue", "green", "cat", "dog", "bird", "car", "bike", "tree", "house", "lamp", "road", "river", "stone",
         "cloud"]


def _notes(n: int = 48, seed: int = 0) -> list[Note]:
    """Short random notes over a small vocabulary: many zero scores (ties), a few exact duplicates."""
    rng = np.random.default_rng(seed)
    notes = []
    for i in range(n):
        words = rng.choice(WORDS, size=int(rng.integers(1, 6)))
        notes.append(Note(f"n{i}", " ".join(words[:2]), [str(words[-1])], " ".join(words[2:]), None))
    notes[5] = Note("n5", notes[4].title, notes[4].topics, notes[4].content, None)  # an exact duplicate
    notes[7] = Note("n7", "the", [], "of and", None)  # only stop words: an empty BM25 query
    return notes


def _pairs(n: int, count: int, seed: int = 1) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    return [(f"n{a}", f"n{b}") for a, b in rng.integers(0, n, size=(count, 2))]


def _brute_force_recall(scores: np.ndarray, ids: list[str], pairs: list[tuple[str, str]], ks: list[int],
                        tol: float = 1e-6) -> dict[int, float]:
    """Independent Recall@K: greedy at-most-once pairs, pool = all minus queries, ties broken at random."""
    row = {nid: i for i, nid in enumerate(ids)}
    used: set[str] = set()
    accepted = []
    for q, d in pairs:
        if q != d and q not in used and d not in used:
            used |= {q, d}
            accepted.append((row[q], row[d]))
    queries = {q for q, _ in accepted}
    pool = np.array([i for i in range(len(ids)) if i not in queries])
    hits = {k: [] for k in ks}
    for q, t in accepted:
        others = scores[q, pool[pool != t]]
        higher = np.sum(others > scores[q, t] + tol)
        ties = np.sum(np.abs(others - scores[q, t]) <= tol)
        for k in ks:
            hits[k].append(min(max((k - higher) / (ties + 1), 0.0), 1.0))
    return {k: float(np.mean(v)) for k, v in hits.items()}


# ------------------------------------------------------------------------------------------------ text baselines
@pytest.mark.parametrize("analyzer,ngrams", [("word", (1, 1)), ("char_wb", (3, 5))])
def test_tfidf_recall_equals_brute_force(analyzer, ngrams):
    from sklearn.feature_extraction.text import TfidfVectorizer

    from notellm2_pl.retrieval.text_baselines import evaluate_scorer, note_text, tfidf_scorer

    notes = _notes()
    ids = [n.note_id for n in notes]
    texts = [note_text(n) for n in notes]
    pairs = _pairs(len(notes), 40)
    ks = [1, 2, 5, 10, 30]
    x = TfidfVectorizer(analyzer=analyzer, ngram_range=ngrams).fit_transform(texts).toarray()  # float64, dense
    expected = _brute_force_recall(x @ x.T, ids, pairs, ks)
    got = evaluate_scorer(tfidf_scorer(texts, analyzer, ngrams), ids, {"all": pairs}, ks, query_tile=4, pool_tile=5)
    assert got["all"].num_queries > 10
    assert got["all"].ranks.ties.sum() > 0  # the set has ties, so the tie rule is exercised
    for k in ks:
        assert got["all"].recalls[k] == pytest.approx(expected[k], abs=1e-12), k


@pytest.mark.parametrize("tiles", [(1, 1, 1), (3, 7, 3), (16, 5, 2), (256, 768, 1)])
def test_sparse_tiles_equal_the_dense_path(tiles):  # (query tile, pool tile, worker threads)
    from notellm2_pl.retrieval.recall import evaluate_subsets
    from notellm2_pl.retrieval.text_baselines import evaluate_scorer, note_text, tfidf_scorer

    notes = _notes(60, seed=3)
    ids = [n.note_id for n in notes]
    scorer = tfidf_scorer([note_text(n) for n in notes], "char_wb", (3, 5))
    pair_sets = {"all": _pairs(60, 50), "other": _pairs(60, 20, seed=4)}
    dense = evaluate_subsets(scorer.docs.toarray(), ids, pair_sets, ks=[1, 5, 20])
    sparse = evaluate_scorer(scorer, ids, pair_sets, [1, 5, 20], query_tile=tiles[0], pool_tile=tiles[1],
                             workers=tiles[2])
    for name in pair_sets:
        np.testing.assert_array_equal(sparse[name].ranks.higher, dense[name].ranks.higher)
        np.testing.assert_array_equal(sparse[name].ranks.ties, dense[name].ranks.ties)
        assert sparse[name].recalls == dense[name].recalls
        assert sparse[name].pool_size == dense[name].pool_size


def test_bm25_recall_equals_brute_force():
    import bm25s

    from notellm2_pl.retrieval.text_baselines import bm25_scorer, evaluate_scorer, note_text

    notes = _notes(50, seed=5)
    ids = [n.note_id for n in notes]
    texts = [note_text(n) for n in notes]
    tokens = bm25s.tokenize(texts, stopwords="en", show_progress=False)
    index = bm25s.BM25()
    index.index(tokens, show_progress=False)
    scores = np.stack([index.get_scores(list(map(int, q))) if len(q) else np.zeros(len(texts), np.float32)
                       for q in tokens.ids])  # (N, N): row q = bm25s's scores of q's tokens
    assert not np.allclose(scores, scores.T)  # BM25 is not symmetric: the query side matters
    pairs = _pairs(len(notes), 40, seed=6)
    ks = [1, 3, 10]
    expected = _brute_force_recall(scores.astype(np.float64), ids, pairs, ks)
    got = evaluate_scorer(bm25_scorer(texts), ids, {"all": pairs}, ks, query_tile=3, pool_tile=8)
    for k in ks:
        assert got["all"].recalls[k] == pytest.approx(expected[k], abs=1e-12), k


def test_text_baselines_need_the_target_in_the_pool():
    from notellm2_pl.retrieval.text_baselines import sparse_ranks, tfidf_scorer

    scorer = tfidf_scorer(["a cat", "a dog", "cat dog"])
    with pytest.raises(ValueError, match="target must be in the pool"):
        sparse_ranks(scorer, np.array([0]), np.array([1]), np.array([2]))


# ------------------------------------------------------------------------------------------------ the check
def test_baseline_check_rule_and_best_baseline():
    from notellm2_pl.analysis.baseline_check import baseline_check, format_baseline_check

    model = {"all": 0.50, "shortquery": 0.10}
    base = {"tfidf": {"all": 0.30, "shortquery": 0.20}, "bm25": {"all": 0.40, "shortquery": 0.05}}
    ok = baseline_check(model, base, {"all": 400, "shortquery": 100}, {("bm25", "all"): 0.04})
    assert ok.ok and ok.verdict.baseline == "bm25" and ok.verdict.margin == pytest.approx(2.5)
    assert [c.baseline for c in ok.comparisons] == ["bm25", "tfidf"]  # best per pair set
    text = format_baseline_check(ok)
    assert text.startswith("baseline check, Recall@10: ok") and "not on every pair set" in text
    assert "shortquery: model 0.100 < tfidf 0.200" in text
    close = baseline_check(model, base, {"all": 400}, {("bm25", "all"): 0.06})  # 1.7 standard errors: not enough
    assert not close.ok and "WARNING" in format_baseline_check(close)
    assert "recipes/minilm_effnet.yaml" in format_baseline_check(close)
    assert baseline_check({"all": float("nan")}, base, {"all": 0}).verdict is None


def _tiny_data(root: Path) -> Path:
    from notellm2_pl.data.synthetic import PRESETS, generate

    generate(root, PRESETS["tiny"])
    return root


@pytest.fixture(scope="module")
def tiny_pool(tmp_path_factory):
    """The tiny synthetic dataset's test pool: (root, ids, notes in order, pair sets)."""
    from notellm2_pl.retrieval.evaluation import NotesInOrder, load_test_pool

    root = _tiny_data(tmp_path_factory.mktemp("tinydata") / "data")
    ids, notes, pair_sets = load_test_pool(root)
    return root, ids, list(NotesInOrder(notes, ids)), pair_sets


def _embeddings(ids: list[str], pairs: list[tuple[str, str]], good: bool, seed: int = 0) -> np.ndarray:
    """Random unit rows; with ``good``, each pair's query and target share one private direction (rank 0)."""
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(len(ids), 256)).astype(np.float32)
    if good:
        row = {nid: i for i, nid in enumerate(ids)}
        for j, (q, t) in enumerate(pairs):
            emb[row[q], :] = emb[row[t], :] = 0.0
            emb[row[q], j % 256] = emb[row[t], j % 256] = 1.0
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


@pytest.mark.parametrize("good", [False, True])
def test_baseline_check_fires_on_losers_and_not_on_winners(tiny_pool, good):
    from notellm2_pl.analysis.baseline_check import check_results, format_baseline_check
    from notellm2_pl.retrieval.recall import evaluate_subsets
    from notellm2_pl.retrieval.text_baselines import evaluate_text_baseline

    _, ids, notes, pair_sets = tiny_pool
    tfidf = evaluate_text_baseline("tfidf_words", notes, ids, pair_sets, [10])
    assert tfidf["all"].recalls[10] > 0.3  # the templated synthetic text: TF-IDF does well
    model = evaluate_subsets(_embeddings(ids, pair_sets["all"], good), ids, pair_sets, ks=[10])
    check = check_results(model, {"tfidf_words": tfidf}, k=10)
    line = format_baseline_check(check)
    assert check.ok is good
    assert ("WARNING" in line) is not good
    assert check.verdict.baseline == "tfidf_words" and check.verdict.num_queries == tfidf["all"].num_queries


# ------------------------------------------------------------------------------------------------ cache
def test_cache_is_hit_then_invalidated_by_a_changed_file(tmp_path, monkeypatch):
    from notellm2_pl.analysis import baseline_cache
    from notellm2_pl.analysis import baselines as bl
    from notellm2_pl.retrieval.evaluation import NotesInOrder, load_test_pool

    root = _tiny_data(tmp_path / "data")
    ids, notes, pair_sets = load_test_pool(root)
    pool = bl.BaselinePool(ids, NotesInOrder(notes, ids), pair_sets, [10, 20], baseline_cache.dataset_fingerprint(root))
    cache = baseline_cache.BaselineCache(tmp_path / "cache")
    planned = bl.plan_baselines(["tfidf_char", "bm25"], None)
    calls = []
    real = bl.compute_baseline
    monkeypatch.setattr(bl, "compute_baseline", lambda b, p: calls.append(b.name) or real(b, p))
    first = bl.run_baselines(planned, pool, cache)
    assert calls == ["tfidf_char", "bm25"]
    second = bl.run_baselines(planned, pool.__class__(**{**pool.__dict__, "ks": [10, 50]}), cache)
    assert calls == ["tfidf_char", "bm25"]  # all from the cache
    for name in first:
        assert second[name]["all"].recalls[10] == first[name]["all"].recalls[10]
        assert 50 in second[name]["all"].recalls  # any K, from the cached counts
        np.testing.assert_array_equal(second[name]["all"].hits(10), first[name]["all"].hits(10))
    notes_file = next(root.glob("notes_test.*"))
    os.utime(notes_file, ns=(notes_file.stat().st_atime_ns, notes_file.stat().st_mtime_ns + 10**9))
    pool = pool.__class__(**{**pool.__dict__, "fingerprint": baseline_cache.dataset_fingerprint(root)})
    bl.run_baselines(planned, pool, cache)
    assert calls == ["tfidf_char", "bm25"] * 2  # a changed test file: a new key
    assert len(list((tmp_path / "cache").glob("tfidf_char-*.json"))) == 2


def test_parse_baselines():
    from notellm2_pl.analysis.baselines import DEFAULT_BASELINES, parse_baselines, plan_baselines

    assert parse_baselines(None) == DEFAULT_BASELINES.split(",")
    assert parse_baselines("none") == []
    assert parse_baselines("bm25", ["st:models/x", "st:models/x"]) == ["bm25", "st:models/x"]
    with pytest.raises(ValueError, match="Unknown baseline"):
        parse_baselines("tfidf")
    with pytest.raises(ValueError, match="st:PATH"):
        parse_baselines("bm25", ["models/x"])
    planned = plan_baselines(["tfidf_char", "untrained", "st:a/minilm", "st:b/minilm"], None)  # no model: no untrained
    assert [b.name for b in planned] == ["tfidf_char", "st:minilm", "st:minilm#2"]


# ------------------------------------------------------------------------------------------------ evaluate
def test_evaluate_embeddings_prints_baselines_and_check(tiny_pool, tmp_path, capsys):
    from notellm2_pl.commands.evaluate import main as cli_main
    from notellm2_pl.retrieval.prediction_writer import write_embeddings

    root, ids, _, pair_sets = tiny_pool
    emb_dir = write_embeddings(tmp_path / "emb", ids, {"e_m": _embeddings(ids, pair_sets["all"], good=False)},
                               data_root=os.fspath(root))
    out = tmp_path / "eval"
    argv = ["--embeddings", str(emb_dir), "--out", str(out), "--no_tb", "--ks", "10,20", "--baselines",
            "tfidf_words", "--baselines_cache", str(tmp_path / "cache")]
    assert cli_main(argv) == 0
    text = capsys.readouterr().out
    assert "Baselines (no training" in text and "tfidf_words/all" in text and "tfidf_words/shortquery" in text
    assert "baseline check, Recall@10: WARNING" in text
    res = json.loads((out / "results.json").read_text())
    assert set(res["baselines"]) == {"tfidf_words"} and res["baselines"]["tfidf_words"]["all"]["num_queries"] > 0
    assert res["baseline_check"]["ok"] is False and res["baseline_check"]["comparisons"][0]["subset"] == "all"
    assert cli_main([*argv[:7], "--baselines", "none"]) == 0
    assert "baseline" not in capsys.readouterr().out.lower()


# ------------------------------------------------------------------------------------------------ model baselines
def _tiny_sentence_transformer(folder: Path) -> Path:
    """A 2-layer, 32-wide BERT with mean pooling, saved as a sentence-transformers folder (no download)."""
    from sentence_transformers import SentenceTransformer
    from transformers import BertConfig, BertModel, BertTokenizer

    try:
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Pooling, Transformer

    bert = folder / "bert"
    bert.mkdir(parents=True)
    (bert / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tok = BertTokenizer(str(bert / "vocab.txt"))
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(bert)
    tok.save_pretrained(bert)
    word = Transformer(str(bert), max_seq_length=32)
    dim = getattr(word, "get_embedding_dimension", None) or word.get_word_embedding_dimension
    SentenceTransformer(modules=[word, Pooling(dim(), "mean")]).save(str(folder / "st"))
    return folder / "st"


def test_sentence_transformers_folder_baseline(tmp_path):
    from notellm2_pl.analysis.baselines import BaselinePool, plan_baselines, run_baselines
    from notellm2_pl.inference.baselines import sentence_transformer_embeddings

    path = _tiny_sentence_transformer(tmp_path / "mini")
    notes = _notes(30)
    emb = sentence_transformer_embeddings(path, notes, batch_size=8)
    assert emb.shape == (30, 32) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(emb[4], emb[5], atol=1e-6)  # the duplicate note
    ids = [n.note_id for n in notes]
    planned = plan_baselines([f"st:{path}"], None)
    assert [b.name for b in planned] == ["st:st"]
    res = run_baselines(planned, BaselinePool(ids, notes, {"all": _pairs(30, 20)}, [5], {"source": "test"}))
    assert res["st:st"]["all"].num_queries > 0
    with pytest.raises(FileNotFoundError, match="no such folder"):
        sentence_transformer_embeddings(tmp_path / "missing", notes)


def test_untrained_backbones_pool_like_the_model(exported):
    import torch
    import torch.nn.functional as F

    from notellm2_pl.analysis.baselines import plan_baselines
    from notellm2_pl.data.images import build_image_transform, load_image
    from notellm2_pl.data.processing import NoteFormat, NoteProcessor
    from notellm2_pl.data.prompts import TextLimits
    from notellm2_pl.inference.baselines import build_backbone, untrained_llm_embeddings, untrained_vision_embeddings
    from notellm2_pl.inference.export import read_export_config
    from notellm2_pl.retrieval.evaluation import NotesInOrder, load_test_pool

    cfg = read_export_config(exported["export"])
    planned = plan_baselines(["untrained"], cfg["model"], cfg["data"])
    assert [b.kind for b in planned] == ["untrained_llm", "untrained_vision"]
    ids, notes, _ = load_test_pool(exported["data"])
    notes = list(NotesInOrder(notes, ids))[:6]
    llm_spec, vision_spec = cfg["model"]["llm"], cfg["model"]["vision"]
    emb = untrained_llm_embeddings(llm_spec, notes, cfg["data"], batch_size=4)
    # by hand: the note's text template + suffix (the model's tokenisation), the decoder's state at its last token,
    # L2-normalised, no head
    llm = build_backbone("llm", llm_spec)
    fmt = NoteFormat(llm.tokenizer, None, "text", "en", [], [], None)
    limits = TextLimits(*(int(cfg["data"].get(k, d)) for k, d in
                          (("title_chars", 20), ("content_chars", 80), ("max_tags", 10))))
    ids0, _, _ = NoteProcessor(fmt, limits, int(cfg["data"]["max_tokens"])).tokenize(notes[0])
    with torch.inference_mode():
        x = torch.tensor([ids0])
        h = llm(llm.embed_tokens(x), torch.ones_like(x)).hidden[0, -1]
    np.testing.assert_allclose(emb[0], F.normalize(h, dim=-1).numpy(), atol=1e-4)
    vis = untrained_vision_embeddings(vision_spec, notes, batch_size=4)
    tower = build_backbone("vision", vision_spec)
    with torch.inference_mode():
        px = build_image_transform(tower.image_config)(load_image(notes[1].image))[None]
        pooled = F.normalize(tower(px).pooled, dim=-1)[0].numpy()
    np.testing.assert_allclose(vis[1], pooled, atol=1e-5)


# ------------------------------------------------------------------------------------------------ ablate summary
def _record(name: str, seed: int, r10: float) -> dict:
    return {"name": name, "seed": seed, "metrics": {"recall/all/full/R@10": r10, "recall/all/full/R@100": 0.9},
            "num_queries": {"all": 300},
            "baselines": {"bm25": {"recalls": {"all": {"10": 0.4, "100": 0.8}}, "num_queries": {"all": 300}},
                          "tfidf_char": {"recalls": {"all": {"10": 0.45, "100": 0.85}}, "num_queries": {"all": 300}}}}


def test_summary_shows_baselines_once_per_grid_and_checks_each_variant(tmp_path):
    import csv

    from notellm2_pl.analysis.summary import write_summary

    records = [_record("basic", 0, 0.60), _record("basic", 1, 0.62), _record("weak", 0, 0.46),
               {**_record("old", 0, 0.5), "baselines": None}]  # a run recorded before baselines existed
    write_summary(tmp_path, ["basic", "weak", "old"], "g", records)
    md = (tmp_path / "summary.md").read_text()
    assert md.count("| bm25 | baseline | 0.400 / 0.800 |") == 1 and md.count("| tfidf_char | baseline |") == 1
    assert "## Baseline check" in md
    assert "| basic | 0.610 | tfidf_char | 0.450 | +4.0 SE | ok |" in md  # sqrt(.61*.39/300 + .45*.55/300)
    assert "| weak | 0.460 | tfidf_char | 0.450 | +0.2 SE | WARNING |" in md and "recipes/minilm_effnet.yaml" in md
    rows = [r for r in csv.DictReader((tmp_path / "summary.csv").open()) if r["probe"] == "baseline"]
    assert [(r["variant"], r["subset"], r["R@10"]) for r in rows] == [("bm25", "all", "0.4"), ("tfidf_char", "all",
                                                                                                 "0.45")]
