"""Zero-training text baselines: TF-IDF (words, character n-grams) and BM25, ranked by the exact Recall@K protocol.

Each baseline turns every test note's text (:func:`note_text`: title, topics and content, untruncated) into sparse
rows and scores a query note ``q`` against a pool note ``p`` by the inner product ``<A[q], B[p]>`` of a query-side
row and a document-side row (:class:`SparseScorer`):

* ``tfidf_words``: scikit-learn's ``TfidfVectorizer`` (word unigrams, its default tokeniser, L2-normalised rows), so
  the score is the cosine of the two notes' TF-IDF vectors (``A = B``).
* ``tfidf_char``: the same over character 3-5-grams inside word boundaries (``analyzer="char_wb"``).
* ``bm25``: ``bm25s`` (Lucene BM25, ``k1 = 1.5``, ``b = 0.75``, English stop words). ``B`` holds each note's
  precomputed BM25 term weights, ``A`` the query note's token counts, so ``<A[q], B[p]>`` is exactly what
  ``bm25s.BM25.get_scores`` returns for the query note's tokens against document ``p``. Not symmetric.

Every model is fitted on all test notes (no training data: these are zero-training baselines; the queries being part
of the IDF statistics is the usual transductive setting of a catalogue that is indexed as a whole).

Ranking (:func:`sparse_ranks`) never builds a dense ``(N, N)`` or ``(N, vocabulary)`` matrix: the pool is scanned in
tiles, each ``(query tile x pool tile)`` block of scores is one scipy sparse product made dense only as a
``(b, m)`` float32 block, and the block goes to the same
:class:`~notellm2_pl.retrieval.scoring.RankCounter` as the dense path, so higher / tied counts, the tie rule
(docs/method.md#ties) and Recall@K follow the protocol of :mod:`notellm2_pl.retrieval.recall` exactly
(:func:`~notellm2_pl.retrieval.recall.evaluate_protocol`). Memory: the sparse matrices (one float32 + one int32 per
non-zero) and one block per worker thread (scipy releases the GIL in its sparse products). Measured on the 2-core
development machine shared with other jobs (``benchmarks/bench_text_baselines.py``, docs/evaluation.md#baselines):
1,000,000 notes of ~170 characters and 2,000 queries, word TF-IDF fits in 22 s and ranks in 75 s (peak RSS 1.7 GB),
BM25 in 46 s and 48 s (2.9 GB); character n-grams (266 non-zeros per note) on 300,000 notes and 1,000 queries in 50 s
and 42 s (2.6 GB), about 140 ns per score.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from notellm2_pl.data.tables import Note
from notellm2_pl.retrieval.pairs import Pair
from notellm2_pl.retrieval.ranks import Ranks
from notellm2_pl.retrieval.recall import EvalResult, evaluate_protocol
from notellm2_pl.retrieval.scoring import DEFAULT_POOL_TILE, DEFAULT_QUERY_TILE, RankCounter, mask_excluded

TEXT_BASELINES: tuple[str, ...] = ("tfidf_words", "tfidf_char", "bm25")
"""Names of the text baselines, in report order."""

BM25_STOPWORDS = "en"
"""Stop-word list of the BM25 tokeniser (``bm25s.tokenize``)."""

SETTINGS: dict[str, dict[str, object]] = {
    "tfidf_words": {"analyzer": "word", "ngram_range": (1, 1)},
    "tfidf_char": {"analyzer": "char_wb", "ngram_range": (3, 5)},
    "bm25": {"method": "lucene", "k1": 1.5, "b": 0.75, "stopwords": BM25_STOPWORDS},
}
"""Each baseline's settings (also part of the cache key of :mod:`notellm2_pl.analysis.baselines`)."""


def note_text(note: Note) -> str:
    """The text a baseline reads: title, topics and content (the fields the data layer reads), space-separated."""
    return " ".join(part for part in (note.title, " ".join(note.topics), note.content) if part.strip())


@dataclass(frozen=True)
class SparseScorer:
    """Scores ``s(q, p) = <queries[q], docs[p]>`` between notes given as sparse rows of one vocabulary.

    Attributes:
        queries: (N, V) CSR float32 query-side rows, one per note.
        docs: (N, V) CSR float32 document-side rows, one per note (the same rows as ``queries`` for TF-IDF).
    """

    queries: sp.csr_matrix
    docs: sp.csr_matrix

    def scores(self, query_rows: np.ndarray, pool_rows: np.ndarray) -> np.ndarray:
        """Dense ``(len(query_rows), len(pool_rows))`` float32 scores (small blocks and tests only)."""
        return _block(self.queries[query_rows], self.docs[pool_rows].T.tocsr())


