"""``python -m notellm2_pl validate-data ROOT``: check a dataset the way training loads it
(:mod:`notellm2_pl.data.validation`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from notellm2_pl.atomic import atomic_write_text
from notellm2_pl.data.problems import DataError, LoadReport, describe, severity
from notellm2_pl.data.prompts import TextLimits
from notellm2_pl.data.tables import Split
from notellm2_pl.data.validation import combined_report, seen_notes, validate_dataset

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of ``python -m notellm2_pl validate-data``."""
    p = argparse.ArgumentParser(
        prog="python -m notellm2_pl validate-data",
        description="Check a dataset (canonical or official NoteLLM layout) the way training loads it: every row, "
                    "pair and image, with file and line for each problem. Exit code 0: no errors; 1: errors found.")
    p.add_argument("root", help="dataset directory")
    p.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                   help="raise: stop at the first error (default, like training); skip: list and count them all")
    p.add_argument("--splits", nargs="+", default=["train", "val", "test"], choices=("train", "val", "test"))
    p.add_argument("--no-images", action="store_true", help="do not decode images (text-only models)")
    p.add_argument("--title-chars", type=int, default=20, help="title characters the prompt keeps (default 20)")
    p.add_argument("--content-chars", type=int, default=80, help="content characters the prompt keeps (default 80)")
    p.add_argument("--max-tags", type=int, default=10, help="topics the prompt keeps (default 10)")
    p.add_argument("--workers", type=int, default=4, help="image decoding threads")
    p.add_argument("--list", type=int, default=30, dest="max_list", help="errors listed per code (default 30)")
    p.add_argument("--warnings", action="store_true", help="list warnings like errors (default: 3 per code)")
    p.add_argument("--json", help="also write the full report (counts + problems) to this JSON file")
    return p


def _print_report(splits: dict[str, Split], total: LoadReport, max_list: int, warnings: bool) -> None:
    """Usable notes and pairs per split, the problems (errors up to ``max_list`` per code), then a summary."""
    for name, split in splits.items():
        sizes = ", ".join(f"{k} {len(v)}" for k, v in split.pairs.items())
        print(f"{name}: {len(split.notes)} notes usable; pairs: {sizes}")
    seen = seen_notes(splits)
    if seen is not None:  # the val_notes_seen finding, when it fires, is listed with the warnings below
        print(f"seen in training: {seen.describe()}")
    shown: dict[str, int] = {}
    for p in total.problems:
        shown[p.code] = shown.get(p.code, 0) + 1
        cap = max_list if (severity(p.code) == "error" or warnings) else 3
        if shown[p.code] <= cap:
            print(f"  {severity(p.code).upper():<7} {p}")
    print("Summary (problem: count, severity, action):")
    if not total.counts:
        print("  no problems found")
    for code, n in sorted(total.counts.items()):
        print(f"  {code:<24} {n:>7}  {severity(code):<7}  {describe(code)}")


def main(argv: list[str] | None = None) -> int:
    """``python -m notellm2_pl validate-data ROOT [--on-error skip] ...``.

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        Exit status: 0 without errors, 1 when errors were found (or the layout is unreadable).
    """
    args = build_parser().parse_args(argv)
    limits = TextLimits(args.title_chars, args.content_chars, args.max_tags)
    try:
        splits = validate_dataset(args.root, args.on_error, args.splits, not args.no_images, limits, args.workers)
    except DataError as err:
        print(f"ERROR [{err.code or 'layout'}] {err}", file=sys.stderr)
        return 1
    total = combined_report(splits)
    _print_report(splits, total, args.max_list, args.warnings)
    if args.json:
        atomic_write_text(args.json, json.dumps({k: s.report.to_dict() for k, s in splits.items()}, indent=1))
    log.info("validate-data %s: %s", args.root, total.summary())
    if total.num_errors:
        print(f"{total.num_errors} error(s): these rows/notes/pairs are skipped with --data.on_error skip; fix the "
              f"data to keep them.")
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
