"""Information-flow saliency (docs/method.md#saliency): how much the embedding token draws on the image, per layer.

For every decoder layer ``l`` the saliency matrix is ``I_l = |sum_h A_{h,l} * dL/dA_{h,l}|`` (a ``T x T`` matrix per
note), where ``A`` are the post-softmax attention probabilities and ``L`` is the contrastive loss
(docs/method.md#contrastive-loss) on the multimodal embedding ``e_m`` only (also for mICL models), over batches of
training pairs, in eval mode. The diagonal is zeroed and NaN becomes 0. With ``t`` the embedding token
(``EncoderOutput.last_pos``) and ``V`` the image region, the three flows are::

    S_v = sum_{j in V} I(t, j) / |V|                                   image -> target
    S_t = sum_{j not in V, j < t} I(t, j) / (t - |V|)                  other tokens -> target
    S_o = (sum_{i, j <= t} I(i, j) - |V| S_v - (t - |V|) S_t) / (t (t + 1) / 2 - t)   among all other pairs

Per layer, ``[S_v, S_t, S_o]`` is averaged over all notes and then normalised to sum to 1.

The model side (running the encoder over batches of training pairs) is in
:mod:`notellm2_pl.analysis.saliency_model`; plots and files in :mod:`notellm2_pl.analysis.saliency_output`.

Only post-softmax attention is supported: the contract returns probabilities, from which the pre-softmax scores the
original used for LLaMA/OPT (docs/method.md#defects-of-the-original-code (B13)) cannot be recovered exactly (they are
defined up to a per-row shift).

The image region ``V`` comes from tracked positions (``EncoderOutput.image_span``, end exclusive), never from magic
offsets:

- ``replace`` splicing (Llama style): the visual tokens ``[start, end)``.
- ``insert`` splicing (Qwen style): the visual tokens plus the open/close tag tokens around them.
- mICL: from the first image token (its open tag in insert mode) to the end of the image-compression segment: the
  read-out token ``pos_v``, the marker at ``pos_v + 1`` and the tokens that close the segment (``".`` in the ``en``
  template, ``”。`` in ``zh``), counted per note by decoding the tokens after the marker until that closing text is
  covered. With the original Qwen tokenizer this is ``pos_v + 3`` inclusive, the original's ``+3``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from notellm2_pl.data.prompts import MARKER, PRESETS

if TYPE_CHECKING:
    from notellm2_pl.data.schema import NoteBatch
    from notellm2_pl.model.encoder import EncoderOutput, NoteEncoder

log = logging.getLogger(__name__)

FLOWS: tuple[str, ...] = ("S_v", "S_t", "S_o")


# ------------------------------------------------------------------------------------------------ pure functions
def saliency_matrix(attention: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``I = |sum_heads A * dL/dA|`` with a zero diagonal and NaN set to 0.

    Args:
        attention: Attention probabilities of one layer ``(B, heads, T, T)``.
        grad: ``dL/dA`` of the same shape.

    Returns:
        ``(B, T, T)`` float32 saliency matrices.
    """
    sal = (attention.float() * grad.float()).sum(1).abs()  # (B, T, T)
    sal = torch.nan_to_num(sal, nan=0.0)
    eye = torch.eye(sal.shape[-1], dtype=torch.bool, device=sal.device)
    return sal.masked_fill(eye, 0.0)


def flow_scores(sal: torch.Tensor, target: torch.Tensor, v_start: torch.Tensor, v_end: torch.Tensor) -> torch.Tensor:
    """``[S_v, S_t, S_o]`` of every note (docs/method.md#saliency step 5).

    Args:
        sal: Saliency matrices ``(B, T, T)`` (rows attend to columns).
        target: Embedding-token position ``t`` of each note ``(B,)``.
        v_start: First position of the image region ``(B,)``.
        v_end: One past its last position ``(B,)``; ``v_start == v_end`` means no image region (``S_v = 0``).

    Returns:
        ``(B, 3)`` float32 scores.
    """
    b, length, _ = sal.shape
    dev = sal.device
    t = target.to(dev).long()
    j = torch.arange(length, device=dev)[None, :]  # (1, T)
    row = sal[torch.arange(b, device=dev), t]  # (B, T): flows into the target
    in_v = (j >= v_start.to(dev)[:, None]) & (j < v_end.to(dev)[:, None]) & (j < t[:, None])  # (B, T)
    before = j < t[:, None]  # (B, T)
    n_v = in_v.sum(1).float()  # (B,)
    sum_v = (row * in_v).sum(1)
    sum_t = (row * (before & ~in_v)).sum(1)
    # sum_{i,j<=t} I(i,j) - |V| S_v - (t-|V|) S_t is the sum over the rows i < t (row t is exactly the flows into
    # the target); summing those rows directly avoids a cancellation that can leave a tiny negative S_o
    rows_other = (j < t[:, None]).float()  # (B, T)
    cols = (j <= t[:, None]).float()  # (B, T)
    others = (sal * rows_other[:, :, None] * cols[:, None, :]).sum((1, 2))  # (B,)
    tf = t.float()
    s_v = torch.where(n_v > 0, sum_v / n_v.clamp(min=1), torch.zeros_like(sum_v))
    s_t = sum_t / (tf - n_v).clamp(min=1)
    s_o = others / (tf * (tf + 1) / 2 - tf).clamp(min=1)
    return torch.stack([s_v, s_t, s_o], dim=1)


