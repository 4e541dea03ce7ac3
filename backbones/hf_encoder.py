"""Any Hugging Face bidirectional text encoder (BERT, RoBERTa, MiniLM, MPNet, ...) in the LLM slot.

``pretrained`` is a hub id or a local directory (a sentence-transformers folder included), loaded with the library's
own ``AutoModel.from_pretrained`` / ``AutoTokenizer.from_pretrained``. The encoder pools its states the way it was
trained: mean over the tokens or the CLS state, read from a sentence-transformers folder's pooling config when
there is one. How mICL and late fusion apply to an encoder: docs/method.md#text-encoders-in-the-llm-slot.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import tempfile
from typing import Any

import torch
from torch import nn

from notellm2_pl.model.lora import is_lora, merge_lora
from notellm2_pl.plugins.contract import LLMBackbone, LLMOutput, find_layer_list

from .hf_llm import add_token_rows, eager_attention, load_model_and_tokenizer

log = logging.getLogger(__name__)

POOLINGS = ("mean", "cls")
ENCODER_LORA_TARGETS = ("query", "key", "value", "dense")
"""Default LoRA targets: the attention and feed-forward linears of BERT-style layers."""


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the states ``(B, T, H)`` over the positions where ``mask (B, T)`` is 1 (sentence-transformers' mean).

    Returns:
        ``(B, H)``.
    """
    m = mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


