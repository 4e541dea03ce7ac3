"""The ``ablate`` command: run a named grid of ablation recipes, then tabulate, plot and log them to TensorBoard.

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
Each run is, as subprocesses, in its own folder ``<out>/<run id>``:

1. ``python -m notellm2_pl fit --config BASE --config RECIPE [overrides] --seed_everything S --data.seed S
   --trainer.default_root_dir RUN_DIR`` (the ablation bases derive logger and checkpoint paths from it);
2. ``python -m notellm2_pl evaluate`` on the best checkpoint (or, for an untrained baseline with
   ``trainer.max_steps: 0``, on the freshly built model saved by ``ablate save-untrained``) with the
   ``full`` / ``only_image`` / ``only_text`` probes, on every pair subset;
3. ``python -m notellm2_pl saliency`` (models with visual tokens, when the grid asks for it);
4. a marker ``done.json`` with the run's hyperparameters and final metrics.

Run ids are deterministic: ``<name>-s<seed>-<hash of recipe path, overrides and seed>``. A run with a marker is
never retrained (resume = run the same command again; if its recipe files' content changed since it finished, a
warning says so and names the folder to delete); a run folder without one is cleared and redone, except that
a run whose evaluation results already exist (e.g. from ``--print-commands`` jobs on a cluster) is only collected.
``--reuse DIR...`` counts runs finished in other output folders of the same grid as done: they are reported with
the others and never retrained (e.g. seeds that ran into separate folders, tabulated together).

Outputs under ``<out>`` (default ``runs/ablations/<grid>``): ``summary.md`` / ``summary.csv`` (variant x subset x
probe, R@10 and R@100, mean over seeds), PNG plots and ``tb/`` for TensorBoard (HParams tab = the ablation table,
custom-scalars layout = Recall@K by subset across runs); see :mod:`notellm2_pl.analysis.reports`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
GRID_DIR = Path("recipes/ablations/grids")
MARKER = "done.json"
HEADER_KEYS = ("base", "changes", "prepare")

Runner = Callable[[list[str], Path], int]
"""Runs one command (argv), writing its output to the log file; returns the exit code."""


# ------------------------------------------------------------------------------------------------ recipes and grids
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
    """Parse the leading comment block of a recipe (``# key: value`` lines, see :class:`RecipeHeader`)."""
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
    """A repository-relative path as given if it exists from the working directory, else from the repository."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    alt = REPO_ROOT / p
    return alt if alt.exists() else p


def grid_names() -> list[str]:
    """Names of the built-in grids."""
    return sorted(p.name[: -len(".yml")] for p in resolve_path(GRID_DIR).glob("*.yml"))


def load_grid(name_or_path: str) -> Grid:
    """Load a grid by built-in name (``demo``, ``quick``, ``layout``, ``paper``) or YAML path."""
    import yaml

    path = Path(name_or_path)
    if not path.suffix:
        path = resolve_path(GRID_DIR / f"{name_or_path}.yml")
    if not path.exists():
        raise FileNotFoundError(f"No grid {name_or_path!r}. Built-in grids: {', '.join(grid_names())}; or pass a "
                                f"YAML file (format: python -m notellm2_pl ablate --help).")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    runs = []
    for r in raw.get("runs", []):
        unknown = set(r) - {"name", "recipe", "overrides", "sweeps", "plot", "seeds"}
        if unknown or "name" not in r or "recipe" not in r:
            raise ValueError(f"{path}: each run needs name and recipe (optional: overrides, sweeps, plot, seeds); "
                             f"got {r}.")
        runs.append(GridRun(str(r["name"]), str(r["recipe"]), tuple(str(x) for x in r.get("overrides", []) or []),
                            dict(r.get("sweeps", {}) or {}), bool(r.get("plot", True)),
                            tuple(int(x) for x in r.get("seeds", []) or [])))
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: run names must be unique, got {names}.")
    return Grid(name=str(raw.get("name", path.stem)), runs=runs, seeds=[int(s) for s in raw.get("seeds", [0])],
                overrides=[str(x) for x in raw.get("overrides", []) or []],
                prepare=[str(x) for x in raw.get("prepare", []) or []],
                evaluate_args=[str(x) for x in raw.get("evaluate_args", []) or []],
                saliency_batches=int(raw.get("saliency_batches", 0) or 0),
                saliency_args=[str(x) for x in raw.get("saliency_args", []) or []],
                sweeps=dict(raw.get("sweeps", {}) or {}), description=str(raw.get("description", "")), path=str(path))


def resolve_config(configs: Sequence[str | os.PathLike[str]], overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The fully resolved recipe (every default filled in) of ``--config`` files plus overrides, as a dict.

    Parsed by the same LightningCLI parser as ``fit`` (through ``--print_config``); nothing is instantiated.
    """
    import contextlib
    import io

    import yaml

    from notellm2_pl.commands.main import build_cli

    argv: list[str] = []
    for c in configs:
        argv += ["--config", os.fspath(c)]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):
        build_cli(argv + list(overrides) + ["--print_config"], run=False)
    return yaml.safe_load(buf.getvalue()) or {}


