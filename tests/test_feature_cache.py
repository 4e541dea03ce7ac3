"""The frozen-vision feature cache: same features, hits, invalidation on weight change, refusals."""

from __future__ import annotations

import pytest
import torch

from notellm2_pl.model.config import EncoderConfig
from notellm2_pl.model.feature_cache import FeatureCacheError, VisionFeatureCache


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
    from notellm2_pl_backbones.hf_llm import HFCausalLM
    from notellm2_pl_backbones.hf_vision import CLIPVision

    from notellm2_pl.data.datamodule import NoteDataModule
    from notellm2_pl.training.module import NoteLLM2Module

    cached = EncoderConfig(micl=False, feature_cache=True)
    module = NoteLLM2Module(HFCausalLM(tiny_ckpts["qwen2"]), CLIPVision(tiny_ckpts["clip"]), encoder=cached)
    with pytest.raises(ValueError, match="train_flip false"):
        NoteDataModule(train_flip=True).attach(module)
    with pytest.raises(ValueError, match="freeze_vision true"):
        NoteLLM2Module(HFCausalLM(tiny_ckpts["qwen2"]), CLIPVision(tiny_ckpts["clip"]), encoder=cached,
                       freeze_vision=False)


# ------------------------------------------------------------------------------------------ on-disk level
def _disk_module(tiny_ckpts, cache_dir):
    from functools import partial

    from notellm2_pl_backbones.connectors import MLPConnector
    from notellm2_pl_backbones.hf_llm import HFCausalLM
    from notellm2_pl_backbones.hf_vision import CLIPVision

    from notellm2_pl.training.module import NoteLLM2Module

    torch.manual_seed(0)
    module = NoteLLM2Module(HFCausalLM(tiny_ckpts["qwen2"]), CLIPVision(tiny_ckpts["clip"]),
                            partial(MLPConnector, num_tokens_out=2),
                            encoder=EncoderConfig(feature_cache=True, feature_cache_dir=str(cache_dir)))
    module.encoder.vision.eval()
    return module.eval()


def _notes(image_dir):
    from notellm2_pl.data.tables import Note

    return [Note(f"n{i}", f"title {i}", ["tag"], "some content", str(image_dir / f"img{i}.png")) for i in range(3)]


def _batch(module, notes):
    from notellm2_pl.data.processing import NoteProcessor, collate

    processor = NoteProcessor(module.note_format(), max_tokens=64)  # built like a data-loader worker's copy
    return collate([processor(n) for n in notes])


def test_disk_store_skips_decoding_and_serves_identical_features(tiny_ckpts, image_dir, tmp_path):
    module = _disk_module(tiny_ckpts, tmp_path / "feat")
    notes = _notes(image_dir)
    first = _batch(module, notes)
    assert not first["pixels_skipped"].any() and all(first["image_keys"])
    with torch.no_grad():
        ref = module.encoder(first).e_m
    store = module.encoder.note_format().feature_store
    assert all(store.has(k) for k in first["image_keys"])

    again = _batch(module, notes)  # a later epoch: the images are not decoded
    assert again["pixels_skipped"].all() and not again["pixel_values"].any()
    fresh = _disk_module(tiny_ckpts, tmp_path / "feat")  # another run sharing the folder: reads the disk level
    with torch.no_grad():
        torch.testing.assert_close(module.encoder(again).e_m, ref)
        torch.testing.assert_close(fresh.encoder(again).e_m, ref)
    assert fresh.encoder.feature_cache.misses == 0 and fresh.encoder.feature_cache.hits == 3


def test_disk_keys_follow_file_transform_and_weights(tiny_ckpts, image_dir, tmp_path):
    import dataclasses
    import os

    from notellm2_pl.model.feature_cache import image_file_key

    module = _disk_module(tiny_ckpts, tmp_path / "feat")
    notes = _notes(image_dir)
    with torch.no_grad():
        module.encoder(_batch(module, notes))
    cfg = module.encoder.vision.image_config
    key = image_file_key(notes[0].image, cfg)
    assert image_file_key(notes[0].image, dataclasses.replace(cfg, size=cfg.size * 2)) != key  # other transform
    st = os.stat(notes[0].image)
    os.utime(notes[0].image, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the image file was replaced
    assert image_file_key(notes[0].image, cfg) != key
    assert _batch(module, notes)["pixels_skipped"].tolist() == [False, True, True]

    old_store = module.encoder.note_format().feature_store
    stale = _batch(module, notes[1:])  # built while the old weights were current
    with torch.no_grad():
        for p in module.encoder.vision.parameters():
            p.add_(0.1)
    assert module.encoder.note_format().feature_store.namespace != old_store.namespace
    with pytest.raises(FeatureCacheError, match="Restart the run"):
        module.encoder(stale)


def test_feature_cache_dir_needs_feature_cache(tiny_ckpts, tmp_path):
    from notellm2_pl_backbones.hf_llm import HFCausalLM
    from notellm2_pl_backbones.hf_vision import CLIPVision

    from notellm2_pl.training.module import NoteLLM2Module

    with pytest.raises(ValueError, match="model.encoder.feature_cache: true"):
        NoteLLM2Module(HFCausalLM(tiny_ckpts["qwen2"]), CLIPVision(tiny_ckpts["clip"]),
                       encoder={"feature_cache_dir": str(tmp_path)})


def test_missing_image_with_store_is_a_data_error(tiny_ckpts, image_dir, tmp_path):
    from notellm2_pl.data.problems import DataError
    from notellm2_pl.data.tables import Note

    module = _disk_module(tiny_ckpts, tmp_path / "feat")
    with pytest.raises(DataError, match="gone.png"):
        _batch(module, [Note("n9", "t", [], "c", str(image_dir / "gone.png"))])
