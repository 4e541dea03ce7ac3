"""Incremental update of an exact neighbour table: new, changed and removed notes, equal to a full rebuild.

Given a finished table (:mod:`~notellm2_pl.retrieval.neighbour_table`), the embeddings of new or changed notes and the
ids of removed notes, :func:`update_table` recomputes only:

* the rows of the new and changed notes (a full exact scan over the updated catalogue);
* the rows of notes whose old top-k holds a changed or removed note (their k-th neighbour may have moved);
* for every other note, a merge of its old top-k with the scores against the new and changed notes only: its old
  top-k is still the top-k of the unchanged notes, so the merge is the top-k of the whole updated catalogue.

Only parts holding a changed row are rewritten. The update is one commit: new parts and the updated catalogue go to
new names (``part-00003.g1.parquet``, ``embeddings.g1/``), then ``meta.json`` switches to them, then the old files go.
A crash before the commit leaves the previous table intact.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from notellm2_pl.retrieval.catalogue import Catalogue, load_catalogue, save_catalogue
from notellm2_pl.retrieval.neighbour_table import (
    part_name,
    read_meta,
    rows_table,
    write_meta,
    write_part,
)
from notellm2_pl.retrieval.scoring import exact_topk

log = logging.getLogger(__name__)


def table_catalogue(table_dir: str | os.PathLike[str]) -> Catalogue:
    """The catalogue a finished table was computed over (its committed embeddings directory)."""
    meta = read_meta(table_dir)
    if not meta.get("parts") and meta.get("parts") != []:
        raise FileNotFoundError(f"{table_dir} holds no finished neighbour table; run `neighbours` first.")
    return load_catalogue(Path(table_dir) / meta.get("embeddings", "embeddings"))


def merged_catalogue(old: Catalogue, updates: Catalogue, removed: Sequence[str]) -> Catalogue:
    """The updated catalogue: old notes minus ``removed``, with ``updates`` replacing or adding rows."""
    gone = set(removed) | set(updates.ids)
    keep = [i for i, nid in enumerate(old.ids) if nid not in gone]
    ids = [old.ids[i] for i in keep] + list(updates.ids)
    emb = np.concatenate([old.emb[keep], updates.emb.reshape(-1, old.emb.shape[1])])  # (N', d)
    hashes = {nid: h for nid, h in old.hashes.items() if nid not in gone} | updates.hashes
    return Catalogue(ids, emb, hashes)


def _rows_of(ids_sorted: np.ndarray, names: np.ndarray) -> np.ndarray:
    """Row of each name in the sorted id array, ``-1`` where absent."""
    if ids_sorted.size == 0:
        return np.full(names.size, -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(ids_sorted, names), ids_sorted.size - 1)  # (M,)
    return np.where(ids_sorted[pos] == names, pos, -1).astype(np.int64)


def _old_state(table_dir: Path, parts: list[str], cat: Catalogue, k: int,
               ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Old rows mapped onto the updated catalogue.

    Returns:
        ``(scores (N', k), rows (N', k), part name -> its notes' old ids, stale (N',) bool)``; ``stale[i]`` marks a
        note whose old top-k holds a note no longer in the catalogue with the same vector (rows there are ``-1``).
    """
    n = len(cat.ids)
    ids_sorted = np.asarray(cat.ids, dtype=str)
    scores = np.full((n, k), -np.inf, dtype=np.float32)
    rows = np.full((n, k), -1, dtype=np.int64)
    stale = np.zeros(n, dtype=bool)
    members: dict[str, np.ndarray] = {}
    for name in parts:
        t = pq.read_table(table_dir / "parts" / name)
        note = np.asarray(t.column("note_id").to_numpy(zero_copy_only=False), dtype=str)
        members[name] = np.unique(note)
        q = _rows_of(ids_sorted, note)
        nb = _rows_of(ids_sorted, np.asarray(t.column("neighbour_id").to_numpy(zero_copy_only=False), dtype=str))
        rank = t.column("rank").to_numpy().astype(np.int64) - 1
        ok = q >= 0
        scores[q[ok], rank[ok]] = t.column("score").to_numpy()[ok]
        rows[q[ok], rank[ok]] = nb[ok]
        stale[q[ok & (nb < 0)]] = True
    return scores, rows, members, stale


def _recompute(cat: Catalogue, scores: np.ndarray, rows: np.ndarray, dirty: np.ndarray, fresh: np.ndarray) -> None:
    """In place: full exact rows for ``dirty`` notes; merge the ``fresh`` notes into everyone else's top-k."""
    k = rows.shape[1]
    if dirty.size:
        q = np.ascontiguousarray(cat.emb[dirty])
        scores[dirty], rows[dirty] = exact_topk(q, cat.emb, k, exclude=dirty)
    clean = np.setdiff1d(np.arange(len(cat.ids)), dirty)
    if clean.size and fresh.size:
        q = np.ascontiguousarray(cat.emb[clean])
        scores[clean], rows[clean] = exact_topk(q, cat.emb, k, pool_rows=fresh,
                                                start=(scores[clean], rows[clean]))