# ------------------------------------------------------------------------------------------------ planning
@dataclass(frozen=True)
class RunSpec:
    """One (grid row, seed) with everything needed to run it."""

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
        merged = json.dumps(_merged_yaml(self.configs), sort_keys=True, default=str)
        return hashlib.sha1(merged.encode()).hexdigest()[:12]


def plan(grid: Grid, seeds: Sequence[int] | None = None, extra_overrides: Sequence[str] = (),
         only: Sequence[str] | None = None) -> list[RunSpec]:
    """Expand a grid into run specs (grid order, then seeds: ``seeds``, else the run's own, else the grid's)."""
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


def _py(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "notellm2_pl", *args]


def fit_command(spec: RunSpec, run_dir: Path) -> list[str]:
    """``fit`` of one run: base + recipe configs, overrides, seed, and the run folder."""
    args = ["fit"]
    for c in spec.configs:
        args += ["--config", c]
    args += [*spec.overrides, "--seed_everything", str(spec.seed), "--data.seed", str(spec.seed),
             "--trainer.default_root_dir", os.fspath(run_dir)]
    return _py(args)


def evaluate_command(ckpt: Path, config: Path, run_dir: Path, grid: Grid) -> list[str]:
    """``evaluate`` of one checkpoint with the three probes; results in ``run_dir/eval``."""
    return _py(["evaluate", "--ckpt_path", os.fspath(ckpt), "--config", os.fspath(config), "--out",
                os.fspath(run_dir / "eval"), "--probes", "full,only_image,only_text", *grid.evaluate_args])


def saliency_command(ckpt: Path, config: Path, run_dir: Path, grid: Grid, label: str) -> list[str]:
    """``saliency`` of one checkpoint; results in ``run_dir/saliency``."""
    return _py(["saliency", "--ckpt_path", os.fspath(ckpt), "--config", os.fspath(config), "--num_batches",
                str(grid.saliency_batches), "--out", os.fspath(run_dir / "saliency"), "--label", label,
                *grid.saliency_args])


def prepare_command(line: str) -> list[str]:
    """A ``# prepare:`` line as argv (a leading ``python`` becomes this interpreter)."""
    argv = shlex.split(line)
    if argv and argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    return argv