def normalise_layers(scores: np.ndarray) -> np.ndarray:
    """Normalise each layer's ``[S_v, S_t, S_o]`` to sum to 1 (layers that are all zero stay zero)."""
    total = scores.sum(axis=-1, keepdims=True)
    return np.divide(scores, total, out=np.zeros_like(scores), where=total > 0)


# ------------------------------------------------------------------------------------------------ regions
def closing_text(preset: str) -> str:
    """The punctuation that closes the mICL image-compression segment after the marker (``".`` / ``”。``)."""
    after = PRESETS[preset]["micl"].split(MARKER, 1)[1]
    return re.sub(r"\s", "", re.match(r"[^\w]*", after).group(0))


def _closing_length(tokenizer: Any, ids: Sequence[int], closing: str, max_tokens: int = 8) -> int:
    """Number of tokens at the start of ``ids`` needed to spell ``closing`` (0 if it never appears)."""
    for n in range(1, min(max_tokens, len(ids)) + 1):
        text = re.sub(r"\s", "", tokenizer.decode(list(ids[:n])))
        if text[: len(closing)] == closing:
            return n
    return 0


def image_region(encoder: NoteEncoder, batch: NoteBatch, out: EncoderOutput) -> tuple[torch.Tensor, torch.Tensor]:
    """Spliced ``[start, end)`` of the image region ``V`` of each note, from tracked positions (module docstring).

    Args:
        encoder: The model's encoder (``module.encoder``).
        batch: The model inputs (``input_ids``, ``marker_pos``...).
        out: The ``EncoderOutput`` of that batch.

    Returns:
        ``(start, end)``, each ``(B,)`` int64; ``start == end == 0`` for notes without visual tokens.
    """
    fmt = encoder.note_format()
    span = out.image_span.to(out.last_pos.device)
    start, end = span[:, 0].clone(), span[:, 1].clone()
    none = start < 0
    start = start - len(fmt.image_open_ids)  # insert mode: the open tag(s)
    end = end + len(fmt.image_close_ids)  # ... and the close tag(s)
    if encoder.micl:
        closing = closing_text(fmt.preset)
        tok = fmt.tokenizer
        ids, marker = batch["input_ids"], batch["marker_pos"]
        n_close = []
        for b in range(ids.shape[0]):
            m = int(marker[b])
            n = _closing_length(tok, ids[b, m + 1:].tolist(), closing) if m >= 0 else 0
            if m >= 0 and n == 0:
                log.warning("Could not find the closing %r of the image-compression segment; the mICL image region "
                            "ends at the marker.", closing)
            n_close.append(n)
        end = out.pos_v + 2 + torch.tensor(n_close, device=end.device)  # pos_v, marker, closing tokens
    start = torch.where(none, torch.zeros_like(start), start)
    end = torch.where(none, torch.zeros_like(end), end)
    return start.long(), end.long()


@dataclass
class SaliencyResult:
    """Per-layer information flows of one model.

    Attributes:
        scores: ``(layers, 3)`` ``[S_v, S_t, S_o]`` normalised per layer to sum to 1.
        raw: ``(layers, 3)`` means over notes, before normalisation.
        num_notes: Notes averaged over.
        num_batches: Batches of pairs used.
        label: Model name for plots.
        meta: Settings (checkpoint, batch size, attention kind...).
    """

    scores: np.ndarray
    raw: np.ndarray
    num_notes: int
    num_batches: int
    label: str = "model"
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (``saliency.json``)."""
        return {"label": self.label, "flows": list(FLOWS), "num_notes": self.num_notes,
                "num_batches": self.num_batches, "attention": "post_softmax",
                "normalised": {f: self.scores[:, i].tolist() for i, f in enumerate(FLOWS)},
                "raw": {f: self.raw[:, i].tolist() for i, f in enumerate(FLOWS)}, "meta": self.meta}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SaliencyResult:
        """Inverse of :meth:`to_dict`."""
        scores = np.stack([np.asarray(d["normalised"][f], dtype=np.float64) for f in FLOWS], axis=1)
        raw = np.stack([np.asarray(d["raw"][f], dtype=np.float64) for f in FLOWS], axis=1)
        return cls(scores, raw, int(d["num_notes"]), int(d["num_batches"]), d.get("label", "model"),
                   dict(d.get("meta", {})))

