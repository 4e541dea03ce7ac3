"""The frozen-vision feature cache: same features, hits, invalidation on weight change, refusals."""

from __future__ import annotations

import pytest
import torch

from notellm2_pl.feature_cache import FeatureCacheError, VisionFeatureCache


@pytest.fixture()
def tower(tiny_ckpts):
    from notellm2_pl_backbones.hf_vision import CLIPVision

    vision = CLIPVision(tiny_ckpts["clip"])
    vision.lock()
    return vision.eval()


def test_cached_features_equal_the_tower_and_hit(tower):
    cache = VisionFeatureCache()
    px = torch.randn(3, 3, 32, 32)
    first = cache(tower, px)
    again = cache(tower, px[[2, 0]])  # a new batch mixing cached rows
    ref = tower(px)
    torch.testing.assert_close(first.tokens, ref.tokens)
    torch.testing.assert_close(first.pooled, ref.pooled)
    torch.testing.assert_close(again.tokens, ref.tokens[[2, 0]])
    assert (cache.misses, cache.hits, len(cache)) == (3, 2, 3)


def test_other_pixels_miss(tower):
    cache = VisionFeatureCache()
    px = torch.randn(1, 3, 32, 32)
    cache(tower, px)
    cache(tower, px.flip(-1))  # e.g. a flipped image: different content, different key
    assert cache.misses == 2 and cache.hits == 0


def test_weight_change_invalidates(tower):
    cache = VisionFeatureCache()
    px = torch.randn(2, 3, 32, 32)
    old = cache(tower, px).pooled
    with torch.no_grad():
        for p in tower.parameters():  # e.g. load_state_dict of other weights
            p.add_(0.1 * torch.randn_like(p))
    new = cache(tower, px).pooled
    torch.testing.assert_close(new, tower(px).pooled)
    assert not torch.allclose(old, new) and cache.misses == 4


def test_refuses_trainable_or_training_tower(tower):
    cache = VisionFeatureCache()
    px = torch.randn(1, 3, 32, 32)
    tower.train()
    with pytest.raises(FeatureCacheError, match="eval mode"):
        cache(tower, px)
    tower.eval()
    next(tower.parameters()).requires_grad_(True)
    with pytest.raises(FeatureCacheError, match="freeze_vision"):
        cache(tower, px)


def test_lru_bound(tower):
    cache = VisionFeatureCache(max_items=2)
    cache(tower, torch.randn(3, 3, 32, 32))
    assert len(cache) == 2


def test_random_flip_with_cache_is_refused(tiny_ckpts):
    from notellm2_pl.data import NoteDataModule
    from notellm2_pl.module import NoteLLM2Module
    from notellm2_pl_backbones.hf_llm import HFCausalLM
    from notellm2_pl_backbones.hf_vision import CLIPVision

    module = NoteLLM2Module(HFCausalLM(tiny_ckpts["qwen2"]), CLIPVision(tiny_ckpts["clip"]), micl=False,
                            feature_cache=True)
    with pytest.raises(ValueError, match="train_flip false"):
        NoteDataModule(train_flip=True).attach(module)
    with pytest.raises(ValueError, match="freeze_vision true"):
        NoteLLM2Module(HFCausalLM(tiny_ckpts["qwen2"]), CLIPVision(tiny_ckpts["clip"]), micl=False,
                       feature_cache=True, freeze_vision=False)
