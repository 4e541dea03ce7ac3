"""The plugin contract: abstract base classes for LLM backbones, vision encoders and connectors.

A plugin is one class deriving from one of these ABCs, registered under the matching entry-point group
(``notellm2_pl.llms``, ``notellm2_pl.vision_encoders``, ``notellm2_pl.connectors``). The entry name must equal
the class name: that is what a user types as ``class_path`` in a recipe. See CONTRIBUTING.md.

Every plugin also provides a download-free ``tiny()`` classmethod, used by the contract tests that run over
everything the registry knows.
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class ImageConfig:
    """Image preprocessing a vision encoder expects. The data side builds its transforms from this only.

    Attributes:
        size: Square input side in pixels (resize shorter side, then center-crop).
        mean: Per-channel normalisation mean (RGB).
        std: Per-channel normalisation std (RGB).
        interpolation: ``"bicubic"`` or ``"bilinear"``.
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"


@dataclass
class VisionOutput:
    """What a vision encoder returns.

    Attributes:
        tokens: Visual feature tokens for the connector, ``(B, N, D_v)``.
        pooled: One feature per image for late fusion, ``(B, D_v)``: the CLS token where the model has one,
            else the model's own pooled output or the token mean (each plugin documents which).
    """

    tokens: torch.Tensor
    pooled: torch.Tensor


@dataclass
class LLMOutput:
    """What an LLM backbone returns.

    Attributes:
        hidden: Final-layer hidden states after the model's final norm, ``(B, T, H)``.
        attentions: When requested, one post-softmax attention tensor per layer, ``(B, heads, T, T)``, still in
            the autograd graph (so ``A * dL/dA`` can be computed without editing model code).
    """

    hidden: torch.Tensor
    attentions: tuple[torch.Tensor, ...] | None = None


class _Lockable(nn.Module):
    """Shared freezing / checkpointing API: identical parameter names on every plugin kind."""

    def lock(self, unlocked_groups: int = 0, freeze_norm: bool = True) -> None:
        """Freeze the module's parameters.

        Args:
            unlocked_groups: Number of trailing layers/blocks to leave trainable (0 freezes everything).
                Plugins that have no notion of layers unlock nothing and say so in their docstring.
            freeze_norm: Also freeze normalisation layers inside the unlocked groups.
        """
        for p in self.parameters():
            p.requires_grad_(False)
        if unlocked_groups > 0:
            for block in self.layer_groups()[-unlocked_groups:]:
                for name, p in block.named_parameters():
                    if freeze_norm and "norm" in name.lower():
                        continue
                    p.requires_grad_(True)

    def layer_groups(self) -> list[nn.Module]:
        """Ordered list of layer blocks used by ``lock(unlocked_groups=n)``. Default: no layers."""
        return []

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Enable non-reentrant activation checkpointing where the underlying library supports it."""


def find_layer_list(module: nn.Module, num_layers: int) -> list[nn.Module]:
    """The first ``nn.ModuleList`` of length ``num_layers`` inside ``module`` (the layer stack), else ``[]``.

    Lets plugins implement ``layer_groups`` without naming library-internal attribute paths that change between
    library versions.
    """
    for child in module.modules():
        if isinstance(child, nn.ModuleList) and len(child) == num_layers:
            return list(child)
    return []


def prepends_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer's own convention prepends BOS to a text (Llama's does, Qwen's does not)."""
    if tokenizer.bos_token_id is None:
        return False
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    return len(probe) > 0 and probe[0] == tokenizer.bos_token_id


def decoder_special_ids(tokenizer: Any) -> tuple[list[int], list[int]]:
    """A decoder's framing of every sequence: its BOS where the tokenizer prepends one, and nothing at the end.

    Nothing follows the template: a decoder reads its embedding at the last token, which must be the suffix's own.
    """
    return ([int(tokenizer.bos_token_id)] if prepends_bos(tokenizer) else []), []


