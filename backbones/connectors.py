"""Connectors from vision tokens to LLM-width visual tokens: Q-Former, MLP, and none (late-fusion-only models).

The model builds a connector as ``factory(in_dim=D_v, out_dim=H)``; recipes set the other arguments.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from notellm2_pl.plugins.contract import Connector


def mlp_projector(in_dim: int, out_dim: int, depth: int = 2) -> nn.Sequential:
    """LLaVA-style ``mlp{depth}x_gelu``: Linear(in->out), then (GELU, Linear(out->out)) x (depth-1)."""
    layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
    for _ in range(depth - 1):
        layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
    return nn.Sequential(*layers)


def _init_normal(module: nn.Module, std: float = 0.02) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class QFormerConnector(Connector):
    """BLIP-2 style Q-Former (transformers ``Blip2QFormerModel``, random init) + ``mlp{N}x_gelu`` projector.

    Args:
        in_dim: Vision width ``D_v`` (set by the model).
        out_dim: LLM width ``H`` (set by the model).
        num_query_tokens: Learnable queries ``N_q`` = visual tokens given to the LLM.
        num_layers: Q-Former layers (cross-attention every ``cross_attention_frequency`` layers).
        hidden_size: Q-Former width ``D_q`` for queries, Q-Former and projector input (decoupled from ``D_v``).
        num_heads: Attention heads (must divide ``hidden_size``).
        intermediate_size: FFN width.
        cross_attention_frequency: Insert cross-attention every this many layers.
        query_init: ``normal`` (N(0, 0.02), default) or ``zeros`` (parity with the original code).
        projector_depth: Depth of the ``mlpNx_gelu`` projector.
        key_positions: Learned position embeddings added to the vision tokens before cross-attention, one per token:
            set it to the tower's token count (16 for EfficientNet-Lite0 at 128 px) when the tokens carry no
            position, as a CNN's feature map does. ``None`` (BLIP-2, default): none; a ViT's tokens already carry
            position. Without them the queries see the *set* of vision tokens, not where each came from.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_query_tokens: int = 16,
        num_layers: int = 6,
        hidden_size: int = 768,
        num_heads: int = 12,
        intermediate_size: int = 3072,
        cross_attention_frequency: int = 2,
        query_init: Literal["normal", "zeros"] = "normal",
        projector_depth: int = 2,
        key_positions: int | None = None,
    ) -> None:
        super().__init__(in_dim, out_dim)
        from transformers import Blip2QFormerConfig, Blip2QFormerModel

        if hidden_size % num_heads:
            raise ValueError(f"QFormerConnector: hidden_size={hidden_size} is not divisible by num_heads={num_heads}.")
        cfg = Blip2QFormerConfig(
            hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=num_heads,
            intermediate_size=intermediate_size, encoder_hidden_size=in_dim,
            cross_attention_frequency=cross_attention_frequency, initializer_range=0.02,
        )
        self.num_query_tokens = num_query_tokens
        self.query_tokens = nn.Parameter(torch.zeros(1, num_query_tokens, hidden_size))
        if query_init == "normal":
            nn.init.normal_(self.query_tokens, std=0.02)
        self.qformer = Blip2QFormerModel(cfg)
        _init_normal(self.qformer)
        self.projector = mlp_projector(hidden_size, out_dim, projector_depth)
        _init_normal(self.projector)
        self.key_pos: nn.Parameter | None = None
        if key_positions is not None:
            # unit scale, like the (normalised) tower features they are added to
            self.key_pos = nn.Parameter(torch.randn(1, key_positions, in_dim))

    def num_tokens(self, num_inputs: int) -> int:
        return self.num_query_tokens

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b = tokens.shape[0]
        if self.key_pos is not None:
            if tokens.shape[1] != self.key_pos.shape[1]:
                raise ValueError(f"QFormerConnector has key_positions={self.key_pos.shape[1]} but the vision tower "
                                 f"gives {tokens.shape[1]} tokens per image; set "
                                 f"--model.connector.init_args.key_positions {tokens.shape[1]}.")
            tokens = tokens + self.key_pos  # (B, N, D_v)
        queries = self.query_tokens.expand(b, -1, -1)  # (B, Q, D_q)
        mask = torch.ones(tokens.shape[:2], dtype=torch.long, device=tokens.device)
        out = self.qformer(query_embeds=queries, encoder_hidden_states=tokens, encoder_attention_mask=mask)
        return self.projector(out.last_hidden_state)  # (B, Q, H)

    def layer_groups(self) -> list[nn.Module]:
        return list(self.qformer.encoder.layer)

    @classmethod
    def tiny(cls, in_dim: int = 32, out_dim: int = 64, **kwargs: Any) -> QFormerConnector:
        """A 2-layer, 32-wide Q-Former with 4 queries."""
        defaults = {"num_query_tokens": 4, "num_layers": 2, "hidden_size": 32, "num_heads": 2, "intermediate_size": 64}
        return cls(in_dim, out_dim, **{**defaults, **kwargs})


class MLPConnector(Connector):
    """``mlp{depth}x_gelu`` on every vision token (LLaVA style), optionally average-pooled to fewer tokens.

    Args:
        in_dim: Vision width (set by the model).
        out_dim: LLM width (set by the model).
        depth: Number of Linear layers (``mlp2x_gelu`` = 2).
        num_tokens_out: Adaptive average pooling over the token axis to this many tokens (``None``: keep all).
    """

    def __init__(self, in_dim: int, out_dim: int, depth: int = 2, num_tokens_out: int | None = None) -> None:
        super().__init__(in_dim, out_dim)
        self.num_tokens_out = num_tokens_out
        self.projector = mlp_projector(in_dim, out_dim, depth)
        _init_normal(self.projector)

    def num_tokens(self, num_inputs: int) -> int:
        return self.num_tokens_out or num_inputs

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.num_tokens_out:
            pooled = nn.functional.adaptive_avg_pool1d(tokens.transpose(1, 2), self.num_tokens_out)  # (B, D, Q)
            tokens = pooled.transpose(1, 2)  # (B, Q, D)
        return self.projector(tokens)

    @classmethod
    def tiny(cls, in_dim: int = 32, out_dim: int = 64, **kwargs: Any) -> MLPConnector:
        """A 2-layer MLP pooled to 4 tokens."""
        return cls(in_dim, out_dim, **{"num_tokens_out": 4, **kwargs})


class NoConnector(Connector):
    """No visual tokens (late-fusion-only and text-only models): the text-only template is used.

    Args:
        in_dim: Ignored (set by the model).
        out_dim: Ignored (set by the model).
    """

    def __init__(self, in_dim: int = 0, out_dim: int = 0) -> None:
        super().__init__(in_dim, out_dim)

    def num_tokens(self, num_inputs: int) -> int:
        return 0

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.new_zeros(tokens.shape[0], 0, self.out_dim)  # (B, 0, H)

    @classmethod
    def tiny(cls, in_dim: int = 32, out_dim: int = 64) -> NoConnector:
        """The same, with explicit dims."""
        return cls(in_dim, out_dim)
