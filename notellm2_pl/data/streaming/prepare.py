"""Writing a dataset into litdata optimized chunks (the ``prepare`` command's library side).

The dataset is read with :func:`~notellm2_pl.data.tables.load_split` (either layout, every row checked) and, by
default, every image is decoded once (:func:`~notellm2_pl.data.validation.check_images`), exactly as
:class:`~notellm2_pl.data.datamodule.NoteDataModule` does at setup, so the prepared data holds the notes and pairs
the in-memory path would serve. The layout is described in :mod:`notellm2_pl.data.streaming`.
"""

from __future__ import annotations

import logging
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from notellm2_pl.data.problems import DataError, LoadReport, OnError
from notellm2_pl.data.schema import ALL_PAIRS, SPLITS
from notellm2_pl.data.streaming.layout import (
    FORMAT,
    MANIFEST,
    NOTE_SPLITS,
    ids_dir,
    is_url,
    note_item,
    note_record,
    notes_dir,
    pairs_dir,
    text_leaf,
    train_pairs_dir,
    write_manifest,
)
from notellm2_pl.data.tables import Split, load_split
from notellm2_pl.data.validation import check_images

log = logging.getLogger(__name__)


@dataclass
class PrepareOptions:
    """Settings of :func:`prepare`.

    Attributes:
        on_error: ``raise`` (default) or ``skip`` (skip and count) bad rows and images, as ``data.on_error``.
        check_images: Decode every image once before writing (as ``data.check_images``).
        pair_seed: Training pairs are written in the order of a ``random.Random(pair_seed)`` permutation, so that
            litdata's chunk-local shuffle still mixes pairs that the pair file lists together (all pairs of one
            query, for instance); None keeps the file order.
        chunk_bytes: Target chunk size (litdata's ``chunk_bytes``, e.g. ``"64MB"``).
        num_workers: Writer processes.
        overwrite: Replace an existing prepared folder (a URL is always written in litdata's overwrite mode).
    """

    on_error: OnError = "raise"
    check_images: bool = True
    pair_seed: int | None = 0
    chunk_bytes: str = "64MB"
    num_workers: int = 1
    overwrite: bool = False


def pair_item(records: tuple[tuple[str, ...], tuple[str, ...]]) -> dict[str, Any]:
    """A training pair as a litdata item: both notes whole."""
    return {"query": note_item(records[0]), "target": note_item(records[1])}


def id_pair_item(pair: tuple[str, str]) -> dict[str, Any]:
    """A val/test pair as a litdata item: the two note ids."""
    return {"query_id": text_leaf(pair[0]), "target_id": text_leaf(pair[1])}


def id_item(row: tuple[str, int]) -> dict[str, Any]:
    """A row of ``ids_{split}``: note id and raw text length."""
    return {"note_id": text_leaf(row[0]), "raw_len": int(row[1])}


def _write(fn: Callable[[Any], dict[str, Any]], inputs: list[Any], output_dir: str, opts: PrepareOptions,
           use_optimize: bool = False) -> None:
    """One litdata optimized dataset of ``fn(x)`` for ``x`` in ``inputs``, in that order.

    A local folder is written in this process with litdata's chunk writer (``BinaryWriter``, what ``optimize``
    runs in its workers); a URL (or ``use_optimize``) goes through ``litdata.optimize``, which uploads the chunks.
    Both write the same items in the same order.
    """
    if not inputs:
        raise DataError(f"Nothing to write to {output_dir}.")
    if use_optimize or is_url(output_dir):
        from litdata import optimize  # optional dependency (the streaming extra)

        optimize(fn=fn, inputs=inputs, output_dir=output_dir, chunk_bytes=opts.chunk_bytes,
                 num_workers=max(1, min(opts.num_workers, len(inputs))), keep_data_ordered=True, mode="overwrite",
                 verbose=False)
        return
    from litdata.streaming.writer import BinaryWriter  # optional dependency (the streaming extra)

    Path(output_dir).mkdir(parents=True, exist_ok=True)
    writer = BinaryWriter(output_dir, chunk_bytes=opts.chunk_bytes)
    for i, x in enumerate(inputs):
        writer[i] = fn(x)
    writer.done()
    writer.merge()


