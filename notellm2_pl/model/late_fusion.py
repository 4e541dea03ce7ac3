"""The late-fusion gate: mixes the vision tower's pooled feature into an embedding (docs/method.md#late-fusion)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


class LateFusionGate(nn.Module):
    """``out = z * h + (1 - z) * v`` with ``v = W_lf cls`` and ``z = sigmoid(W_g [h; v])``.

    In eval mode the mix is scaled by the buffer ``inference_scale`` ``s``: ``out = h + s * (z h + (1 - z) v - h)``
    (``s = 1``: the paper's gate, computed exactly as in training; ``s = 0``: the LLM state alone). ``s`` is chosen
    on validation by the training module when ``model.encoder.fusion_scales`` is set
    (docs/method.md#late-fusion-strength-chosen-on-validation); training always uses ``s = 1``. It is chosen on the
    multimodal embedding's recall and applies to it alone: the visual embedding ``e_v`` always gets the full gate.

    Args:
        vision_dim: Width of the vision pooled feature.
        hidden_size: LLM width.
        init_z: None: the paper's bias-free gate (``z`` about 0.5 at the start). A value in (0, 1): the gate gets a
            learnable bias starting at ``logit(init_z)``, so ``z`` starts near ``init_z``.
    """

    def __init__(self, vision_dim: int, hidden_size: int, init_z: float | None = None) -> None:
        super().__init__()
        self.proj = nn.Linear(vision_dim, hidden_size, bias=False)  # W_lf
        self.gate = nn.Linear(2 * hidden_size, hidden_size, bias=init_z is not None)  # W_g (+ b)
        for lin in (self.proj, self.gate):
            nn.init.normal_(lin.weight, std=0.02)
        if init_z is not None:
            nn.init.constant_(self.gate.bias, math.log(init_z / (1.0 - init_z)))
        self.register_buffer("inference_scale", torch.tensor(1.0))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # Checkpoints and exports from before the buffer existed mean s = 1 (the paper's gate).
        state_dict.setdefault(prefix + "inference_scale", torch.tensor(1.0))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, h_llm: torch.Tensor, v_img: torch.Tensor,
                scaled: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Fuse ``h_llm (B, H)`` with the raw vision feature ``v_img (B, D_v)``; returns (fused, gate z ``(B, H)``).

        Args:
            h_llm: The LLM state.
            v_img: The vision tower's pooled feature.
            scaled: Apply ``inference_scale`` in eval mode (the encoder passes False for ``e_v``: the scale is chosen
                on ``e_m`` alone).
        """
        v = self.proj(v_img.to(self.proj.weight.dtype))  # (B, H)
        z = torch.sigmoid(self.gate(torch.cat([h_llm, v], dim=-1)))  # (B, H)
        fused = z * h_llm + (1 - z) * v
        if scaled and not self.training and float(self.inference_scale) != 1.0:
            fused = self.at_scale(h_llm, fused, self.inference_scale.to(fused.dtype))
        return fused, z

    @staticmethod
    def at_scale(h_llm: torch.Tensor, mix: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
        """The embedding state at late-fusion strength ``s``: ``h + s (mix - h)`` (``(B, H)`` each)."""
        return h_llm + scale * (mix - h_llm)
