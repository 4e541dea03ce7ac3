"""LoRA adapters on the LLM through ``peft`` (wrapped, never vendored): apply, save, load, merge.

A recipe turns LoRA on with ``model.llm.init_args.lora: {r: 16, alpha: 32, dropout: 0.05, target_modules: [...]}``
(see ``HFCausalLM``). Only the adapters (and the rest of NoteLLM-2's new parts: connector, gate, head, tau) train.

Caveat: the tokens NoteLLM-2 adds (``<IMG_EMB>``, image tags) get mean-initialised embedding rows that stay frozen
under LoRA unless ``modules_to_save: [embed_tokens]`` is given (which trains, and saves, the whole embedding matrix).
The mean row works as a marker, because the model attends to its position, not to its content.

Typical life cycle::

    llm = HFCausalLM("Qwen/Qwen2.5-7B", lora={"r": 16, "alpha": 32})
    ... train ...
    save_lora(llm.model, "runs/x/adapter")        # a few MB: adapter_config.json + adapter_model.safetensors
    merged = merge_lora(llm.model)                # plain transformers model, LoRA folded into the weights
    again = load_lora(base_model, "runs/x/adapter")
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import nn

log = logging.getLogger(__name__)

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _peft() -> Any:
    try:
        import peft
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("LoRA needs peft: pip install 'notellm2-pl[peft]' (or pip install peft).") from err
    return peft


def apply_lora(
    model: nn.Module,
    r: int = 16,
    alpha: float = 32.0,
    dropout: float = 0.05,
    target_modules: list[str] | tuple[str, ...] | str = DEFAULT_TARGETS,
    modules_to_save: list[str] | None = None,
    bias: str = "none",
) -> nn.Module:
    """Wrap a transformers model with LoRA adapters; only the adapters (and ``modules_to_save``) stay trainable.

    Args:
        model: A transformers ``PreTrainedModel`` (e.g. the decoder ``AutoModel`` inside ``HFCausalLM``).
        r: LoRA rank.
        alpha: LoRA scaling numerator (the update is scaled by ``alpha / r``).
        dropout: Dropout on the LoRA input (makes training non-deterministic; 0 for exact replays).
        target_modules: Names of the linear layers to adapt (default: attention and MLP projections of
            Llama/Qwen-style blocks), or ``"all-linear"``.
        modules_to_save: Extra modules trained and saved in full (e.g. ``["embed_tokens"]``).
        bias: ``none``, ``all`` or ``lora_only``.

    Returns:
        The ``peft.PeftModel`` wrapping ``model``.
    """
    peft = _peft()
    targets = target_modules if isinstance(target_modules, str) else list(target_modules)
    cfg = peft.LoraConfig(r=int(r), lora_alpha=float(alpha), lora_dropout=float(dropout), target_modules=targets,
                          modules_to_save=modules_to_save, bias=bias)
    wrapped = peft.get_peft_model(model, cfg)
    n_train = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in wrapped.parameters())
    log.info("LoRA r=%d alpha=%g on %s: %d trainable of %d LLM parameters (%.2f%%).", r, alpha, targets, n_train,
             n_all, 100.0 * n_train / max(1, n_all))
    return wrapped


def is_lora(model: nn.Module) -> bool:
    """Whether ``model`` is a peft model carrying adapters."""
    try:
        import peft
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, peft.PeftModel)


def save_lora(model: nn.Module, path: str | Path) -> str:
    """Save only the adapters (``adapter_config.json`` + ``adapter_model.safetensors``) to ``path``."""
    if not is_lora(model):
        raise ValueError("This model has no LoRA adapters: build the LLM with lora={...} (model.llm.init_args.lora).")
    model.save_pretrained(str(path))
    return str(path)


def load_lora(base_model: nn.Module, path: str | Path, trainable: bool = False) -> nn.Module:
    """Attach adapters saved by :func:`save_lora` to a freshly loaded base model.

    Args:
        base_model: The same transformers model the adapters were trained on (same token count: resize first
            if tokens were added).
        path: Directory written by :func:`save_lora`.
        trainable: Keep the adapters trainable (resume training) instead of inference mode.
    """
    return _peft().PeftModel.from_pretrained(base_model, str(path), is_trainable=trainable)


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold the adapters into the base weights and return the plain transformers model (no peft at inference)."""
    if not is_lora(model):
        raise ValueError("This model has no LoRA adapters to merge.")
    return model.merge_and_unload()
