"""CLIP and SigLIP vision towers from transformers as ``VisionEncoder`` plugins.

Both load the vision tower alone from a full checkpoint or a vision-only one (``openai/clip-vit-base-patch16``,
``google/siglip-base-patch16-224``, or a local directory) and read their preprocessing from the checkpoint's image
processor, so the data side never hard-codes CLIP constants.

Features: the hidden states of encoder layer ``feature_layer`` (default -1: the last layer, before the
post-LayerNorm, without the visual projection: docs/method.md#vision-features), all tokens (``cls_patch``) or
patches only.
Pooled feature for late fusion: CLIP uses its CLS token from the same layer (taken from the full output, so
dropping CLS from the tokens never changes it); SigLIP has no CLS token and uses its own attention-pooling head
output (``pooler_output``), or the token mean when the checkpoint has no head.
"""

from __future__ import annotations

import logging
import tempfile
from typing import Any, Literal

import torch
from torch import nn

from notellm2_pl.plugins.contract import ImageConfig, VisionEncoder, VisionOutput, find_layer_list
from notellm2_pl.plugins.hub import ensure_available

log = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_RESAMPLE = {2: "bilinear", 3: "bicubic"}


class _HFVisionTower(VisionEncoder):
    """Shared code of the transformers vision towers; subclasses set the model class and pooling."""

    _model_cls_name: str = ""
    _has_cls: bool = True
    _default_mean: tuple[float, float, float] = CLIP_MEAN
    _default_std: tuple[float, float, float] = CLIP_STD

    def __init__(
        self,
        pretrained: str,
        feature_layer: int = -1,
        select: Literal["cls_patch", "patch"] = "cls_patch",
        dtype: str = "float32",
        revision: str | None = None,
    ) -> None:
        super().__init__()
        import transformers

        model_cls = getattr(transformers, self._model_cls_name)
        self.pretrained = pretrained
        self.feature_layer = feature_layer
        self.select = select
        ensure_available(pretrained, "--model.vision.init_args.pretrained", revision)
        self.model = model_cls.from_pretrained(pretrained, dtype=getattr(torch, dtype), revision=revision)
        self._image_config = self._read_image_config(pretrained, revision)

    def _read_image_config(self, pretrained: str, revision: str | None) -> ImageConfig:
        from transformers import AutoImageProcessor

        size = int(self.model.config.image_size)
        try:
            proc = AutoImageProcessor.from_pretrained(pretrained, revision=revision)
        except (OSError, ValueError) as err:
            log.warning("No image processor in %s (%s); using %s defaults at %d px.", pretrained, err,
                        type(self).__name__, size)
            return ImageConfig(size, self._default_mean, self._default_std, "bicubic")
        resample = getattr(proc, "resample", 3)
        return ImageConfig(
            size=size,
            mean=tuple(float(x) for x in proc.image_mean),
            std=tuple(float(x) for x in proc.image_std),
            interpolation=_RESAMPLE.get(int(resample) if resample is not None else 3, "bicubic"),
        )

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def image_config(self) -> ImageConfig:
        return self._image_config

    def forward(self, pixel_values: torch.Tensor) -> VisionOutput:
        dtype = next(self.model.parameters()).dtype
        out = self.model(pixel_values=pixel_values.to(dtype), output_hidden_states=True, return_dict=True)
        feats = out.hidden_states[self.feature_layer]  # (B, N, D_v)
        tokens = feats[:, 1:] if (self.select == "patch" and self._has_cls) else feats
        return VisionOutput(tokens=tokens, pooled=self._pool(out, feats))

    def _pool(self, out: Any, feats: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def layer_groups(self) -> list[nn.Module]:
        return find_layer_list(self.model, int(self.model.config.num_hidden_layers))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if enable:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            self.model.gradient_checkpointing_disable()

    def config_summary(self) -> dict[str, Any]:
        return {"pretrained": self.pretrained, "feature_layer": self.feature_layer, "select": self.select}


class CLIPVision(_HFVisionTower):
    """CLIP vision tower (``CLIPVisionModel``). Pooled feature: the CLS token of ``feature_layer`` (pre post-LN).

    Args:
        pretrained: Hub id or local directory of a CLIP (or CLIP vision) checkpoint.
        feature_layer: Encoder hidden-state index for the features (-1: last layer, before post-LayerNorm).
        select: ``cls_patch`` (all tokens) or ``patch`` (drop CLS from the tokens; the pooled CLS is unaffected).
        dtype: Weight dtype (``float32`` or ``bfloat16``).
        revision: Hub revision.
    """

    _model_cls_name = "CLIPVisionModel"

    def _pool(self, out: Any, feats: torch.Tensor) -> torch.Tensor:
        return feats[:, 0]

    @classmethod
    def tiny(cls, **kwargs: Any) -> CLIPVision:
        """A random tiny CLIP vision tower saved to a temp dir and loaded back (no download)."""
        from notellm2_pl.plugins.testing import make_tiny_vision_checkpoint

        return cls(pretrained=make_tiny_vision_checkpoint(tempfile.mkdtemp(prefix="tiny-clip-"), "clip"), **kwargs)


class SiglipVision(_HFVisionTower):
    """SigLIP vision tower (``SiglipVisionModel``). No CLS token: pooled = its attention-pooling head output.

    Args:
        pretrained: Hub id or local directory of a SigLIP (or SigLIP vision) checkpoint.
        feature_layer: Encoder hidden-state index for the features (-1: last layer, before post-LayerNorm).
        select: Accepted for symmetry with CLIP; SigLIP has no CLS token, so both values keep all tokens.
        dtype: Weight dtype (``float32`` or ``bfloat16``).
        revision: Hub revision.
    """

    _model_cls_name = "SiglipVisionModel"
    _has_cls = False
    _default_mean = (0.5, 0.5, 0.5)
    _default_std = (0.5, 0.5, 0.5)

    def _pool(self, out: Any, feats: torch.Tensor) -> torch.Tensor:
        pooled = getattr(out, "pooler_output", None)
        return pooled if pooled is not None else feats.mean(1)

    @classmethod
    def tiny(cls, **kwargs: Any) -> SiglipVision:
        """A random tiny SigLIP vision tower saved to a temp dir and loaded back (no download)."""
        from notellm2_pl.plugins.testing import make_tiny_vision_checkpoint

        return cls(pretrained=make_tiny_vision_checkpoint(tempfile.mkdtemp(prefix="tiny-siglip-"), "siglip"), **kwargs)
