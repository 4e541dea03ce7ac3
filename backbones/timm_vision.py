"""Any timm image model (EVA02, ViT, ConvNeXt, EfficientNet, ...) as a ``VisionEncoder`` plugin.

Weights load through timm's own ``create_model(..., pretrained=True)`` (hub) or from a local file
(``checkpoint_path``). Preprocessing comes from timm's ``resolve_data_config`` for the model.

Features: ``forward_features`` (timm applies the model's final norm there). Transformer models give
``(B, N, D)`` tokens; CNN feature maps ``(B, C, h, w)`` are flattened to ``(B, h*w, C)``. ``select="patch"`` drops
the model's prefix (CLS/register) tokens. Pooled feature for late fusion: the CLS token where the model has one,
else timm's own pooled pre-logits (``forward_head(pre_logits=True)``, e.g. global average pooling).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from notellm2_pl.plugins.contract import ImageConfig, VisionEncoder, VisionOutput
from notellm2_pl.plugins.hub import ensure_available


class TimmVision(VisionEncoder):
    """A timm model used as a vision tower.

    Args:
        model_name: timm model name, e.g. ``eva02_base_patch14_224.mim_in22k`` or ``vit_base_patch16_clip_224``.
        pretrained: Load pretrained weights (from the hub, or from ``checkpoint_path`` when given).
        checkpoint_path: Local weights file (safetensors or .pth) to load instead of downloading.
        select: ``cls_patch`` (all tokens) or ``patch`` (drop prefix tokens).
        model_kwargs: Extra ``timm.create_model`` arguments (e.g. ``img_size``, ``depth`` for small variants).
    """

    def __init__(
        self,
        model_name: str,
        pretrained: bool = True,
        checkpoint_path: str | None = None,
        select: Literal["cls_patch", "patch"] = "cls_patch",
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        import timm

        kwargs = dict(model_kwargs or {})
        if checkpoint_path:
            kwargs["pretrained_cfg_overlay"] = {"file": checkpoint_path}
        self.model_name = model_name
        self.select = select
        if pretrained and not checkpoint_path:
            _ensure_hub_weights(model_name)
        self.model = timm.create_model(model_name, pretrained=pretrained, num_classes=0, **kwargs)
        cfg = timm.data.resolve_data_config({}, model=self.model)
        fixed = getattr(getattr(self.model, "patch_embed", None), "img_size", None)  # ViTs built at another size
        self._image_config = ImageConfig(
            size=int(fixed[-1]) if fixed else int(cfg["input_size"][-1]),
            mean=tuple(float(x) for x in cfg["mean"]),
            std=tuple(float(x) for x in cfg["std"]),
            interpolation=str(cfg.get("interpolation", "bicubic")),
        )
        self._prefix = int(getattr(self.model, "num_prefix_tokens", 0))
        self._has_cls = getattr(self.model, "cls_token", None) is not None
        self._summary = {"model_name": model_name, "pretrained": pretrained, "checkpoint_path": checkpoint_path,
                         "select": select, "model_kwargs": kwargs}

    @property
    def hidden_size(self) -> int:
        return int(self.model.num_features)

    @property
    def image_config(self) -> ImageConfig:
        return self._image_config

    def forward(self, pixel_values: torch.Tensor) -> VisionOutput:
        feats = self.model.forward_features(pixel_values)
        if feats.dim() == 4:  # CNN map
            pooled = self.model.forward_head(feats, pre_logits=True)
            tokens = feats.flatten(2).transpose(1, 2)  # (B, C, h, w) -> (B, h*w, C)
            return VisionOutput(tokens=tokens, pooled=pooled)
        pooled = feats[:, 0] if self._has_cls else self.model.forward_head(feats, pre_logits=True)
        tokens = feats[:, self._prefix:] if self.select == "patch" else feats  # (B, N, D)
        return VisionOutput(tokens=tokens, pooled=pooled)

    def layer_groups(self) -> list[nn.Module]:
        blocks = getattr(self.model, "blocks", None) or getattr(self.model, "stages", None)
        return list(blocks) if blocks is not None else []

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.model.set_grad_checkpointing(enable)

    def config_summary(self) -> dict[str, Any]:
        return dict(self._summary)

    @classmethod
    def tiny(cls, **kwargs: Any) -> TimmVision:
        """A random 2-block EVA02 at 56 px (no download)."""
        model_kwargs = {"img_size": 56, "depth": 2, "embed_dim": 64, "num_heads": 2}
        return cls("eva02_tiny_patch14_224", pretrained=False, model_kwargs=model_kwargs, **kwargs)


def _ensure_hub_weights(model_name: str) -> None:
    """Fail fast when timm would download ``model_name``'s weights from the hub and cannot."""
    import timm

    cfg = timm.models.get_pretrained_cfg(model_name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if hub_id:
        files = tuple(f for f in (cfg.hf_hub_filename, "model.safetensors", "pytorch_model.bin") if f)
        ensure_available(hub_id.split("@")[0], "--model.vision.init_args.checkpoint_path", filenames=files)
