"""Contract tests over everything the registry knows: a new plugin is tested without a test of its own."""

from __future__ import annotations

import pytest

from notellm2_pl import registry
from notellm2_pl.plugins.testing import check_connector_contract, check_llm_contract, check_vision_contract

CHECKS = {"llm": check_llm_contract, "vision": check_vision_contract, "connector": check_connector_contract}
PLUGINS = [(kind, name) for kind in CHECKS for name in registry.names(kind)]


@pytest.mark.parametrize(("kind", "name"), PLUGINS, ids=[f"{k}:{n}" for k, n in PLUGINS])
def test_plugin_honours_contract(kind, name):
    cls = registry.get(kind, name)
    assert callable(getattr(cls, "tiny", None)), f"{name} must provide a download-free tiny() constructor"
    plugin = cls.tiny()
    CHECKS[kind](plugin)
    plugin.lock()
    assert not any(p.requires_grad for p in plugin.parameters())


@pytest.mark.parametrize("model_type", ["qwen2", "qwen3", "llama"])
def test_hf_llm_loads_each_family_from_a_local_checkpoint(tiny_ckpts, model_type):
    from notellm2_pl_backbones.hf_llm import HFCausalLM

    llm = HFCausalLM(pretrained=tiny_ckpts[model_type])
    check_llm_contract(llm)
    llm.lock(unlocked_groups=1)
    trainable = {n.split(".")[1] for n, p in llm.model.named_parameters() if p.requires_grad}
    assert trainable == {"1"}  # only the top decoder layer (norms frozen)


def test_hf_vision_reads_preprocessing_from_checkpoint(tiny_ckpts):
    from notellm2_pl_backbones.hf_vision import CLIPVision, SiglipVision

    clip, siglip = CLIPVision(tiny_ckpts["clip"]), SiglipVision(tiny_ckpts["siglip"])
    assert clip.image_config.mean[0] == pytest.approx(0.48145466) and siglip.image_config.mean == (0.5, 0.5, 0.5)
    import torch

    x = torch.randn(2, 3, 32, 32)
    full, patch = clip(x), CLIPVision(tiny_ckpts["clip"], select="patch")(x)
    assert full.tokens.shape[1] == patch.tokens.shape[1] + 1
    # the CLS token comes from the full output, even when the tokens drop it
    torch.testing.assert_close(full.pooled, patch.pooled)
