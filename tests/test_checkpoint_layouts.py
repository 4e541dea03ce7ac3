"""Checkpoints of every hyperparameter layout load: the flat one (encoder settings at the top level, as saved before
``model.encoder`` existed) and the current one (plain dicts only, so ``torch.load(weights_only=True)`` reads them).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch

from notellm2_pl.data.processing import NoteProcessor, collate
from notellm2_pl.data.tables import Note
from notellm2_pl.model.config import EncoderConfig
from notellm2_pl.training.hparams import is_flat_layout, migrate_hparams

CONNECTOR = {"class_path": "notellm2_pl_backbones.connectors.MLPConnector", "init_args": {"num_tokens_out": 2}}
ENCODER = EncoderConfig(micl=True, late_fusion=True, embed_dim=8, marker_token="<MARK>")


def _flat_hparams(tiny_ckpts: dict[str, str]) -> dict:
    """What ``save_hyperparameters`` stored under LightningCLI before the encoder settings were grouped."""
    return {
        "llm": {"class_path": "notellm2_pl_backbones.hf_llm.HFCausalLM",
                "init_args": {"pretrained": tiny_ckpts["qwen2"]}},
        "vision": {"class_path": "notellm2_pl_backbones.hf_vision.CLIPVision",
                   "init_args": {"pretrained": tiny_ckpts["clip"]}},
        "connector": CONNECTOR,
        "micl": True, "late_fusion": True, "embed_dim": 8, "loss_weights": (9.0, 1.0), "tau_init": 3.0,
        "learn_tau": True, "mask_same_id": True, "prompt_preset": "en", "splice_mode": "insert",
        "image_tokens": ("<img>", "</img>"), "marker_token": "<MARK>", "add_special_tokens": True,
        "new_token_init": "mean", "freeze_vision": True, "freeze_llm": False, "llm_trainable_layers": 0, "lr": 3e-6,
        "lr_new": None, "weight_decay": 0.001, "no_decay_norm_bias_tau": True, "warmup_ratio": 0.1,
        "warmup_type": "linear", "val_ks": (10, 100), "test_ks": (10, 20, 50, 100, 1000), "feature_cache": False,
        "feature_cache_dir": None, "grad_cache_chunk": None, "manual_clip_val": 1.0, "compile_llm": False,
        "_instantiator": "lightning.pytorch.cli.instantiate_module",
    }


@pytest.fixture(scope="module")
def trained(tiny_ckpts):
    """A module with non-default encoder settings and perturbed weights (so a fresh init cannot pass for it)."""
    from notellm2_pl_backbones.connectors import MLPConnector
    from notellm2_pl_backbones.hf_llm import HFCausalLM
    from notellm2_pl_backbones.hf_vision import CLIPVision

    from notellm2_pl.training.module import NoteLLM2Module

    torch.manual_seed(0)
    module = NoteLLM2Module(HFCausalLM(tiny_ckpts["qwen2"]), CLIPVision(tiny_ckpts["clip"]),
                            partial(MLPConnector, num_tokens_out=2), ENCODER)
    with torch.no_grad():
        for p in module.encoder.head.parameters():
            p.add_(0.5)
        module.tau.fill_(1.25)
    return module.eval()


def _embed(module, image_dir: Path) -> torch.Tensor:
    notes = [Note(f"n{i}", f"title {i}", ["tag"], "some words " * i, str(image_dir / f"img{i}.png")) for i in range(3)]
    proc = NoteProcessor(module.note_format())
    with torch.no_grad():
        return module(collate([proc(n) for n in notes])).e_m


def _assert_same_model(loaded, trained, image_dir: Path) -> None:
    assert loaded.encoder.config == ENCODER
    assert loaded.hparams["encoder"] == ENCODER.to_dict()
    expected = trained.state_dict()
    got = loaded.state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    torch.testing.assert_close(_embed(loaded.eval(), image_dir), _embed(trained, image_dir))


def test_migration_moves_only_the_encoder_settings(tiny_ckpts):
    flat = _flat_hparams(tiny_ckpts)
    assert is_flat_layout(flat)
    hp = migrate_hparams(flat)
    assert not is_flat_layout(hp)
    assert EncoderConfig.from_value(hp["encoder"]) == ENCODER
    assert {k: v for k, v in hp.items() if k != "encoder"} == {k: v for k, v in flat.items() if k in hp}
    assert migrate_hparams(hp) == hp  # the current layout comes back unchanged


def test_flat_layout_checkpoint_loads_as_the_same_model(trained, tiny_ckpts, tmp_path, image_dir):
    from notellm2_pl.inference.factory import build_from_checkpoint
    from notellm2_pl.training.module import NoteLLM2Module

    ckpt = tmp_path / "flat.ckpt"
    torch.save({"state_dict": trained.state_dict(), "hyper_parameters": _flat_hparams(tiny_ckpts),
                "pytorch-lightning_version": "2.6.0"}, ckpt)
    module, model_cfg, _ = build_from_checkpoint(ckpt)  # the inference path: hparams -> recipe schema
    assert "micl" not in model_cfg and model_cfg["encoder"]["marker_token"] == "<MARK>"
    _assert_same_model(module, trained, image_dir)
    _assert_same_model(NoteLLM2Module.load_from_checkpoint(ckpt, map_location="cpu"), trained, image_dir)
    assert torch.load(ckpt, weights_only=True)["hyper_parameters"]["micl"] is True  # the file itself is untouched


def test_current_layout_is_plain_and_weights_only_loadable(trained, tiny_ckpts, tmp_path, image_dir):
    from notellm2_pl_backbones.connectors import MLPConnector
    from notellm2_pl_backbones.hf_llm import HFCausalLM
    from notellm2_pl_backbones.hf_vision import CLIPVision

    from notellm2_pl.training.module import NoteLLM2Module

    assert isinstance(trained.hparams["encoder"], dict)
    ckpt = tmp_path / "current.ckpt"
    torch.save({"state_dict": trained.state_dict(), "hyper_parameters": dict(trained.hparams),
                "pytorch-lightning_version": "2.6.0"}, ckpt)
    hp = torch.load(ckpt, weights_only=True)["hyper_parameters"]
    assert not is_flat_layout(hp) and EncoderConfig.from_value(hp["encoder"]) == ENCODER
    # a module built in Python records no backbone configs: the caller passes the backbones
    loaded = NoteLLM2Module.load_from_checkpoint(ckpt, llm=HFCausalLM(tiny_ckpts["qwen2"]),
                                                 vision=CLIPVision(tiny_ckpts["clip"]),
                                                 connector=partial(MLPConnector, num_tokens_out=2))
    _assert_same_model(loaded, trained, image_dir)