def tfidf_scorer(texts: Sequence[str], analyzer: str = "word", ngram_range: tuple[int, int] = (1, 1)) -> SparseScorer:
    """A TF-IDF cosine scorer over ``texts`` (scikit-learn ``TfidfVectorizer``, L2-normalised rows).

    Args:
        texts: One text per note.
        analyzer: ``word`` or ``char_wb`` (character n-grams inside word boundaries).
        ngram_range: N-gram lengths.

    Returns:
        The scorer (``queries`` and ``docs`` are the same matrix).
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(analyzer=analyzer, ngram_range=ngram_range, dtype=np.float32)
    try:
        x = vec.fit_transform(list(texts)).tocsr()  # (N, V)
    except ValueError:  # empty vocabulary: no note has a token
        x = sp.csr_matrix((len(texts), 1), dtype=np.float32)
    x.sort_indices()
    return SparseScorer(x, x)


def bm25_scorer(texts: Sequence[str], k1: float = 1.5, b: float = 0.75, method: str = "lucene",
                stopwords: str = BM25_STOPWORDS) -> SparseScorer:
    """A BM25 scorer over ``texts`` (``bm25s``): document rows = BM25 term weights, query rows = token counts.

    Args:
        texts: One text per note (queries and documents alike).
        k1: BM25 term-frequency saturation.
        b: BM25 length normalisation.
        method: ``bm25s`` scoring variant.
        stopwords: Stop-word list of ``bm25s.tokenize``.

    Returns:
        The scorer; ``<queries[q], docs[p]>`` equals ``bm25s.BM25.get_scores(tokens of q)[p]``.
    """
    import bm25s

    tokens = bm25s.tokenize(list(texts), stopwords=stopwords, show_progress=False)
    index = bm25s.BM25(k1=k1, b=b, method=method)
    index.index(tokens, show_progress=False)
    s = index.scores
    n, vocab = int(s["num_docs"]), len(s["indptr"]) - 1
    docs = sp.csc_matrix((s["data"], s["indices"], s["indptr"]), shape=(n, vocab)).astype(np.float32).tocsr()
    lengths = np.fromiter((len(ids) for ids in tokens.ids), dtype=np.int64, count=n)
    rows = np.repeat(np.arange(n, dtype=np.int64), lengths)  # (total tokens,)
    cols = np.fromiter((t for ids in tokens.ids for t in ids), dtype=np.int64, count=int(lengths.sum()))
    queries = sp.csr_matrix((np.ones(cols.size, np.float32), (rows, cols)), shape=(n, vocab))  # duplicates summed
    docs.sort_indices()
    queries.sort_indices()
    return SparseScorer(queries, docs)


def build_scorer(name: str, texts: Sequence[str]) -> SparseScorer:
    """The scorer of one of :data:`TEXT_BASELINES` with its :data:`SETTINGS`.

    Raises:
        ValueError: For an unknown name.
    """
    if name not in SETTINGS:
        raise ValueError(f"Unknown text baseline {name!r}; choose from {', '.join(TEXT_BASELINES)}.")
    settings = dict(SETTINGS[name])
    if name == "bm25":
        return bm25_scorer(texts, **settings)  # type: ignore[arg-type]
    return tfidf_scorer(texts, **settings)  # type: ignore[arg-type]


def _block(a: sp.csr_matrix, bt: sp.csr_matrix) -> np.ndarray:
    """``a @ bt`` as a dense C-contiguous float32 block: ``(b, V) x (V, m) -> (b, m)``."""
    return np.ascontiguousarray((a @ bt).toarray(), dtype=np.float32)


def _target_scores(scorer: SparseScorer, q_rows: np.ndarray, t_rows: np.ndarray, tile: int) -> np.ndarray:
    """(Q,) each query's score against its own target, through the same sparse product as the pool blocks."""
    out = np.empty(q_rows.size, dtype=np.float32)
    for q0 in range(0, q_rows.size, tile):
        q1 = min(q0 + tile, q_rows.size)
        block = _block(scorer.queries[q_rows[q0:q1]], scorer.docs[t_rows[q0:q1]].T.tocsr())  # (b, b)
        out[q0:q1] = block.diagonal()
    return out


def _pool_positions(pool_rows: np.ndarray, n: int) -> np.ndarray:
    """(N,) pool position of every row, -1 outside the pool."""
    position = np.full(n, -1, dtype=np.int64)
    position[pool_rows] = np.arange(pool_rows.size, dtype=np.int64)
    return position


