"""The Lightning commands (``fit``, ``validate``, ``test``, ``predict``): a LightningCLI for notellm2_pl.

:class:`NoteLLM2CLI` runs in ``omegaconf+`` mode (recipes may interpolate, and command-line overrides re-resolve
them). Plugins are loaded before parsing, so ``class_path: HFCausalLM`` works as well as the full import path.
"""

from __future__ import annotations

import sys
from typing import Any

import lightning as L
from lightning.pytorch.cli import LightningCLI

from notellm2_pl import registry
from notellm2_pl.commands.config_check import preflight
from notellm2_pl.data.datamodule import NoteDataModule
from notellm2_pl.inference.factory import record_backbones, register_resolvers
from notellm2_pl.training.module import NoteLLM2Module


class NoteLLM2CLI(LightningCLI):
    """LightningCLI for notellm2_pl: NoteLLM2Module + NoteDataModule, TensorBoard by default."""

    def add_arguments_to_parser(self, parser: Any) -> None:
        """TensorBoard logging under ``runs/`` unless the recipe names another logger."""
        parser.set_defaults({"trainer.logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                                                "init_args": {"save_dir": "runs", "name": "default"}}})

    def after_instantiate_classes(self) -> None:
        """Record the backbones' class paths and init args in the module, so checkpoints rebuild without the recipe.

        (Lightning drops the ``llm`` / ``vision`` / ``connector`` entries that the module's ``save_hyperparameters``
        ignores, also from the config the CLI hands it.)
        """
        self._dump_config()  # the resolved config as plain dicts (Lightning's own; a no-op once made)
        record_backbones(self.model, self.config_dump["model"])

    def after_fit(self) -> None:
        """Print the validation metrics."""
        print_val_metrics(self.trainer)

    def after_validate(self) -> None:
        """Print the validation metrics."""
        print_val_metrics(self.trainer)


def print_val_metrics(trainer: L.Trainer) -> None:
    """Print the ``val/*`` metrics of the last validation (rank zero only)."""
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    if trainer.is_global_zero and metrics:
        print("Validation (pool = val-pair notes + val_pool_extra other notes):")
        for k in sorted(metrics):
            print(f"  {k:<20} {metrics[k]:.4f}")


def build_cli(argv: list[str] | None, run: bool = True) -> NoteLLM2CLI:
    """Build (and by default run) the LightningCLI with plugins loaded, so short class names resolve.

    Args:
        argv: The command and its arguments (``["fit", "--config", ...]``); None: ``sys.argv``.
        run: Run the subcommand; False only parses and instantiates (``argv`` then has no subcommand).
    """
    registry.load_all()
    register_resolvers()
    return NoteLLM2CLI(NoteLLM2Module, NoteDataModule, args=argv, run=run,
                       parser_kwargs={"parser_mode": "omegaconf+"}, save_config_kwargs={"overwrite": True},
                       auto_configure_optimizers=False)


def main(argv: list[str] | None = None) -> int:
    """Run a Lightning command after checking its recipes and overrides; returns the exit code.

    Args:
        argv: The command and its arguments (``["fit", "--config", ...]``); None: ``sys.argv[1:]``.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    problem = preflight(args[1:])  # config errors in the user's words, before jsonargparse's own
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    build_cli(argv)  # None: LightningCLI reads sys.argv itself (no double-args warning)
    return 0