def subprocess_runner(cmd: list[str], log_path: Path) -> int:
    """Default runner: the command in a subprocess (working directory: here), output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "a", encoding="utf-8") as f:
        f.write(f"$ {shlex.join(cmd)}\n")
        f.flush()
        return subprocess.run(cmd, check=False, stdout=f, stderr=subprocess.STDOUT, env=env).returncode


# ------------------------------------------------------------------------------------------------ running
def find_config(run_dir: Path) -> Path | None:
    """The resolved config LightningCLI saved for the run (latest logger version)."""
    found = sorted(run_dir.glob("tb/version_*/config.yaml"), key=lambda p: p.stat().st_mtime)
    if not found:
        found = sorted(run_dir.rglob("config.yaml"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def write_model_config(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Keep the ``model`` and ``data`` sections of a resolved config (what evaluate / saliency / export read).

    The config LightningCLI saves for ``fit`` also holds subcommand keys (``ckpt_path``, ``weights_only``...) that the
    model-only parser of ``notellm2_pl.inference.export`` does not accept.
    """
    import yaml

    from notellm2_pl.atomic import atomic_write_text

    cfg = yaml.safe_load(Path(src).read_text(encoding="utf-8")) or {}
    keep = {k: cfg[k] for k in ("model", "data") if k in cfg}
    atomic_write_text(dst, yaml.safe_dump(keep, sort_keys=False, allow_unicode=True))
    return Path(dst)


def find_checkpoint(run_dir: Path) -> Path | None:
    """``best.ckpt``, else ``last.ckpt``, else ``untrained.ckpt`` under ``run_dir/checkpoints``."""
    for name in ("best.ckpt", "last.ckpt", "untrained.ckpt"):
        p = run_dir / "checkpoints" / name
        if p.exists():
            return p
    return None


def save_untrained(configs: Sequence[str], out: str | os.PathLike[str]) -> Path:
    """Build a recipe's model without training and save it as a checkpoint (zero-shot baselines)."""
    import torch

    from notellm2_pl.atomic import atomic_save
    from notellm2_pl.inference.export import build_from_config

    module, _, data_cfg = build_from_config(list(configs))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                 "datamodule_hyper_parameters": data_cfg, "global_step": 0, "untrained": True}, out,
                saver=torch.save)
    return out


def _merged_yaml(paths: Sequence[str]) -> dict[str, Any]:
    """Naive deep merge of recipe files (enough to tell whether a run has a vision tower and visual tokens)."""
    import yaml

    def merge(a: dict, b: Mapping) -> dict:
        for k, v in b.items():
            a[k] = merge(dict(a.get(k) or {}), v) if isinstance(v, Mapping) and isinstance(a.get(k), dict) else v
        return a

    out: dict[str, Any] = {}
    for p in paths:
        out = merge(out, yaml.safe_load(Path(p).read_text(encoding="utf-8")) or {})
    return out


def _has_visual_tokens(cfg: Mapping[str, Any]) -> bool:
    model = cfg.get("model", {}) or {}
    conn = model.get("connector") or {}
    return bool(model.get("vision")) and bool(conn) and "NoConnector" not in str(conn.get("class_path", ""))


def find_finished(spec: RunSpec, folders: Sequence[Path]) -> Path | None:
    """The marker of ``spec``'s finished run in the first of ``folders`` that holds one, else None."""
    for folder in folders:
        marker = Path(folder) / spec.run_id / MARKER
        if marker.exists():
            return marker
    return None


