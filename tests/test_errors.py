"""Failures a user meets first end in seconds with what to do, exit code 2 and no stack trace: hub weights that are
neither cached nor downloadable, and a GPU recipe on a machine without a GPU."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
RECIPE = "recipes/siglip_qwen.yaml"
HUB_IDS = ("google/siglip-base-patch16-224", "Qwen/Qwen2.5-1.5B-Instruct")
CPU = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.strategy", "auto",
       "--trainer.precision", "32-true"]


def _fit(args: list[str], hub_cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub_cache)}
    return subprocess.run([sys.executable, "-m", "notellm2_pl", "fit", "--config", RECIPE,
                           "--trainer.fast_dev_run", "true", *args],
                          check=False, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow
def test_uncached_hub_weights_offline_exit_2_with_the_ways_out(tmp_path):
    # the CPU overrides get past the GPU check on machines without one (test_gpu_recipe_without_gpu_...)
    run = _fit(CPU, tmp_path / "empty_hub_cache")
    assert run.returncode == 2, run.stderr[-3000:]
    assert any(hub_id in run.stderr for hub_id in HUB_IDS), run.stderr
    assert "huggingface-cli download" in run.stderr and "init_args.pretrained" in run.stderr
    assert "offline mode is on" in run.stderr
    assert "Traceback" not in run.stderr


def test_uncached_hub_weights_fail_within_seconds(tmp_path, monkeypatch, capsys):
    """In process (imports already paid): the command returns long before transformers' minute of retries."""
    import huggingface_hub.constants

    from notellm2_pl.commands.main import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty_hub_cache"))
    monkeypatch.chdir(ROOT)
    start = time.monotonic()
    assert main(["fit", "--config", RECIPE, "--trainer.fast_dev_run", "true", *CPU]) == 2
    assert time.monotonic() - start < 30
    err = capsys.readouterr().err
    assert err.startswith("error: Cannot load ") and "huggingface-cli download" in err


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_recipe_without_gpu_says_how_to_run_on_cpu(tmp_path):
    run = _fit([], tmp_path / "empty_hub_cache")
    assert run.returncode == 2, run.stderr[-3000:]
    assert f"{RECIPE}: trainer.accelerator is 'gpu', but this machine has no CUDA GPU" in run.stderr
    assert "--trainer.accelerator cpu --trainer.devices 1 --trainer.strategy auto --trainer.precision 32-true" \
        in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("command", ["evaluate", "export"])
def test_checkpoint_commands_with_uncached_hub_weights_exit_2(command, tmp_path, monkeypatch, capsys):
    """A checkpoint that records a hub id, evaluated or exported offline without it cached."""
    import huggingface_hub.constants

    from notellm2_pl.commands.main import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty_hub_cache"))
    ckpt = tmp_path / "hub.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {
        "llm": {"class_path": "HFCausalLM", "init_args": {"pretrained": "Qwen/Qwen2.5-0.5B"}},
        "vision": None, "connector": None}}, ckpt)
    argv = {"evaluate": ["--ckpt_path", str(ckpt), "--data", str(tmp_path)],
            "export": ["--ckpt_path", str(ckpt), "--out", str(tmp_path / "x")]}[command]
    assert main([command, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Cannot load 'Qwen/Qwen2.5-0.5B'") and "--model.llm.init_args.pretrained" in err
