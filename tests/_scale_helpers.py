"""Shared builders for the scale-out tests (DDP, GradCache, LoRA): a tiny NoteLLM-2 module and real batches."""

from __future__ import annotations

import functools
import random
from pathlib import Path
from typing import Any

import torch

from notellm2_pl.plugins.testing import TINY_WORDS

WORDS = TINY_WORDS


def make_ckpts(root: Path, llm_overrides: dict[str, Any] | None = None) -> dict[str, str]:
    """Tiny qwen2 LLM + tiny CLIP tower under ``root``."""
    from notellm2_pl.plugins.testing import make_tiny_llm_checkpoint, make_tiny_vision_checkpoint

    return {
        "llm": make_tiny_llm_checkpoint(root / "llm", "qwen2", **(llm_overrides or {})),
        "vision": make_tiny_vision_checkpoint(root / "vision", "clip"),
    }


def tiny_module(ckpts: dict[str, str], seed: int = 0, llm_kwargs: dict[str, Any] | None = None, **kwargs: Any):
    """A NoteLLM2Module (mICL + late fusion + Q-Former) on the tiny checkpoints, deterministic given ``seed``."""
    from notellm2_pl_backbones.connectors import QFormerConnector
    from notellm2_pl_backbones.hf_llm import HFCausalLM
    from notellm2_pl_backbones.hf_vision import CLIPVision

    from notellm2_pl.model.config import EncoderConfig, encoder_keys
    from notellm2_pl.training.module import NoteLLM2Module

    torch.manual_seed(seed)
    encoder = EncoderConfig(**{"embed_dim": 16, **{k: v for k, v in kwargs.items() if k in encoder_keys()}})
    kwargs = {k: v for k, v in kwargs.items() if k not in encoder_keys()}
    connector = functools.partial(
        QFormerConnector, num_query_tokens=4, num_layers=2, hidden_size=32, num_heads=2, intermediate_size=64
    )
    module = NoteLLM2Module(
        HFCausalLM(ckpts["llm"], **(llm_kwargs or {})),
        CLIPVision(ckpts["vision"]),
        connector,
        encoder,
        lr=1e-3,
        **kwargs,
    )
    module.train()
    module.encoder.vision.eval()
    return module


def make_pairs(img_dir: Path, n_pairs: int, seed: int = 0) -> list[tuple[Any, Any]]:
    """``n_pairs`` pairs of random notes with images; pair 1 reuses pair 0's target (a repeated popular item)."""
    from PIL import Image

    from notellm2_pl.data.tables import Note

    rng = random.Random(seed)
    img_dir.mkdir(parents=True, exist_ok=True)

    def note(i: int) -> Note:
        path = img_dir / f"n{i}.png"
        colour = tuple(rng.randrange(256) for _ in range(3))  # drawn always: the same notes in every process
        if not path.exists():
            Image.new("RGB", (40, 40), colour).save(path)
        words = [rng.choice(WORDS) for _ in range(rng.randrange(2, 14))]  # varied lengths: padding matters
        return Note(f"n{i}", " ".join(words[:3]), words[3:5], " ".join(words[5:]), str(path))

    notes = [note(i) for i in range(2 * n_pairs)]
    pairs = [(notes[2 * i], notes[2 * i + 1]) for i in range(n_pairs)]
    if n_pairs > 1:
        pairs[1] = (pairs[1][0], pairs[0][1])
    return pairs


def collate_pair_notes(module: Any, pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    """Process and collate pairs exactly as the training data loader does (``[queries; targets]``)."""
    from notellm2_pl.data.processing import NoteProcessor, collate_pairs

    proc = NoteProcessor(module.note_format(), max_tokens=64)
    return collate_pairs([(proc(q, train=True), proc(t, train=True)) for q, t in pairs])


def grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every trainable parameter's gradient (zeros where none)."""
    return {
        n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
        for n, p in module.named_parameters()
        if p.requires_grad
    }


def assert_grads_close(
    a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-6, rtol: float = 1e-4
) -> None:
    """Every gradient equal; also checks that the gradients are not all zero."""
    assert a.keys() == b.keys()
    assert sum(float(g.abs().sum()) for g in a.values()) > 0
    for name, value in a.items():
        torch.testing.assert_close(value, b[name], atol=atol, rtol=rtol, msg=lambda m, n=name: f"{n}: {m}")
