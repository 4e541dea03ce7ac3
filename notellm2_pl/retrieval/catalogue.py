"""The catalogue a neighbour table is built over: note ids, their embeddings, and a content hash per note.

A catalogue comes from an embeddings directory (:func:`~notellm2_pl.retrieval.prediction_writer.load_embeddings`) or
from a model export + a dataset's notes (:func:`embed_catalogue`). The content hash (title, topics, content and the
image file's bytes) is what the incremental ``neighbours`` run compares to find changed notes; it is stored as
``hashes.json`` next to the catalogue's embeddings.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from notellm2_pl.atomic import atomic_write_text
from notellm2_pl.data.schema import EMBEDDING_KEYS
from notellm2_pl.data.tables import Note, load_split
from notellm2_pl.inference.embedder import Embedder
from notellm2_pl.retrieval.prediction_writer import load_embeddings, write_embeddings
from notellm2_pl.retrieval.ranking import as_float32_matrix

HASHES_FILE = "hashes.json"
"""Note id -> content hash, inside an embeddings directory written by :func:`save_catalogue`."""


@dataclass
class Catalogue:
    """Note ids sorted ascending and their (N, d) float32 embeddings, row i belonging to ``ids[i]``.

    Attributes:
        ids: N unique note ids, sorted (row order = the tie order of the neighbour table).
        emb: (N, d) C-contiguous float32 L2-normalised embeddings.
        hashes: Note id -> content hash, where known (empty for plain embeddings directories).
    """

    ids: list[str]
    emb: np.ndarray
    hashes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.emb = as_float32_matrix(self.emb, "embeddings")
        if len(self.ids) != self.emb.shape[0]:
            raise ValueError(f"{len(self.ids)} ids for {self.emb.shape[0]} embedding rows.")
        if any(a >= b for a, b in itertools.pairwise(self.ids)):
            order = np.argsort(np.asarray(self.ids, dtype=str), kind="stable")
            ids = [self.ids[i] for i in order]
            if any(a == b for a, b in itertools.pairwise(ids)):
                raise ValueError("Duplicate note ids in the catalogue; every note needs a unique id.")
            self.ids, self.emb = ids, np.ascontiguousarray(self.emb[order])

    def fingerprint(self) -> str:
        """A hash of the ids and the embedding bytes: two catalogues with equal fingerprints hold the same data."""
        h = hashlib.blake2b(digest_size=16)
        h.update("\n".join(self.ids).encode())
        h.update(np.ascontiguousarray(self.emb).tobytes())
        return h.hexdigest()


def note_hash(note: Note) -> str:
    """Content hash of a note: title, topics, content and the bytes of its image file (if any)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps([note.title, list(note.topics), note.content]).encode())
    if note.image and os.path.isfile(note.image):
        h.update(Path(note.image).read_bytes())
    return h.hexdigest()


def load_catalogue(emb_dir: str | os.PathLike[str], key: str = EMBEDDING_KEYS[0]) -> Catalogue:
    """The catalogue of an embeddings directory (with its ``hashes.json`` when present)."""
    ids, emb = load_embeddings(emb_dir, key)
    path = Path(emb_dir) / HASHES_FILE
    hashes = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    return Catalogue(ids, emb, hashes)


def save_catalogue(cat: Catalogue, emb_dir: str | os.PathLike[str], key: str = EMBEDDING_KEYS[0]) -> Path:
    """Write a catalogue as a one-rank embeddings directory plus ``hashes.json`` (each file atomic)."""
    out = write_embeddings(emb_dir, cat.ids, {key: cat.emb})
    if cat.hashes:
        atomic_write_text(out / HASHES_FILE, json.dumps(cat.hashes, indent=0, sort_keys=True) + "\n")
    return out


def dataset_notes(root: str | os.PathLike[str], split: str = "test") -> dict[str, Note]:
    """Note id -> note of one split of a dataset."""
    return load_split(root, split, on_error="skip").notes


def embed_catalogue(embedder: Embedder, notes: Iterable[Note], key: str = EMBEDDING_KEYS[0],
                    batch_size: int = 32) -> Catalogue:
    """Embed notes with a model into a catalogue, hashing each note's content."""
    items = list(notes)
    emb = embedder.embed(items, batch_size=batch_size, key=key) if items else np.zeros((0, 1), np.float32)
    return Catalogue([n.note_id for n in items], emb, {n.note_id: note_hash(n) for n in items})


def changed_notes(notes: Mapping[str, Note], previous: Catalogue) -> tuple[list[Note], list[str]]:
    """``(notes new or changed since previous, ids of previous notes no longer present)``.

    A note counts as changed when its content hash differs from the one stored with the previous catalogue (or none
    was stored).
    """
    todo = [n for nid, n in notes.items() if previous.hashes.get(nid) != note_hash(n)]
    removed = sorted(set(previous.ids) - set(notes))
    return todo, removed
