"""The folder of one ablation run, ``<out>/<run id>``: where each stage leaves its output.

Layout (what :mod:`notellm2_pl.analysis.pipeline` writes and its done-checks look for)::

    <run id>/
        tb/version_*/config.yaml     the resolved config fit saved (LightningCLI, TensorBoardLogger under the folder)
        model_config.yaml            its model and data sections (what evaluate / saliency / export read)
        checkpoints/{best,last,untrained}.ckpt
        eval/results.json            evaluate's recalls
        saliency/saliency.json       the saliency analysis (models with visual tokens, when the grid asks)
        *.log                        each stage's output
        done.json                    the marker: the run's record, written last
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from notellm2_pl.analysis.grid import Grid, RunSpec
from notellm2_pl.atomic import atomic_write_text

MARKER = "done.json"
MODEL_CONFIG = "model_config.yaml"
CHECKPOINTS = "checkpoints"
CHECKPOINT_NAMES: tuple[str, ...] = ("best.ckpt", "last.ckpt", "untrained.ckpt")
"""Checkpoints a run is evaluated with, in order of preference; the last is the saved untrained model."""


def find_config(run_dir: Path) -> Path | None:
    """The resolved config LightningCLI saved for the run (latest logger version), or None.

    Args:
        run_dir: The run folder.

    Returns:
        The newest ``tb/version_*/config.yaml``, else the newest ``config.yaml`` anywhere under the folder.
    """
    found = sorted(run_dir.glob("tb/version_*/config.yaml"), key=lambda p: p.stat().st_mtime)
    if not found:
        found = sorted(run_dir.rglob("config.yaml"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def find_checkpoint(run_dir: Path) -> Path | None:
    """The first of :data:`CHECKPOINT_NAMES` under ``run_dir/checkpoints`` that exists, or None."""
    for name in CHECKPOINT_NAMES:
        p = run_dir / CHECKPOINTS / name
        if p.exists():
            return p
    return None


def write_model_config(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Keep the ``model`` and ``data`` sections of a resolved config (what evaluate / saliency / export read).

    The config LightningCLI saves for ``fit`` also holds subcommand keys (``ckpt_path``, ``weights_only``...) that the
    model-only parser of ``notellm2_pl.inference.factory`` does not accept.

    Args:
        src: The config fit saved.
        dst: Where to write the model and data sections.

    Returns:
        ``dst``.
    """
    cfg = yaml.safe_load(Path(src).read_text(encoding="utf-8")) or {}
    keep = {k: cfg[k] for k in ("model", "data") if k in cfg}
    atomic_write_text(dst, yaml.safe_dump(keep, sort_keys=False, allow_unicode=True))
    return Path(dst)


@dataclass(frozen=True)
class RunFolder:
    """One run's folder as the runner sees it: the stages' inputs are the files found there.

    Attributes:
        spec: The run.
        grid: Its grid (evaluate / saliency settings).
        run_dir: ``<out>/<run id>``.
    """

    spec: RunSpec
    grid: Grid
    run_dir: Path

    @property
    def results(self) -> Path:
        """``evaluate``'s ``results.json``."""
        return self.run_dir / "eval" / "results.json"

    @property
    def saliency_json(self) -> Path:
        """The saliency result."""
        return self.run_dir / "saliency" / "saliency.json"

    @property
    def marker(self) -> Path:
        """``done.json``: written last, so its presence means the run is finished."""
        return self.run_dir / MARKER

    @property
    def fit_config(self) -> str:
        """The resolved config fit saved (raises ``FileNotFoundError`` before fit wrote one)."""
        found = find_config(self.run_dir)
        if found is None:
            raise FileNotFoundError(f"No config.yaml under {self.run_dir}.")
        return os.fspath(found)

    @property
    def config(self) -> str:
        """``model_config.yaml``: the config evaluate and saliency load."""
        return os.fspath(self.run_dir / MODEL_CONFIG)

    @property
    def ckpt(self) -> str:
        """The checkpoint to evaluate: :func:`find_checkpoint`, else where the untrained model is saved."""
        return os.fspath(find_checkpoint(self.run_dir) or self.run_dir / CHECKPOINTS / CHECKPOINT_NAMES[-1])

    def evaluated(self) -> bool:
        """Whether evaluate's results exist (then the folder is collected, never cleared)."""
        return self.results.exists()

    def collectable(self) -> bool:
        """Whether a run can be finalised without running anything: results, a checkpoint and fit's config exist."""
        return self.evaluated() and find_checkpoint(self.run_dir) is not None and find_config(self.run_dir) is not None

    def resolved_config(self) -> dict[str, Any]:
        """The config fit saved, as a dict."""
        return yaml.safe_load(Path(self.fit_config).read_text(encoding="utf-8")) or {}
