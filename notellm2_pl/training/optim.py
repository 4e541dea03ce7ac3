"""Optimiser pieces shared by the trainers: which parameters get weight decay, and the warmup-decay schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

from torch import nn


def is_no_decay(name: str, param: nn.Parameter, extra_words: tuple[str, ...] = ()) -> bool:
    """Whether a parameter is exempt from weight decay: biases, scalars and norms, plus any name with an extra word.

    Args:
        name: The parameter's qualified name.
        param: The parameter (``ndim < 2``: bias, norm scale, temperature).
        extra_words: Further lowercase name fragments to exempt (e.g. ``("embed",)``).
    """
    lowered = name.lower()
    return param.ndim < 2 or "norm" in lowered or any(w in lowered for w in extra_words)


def decay_groups(named_parameters: Iterable[tuple[str, nn.Parameter]], weight_decay: float,
                 extra_words: tuple[str, ...] = ()) -> list[dict]:
    """Two AdamW parameter groups: ``weight_decay`` on the rest, 0 on :func:`is_no_decay` parameters."""
    decay, no_decay = [], []
    for name, p in named_parameters:
        (no_decay if is_no_decay(name, p, extra_words) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def param_groups(named_parameters: Iterable[tuple[str, nn.Parameter]], lr: float, lr_new: float,
                 weight_decay: float, no_decay_norm_bias_tau: bool = True) -> list[dict[str, Any]]:
    """AdamW groups of a NoteLLM-2 module: (pretrained backbone | new part) x (decay | no decay).

    Args:
        named_parameters: ``module.named_parameters()``; frozen parameters are skipped.
        lr: Learning rate of the pretrained backbones (``encoder.llm.*``, ``encoder.vision.*``).
        lr_new: Learning rate of the new parts (connector, gate, head, temperature).
        weight_decay: Weight decay of the decayed groups.
        no_decay_norm_bias_tau: Exempt norms, biases and the temperature from weight decay (:func:`is_no_decay`).

    Returns:
        The groups, each with ``params``, ``lr`` and ``weight_decay``.
    """
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in named_parameters:
        if not p.requires_grad:
            continue
        pretrained = name.startswith(("encoder.llm.", "encoder.vision."))
        no_decay = no_decay_norm_bias_tau and is_no_decay(name, p)  # tau is a scalar: no decay
        groups.setdefault((pretrained, no_decay), []).append(p)
    return [{"params": ps, "lr": lr if pre else lr_new, "weight_decay": 0.0 if nd else weight_decay}
            for (pre, nd), ps in groups.items()]


def lr_lambda(step: int, total: int, warmup: int, kind: Literal["linear", "log"]) -> float:
    """Warmup (``linear`` or DeepSpeed-style ``log``) then linear decay to 0 at ``total`` steps."""
    if step < warmup:
        if kind == "log":
            return math.log(step + 1) / math.log(warmup) if warmup > 1 else 1.0
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))
