"""FAISS top-k retrieval over note embeddings: build, search (sharded), save/load (atomic), recall vs exact.

Exact Recall@K for evaluation lives in :mod:`notellm2_pl.retrieval.recall`; this module serves top-k search (e.g. to
show or export neighbours) and approximate indexes for large pools.

Index kinds (all inner product, i.e. cosine on L2-normalised float32 embeddings):

- ``"flat"``: ``IndexFlatIP``, exact brute force. The default.
- ``"ivf"``: ``IndexIVFFlat`` with ``nlist`` inverted lists (k-means trained on up to ``train_size`` rows); search
  visits ``nprobe`` lists. Higher ``nprobe`` = better recall, slower search.
- ``"hnsw"``: ``IndexHNSWFlat`` graph with ``M`` neighbours per node, built with ``ef_construction`` and searched
  with ``ef_search`` candidates. Higher = better recall, slower (and slower to build).

The faiss index stores rows by position 0..N-1; :class:`IdIndex` keeps the external ids (note id strings or
integers) in a parallel array, saved next to the index file as ``<path>.ids.npy``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np
from numpy.typing import ArrayLike

from notellm2_pl.atomic import atomic_open
from notellm2_pl.retrieval.ranking import as_float32_matrix, topk_overlap

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

INDEX_KINDS: tuple[str, ...] = ("flat", "ivf", "hnsw")


@dataclass
class IdIndex:
    """A faiss index plus the external id of each stored row.

    Attributes:
        index: The faiss index; row ``i`` of it is ``ids[i]``.
        ids: (ntotal,) external ids (str or int64).
    """

    index: faiss.Index
    ids: np.ndarray

    @property
    def kind(self) -> str:
        """``"flat"``, ``"ivf"``, ``"hnsw"`` or the faiss class name for other indexes."""
        inner = faiss.downcast_index(self.index)
        if isinstance(inner, faiss.IndexFlat):
            return "flat"
        if isinstance(inner, faiss.IndexIVF):
            return "ivf"
        if isinstance(inner, faiss.IndexHNSW):
            return "hnsw"
        return type(inner).__name__

    @property
    def ntotal(self) -> int:
        """Number of stored rows."""
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self.index.d)


def _as_float32(x: ArrayLike | torch.Tensor, name: str) -> np.ndarray:
    """C-contiguous float32 (N, d) copy-if-needed of ``x`` (numpy or torch), checked to be finite."""
    arr = as_float32_matrix(x, name)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf; check the model outputs before indexing.")
    return arr


def _warn_if_not_normalised(x: np.ndarray, name: str, tol: float = 1e-3) -> None:
    rows = x[:10_000]
    if rows.size and float(np.abs(np.linalg.norm(rows, axis=1) - 1.0).max()) > tol:
        log.warning("%s are not L2-normalised; inner product is then not cosine. Normalise them first.", name)


def set_search_params(index: IdIndex | faiss.Index, nprobe: int | None = None, ef_search: int | None = None) -> None:
    """Change search-time parameters in place.

    Args:
        index: The index.
        nprobe: Inverted lists visited per query (IVF only).
        ef_search: Candidate list size (HNSW only).

    Raises:
        ValueError: If a parameter does not apply to this index kind.
    """
    raw = index.index if isinstance(index, IdIndex) else index
    inner = faiss.downcast_index(raw)
    if nprobe is not None:
        if not isinstance(inner, faiss.IndexIVF):
            raise ValueError(f"nprobe applies to IVF indexes only, this one is {type(inner).__name__}.")
        inner.nprobe = int(min(max(nprobe, 1), inner.nlist))
    if ef_search is not None:
        if not isinstance(inner, faiss.IndexHNSW):
            raise ValueError(f"ef_search applies to HNSW indexes only, this one is {type(inner).__name__}.")
        inner.hnsw.efSearch = int(ef_search)


def build_index(
    emb: np.ndarray,
    kind: str = "flat",
    ids: Sequence[str] | Sequence[int] | np.ndarray | None = None,
    *,
    nlist: int | None = None,
    nprobe: int = 16,
    train_size: int | None = None,
    M: int = 32,
    ef_construction: int = 200,
    ef_search: int = 128,
    seed: int = 0,
) -> IdIndex:
    """Build an inner-product index over L2-normalised float32 embeddings.

    Args:
        emb: (N, d) embeddings (cast to float32; a warning is logged if rows are not unit norm).
        kind: ``"flat"`` (exact), ``"ivf"`` or ``"hnsw"``.
        ids: N external ids (note ids); ``None`` uses positions ``0..N-1``.
        nlist: IVF lists; ``None`` = ``round(4 * sqrt(N))`` clamped to ``[1, N]``.
        nprobe: IVF lists visited per query.
        train_size: IVF k-means training rows (a seeded random sample); ``None`` = ``min(N, 256 * nlist)``.
        M: HNSW neighbours per node.
        ef_construction: HNSW build-time candidate list size.
        ef_search: HNSW search-time candidate list size.
        seed: Seed for the IVF training sample and k-means.

    Returns:
        The :class:`IdIndex`.

    Raises:
        ValueError: On an unknown ``kind``, empty input, or an ``ids`` length mismatch.
    """
    x = _as_float32(emb, "emb")
    n = x.shape[0]
    if n == 0:
        raise ValueError("Cannot build an index over 0 embeddings.")
    _warn_if_not_normalised(x, "Indexed embeddings")
    id_arr = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids)
    if id_arr.shape != (n,):
        raise ValueError(f"ids has {id_arr.shape[0] if id_arr.ndim else 0} entries for {n} embeddings; pass one each.")
    if kind == "flat":
        index: faiss.Index = faiss.IndexFlatIP(x.shape[1])
    elif kind == "ivf":
        index = _trained_ivf(x, nlist, train_size, seed)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(x.shape[1], int(M), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(ef_construction)
    else:
        raise ValueError(f"Unknown index kind {kind!r}; choose one of {INDEX_KINDS}.")
    index.add(x)
    out = IdIndex(index=index, ids=id_arr)
    if kind == "ivf":
        set_search_params(out, nprobe=nprobe)
    elif kind == "hnsw":
        set_search_params(out, ef_search=ef_search)
    return out


def _trained_ivf(x: np.ndarray, nlist: int | None, train_size: int | None, seed: int) -> faiss.IndexIVFFlat:
    """An empty ``IndexIVFFlat`` with k-means lists trained on a seeded sample of ``x`` (see :func:`build_index`)."""
    n, d = x.shape
    nl = int(nlist) if nlist is not None else round(4 * math.sqrt(n))
    nl = max(1, min(nl, n))
    quantizer = faiss.IndexFlatIP(d)
    ivf = faiss.IndexIVFFlat(quantizer, d, nl, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.seed = seed
    ts = min(n, int(train_size) if train_size is not None else 256 * nl)
    sample = x if ts >= n else x[np.sort(np.random.default_rng(seed).choice(n, ts, replace=False))]
    ivf.train(sample)
    return ivf


def _missing_id(ids: np.ndarray) -> Any:
    return "" if ids.dtype.kind in "US" else -1


def search(
    index: IdIndex | faiss.Index,
    queries: np.ndarray,
    k: int,
    batch_size: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k inner-product search, sharded over query batches so memory stays bounded.

    Args:
        index: An :class:`IdIndex` (ids are mapped back) or a bare faiss index (positions are returned).
        queries: (Q, d) L2-normalised query embeddings.
        k: Neighbours per query; clamped to the index size.
        batch_size: Queries per faiss call.

    Returns:
        ``(scores, ids)``, both (Q, k') with ``k' = min(k, ntotal)``, best first. Slots an approximate index could
        not fill have score ``-inf`` and id ``-1`` (``""`` for string ids).

    Raises:
        ValueError: On a dimension mismatch or non-positive ``k``/``batch_size``.
    """
    raw = index.index if isinstance(index, IdIndex) else index
    q = _as_float32(queries, "queries")
    if q.shape[1] != raw.d:
        raise ValueError(f"queries have dim {q.shape[1]} but the index has dim {raw.d}.")
    if k <= 0 or batch_size <= 0:
        raise ValueError("k and batch_size must be positive.")
    kk = int(min(k, raw.ntotal))
    nq = q.shape[0]
    scores = np.empty((nq, kk), dtype=np.float32)
    labels = np.empty((nq, kk), dtype=np.int64)
    for s in range(0, nq, batch_size):
        e = min(s + batch_size, nq)
        scores[s:e], labels[s:e] = raw.search(q[s:e], kk)
    missing = labels < 0
    scores[missing] = -np.inf
    if not isinstance(index, IdIndex):
        return scores, labels
    ids = index.ids[np.where(missing, 0, labels)]
    if missing.any():
        ids[missing] = _missing_id(index.ids)
    return scores, ids