def _load(root: str, opts: PrepareOptions) -> dict[str, Split]:
    """The three splits, checked as the in-memory data module checks them."""
    splits, cache, report = {}, {}, LoadReport()
    for name in SPLITS:
        split = load_split(root, name, opts.on_error)
        if opts.check_images:
            check_images(split, opts.on_error, workers=8, cache=cache)
        if not split.pairs.get(ALL_PAIRS):
            raise DataError(f"The {name} split of {root} has no usable pairs ({split.report.summary()}).")
        for reason, n in split.report.counts.items():
            report.counts[f"{name}: {reason}"] += n
        splits[name] = split
    if report.counts:
        log.warning("Data problems found (skipped or fixed, and counted): %s", report.summary())
    return splits


def _clear(out: str, overwrite: bool) -> None:
    if is_url(out):
        return
    path = Path(out)
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; pass --overwrite to replace it.")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)


def prepare(root: str, out: str, opts: PrepareOptions | None = None) -> dict[str, Any]:
    """Write the dataset at ``root`` into litdata optimized chunks under ``out`` (a folder or a URL).

    Args:
        root: Dataset directory (canonical or official NoteLLM layout).
        out: Output folder, or an object-store URL (``s3://bucket/prefix``; needs litdata's and fsspec's cloud
            extras and credentials).
        opts: Settings (defaults: :class:`PrepareOptions`).

    Returns:
        The manifest written to ``out/streaming.json`` (counts, pair sets, settings, seconds).

    Raises:
        DataError: a bad dataset (as :func:`load_split`), or a split without usable pairs.
        FileExistsError: ``out`` is a non-empty folder and ``opts.overwrite`` is false.
    """
    opts = opts or PrepareOptions()
    start = time.perf_counter()
    splits = _load(root, opts)
    _clear(out, opts.overwrite)
    counts: dict[str, int] = {}
    for note_split in ("train", "test"):
        notes = splits[note_split].notes
        ordered = sorted(notes)
        _write(note_item, [note_record(notes[k]) for k in ordered], notes_dir(out, note_split), opts)
        _write(id_item, [(k, notes[k].raw_len) for k in ordered],
               ids_dir(out, note_split), opts)
        counts[f"notes_{note_split}"] = len(ordered)
    train = splits["train"]
    pairs = list(train.pairs[ALL_PAIRS])
    if opts.pair_seed is not None:
        random.Random(opts.pair_seed).shuffle(pairs)
    _write(pair_item, [(note_record(train.notes[q]), note_record(train.notes[t])) for q, t in pairs],
           train_pairs_dir(out), opts)
    counts["pairs_train"] = len(pairs)
    pair_sets: dict[str, list[str]] = {}
    for split in ("val", "test"):
        pair_sets[split] = sorted(splits[split].pairs, key=lambda s: (s != ALL_PAIRS, s))
        for subset in pair_sets[split]:
            _write(id_pair_item, list(splits[split].pairs[subset]), pairs_dir(out, split, subset), opts)
            counts[f"pairs_{split}" + ("" if subset == ALL_PAIRS else f"_{subset}")] = len(splits[split].pairs[subset])
    manifest = {"format": FORMAT, "source": str(root), "layout": train.layout, "counts": counts,
                "pair_sets": pair_sets, "note_splits": NOTE_SPLITS, "pair_seed": opts.pair_seed,
                "on_error": opts.on_error, "check_images": opts.check_images, "chunk_bytes": opts.chunk_bytes,
                "seconds": round(time.perf_counter() - start, 2)}
    write_manifest(out, manifest)
    log.info("Prepared %s -> %s (%s)", root, out, MANIFEST)
    return manifest
