"""Late-fusion strength chosen on validation (docs/method.md#late-fusion-strength-chosen-on-validation).

Training always uses the full late-fusion gate. With ``model.encoder.fusion_scales`` set, every validation pass also
embeds the validation notes with the gate's mix scaled by each candidate ``s`` (``h + s (g - h)``), scores each on
validation Recall@K, and stores the winner in the gate's ``inference_scale`` buffer, which checkpoints and exports
carry. On data whose images say little about the pairs this lets the model fall back towards its LLM state; where
the image decides, validation keeps the full gate.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch

from notellm2_pl.model.late_fusion import LateFusionGate


@contextmanager
def fusion_scale(gate: LateFusionGate | None, scale: float) -> Iterator[None]:
    """Within the block the gate's eval-mode ``inference_scale`` is ``scale``; restored after (no-op without gate)."""
    if gate is None:
        yield
        return
    old = gate.inference_scale.clone()
    gate.inference_scale.fill_(scale)
    try:
        yield
    finally:
        gate.inference_scale.copy_(old)


@contextmanager
def gate_states(gate: LateFusionGate | None) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
    """Within the block, each call of ``gate`` appends ``(h, out)``: its LLM state input and its mixed output
    (``(B, H)`` each), so other strengths ``h + s (out - h)`` need no second forward. Records nothing without gate."""
    states: list[tuple[torch.Tensor, torch.Tensor]] = []
    if gate is None:
        yield states
        return

    def keep(_module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: tuple[torch.Tensor, ...]) -> None:
        states.append((inputs[0].detach(), output[0].detach()))

    handle = gate.register_forward_hook(keep)
    try:
        yield states
    finally:
        handle.remove()


def choose_scale(recalls: Mapping[float, float]) -> float:
    """The candidate with the highest validation recall; ties go to the larger scale (towards the paper's gate).

    Args:
        recalls: Validation Recall@K of each candidate scale.

    Raises:
        ValueError: If there is no candidate.
    """
    if not recalls:
        raise ValueError("no fusion scale candidates to choose from")
    return max(recalls, key=lambda s: (recalls[s], s))
