"""Command line: ``python -m notellm2_pl <command>``, a thin dispatcher.

Lightning commands (``fit``, ``validate``, ``test``, ``predict``) go to :mod:`notellm2_pl.commands.lightning`
(a LightningCLI). Other commands are plain functions taking ``argv`` (:data:`EXTRA_COMMANDS`); run any of them
with ``--help``. Command modules are imported only when their command runs, so ``--help`` stays fast.

Pretrained weights that cannot be had (:class:`~notellm2_pl.plugins.hub.WeightsUnavailable`: a hub id neither cached
nor downloadable) end any command with the error's own message, which says what to do, and exit code 2: no stack
trace.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import sys
from collections.abc import Callable

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
LIGHTNING_TARGET = "notellm2_pl.commands.lightning:main"  # takes the command and its arguments (None: sys.argv)

# name -> ("module:function", one-line help). Each function takes argv (list[str]) and returns an exit code.
EXTRA_COMMANDS: dict[str, tuple[str, str]] = {
    "list": ("notellm2_pl.commands.list_plugins:main",
             "list every registered plugin and the distribution it comes from"),
    "synth": ("notellm2_pl.commands.synth:main",
              "generate the synthetic notes benchmark"),
    "pretrain-text": ("notellm2_pl.commands.pretrain_text:main",
                      "give a tiny LLM text priors (causal LM on a dataset's text)"),
    "validate-data": ("notellm2_pl.commands.validate_data:main",
                      "check a dataset's rows, pairs and images (file:line)"),
    "evaluate": ("notellm2_pl.commands.evaluate:main",
                 "exact Recall@K of embeddings or a model, all subsets + probes"),
    "export": ("notellm2_pl.commands.export:main",
               "export a checkpoint to a self-contained model directory"),
    "index": ("notellm2_pl.commands.index:main",
              "build a FAISS index over saved embeddings"),
    "search": ("notellm2_pl.commands.search:main",
               "top-k I2I neighbours of note ids or of a new note"),
    "serve": ("notellm2_pl.commands.serve:main",
              "HTTP endpoint (LitServe): /embed, /neighbours, /notes over a live index"),
    "ablate": ("notellm2_pl.commands.ablate:main",
               "run a grid of ablation recipes (resumable); table, plots, TensorBoard"),
    "evidence": ("notellm2_pl.commands.evidence:main",
                 "commit a grid's result files under results/ and render the docs tables from them"),
    "saliency": ("notellm2_pl.commands.saliency:main",
                 "information-flow saliency S_v/S_t/S_o per layer (docs/method.md#saliency)"),
    "prepare": ("notellm2_pl.commands.prepare:main",
                "write a dataset into litdata chunks for streaming (data.streaming)"),
    "mine-pairs": ("notellm2_pl.commands.mine_pairs:main",
                   "related-note pairs from behaviour logs (co-occurrence; DuckDB or Spark)"),
    "neighbours": ("notellm2_pl.commands.neighbours:main",
                   "every note's top-k neighbours as a sharded Parquet table (resumable, incremental)"),
    "gallery": ("notellm2_pl.commands.gallery:main",
                "queries and their top-k neighbours as a PNG sheet + HTML page; TensorBoard projector"),
}


def _load(target: str) -> Callable[[list[str]], int]:
    module, _, fn = target.partition(":")
    return getattr(importlib.import_module(module), fn)


def _run(target: str, argv: list[str] | None) -> int:
    """Run one command; weights that cannot be had end it with their message on stderr and exit code 2."""
    command = _load(target)
    # imported after the command module (which imports torch anyway), so that `--help` stays fast
    from notellm2_pl.plugins.hub import WeightsUnavailable

    try:
        return int(command(argv) or 0)
    except WeightsUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


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
        return _run(EXTRA_COMMANDS[cmd][0], rest)
    if cmd in LIGHTNING_COMMANDS:
        return _run(LIGHTNING_TARGET, None if from_sys_argv else argv)
    close = difflib.get_close_matches(cmd, list(LIGHTNING_COMMANDS) + list(EXTRA_COMMANDS), n=1)
    print(f"Unknown command {cmd!r}." + (f" Did you mean {close[0]!r}?" if close else "") + "\n\n" + _usage(),
          file=sys.stderr)
    return 2
