"""Running an ablation grid: each run's :data:`~notellm2_pl.analysis.pipeline.STAGES` whose done-check fails.

A run with a marker (``done.json``) is never retrained (resume = run the same command again; if its recipe files'
content changed since it finished, a warning says so and names the folder to delete); a run folder without one is
cleared and redone, except that a run whose evaluation results already exist (e.g. from ``--print-commands`` jobs on
a cluster) is only collected. Runs finished in other output folders of the same grid (``--reuse``) count as done:
they are reported with the others and never retrained.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from notellm2_pl.analysis.grid import Grid, RunSpec
from notellm2_pl.analysis.pipeline import STAGES, Stage
from notellm2_pl.analysis.records import build_record
from notellm2_pl.analysis.run_folder import MARKER, RunFolder
from notellm2_pl.atomic import atomic_write_text

log = logging.getLogger(__name__)

Runner = Callable[[list[str], Path], int]
"""Runs one command (argv), writing its output to the log file; returns the exit code."""


def subprocess_runner(cmd: list[str], log_path: Path) -> int:
    """Default runner: the command in a subprocess (working directory: here), output appended to ``log_path``.

    Args:
        cmd: The argv.
        log_path: Log file (created with its folder; the command line is written first).

    Returns:
        The exit code.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "a", encoding="utf-8") as f:
        f.write(f"$ {shlex.join(cmd)}\n")
        f.flush()
        return subprocess.run(cmd, check=False, stdout=f, stderr=subprocess.STDOUT, env=env).returncode


def find_finished(spec: RunSpec, folders: Sequence[Path]) -> Path | None:
    """The marker of ``spec``'s finished run in the first of ``folders`` that holds one, else None."""
    for folder in folders:
        marker = Path(folder) / spec.run_id / MARKER
        if marker.exists():
            return marker
    return None


def _finished_record(spec: RunSpec, marker: Path) -> dict[str, Any]:
    """The record of a finished run, warning when its recipe files changed since."""
    log.info("%s: done, skipping (delete %s to redo it).", spec.run_id, marker)
    done = json.loads(marker.read_text(encoding="utf-8"))
    if done.get("recipe_sha", spec.recipe_sha) != spec.recipe_sha:
        log.warning("%s: its recipe files changed since it finished; the finished run is kept. Delete %s to "
                    "redo it with the current recipe.", spec.run_id, marker.parent)
    return done


def _execute(stage: Stage, folder: RunFolder, runner: Runner) -> bool:
    """Run one stage (its in-process action, else its commands in turn); whether it succeeded."""
    if stage.local is not None:
        stage.local(folder)
        return True
    log.info("%s: %s", folder.spec.run_id, stage.name)
    log_path = folder.run_dir / (stage.log or f"{stage.name}.log")
    for cmd in stage.commands(folder):
        if runner(cmd, log_path) != 0:
            if stage.required:
                log.error("%s: %s failed; see %s", folder.spec.run_id, stage.name, log_path)
                return False
            log.warning("%s: %s failed (the run still counts); see %s", folder.spec.run_id, stage.name, log_path)
            return True
    return True


def run_stage(stage: Stage, folder: RunFolder, runner: Runner, collect_only: bool = False) -> bool:
    """Run one stage of a run unless it does not apply or is done; False when the run cannot go on.

    Args:
        stage: The stage.
        folder: The run's folder.
        runner: Executes each command.
        collect_only: Run no commands (in-process stages still run).
    """
    if stage.applies is not None and not stage.applies(folder.grid, folder.resolved_config()):
        return True
    runs = not stage.done(folder) and not (collect_only and stage.local is None)  # collecting runs no commands
    if runs and not _execute(stage, folder, runner):
        return False
    problem = stage.check(folder) if stage.check is not None else None
    if problem:
        log.error("%s: %s", folder.spec.run_id, problem)
        return False
    return True


def run_one(spec: RunSpec, out_dir: Path, grid: Grid, runner: Runner = subprocess_runner,
            collect_only: bool = False, reuse: Sequence[Path] = ()) -> dict[str, Any] | None:
    """Run (or resume / collect) one spec; returns its record, or None when a stage failed (logged).

    Args:
        spec: The run.
        out_dir: The grid's output folder.
        grid: The grid (evaluate / saliency settings).
        runner: Executes each command (default: a subprocess with output in the run folder's logs).
        collect_only: Run nothing; only finalise a run whose evaluation results exist (cluster jobs).
        reuse: Other output folders of the same grid: a run finished in one of them is not retrained; its record
            (which points to its folder there) is returned as is.
    """
    finished = find_finished(spec, [out_dir, *reuse])
    if finished is not None:
        return _finished_record(spec, finished)
    folder = RunFolder(spec, grid, out_dir / spec.run_id)
    if collect_only and not folder.collectable():
        return None
    t0 = time.time()
    for stage in STAGES:
        if not run_stage(stage, folder, runner, collect_only):
            return None
    record = build_record(spec, folder.run_dir, folder.resolved_config(), Path(folder.ckpt), time.time() - t0)
    record["recipe_sha"] = spec.recipe_sha
    atomic_write_text(folder.marker, json.dumps(record, indent=1))
    return record


def run_grid(specs: Sequence[RunSpec], out_dir: Path, grid: Grid, reuse: Sequence[Path] = (),
             collect_only: bool = False, runner: Runner = subprocess_runner,
             on_start: Callable[[int, int, RunSpec], None] | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """Run (or only collect) every spec in turn.

    Args:
        specs: The runs.
        out_dir: The grid's output folder.
        grid: The grid.
        reuse: Other output folders of the same grid (see :func:`run_one`).
        collect_only: Run nothing; only collect finished runs (``--report-only``).
        runner: Executes each command.
        on_start: Called as ``(i, n, spec)`` before running (not collecting) the i-th of n runs.

    Returns:
        ``(records of the finished runs, run ids of the others)``.
    """
    records, failed = [], []
    for i, spec in enumerate(specs, 1):
        if on_start is not None and not collect_only:
            on_start(i, len(specs), spec)
        rec = run_one(spec, out_dir, grid, runner, collect_only=collect_only, reuse=reuse)
        if rec is None:
            failed.append(spec.run_id)
        else:
            records.append(rec)
    return records, failed
