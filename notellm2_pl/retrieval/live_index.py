"""The live index behind ``serve``: note vectors in LanceDB, with upserts, deletes and filtered top-k on disk.

One LanceDB table ``notes`` (``note_id`` string, ``vector`` fixed-size float32 list, ``title``, ``category``) holds
L2-normalised embeddings; scores are inner products (``1 - _distance`` of LanceDB's ``dot`` distance). The table
schema records the embedding key and dimension (``notellm2.key``, ``notellm2.dim``) so a server can check that its
model produced the indexed vectors.

Every write is one LanceDB commit: when :meth:`LiveIndex.upsert` or :meth:`LiveIndex.delete` returns, a new table
version is on disk and every reader (other processes included: the connection re-reads the latest version on every
query) sees it; a killed process loses no acknowledged write. The same code runs against an object store
(``s3://bucket/path``, ``gs://...``, ``az://...``; credentials from the environment or ``storage_options``): the URI
decides. The engine choice and its figures are in docs/serving.md#live-index-engine. FAISS
(:mod:`notellm2_pl.retrieval.faiss_index`) stays the index of the offline batch paths.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from notellm2_pl.data.schema import EMBEDDING_KEYS
from notellm2_pl.data.schema import Split as SplitName
from notellm2_pl.data.tables import Note, load_split
from notellm2_pl.inference.embedder import Embedder
from notellm2_pl.retrieval.prediction_writer import load_embeddings, read_meta
from notellm2_pl.retrieval.search import load_titles

log = logging.getLogger(__name__)

TABLE = "notes"
KEY_META, DIM_META = b"notellm2.key", b"notellm2.dim"
WRITE_ROWS = 100_000  # rows per write when building, so memory stays bounded for million-note catalogues
ANN_KINDS = ("flat", "ivf")


def _schema(dim: int, key: str) -> pa.Schema:
    return pa.schema([pa.field("note_id", pa.string(), nullable=False), pa.field("vector", pa.list_(pa.float32(), dim)),
                      pa.field("title", pa.string()), pa.field("category", pa.string())],
                     metadata={KEY_META: key.encode(), DIM_META: str(dim).encode()})


def sql_str(value: str) -> str:
    """``value`` as a SQL string literal (quotes doubled), for LanceDB filters."""
    return "'" + str(value).replace("'", "''") + "'"


def _in_list(ids: Sequence[str]) -> str:
    return "(" + ", ".join(sql_str(i) for i in ids) + ")"


def _connect(uri: str | os.PathLike[str], storage_options: Mapping[str, str] | None = None) -> Any:
    """A LanceDB connection that reads the latest committed version on every query."""
    import lancedb  # optional dependency (the serve extra); imported where the live index is used

    return lancedb.connect(os.fspath(uri), read_consistency_interval=timedelta(0),
                           storage_options=dict(storage_options or {}))


class LiveIndex:
    """A LanceDB table of note vectors: upsert, delete, fetch and filtered top-k.

    Args:
        table: An open LanceDB table (use :meth:`open` or :meth:`create`).
    """

    def __init__(self, table: Any) -> None:
        self.table = table
        meta = table.schema.metadata or {}
        self.key = meta.get(KEY_META, EMBEDDING_KEYS[0].encode()).decode()
        self.dim = int(meta.get(DIM_META, b"0").decode() or 0) or table.schema.field("vector").type.list_size

    @classmethod
    def open(cls, uri: str | os.PathLike[str], storage_options: Mapping[str, str] | None = None) -> LiveIndex:
        """Open the live index at a directory or URI (``s3://...``) written by :meth:`create`.

        Raises:
            FileNotFoundError: If there is no live index there.
        """
        db = _connect(uri, storage_options)
        if TABLE not in db.table_names():
            raise FileNotFoundError(f"No live index at {uri}. Build one with `python -m notellm2_pl index "
                                    f"--embeddings DIR --out {uri} --live`.")
        return cls(db.open_table(TABLE))

    @classmethod
    def create(cls, uri: str | os.PathLike[str], dim: int, key: str = EMBEDDING_KEYS[0],
               storage_options: Mapping[str, str] | None = None) -> LiveIndex:
        """Create an empty live index (replacing any table there)."""
        db = _connect(uri, storage_options)
        return cls(db.create_table(TABLE, schema=_schema(dim, key), mode="overwrite"))

    def __len__(self) -> int:
        return int(self.table.count_rows())

    def _rows(self, ids: Sequence[str], vectors: np.ndarray, titles: Sequence[str | None] | None,
              categories: Sequence[str | None] | None) -> pa.Table:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape != (len(ids), self.dim):
            raise ValueError(f"Expected ({len(ids)}, {self.dim}) vectors, got {vectors.shape}.")
        n = len(ids)
        return pa.table({"note_id": [str(i) for i in ids],
                         "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), self.dim),
                         "title": list(titles) if titles is not None else [None] * n,
                         "category": list(categories) if categories is not None else [None] * n},
                        schema=self.table.schema)

    def add(self, ids: Sequence[str], vectors: np.ndarray, titles: Sequence[str | None] | None = None,
            categories: Sequence[str | None] | None = None) -> None:
        """Append rows whose ids are not in the index yet (bulk building; use :meth:`upsert` otherwise)."""
        self.table.add(self._rows(ids, vectors, titles, categories))

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, titles: Sequence[str | None] | None = None,
               categories: Sequence[str | None] | None = None) -> dict[str, int]:
        """Insert or replace notes by id, in one commit.

        Returns:
            ``{"inserted": n, "updated": m}``.
        """
        if len(set(ids)) != len(ids):
            raise ValueError("Duplicate note ids in one upsert.")
        res = (self.table.merge_insert("note_id").when_matched_update_all().when_not_matched_insert_all()
               .execute(self._rows(ids, vectors, titles, categories)))
        return {"inserted": int(res.num_inserted_rows), "updated": int(res.num_updated_rows)}

    def delete(self, ids: Sequence[str]) -> int:
        """Delete notes by id in one commit; returns how many existed."""
        if not ids:
            return 0
        return int(self.table.delete(f"note_id IN {_in_list(ids)}").num_deleted_rows)

    def fetch(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """``{note_id: {"vector": (d,) float32, "title", "category"}}`` of the ids that are indexed."""
        if not ids:
            return {}
        got = (self.table.search().where(f"note_id IN {_in_list(ids)}")
               .select(["note_id", "vector", "title", "category"]).limit(len(ids)).to_arrow())
        vecs = got["vector"].combine_chunks().flatten().to_numpy().reshape(-1, self.dim)  # (n, d)
        return {nid: {"vector": vecs[i].astype(np.float32), "title": t, "category": c}
                for i, (nid, t, c) in enumerate(zip(got["note_id"].to_pylist(), got["title"].to_pylist(),
                                                    got["category"].to_pylist()))}

    def search(self, query: np.ndarray, k: int, exclude: Sequence[str] = (), category: str | None = None,
               nprobes: int | None = None) -> list[dict[str, Any]]:
        """Top-k notes by inner product with one query vector, best first.

        Args:
            query: (d,) query vector.
            k: Neighbours to return.
            exclude: Note ids never returned (e.g. the query note itself).
            category: Only notes of this category.
            nprobes: IVF partitions visited (ivf indexes only).

        Returns:
            ``[{"rank", "note_id", "score", "title", "category"}, ...]``.
        """
        where = []
        if exclude:
            where.append(f"note_id NOT IN {_in_list(exclude)}")
        if category is not None:
            where.append(f"category = {sql_str(category)}")
        q = self.table.search(np.asarray(query, dtype=np.float32)).distance_type("dot").limit(k)
        if where:
            q = q.where(" AND ".join(where), prefilter=True)
        if nprobes:
            q = q.nprobes(nprobes)
        got = q.select(["note_id", "title", "category"]).to_arrow()
        return [{"rank": r + 1, "note_id": nid, "score": 1.0 - float(dist), "title": t, "category": c}
                for r, (nid, dist, t, c) in enumerate(zip(got["note_id"].to_pylist(), got["_distance"].to_pylist(),
                                                           got["title"].to_pylist(), got["category"].to_pylist()))]

    def build_ann(self, kind: str = "flat", partitions: int | None = None) -> None:
        """Index the ids (BTree, fast fetch by id) and, for ``ivf``, the vectors (IVF-flat, dot product, sqrt(N)
        partitions unless given).

        ``flat`` keeps exact brute-force search (right up to a few hundred thousand notes); rows written after an IVF
        index is built are searched exactly until it is rebuilt (:meth:`optimize`).
        """
        if kind not in ANN_KINDS:
            raise ValueError(f"Unknown live index kind {kind!r}; use one of {ANN_KINDS}.")
        from lancedb.index import BTree, IvfFlat  # optional dependency, as in _connect

        self.table.create_index("note_id", config=BTree(), replace=True)
        if kind == "ivf":
            n = len(self)
            self.table.create_index("vector", replace=True, config=IvfFlat(
                distance_type="dot", num_partitions=partitions or max(1, round(n ** 0.5))))

    def optimize(self) -> None:
        """Compact the small files that single-note writes leave and fold new rows into the indexes."""
        self.table.optimize()


def load_categories(root: str | os.PathLike[str]) -> dict[str, str]:
    """Note id -> category from a dataset root: ``notes_meta.csv`` (synthetic data) or notes tables with a
    ``category`` column; ``{}`` when there is none."""
    import pandas as pd  # optional, heavy; only to read a category column when building the live index

    out: dict[str, str] = {}
    for name in ("notes_meta.csv", "notes_test.csv", "notes_train.csv", "notes.csv"):
        path = Path(root) / name
        if not path.is_file():
            continue
        head = pd.read_csv(path, nrows=0).columns
        if {"note_id", "category"} <= set(head):
            df = pd.read_csv(path, usecols=["note_id", "category"], dtype=str, keep_default_na=False)
            for nid, cat in zip(df["note_id"], df["category"]):
                out.setdefault(nid, cat)
    return out


def fill(uri: str | os.PathLike[str], ids: Sequence[str], emb: np.ndarray, titles: Mapping[str, str],
         categories: Mapping[str, str], key: str = EMBEDDING_KEYS[0], kind: str = "flat",
         storage_options: Mapping[str, str] | None = None) -> LiveIndex:
    """Create the live index at ``uri`` (replacing any) from ``(N, d)`` embeddings, in bounded writes, then index it.

    Args:
        uri: Directory or object-store URI.
        ids: Note ids of the rows.
        emb: (N, d) float32 L2-normalised embeddings.
        titles: Note id -> title (missing: null).
        categories: Note id -> category (missing: null).
        key: Embedding kind recorded with the table.
        kind: ``flat`` (exact) or ``ivf`` (IVF-flat).
        storage_options: Object-store options.

    Returns:
        The live index.
    """
    index = LiveIndex.create(uri, emb.shape[1], key, storage_options)
    for a in range(0, len(ids), WRITE_ROWS):
        chunk = [str(i) for i in ids[a: a + WRITE_ROWS]]
        index.add(chunk, emb[a: a + WRITE_ROWS], [titles.get(i) for i in chunk], [categories.get(i) for i in chunk])
    index.build_ann(kind)
    log.info("Live index %s: %d notes (%s, dim %d, %s).", uri, len(index), key, index.dim, kind)
    return index


def build_live(emb_dir: str | os.PathLike[str], uri: str | os.PathLike[str], key: str = EMBEDDING_KEYS[0],
               kind: str = "flat", data_root: str | os.PathLike[str] | None = None,
               storage_options: Mapping[str, str] | None = None) -> LiveIndex:
    """Build the live index from an embeddings directory, with titles and categories from the dataset root.

    Args:
        emb_dir: Embeddings directory (``predict`` with ``EmbeddingWriter``, or ``evaluate --save_embeddings``).
        uri: Directory or object-store URI of the live index (replaced if it exists).
        key: ``e_m`` or ``e_v``.
        kind: ``flat`` (exact) or ``ivf`` (IVF-flat).
        data_root: Dataset root for titles and categories (default: the one recorded with the embeddings).
        storage_options: Object-store options (credentials, region, endpoint).

    Returns:
        The live index.
    """
    ids, emb = load_embeddings(emb_dir, key)
    root = data_root or read_meta(emb_dir).get("data_root")
    return fill(uri, ids, emb, load_titles(root) if root else {}, load_categories(root) if root else {}, key, kind,
                storage_options)


def build_live_from_model(export: str | os.PathLike[str], data_root: str | os.PathLike[str],
                          uri: str | os.PathLike[str], splits: Sequence[SplitName] = ("test", "train"),
                          kind: str = "flat", batch_size: int = 64, device: str = "cpu",
                          storage_options: Mapping[str, str] | None = None) -> LiveIndex:
    """Embed a dataset's notes with a model export and build the live index over them (the export's first key).

    Args:
        export: Model export directory.
        data_root: Dataset root.
        uri: Directory or object-store URI of the live index (replaced if it exists).
        splits: Notes tables to index (a note in several counts once).
        kind: ``flat`` (exact) or ``ivf`` (IVF-flat).
        batch_size: Notes per forward pass.
        device: Device to embed on.
        storage_options: Object-store options.

    Returns:
        The live index.
    """
    notes: dict[str, Note] = {}
    for split in splits:
        for nid, note in load_split(data_root, split).notes.items():
            notes.setdefault(nid, note)
    ids = sorted(notes)
    embedder = Embedder.from_pretrained(export, device=device)
    key = embedder.keys[0]
    emb = embedder.embed([notes[i] for i in ids], batch_size=batch_size, key=key)
    return fill(uri, ids, emb, {i: notes[i].title for i in ids}, load_categories(data_root), key, kind,
                storage_options)
