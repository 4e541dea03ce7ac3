"""FAISS search over embeddings directories: build and save an index with its provenance, and I2I neighbours.

:func:`build` indexes an embeddings directory and saves ``INDEX``, ``INDEX.ids.npy`` and ``INDEX.meta.json`` (each
written atomically). :func:`neighbours` gives the top-k of query vectors with titles; :func:`stored_vectors` reads the
vectors of indexed notes back, so existing notes can be queried by id. The ``index`` and ``search`` commands are
:mod:`notellm2_pl.commands.index` and :mod:`notellm2_pl.commands.search`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from notellm2_pl.data.schema import EMBEDDING_KEYS
from notellm2_pl.data.tables import load_split
from notellm2_pl.retrieval.faiss_index import IdIndex, build_index, save_index, search
from notellm2_pl.retrieval.prediction_writer import load_embeddings, read_meta, write_json

log = logging.getLogger(__name__)


def meta_path(index_path: str | os.PathLike[str]) -> Path:
    """Where :func:`build` records the index's provenance (embeddings dir, key, dataset root)."""
    p = Path(index_path)
    return p.with_name(p.name + ".meta.json")


def build(emb_dir: str | os.PathLike[str], out: str | os.PathLike[str], key: str = EMBEDDING_KEYS[0],
          kind: str = "flat", **index_kwargs: Any) -> IdIndex:
    """Build an index over an embeddings directory and save it.

    Args:
        emb_dir: Embeddings directory (``predict`` with ``EmbeddingWriter``, or ``evaluate --save_embeddings``).
        out: Index file path.
        key: ``e_m`` or ``e_v``.
        kind: ``flat`` (exact), ``ivf`` or ``hnsw``.
        **index_kwargs: Passed to :func:`~notellm2_pl.retrieval.faiss_index.build_index` (``nlist``, ``nprobe``,
            ``M``...).

    Returns:
        The :class:`~notellm2_pl.retrieval.faiss_index.IdIndex`.
    """
    meta = read_meta(emb_dir)
    ids, emb = load_embeddings(emb_dir, key)
    index = build_index(emb, kind, np.asarray(ids, dtype=str), **index_kwargs)
    save_index(index, out)
    write_json(meta_path(out), {"embeddings": str(Path(emb_dir).resolve()), "key": key, "kind": kind,
                                "ntotal": index.ntotal, "dim": index.dim, "probe": meta.get("probe"),
                                "split": meta.get("split"), "data_root": meta.get("data_root")})
    return index


def load_titles(root: str | os.PathLike[str], splits: Sequence[str] = ("test", "train")) -> dict[str, str]:
    """Note id -> title from a dataset's notes tables (test first)."""
    titles: dict[str, str] = {}
    for split in splits:
        try:
            notes = load_split(root, split, on_error="skip").notes
        except (FileNotFoundError, ValueError) as err:
            log.info("No %s notes for titles in %s: %s", split, root, err)
            continue
        for nid, note in notes.items():
            titles.setdefault(nid, note.title)
    return titles


def stored_vectors(index: IdIndex, rows: Sequence[int]) -> np.ndarray:
    """(len(rows), d) float32 stored vectors of some rows (flat, HNSW and IVF-flat indexes)."""
    inner = faiss.downcast_index(index.index)
    if isinstance(inner, faiss.IndexIVF):
        inner.make_direct_map()
    return np.stack([inner.reconstruct(int(r)) for r in rows]).astype(np.float32)


def neighbours(index: IdIndex, queries: np.ndarray, k: int, exclude: Sequence[str | None] | None = None,
               titles: Mapping[str, str] | None = None) -> list[list[dict[str, Any]]]:
    """Top-k neighbours of each query row, best first, optionally excluding each query's own id.

    Args:
        index: The index.
        queries: (Q, d) query embeddings.
        k: Neighbours per query.
        exclude: Per query, its own note id (not listed as its neighbour), or None for a new note.
        titles: Note id -> title, for the ``title`` field.

    Returns:
        Per query, a list of ``{"rank", "note_id", "score", "title"}``.
    """
    scores, ids = search(index, queries, k + (1 if exclude else 0))
    out: list[list[dict[str, Any]]] = []
    for qi in range(len(queries)):
        own = exclude[qi] if exclude else None
        hits = []
        for s, nid in zip(scores[qi], ids[qi]):
            nid = str(nid)
            if nid == own or nid == "" or not np.isfinite(s):
                continue
            hits.append({"rank": len(hits) + 1, "note_id": nid, "score": float(s),
                         "title": (titles or {}).get(nid)})
            if len(hits) == k:
                break
        out.append(hits)
    return out


def read_index_meta(index_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The provenance :func:`build` recorded next to an index (``{}`` when there is none)."""
    path = meta_path(index_path)
    return json.loads(path.read_text()) if path.is_file() else {}


def format_neighbours(results: list[dict[str, Any]]) -> str:
    """A console table per query of ``[{"query": {...}, "neighbours": neighbours(...)[i]}, ...]``."""
    lines = []
    for r in results:
        q = r["query"]
        label = q.get("note_id") or "(new note)"
        lines.append(f"query {label}: {q.get('title') or ''}")
        width = max([len(h["note_id"]) for h in r["neighbours"]] + [7])
        lines.append(f"  {'rank':>4}  {'score':>7}  {'note_id':<{width}}  title")
        for h in r["neighbours"]:
            lines.append(f"  {h['rank']:>4}  {h['score']:>7.4f}  {h['note_id']:<{width}}  {h['title'] or ''}")
        lines.append("")
    return "\n".join(lines).rstrip()
