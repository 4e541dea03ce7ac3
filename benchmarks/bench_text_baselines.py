"""Benchmark the sparse text baselines at scale: fit time, ranking time and peak memory (docs/evaluation.md#baselines).

Notes are the demo dataset's training notes (``data/synthetic``: ``python -m notellm2_pl synth --out data/synthetic``)
repeated to ``--notes`` notes, each with four random words of the corpus appended (so no two notes are identical);
``--queries`` random pairs, so Recall@K itself is meaningless here: only the cost is measured. The ranking is the
exact tiled one (:func:`notellm2_pl.retrieval.text_baselines.evaluate_scorer`). Peak RSS is the process high-water
mark after each baseline (it includes the earlier ones).

Run (by hand, not in tests)::

    python benchmarks/bench_text_baselines.py --notes 1000000 --queries 2000 --baselines tfidf_words,bm25
    python benchmarks/bench_text_baselines.py --notes 300000 --queries 1000 --baselines tfidf_char
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import pandas as pd

from notellm2_pl.retrieval.text_baselines import build_scorer, evaluate_scorer


def synthetic_texts(source: str, n: int, seed: int = 0) -> list[str]:
    """``n`` texts: the source notes' title, topics and content in turn, each plus four random corpus words."""
    df = pd.read_csv(source)
    base = (df.title.fillna("") + " " + df.topics.fillna("").str.replace("|", " ") + " "
            + df.content.fillna("")).tolist()
    rng = np.random.default_rng(seed)
    words = np.array(" ".join(base).split())
    return [base[i % len(base)] + " " + " ".join(words[rng.integers(0, words.size, 4)]) for i in range(n)]


def main() -> None:
    """Fit and rank each baseline; print one line per baseline."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--notes", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--baselines", default="tfidf_words,bm25,tfidf_char")
    p.add_argument("--source", default="data/synthetic/notes_train.csv")
    args = p.parse_args()
    texts = synthetic_texts(args.source, args.notes)
    ids = [f"n{i}" for i in range(args.notes)]
    perm = np.random.default_rng(1).permutation(args.notes)
    q = args.queries
    pairs = [(ids[a], ids[b]) for a, b in zip(perm[:q], perm[q:2 * q], strict=True)]
    print(f"{args.notes} notes ({np.mean([len(t) for t in texts]):.0f} characters on average), {q} queries")
    for name in args.baselines.split(","):
        t0 = time.perf_counter()
        scorer = build_scorer(name, texts)
        t1 = time.perf_counter()
        evaluate_scorer(scorer, ids, {"all": pairs}, [10])
        t2 = time.perf_counter()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        print(f"{name}: {scorer.docs.nnz / args.notes:.0f} non-zeros per note, fit {t1 - t0:.1f} s, ranking "
              f"{t2 - t1:.1f} s ({(t2 - t1) / (q * (args.notes - q)) * 1e9:.1f} ns per score), peak RSS {rss:.2f} GB",
              flush=True)


if __name__ == "__main__":
    main()
