"""The ablation pipeline of one run, described once as data: its stages, their commands and their done-checks.

Each run is, as subprocesses, in its own folder ``<out>/<run id>`` (:mod:`notellm2_pl.analysis.run_folder`):

1. ``folder``: a run folder without evaluation results is cleared and made afresh;
2. ``prepare``: the grid's and the recipe header's ``prepare`` commands (e.g. building a text prior);
3. ``fit``: ``python -m notellm2_pl fit --config BASE --config RECIPE [overrides] --seed_everything S --data.seed S
   --trainer.default_root_dir RUN_DIR`` (the ablation bases derive logger and checkpoint paths from it);
4. ``model-config``: the model and data sections of the config fit saved;
5. ``checkpoint``: for an untrained baseline (``trainer.max_steps: 0``, no checkpoint), the freshly built model
   saved by ``ablate save-untrained``;
6. ``evaluate``: ``python -m notellm2_pl evaluate`` with the ``full`` / ``only_image`` / ``only_text`` probes, on
   every pair subset;
7. ``saliency``: ``python -m notellm2_pl saliency`` (models with visual tokens, when the grid asks for it); a failure
   here does not fail the run.

:data:`STAGES` is rendered twice: by the runner (:func:`notellm2_pl.analysis.runner.run_one`), which executes the
stages whose done-check fails, so running again resumes; and by :func:`shell_lines` (``ablate --print-commands``), one
self-contained shell line per run for a cluster, which runs every stage and picks the checkpoint in the shell.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from notellm2_pl.analysis.grid import Grid, RunSpec, has_visual_tokens, merged_yaml
from notellm2_pl.analysis.run_folder import (
    CHECKPOINT_NAMES,
    CHECKPOINTS,
    MODEL_CONFIG,
    RunFolder,
    find_config,
    write_model_config,
)
from notellm2_pl.data.schema import PROBES

log = logging.getLogger(__name__)


class ShellWord(str):
    """A word the shell expands (``$CK``, ``$(ls ...)``): rendered as is, never quoted."""


class StageInputs(Protocol):
    """What a stage's commands refer to: real paths for the runner, shell words for :func:`shell_lines`."""

    @property
    def spec(self) -> RunSpec:
        """The run."""

    @property
    def grid(self) -> Grid:
        """Its grid."""

    @property
    def run_dir(self) -> Path:
        """The run folder."""

    @property
    def fit_config(self) -> str:
        """The resolved config fit saved."""

    @property
    def config(self) -> str:
        """``model_config.yaml``."""

    @property
    def ckpt(self) -> str:
        """The checkpoint to evaluate."""


@dataclass(frozen=True)
class ShellInputs:
    """:class:`StageInputs` of a shell line: the config and checkpoint are found by the shell when it runs."""

    spec: RunSpec
    grid: Grid
    run_dir: Path
    fit_config: str
    config: str = ShellWord("$CFG")
    ckpt: str = ShellWord("$CK")


# ------------------------------------------------------------------------------------------------ commands
def python_command(args: Sequence[str]) -> list[str]:
    """``python -m notellm2_pl ARGS`` with this interpreter."""
    return [sys.executable, "-m", "notellm2_pl", *args]


def prepare_command(line: str) -> list[str]:
    """A ``prepare`` line as argv (a leading ``python`` becomes this interpreter)."""
    argv = shlex.split(line)
    if argv and argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    return argv


def folder_commands(x: StageInputs) -> list[list[str]]:
    """Make the run folder."""
    return [["mkdir", "-p", os.fspath(x.run_dir)]]


def prepare_commands(x: StageInputs) -> list[list[str]]:
    """The run's prepare lines: the grid's, then its recipe's."""
    return [prepare_command(line) for line in x.spec.prepare]


def fit_commands(x: StageInputs) -> list[list[str]]:
    """``fit`` of one run: base + recipe configs, overrides, seed, and the run folder."""
    args = ["fit"]
    for c in x.spec.configs:
        args += ["--config", c]
    args += [*x.spec.overrides, "--seed_everything", str(x.spec.seed), "--data.seed", str(x.spec.seed),
             "--trainer.default_root_dir", os.fspath(x.run_dir)]
    return [python_command(args)]


