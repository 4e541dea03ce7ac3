"""Turning notes into model inputs: tokenised prompts with tracked image-slot / marker positions, and images.

The model decides the format (:class:`NoteFormat`: tokenizer, image preprocessing, template variant, splice mode);
the data side decides the text limits and probes. The processor is the only place where the two meet. A batch is a
:class:`~notellm2_pl.data.schema.NoteBatch` (its keys and shapes are documented there).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch

from notellm2_pl.data.images import build_image_transform, load_image
from notellm2_pl.data.problems import DataError
from notellm2_pl.data.prompts import TextLimits, clean_fields, render, suffix
from notellm2_pl.data.schema import NoteBatch, Probe
from notellm2_pl.data.tables import Note
from notellm2_pl.model.feature_cache import FeatureStore, image_file_key
from notellm2_pl.plugins.contract import ImageConfig, decoder_special_ids


@dataclass
class NoteFormat:
    """What the model needs the notes to look like (built by the module from its backbones and settings).

    Attributes:
        tokenizer: The LLM's tokenizer.
        image_config: Vision preprocessing, or None for a model without a vision tower.
        variant: Template variant: ``text``, ``basic`` or ``micl``.
        preset: Prompt preset: ``en`` or ``zh`` (original prompts).
        image_open_ids: Token ids placed before the visual tokens (insert mode), empty in replace mode.
        image_close_ids: Token ids placed after the visual tokens.
        marker_id: The mICL marker token id (``variant == "micl"``), else None.
        feature_store: On-disk store of the frozen tower's features: images whose features it holds are not
            decoded (:mod:`notellm2_pl.model.feature_cache`). None: always decode.
        frame: Special token ids put before and after every sequence (the LLM's ``special_ids()``: BOS for Llama,
            ``[CLS]`` ... ``[SEP]`` for BERT). None: a decoder's (BOS where the tokenizer prepends one, nothing after).
    """

    tokenizer: Any
    image_config: ImageConfig | None
    variant: str
    preset: str
    image_open_ids: list[int]
    image_close_ids: list[int]
    marker_id: int | None
    feature_store: FeatureStore | None = None
    frame: tuple[list[int], list[int]] | None = None


def note_hash(note_id: str) -> int:
    """Stable signed 63-bit hash of a note id (same across processes and runs)."""
    return int.from_bytes(hashlib.blake2b(note_id.encode(), digest_size=8).digest(), "little") >> 1


class NoteProcessor:
    """Tokenises notes into prompts with tracked positions and loads their images.

    Args:
        fmt: The model's note format.
        limits: Character cuts.
        max_tokens: Token budget for the templated note (the suffix is appended afterwards, never truncated).
        probe: ``full``, ``only_image`` (empty text fields) or ``only_text`` (all-zero image in normalised space).
        train_flip: Random horizontal flip (training only; evaluation is always deterministic).
    """

    def __init__(self, fmt: NoteFormat, limits: TextLimits | None = None, max_tokens: int = 140,
                 probe: Probe = "full", train_flip: bool = False) -> None:
        self.fmt = fmt
        self.limits = limits if limits is not None else TextLimits()
        self.max_tokens = max_tokens
        self.probe = probe
        tok = fmt.tokenizer
        self._suffix_ids = tok(suffix(fmt.preset), add_special_tokens=False)["input_ids"]
        self._open_ids, self._close_ids = fmt.frame if fmt.frame is not None else decoder_special_ids(tok)
        self._eval_tf = build_image_transform(fmt.image_config) if fmt.image_config else None
        self._train_tf = build_image_transform(fmt.image_config, train_flip) if fmt.image_config else None

    def _encode_text(self, text: str) -> list[int]:
        if not text:
            return []
        return self.fmt.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]

    def tokenize(self, note: Note) -> tuple[list[int], int, int]:
        """Token ids of one note with the image slot and marker positions (-1 when absent).

        The templated note is cut to ``max_tokens``; the suffix and the LLM's closing ids (``[SEP]`` for BERT, none
        for a decoder) follow, never cut.
        """
        ids, image_pos, marker_pos = self.prompt_ids(note)
        return ids[: self.max_tokens] + self._suffix_ids + list(self._close_ids), image_pos, marker_pos

    def prompt_ids(self, note: Note) -> tuple[list[int], int, int]:
        """The templated note before the ``max_tokens`` cut (no suffix), with the image slot and marker positions.

        Raises:
            ValueError: If ``max_tokens`` would cut into the template's image block or marker.
        """
        title, tags, content = clean_fields(note.title, note.topics, note.content, self.limits, self.fmt.preset)
        if self.probe == "only_image":
            title = tags = content = ""
        ids, image_pos, marker_pos = list(self._open_ids), -1, -1
        for seg in render(self.fmt.variant, title, tags, content, self.fmt.preset):
            if seg.kind == "image":
                ids += self.fmt.image_open_ids
                image_pos = len(ids)
                ids += self.fmt.image_close_ids
            elif seg.kind == "marker":
                marker_pos = len(ids)
                ids.append(self.fmt.marker_id)
            else:
                ids += self._encode_text(seg.text)
        structural = max(image_pos + len(self.fmt.image_close_ids), marker_pos + 1)
        if structural > self.max_tokens:
            raise ValueError(f"max_tokens={self.max_tokens} cuts into the image block of the template "
                             f"({structural} tokens); raise --data.max_tokens.")
        return ids, image_pos, marker_pos

    def __call__(self, note: Note, train: bool = False) -> dict[str, Any]:
        ids, image_pos, marker_pos = self.tokenize(note)
        item: dict[str, Any] = {"input_ids": ids, "image_pos": image_pos, "marker_pos": marker_pos,
                                "note_id": note.note_id}
        if self.fmt.image_config is not None:
            item.update(self._pixels(note, train))
        return item

    def _pixels(self, note: Note, train: bool) -> dict[str, Any]:
        size = self.fmt.image_config.size
        store = self.fmt.feature_store
        if self.probe == "only_text":
            return {"pixel_values": torch.zeros(3, size, size), "image_key": "", "pixels_skipped": False}
        if note.image is None:
            raise DataError(f"Note {note.note_id} has no image. Every note needs one image in this version; "
                            f"drop such notes or pass --data.on_error skip.")
        key = _file_key(note.image, self.fmt.image_config) if store is not None else ""
        if key and store.has(key):  # features on disk: skip decoding (the model reads them by key)
            return {"pixel_values": torch.zeros(3, size, size), "image_key": key, "pixels_skipped": True}
        tf = self._train_tf if train else self._eval_tf
        pixels = tf(load_image(note.image, note.image_bytes))
        return {"pixel_values": pixels, "image_key": key, "pixels_skipped": False}


def _file_key(path: str, cfg: ImageConfig) -> str:
    """The image's feature-store key, or "" when the file cannot be read (decoding then raises a DataError)."""
    try:
        return image_file_key(path, cfg)
    except OSError:
        return ""


