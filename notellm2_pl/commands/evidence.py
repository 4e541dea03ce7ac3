"""``python -m notellm2_pl evidence``: commit what a grid produced, and render the docs tables from it.

    python -m notellm2_pl evidence collect runs/ablations/weak_image results/ablations/weak_image \\
        --command "python -m notellm2_pl ablate --grid weak_image"
    python -m notellm2_pl evidence single runs/demo/eval runs/demo results/demo --name demo \\
        --command "bash scripts/demo.sh; python -m notellm2_pl evaluate ... --out runs/demo/eval"
    python -m notellm2_pl evidence render            # rewrite the marked blocks of docs/*.md and README.md
    python -m notellm2_pl evidence render --check    # exit 1 when a doc differs from its evidence (the tests do this)

The library side is :mod:`notellm2_pl.analysis.evidence`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from notellm2_pl.analysis.evidence import collect, collect_single, render_docs


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of the ``evidence`` command."""
    p = argparse.ArgumentParser(prog="python -m notellm2_pl evidence", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True)
    c = sub.add_parser("collect", help="copy a finished grid's summaries, per-run results and records, provenance")
    c.add_argument("grid_out", type=Path, help="The grid's output folder (runs/ablations/NAME).")
    c.add_argument("dest", type=Path, help="Evidence folder in the repository (results/ablations/NAME).")
    c.add_argument("--command", required=True, help="The command that produced the grid, as a user types it.")
    o = sub.add_parser("single", help="one run outside a grid: results.json, its table, validation curve, provenance")
    o.add_argument("eval_dir", type=Path, help="evaluate's --out folder (holds results.json).")
    o.add_argument("log_dir", type=Path, help="The run's TensorBoard folder holding version_* (e.g. runs/demo).")
    o.add_argument("dest", type=Path, help="Evidence folder in the repository (results/NAME).")
    o.add_argument("--name", required=True, help="Row label of the table (e.g. demo).")
    o.add_argument("--command", required=True, help="The commands that produced the run, as a user types them.")
    r = sub.add_parser("render", help="rewrite the docs' marked blocks from the evidence files")
    r.add_argument("--check", action="store_true", help="Change nothing; exit 1 when a doc is out of date.")
    r.add_argument("--root", type=Path, default=Path("."), help="Repository root (default: the current folder).")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``evidence``; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.action == "collect":
        files = collect(args.grid_out, args.dest, args.command)
        print(f"Wrote {len(files)} files under {args.dest}; next: python -m notellm2_pl evidence render")
        return 0
    if args.action == "single":
        files = collect_single(args.eval_dir, args.log_dir, args.dest, args.command, args.name)
        print(f"Wrote {len(files)} files under {args.dest}; next: python -m notellm2_pl evidence render")
        return 0
    docs = sorted((args.root / "docs").glob("*.md")) + [args.root / "README.md"]
    changed = render_docs(docs, args.root, write=not args.check)
    for doc in changed:
        print(("out of date: " if args.check else "rendered: ") + str(doc))
    if args.check and changed:
        print("Run `python -m notellm2_pl evidence render` and commit the docs with their evidence.")
        return 1
    return 0
