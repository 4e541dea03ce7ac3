"""Names shared by every room: table columns, test subsets, embedding keys, probes and batch fields.

One home for each name, so that the reader, the synthetic generator, the evaluator and the exporter cannot drift
apart. The on-disk layouts these columns belong to are described in docs/data.md ("Layouts").
"""

from __future__ import annotations

from typing import Literal, TypedDict

import torch

TABLE_EXTENSIONS: tuple[str, ...] = (".csv", ".jsonl", ".parquet")
"""Table formats every reader accepts, in the order a layout is looked up."""

NOTE_COLUMNS: tuple[str, ...] = ("note_id", "title", "topics", "content", "image")
"""Columns of a canonical ``notes_{split}`` table."""

PAIR_COLUMNS: tuple[str, ...] = ("query_id", "target_id")
"""Columns of a canonical ``pairs_{split}`` table."""

OFFICIAL_NOTE_COLUMNS: tuple[str, ...] = ("noteid", "title", "content", "imgid", "category")
"""Columns of the original NoteLLM release's header-less ``notes_{split}.csv``."""

OFFICIAL_PAIR_COLUMNS: tuple[str, ...] = ("noteid1", "noteid2")
"""Columns of the original NoteLLM release's ``note_pairs_{split}.csv``."""

SUBSET_NAMES: tuple[str, ...] = ("shortquery", "shortgtdoc", "longquery", "longgtdoc")
"""Test subsets by text length, matching the official ``note_pairs_test_{name}.csv`` files."""

ALL_PAIRS = "all"
"""Name of the whole test split next to :data:`SUBSET_NAMES` in result tables."""

EMBEDDING_KEYS: tuple[str, ...] = ("e_m", "e_v")
"""Embeddings a model writes: ``e_m`` (the note) always, ``e_v`` (the image alone) for mICL models."""

Probe = Literal["full", "only_image", "only_text"]
PROBES: tuple[str, ...] = ("full", "only_image", "only_text")
"""Input probes: the whole note, the image with the text blanked out, the text with the image blanked out."""

Split = Literal["train", "val", "test"]
SPLITS: tuple[str, ...] = ("train", "val", "test")


def embedding_keys(micl: bool) -> list[str]:
    """Embedding keys a model produces: ``["e_m", "e_v"]`` with mICL, else ``["e_m"]``."""
    return list(EMBEDDING_KEYS) if micl else [EMBEDDING_KEYS[0]]


class NoteBatch(TypedDict, total=False):
    """One collated batch of notes, as the processor builds it and the encoder reads it.

    A training batch of B pairs is one NoteBatch of 2B rows laid out ``[queries..., targets...]``.

    Attributes:
        input_ids: Token ids, ``(B, T)``.
        attention_mask: 1 for real tokens, ``(B, T)``.
        image_pos: Where the visual tokens go in each row, ``(B,)`` (-1: no image slot).
        marker_pos: Position of the mICL marker per row, ``(B,)``.
        pixel_values: Images, ``(B, 3, S, S)`` (zeros for rows whose features are cached).
        note_hash: Stable 63-bit hash of each note id, ``(B,)``: same-note masking in the loss.
        note_ids: The note ids, in row order.
        image_keys: Feature-store key per row (``""`` where the row has none).
        pixels_skipped: Rows whose pixels were not decoded because their features are cached, ``(B,)`` bool.
        index: Position of each note in its evaluation pool, ``(B,)`` (evaluation loaders only).
        num_negatives: Mined hard negatives at the end of a training batch (``[queries; targets; negatives]``);
            absent: none.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    image_pos: torch.Tensor
    marker_pos: torch.Tensor
    pixel_values: torch.Tensor
    note_hash: torch.Tensor
    note_ids: list[str]
    image_keys: list[str | None]
    pixels_skipped: torch.Tensor
    index: torch.Tensor
    num_negatives: int

