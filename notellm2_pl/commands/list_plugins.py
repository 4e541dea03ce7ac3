"""``python -m notellm2_pl list``: every registered plugin and the distribution it comes from."""

from __future__ import annotations

import argparse

from notellm2_pl.plugins import registry

HEADER = ("group", "name", "target", "distribution")


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of the ``list`` command (no options)."""
    return argparse.ArgumentParser(prog="python -m notellm2_pl list",
                                   description="Print every plugin: kind, name (usable as class_path), target and "
                                   "distribution.")


def main(argv: list[str] | None = None) -> int:
    """Print one aligned row per plugin; returns 0."""
    build_parser().parse_args(argv)
    rows = [(i.group.split(".")[-1], i.name, i.value, i.distribution) for i in registry.infos()]
    widths = [max(len(r[c]) for r in [*rows, HEADER]) for c in range(len(HEADER))]
    for row in [HEADER, *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
    return 0
