"""Collapse of the visual path: fit's validation logs each embedding's spread and warns on a collapsed set."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import lightning as L
import pytest
import torch
from _scale_helpers import make_ckpts, make_pairs, tiny_module
from test_method import _PairData

from notellm2_pl.data.processing import NoteProcessor, collate
from notellm2_pl.retrieval.spread import COLLAPSE_SPREAD, embedding_spread
from notellm2_pl.training.fusion_scale import fusion_scale, gate_states


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    return make_ckpts(tmp_path_factory.mktemp("ckpts"))


def _validate(module, pairs) -> dict[str, float]:
    data = _PairData(NoteProcessor(module.note_format(), max_tokens=64), pairs[:4], pairs)
    trainer = L.Trainer(accelerator="cpu", precision="32-true", logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.validate(module, datamodule=data, verbose=False)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def test_validation_logs_the_spread_of_each_embedding(ckpts, tmp_path, caplog) -> None:
    module = tiny_module(ckpts, micl=True, late_fusion=True).eval()
    with caplog.at_level(logging.WARNING, logger="notellm2_pl.training.module"):
        got = _validate(module, make_pairs(tmp_path / "images", 12))
    for key in ("e_m", "e_v"):
        assert got[f"val/spread/{key}"] > COLLAPSE_SPREAD, got
        assert got[f"val/effective_rank/{key}"] > 1.0, got
    assert "COLLAPSED" not in caplog.text


def test_a_collapsed_visual_embedding_is_warned_about_by_name(ckpts, tmp_path, caplog) -> None:
    """Every note shows the same image: ``e_v`` (which sees only the image) is one vector, ``e_m`` is not."""
    pairs = make_pairs(tmp_path / "images", 12)
    same = pairs[0][0].image
    pairs = [(dataclasses.replace(q, image=same), dataclasses.replace(t, image=same)) for q, t in pairs]
    module = tiny_module(ckpts, micl=True, late_fusion=True).eval()
    with caplog.at_level(logging.WARNING, logger="notellm2_pl.training.module"):
        got = _validate(module, pairs)
    assert got["val/spread/e_v"] < COLLAPSE_SPREAD < got["val/spread/e_m"], got
    warned = [r.getMessage() for r in caplog.records if "COLLAPSED" in r.getMessage()]
    assert len(warned) == 1 and "e_v: spread" in warned[0], warned


def _image_drowned(ckpts, tmp_path, dead_visual_tokens: bool = False):
    """A module whose gate mixes in a loud image vector, on pairs whose partners share their text but not their
    image, so validation keeps fusion scale 0; ``dead_visual_tokens``: the connector gives every image the same
    tokens (what training made of the SmolLM2 recipe's Q-Former)."""
    module = tiny_module(ckpts, micl=True, late_fusion=True, fusion_scales=(0.0, 1.0)).eval()
    with torch.no_grad():
        torch.nn.init.normal_(module.encoder.gate.proj.weight, std=3.0)
        if dead_visual_tokens:
            module.encoder.connector.projector[-1].weight.zero_()  # output = the last bias, whatever the image
    pairs = [(q, dataclasses.replace(t, title=q.title, topics=q.topics, content=q.content))
             for q, t in make_pairs(tmp_path / "images", 16)[2:]]  # partners share the text, not the image
    return module, pairs


def test_the_logged_spread_is_that_of_the_embeddings_the_model_keeps(ckpts, tmp_path) -> None:
    """The logged figures are those of ``e_m`` at the fusion scale validation keeps and of ``e_v`` as embedded."""
    module, pairs = _image_drowned(ckpts, tmp_path)
    got = _validate(module, pairs)
    assert got["val/fusion_scale"] == 0.0, got
    proc = NoteProcessor(module.note_format(), max_tokens=64)
    unique = list({n.note_id: n for p in pairs for n in p}.values())
    with torch.no_grad():
        out = module(collate([proc(n) for n in unique]))  # the gate now holds scale 0
    assert got["val/spread/e_v"] == pytest.approx(embedding_spread(out.e_v).spread, rel=1e-3)
    assert got["val/spread/e_m"] == pytest.approx(embedding_spread(out.e_m).spread, rel=1e-3)


def test_same_named_images_in_the_train_and_test_folders_never_share_features(ckpts, tmp_path) -> None:
    """The official layout keeps train and test images in ``images/`` and ``images_test/`` under the same names: the
    feature cache (memory and disk) keys them apart."""
    from notellm2_pl_backbones.hf_vision import CLIPVision
    from PIL import Image

    from notellm2_pl.data.images import build_image_transform, load_image
    from notellm2_pl.model.feature_cache import VisionFeatureCache, image_file_key

    paths = []
    for folder, colour in (("images", (250, 10, 10)), ("images_test", (10, 10, 250))):
        (tmp_path / folder).mkdir()
        paths.append(tmp_path / folder / "0.png")
        Image.new("RGB", (32, 32), colour).save(paths[-1])
        os.utime(paths[-1], ns=(10**18, 10**18))  # same name and time stamp
    tower = CLIPVision(ckpts["vision"]).eval().requires_grad_(False)
    keys = [image_file_key(p, tower.image_config) for p in paths]
    tf = build_image_transform(tower.image_config)
    px = torch.stack([tf(load_image(str(p))) for p in paths])  # (2, 3, S, S)
    with torch.no_grad():
        want = tower(px).pooled  # (2, D_v)
    for _ in range(2):  # filled from disk the second time
        cache = VisionFeatureCache(directory=tmp_path / "cache")
        got = torch.cat([cache(tower, px[i : i + 1], keys[i : i + 1]).pooled for i in range(2)])
        torch.testing.assert_close(got, want)
    assert keys[0] != keys[1] and not torch.allclose(want[0], want[1])


def _varied_images(n: int = 12) -> list:
    """Colour fields, gradients, stripes, blobs and noise: varied content, as posters are."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    images = []
    yy, xx = np.mgrid[0:150, 0:100] / 100.0
    for i in range(n):
        c1, c2 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        if i % 4 == 0:
            arr = np.where((np.sin(rng.uniform(5, 40) * (xx + rng.uniform() * yy)) > 0)[..., None], c1, c2)
        elif i % 4 == 1:
            arr = c1 * yy[..., None] / 1.5 + c2 * (1 - yy[..., None] / 1.5)
        elif i % 4 == 2:
            arr = rng.normal(128, 60, (150, 100, 3))
        else:
            img = Image.new("RGB", (100, 150), tuple(int(c) for c in c1))
            ImageDraw.Draw(img).ellipse((10, 20, 90, 120), fill=tuple(int(c) for c in c2))
            arr = np.asarray(img)
        images.append(Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)))
    return images


def test_the_frozen_efficientnet_tells_varied_images_apart_at_128_px() -> None:
    """The recipe's tower at its 128 px: pooled features and tokens of different images are far from constant."""
    pytest.importorskip("notellm2_effnet", reason="needs scripts/install_extras.sh")
    from notellm2_effnet.encoder import EfficientNetLite0

    from notellm2_pl.data.images import build_image_transform

    tower = EfficientNetLite0(image_size=128).eval()
    tf = build_image_transform(tower.image_config)
    with torch.no_grad():
        out = tower(torch.stack([tf(img) for img in _varied_images()]))
    assert out.tokens.shape[1:] == (16, 1280)
    assert embedding_spread(out.pooled).spread > 0.2
    assert embedding_spread(out.tokens.flatten(0, 1)).spread > 0.2  # (B*16, 1280) tokens


def test_a_fusion_scale_chosen_on_e_m_leaves_e_v_at_the_full_gate(ckpts, tmp_path, caplog) -> None:
    """Regression: the scale chosen on ``e_m``'s recall was applied to ``e_v`` too. At ``s = 0`` the visual embedding
    was then the LLM's read-out of the visual tokens alone; once training had made those tokens the same for every
    image (the SmolLM2 recipe; its header has the figures), every note got one ``e_v`` (per-dimension std 2.7e-5
    over real posters, R@10 read as 1.0 through ties). ``e_v`` keeps the gate's full mix of the image feature."""
    module, pairs = _image_drowned(ckpts, tmp_path, dead_visual_tokens=True)
    with caplog.at_level(logging.WARNING, logger="notellm2_pl.training.module"):
        got = _validate(module, pairs)
    assert got["val/fusion_scale"] == 0.0, got
    assert got["val/spread/e_v"] > 0.01, got
    assert "COLLAPSED" not in caplog.text
    proc = NoteProcessor(module.note_format(), max_tokens=64)
    batch = collate([proc(n) for p in pairs[:4] for n in p])
    with torch.no_grad():
        kept = module(batch)  # the gate holds s = 0
        with fusion_scale(module.encoder.gate, 1.0), gate_states(module.encoder.gate) as states:
            full = module(batch)
        h_v = module.encoder.project(states[1][0])  # e_v at s = 0: the visual read-out alone, one vector for all
    torch.testing.assert_close(kept.e_v, full.e_v)
    assert not torch.allclose(kept.e_m, full.e_m)
    assert embedding_spread(h_v).collapsed


def test_the_smollm2_recipe_gives_its_gate_a_learnable_bias_that_starts_as_the_papers_gate() -> None:
    """Regression: with the paper's bias-free gate the recipe's four trainable LLM layers became the gate's bias: a
    constant added to every LLM state, whose spread fell from 0.088 to 0.0035 in 40 steps (the recipe header)."""
    import yaml

    from notellm2_pl.model.config import EncoderConfig
    from notellm2_pl.model.late_fusion import LateFusionGate

    recipe = yaml.safe_load((Path(__file__).resolve().parents[1] / "recipes" / "smollm2_effnet.yaml").read_text())
    config = EncoderConfig.from_value(recipe["model"]["encoder"])
    gate = LateFusionGate(8, 4, config.gate_init)
    assert gate.gate.bias is not None and gate.gate.bias.requires_grad
    torch.testing.assert_close(gate.gate.bias, torch.zeros(4))  # z = sigmoid(W_g [h; v]) at the start, as the paper's