def update_table(table_dir: str | os.PathLike[str], updates: Catalogue, removed: Sequence[str] = ()) -> dict[str, Any]:
    """Apply new/changed notes and removals to an exact neighbour table, in place (one commit).

    Args:
        table_dir: A finished ``exact`` table directory.
        updates: Catalogue of the new and changed notes (their new embeddings).
        removed: Ids of notes to drop (unknown ids are ignored with a warning).

    Returns:
        The committed ``meta.json`` contents, with ``update`` counts (``added``, ``changed``, ``removed``,
        ``recomputed``, ``merged_changed``, ``parts_rewritten``).

    Raises:
        ValueError: If the table is not exact or the embedding dimension differs.
    """
    table_dir = Path(table_dir)
    meta = read_meta(table_dir)
    if meta.get("method") != "exact":
        raise ValueError(f"Incremental updates need an exact table; {table_dir} is {meta.get('method')!r}. "
                         f"Rebuild it instead.")
    old = table_catalogue(table_dir)
    if updates.ids and updates.emb.shape[1] != old.emb.shape[1]:
        raise ValueError(f"Updates have dim {updates.emb.shape[1]}, the table's notes {old.emb.shape[1]}.")
    unknown = sorted(set(removed) - set(old.ids))
    if unknown:
        log.warning("Ignoring %d removed id(s) not in the table: %s", len(unknown), unknown[:5])
    removed = sorted(set(removed) & set(old.ids) - set(updates.ids))
    cat = merged_catalogue(old, updates, removed)
    k = int(meta["k"])
    scores, rows, members, stale = _old_state(table_dir, meta["parts"], cat, k)
    fresh = np.flatnonzero(np.isin(np.asarray(cat.ids, dtype=str), np.asarray(updates.ids, dtype=str)))
    stale_ids = np.asarray(sorted(set(removed) | (set(updates.ids) & set(old.ids))), dtype=str)
    dirty_mask = stale.copy()
    dirty_mask[fresh] = True
    if stale_ids.size:  # old top-k holding an old vector of a changed note
        changed_rows = _rows_of(np.asarray(cat.ids, dtype=str), stale_ids)
        dirty_mask |= np.isin(rows, changed_rows[changed_rows >= 0]).any(1)
    before = (scores.copy(), rows.copy())
    dirty = np.flatnonzero(dirty_mask)
    _recompute(cat, scores, rows, dirty, fresh)
    touched = dirty_mask | (rows != before[1]).any(1) | (scores != before[0]).any(1)
    counts = {"added": len(set(updates.ids) - set(old.ids)), "changed": len(set(updates.ids) & set(old.ids)),
              "removed": len(removed), "recomputed": int(dirty.size),
              "merged_changed": int(touched.sum() - dirty.size)}
    return _commit(table_dir, meta, cat, (scores, rows), members, touched, counts)


def _commit(table_dir: Path, meta: dict[str, Any], cat: Catalogue, state: tuple[np.ndarray, np.ndarray],
            members: dict[str, np.ndarray], touched: np.ndarray, counts: dict[str, int]) -> dict[str, Any]:
    """Write the rewritten and new parts and the catalogue under new names, switch ``meta.json``, drop old files."""
    gen = int(meta.get("generation", 0)) + 1
    ids_sorted = np.asarray(cat.ids, dtype=str)
    scores, rows = state
    placed = np.zeros(len(cat.ids), dtype=bool)
    parts, obsolete, rewritten = [], [], 0
    for name in meta["parts"]:
        q = _rows_of(ids_sorted, members[name])
        q = np.sort(q[q >= 0])
        placed[q] = True
        if touched[q].any() or len(q) < len(members[name]):  # a row changed or a note was removed
            new_name = part_name(int(name[5:10]), gen)
            write_part(table_dir / "parts" / new_name, rows_table(cat.ids, q, scores[q], rows[q]))
            parts.append(new_name)
            obsolete.append(name)
            rewritten += 1
        else:
            parts.append(name)
    new = np.flatnonzero(~placed)
    next_part = max((int(p[5:10]) for p in meta["parts"]), default=-1) + 1
    step = int(meta["shard_notes"])
    for i, s0 in enumerate(range(0, new.size, step)):
        q = new[s0:s0 + step]
        name = part_name(next_part + i, gen)
        write_part(table_dir / "parts" / name, rows_table(cat.ids, q, scores[q], rows[q]))
        parts.append(name)
    emb_name = f"embeddings.g{gen}"
    save_catalogue(cat, table_dir / emb_name)
    old_emb = meta.get("embeddings", "embeddings")
    meta = {**meta, "parts": parts, "generation": gen, "embeddings": emb_name, "num_notes": len(cat.ids),
            "fingerprint": cat.fingerprint(), "update": {**counts, "parts_rewritten": rewritten}}
    write_meta(table_dir, meta)
    for name in obsolete:
        (table_dir / "parts" / name).unlink(missing_ok=True)
    shutil.rmtree(table_dir / old_emb, ignore_errors=True)
    return meta