def collate(items: list[dict[str, Any]]) -> NoteBatch:
    """Right-pad a list of processed notes into a batch.

    Args:
        items: Outputs of :class:`NoteProcessor`, one per note.

    Returns:
        The batch; ``pixel_values`` only for models with a vision tower, ``image_keys`` / ``pixels_skipped`` only
        when a feature store holds some of the images.
    """
    lengths = [len(it["input_ids"]) for it in items]
    ids = torch.zeros(len(items), max(lengths), dtype=torch.long)  # (B, T), right-padded with 0
    mask = torch.zeros_like(ids)
    for i, it in enumerate(items):
        ids[i, : lengths[i]] = torch.tensor(it["input_ids"])
        mask[i, : lengths[i]] = 1
    batch: NoteBatch = {
        "input_ids": ids,
        "attention_mask": mask,
        "image_pos": torch.tensor([it["image_pos"] for it in items]),
        "marker_pos": torch.tensor([it["marker_pos"] for it in items]),
        "note_hash": torch.tensor([note_hash(it["note_id"]) for it in items], dtype=torch.long),
        "note_ids": [it["note_id"] for it in items],
    }
    if "pixel_values" in items[0]:
        batch["pixel_values"] = torch.stack([it["pixel_values"] for it in items])  # (B, 3, S, S)
        if any(it["image_key"] for it in items):
            batch["image_keys"] = [it["image_key"] for it in items]
            batch["pixels_skipped"] = torch.tensor([it["pixels_skipped"] for it in items], dtype=torch.bool)
    return batch


def collate_pairs(pairs: list[tuple[Any, ...]]) -> NoteBatch:
    """Pairs -> one batch of 2B notes laid out as ``[queries..., targets...]`` (docs/method.md#contrastive-loss).

    Items ``(query, target, [negatives])`` (hard negatives, docs/method.md#hard-negatives) append their M negatives
    after the targets, ``[queries; targets; negatives]``, and set ``num_negatives`` to M when there are any.
    """
    negatives = [n for p in pairs for n in (p[2] if len(p) > 2 else ())]
    batch = collate([p[0] for p in pairs] + [p[1] for p in pairs] + negatives)
    if negatives:
        batch["num_negatives"] = len(negatives)
    return batch
