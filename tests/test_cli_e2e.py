"""The demo recipe end to end through the CLI (shortened schedule, tiny backbones), in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_recipe_trains_logs_and_tests(tmp_path, tiny_ckpts):
    from notellm2_pl.data.synthetic import PRESETS, generate

    data = tmp_path / "data"
    generate(data, PRESETS["tiny"])
    runs = tmp_path / "runs"
    vision = json.dumps({"class_path": "CLIPVision", "init_args": {"pretrained": tiny_ckpts["clip"]}})
    common = ["--config", "recipes/demo.yaml", "--data.root", str(data), "--data.synthetic", "null",
              "--data.batch_size", "4", "--data.val_pool_extra", "20",
              "--model.llm.init_args.pretrained", tiny_ckpts["qwen2"], "--model.vision", vision,
              "--model.connector.init_args.hidden_size", "32", "--model.connector.init_args.num_heads", "2",
              "--trainer.logger.init_args.save_dir", str(runs), "--trainer.default_root_dir", str(runs),
              "--model.encoder.feature_cache_dir", str(tmp_path / "features")]
    ckpt_dir = runs / "ckpt"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    fit = subprocess.run([sys.executable, "-m", "notellm2_pl", "fit", *common, "--trainer.max_steps", "6",
                          "--trainer.val_check_interval", "3", "--trainer.max_epochs", "1",
                          "--trainer.callbacks.dirpath", str(ckpt_dir)],
                         check=False, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert fit.returncode == 0, fit.stderr[-4000:]
    assert "val/R@10" in fit.stdout and "val/chance@10" in fit.stdout
    assert list(runs.rglob("events.out.tfevents.*")), "TensorBoard logs are written by default"
    assert len(list((tmp_path / "features").glob("*/*.pt"))) >= 20, "the frozen tower's features are stored on disk"
    best = ckpt_dir / "best.ckpt"
    assert best.exists()
    test = subprocess.run([sys.executable, "-m", "notellm2_pl", "test", *common, "--ckpt_path", str(best)],
                          check=False, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert test.returncode == 0, test.stderr[-4000:]
    for subset in ("all", "shortquery", "longquery"):
        assert subset in test.stdout
