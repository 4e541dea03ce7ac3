"""Shared fixtures: tiny real checkpoints built once per session (no network, ever)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest


@pytest.fixture(scope="session", autouse=True)
def _baselines_cache(tmp_path_factory):
    """Keep evaluate's baseline cache (docs/evaluation.md#baselines) in the session's temporary folder."""
    old = os.environ.get("NOTELLM2_PL_BASELINES_CACHE")
    os.environ["NOTELLM2_PL_BASELINES_CACHE"] = str(tmp_path_factory.mktemp("baselines_cache"))
    yield
    if old is None:
        os.environ.pop("NOTELLM2_PL_BASELINES_CACHE", None)
    else:
        os.environ["NOTELLM2_PL_BASELINES_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_ckpts(tmp_path_factory) -> dict[str, str]:
    """Local tiny checkpoints: qwen2, qwen3, llama LLMs and CLIP / SigLIP vision towers."""
    from notellm2_pl.plugins.testing import make_tiny_llm_checkpoint, make_tiny_vision_checkpoint

    root = tmp_path_factory.mktemp("ckpts")
    paths = {k: make_tiny_llm_checkpoint(root / k, model_type=k) for k in ("qwen2", "qwen3", "llama")}
    paths["clip"] = make_tiny_vision_checkpoint(root / "clip", "clip")
    paths["siglip"] = make_tiny_vision_checkpoint(root / "siglip", "siglip")
    return paths


@pytest.fixture()
def image_dir(tmp_path):
    """A folder with a few small RGB images."""
    from PIL import Image

    for i, colour in enumerate([(200, 10, 10), (10, 200, 10), (10, 10, 200), (120, 120, 0)]):
        Image.new("RGB", (40, 40), colour).save(tmp_path / f"img{i}.png")
    return tmp_path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny mICL model (tiny Qwen2 + CLIP + Q-Former) exported to a directory, and its dataset root."""
    from notellm2_pl.inference.export import export_model
    from notellm2_pl.inference.factory import build_from_config
    from notellm2_pl.plugins.testing import write_tiny_recipe

    root = tmp_path_factory.mktemp("tiny")
    cfg, data = write_tiny_recipe(root)
    module, model_cfg, data_cfg = build_from_config(cfg)
    return {"export": export_model(module, model_cfg, data_cfg, root / "export"), "data": data, "root": root}