def run_one(spec: RunSpec, out_dir: Path, grid: Grid, runner: Runner = subprocess_runner,
            collect_only: bool = False, reuse: Sequence[Path] = ()) -> dict[str, Any] | None:
    """Run (or resume / collect) one spec; returns its record, or None when a step failed (logged).

    Args:
        spec: The run.
        out_dir: The grid's output folder.
        grid: The grid (evaluate / saliency settings).
        runner: Executes each command (default: a subprocess with output in the run folder's logs).
        collect_only: Run nothing; only finalise a run whose evaluation results exist (cluster jobs).
        reuse: Other output folders of the same grid: a run finished in one of them is not retrained; its record
            (which points to its folder there) is returned as is.
    """
    from notellm2_pl.analysis.reports import build_record

    run_dir = out_dir / spec.run_id
    marker = run_dir / MARKER
    finished = find_finished(spec, [out_dir, *reuse])
    if finished is not None:
        log.info("%s: done, skipping (delete %s to redo it).", spec.run_id, finished)
        done = json.loads(finished.read_text(encoding="utf-8"))
        if done.get("recipe_sha", spec.recipe_sha) != spec.recipe_sha:
            log.warning("%s: its recipe files changed since it finished; the finished run is kept. Delete %s to "
                        "redo it with the current recipe.", spec.run_id, finished.parent)
        return done
    t0 = time.time()
    results = run_dir / "eval" / "results.json"
    if collect_only and not (results.exists() and find_checkpoint(run_dir) and find_config(run_dir)):
        return None
    if not results.exists():  # nothing to collect: (re)start from a clean folder
        if run_dir.exists():
            log.info("%s: clearing an unfinished run folder.", spec.run_id)
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        for line in spec.prepare:
            if runner(prepare_command(line), run_dir / "prepare.log") != 0:
                log.error("%s: prepare step failed; see %s", spec.run_id, run_dir / "prepare.log")
                return None
        log.info("%s: fit", spec.run_id)
        if runner(fit_command(spec, run_dir), run_dir / "fit.log") != 0:
            log.error("%s: fit failed; see %s", spec.run_id, run_dir / "fit.log")
            return None
    full_config = find_config(run_dir)
    if full_config is None:
        log.error("%s: fit wrote no config.yaml under %s (the recipe must log with TensorBoardLogger under "
                  "trainer.default_root_dir, like the ablation bases).", spec.run_id, run_dir)
        return None
    config = run_dir / "model_config.yaml"
    if not config.exists():
        write_model_config(full_config, config)
    ckpt = find_checkpoint(run_dir)
    if ckpt is None:  # e.g. trainer.max_steps 0: the zero-shot baseline
        ckpt = run_dir / "checkpoints" / "untrained.ckpt"
        log.info("%s: no checkpoint (no training step): saving the untrained model", spec.run_id)
        cmd = _py(["ablate", "save-untrained", "--config", os.fspath(config), "--out", os.fspath(ckpt)])
        if runner(cmd, run_dir / "fit.log") != 0:
            log.error("%s: saving the untrained model failed; see %s", spec.run_id, run_dir / "fit.log")
            return None
    if not results.exists():
        log.info("%s: evaluate %s", spec.run_id, ckpt.name)
        if runner(evaluate_command(ckpt, config, run_dir, grid), run_dir / "eval.log") != 0:
            log.error("%s: evaluate failed; see %s", spec.run_id, run_dir / "eval.log")
            return None
    import yaml

    cfg = yaml.safe_load(full_config.read_text(encoding="utf-8")) or {}
    sal = run_dir / "saliency" / "saliency.json"
    if grid.saliency_batches > 0 and _has_visual_tokens(cfg) and not sal.exists() and not collect_only:
        log.info("%s: saliency over %d batches", spec.run_id, grid.saliency_batches)
        if runner(saliency_command(ckpt, config, run_dir, grid, spec.run.name), run_dir / "saliency.log") != 0:
            log.warning("%s: saliency failed (the run still counts); see %s", spec.run_id, run_dir / "saliency.log")
    record = {**build_record(spec, run_dir, cfg, ckpt, time.time() - t0), "recipe_sha": spec.recipe_sha}
    from notellm2_pl.atomic import atomic_write_text

    atomic_write_text(marker, json.dumps(record, indent=1))
    return record


