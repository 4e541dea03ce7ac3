"""``python -m notellm2_pl prepare``: write a dataset into litdata optimized chunks for streaming
(:mod:`notellm2_pl.data.streaming`)."""

from __future__ import annotations

import argparse
import json
import sys

from notellm2_pl.data.problems import DataError
from notellm2_pl.data.streaming.prepare import PrepareOptions, prepare


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``prepare`` command."""
    p = argparse.ArgumentParser(
        prog="notellm2 prepare",
        description="Write a dataset (canonical or official NoteLLM layout) into litdata optimized chunks: notes "
                    "(text fields and image bytes) and pairs, for training, evaluating and predicting with "
                    "--data.streaming OUT when the catalogue does not fit in memory (docs/data.md, Streaming data).")
    p.add_argument("root", help="dataset directory")
    p.add_argument("out", help="output folder, or an object-store URL (s3://bucket/prefix; needs credentials and "
                               "litdata's / fsspec's cloud extras)")
    p.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                   help="bad rows and images: raise (default) or skip and count, as --data.on_error")
    p.add_argument("--no-check-images", action="store_true",
                   help="do not decode every image before writing (a bad image then fails in training)")
    p.add_argument("--pair-seed", type=int, default=0,
                   help="training pairs are written in a permutation drawn with this seed, so litdata's chunk-local "
                        "shuffle mixes pairs the pair file lists together (default 0)")
    p.add_argument("--keep-pair-order", action="store_true", help="write training pairs in file order instead")
    p.add_argument("--chunk-bytes", default="64MB", help="target chunk size (default 64MB)")
    p.add_argument("--num-workers", type=int, default=1, help="writer processes for a URL (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    return p


def main(argv: list[str] | None = None) -> int:
    """``notellm2 prepare ROOT OUT [--overwrite] ...``.

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        0 on success, 2 on bad data or a non-empty output folder.
    """
    args = build_parser().parse_args(argv)
    opts = PrepareOptions(on_error=args.on_error, check_images=not args.no_check_images,
                          pair_seed=None if args.keep_pair_order else args.pair_seed, chunk_bytes=args.chunk_bytes,
                          num_workers=args.num_workers, overwrite=args.overwrite)
    try:
        manifest = prepare(args.root, args.out, opts)
    except (DataError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"prepared {args.root} -> {args.out} in {manifest['seconds']:.1f} s")
    print(json.dumps(manifest["counts"], indent=2))
    return 0
