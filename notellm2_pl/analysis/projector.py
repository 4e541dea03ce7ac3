"""The TensorBoard embedding projector for an embeddings directory: vectors, note metadata and an image sprite.

:func:`write_projector` writes a TensorBoard log dir (``tensorboard --logdir OUT``, tab *Projector*) holding:

- ``projector_config.pbtxt``: the embedding's tensor, metadata and sprite paths;
- ``<step>/<tag>/tensors.tsv``: the (N, d) vectors;
- ``<step>/<tag>/metadata.tsv``: a header row, then ``note_id, title, category, topics`` per note (category = the
  note's first topic), so points can be coloured and searched by them;
- ``<step>/<tag>/sprite.png``: the note images as ``thumb x thumb`` tiles in a square grid (grey where a note has none).

The whole directory appears at once (built under a temp name, then renamed). The projector handles tens of thousands
of points; larger catalogues are sampled down to ``max_notes`` (seeded).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from notellm2_pl.analysis.gallery import thumbnail
from notellm2_pl.atomic import atomic_dir
from notellm2_pl.data.tables import Note
from notellm2_pl.retrieval.catalogue import Catalogue

METADATA_HEADER = ["note_id", "title", "category", "topics"]


def _clean(text: str, limit: int = 80) -> str:
    """One TSV field: no tabs or newlines, at most ``limit`` characters."""
    return " ".join(text.split())[:limit] or "-"


def metadata_rows(ids: list[str], notes: Mapping[str, Note]) -> list[list[str]]:
    """``[note_id, title, category, topics]`` of each note (``-`` where unknown)."""
    rows = []
    for nid in ids:
        note = notes.get(nid)
        topics = list(note.topics) if note else []
        rows.append([_clean(nid), _clean(note.title if note else ""), _clean(topics[0] if topics else ""),
                     _clean("|".join(topics))])
    return rows


def sprite_images(ids: list[str], notes: Mapping[str, Note], thumb: int) -> torch.Tensor:
    """(N, 3, thumb, thumb) float images in [0, 1] for the sprite."""
    out = torch.empty(len(ids), 3, thumb, thumb)
    for i, nid in enumerate(ids):
        arr = np.asarray(thumbnail(notes.get(nid), thumb), dtype=np.float32) / 255.0  # (H, W, 3)
        out[i] = torch.from_numpy(arr).permute(2, 0, 1)
    return out


def write_projector(cat: Catalogue, notes: Mapping[str, Note], out: str | os.PathLike[str], *, tag: str = "notes",
                    max_notes: int = 10_000, thumb: int = 32, seed: int = 0) -> Path:
    """Write the embedding projector of a catalogue (see the module docstring for the layout).

    Args:
        cat: The embedded notes.
        notes: Note id -> note, for titles, topics and images.
        out: Log directory (replaced as a whole).
        tag: Name of the embedding in the projector.
        max_notes: Notes kept (a seeded sample when the catalogue is larger).
        thumb: Sprite tile size in pixels.
        seed: Seed of the sample.

    Returns:
        The log directory.
    """
    from torch.utils.tensorboard import SummaryWriter  # optional dependency: only the projector needs it

    rows = np.arange(len(cat.ids))
    if rows.size > max_notes:
        rows = np.sort(np.random.default_rng(seed).choice(rows.size, max_notes, replace=False))
    ids = [cat.ids[i] for i in rows]
    with atomic_dir(out) as tmp:
        writer = SummaryWriter(log_dir=os.fspath(tmp))
        writer.add_embedding(torch.from_numpy(cat.emb[rows]), metadata=metadata_rows(ids, notes),
                             metadata_header=METADATA_HEADER, label_img=sprite_images(ids, notes, thumb), tag=tag,
                             global_step=0)
        writer.close()
    return Path(out)
