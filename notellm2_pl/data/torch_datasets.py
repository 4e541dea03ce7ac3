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

    With hard negatives attached (:meth:`attach_negatives`), an item is ``(query, target, [negatives])``.

    Args:
        pairs: (query id, target id) pairs.
        notes: Note id -> note, for every id in ``pairs``.
        processor: Turns a note into model inputs.
    """

    def __init__(self, pairs: list[tuple[str, str]], notes: dict[str, Note], processor: NoteProcessor) -> None:
        self.pairs, self.notes, self.processor = pairs, notes, processor
        self.negative_ids: list[str] = []
        self.negatives: torch.Tensor | None = None  # (n_pairs, m) positions in negative_ids, -1: none

    def attach_negatives(self, note_ids: list[str], per_pair: int) -> torch.Tensor:
        """Carry up to ``per_pair`` hard negatives per pair, drawn from ``note_ids``; all empty at first.

        Call it before the loader starts its workers: the returned ``(n_pairs, per_pair)`` table of positions in
        ``note_ids`` (``-1``: none) is in shared memory, so workers see what the miner writes into it later.
        """
        self.negative_ids = list(note_ids)
        self.negatives = torch.full((len(self.pairs), per_pair), -1, dtype=torch.long).share_memory_()
        return self.negatives

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[dict[str, Any], ...]:
        q, t = self.pairs[i]
        pair = self.processor(self.notes[q], train=True), self.processor(self.notes[t], train=True)
        if self.negatives is None:
            return pair
        negatives = [self.processor(self.notes[self.negative_ids[j]], train=True)
                     for j in self.negatives[i].tolist() if j >= 0]
        return (*pair, negatives)


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
