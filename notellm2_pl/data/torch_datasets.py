"""Torch datasets over loaded notes: training pairs, and note pools for validation, test and predict."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

from notellm2_pl.data.processing import NoteProcessor, collate
from notellm2_pl.data.schema import NoteBatch
from notellm2_pl.data.tables import Note


class PairDataset(Dataset):
    """Training pairs ``(query, target)`` processed into model inputs (collate with
    :func:`~notellm2_pl.data.processing.collate_pairs`).

    Args:
        pairs: (query id, target id) pairs.
        notes: Note id -> note, for every id in ``pairs``.
        processor: Turns a note into model inputs.
    """

    def __init__(self, pairs: list[tuple[str, str]], notes: dict[str, Note], processor: NoteProcessor) -> None:
        self.pairs, self.notes, self.processor = pairs, notes, processor

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[dict[str, Any], dict[str, Any]]:
        q, t = self.pairs[i]
        return self.processor(self.notes[q], train=True), self.processor(self.notes[t], train=True)


class NoteDataset(Dataset):
    """A list of notes (an evaluation pool); each item carries its position as ``index`` (collate with
    :func:`collate_notes`).

    Args:
        note_ids: The pool, in order.
        notes: Note id -> note, for every id in ``note_ids``.
        processor: Turns a note into model inputs.
    """

    def __init__(self, note_ids: list[str], notes: dict[str, Note], processor: NoteProcessor) -> None:
        self.note_ids, self.notes, self.processor = note_ids, notes, processor

    def __len__(self) -> int:
        return len(self.note_ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.processor(self.notes[self.note_ids[i]], train=False)
        item["index"] = i
        return item


def collate_notes(items: list[dict[str, Any]]) -> NoteBatch:
    """Collate notes of a :class:`NoteDataset` and keep their pool positions (``index``, ``(B,)``)."""
    batch = collate(items)
    batch["index"] = torch.tensor([it["index"] for it in items])
    return batch