def ids_path(path: str | os.PathLike[str]) -> Path:
    """Where :func:`save_index` puts the id array for an index saved at ``path``."""
    p = Path(path)
    return p.with_name(p.name + ".ids.npy")


def save_index(index: IdIndex, path: str | os.PathLike[str]) -> None:
    """Save the faiss index to ``path`` and its ids to ``<path>.ids.npy``, each atomically.

    The index file is plain faiss format (``faiss.read_index`` opens it). Ids are written first, the index last.

    Args:
        index: The :class:`IdIndex` to save.
        path: Destination of the index file.

    Raises:
        ValueError: If the ids are Python objects (store str or int ids).
    """
    if index.ids.dtype.kind == "O":
        raise ValueError("Cannot save object-dtype ids; convert them to str or int (np.asarray(ids, dtype=str)).")
    with atomic_open(ids_path(path), "wb") as f:
        np.save(f, index.ids, allow_pickle=False)
    with atomic_open(path, "wb") as f:
        faiss.write_index(index.index, faiss.PyCallbackIOWriter(f.write))  # streamed: no in-memory copy


def load_index(path: str | os.PathLike[str]) -> IdIndex:
    """Load an index saved by :func:`save_index`.

    Args:
        path: The index file; ``<path>.ids.npy`` must sit next to it.

    Returns:
        The :class:`IdIndex`, with the search parameters it was saved with.

    Raises:
        FileNotFoundError: If either file is missing.
        ValueError: If the id count does not match the index (files from different saves).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"No index at {p}; build one with build_index(...) and save_index(...).")
    ip = ids_path(p)
    if not ip.is_file():
        raise FileNotFoundError(f"Index {p} has no id file {ip}; re-save it with save_index(...).")
    index = faiss.read_index(os.fspath(p))
    ids = np.load(ip, allow_pickle=False)
    if ids.shape != (index.ntotal,):
        raise ValueError(f"{ip} holds {ids.shape[0]} ids but {p} holds {index.ntotal} rows; re-save the index.")
    return IdIndex(index=index, ids=ids)


def recall_vs_exact(
    approx_index: IdIndex | faiss.Index,
    exact_index: IdIndex | faiss.Index,
    queries: np.ndarray,
    k: int = 10,
    batch_size: int = 4096,
) -> float:
    """Mean overlap of the approximate top-k with the exact top-k: ``mean_q |A_q ∩ E_q| / k``, a neighbour tied with
    the exact k-th counted as found (:func:`~notellm2_pl.retrieval.ranking.topk_overlap`).

    Both indexes must hold the same rows in the same order (compare by position).

    Args:
        approx_index: The approximate (IVF/HNSW) index.
        exact_index: A flat index over the same rows.
        queries: (Q, d) query embeddings.
        k: Neighbours compared; clamped to the index size.
        batch_size: Queries per faiss call.

    Returns:
        The overlap in ``[0, 1]`` (1.0 = identical top-k sets; ``nan`` for no queries).

    Raises:
        ValueError: If the indexes hold different numbers of rows.
    """
    a_raw = approx_index.index if isinstance(approx_index, IdIndex) else approx_index
    e_raw = exact_index.index if isinstance(exact_index, IdIndex) else exact_index
    if a_raw.ntotal != e_raw.ntotal:
        raise ValueError(f"Indexes hold {a_raw.ntotal} vs {e_raw.ntotal} rows; build both over the same embeddings.")
    q = _as_float32(queries, "queries")
    if q.shape[0] == 0:
        return float("nan")
    kk = int(min(k, e_raw.ntotal))
    a_s, a = search(a_raw, q, kk, batch_size)
    e_s, e = search(e_raw, q, kk, batch_size)
    return float(topk_overlap(a_s, a, e_s, e).sum() / (q.shape[0] * kk))
