"""Reading prepared streaming data: what :class:`~notellm2_pl.data.datamodule.NoteDataModule` serves from it.

Training streams the pairs with litdata (its sharding across ranks and workers, its seeded shuffle, its resumable
position; :class:`~notellm2_pl.data.streaming.loader.ResumableStreamingLoader`). Evaluation pools are read by
position from the id-sorted notes datasets through ordinary map-style datasets, so validation, test and predict
batches (and their DDP sharding by Lightning's sampler) are those of the in-memory path. Only ids, raw text
lengths and val/test pairs are held in memory, never the notes.

Same batches as the in-memory path: the evaluation loaders, and training without shuffling, give identical
batches. litdata shuffles by chunk and within chunks, not with the in-memory path's permutation, so a shuffled
training epoch holds the same pairs (tests/test_streaming.py compares them as multisets) in another order.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from litdata import StreamingDataset
from torch.utils.data import Dataset

from notellm2_pl.data.processing import NoteProcessor, collate_pairs
from notellm2_pl.data.streaming.layout import (
    NOTE_SPLITS,
    ids_dir,
    note_from_item,
    notes_dir,
    pairs_dir,
    read_manifest,
    read_text,
    train_pairs_dir,
)
from notellm2_pl.data.streaming.loader import ResumableStreamingLoader

if TYPE_CHECKING:
    from notellm2_pl.data.sampling import Progress


def open_by_position(input_dir: str, cache_dir: str | None = None) -> StreamingDataset:
    """A litdata dataset to read items by position (``ds[i]``), whole chunks going through the local cache.

    By default litdata reads one item of a remote dataset with a byte-range request for that item alone; for the item
    types written here litdata keeps the items in an Arrow footer of the chunk, which that read misses (every item
    comes back empty). Reading the whole chunk into the cache, as iteration does, is correct, and what a pass over a
    pool wants anyway.

    Args:
        input_dir: A prepared dataset (folder or URL).
        cache_dir: litdata's local chunk cache for a URL (None: litdata's default).
    """
    ds = StreamingDataset(input_dir, cache_dir=cache_dir)
    ds[0:0]  # opens litdata's reader, which the setter below needs
    ds.on_demand_bytes = False
    return ds


class PairTransform:
    """litdata ``transform`` of a training pair item: both notes processed as :class:`PairDataset` does."""

    def __init__(self, processor: NoteProcessor) -> None:
        self.processor = processor

    def __call__(self, item: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        return (self.processor(note_from_item(item["query"]), train=True),
                self.processor(note_from_item(item["target"]), train=True))


class StreamedNotes(Dataset):
    """An evaluation pool read by position from a prepared notes dataset (as :class:`NoteDataset`: items carry
    their pool position as ``index``; collate with :func:`~notellm2_pl.data.torch_datasets.collate_notes`).

    Args:
        input_dir: The notes dataset (folder or URL).
        positions: Dataset positions of the pool, in pool order; None: the whole dataset in its order.
        processor: Turns a note into model inputs.
        cache_dir: litdata's local chunk cache for a URL (None: litdata's default).
    """

    def __init__(self, input_dir: str, positions: Sequence[int] | None, processor: NoteProcessor,
                 cache_dir: str | None = None) -> None:
        self.notes = open_by_position(input_dir, cache_dir)
        self.positions, self.processor = positions, processor

    def __len__(self) -> int:
        return len(self.notes) if self.positions is None else len(self.positions)

    def __getitem__(self, i: int) -> dict[str, Any]:
        pos = i if self.positions is None else int(self.positions[i])
        item = self.processor(note_from_item(self.notes[pos]), train=False)
        item["index"] = i
        return item


class StreamedNoteView(Sequence):
    """A pool's notes as a lazy sequence (``Note`` objects read by position on access, images as bytes): what
    :meth:`~notellm2_pl.inference.embedder.Embedder.embed_all` takes without holding the pool in memory.

    Args:
        input_dir: The notes dataset (folder or URL).
        positions: Dataset positions of the pool, in pool order; None: the whole dataset in its order.
        cache_dir: litdata's local chunk cache for a URL (None: litdata's default).
    """

    def __init__(self, input_dir: str, positions: Sequence[int] | None = None, cache_dir: str | None = None) -> None:
        self.input_dir, self.positions, self.cache_dir = input_dir, positions, cache_dir
        self._notes: StreamingDataset | None = None

    def __len__(self) -> int:
        return len(self._dataset()) if self.positions is None else len(self.positions)

    def __getitem__(self, i: int) -> Any:  # Note; Sequence's slicing is not needed here
        pos = i if self.positions is None else int(self.positions[i])
        return note_from_item(self._dataset()[pos])

    def _dataset(self) -> StreamingDataset:
        if self._notes is None:  # opened lazily, so a pickled view (DataLoader workers) reopens its own
            self._notes = open_by_position(self.input_dir, self.cache_dir)
        return self._notes

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_notes": None}


class StreamedNoteMap(Mapping):
    """Notes by id over a :class:`StreamedNoteView` (read on access; only the id -> position map is in memory)."""

    def __init__(self, view: StreamedNoteView, ids: Sequence[str]) -> None:
        self.view, self.ids = view, list(ids)
        self._pos = {k: i for i, k in enumerate(self.ids)}

    def __getitem__(self, note_id: str) -> Any:
        return self.view[self._pos[note_id]]

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __len__(self) -> int:
        return len(self.ids)


class StreamSource:
    """Prepared streaming data (``python -m notellm2_pl prepare``) at a folder or URL.

    Args:
        root: The prepared folder or URL.
        cache_dir: Local chunk cache for a URL (None: litdata's default).
    """

    def __init__(self, root: str, cache_dir: str | None = None) -> None:
        self.root, self.cache_dir = str(root), cache_dir
        self.manifest = read_manifest(self.root)
        self._ids: dict[str, tuple[list[str], list[int]]] = {}

    def _rows(self, input_dir: str) -> list[dict[str, Any]]:
        """Every item of a small dataset (ids, pairs), in order."""
        ds = open_by_position(input_dir, self.cache_dir)
        return [ds[i] for i in range(len(ds))]

    def note_ids(self, note_split: str) -> list[str]:
        """Ids of the notes of ``train`` or ``test``, in dataset (sorted) order."""
        if note_split not in self._ids:
            rows = self._rows(ids_dir(self.root, note_split))
            self._ids[note_split] = [read_text(r["note_id"]) for r in rows], [int(r["raw_len"]) for r in rows]
        return self._ids[note_split][0]

    def pool_ids(self, split: str) -> list[str]:
        """Ids of the notes a split's pool is drawn from (``val`` and ``train``: the train notes), sorted."""
        return self.note_ids(NOTE_SPLITS[split])

    def raw_lengths(self, note_split: str) -> dict[str, int]:
        """Raw text length of every note of ``train`` or ``test`` (the short/long subset rule)."""
        ids = self.note_ids(note_split)
        return dict(zip(ids, self._ids[note_split][1]))

    def pair_sets(self, split: str) -> dict[str, list[tuple[str, str]]]:
        """Pair sets of ``val`` or ``test``: ``all`` and the prepared subsets."""
        return {subset: [(read_text(r["query_id"]), read_text(r["target_id"]))
                         for r in self._rows(pairs_dir(self.root, split, subset))]
                for subset in self.manifest["pair_sets"][split]}

    def val_pool(self, val_pairs: list[tuple[str, str]], extra: int, seed: int) -> tuple[list[str], list[int]]:
        """(ids, positions in ``notes_train``) of the validation pool: the notes of the validation pairs, then
        ``extra`` other train notes drawn with ``seed``, exactly as the in-memory path draws them (its shuffle of
        the sorted other ids permutes positions only, so shuffling their positions draws the same notes)."""
        ids = self.note_ids("train")
        in_val = {n for p in val_pairs for n in p}
        where = {k: i for i, k in enumerate(ids) if k in in_val}
        others = [i for i, k in enumerate(ids) if k not in where]
        random.Random(seed).shuffle(others)
        positions = sorted(where.values()) + others[:extra]
        return [ids[i] for i in positions], positions

    def note_map(self, split: str) -> StreamedNoteMap:
        """The notes a pair split's pool is drawn from, by id, read lazily from the chunks."""
        view = StreamedNoteView(notes_dir(self.root, NOTE_SPLITS[split]), None, self.cache_dir)
        return StreamedNoteMap(view, self.pool_ids(split))

    def notes_dataset(self, split: str, processor: NoteProcessor,
                      positions: Sequence[int] | None = None) -> StreamedNotes:
        """The notes a pair split's pool is drawn from (``val`` reads the train notes), by position."""
        return StreamedNotes(notes_dir(self.root, NOTE_SPLITS[split]), positions, processor, self.cache_dir)

    def train_loader(self, processor: NoteProcessor, batch_size: int, seed: int, shuffle: bool = True,
                     drop_last: bool = True, progress: Progress | None = None,
                     **kwargs: Any) -> ResumableStreamingLoader:
        """The training loader over the prepared pairs.

        Args:
            processor: Turns a note into model inputs.
            batch_size: Pairs per rank per step.
            seed: litdata's shuffle seed (the same on every rank).
            shuffle: litdata's shuffle (chunk order, then within chunks; per epoch).
            drop_last: Every rank gets the same number of pairs and only full batches (the gathered contrastive
                batch needs it); False keeps every pair once (the coverage test).
            progress: Trainer progress (:func:`~notellm2_pl.data.sampling.trainer_progress`) for exact resume.
            **kwargs: More ``StreamingDataLoader`` arguments (``num_workers``, ...).
        """
        ds = StreamingDataset(train_pairs_dir(self.root), cache_dir=self.cache_dir, shuffle=shuffle, seed=seed,
                              drop_last=drop_last, transform=PairTransform(processor))
        return ResumableStreamingLoader(ds, progress, batch_size=batch_size, collate_fn=collate_pairs,
                                        drop_last=drop_last, **kwargs)
