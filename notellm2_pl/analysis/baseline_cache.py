"""The cache of the baselines (:mod:`notellm2_pl.analysis.baselines`): computed once per dataset and settings.

A baseline's results depend only on the dataset's test split and its own settings, not on the model, so they are
computed once and kept in :func:`default_cache_dir` (``$NOTELLM2_PL_BASELINES_CACHE``, else
``$XDG_CACHE_HOME/notellm2_pl/baselines``, else ``~/.cache/notellm2_pl/baselines``): one folder shared by every run
of a grid and every later ``evaluate`` of the same data. An entry is keyed (:func:`cache_key`) by the baseline's name
and a SHA-256 of the dataset's test files (path, size and modification time of each; :func:`dataset_fingerprint`),
the note ids and pair sets evaluated, the baseline's settings (library versions, and for model folders the size and
modification time of their files; :func:`files_fingerprint`) and :data:`CACHE_VERSION`. It holds each pair set's
summary (``<key>.json``) and per-query ``higher`` / ``ties`` counts (``<key>.npz``), from which Recall@K at any K and
the paired standard errors of the baseline check are recomputed. Changing a test file, a threshold that changes a
pair set, or a model folder makes a new key; delete the folder to drop the cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from notellm2_pl.atomic import atomic_write_bytes, atomic_write_text
from notellm2_pl.retrieval.pairs import Pair
from notellm2_pl.retrieval.ranks import Ranks
from notellm2_pl.retrieval.recall import EvalResult, recall_at_k

log = logging.getLogger(__name__)

CACHE_ENV = "NOTELLM2_PL_BASELINES_CACHE"
"""Environment variable naming the cache folder."""

CACHE_VERSION = "baselines-1/ties-random"
"""Part of every cache key: bump it when the protocol or a baseline's computation changes."""


def default_cache_dir() -> Path:
    """``$NOTELLM2_PL_BASELINES_CACHE``, else ``$XDG_CACHE_HOME/notellm2_pl/baselines`` (``~/.cache`` by default)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "notellm2_pl" / "baselines"


def files_fingerprint(path: str | os.PathLike[str], limit: int = 2000) -> list[tuple[str, int, int]]:
    """``(relative path, size, mtime_ns)`` of a file, or of the files under a folder (sorted; at most ``limit``)."""
    p = Path(path)
    if p.is_file():
        st = p.stat()
        return [(p.name, st.st_size, st.st_mtime_ns)]
    files = sorted(f for f in p.rglob("*") if f.is_file())[:limit] if p.is_dir() else []
    return [(f.relative_to(p).as_posix(), f.stat().st_size, f.stat().st_mtime_ns) for f in files]


def dataset_fingerprint(source: str | os.PathLike[str]) -> dict[str, Any]:
    """Path, size and mtime of a dataset's test files: its top-level files naming ``test`` (notes, pairs, subsets,
    e.g. ``notes_test.csv``, ``note_pairs_test_shortquery.csv``), a shared ``notes.*`` table, and the image folders
    (their own mtime, which changes when files are added or removed). A URL is fingerprinted by itself."""
    root = Path(source)
    if not root.is_dir():
        return {"source": os.fspath(source)}
    entries = sorted(p for p in root.iterdir()
                     if (p.is_file() and ("test" in p.name or p.stem == "notes")) or (p.is_dir() and "image" in p.name))
    return {"source": os.fspath(root.resolve()),
            "files": [(p.name, p.stat().st_size if p.is_file() else -1, p.stat().st_mtime_ns) for p in entries]}


def _pairs_digest(ids: Sequence[str], pair_sets: Mapping[str, Sequence[Pair]]) -> str:
    h = hashlib.sha256()
    for nid in ids:
        h.update(nid.encode() + b"\0")
    for name, pairs in pair_sets.items():
        h.update(f"\1{name}\1".encode())
        for q, d in pairs:
            h.update(f"{q}\0{d}\0".encode())
    return h.hexdigest()


def cache_key(name: str, settings: Mapping[str, Any], fingerprint: Mapping[str, Any], ids: Sequence[str],
              pair_sets: Mapping[str, Sequence[Pair]]) -> str:
    """``<name>-<digest>``: the baseline's name (file-safe) and a SHA-256 of :data:`CACHE_VERSION`, the dataset
    fingerprint, the ids and pair sets, and the baseline's settings."""
    payload = {"version": CACHE_VERSION, "dataset": fingerprint, "pairs": _pairs_digest(ids, pair_sets),
               "baseline": settings}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}-{digest[:40]}"


def _result(summary: Mapping[str, Any], ranks: Ranks, ks: Sequence[int]) -> EvalResult:
    """An :class:`EvalResult` from a cached summary and its counts, recalls at ``ks``."""
    return EvalResult(num_queries=int(summary["num_queries"]), pool_size=int(summary["pool_size"]),
                      recalls=recall_at_k(ranks, ks), ranks=ranks, num_pairs=int(summary.get("num_pairs", 0)),
                      num_missing=int(summary.get("num_missing", 0)))


class BaselineCache:
    """Per-baseline results on disk (module docstring): ``<key>.json`` (summaries) and ``<key>.npz`` (counts).

    Args:
        directory: The cache folder (created on the first write).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def paths(self, key: str) -> tuple[Path, Path]:
        """``(summary JSON, counts NPZ)`` of a key."""
        return self.directory / f"{key}.json", self.directory / f"{key}.npz"

    def load(self, key: str, ks: Sequence[int]) -> dict[str, EvalResult] | None:
        """The cached results of a key with Recall@K recomputed at ``ks``, or None when absent or unreadable."""
        meta_path, counts_path = self.paths(key)
        if not (meta_path.is_file() and counts_path.is_file()):
            return None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            with np.load(counts_path) as counts:
                return {name: _result(res, Ranks(counts[f"{name}.higher"], counts[f"{name}.ties"]), ks)
                        for name, res in meta["results"].items()}
        except (OSError, KeyError, ValueError) as err:
            log.warning("Ignoring the unreadable baseline cache entry %s (%s); recomputing.", meta_path, err)
            return None

    def save(self, key: str, name: str, settings: Mapping[str, Any], results: Mapping[str, EvalResult]) -> None:
        """Write a key's entry (counts first, then the summary that marks it complete; both atomically)."""
        meta_path, counts_path = self.paths(key)
        buf = io.BytesIO()
        arrays = {f"{subset}.{part}": np.asarray(getattr(res.ranks, part), dtype=np.int64)
                  for subset, res in results.items() for part in ("higher", "ties")}
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        atomic_write_bytes(counts_path, buf.getvalue())
        meta = {"name": name, "settings": settings, "results": {s: r.to_dict() for s, r in results.items()}}
        atomic_write_text(meta_path, json.dumps(meta, indent=1, default=str) + "\n")
