"""Data validation: image checks at load time, and whole-dataset checks for ``validate-data``.

Rows and pairs are checked by :func:`notellm2_pl.data.tables.load_split`; this module adds the image files. The same
functions run at load time (``NoteDataModule.setup``) and in ``python -m notellm2_pl validate-data ROOT``
(:mod:`notellm2_pl.commands.validate_data`), so what the command reports is exactly what training would do.

Whole-dataset finding: ``val_notes_seen`` when the validation pairs reuse training notes while the test is cold-start
(:func:`seen_notes`, docs/data.md#validation-on-unseen-notes); it drops nothing.

Image behaviour (mode handling: :mod:`notellm2_pl.data.images`; docs/data.md has the full table): converted modes
are counted as the ``image_converted`` warning, with the original mode. A missing file is ``missing_image``,
undecodable bytes ``bad_image``, an unconvertible mode ``unsupported_image_mode``, and a note with no image entry
(when the model has a vision tower) ``no_image``. Errors raise :class:`~notellm2_pl.data.problems.DataError` or,
with ``on_error="skip"``, skip the note and the pairs that name it (all counted). A bad image is never replaced by a
blank one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from notellm2_pl.data.images import decode_image
from notellm2_pl.data.problems import DataError, LoadReport, OnError, Problem, describe, severity
from notellm2_pl.data.prompts import TextLimits
from notellm2_pl.data.schema import ALL_PAIRS, SPLITS
from notellm2_pl.data.tables import Split, load_split
from notellm2_pl.data.val_split import SeenNotes, measure_seen

log = logging.getLogger(__name__)

ImageCheck = tuple[str | None, str]
"""(problem code or None, detail) of one image path."""


def _probe(path: str | None) -> ImageCheck:
    """(problem code or None, detail) for one image path; conversions give ``image_converted``."""
    if path is None:
        return "no_image", ""
    try:
        _, converted = decode_image(path)
    except DataError as err:
        return err.code or "bad_image", str(err).split(". ")[0]
    return ("image_converted", f"mode {converted}") if converted else (None, "")


def check_images(split: Split, on_error: OnError = "raise", workers: int = 4,
                 cache: dict[str | None, ImageCheck] | None = None) -> None:
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


def validate_dataset(root: str | Path, on_error: OnError = "skip", splits: Sequence[str] = SPLITS,
                     images: bool = True, limits: TextLimits | None = None, workers: int = 4) -> dict[str, Split]:
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
    limits = TextLimits() if limits is None else limits
    cache: dict[str | None, ImageCheck] = {}
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
    finding = seen_notes_finding(out)
    if finding is not None:
        out["val"].report.record(finding)
    return out


def seen_notes(splits: dict[str, Split]) -> SeenNotes | None:
    """How many validation and test notes appear in training pairs (None without train, val and test splits)."""
    if not {"train", "val", "test"} <= splits.keys():
        return None
    test = splits["test"]
    return measure_seen(splits["train"].pairs[ALL_PAIRS], splits["val"].pairs[ALL_PAIRS],
                        test.pairs.get(ALL_PAIRS, []), test.notes)


def seen_notes_finding(splits: dict[str, Split]) -> Problem | None:
    """The ``val_notes_seen`` warning, with the numbers, when validation ranks seen notes for a cold-start test."""
    seen = seen_notes(splits)
    if seen is None or not seen.mismatch:
        return None
    where = "note_pairs_val" if splits["val"].layout == "official" else "pairs_val"
    return Problem("val_notes_seen", where, None,
                   f"{seen.describe()}. Training validates on a note-disjoint split carved from the training pairs "
                   f"by default (--data.val_split auto); --data.val_split given keeps these pairs", "kept")


def combined_report(splits: dict[str, Split]) -> LoadReport:
    """One report over several splits, each problem once (train and val share the notes table)."""
    total, seen = LoadReport(), set()
    for split in splits.values():
        for p in split.report.problems:
            if p not in seen:
                seen.add(p)
                total.record(p)
    return total
