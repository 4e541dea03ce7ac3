"""``python -m notellm2_pl synth``: generate the synthetic notes benchmark (:mod:`notellm2_pl.data.synthetic`)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict, fields
from pathlib import Path

from notellm2_pl.data.synthetic import PRESETS, SyntheticConfig, ensure_dataset, generate, preset_config


def _field_help() -> dict[str, str]:
    """Per-field help text parsed from the ``Attributes:`` section of :class:`SyntheticConfig`'s docstring."""
    doc = SyntheticConfig.__doc__ or ""
    out: dict[str, str] = {}
    current = None
    for line in doc.split("Attributes:", 1)[-1].splitlines():
        m = re.match(r"^\s{8}(\w+): (.*)$", line)
        if m:
            current = m.group(1)
            out[current] = m.group(2).strip()
        elif current and line.strip():
            out[current] += " " + line.strip()
    return out


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``synth`` command (also used for ``--help``).

    Returns:
        A parser whose options are ``--out``, ``--preset``, ``--overwrite``, ``--exist-ok`` and one per config field.
    """
    p = argparse.ArgumentParser(
        prog="notellm2 synth",
        description="Generate the synthetic notes benchmark (procedural images + generated text, where part of "
                    "the relatedness is visible only in the image) in the canonical dataset layout.",
        epilog="Presets: " + "; ".join(f"{k}: {v.num_clusters} clusters x {v.notes_per_cluster} notes, "
                                       f"{v.image_size}px" for k, v in PRESETS.items())
        + ". Any option below overrides the preset.",
    )
    p.add_argument("--out", required=True, help="output directory (must be empty or absent unless --overwrite)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="demo", help="base settings (default: demo)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing or incomplete dataset in --out")
    p.add_argument("--exist-ok", action="store_true",
                   help="if --out already holds a dataset made with these settings, keep it and exit 0 (a dataset "
                        "made with other settings is still an error); for scripts and ablate prepare steps")
    helps = _field_help()
    defaults = asdict(PRESETS["demo"])
    for f in fields(SyntheticConfig):
        typ = int if f.type in ("int", int) else float
        p.add_argument(f"--{f.name.replace('_', '-')}", type=typ, default=None, metavar=typ.__name__.upper(),
                       help=f"{helps.get(f.name, '')} (demo: {defaults[f.name]})")
    return p


def config_from_args(args: argparse.Namespace) -> SyntheticConfig:
    """Build a config from parsed arguments: the preset, then the explicit overrides.

    Args:
        args: Namespace from :func:`build_parser`.

    Returns:
        The resulting config.
    """
    overrides = {f.name: getattr(args, f.name) for f in fields(SyntheticConfig) if getattr(args, f.name) is not None}
    return preset_config(args.preset, **overrides)


def main(argv: list[str] | None = None) -> int:
    """``notellm2 synth --out DIR [--preset demo] [--seed S] [--overwrite | --exist-ok]``.

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        Exit status: 0 on success, 2 on a bad setting or an existing output directory.
    """
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        if args.exist_ok and not args.overwrite and (Path(args.out) / "dataset.json").exists():
            ensure_dataset(args.out, cfg)  # raises if the stored settings differ
            print(f"{args.out} already holds a synthetic dataset made with these settings; keeping it.")
            return 0
        stats = generate(args.out, cfg, overwrite=args.overwrite)
    except (ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {stats['notes_train'] + stats['notes_test']} notes ({stats['notes_short']} short), "
          f"{stats['pairs_train']} train / {stats['pairs_val']} val / {stats['pairs_test']} test pairs to {args.out} "
          f"in {stats['seconds']:.1f} s")
    print(json.dumps({k: v for k, v in stats.items() if k != "root"}, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