def shell_lines(specs: Sequence[RunSpec], out_dir: Path, grid: Grid) -> list[str]:
    """One self-contained shell line per run (for sbatch --wrap / a job array); mirrors :func:`run_one`."""
    lines = []
    for spec in specs:
        d = out_dir / spec.run_id
        q = shlex.quote
        fit = shlex.join(["python", *fit_command(spec, d)[1:]])
        ck = f"{q(os.fspath(d))}/checkpoints"
        cfg = f"$(ls -t {q(os.fspath(d))}/tb/version_*/config.yaml | head -1)"
        steps = [f"mkdir -p {q(os.fspath(d))}"]
        steps += [shlex.join(["python" if a == sys.executable else a for a in prepare_command(p)])
                  for p in spec.prepare]
        steps += [f"{fit} > {q(os.fspath(d / 'fit.log'))} 2>&1",
                  f"python -m notellm2_pl ablate model-config {cfg} {q(os.fspath(d / 'model_config.yaml'))}",
                  f"CFG={q(os.fspath(d / 'model_config.yaml'))}", f"CK={ck}/best.ckpt",
                  f"{{ [ -f $CK ] || CK={ck}/last.ckpt; }}",
                  (f"{{ [ -f $CK ] || {{ CK={ck}/untrained.ckpt; python -m notellm2_pl ablate save-untrained "
                   f"--config $CFG --out $CK; }}; }}"),
                  ("python -m notellm2_pl evaluate --ckpt_path $CK --config $CFG --out "
                   f"{q(os.fspath(d / 'eval'))} --probes full,only_image,only_text {shlex.join(grid.evaluate_args)}"
                   f" > {q(os.fspath(d / 'eval.log'))} 2>&1")]
        if grid.saliency_batches > 0 and _has_visual_tokens(_merged_yaml(spec.configs)):
            steps.append(f"{{ python -m notellm2_pl saliency --ckpt_path $CK --config $CFG --num_batches "
                         f"{grid.saliency_batches} --out {q(os.fspath(d / 'saliency'))} --label {spec.run.name} "
                         f"{shlex.join(grid.saliency_args)} > {q(os.fspath(d / 'saliency.log'))} 2>&1 || true; }}")
        lines.append(f"# {spec.run_id}\n" + " && ".join(steps))
    return lines


# ------------------------------------------------------------------------------------------------ CLI
def build_parser() -> argparse.ArgumentParser:
    """Argument parser of the ``ablate`` command."""
    p = argparse.ArgumentParser(
        prog="python -m notellm2_pl ablate",
        description="Run a grid of ablation recipes (fit -> evaluate with only_image / only_text probes -> "
                    "saliency), resumably, then write summary.md / summary.csv, PNG plots and a TensorBoard log dir "
                    "(HParams tab = ablation table; custom scalars = Recall@K by subset). Arguments after `--` are "
                    "extra fit overrides for every run (they become part of the run names).",
        epilog="Examples:\n"
               "  python -m notellm2_pl ablate --grid demo                 # the grid's own seeds (per run or grid)\n"
               "  python -m notellm2_pl ablate --grid demo --seeds 0 1 2   # every run with these seeds\n"
               "  python -m notellm2_pl ablate --grid quick -- --trainer.max_steps 20 --trainer.val_check_interval 10\n"
               "  python -m notellm2_pl ablate --grid paper --print-commands > jobs.sh     # one line per run\n"
               "  python -m notellm2_pl ablate --grid paper --report-only                  # after the jobs\n"
               "  python -m notellm2_pl ablate --grid demo --only basic notellm2 --seeds 0 1 2 --out runs/ablations/s012 \\\n"
               "      --reuse runs/ablations/demo runs/ablations/demo_seed2 --report-only   # combine folders\n"
               "  python -m notellm2_pl ablate save-untrained --config CONFIG --out CKPT   # zero-shot baselines\n"
               "  python -m notellm2_pl ablate model-config FIT_CONFIG OUT                 # model + data sections\n"
               "  tensorboard --logdir runs/ablations/demo/tb\n\n"
               "Grid file format: see recipes/ablations/grids/demo.yml and docs/ablations.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--grid", default="quick", help="Built-in grid name (demo, quick, layout, paper) or a grid YAML file.")
    p.add_argument("--seeds", type=int, nargs="+", help="Seeds (seed_everything and data.seed); default: the grid's.")
    p.add_argument("--only", nargs="+", metavar="NAME", help="Only these runs of the grid.")
    p.add_argument("--out", help="Output folder (default: runs/ablations/<grid name>).")
    p.add_argument("--print-commands", action="store_true",
                   help="Print one shell line per run (for a cluster) instead of running.")
    p.add_argument("--report-only", action="store_true",
                   help="Run nothing: collect finished runs (markers or evaluation results) and write the reports.")
    p.add_argument("--list", action="store_true", help="List the runs (ids and status) and exit.")
    p.add_argument("--reuse", nargs="+", default=[], metavar="DIR",
                   help="Earlier output folders of the same grid (other --out): a run finished in one of them is not "
                        "retrained (nor printed by --print-commands), and it is reported here with the others, e.g. "
                        "to tabulate seeds that ran into separate folders.")
    return p


