"""Any Hugging Face decoder-only LLM (Qwen2/2.5/3, Llama 2/3, Vicuna, SmolLM2, ...) as an ``LLMBackbone``.

One adapter for every family: ``pretrained`` is a hub id or a local directory, loaded with the library's own
``AutoModel.from_pretrained`` / ``AutoTokenizer.from_pretrained`` (a GGUF file inside that directory or repo is
selected with ``gguf_file``). Only the decoder is kept (no LM head): the representation is a hidden state.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from notellm2_pl.model.lora import is_lora, merge_lora
from notellm2_pl.plugins.contract import LLMBackbone, LLMOutput, find_layer_list
from notellm2_pl.plugins.hub import ensure_available

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def add_token_rows(model: nn.Module, tokenizer: Any, tokens: list[str], init: str = "mean") -> list[int]:
    """Add the missing ``tokens`` as special tokens, resize ``model``'s embeddings and initialise the new rows.

    Args:
        model: A transformers model whose input embeddings the tokens index.
        tokenizer: Its tokenizer (changed in place).
        tokens: Token strings to ensure.
        init: ``"mean"`` (mean of the existing input-embedding rows) or ``"normal"`` (N(0, 0.02)).

    Returns:
        The token ids, in order.
    """
    missing = [t for t in tokens if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
        old = model.get_input_embeddings().weight.shape[0]
        ids = tokenizer.convert_tokens_to_ids(missing)
        if max(ids) >= old:
            model.resize_token_embeddings(max(len(tokenizer), old), mean_resizing=False)
        weight = model.get_input_embeddings().weight
        with torch.no_grad():
            mean = weight[:old].mean(0)
            for i in ids:
                if init == "mean":
                    weight[i] = mean
                else:
                    nn.init.normal_(weight[i], std=0.02)
    return [int(i) for i in tokenizer.convert_tokens_to_ids(tokens)]


@contextlib.contextmanager
def eager_attention(model: nn.Module, attn_implementation: str) -> Iterator[None]:
    """Within the block ``model`` runs eager attention, whose post-softmax probabilities stay in the autograd graph.

    Args:
        model: A transformers model.
        attn_implementation: Its configured implementation, restored after the block.
    """
    if attn_implementation == "eager":
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(attn_implementation)


def load_model_and_tokenizer(pretrained: str, tokenizer: str | None, dtype: str, attn_implementation: str,
                             revision: str | None, trust_remote_code: bool,
                             gguf_file: str | None = None) -> tuple[nn.Module, Any]:
    """``AutoModel`` and ``AutoTokenizer`` of a hub id or local folder, checked for availability first.

    Args:
        pretrained: Hub id or local directory.
        tokenizer: Tokenizer hub id or directory; None: ``pretrained``'s.
        dtype: ``float32``, ``bfloat16`` or ``float16``.
        attn_implementation: ``sdpa``, ``eager`` or ``flash_attention_2``.
        revision: Hub revision.
        trust_remote_code: Allow model code from the hub repo.
        gguf_file: A GGUF file inside ``pretrained`` to load weights and tokenizer from.

    Raises:
        ValueError: On an unsupported dtype.
    """
    from transformers import AutoModel, AutoTokenizer

    if dtype not in _DTYPES:
        raise ValueError(f"dtype={dtype!r} is not supported; use one of {sorted(_DTYPES)}.")
    common: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code}
    if gguf_file:
        common["gguf_file"] = gguf_file
    ensure_available(pretrained, "--model.llm.init_args.pretrained", revision,
                     (gguf_file,) if gguf_file else ("config.json",))
    model = AutoModel.from_pretrained(pretrained, dtype=_DTYPES[dtype], attn_implementation=attn_implementation,
                                      **common)
    tok_source = tokenizer or pretrained
    tok_kwargs = dict(common) if tok_source == pretrained else {"trust_remote_code": trust_remote_code}
    return model, AutoTokenizer.from_pretrained(tok_source, **tok_kwargs)


class HFCausalLM(LLMBackbone):
    """A transformers causal LM (decoder only) with its tokenizer.

    Args:
        pretrained: Hub id (e.g. ``Qwen/Qwen2.5-0.5B``) or local directory written by ``save_pretrained``.
        tokenizer: Tokenizer hub id or directory; defaults to ``pretrained``.
        gguf_file: Name of a GGUF file inside ``pretrained`` to load weights and tokenizer from.
        dtype: Weight dtype: ``float32`` (CPU default) or ``bfloat16`` (GPU; use with precision bf16-mixed).
        attn_implementation: ``sdpa`` (default), ``eager`` or ``flash_attention_2``. Attention maps for the
            saliency analysis switch to eager temporarily, whatever is set here.
        revision: Hub revision (branch, tag or commit) for reproducible loads.
        trust_remote_code: Allow model code from the hub repo. Off unless you set it.
        gradient_checkpointing: Non-reentrant activation checkpointing in the decoder layers.
        lora: LoRA adapters on the decoder via peft (``notellm2_pl.model.lora.apply_lora`` arguments, e.g.
            ``{r: 16, alpha: 32, dropout: 0.05, target_modules: [q_proj, v_proj]}``); None: full fine-tuning.
    """

    def __init__(
        self,
        pretrained: str,
        tokenizer: str | None = None,
        gguf_file: str | None = None,
        dtype: str = "float32",
        attn_implementation: str = "sdpa",
        revision: str | None = None,
        trust_remote_code: bool = False,
        gradient_checkpointing: bool = False,
        lora: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.pretrained = pretrained
        self.model, self._tokenizer = load_model_and_tokenizer(
            pretrained, tokenizer, dtype, attn_implementation, revision, trust_remote_code, gguf_file)
        self._attn_impl = attn_implementation
        if gradient_checkpointing:
            self.set_grad_checkpointing(True)
        if lora is not None:
            from notellm2_pl.model.lora import apply_lora

            self.model = apply_lora(self.model, **lora)

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

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(input_ids)

    def add_tokens(self, tokens: list[str], init: str = "mean") -> list[int]:
        return add_token_rows(self.model, self._tokenizer, tokens, init)

    def forward(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, output_attentions: bool = False
    ) -> LLMOutput:
        ctx = eager_attention(self.model, self._attn_impl) if output_attentions else contextlib.nullcontext()
        with ctx:
            out = self.model(
                inputs_embeds=inputs_embeds,
                attention_mask=attention_mask,
                output_attentions=output_attentions,
                use_cache=False,
                return_dict=True,
            )
        return LLMOutput(hidden=out.last_hidden_state, attentions=out.attentions if output_attentions else None)

    def save_pretrained(self, out_dir: str | os.PathLike[str]) -> None:
        """``save_pretrained`` of the decoder and tokenizer; LoRA adapters are folded into a copy of the weights.

        The directory loads back as ``HFCausalLM(pretrained=out_dir)`` (no LM head: the decoder is what is trained).

        Args:
            out_dir: Directory to write (created if missing).
        """
        model = self.model
        if is_lora(model):  # a merged copy: this backbone keeps its adapters and stays trainable
            model = merge_lora(copy.deepcopy(model))
        model.save_pretrained(os.fspath(out_dir))
        self._tokenizer.save_pretrained(os.fspath(out_dir))

    def layer_groups(self) -> list[nn.Module]:
        return find_layer_list(self.model, self.num_layers)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if enable:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            self.model.gradient_checkpointing_disable()

    # ---------------------------------------------------------------------------------------------- tiny
    @classmethod
    def tiny(cls, model_type: str = "qwen2", **kwargs: Any) -> HFCausalLM:
        """A randomly initialised tiny model of ``model_type`` saved to a temp dir and loaded back (no download)."""
        from notellm2_pl.plugins.testing import make_tiny_llm_checkpoint

        path = make_tiny_llm_checkpoint(tempfile.mkdtemp(prefix="tiny-llm-"), model_type=model_type)
        return cls(pretrained=path, **kwargs)