def cls_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The state at position 0 (the ``[CLS]`` token) ``(B, H)``; ``mask`` is unused (the span starts at 0)."""
    return hidden[:, 0]


_POOL_FNS = {"mean": mean_pool, "cls": cls_pool}


def sentence_transformers_pooling(source: str, revision: str | None = None) -> str | None:
    """The pooling a sentence-transformers model was trained with, read from its folder (or hub repo / cache).

    Reads ``modules.json`` for the Pooling module's folder (``1_Pooling`` when there is no ``modules.json``) and
    its ``config.json``. Never downloads when offline: a file that cannot be had counts as absent.

    Args:
        source: Local directory or hub id.
        revision: Hub revision.

    Returns:
        ``"mean"`` or ``"cls"``, or None when ``source`` is not a sentence-transformers model.

    Raises:
        ValueError: The model pools another way (max, mean-sqrt-len, several at once): name a pooling explicitly.
    """
    modules = _read_json(source, "modules.json", revision)
    folder = next((m.get("path") for m in modules or [] if str(m.get("type", "")).endswith(".Pooling")), "1_Pooling")
    config = _read_json(source, f"{folder}/config.json", revision)
    if config is None:
        return None
    modes = sorted(k[len("pooling_mode_"):] for k, on in config.items() if k.startswith("pooling_mode_") and on)
    found = {"mean_tokens": "mean", "cls_token": "cls"}
    if len(modes) != 1 or modes[0] not in found:
        raise ValueError(f"{source!r} pools with {modes or 'nothing'} ({folder}/config.json); HFTextEncoder pools "
                         f"mean or cls. Set --model.llm.init_args.pooling mean (or cls) to choose one.")
    return found[modes[0]]


def _read_json(source: str, filename: str, revision: str | None) -> Any:
    """A JSON file of a model folder or hub repo (cache first), or None when it cannot be had."""
    from transformers.utils import cached_file

    try:
        path = cached_file(source, filename, revision=revision, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)
    except OSError:  # not a folder and not a reachable repo: the model load reports that itself
        return None
    if path is None:
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class HFTextEncoder(LLMBackbone):
    """A transformers bidirectional encoder (``AutoModel``) with its tokenizer, pooled mean or CLS.

    ``is_causal`` is False: under mICL the image block runs through a pass of its own, so ``e_v`` never sees the
    note's text (docs/method.md#text-encoders-in-the-llm-slot). Every sequence is framed the tokenizer's way
    (``[CLS]`` ... ``[SEP]`` for BERT). The embedding is pooled from the final hidden states, as sentence-transformers
    does; the model's own task pooler (BERT's dense + tanh over CLS) is kept, so saved folders stay complete, but
    frozen and never read.

    Args:
        pretrained: Hub id (e.g. ``sentence-transformers/all-MiniLM-L6-v2``) or local directory (a
            sentence-transformers folder, or one written by ``save_pretrained``). Offline assets by name:
            ``${asset:minilm-l6}`` in a recipe.
        tokenizer: Tokenizer hub id or directory; defaults to ``pretrained``.
        pooling: ``mean`` or ``cls``. None (default): the pooling of a sentence-transformers folder
            (``modules.json`` / ``1_Pooling/config.json``), else ``mean``.
        dtype: Weight dtype: ``float32`` (CPU default) or ``bfloat16`` (GPU; use with precision bf16-mixed).
        attn_implementation: ``sdpa`` (default) or ``eager``. Attention maps switch to eager temporarily.
        revision: Hub revision (branch, tag or commit) for reproducible loads.
        trust_remote_code: Allow model code from the hub repo. Off unless you set it.
        gradient_checkpointing: Non-reentrant activation checkpointing in the encoder layers.
        lora: LoRA adapters via peft (``notellm2_pl.model.lora.apply_lora`` arguments); ``target_modules`` defaults
            to :data:`ENCODER_LORA_TARGETS`. None: full fine-tuning.
    """

    def __init__(
        self,
        pretrained: str,
        tokenizer: str | None = None,
        pooling: str | None = None,
        dtype: str = "float32",
        attn_implementation: str = "sdpa",
        revision: str | None = None,
        trust_remote_code: bool = False,
        gradient_checkpointing: bool = False,
        lora: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if pooling is not None and pooling not in POOLINGS:
            raise ValueError(f"pooling={pooling!r} is not supported; use one of {', '.join(POOLINGS)} (or leave it "
                             f"unset to read a sentence-transformers folder's pooling).")
        self.pretrained = pretrained
        self.model, self._tokenizer = load_model_and_tokenizer(
            pretrained, tokenizer, dtype, attn_implementation, revision, trust_remote_code)
        pooler = getattr(self.model, "pooler", None)
        if isinstance(pooler, nn.Module):  # the task head over CLS: never read, so frozen (no gradient, even under DDP)
            pooler.requires_grad_(False)
        self.pooling = pooling or sentence_transformers_pooling(pretrained, revision) or "mean"
        self._attn_impl = attn_implementation
        if gradient_checkpointing:
            self.set_grad_checkpointing(True)
        if lora is not None:
            from notellm2_pl.model.lora import apply_lora

            self.model = apply_lora(self.model, **{"target_modules": list(ENCODER_LORA_TARGETS), **lora})

    # ---------------------------------------------------------------------------------------------- contract
    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def is_causal(self) -> bool:
        """False: every token attends to every other one."""
        return False

    def special_ids(self) -> tuple[list[int], list[int]]:
        """The tokenizer's own framing of one text, e.g. ``([CLS], [SEP])`` for BERT, ``(<s>, </s>)`` for RoBERTa."""
        plain = self._tokenizer("a", add_special_tokens=False)["input_ids"]
        framed = self._tokenizer("a", add_special_tokens=True)["input_ids"]
        start = next((i for i in range(len(framed) - len(plain) + 1) if framed[i:i + len(plain)] == plain), None)
        if start is None:
            raise ValueError(f"Cannot tell the special tokens of {type(self._tokenizer).__name__}: a framed text "
                             f"{framed} does not contain the plain one {plain}.")
        return [int(i) for i in framed[:start]], [int(i) for i in framed[start + len(plain):]]

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean of the states over ``mask``, or the CLS state at position 0 (:attr:`pooling`): ``(B, H)``."""
        return _POOL_FNS[self.pooling](hidden, mask)

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(input_ids)

    def add_tokens(self, tokens: list[str], init: str = "mean") -> list[int]:
        return add_token_rows(self.model, self._tokenizer, tokens, init)

    def forward(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, output_attentions: bool = False
    ) -> LLMOutput:
        ctx = eager_attention(self.model, self._attn_impl) if output_attentions else contextlib.nullcontext()
        with ctx:
            out = self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                             output_attentions=output_attentions, return_dict=True)
        return LLMOutput(hidden=out.last_hidden_state, attentions=out.attentions if output_attentions else None)

    def save_pretrained(self, out_dir: str | os.PathLike[str]) -> None:
        """``save_pretrained`` of the encoder and tokenizer (LoRA folded into a copy) plus a pooling config.

        The directory loads back as ``HFTextEncoder(pretrained=out_dir)`` with the same pooling (written as a
        sentence-transformers ``1_Pooling/config.json``).

        Args:
            out_dir: Directory to write (created if missing).
        """
        model = self.model
        if is_lora(model):  # a merged copy: this backbone keeps its adapters and stays trainable
            model = merge_lora(copy.deepcopy(model))
        model.save_pretrained(os.fspath(out_dir))
        self._tokenizer.save_pretrained(os.fspath(out_dir))
        write_pooling_config(out_dir, self.pooling, self.hidden_size)

    def layer_groups(self) -> list[nn.Module]:
        return find_layer_list(self.model, self.num_layers)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if enable:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            self.model.gradient_checkpointing_disable()

    # ---------------------------------------------------------------------------------------------- tiny
    @classmethod
    def tiny(cls, **kwargs: Any) -> HFTextEncoder:
        """A randomly initialised tiny BERT saved to a temp dir and loaded back (no download)."""
        from notellm2_pl.plugins.testing import make_tiny_encoder_checkpoint

        return cls(pretrained=make_tiny_encoder_checkpoint(tempfile.mkdtemp(prefix="tiny-encoder-")), **kwargs)


def write_pooling_config(out_dir: str | os.PathLike[str], pooling: str, hidden_size: int) -> None:
    """Write a sentence-transformers pooling config (``modules.json`` + ``1_Pooling/config.json``) into ``out_dir``.

    Args:
        out_dir: The model folder.
        pooling: ``mean`` or ``cls``.
        hidden_size: The encoder's width (``word_embedding_dimension``).
    """
    folder = os.path.join(os.fspath(out_dir), "1_Pooling")
    os.makedirs(folder, exist_ok=True)
    config = {"word_embedding_dimension": hidden_size, "pooling_mode_cls_token": pooling == "cls",
              "pooling_mode_mean_tokens": pooling == "mean", "pooling_mode_max_tokens": False,
              "pooling_mode_mean_sqrt_len_tokens": False}
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(os.fspath(out_dir), "modules.json"), "w", encoding="utf-8") as f:
        json.dump(modules, f, indent=2)