class LLMBackbone(_Lockable, abc.ABC):
    """A language model that maps input embeddings to final hidden states: a decoder, or a bidirectional encoder.

    The backbone owns its tokenizer (a ``transformers`` tokenizer). Special tokens the method needs are added
    through :meth:`add_tokens`, which also resizes and initialises the embedding rows. The defaults of
    :attr:`is_causal`, :meth:`special_ids` and :meth:`pool` are a decoder's (causal attention, last-token read-out);
    a bidirectional encoder overrides them (docs/method.md#text-encoders-in-the-llm-slot).
    """

    @property
    def is_causal(self) -> bool:
        """Whether each position attends only to itself and earlier ones. Default: True (a decoder).

        A causal backbone's states over a prefix do not depend on what follows it, so the mICL visual embedding is
        pooled from the same pass as the multimodal one; a bidirectional encoder gets a pass of its own over the
        image block (docs/method.md#text-encoders-in-the-llm-slot).
        """
        return True

    def special_ids(self) -> tuple[list[int], list[int]]:
        """Special token ids the backbone's convention puts before and after every sequence.

        Default: :func:`decoder_special_ids` (BOS where the tokenizer prepends one, nothing after). An encoder
        returns its own framing, e.g. ``([CLS], [SEP])`` for BERT.

        Returns:
            ``(open_ids, close_ids)``.
        """
        return decoder_special_ids(self.tokenizer)

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One state per row from hidden states ``(B, T, H)`` over the positions where ``mask (B, T)`` is 1.

        The mask is a contiguous span starting at position 0 (right padding). Default: the state at the span's last
        position (a decoder's read-out); encoders pool the way they were trained (mean, CLS).

        Returns:
            ``(B, H)``.
        """
        rows = torch.arange(hidden.shape[0], device=hidden.device)  # (B,)
        return hidden[rows, mask.sum(1) - 1]

    @property
    @abc.abstractmethod
    def hidden_size(self) -> int:
        """Width ``H`` of the hidden states."""

    @property
    @abc.abstractmethod
    def tokenizer(self) -> Any:
        """The tokenizer (``transformers.PreTrainedTokenizerBase``)."""

    @property
    @abc.abstractmethod
    def num_layers(self) -> int:
        """Number of transformer layers (one attention map each when attentions are requested)."""

    @abc.abstractmethod
    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings for token ids: ``(B, T) -> (B, T, H)``."""

    @abc.abstractmethod
    def add_tokens(self, tokens: list[str], init: str = "mean") -> list[int]:
        """Make sure ``tokens`` exist as special tokens; new rows are initialised to the mean row.

        Args:
            tokens: Token strings to ensure.
            init: ``"mean"`` (mean of existing input-embedding rows) or ``"normal"``.

        Returns:
            The token ids, in order.
        """

    @abc.abstractmethod
    def forward(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, output_attentions: bool = False
    ) -> LLMOutput:
        """Run the model on ``inputs_embeds (B, T, H)`` with a ``(B, T)`` 0/1 mask (right padding)."""

    def save_pretrained(self, out_dir: str | os.PathLike[str]) -> None:
        """Write the decoder and its tokenizer (added tokens included) as a directory this plugin loads again.

        Optional: ``export --llm_only`` calls it, e.g. to start a later training from a fine-tuned LLM. Plugins that
        cannot write themselves keep this default, which says so.

        Args:
            out_dir: Directory to write (created if missing).
        """
        raise NotImplementedError(f"{type(self).__name__} cannot write itself as a pretrained directory: implement "
                                  f"save_pretrained(out_dir) in the plugin, or export the whole model without "
                                  f"--llm_only.")


class VisionEncoder(_Lockable, abc.ABC):
    """An image tower producing feature tokens plus one pooled feature per image."""

    @property
    @abc.abstractmethod
    def hidden_size(self) -> int:
        """Width ``D_v`` of tokens and pooled feature."""

    @property
    @abc.abstractmethod
    def image_config(self) -> ImageConfig:
        """Preprocessing this encoder expects."""

    @abc.abstractmethod
    def forward(self, pixel_values: torch.Tensor) -> VisionOutput:
        """Encode ``pixel_values (B, 3, S, S)``."""

    def cache_key(self) -> str:
        """A string identifying the encoder's weights and feature settings (used by feature caches)."""
        return f"{type(self).__name__}:{sorted(self.config_summary().items())}"

    def config_summary(self) -> dict[str, Any]:
        """Feature-defining settings, for cache keys and logs."""
        return {}


class Connector(_Lockable, abc.ABC):
    """Maps vision tokens ``(B, N, D_v)`` to ``num_tokens(N)`` LLM-width tokens ``(B, Q, H)``.

    Built by the model as ``factory(in_dim=D_v, out_dim=H)``; recipes give only the remaining arguments.
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = out_dim

    @abc.abstractmethod
    def num_tokens(self, num_inputs: int) -> int:
        """Number of visual tokens produced from ``num_inputs`` vision tokens (0: no visual tokens)."""

    @abc.abstractmethod
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, N, D_v) -> (B, Q, H)``."""


@dataclass
class PluginInfo:
    """One registered plugin as the registry sees it."""

    group: str
    name: str
    value: str
    distribution: str
    extras: dict[str, Any] = field(default_factory=dict)