def model_config_commands(x: StageInputs) -> list[list[str]]:
    """``ablate model-config``: the model and data sections of fit's config."""
    return [python_command(["ablate", "model-config", x.fit_config, os.fspath(x.run_dir / MODEL_CONFIG)])]


def save_untrained_commands(x: StageInputs) -> list[list[str]]:
    """``ablate save-untrained``: the recipe's freshly built model as the checkpoint."""
    return [python_command(["ablate", "save-untrained", "--config", x.config, "--out", x.ckpt])]


def evaluate_commands(x: StageInputs) -> list[list[str]]:
    """``evaluate`` of the checkpoint with the three probes; results in ``run_dir/eval``."""
    return [python_command(["evaluate", "--ckpt_path", x.ckpt, "--config", x.config, "--out",
                            os.fspath(x.run_dir / "eval"), "--probes", ",".join(PROBES), *x.grid.evaluate_args])]


def saliency_commands(x: StageInputs) -> list[list[str]]:
    """``saliency`` of the checkpoint; results in ``run_dir/saliency``."""
    return [python_command(["saliency", "--ckpt_path", x.ckpt, "--config", x.config, "--num_batches",
                            str(x.grid.saliency_batches), "--out", os.fspath(x.run_dir / "saliency"), "--label",
                            x.spec.run.name, *x.grid.saliency_args])]


# ------------------------------------------------------------------------------------------------ runner-side actions
def fresh_folder(f: RunFolder) -> None:
    """Clear an unfinished run folder (no evaluation results) and make it afresh."""
    if f.run_dir.exists():
        log.info("%s: clearing an unfinished run folder.", f.spec.run_id)
        shutil.rmtree(f.run_dir)
    f.run_dir.mkdir(parents=True)


def local_model_config(f: RunFolder) -> None:
    """The ``model-config`` stage in-process."""
    write_model_config(f.fit_config, f.config)


def has_model_config(f: RunFolder) -> bool:
    """Done-check of ``model-config``."""
    return Path(f.config).exists()


def has_checkpoint(f: RunFolder) -> bool:
    """Done-check of ``checkpoint``: fit saved one, or the untrained model was saved."""
    return Path(f.ckpt).exists()


def has_saliency(f: RunFolder) -> bool:
    """Done-check of ``saliency``."""
    return f.saliency_json.exists()


def evaluated(f: RunFolder) -> bool:
    """Done-check of ``folder``, ``prepare``, ``fit`` and ``evaluate``: a folder with results is only collected."""
    return f.evaluated()


def fit_left_config(f: RunFolder) -> str | None:
    """After ``fit``: an error message when fit wrote no config."""
    if find_config(f.run_dir) is None:
        return (f"fit wrote no config.yaml under {f.run_dir} (the recipe must log with TensorBoardLogger under "
                "trainer.default_root_dir, like the ablation bases).")
    return None


def wants_saliency(grid: Grid, cfg: Mapping[str, Any]) -> bool:
    """Whether the saliency stage applies: the grid asks for it and the model has visual tokens."""
    return grid.saliency_batches > 0 and has_visual_tokens(cfg)


# ------------------------------------------------------------------------------------------------ the stages
@dataclass(frozen=True)
class Stage:
    """One step of a run.

    Attributes:
        name: Stage name (log messages).
        commands: The commands of the stage (each run in turn; the shell chains them).
        done: Runner: whether the stage's output is already in the run folder (then it is skipped).
        log: Log file in the run folder the commands write to (None: no log).
        log_in_shell: Whether the shell line redirects to ``log`` too.
        local: Runner: an in-process action used instead of ``commands`` (these run even when only collecting).
        required: A failure fails the run (else it is logged and the run still counts; the shell goes on).
        applies: Whether the stage applies, from the grid and the run's config (None: always).
        check: Runner, after the stage: an error message when its output is missing (fails the run).
        shell: Custom shell rendering (None: the commands, with the log redirect).
    """

    name: str
    commands: Callable[[StageInputs], list[list[str]]]
    done: Callable[[RunFolder], bool]
    log: str | None = None
    log_in_shell: bool = True
    local: Callable[[RunFolder], None] | None = None
    required: bool = True
    applies: Callable[[Grid, Mapping[str, Any]], bool] | None = None
    check: Callable[[RunFolder], str | None] | None = None
    shell: Callable[[Stage, ShellInputs], list[str]] | None = None


