"""In-batch contrastive loss (docs/method.md#contrastive-loss), a pure function of tensors.

The module does the gathering across devices.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pair_labels(batch_size: int, offset: int = 0, device: torch.device | None = None) -> torch.Tensor:
    """Column of each row's positive for a local batch laid out as ``[queries (b/2); targets (b/2)]``.

    Row ``i`` of the local batch sits at global column ``offset + i``; its partner is ``offset + (i + b/2) % b``.
    """
    if batch_size % 2:
        raise ValueError(f"A pair batch has an even number of notes, got {batch_size}.")
    i = torch.arange(batch_size, device=device)
    return offset + (i + batch_size // 2) % batch_size


def contrastive_loss(
    local: torch.Tensor,
    candidates: torch.Tensor,
    offset: int,
    logit_scale: torch.Tensor,
    local_ids: torch.Tensor | None = None,
    candidate_ids: torch.Tensor | None = None,
    negatives: torch.Tensor | None = None,
    negative_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric in-batch InfoNCE of the local rows against every candidate column.

    Every local note is an anchor; its partner is the positive; every other candidate note is a negative except
    the anchor itself (masked) and, when ids are given, any other copy of the anchor's note or of its positive's
    note (masked, so a popular item repeated in the batch is neither its own negative nor a false negative of the
    pairs it is the positive of: docs/method.md#contrastive-loss).

    Args:
        local: L2-normalised local embeddings ``(b, d)``, ``[queries; targets]``.
        candidates: L2-normalised embeddings of the global batch ``(N, d)``; ``local == candidates[offset:offset+b]``.
        offset: Column of the first local row in ``candidates`` (``rank * b``).
        logit_scale: Multiplier of the cosine similarities (``exp(tau)``), a scalar tensor.
        local_ids: Optional int64 note ids ``(b,)`` for same-note masking (anchor and positive copies).
        candidate_ids: Optional int64 note ids ``(N,)``.
        negatives: Optional L2-normalised extra negatives ``(M, d)`` (mined hard negatives,
            docs/method.md#hard-negatives): ``M`` more columns of every local row, never anchors. None or ``M = 0``:
            the plain in-batch loss, computed exactly as without the argument.
        negative_ids: Optional int64 note ids ``(M,)``: with ids, an extra negative that is the anchor's note or its
            positive's note is masked like any other copy.

    Returns:
        Mean cross-entropy over the local rows (fp32).
    """
    b = local.shape[0]
    labels = pair_labels(b, offset, local.device)  # (b,)
    rows = torch.arange(b, device=local.device)
    logits = local.float() @ candidates.float().T  # (b, N)
    masked = torch.zeros_like(logits, dtype=torch.bool)
    masked[rows, offset + rows] = True
    if local_ids is not None and candidate_ids is not None:
        positive_ids = candidate_ids[labels]  # (b,)
        same = (local_ids[:, None] == candidate_ids[None, :]) | (positive_ids[:, None] == candidate_ids[None, :])
        same[rows, labels] = False  # (b, N)
        masked |= same
    if negatives is not None and negatives.shape[0]:
        logits, masked = _with_negatives(local, logits, masked, negatives, labels, local_ids, candidate_ids,
                                         negative_ids)
    # scale first: -inf * d(scale) in the backward would be NaN
    logits = (logits * logit_scale.float()).masked_fill(masked, float("-inf"))
    return F.cross_entropy(logits, labels)


def _with_negatives(local: torch.Tensor, logits: torch.Tensor, masked: torch.Tensor, negatives: torch.Tensor,
                    labels: torch.Tensor, local_ids: torch.Tensor | None, candidate_ids: torch.Tensor | None,
                    negative_ids: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``logits``/``masked`` ``(b, N)`` extended by the extra negatives' columns ``(b, N + M)``."""
    extra = local.float() @ negatives.float().T  # (b, M)
    extra_masked = torch.zeros_like(extra, dtype=torch.bool)
    if local_ids is not None and candidate_ids is not None and negative_ids is not None:
        positive_ids = candidate_ids[labels]  # (b,)
        extra_masked = (local_ids[:, None] == negative_ids[None, :]) | (positive_ids[:, None] == negative_ids[None, :])
    return torch.cat([logits, extra], dim=1), torch.cat([masked, extra_masked], dim=1)


def micl_loss(loss_multimodal: torch.Tensor, loss_visual: torch.Tensor, weights: tuple[float, float]) -> torch.Tensor:
    """``(w_t * L(e_m) + w_v * L(e_v)) / (w_t + w_v)``; ``weights = (w_t, w_v)``, default 9:1.

    See docs/method.md#micl-loss.
    """
    w_t, w_v = weights
    return (w_t * loss_multimodal + w_v * loss_visual) / (w_t + w_v)


def pair_set_loss(
    emb: torch.Tensor,
    pairs: torch.Tensor,
    batch_pairs: int,
    logit_scale: torch.Tensor,
    ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Contrastive loss over a list of pairs, in consecutive in-batch chunks of ``batch_pairs`` pairs.

    Each chunk is laid out ``[queries; targets]`` as a training batch and scored with :func:`contrastive_loss`;
    the result is the mean over every anchor of every chunk (the last chunk may be smaller). This is the
    validation loss (docs/method.md#training-recipe), computed from embeddings already at hand.

    Args:
        emb: L2-normalised embeddings of the notes ``(P, d)``.
        pairs: Row indices into ``emb`` of each pair's query and target ``(n, 2)``.
        batch_pairs: Pairs per chunk (the training batch size, in pairs).
        logit_scale: Multiplier of the cosine similarities (``exp(tau)``).
        ids: Optional int64 note ids ``(P,)`` for same-note masking.

    Returns:
        The mean cross-entropy (fp32 scalar).
    """
    if pairs.shape[0] == 0:
        raise ValueError("The validation loss needs at least one pair.")
    total = emb.new_zeros((), dtype=torch.float32)
    for chunk in pairs.split(batch_pairs):
        rows = torch.cat([chunk[:, 0], chunk[:, 1]])  # (2c,) [queries; targets]
        batch = emb[rows]  # (2c, d)
        chunk_ids = ids[rows] if ids is not None else None
        total = total + contrastive_loss(batch, batch, 0, logit_scale, chunk_ids, chunk_ids) * rows.numel()
    return total / (2 * pairs.shape[0])
