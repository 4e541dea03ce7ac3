"""Shared fixtures: tiny real checkpoints built once per session (no network, ever)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_ckpts(tmp_path_factory) -> dict[str, str]:
    """Local tiny checkpoints: qwen2, qwen3, llama LLMs and CLIP / SigLIP vision towers."""
    from notellm2_pl.testing import make_tiny_llm_checkpoint, make_tiny_vision_checkpoint

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
