"""Run a one-run ablation grid (basic, 2 training steps) on tiny backbones through the real CLI, in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def run_tiny_grid(tmp_path: Path, data_root: Path, tiny_ckpts: dict[str, str], name: str = "tiny") -> Path:
    """``ablate --grid`` over one basic run on ``data_root``; asserts success and returns the grid's output folder."""
    grid = tmp_path / f"{name}.yaml"
    grid.write_text(yaml.safe_dump({"name": name, "seeds": [0], "saliency_batches": 1,
                                    "evaluate_args": ["--ks", "10,100", "--batch_size", "32"],
                                    "saliency_args": ["--batch_size", "2"],
                                    "runs": [{"name": "basic", "recipe": "recipes/ablations/demo/basic.yaml"}]}))
    vision = json.dumps({"class_path": "CLIPVision", "init_args": {"pretrained": tiny_ckpts["clip"]}})
    overrides = ["--data.root", str(data_root), "--data.synthetic", "null", "--data.batch_size", "4",
                 "--data.val_pool_extra", "20", "--model.llm.init_args.pretrained", tiny_ckpts["qwen2"],
                 "--model.vision", vision, "--model.connector.init_args.hidden_size", "32",
                 "--model.connector.init_args.num_heads", "2", "--trainer.max_steps", "2",
                 "--trainer.val_check_interval", "2"]
    out = tmp_path / f"{name}-out"
    cmd = [sys.executable, "-m", "notellm2_pl", "ablate", "--grid", str(grid), "--out", str(out), "--", *overrides]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "| basic | full |" in (out / "summary.md").read_text()
    return out
