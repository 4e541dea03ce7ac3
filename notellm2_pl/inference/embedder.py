"""The Python embedding API: :class:`Embedder` turns notes into L2-normalised embeddings with a trained model.

Usage::

    from notellm2_pl import Embedder
    emb = Embedder.from_pretrained("runs/demo/export").embed(notes, batch_size=64)   # (N, d) numpy

Notes are :class:`~notellm2_pl.data.tables.Note` objects or dicts (:func:`to_note`). Embedding is deterministic: the
eval transforms of the note processor, in input order.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from notellm2_pl.data.processing import NoteProcessor, collate
from notellm2_pl.data.prompts import TextLimits
from notellm2_pl.data.schema import EMBEDDING_KEYS, Probe, embedding_keys
from notellm2_pl.data.tables import Note
from notellm2_pl.inference.export import load_exported
from notellm2_pl.inference.factory import build_from_checkpoint
from notellm2_pl.training.module import NoteLLM2Module

NoteLike = Note | Mapping[str, Any]
"""A :class:`Note`, or a dict with ``title``, ``topics``, ``content`` and ``image`` (see :func:`to_note`)."""

DEFAULT_MAX_TOKENS = 140
"""Token budget of a templated note when the data config does not set ``max_tokens``."""


def to_note(obj: NoteLike, index: int = 0) -> Note:
    """A :class:`Note` from a Note or a dict with ``title``, ``topics`` (list or ``"a|b"``), ``content``, ``image``.

    Args:
        obj: The note.
        index: Position of the note, for the default id ``note{index}`` of a dict without ``note_id``.

    Returns:
        The note.
    """
    if isinstance(obj, Note):
        return obj
    topics = obj.get("topics") or []
    if isinstance(topics, str):
        topics = [t for t in topics.split("|") if t]
    image = obj.get("image")
    return Note(note_id=str(obj.get("note_id", f"note{index}")), title=str(obj.get("title") or ""),
                topics=[str(t) for t in topics], content=str(obj.get("content") or ""),
                image=os.fspath(image) if image else None)


def _processor_settings(data_cfg: Mapping[str, Any]) -> tuple[TextLimits, int]:
    """``(text limits, max_tokens)`` of a ``data`` config, defaults where it sets none."""
    d = TextLimits()
    limits = TextLimits(int(data_cfg.get("title_chars", d.title_chars)),
                        int(data_cfg.get("content_chars", d.content_chars)),
                        int(data_cfg.get("max_tags", d.max_tags)))
    return limits, int(data_cfg.get("max_tokens", DEFAULT_MAX_TOKENS))


class _Notes(Dataset):
    """Notes (or note-like dicts) of any sequence, converted and processed on access."""

    def __init__(self, notes: Sequence[NoteLike], processor: NoteProcessor) -> None:
        self.notes, self.processor = notes, processor

    def __len__(self) -> int:
        return len(self.notes)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.processor(to_note(self.notes[i], i), train=False)


class Embedder:
    """Embeds notes with a trained model: batched, deterministic (eval transforms), optional progress bar.

    Args:
        module: The trained module.
        limits: Character cuts of the text fields (as in training; default ``TextLimits()``).
        max_tokens: Token budget of the templated note (as in training).
        device: Device to run on (default: the module's).
        num_workers: DataLoader workers for tokenising and image decoding.
    """

    def __init__(self, module: NoteLLM2Module, limits: TextLimits | None = None, max_tokens: int = DEFAULT_MAX_TOKENS,
                 device: str | torch.device | None = None, num_workers: int = 0) -> None:
        self.module = module.eval()
        if device is not None:
            self.module.to(device)
        self.device = next(self.module.parameters()).device
        self.limits, self.max_tokens, self.num_workers = limits or TextLimits(), max_tokens, num_workers
        self._processors: dict[str, NoteProcessor] = {}

    @classmethod
    def from_module(cls, module: NoteLLM2Module, data_cfg: Mapping[str, Any], device: str | torch.device = "cpu",
                    num_workers: int = 0) -> Embedder:
        """An embedder for a built module, with the text limits and token budget of its ``data`` config.

        Args:
            module: The module.
            data_cfg: The ``data`` config it was trained with.
            device: Device to run on.
            num_workers: DataLoader workers.

        Returns:
            The embedder.
        """
        return cls(module.to(device), *_processor_settings(data_cfg), num_workers=num_workers)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu",
                        num_workers: int = 0) -> Embedder:
        """Load an export directory written by :func:`~notellm2_pl.inference.export.export_model`."""
        module, cfg = load_exported(path, device)
        return cls(module, *_processor_settings(cfg.get("data", {})), num_workers=num_workers)

    @classmethod
    def from_checkpoint(cls, ckpt_path: str | os.PathLike[str], config: str | os.PathLike[str] | None = None,
                        overrides: Sequence[str] = (), device: str | torch.device = "cpu",
                        num_workers: int = 0) -> Embedder:
        """Load a Lightning checkpoint (fit records its backbones; ``config`` is needed only for older checkpoints)."""
        module, _, data_cfg = build_from_checkpoint(ckpt_path, config, overrides)
        return cls.from_module(module, data_cfg, device, num_workers)

    @property
    def keys(self) -> list[str]:
        """Embedding kinds the model produces: ``["e_m"]``, plus ``"e_v"`` for mICL models."""
        return embedding_keys(getattr(self.module.encoder, "micl", False))

    def processor(self, probe: Probe = "full") -> NoteProcessor:
        """The note processor of a probe (``full``, ``only_image``, ``only_text``)."""
        if probe not in self._processors:
            self._processors[probe] = NoteProcessor(self.module.note_format(), self.limits, self.max_tokens, probe)
        return self._processors[probe]

    def embed(self, notes: Iterable[NoteLike], batch_size: int = 32, progress: bool = True, probe: Probe = "full",
              key: str = EMBEDDING_KEYS[0]) -> np.ndarray:
        """Embed notes into an ``(N, d)`` float32 matrix of L2-normalised rows, in input order.

        Args:
            notes: :class:`~notellm2_pl.data.tables.Note` objects or dicts with ``title``, ``topics``, ``content`` and
                ``image`` (a file path).
            batch_size: Notes per forward pass.
            progress: Show a tqdm progress bar when there is more than one batch.
            probe: Input probe: ``full``, ``only_image`` (empty text) or ``only_text`` (blank image).
            key: ``e_m`` (multimodal embedding) or ``e_v`` (mICL visual embedding).

        Returns:
            The embeddings.
        """
        return self.embed_all(notes, batch_size, progress, probe, keys=(key,))[key]

    def embed_all(self, notes: Iterable[NoteLike], batch_size: int = 32, progress: bool = True,
                  probe: Probe = "full", keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Like :meth:`embed`, returning every requested embedding kind (default: all of :attr:`keys`).

        Returns:
            ``{key: (N, d) float32 array}``.

        Raises:
            KeyError: If the model does not produce a requested key.
        """
        keys = list(keys or self.keys)
        for k in keys:
            if k not in self.keys:
                raise KeyError(f"This model has no {k!r} embedding (it has {self.keys}); e_v needs model.micl true.")
        items = notes if isinstance(notes, Sequence) else list(notes)  # a lazy sequence stays lazy
        out: dict[str, list[np.ndarray]] = {k: [] for k in keys}
        loader = DataLoader(_Notes(items, self.processor(probe)), batch_size=batch_size, collate_fn=collate,
                            num_workers=self.num_workers)
        bar = tqdm(loader, desc=f"embed ({probe})", unit="batch", disable=not progress or len(items) <= batch_size)
        with torch.inference_mode():
            for batch in bar:
                batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
                res = self.module(batch)
                for k in keys:
                    out[k].append(getattr(res, k).float().cpu().numpy())
        dim = int(self.module.encoder.config.embed_dim) if hasattr(self.module, "encoder") else 0
        return {k: np.concatenate(v) if v else np.zeros((0, dim), np.float32) for k, v in out.items()}