def render(argv: Sequence[str]) -> str:
    """One argv as shell text: ``python`` for this interpreter, :class:`ShellWord` as is, the rest quoted."""
    words = ("python" if a == sys.executable else a for a in argv)
    return " ".join(a if isinstance(a, ShellWord) else shlex.quote(a) for a in words)


def stage_shell(stage: Stage, x: ShellInputs) -> list[str]:
    """Default shell rendering of a stage: its commands, redirected to its log, optional ones never failing."""
    q = shlex.quote
    redirect = f" > {q(os.fspath(x.run_dir / stage.log))} 2>&1" if stage.log and stage.log_in_shell else ""
    lines = [render(cmd) + redirect for cmd in stage.commands(x)]
    return lines if stage.required else [f"{{ {line} || true; }}" for line in lines]


def model_config_shell(stage: Stage, x: ShellInputs) -> list[str]:
    """``model-config``, then ``CFG`` names it for the later stages."""
    return [*stage_shell(stage, x), f"CFG={shlex.quote(os.fspath(x.run_dir / MODEL_CONFIG))}"]


def checkpoint_shell(stage: Stage, x: ShellInputs) -> list[str]:
    """``CK``: the first checkpoint of :data:`CHECKPOINT_NAMES` fit saved, else the saved untrained model."""
    ck = f"{shlex.quote(os.fspath(x.run_dir))}/{CHECKPOINTS}"
    best, last, untrained = CHECKPOINT_NAMES
    save = "; ".join(render(cmd) for cmd in stage.commands(x))
    return [f"CK={ck}/{best}", f"{{ [ -f $CK ] || CK={ck}/{last}; }}",
            f"{{ [ -f $CK ] || {{ CK={ck}/{untrained}; {save}; }}; }}"]


STAGES: tuple[Stage, ...] = (
    Stage("folder", folder_commands, evaluated, local=fresh_folder),
    Stage("prepare", prepare_commands, evaluated, log="prepare.log", log_in_shell=False),
    Stage("fit", fit_commands, evaluated, log="fit.log", check=fit_left_config),
    Stage("model-config", model_config_commands, has_model_config, local=local_model_config,
          shell=model_config_shell),
    Stage("checkpoint", save_untrained_commands, has_checkpoint, log="fit.log", shell=checkpoint_shell),
    Stage("evaluate", evaluate_commands, evaluated, log="eval.log"),
    Stage("saliency", saliency_commands, has_saliency, log="saliency.log", required=False, applies=wants_saliency),
)
"""The pipeline of one run, in order (module docstring)."""


def shell_lines(specs: Sequence[RunSpec], out_dir: Path, grid: Grid) -> list[str]:
    """One self-contained shell line per run (for sbatch --wrap / a job array): :data:`STAGES` in the shell.

    Args:
        specs: The runs.
        out_dir: The grid's output folder.
        grid: The grid.

    Returns:
        ``# <run id>`` and the run's stages joined by ``&&``, per run.
    """
    lines = []
    for spec in specs:
        d = out_dir / spec.run_id
        fit_config = ShellWord(f"$(ls -t {shlex.quote(os.fspath(d))}/tb/version_*/config.yaml | head -1)")
        x = ShellInputs(spec, grid, d, fit_config)
        cfg = merged_yaml(spec.configs)
        steps = [line for stage in STAGES if stage.applies is None or stage.applies(grid, cfg)
                 for line in (stage.shell or stage_shell)(stage, x)]
        lines.append(f"# {spec.run_id}\n" + " && ".join(steps))
    return lines
