"""A checkpoint written by ``fit`` records its backbones and data settings: evaluate and export need no recipe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from notellm2_pl.plugins.testing import write_tiny_recipe


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> dict[str, Path]:
    """One training step of the tiny recipe through the ``fit`` command; its checkpoint and recipe."""
    from notellm2_pl.commands.main import main

    root = tmp_path_factory.mktemp("fit")
    cfg, data = write_tiny_recipe(root)
    runs = root / "runs"
    assert main(["fit", "--config", str(cfg), "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0",
                 "--trainer.logger", "false", "--trainer.default_root_dir", str(runs),
                 "--data.batch_size", "4"]) == 0
    (ckpt,) = runs.rglob("*.ckpt")
    return {"ckpt": ckpt, "cfg": cfg, "data": data}


def test_fit_checkpoint_records_backbones_and_data(fitted):
    ckpt = torch.load(fitted["ckpt"], map_location="cpu", weights_only=False)
    hp = ckpt["hyper_parameters"]
    assert hp["llm"]["class_path"].endswith("HFCausalLM") and Path(hp["llm"]["init_args"]["pretrained"]).is_dir()
    assert hp["vision"]["class_path"].endswith("CLIPVision")
    assert hp["connector"]["init_args"]["num_query_tokens"] == 4
    assert ckpt["datamodule_hyper_parameters"]["root"] == str(fitted["data"])
    assert ckpt["datamodule_hyper_parameters"]["max_tokens"] == 96


def test_evaluate_without_recipe(fitted, tmp_path, capsys):
    from notellm2_pl.commands.evaluate import main as evaluate

    out = tmp_path / "eval"
    assert evaluate(["--ckpt_path", str(fitted["ckpt"]), "--out", str(out), "--no_tb", "--probes", "full"]) == 0
    assert f"test split of {fitted['data']}" in capsys.readouterr().out  # the dataset root the checkpoint records
    assert json.loads((out / "results.json").read_text())


def test_export_without_recipe_embeds_as_with_it(fitted, tmp_path):
    from notellm2_pl.commands.export import main as export
    from notellm2_pl.data.tables import load_split
    from notellm2_pl.inference.embedder import Embedder
    from notellm2_pl.inference.factory import build_from_checkpoint

    assert export(["--ckpt_path", str(fitted["ckpt"]), "--out", str(tmp_path / "exp")]) == 0
    notes = load_split(fitted["data"], "test").notes
    notes = [notes[k] for k in sorted(notes)][:4]
    got = Embedder.from_pretrained(tmp_path / "exp").embed(notes, progress=False)
    module, _, data_cfg = build_from_checkpoint(fitted["ckpt"], fitted["cfg"])  # the recipe's way
    want = Embedder.from_module(module, data_cfg).embed(notes, progress=False)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
