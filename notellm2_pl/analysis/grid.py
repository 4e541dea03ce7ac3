"""Ablation grids: which runs an ``ablate`` call makes (recipes, seeds, overrides), expanded into run specs.

A **grid** (``recipes/ablations/grids/<name>.yml``, or any YAML path) lists runs. Grid files end in ``.yml`` so the
recipe checks, which parse every ``recipes/**/*.yaml`` as a recipe, leave them alone::

    name: demo
    seeds: [0]                      # default seeds (--seeds overrides)
    overrides: []                   # appended to every fit command
    prepare: []                     # commands run before each run's training (e.g. making its data), first
    evaluate_args: [--batch_size, "128"]
    saliency_batches: 8             # 0: no saliency analysis
    sweeps: {ratio: {label: "mICL loss ratio w_t : 1", log_x: true}}
    runs:
      - {name: basic, recipe: recipes/ablations/demo/basic.yaml, seeds: [0, 1]}   # this row's own seeds
      - {name: notellm2, recipe: recipes/ablations/demo/notellm2.yaml, sweeps: {ratio: 9}}
      - {name: ratio_1_1, recipe: recipes/ablations/demo/ratio_1_1.yaml, sweeps: {ratio: 1}, plot: false}

A **recipe** is a small YAML overlay whose header names its base and what it changes (``# base: FILE...``,
``# changes: KEY, KEY`` and optionally ``# prepare: COMMAND`` lines run before training, e.g. building a text prior).

Run ids are deterministic: ``<name>-s<seed>-<hash of recipe path, overrides and seed>``; what each run does is in
:mod:`notellm2_pl.analysis.pipeline`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
GRID_DIR = Path("recipes/ablations/grids")
HEADER_KEYS = ("base", "changes", "prepare")
RUN_KEYS = ("name", "recipe", "overrides", "sweeps", "plot", "seeds")


# ------------------------------------------------------------------------------------------------ recipes
@dataclass(frozen=True)
class RecipeHeader:
    """What an ablation recipe's header comment declares.

    Attributes:
        path: The recipe file.
        base: Config files applied before the recipe (``# base:``; empty for a self-contained file).
        changes: Dotted config keys the recipe changes relative to its base (``# changes:``; ``none`` = empty).
        prepare: Shell commands to run before training (``# prepare:``), e.g. building a text prior.
        title: The first header line.
    """

    path: str
    base: tuple[str, ...]
    changes: tuple[str, ...]
    prepare: tuple[str, ...] = ()
    title: str = ""


def read_header(path: str | os.PathLike[str]) -> RecipeHeader:
    """Parse the leading comment block of a recipe (``# key: value`` lines, see :class:`RecipeHeader`).

    Args:
        path: The recipe file.

    Returns:
        Its header.
    """
    values: dict[str, list[str]] = {k: [] for k in HEADER_KEYS}
    title = ""
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        text = line[1:].strip()
        title = title or text
        m = re.match(r"(base|changes|prepare):\s*(.*)$", text)
        if m:
            values[m.group(1)].append(m.group(2).strip())
    base = tuple(p for v in values["base"] for p in v.split() if not v.startswith("(none"))
    changes = tuple(c.strip() for v in values["changes"] for c in v.split(",") if c.strip() and c.strip() != "none")
    return RecipeHeader(os.fspath(path), base, changes, tuple(values["prepare"]), title)


def merged_yaml(paths: Sequence[str | os.PathLike[str]]) -> dict[str, Any]:
    """Naive deep merge of recipe files (enough to tell whether a run has a vision tower and visual tokens).

    Args:
        paths: Recipe files, later ones overriding earlier ones.

    Returns:
        The merged mapping.
    """

    def merge(a: dict, b: Mapping) -> dict:
        for k, v in b.items():
            a[k] = merge(dict(a.get(k) or {}), v) if isinstance(v, Mapping) and isinstance(a.get(k), dict) else v
        return a

    out: dict[str, Any] = {}
    for p in paths:
        out = merge(out, yaml.safe_load(Path(p).read_text(encoding="utf-8")) or {})
    return out


def has_visual_tokens(cfg: Mapping[str, Any]) -> bool:
    """Whether a (resolved or merged) config has a vision tower whose features enter the LLM as tokens.

    Args:
        cfg: A config mapping with a ``model`` section.

    Returns:
        True when the model has a vision tower and a connector other than ``NoConnector``.
    """
    model = cfg.get("model", {}) or {}
    conn = model.get("connector") or {}
    return bool(model.get("vision")) and bool(conn) and "NoConnector" not in str(conn.get("class_path", ""))


# ------------------------------------------------------------------------------------------------ grids
@dataclass(frozen=True)
class GridRun:
    """One row of a grid.

    Attributes:
        name: Variant name (table row, plot label).
        recipe: Recipe file.
        overrides: Extra fit arguments for this run.
        sweeps: ``{sweep name: x}``: the run is the point ``x`` of those sweeps.
        plot: Include in the per-variant bar plots (sweep-only runs set false).
        seeds: This run's seeds instead of the grid's (e.g. more seeds for the headline variants); ``--seeds``
            on the command line overrides both.
    """

    name: str
    recipe: str
    overrides: tuple[str, ...] = ()
    sweeps: Mapping[str, float] = field(default_factory=dict)
    plot: bool = True
    seeds: tuple[int, ...] = ()


@dataclass
class Grid:
    """A named list of runs plus shared settings (module docstring)."""

    name: str
    runs: list[GridRun]
    seeds: list[int] = field(default_factory=lambda: [0])
    overrides: list[str] = field(default_factory=list)
    prepare: list[str] = field(default_factory=list)
    evaluate_args: list[str] = field(default_factory=list)
    saliency_batches: int = 0
    saliency_args: list[str] = field(default_factory=list)
    sweeps: dict[str, dict[str, Any]] = field(default_factory=dict)
    description: str = ""
    path: str = ""


def resolve_path(path: str | os.PathLike[str]) -> Path:
    """A repository-relative path as given if it exists from the working directory, else from the repository.

    Args:
        path: A path as written in a grid or recipe header.

    Returns:
        The path to open.
    """
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    alt = REPO_ROOT / p
    return alt if alt.exists() else p


def grid_names() -> list[str]:
    """Names of the built-in grids."""
    return sorted(p.name[: -len(".yml")] for p in resolve_path(GRID_DIR).glob("*.yml"))


def _strings(values: Any) -> list[str]:
    return [str(x) for x in values or []]


def _grid_run(row: Mapping[str, Any], path: Path) -> GridRun:
    unknown = set(row) - set(RUN_KEYS)
    if unknown or "name" not in row or "recipe" not in row:
        raise ValueError(f"{path}: each run needs name and recipe (optional: overrides, sweeps, plot, seeds); "
                         f"got {dict(row)}.")
    return GridRun(str(row["name"]), str(row["recipe"]), tuple(_strings(row.get("overrides"))),
                   dict(row.get("sweeps", {}) or {}), bool(row.get("plot", True)),
                   tuple(int(x) for x in row.get("seeds", []) or []))


def load_grid(name_or_path: str) -> Grid:
    """Load a grid by built-in name (``demo``, ``quick``, ``layout``, ``paper``) or YAML path.

    Args:
        name_or_path: A built-in grid name (no suffix) or a grid file.

    Returns:
        The grid.

    Raises:
        FileNotFoundError: No such grid.
        ValueError: A run lacks a name or recipe, has unknown keys, or two runs share a name.
    """
    path = Path(name_or_path)
    if not path.suffix:
        path = resolve_path(GRID_DIR / f"{name_or_path}.yml")
    if not path.exists():
        raise FileNotFoundError(f"No grid {name_or_path!r}. Built-in grids: {', '.join(grid_names())}; or pass a "
                                f"YAML file (format: python -m notellm2_pl ablate --help).")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    runs = [_grid_run(r, path) for r in raw.get("runs", [])]
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: run names must be unique, got {names}.")
    return Grid(name=str(raw.get("name", path.stem)), runs=runs, seeds=[int(s) for s in raw.get("seeds", [0])],
                overrides=_strings(raw.get("overrides")), prepare=_strings(raw.get("prepare")),
                evaluate_args=_strings(raw.get("evaluate_args")),
                saliency_batches=int(raw.get("saliency_batches", 0) or 0),
                saliency_args=_strings(raw.get("saliency_args")),
                sweeps=dict(raw.get("sweeps", {}) or {}), description=str(raw.get("description", "")), path=str(path))


# ------------------------------------------------------------------------------------------------ planning
@dataclass(frozen=True)
class RunSpec:
    """One (grid row, seed) with everything needed to run it.

    Attributes:
        run: The grid row.
        seed: ``seed_everything`` and ``data.seed``.
        configs: ``--config`` files: the recipe's bases, then the recipe.
        overrides: Fit arguments: the grid's, the row's, then the command line's.
        prepare: Commands run before training: the grid's, then the recipe header's.
    """

    run: GridRun
    seed: int
    configs: tuple[str, ...]
    overrides: tuple[str, ...]
    prepare: tuple[str, ...]

    @property
    def run_id(self) -> str:
        """Deterministic folder name: ``<name>-s<seed>-<8 hex digits of recipe path + overrides + seed>``."""
        key = json.dumps([Path(self.run.recipe).as_posix(), list(self.overrides), self.seed])
        return f"{self.run.name}-s{self.seed}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"

    @property
    def recipe_sha(self) -> str:
        """Hash of the merged recipe files' content (comments excluded): a finished run whose recipe changed warns."""
        merged = json.dumps(merged_yaml(self.configs), sort_keys=True, default=str)
        return hashlib.sha1(merged.encode()).hexdigest()[:12]


def plan(grid: Grid, seeds: Sequence[int] | None = None, extra_overrides: Sequence[str] = (),
         only: Sequence[str] | None = None) -> list[RunSpec]:
    """Expand a grid into run specs (grid order, then seeds: ``seeds``, else the run's own, else the grid's).

    Args:
        grid: The grid.
        seeds: Seeds for every run (``--seeds``), overriding the runs' and the grid's.
        extra_overrides: Fit arguments appended to every run (after ``--`` on the command line).
        only: Only the runs with these names.

    Returns:
        One spec per (run, seed).

    Raises:
        ValueError: ``only`` names a run the grid does not have.
    """
    if only:
        missing = set(only) - {r.name for r in grid.runs}
        if missing:
            raise ValueError(f"--only {sorted(missing)}: not in grid {grid.name} "
                             f"({', '.join(r.name for r in grid.runs)}).")
    specs = []
    for run in grid.runs:
        if only and run.name not in only:
            continue
        recipe = resolve_path(run.recipe)
        header = read_header(recipe)
        configs = tuple(os.fspath(resolve_path(b)) for b in header.base) + (os.fspath(recipe),)
        for seed in (list(seeds) if seeds else list(run.seeds) or grid.seeds):
            overrides = tuple(grid.overrides) + tuple(run.overrides) + tuple(extra_overrides)
            specs.append(RunSpec(run, int(seed), configs, overrides, (*grid.prepare, *header.prepare)))
    return specs
