"""Every ablation recipe changes exactly the keys its header declares (resolved through the CLI parser)."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from notellm2_pl.analysis.grid import load_grid, plan, read_header
from notellm2_pl.analysis.records import flatten
from notellm2_pl.commands.lightning import build_cli

ROOT = Path(__file__).resolve().parents[1]
SCALES = ("demo", "paper")
RECIPES = sorted(p for s in SCALES for p in (ROOT / "recipes" / "ablations" / s).glob("*.yaml") if p.stem != "base")


def resolve_config(configs: Sequence[str | os.PathLike[str]], overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The fully resolved recipe (every default filled in) of ``--config`` files plus overrides, as a dict.

    Parsed by the same LightningCLI parser as ``fit`` (through ``--print_config``); nothing is instantiated.
    """
    argv: list[str] = []
    for c in configs:
        argv += ["--config", os.fspath(c)]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):
        build_cli(argv + list(overrides) + ["--print_config"], run=False)
    return yaml.safe_load(buf.getvalue()) or {}


def _rel(p: Path) -> str:
    return p.relative_to(ROOT).as_posix()


@pytest.fixture(scope="module")
def resolved_bases() -> dict[str, dict]:
    return {s: flatten(resolve_config([ROOT / "recipes" / "ablations" / s / "base.yaml"])) for s in SCALES}


def _differing(a: dict, b: dict) -> set[str]:
    return {k for k in set(a) | set(b) if a.get(k, "<missing>") != b.get(k, "<missing>")}


def _covered(key: str, changes: tuple[str, ...]) -> bool:
    return any(key == c or key.startswith(c + ".") for c in changes)


@pytest.mark.parametrize("recipe", RECIPES, ids=_rel)
def test_recipe_changes_only_what_it_declares(recipe: Path, resolved_bases):
    header = read_header(recipe)
    scale = recipe.parent.name
    assert header.base == (f"recipes/ablations/{scale}/base.yaml",), "every overlay names its base"
    assert header.title.startswith(f"Ablation ({scale} scale):")
    text = recipe.read_text()
    assert "# Run:" in text and f"--config recipes/ablations/{scale}/base.yaml --config {_rel(recipe)}" in text
    variant = flatten(resolve_config([ROOT / header.base[0], recipe]))
    diff = _differing(resolved_bases[scale], variant)
    undeclared = sorted(k for k in diff if not _covered(k, header.changes))
    assert not undeclared, f"{_rel(recipe)} changes undeclared keys {undeclared}"
    unchanged = [c for c in header.changes if not any(_covered(k, (c,)) for k in diff)]
    assert not unchanged, f"{_rel(recipe)} declares {unchanged} but leaves them as in the base"


def test_bases_are_self_contained_and_route_outputs(resolved_bases):
    for scale in SCALES:
        header = read_header(ROOT / "recipes" / "ablations" / scale / "base.yaml")
        assert header.base == () and header.changes == ()
        flat = resolved_bases[scale]
        root = flat["trainer.default_root_dir"]
        assert flat["trainer.logger.init_args.save_dir"] == root
        assert flat["trainer.callbacks.0.init_args.dirpath"] == f"{root}/checkpoints"
    # one override moves every output of a run
    moved = flatten(resolve_config([ROOT / "recipes/ablations/demo/base.yaml"], ["--trainer.default_root_dir", "X"]))
    assert moved["trainer.logger.init_args.save_dir"] == "X"
    assert moved["trainer.callbacks.0.init_args.dirpath"] == "X/checkpoints"


def test_expected_matrix_is_covered(resolved_bases):
    demo = {p.stem for p in RECIPES if p.parent.name == "demo"}
    paper = {p.stem for p in RECIPES if p.parent.name == "paper"}
    common = {"basic", "late_fusion_only", "basic_late_fusion", "micl", "notellm2", "ratio_1_1", "ratio_3_1",
              "ratio_19_1", "mlp_connector", "text_only", "zero_shot"}
    assert common <= demo and common <= paper
    assert {"tokens_4", "tokens_16", "tokens_24", "backbone_llama"} <= demo
    assert {"tokens_8", "tokens_32", "tokens_48", "backbone_siglip_qwen"} <= paper
    assert resolved_bases["demo"]["model.connector.init_args.num_query_tokens"] == 8
    assert resolved_bases["paper"]["model.connector.init_args.num_query_tokens"] == 16
    assert resolved_bases["paper"]["trainer.accelerator"] == "gpu"


@pytest.mark.parametrize("name", ["demo", "quick", "layout", "paper"])
def test_grids_reference_existing_recipes(name):
    grid = load_grid(name)
    assert grid.runs
    for run in grid.runs:
        assert (ROOT / run.recipe).exists(), run.recipe
        assert set(run.sweeps) <= set(grid.sweeps)
    if name == "quick":
        assert [r.name for r in grid.runs] == ["basic", "notellm2"]


def test_layout_grid_weights_every_micl_row_alike():
    """mICL alone and NoteLLM-2 share the grid's e_v weighting, so the pair differs only in late fusion."""
    specs = {s.run.name: s for s in plan(load_grid("layout"), seeds=[0])}
    flat = {n: flatten(resolve_config(specs[n].configs, specs[n].overrides)) for n in ("micl", "notellm2", "basic")}
    assert flat["micl"]["model.loss_weights"] == flat["notellm2"]["model.loss_weights"] == [3.0, 1.0]
    assert _differing(flat["micl"], flat["notellm2"]) == {"model.encoder.late_fusion"}
    assert _differing(flat["basic"], flat["micl"]) == {"model.encoder.micl", "model.loss_weights"}
