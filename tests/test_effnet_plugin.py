"""The example third-party plugin (examples/efficientnet_lite_plugin) through the registry.

Skipped unless the plugin is installed: ``scripts/install_extras.sh``
(or ``pip install ./examples/efficientnet_lite_plugin``).
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

if importlib.util.find_spec("notellm2_effnet") is None:
    pytest.skip("example plugin not installed: run scripts/install_extras.sh", allow_module_level=True)

from notellm2_pl import registry
from notellm2_pl.plugins.contract import ImageConfig, VisionEncoder


@pytest.fixture(scope="module")
def cls():
    registry.refresh()
    return registry.get("vision", "EfficientNetLite0")


def test_registered_with_its_distribution(cls):
    assert issubclass(cls, VisionEncoder)
    assert "EfficientNetLite0" in registry.names("vision")
    info = next(i for i in registry.infos() if i.name == "EfficientNetLite0")
    assert info.group == "notellm2_pl.vision_encoders"
    assert info.value == "notellm2_effnet.encoder:EfficientNetLite0"
    assert info.distribution.split()[0] == "notellm2-effnet"


def test_tiny_shapes_and_lock(cls):
    enc = cls.tiny()
    cfg = enc.image_config
    assert isinstance(cfg, ImageConfig)
    out = enc(torch.randn(2, 3, cfg.size, cfg.size))
    n = (-(-cfg.size // 32)) ** 2  # ceil(S / 32) ** 2
    assert out.tokens.shape == (2, n, enc.hidden_size)
    assert out.pooled.shape == (2, enc.hidden_size)
    torch.testing.assert_close(out.pooled, out.tokens.mean(1))
    enc.lock(unlocked_groups=1)
    trainable = [n for n, p in enc.named_parameters() if p.requires_grad]
    assert trainable and all("_conv_head" in n for n in trainable)  # head conv only; its BatchNorm frozen
    enc.train()
    assert all(not m.training for m in enc.modules() if isinstance(m, torch.nn.BatchNorm2d))
    enc.lock(unlocked_groups=0)
    assert not any(p.requires_grad for p in enc.parameters())


def test_grad_checkpointing_matches(cls):
    torch.manual_seed(0)
    enc = cls.tiny().eval()
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    ref = enc(x).pooled
    enc.set_grad_checkpointing(True)
    enc.train()
    enc.lock(unlocked_groups=100, freeze_norm=True)  # BN frozen -> eval: identical numerics in train mode
    out = enc(x).pooled
    torch.testing.assert_close(out, ref)
    out.sum().backward()
    assert x.grad is not None


def test_pretrained_loads_offline(cls, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr("efficientnet_lite_pytorch.utils.model_zoo.load_url", no_network)
    enc = cls().eval()  # pretrained=True by default
    assert enc.hidden_size == 1280
    cfg = enc.image_config
    assert (cfg.size, cfg.interpolation) == (224, "bicubic")
    assert cfg.mean == pytest.approx((0.485, 0.456, 0.406))
    assert enc.config_summary()["weights"].endswith(".pth")
    assert len(enc.layer_groups()) == 18
    with torch.no_grad():
        out = enc(torch.zeros(1, 3, 224, 224))
    assert out.tokens.shape == (1, 49, 1280)
    assert out.pooled.shape == (1, 1280)
    assert torch.isfinite(out.tokens).all() and out.tokens.abs().sum() > 0
    with pytest.raises(ValueError, match="pretrained=False"):
        cls(pretrained=True, width_multiplier=0.5)
