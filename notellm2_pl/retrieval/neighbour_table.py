"""Every note's top-k neighbours as a sharded, resumable Parquet table (the batch job recommenders load).

Layout of a table directory::

    OUT/meta.json                  format, k, method, index settings, shard size, catalogue fingerprint, the list of
                                   finished parts (``parts``, the commit) and the approximate recall if measured
    OUT/parts/part-00000.parquet   rows ``note_id, rank, neighbour_id, score`` of ``shard_notes`` notes, ranks 1..k
    OUT/embeddings/                the catalogue (embeddings directory + hashes.json), for incremental updates

Each part is written atomically; a rerun with the same catalogue and settings skips the parts that exist, so a killed
job resumes where it stopped. Neighbours are ordered by score descending, then note id ascending (the catalogue is
sorted by id); a note is never its own neighbour. ``exact`` uses the shared tiled kernel
(:func:`~notellm2_pl.retrieval.scoring.exact_topk`); ``ivf``/``hnsw`` use FAISS
(:mod:`~notellm2_pl.retrieval.faiss_index`), with their recall@k against exact measured on a sample.
Incremental updates: :mod:`notellm2_pl.retrieval.neighbour_update`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from notellm2_pl.atomic import atomic_open, atomic_write_text
from notellm2_pl.retrieval.catalogue import Catalogue, save_catalogue
from notellm2_pl.retrieval.faiss_index import IdIndex, build_index, search
from notellm2_pl.retrieval.ranking import topk_overlap
from notellm2_pl.retrieval.scoring import exact_topk

log = logging.getLogger(__name__)

FORMAT = "notellm2-neighbours"
METHODS: tuple[str, ...] = ("exact", "ivf", "hnsw")
COLUMNS: tuple[str, ...] = ("note_id", "rank", "neighbour_id", "score")
SCHEMA = pa.schema([("note_id", pa.string()), ("rank", pa.int32()), ("neighbour_id", pa.string()),
                    ("score", pa.float32())])


@dataclass
class TableSettings:
    """What a table is computed with (part of its identity: a rerun with other settings starts over).

    Attributes:
        k: Neighbours per note.
        method: ``exact``, ``ivf`` or ``hnsw``.
        shard_notes: Notes per part file (each part holds ``shard_notes * k`` rows).
        index: FAISS build settings for approximate methods (``nlist``, ``nprobe``, ``M``, ``ef_search``...).
    """

    k: int = 10
    method: str = "exact"
    shard_notes: int = 100_000
    index: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """Raise ``ValueError`` on an unknown method or non-positive sizes."""
        if self.method not in METHODS:
            raise ValueError(f"Unknown method {self.method!r}; choose one of {METHODS}.")
        if self.k <= 0 or self.shard_notes <= 0:
            raise ValueError("k and shard_notes must be positive.")


def part_name(i: int, generation: int = 0) -> str:
    """File name of part ``i`` (``part-00003.parquet``; later generations: ``part-00003.g2.parquet``)."""
    return f"part-{i:05d}.parquet" if generation == 0 else f"part-{i:05d}.g{generation}.parquet"


def read_meta(table_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``meta.json`` of a table directory (``{}`` when absent)."""
    path = Path(table_dir) / "meta.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def write_meta(table_dir: str | os.PathLike[str], meta: dict[str, Any]) -> None:
    """Write ``meta.json`` atomically (listing the parts commits them)."""
    atomic_write_text(Path(table_dir) / "meta.json", json.dumps(meta, indent=2) + "\n")


def rows_table(ids: list[str], query_rows: np.ndarray, scores: np.ndarray, rows: np.ndarray) -> pa.Table:
    """The Arrow rows of some notes: ``note_id, rank (1-based), neighbour_id, score``; unfilled slots dropped.

    Args:
        ids: Catalogue note ids (row -> id).
        query_rows: (Q,) catalogue rows of the notes.
        scores: (Q, k) neighbour scores, best first.
        rows: (Q, k) neighbour catalogue rows, ``-1`` for an unfilled slot.
    """
    k = rows.shape[1]
    keep = rows >= 0  # (Q, k)
    id_arr = np.asarray(ids, dtype=object)
    note = np.repeat(id_arr[query_rows], k).reshape(-1, k)[keep]
    rank = np.broadcast_to(np.arange(1, k + 1, dtype=np.int32), rows.shape)[keep]
    return pa.table({"note_id": pa.array(note, pa.string()), "rank": pa.array(rank, pa.int32()),
                     "neighbour_id": pa.array(id_arr[rows[keep]], pa.string()),
                     "score": pa.array(scores[keep], pa.float32())}, schema=SCHEMA)


def write_part(path: str | os.PathLike[str], table: pa.Table) -> None:
    """Write one part file atomically."""
    with atomic_open(path, "wb") as f:
        pq.write_table(table, f)


def read_table(table_dir: str | os.PathLike[str]) -> pa.Table:
    """All committed rows of a table directory, sorted by ``(note_id, rank)``.

    Raises:
        FileNotFoundError: If the table has not finished (no committed parts list).
    """
    meta = read_meta(table_dir)
    if not meta.get("parts") and meta.get("parts") != []:
        raise FileNotFoundError(f"{table_dir} holds no finished neighbour table; run (or rerun) `neighbours`.")
    parts = [pq.read_table(Path(table_dir) / "parts" / name) for name in meta["parts"]]
    table = pa.concat_tables(parts) if parts else SCHEMA.empty_table()
    return table.sort_by([("note_id", "ascending"), ("rank", "ascending")])