def _save_untrained_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m notellm2_pl ablate save-untrained",
                                description="Save a recipe's freshly built (untrained) model as a checkpoint, for "
                                            "zero-shot baselines (evaluate / saliency take checkpoints).")
    p.add_argument("--config", action="append", required=True, help="Recipe file(s) or a resolved config.yaml.")
    p.add_argument("--out", required=True, help="Checkpoint path to write.")
    args = p.parse_args(argv)
    path = save_untrained(args.config, args.out)
    print(f"Wrote {path}")
    return 0


def cli_main(argv: list[str] | None = None) -> int:
    """``python -m notellm2_pl ablate``; run with ``--help``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "save-untrained":
        return _save_untrained_main(argv[1:])
    if argv and argv[0] == "model-config":
        if len(argv) != 3:
            print("usage: python -m notellm2_pl ablate model-config FIT_CONFIG.yaml OUT.yaml", file=sys.stderr)
            return 2
        print(f"Wrote {write_model_config(argv[1], argv[2])}")
        return 0
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    args = build_parser().parse_args(argv)
    grid = load_grid(args.grid)
    out = Path(args.out or Path("runs/ablations") / grid.name)
    specs = plan(grid, args.seeds, extra, args.only)
    reuse = [Path(d) for d in args.reuse]
    missing = [os.fspath(d) for d in reuse if not d.is_dir()]
    if missing:
        print(f"--reuse: no such folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.print_commands:
        todo = [s for s in specs if find_finished(s, reuse) is None]  # runs finished in --reuse folders stay there
        print(f"# grid {grid.name}: {len(todo)} runs; afterwards: python -m notellm2_pl ablate --grid {args.grid} "
              f"--out {out}" + (f" --seeds {' '.join(map(str, args.seeds))}" if args.seeds else "")
              + (f" --reuse {shlex.join(args.reuse)}" if reuse else "") + " --report-only"
              + (f" -- {shlex.join(extra)}" if extra else ""))
        print("\n".join(shell_lines(todo, out, grid)))
        return 0
    if args.list:
        for s in specs:
            found = find_finished(s, [out, *reuse])
            where = None if found is None else found.parent.parent
            status = "todo" if where is None else ("done" if where == out else f"done in {where}")
            print(f"{status:<5} {s.run_id:<40} {s.run.recipe} {shlex.join(s.overrides)}")
        return 0
    from notellm2_pl.analysis.reports import write_reports

    records, failed = [], []
    for i, spec in enumerate(specs, 1):
        if args.report_only:
            rec = run_one(spec, out, grid, collect_only=True, reuse=reuse)
        else:
            print(f"[{i}/{len(specs)}] {spec.run_id}", flush=True)
            rec = run_one(spec, out, grid, reuse=reuse)
        (records if rec is not None else failed).append(rec if rec is not None else spec.run_id)
    if not records:
        print(f"No finished runs under {out}.")
        return 1
    paths = write_reports(out, grid, records)
    print((out / "summary.md").read_text(encoding="utf-8"))
    print("Wrote " + ", ".join(os.fspath(p) for p in paths) + f"\nTensorBoard: tensorboard --logdir {out / 'tb'}")
    if failed:
        print(f"{len(failed)} run(s) not finished: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main())