def sparse_ranks(scorer: SparseScorer, query_rows: np.ndarray, target_rows: np.ndarray, pool_rows: np.ndarray, *,
                 query_tile: int = DEFAULT_QUERY_TILE, pool_tile: int = DEFAULT_POOL_TILE,
                 tie_tol: float = 1e-6, workers: int | None = None) -> Ranks:
    """Exact higher / tied counts of each query's target among the pool, by tiled sparse products.

    The pool is the outer loop (each pool tile transposed once per worker), the query tiles the inner one; each
    ``(b, m)`` float32 block, with the target's own column set to ``-inf``, goes to a
    :class:`~notellm2_pl.retrieval.scoring.RankCounter`. A :data:`~notellm2_pl.retrieval.recall.RankFn` once the
    scorer and tiles are bound.

    Args:
        scorer: The scorer (rows index the notes).
        query_rows: (Q,) row of each query note.
        target_rows: (Q,) row of each query's target; every target must be in the pool.
        pool_rows: (P,) rows of the pool notes, without duplicates.
        query_tile: Queries per block.
        pool_tile: Pool notes per block.
        tie_tol: Half-width of the tie band around the target's score.
        workers: Threads, each scanning the whole pool for its share of the query tiles (``None``: torch's thread
            count).

    Returns:
        The :class:`~notellm2_pl.retrieval.ranks.Ranks`.

    Raises:
        ValueError: On non-positive tiles, or a target that is not in the pool.
    """
    if query_tile <= 0 or pool_tile <= 0:
        raise ValueError("query_tile and pool_tile must be positive.")
    q_rows, t_rows, p_rows = (np.asarray(r, dtype=np.int64).reshape(-1) for r in (query_rows, target_rows, pool_rows))
    t_pos = _pool_positions(p_rows, scorer.docs.shape[0])[t_rows]  # (Q,) each target's pool position
    if (t_pos < 0).any():
        raise ValueError("Every target must be in the pool (the protocol keeps targets in it).")
    if q_rows.size == 0 or p_rows.size == 0:
        return Ranks.strict(np.zeros(q_rows.size, dtype=np.int64))
    qt, pt = min(query_tile, q_rows.size), min(pool_tile, p_rows.size)
    counter = RankCounter(_target_scores(scorer, q_rows, t_rows, qt), qt, pt, tie_tol)
    tiles = [(q0, scorer.queries[q_rows[q0:q0 + qt]]) for q0 in range(0, q_rows.size, qt)]
    workers = min(max(1, torch.get_num_threads() if workers is None else workers), len(tiles))
    shares = [tiles[w::workers] for w in range(workers)]  # each worker: its own query tiles, every pool tile

    def scan(share: list[tuple[int, sp.csr_matrix]]) -> None:
        for p0 in range(0, p_rows.size, pt):
            pool_t = scorer.docs[p_rows[p0:p0 + pt]].T.tocsr()  # (V, m)
            for q0, queries in share:
                scores = _block(queries, pool_t)  # (b, m)
                mask_excluded(scores, t_pos[q0:q0 + scores.shape[0]] - p0)  # the target's own column
                counter(q0, p0, scores)

    if workers == 1:
        scan(shares[0])
    else:  # scipy's sparse products and the counter release the GIL
        with ThreadPoolExecutor(workers, thread_name_prefix="sparse_ranks") as pool:
            for job in [pool.submit(scan, share) for share in shares]:
                job.result()
    return counter.ranks()


def evaluate_scorer(scorer: SparseScorer, note_ids: Sequence[str], pair_sets: Mapping[str, Sequence[Pair]],
                    ks: Iterable[int], *, query_tile: int = DEFAULT_QUERY_TILE, pool_tile: int = DEFAULT_POOL_TILE,
                    tie_tol: float = 1e-6, workers: int | None = None) -> dict[str, EvalResult]:
    """The Recall@K protocol (:func:`~notellm2_pl.retrieval.recall.evaluate_protocol`) of a sparse scorer.

    Args:
        scorer: Rows in the order of ``note_ids``.
        note_ids: N unique note ids.
        pair_sets: ``{name: pairs}``.
        ks: Recall cut-offs.
        query_tile: Queries per score block.
        pool_tile: Pool notes per score block.
        tie_tol: Tie tolerance.
        workers: Threads of :func:`sparse_ranks`.

    Returns:
        ``{pair set: EvalResult}``.
    """
    def rank_fn(q_rows: np.ndarray, t_rows: np.ndarray, pool_rows: np.ndarray) -> Ranks:
        return sparse_ranks(scorer, q_rows, t_rows, pool_rows, query_tile=query_tile, pool_tile=pool_tile,
                            tie_tol=tie_tol, workers=workers)

    return evaluate_protocol(note_ids, pair_sets, list(ks), rank_fn)


def evaluate_text_baseline(name: str, notes: Sequence[Note], note_ids: Sequence[str],
                           pair_sets: Mapping[str, Sequence[Pair]], ks: Iterable[int]) -> dict[str, EvalResult]:
    """Fit one of :data:`TEXT_BASELINES` on the notes and evaluate it on every pair set.

    Args:
        name: ``tfidf_words``, ``tfidf_char`` or ``bm25``.
        notes: The notes, in the order of ``note_ids`` (a lazy sequence is read once).
        note_ids: Their ids.
        pair_sets: ``{name: pairs}``.
        ks: Recall cut-offs.

    Returns:
        ``{pair set: EvalResult}``.
    """
    texts = [note_text(note) for note in notes]
    return evaluate_scorer(build_scorer(name, texts), note_ids, pair_sets, ks)