def approx_index(cat: Catalogue, settings: TableSettings) -> IdIndex:
    """A FAISS ``ivf``/``hnsw`` index over the catalogue rows (ids = rows)."""
    return build_index(cat.emb, settings.method, **settings.index)


def approx_rows(index: IdIndex, cat: Catalogue, query_rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, rows)`` (Q, k) of an approximate index, each note's own row dropped; unfilled slots ``-1``."""
    scores, found = search(index, cat.emb[query_rows], k + 1)  # (Q, <= k+1); ids are rows, -1 where unfilled
    pad = k + 1 - found.shape[1]
    if pad:  # catalogue smaller than k + 1
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        found = np.pad(found, ((0, 0), (0, pad)), constant_values=-1)
    found = np.where(np.isfinite(scores), found.astype(np.int64), -1)
    own = found == query_rows[:, None]  # (Q, k+1)
    own[:, -1] |= ~own.any(1)  # own row not returned: drop the last slot instead
    keep = ~own  # exactly k per row
    return scores[keep].reshape(-1, k).astype(np.float32), found[keep].reshape(-1, k)


def exact_rows(cat: Catalogue, query_rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, rows)`` (Q, k) exact top-k of some catalogue notes, by the shared kernel."""
    q = np.ascontiguousarray(cat.emb[query_rows])
    return exact_topk(q, cat.emb, k, exclude=query_rows.astype(np.int64))


def approx_recall(index: IdIndex, cat: Catalogue, k: int, sample: int, seed: int = 0) -> float:
    """Recall@k of an approximate index against exact top-k, on ``sample`` random notes (``|A ∩ E| / |E|``, a
    neighbour tied with the exact k-th counted as found: :func:`~notellm2_pl.retrieval.ranking.topk_overlap`)."""
    n = len(cat.ids)
    rows = np.sort(np.random.default_rng(seed).choice(n, min(sample, n), replace=False))
    e_scores, exact = exact_rows(cat, rows, k)
    a_scores, approx = approx_rows(index, cat, rows, k)
    total = int(np.count_nonzero(exact >= 0))
    return float(topk_overlap(a_scores, approx, e_scores, exact).sum() / total) if total else float("nan")


def _start_meta(out: Path, cat: Catalogue, settings: TableSettings, overwrite: bool) -> tuple[dict[str, Any], bool]:
    """``(meta, resumed)``: the existing meta if it describes the same job (resume), else a fresh one."""
    meta = {"format": FORMAT, "version": 1, **asdict(settings), "num_notes": len(cat.ids),
            "dim": int(cat.emb.shape[1]), "fingerprint": cat.fingerprint(), "parts": None, "generation": 0,
            "embeddings": "embeddings"}
    old = read_meta(out)
    same = old and all(old.get(key) == meta[key] for key in ("k", "method", "shard_notes", "index", "fingerprint"))
    if old and not same and not overwrite:
        raise FileExistsError(f"{out} holds a neighbour table of other notes or settings; choose another output "
                              f"directory or pass overwrite=True (--overwrite).")
    if same and old.get("generation", 0) == 0:
        return {**old, "parts": None}, True
    for stale in (out / "parts").glob("part-*.parquet"):
        stale.unlink()
    for stale in out.glob("embeddings.g*"):  # catalogues of incremental updates of the replaced table
        shutil.rmtree(stale, ignore_errors=True)
    return meta, False


def build_table(cat: Catalogue, out: str | os.PathLike[str], settings: TableSettings, *,
                recall_sample: int = 1000, overwrite: bool = False) -> dict[str, Any]:
    """Compute and write the neighbour table of a catalogue; resumes an interrupted build of the same job.

    Args:
        cat: The catalogue (ids sorted, embeddings L2-normalised).
        out: Table directory.
        settings: k, method, shard size, index settings.
        recall_sample: Notes on which an approximate method's recall@k against exact is measured (0: skip).
        overwrite: Replace a table of other notes or settings in ``out``.

    Returns:
        The committed ``meta.json`` contents (``approx_recall`` included for approximate methods).
    """
    settings.check()
    out = Path(out)
    meta, resumed = _start_meta(out, cat, settings, overwrite)
    write_meta(out, meta)
    if not resumed or not (out / "embeddings" / "meta.json").is_file():
        save_catalogue(cat, out / "embeddings")
    index = None if settings.method == "exact" else approx_index(cat, settings)
    n, step = len(cat.ids), settings.shard_notes
    names = []
    for i, s0 in enumerate(range(0, n, step)):
        name = part_name(i)
        names.append(name)
        if (out / "parts" / name).is_file():
            log.info("Part %s exists; skipped.", name)
            continue
        rows = np.arange(s0, min(s0 + step, n), dtype=np.int64)
        scores, nbrs = exact_rows(cat, rows, settings.k) if index is None else approx_rows(index, cat, rows,
                                                                                            settings.k)
        write_part(out / "parts" / name, rows_table(cat.ids, rows, scores, nbrs))
        log.info("Wrote %s (%d notes).", name, rows.size)
    if index is not None and recall_sample > 0:
        meta["approx_recall"] = {"k": settings.k, "sample": min(recall_sample, n),
                                 "recall": approx_recall(index, cat, settings.k, recall_sample)}
    meta["parts"] = names
    write_meta(out, meta)
    return meta
