"""Data validation: image decoding with defined mode handling, image checks at load time, and ``validate-data``.

Rows and pairs are checked by :func:`notellm2_pl.data.tables.load_split`; this module adds the image files and the
command line. The same functions run at load time (``NoteDataModule.setup``) and in
``python -m notellm2_pl validate-data ROOT``, so what the command reports is exactly what training would do.

Image behaviour (docs/data.md has the full table):

* RGB, L (grayscale), 1 (bilevel): decoded as is (grayscale replicated to RGB). Not reported.
* CMYK, YCbCr, palette (P), alpha (RGBA, LA, PA, ...), 16/32-bit integer grayscale (I;16*, I): converted to RGB and
  counted as the ``image_converted`` warning, with the original mode. Alpha is flattened onto white; integer
  grayscale is rescaled from its 16-bit range to 8 bits (a plain ``convert`` would clip it to white).
* Float (F) and any mode PIL cannot convert: ``unsupported_image_mode`` error.
* Missing file: ``missing_image``; undecodable, truncated or random bytes: ``bad_image``; a note with no image
  entry (when the model has a vision tower): ``no_image``. Errors raise :class:`DataError` or, with
  ``on_error="skip"``, skip the note and the pairs that name it (all counted). A bad image is never replaced by a
  blank one.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from notellm2_pl.data.tables import DataError, LoadReport, OnError, Problem, Split, describe, load_split, severity

log = logging.getLogger(__name__)

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_INT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}
_PLAIN_MODES = {"RGB", "L", "1"}


def decode_image(path: str | Path) -> tuple[Any, str | None]:
    """Decode an image file to an RGB ``PIL.Image`` with the module's defined mode handling.

    Args:
        path: Image file.

    Returns:
        (RGB image, original mode if it was converted with a counted warning, else None).

    Raises:
        DataError: ``missing_image``, ``bad_image`` or ``unsupported_image_mode`` (see ``err.code``); the message
            names the file and what to do.
    """
    from PIL import Image

    hint = ("Fix or remove the file, or pass --data.on_error skip to skip (and count) notes with bad images; "
            "`python -m notellm2_pl validate-data ROOT --on-error skip` lists them all.")
    if not os.path.isfile(path):
        raise DataError(f"Image file not found: {path}. {hint}", code="missing_image", where=str(path))
    try:
        with Image.open(path) as img:
            img.load()
            return _to_rgb(img)
    except DataError:
        raise
    except Exception as err:  # decoders raise many exception types on hostile bytes
        raise DataError(f"Cannot decode image {path} ({type(err).__name__}: {err}). {hint}", code="bad_image",
                        where=str(path)) from err


def _to_rgb(img: Any) -> tuple[Any, str | None]:
    from PIL import Image

    mode = img.mode
    if mode == "RGB":
        return img.copy(), None
    if mode in _PLAIN_MODES:
        return img.convert("RGB"), None
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "P+transparency"
    if img.mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat, mode
    if mode in _INT_MODES:
        import numpy as np

        arr = np.asarray(img).astype(np.float64)
        arr = np.clip(np.round(arr / 257.0), 0, 255).astype(np.uint8)  # 16-bit range -> 8 bits
        return Image.fromarray(arr, "L").convert("RGB"), mode
    if mode == "F":
        raise DataError(f"Image mode F (32-bit float) has no defined RGB conversion ({img.filename or 'image'}). "
                        f"Save it as 8-bit RGB.", code="unsupported_image_mode")
    try:
        return img.convert("RGB"), mode
    except (ValueError, OSError) as err:
        raise DataError(f"Image mode {mode} cannot be converted to RGB ({err}). Save it as 8-bit RGB.",
                        code="unsupported_image_mode") from err


def _probe(path: str | None) -> tuple[str | None, str]:
    """(problem code or None, detail) for one image path; conversions give ``image_converted``."""
    if path is None:
        return "no_image", ""
    try:
        _, converted = decode_image(path)
    except DataError as err:
        return err.code or "bad_image", str(err).split(". ")[0]
    return ("image_converted", f"mode {converted}") if converted else (None, "")


def check_images(split: Split, on_error: OnError = "raise", workers: int = 4,
                 cache: dict[str | None, tuple[str | None, str]] | None = None) -> None:
    """Decode every note's image once; report problems in ``split.report`` (file:line of the note, and the path).

    Under ``on_error="skip"``, notes with an error-severity image problem are removed from ``split.notes`` and
    every pair naming them is dropped (``pair_of_skipped_note``, counted).

    Args:
        split: A loaded split (modified in place).
        on_error: ``raise``: the first bad image (in table order) raises :class:`DataError`. ``skip``: skip, count.
        workers: Decoding threads.
        cache: Optional ``path -> result`` memo shared between splits that share a notes table.

    Raises:
        DataError: ``on_error="raise"`` and a note's image is missing, undecodable or of an unsupported mode.
    """
    cache = {} if cache is None else cache
    notes = list(split.notes.values())
    todo = sorted({n.image for n in notes if n.image not in cache}, key=str)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for path, res in zip(todo, pool.map(_probe, todo)):
            cache[path] = res
    bad: set[str] = set()
    for note in notes:
        code, detail = cache[note.image]
        if code is None:
            continue
        where = split.origin.get(note.note_id, note.note_id)
        detail = f"{note.image}: {detail}" if note.image and detail else (note.image or detail)
        if severity(code) == "error":
            if on_error == "raise":
                raise DataError(f"{describe(code)} at {where} (id {note.note_id}): {detail}. Fix the file, or pass "
                                f"--data.on_error skip to skip and count such notes; `python -m notellm2_pl "
                                f"validate-data ROOT --on-error skip` lists every problem.", code=code, where=where)
            bad.add(note.note_id)
            split.report.record(Problem(code, where, note.note_id, detail, "skipped"))
        else:
            split.report.record(Problem(code, where, note.note_id, detail, "kept"))
    for note_id in bad:
        del split.notes[note_id]
    split.skipped_ids |= bad
    for name, pairs in split.pairs.items():
        kept = []
        for q, t in pairs:
            if q in bad or t in bad:
                split.report.record(Problem("pair_of_skipped_note", f"pairs[{name}]", q if q in bad else t,
                                            f"{q} -> {t}", "dropped"))
            else:
                kept.append((q, t))
        split.pairs[name] = kept
    if bad:
        log.warning("Skipped %d notes with bad images, and their pairs (see the report of this split)", len(bad))


def validate_dataset(root: str | Path, on_error: OnError = "skip", splits: Sequence[str] = ("train", "val", "test"),
                     images: bool = True, limits: Any | None = None, workers: int = 4) -> dict[str, Split]:
    """Load and check the given splits exactly as training would (rows, pairs, then images).

    Args:
        root: Dataset directory (canonical or official layout).
        on_error: ``raise`` (stop at the first problem) or ``skip`` (skip, count and list them all).
        splits: Splits to check; splits whose pair file is absent are skipped with a log line.
        images: Decode every image (needed for models with a vision tower).
        limits: ``TextLimits`` to count text the prompt will cut (default: the method's 20/80/10).
        workers: Image decoding threads.

    Returns:
        Split name -> loaded :class:`Split`, each with its ``report``.
    """
    from notellm2_pl.data.prompts import TextLimits

    limits = TextLimits() if limits is None else limits
    cache: dict[str | None, tuple[str | None, str]] = {}
    out: dict[str, Split] = {}
    for name in splits:
        try:
            split = load_split(root, name, on_error, limits=limits)
        except DataError as err:
            if "Missing pair file" in str(err) and name != "train":
                log.info("%s: no %s split (%s)", root, name, err)
                continue
            raise
        if images:
            check_images(split, on_error, workers, cache)
        out[name] = split
    return out


def combined_report(splits: dict[str, Split]) -> LoadReport:
    """One report over several splits, each problem once (train and val share the notes table)."""
    total, seen = LoadReport(), set()
    for split in splits.values():
        for p in split.report.problems:
            if p not in seen:
                seen.add(p)
                total.record(p)
    return total


# ------------------------------------------------------------------------------------------------------- CLI
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


def cli_main(argv: list[str] | None = None) -> int:
    """``python -m notellm2_pl validate-data ROOT [--on-error skip] ...``; returns the exit code."""
    from notellm2_pl.data.prompts import TextLimits

    args = build_parser().parse_args(argv)
    limits = TextLimits(args.title_chars, args.content_chars, args.max_tags)
    try:
        splits = validate_dataset(args.root, args.on_error, args.splits, not args.no_images, limits, args.workers)
    except DataError as err:
        print(f"ERROR [{err.code or 'layout'}] {err}", file=sys.stderr)
        return 1
    total = combined_report(splits)
    for name, split in splits.items():
        sizes = ", ".join(f"{k} {len(v)}" for k, v in split.pairs.items())
        print(f"{name}: {len(split.notes)} notes usable; pairs: {sizes}")
    shown: dict[str, int] = {}
    for p in total.problems:
        shown[p.code] = shown.get(p.code, 0) + 1
        cap = args.max_list if (severity(p.code) == "error" or args.warnings) else 3
        if shown[p.code] <= cap:
            print(f"  {severity(p.code).upper():<7} {p}")
    print("Summary (problem: count, severity, action):")
    if not total.counts:
        print("  no problems found")
    for code, n in sorted(total.counts.items()):
        print(f"  {code:<24} {n:>7}  {severity(code):<7}  {describe(code)}")
    if args.json:
        from notellm2_pl.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps({k: s.report.to_dict() for k, s in splits.items()}, indent=1))
    log.info("validate-data %s: %s", args.root, total.summary())
    if total.num_errors:
        print(f"{total.num_errors} error(s): these rows/notes/pairs are skipped with --data.on_error skip; fix the "
              f"data to keep them.")
        return 1
    return 0
