"""Saliency from the model: attention maps and their gradients over batches of training pairs.

How it is computed (no model code is edited, no optimiser exists): ``NoteEncoder.forward(batch,
output_attentions=True)`` returns the per-layer attention probabilities still in the autograd graph (the
``LLMBackbone`` plugin contract), and ``torch.autograd.grad(loss, attentions)`` gives ``dL/dA``. This is the same as
multiplying ``A`` by a ones tensor that requires grad (the original's instrumentation): that tensor's gradient is
``A * dL/dA``. Parameters are temporarily marked trainable so the attention maps are in the graph even for frozen
models; no parameter gradient is accumulated (``autograd.grad`` only differentiates w.r.t. the attention maps).

The measure itself (saliency matrices, flows, image region) is in :mod:`notellm2_pl.analysis.saliency`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader

from notellm2_pl.analysis.saliency import SaliencyResult, flow_scores, image_region, normalise_layers, saliency_matrix
from notellm2_pl.data.datamodule import NoteDataModule
from notellm2_pl.data.processing import collate_pairs
from notellm2_pl.data.torch_datasets import PairDataset
from notellm2_pl.model.losses import contrastive_loss

if TYPE_CHECKING:
    from notellm2_pl.data.schema import NoteBatch
    from notellm2_pl.model.encoder import EncoderOutput
    from notellm2_pl.training.module import NoteLLM2Module

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _attention_in_graph(module: torch.nn.Module) -> Iterator[None]:
    """Eval mode and every parameter marked trainable (so the attention maps have a graph); restored on exit.

    The vision tower is left as it is: its features enter the LLM as inputs, so the attention maps have a graph
    without it, and a frozen tower keeps serving the feature cache.
    """
    vision = getattr(getattr(module, "encoder", None), "vision", None)
    tower = {id(p) for p in vision.parameters()} if vision is not None else set()
    flags = [(p, p.requires_grad) for p in module.parameters() if id(p) not in tower]
    was_training = module.training
    module.eval()
    try:
        for p, _ in flags:
            p.requires_grad_(True)
        with torch.enable_grad():
            yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        module.train(was_training)


def embedding_loss(module: NoteLLM2Module, e_m: torch.Tensor, note_hash: torch.Tensor) -> torch.Tensor:
    """The contrastive loss (docs/method.md#contrastive-loss) on ``e_m`` of one local batch of pairs.

    Args:
        module: The model (its temperature and ``mask_same_id`` setting).
        e_m: Embeddings ``(2B, D)`` laid out ``[queries; targets]``.
        note_hash: Note id hashes ``(2B,)``: same-note negatives are masked when the model masks them.

    Returns:
        The scalar loss.
    """
    ids = note_hash.to(e_m.device) if module.hparams.get("mask_same_id", True) else None
    return contrastive_loss(e_m, e_m, 0, module.tau.exp(), ids, ids)


def batch_saliency(module: NoteLLM2Module, batch: NoteBatch) -> tuple[list[torch.Tensor], EncoderOutput]:
    """Saliency matrices of every layer for one batch of training pairs.

    Args:
        module: The model.
        batch: A pair batch (``collate_pairs``), already on the module's device.

    Returns:
        ``(per-layer (B, T, T) saliency matrices, EncoderOutput)``.
    """
    with _attention_in_graph(module):
        out = module.encoder(batch, output_attentions=True)
        if not out.attentions:
            raise RuntimeError("The LLM backbone returned no attention maps; its plugin must honour "
                               "output_attentions=True (see notellm2_pl.plugins.contract.LLMBackbone).")
        loss = embedding_loss(module, out.e_m, batch["note_hash"])
        grads = torch.autograd.grad(loss, list(out.attentions), allow_unused=True)
        mats = [saliency_matrix(a.detach(), g if g is not None else torch.zeros_like(a))
                for a, g in zip(out.attentions, grads)]
    return mats, out


def compute_saliency(module: NoteLLM2Module, batches: Iterable[NoteBatch], num_batches: int | None = None,
                     device: str | torch.device | None = None, label: str = "model") -> SaliencyResult:
    """Average ``[S_v, S_t, S_o]`` per layer over batches of training pairs (docs/method.md#saliency step 6).

    Args:
        module: The model.
        batches: Pair batches (``collate_pairs``).
        num_batches: Stop after this many batches (None: all).
        device: Move batches here (default: the module's device).
        label: Model name recorded in the result.

    Returns:
        The per-layer flows, averaged over notes and normalised per layer.
    """
    dev = torch.device(device) if device is not None else next(module.parameters()).device
    per_note: list[torch.Tensor] = []
    used = 0
    for batch in batches:
        if num_batches is not None and used >= num_batches:
            break
        batch = {k: (v.to(dev) if torch.is_tensor(v) else v) for k, v in batch.items()}
        mats, out = batch_saliency(module, batch)
        start, end = image_region(module.encoder, batch, out)
        flows = torch.stack([flow_scores(m, out.last_pos, start, end) for m in mats], dim=1)  # (B, layers, 3)
        per_note.append(flows.cpu())
        used += 1
        log.info("saliency: batch %d%s", used, f"/{num_batches}" if num_batches else "")
    if not per_note:
        raise ValueError("No batches: the training split has fewer pairs than one batch (lower --batch_size).")
    allf = torch.cat(per_note).double().numpy()  # (N, layers, 3)
    raw = allf.mean(0)
    return SaliencyResult(normalise_layers(raw), raw, allf.shape[0], used, label)


def training_batches(module: NoteLLM2Module, root: str, data_cfg: Mapping[str, Any], batch_size: int,
                     seed: int = 0) -> Iterator[NoteBatch]:
    """Shuffled (seeded) batches of training pairs, processed with the model's own note format.

    Args:
        module: The model (its ``note_format`` drives tokenisation and image preprocessing).
        root: Dataset root.
        data_cfg: The recipe's ``data`` section (text limits, ``max_tokens``...).
        batch_size: Pairs per batch (``2 * batch_size`` notes).
        seed: Shuffle seed.

    Yields:
        Pair batches (``collate_pairs``), ``drop_last``.
    """
    keys = ("title_chars", "content_chars", "max_tags", "max_tokens", "on_error")
    dm = NoteDataModule(root=root, batch_size=batch_size, **{k: data_cfg[k] for k in keys if k in data_cfg})
    dm.attach(module)
    dm.setup("fit")
    split = dm.splits["train"]
    ds = PairDataset(split.pairs["all"], split.notes, dm.processor)
    gen = torch.Generator().manual_seed(seed)
    yield from DataLoader(ds, batch_size=batch_size, shuffle=True, generator=gen, collate_fn=collate_pairs,
                          drop_last=True)

