"""``python -m notellm2_pl ablate``: run a named grid of ablation recipes, then tabulate, plot and log them.

Subcommands ``save-untrained`` (zero-shot baselines) and ``model-config`` (the model and data sections of fit's
config) are the pipeline's own steps. The library side is :mod:`notellm2_pl.analysis` (grid, pipeline, runner,
reports); the grid format is in :mod:`notellm2_pl.analysis.grid`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from notellm2_pl.analysis.grid import Grid, RunSpec, load_grid, plan
from notellm2_pl.analysis.pipeline import shell_lines
from notellm2_pl.analysis.reports import write_reports
from notellm2_pl.analysis.run_folder import write_model_config
from notellm2_pl.analysis.runner import find_finished, run_grid

EPILOG = (
    "Examples:\n"
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
    "Grid file format: see recipes/ablations/grids/demo.yml and docs/ablations.md."
)


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of the ``ablate`` command."""
    p = argparse.ArgumentParser(
        prog="python -m notellm2_pl ablate",
        description="Run a grid of ablation recipes (fit -> evaluate with only_image / only_text probes -> "
                    "saliency), resumably, then write summary.md / summary.csv, PNG plots and a TensorBoard log dir "
                    "(HParams tab = ablation table; custom scalars = Recall@K by subset). Arguments after `--` are "
                    "extra fit overrides for every run (they become part of the run names).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--grid", default="quick",
                   help="Built-in grid name (demo, quick, layout, paper) or a grid YAML file.")
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


def save_untrained_main(argv: list[str]) -> int:
    """``ablate save-untrained``: save a recipe's untrained model as a checkpoint."""
    p = argparse.ArgumentParser(prog="python -m notellm2_pl ablate save-untrained",
                                description="Save a recipe's freshly built (untrained) model as a checkpoint, for "
                                            "zero-shot baselines (evaluate / saliency take checkpoints).")
    p.add_argument("--config", action="append", required=True, help="Recipe file(s) or a resolved config.yaml.")
    p.add_argument("--out", required=True, help="Checkpoint path to write.")
    args = p.parse_args(argv)
    # imported here: building a model loads torch and Lightning, which the grid commands do not need
    from notellm2_pl.analysis.untrained import save_untrained

    print(f"Wrote {save_untrained(args.config, args.out)}")
    return 0


def model_config_main(argv: list[str]) -> int:
    """``ablate model-config FIT_CONFIG OUT``: keep the model and data sections of fit's config."""
    if len(argv) != 2:
        print("usage: python -m notellm2_pl ablate model-config FIT_CONFIG.yaml OUT.yaml", file=sys.stderr)
        return 2
    print(f"Wrote {write_model_config(argv[0], argv[1])}")
    return 0


def print_commands(args: argparse.Namespace, grid: Grid, specs: list[RunSpec], out: Path, reuse: list[Path],
                   extra: list[str]) -> None:
    """``--print-commands``: the collect hint, then one shell line per run not finished in a ``--reuse`` folder."""
    todo = [s for s in specs if find_finished(s, reuse) is None]
    print(f"# grid {grid.name}: {len(todo)} runs; afterwards: python -m notellm2_pl ablate --grid {args.grid} "
          f"--out {out}" + (f" --seeds {' '.join(map(str, args.seeds))}" if args.seeds else "")
          + (f" --reuse {shlex.join(args.reuse)}" if reuse else "") + " --report-only"
          + (f" -- {shlex.join(extra)}" if extra else ""))
    print("\n".join(shell_lines(todo, out, grid)))


def list_runs(specs: list[RunSpec], out: Path, reuse: list[Path]) -> None:
    """``--list``: status (todo, done, done in another folder), run id, recipe and overrides of every run."""
    for s in specs:
        found = find_finished(s, [out, *reuse])
        where = None if found is None else found.parent.parent
        status = "todo" if where is None else ("done" if where == out else f"done in {where}")
        print(f"{status:<5} {s.run_id:<40} {s.run.recipe} {shlex.join(s.overrides)}")


def run_and_report(args: argparse.Namespace, grid: Grid, specs: list[RunSpec], out: Path, reuse: list[Path]) -> int:
    """Run (or with ``--report-only`` collect) every run, then write and print the reports."""
    records, failed = run_grid(specs, out, grid, reuse, collect_only=args.report_only,
                               on_start=lambda i, n, spec: print(f"[{i}/{n}] {spec.run_id}", flush=True))
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


def main(argv: list[str] | None = None) -> int:
    """Run ``ablate`` (or its ``save-untrained`` / ``model-config`` subcommands); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "save-untrained":
        return save_untrained_main(argv[1:])
    if argv and argv[0] == "model-config":
        return model_config_main(argv[1:])
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
        print_commands(args, grid, specs, out, reuse, extra)
        return 0
    if args.list:
        list_runs(specs, out, reuse)
        return 0
    return run_and_report(args, grid, specs, out, reuse)
