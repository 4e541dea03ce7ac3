"""Recall@K of whole runs: the test pool of a dataset, embeddings per probe, and the report of several runs.

A *run* is one embedding set of the test notes, named ``{probe}/{key}``: the probes ``full``, ``only_image`` and
``only_text`` (docs/method.md#only-image-and-only-text-probes) times the embedding kinds ``e_m`` and (mICL) ``e_v``.
Runs come from embeddings directories (:func:`runs_from_embeddings`, written by ``predict`` with
:class:`~notellm2_pl.retrieval.prediction_writer.EmbeddingWriter`) or from a model (:func:`embed_probes`). Every run is
evaluated on every pair set of the test split (``all`` + the short/long subsets: subset files, or subsets derived
from raw text length); :func:`report` writes ``results.json`` / ``results.csv`` and TensorBoard scalars
``test/{probe}/{e_m|e_v}/recall/{subset}/R@{K}``. The ``evaluate`` command (docs/method.md#evaluation-protocol) is
:mod:`notellm2_pl.commands.evaluate`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from notellm2_pl.atomic import atomic_write_text
from notellm2_pl.data.datamodule import NoteDataModule
from notellm2_pl.data.schema import EMBEDDING_KEYS, PROBES
from notellm2_pl.data.tables import Note
from notellm2_pl.inference.embedder import Embedder
from notellm2_pl.retrieval.pairs import DEFAULT_LONG_MIN_CHARS, DEFAULT_SHORT_MAX_CHARS, Pair
from notellm2_pl.retrieval.prediction_writer import load_embeddings, read_meta, write_embeddings
from notellm2_pl.retrieval.recall import DEFAULT_KS, EvalResult, evaluate_subsets
from notellm2_pl.retrieval.results import format_table, log_to_tensorboard, write_results
from notellm2_pl.retrieval.spread import COLLAPSE_SPREAD, Spread, embedding_spread

log = logging.getLogger(__name__)

BASE_KS: tuple[int, ...] = (10, 20, 50, 100, 1000)
"""K values always reported; the larger ones of ``DEFAULT_KS`` are added when the pool reaches them."""

Run = tuple[list[str], np.ndarray]
"""``(note ids, (N, d) embeddings)`` of one run, row i belonging to ``ids[i]``."""


def default_ks(pool_size: int) -> list[int]:
    """10, 20, 50, 100, 1000, then every larger K of docs/method.md#recall-at-k (10k, 100k, 1M) up to the pool size."""
    return list(BASE_KS) + [k for k in DEFAULT_KS if k not in BASE_KS and k <= pool_size]


def load_test_pool(root: str | os.PathLike[str] | None, on_error: str = "raise",
                   short_max_chars: int = DEFAULT_SHORT_MAX_CHARS, long_min_chars: int = DEFAULT_LONG_MIN_CHARS,
                   streaming: str | None = None, streaming_cache: str | None = None,
                   ) -> tuple[list[str], Mapping[str, Note], dict[str, list[Pair]]]:
    """The test pool of a dataset: ``(sorted note ids, notes by id, pair sets)``, as ``NoteDataModule`` defines them.

    Args:
        root: Dataset root (canonical or official layout); unused with ``streaming``.
        on_error: ``raise`` or ``skip`` bad rows.
        short_max_chars: Short-text threshold of the derived subsets (datasets without subset files).
        long_min_chars: Long-text threshold of the derived subsets.
        streaming: Prepared streaming data (``prepare``'s folder or URL): the notes are then read lazily from its
            chunks as they are embedded, never held in memory.
        streaming_cache: Local chunk cache for a streaming URL.

    Returns:
        The pool's note ids (sorted), its notes by id (a lazy mapping with ``streaming``) and ``{pair set name:
        pairs}`` (``all`` + the subsets).
    """
    dm = NoteDataModule(root=os.fspath(root or streaming), on_error=on_error, short_max_chars=short_max_chars,
                        long_min_chars=long_min_chars, streaming=streaming, streaming_cache=streaming_cache)
    pair_sets = dm.test_pair_sets()
    ids = dm.pool_ids("test")
    notes = dm.stream.note_map("test") if dm.stream is not None else dm.splits["test"].notes
    return ids, notes, pair_sets


class NotesInOrder(Sequence):
    """``notes[ids[i]]`` for each ``i``, looked up on access (a lazy mapping stays lazy)."""

    def __init__(self, notes: Mapping[str, Note], ids: Sequence[str]) -> None:
        self.notes, self.ids = notes, ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> Note:  # type: ignore[override]  # no slicing needed
        return self.notes[self.ids[i]]


BLANK_BY_DESIGN = ("only_text/e_v",)
"""Runs whose input is blank by design (``e_v`` sees only the image, which ``only_text`` blanks): one vector for
every note, skipped rather than scored or flagged."""


def evaluate_runs(runs: Mapping[str, tuple[Sequence[str], np.ndarray]], pair_sets: Mapping[str, Sequence[Pair]],
                  ks: Sequence[int]) -> dict[str, dict[str, EvalResult]]:
    """Evaluate several embedding sets (``{run name: (ids, emb)}``) on every pair set.

    Every set is scored, collapsed ones included (ties are broken at random, so they score chance; see
    :func:`measure_spreads` for the warning), except a constant set in :data:`BLANK_BY_DESIGN`.

    Args:
        runs: ``{run name: (note ids, (N, d) embeddings)}``.
        pair_sets: ``{pair set name: pairs}``.
        ks: Recall cut-offs.

    Returns:
        ``{run name: {pair set name: EvalResult}}``.
    """
    out: dict[str, dict[str, EvalResult]] = {}
    for name, (ids, emb) in runs.items():
        if name in BLANK_BY_DESIGN and len(emb) > 1 and float(np.ptp(emb, axis=0).max()) < 1e-6:
            log.info("Skipping %s: its input is blank by design, so every note has the same embedding.", name)
            continue
        out[name] = evaluate_subsets(emb, ids, pair_sets, ks=ks)
    return out


def measure_spreads(runs: Mapping[str, tuple[Sequence[str], np.ndarray]]) -> dict[str, Spread]:
    """The :class:`~notellm2_pl.retrieval.spread.Spread` of every run but those blank by design.

    Args:
        runs: ``{run name: (note ids, (N, d) embeddings)}``.

    Returns:
        ``{run name: Spread}``.
    """
    return {name: embedding_spread(emb) for name, (_, emb) in runs.items() if name not in BLANK_BY_DESIGN}


def format_spreads(spreads: Mapping[str, Spread]) -> str:
    """The ``collapse check`` lines: each set's spread, and a WARNING naming every collapsed set."""
    collapsed = [name for name, sp in spreads.items() if sp.collapsed]
    head = ("collapse check: WARNING: " + ", ".join(collapsed) + " collapsed (every note maps to nearly the same "
            f"vector: spread below {COLLAPSE_SPREAD:g}); their Recall@K is chance, and no modality conclusion is "
            "drawn from them. Check the inputs that set depends on (images readable? feature cache keys?) and its "
            "loss weight (docs/method.md#collapsed-embeddings)" if collapsed else "collapse check: ok")
    return "\n".join([head] + ["  " + sp.line(name) for name, sp in spreads.items()])


def write_spreads(spreads: Mapping[str, Spread], out_dir: str | os.PathLike[str]) -> Path:
    """Write ``spread.json`` (``{run name: Spread.to_dict()}``) atomically; returns its path."""
    path = Path(out_dir) / "spread.json"
    atomic_write_text(path, json.dumps({n: sp.to_dict() for n, sp in spreads.items()}, indent=2) + "\n")
    return path


def report(results: Mapping[str, Mapping[str, EvalResult]], out_dir: str | os.PathLike[str] | None,
           tb_dir: str | os.PathLike[str] | None, step: int = 0) -> str:
    """Format the table, write ``results.json`` / ``results.csv`` and TensorBoard scalars; return the table.

    Args:
        results: ``{run name: {pair set name: EvalResult}}``, e.g. from :func:`evaluate_runs`.
        out_dir: Folder of ``results.json`` / ``results.csv``, or None to write no files.
        tb_dir: TensorBoard log dir, or None to log nothing.
        step: Global step of the scalars.

    Returns:
        The console table, one row per ``{run}/{pair set}``.
    """
    flat = {f"{run}/{subset}": res for run, subsets in results.items() for subset, res in subsets.items()}
    if out_dir is not None:
        write_results(flat, Path(out_dir) / "results.json", Path(out_dir) / "results.csv")
    if tb_dir is not None:
        from torch.utils.tensorboard import SummaryWriter  # tensorboard is imported only when scalars are logged

        writer = SummaryWriter(log_dir=os.fspath(tb_dir))
        try:
            for run, subsets in results.items():
                log_to_tensorboard(subsets, writer, prefix=f"test/{run}", step=step)
        finally:
            writer.close()
    return format_table(flat)


def runs_from_embeddings(dirs: Sequence[str | os.PathLike[str]]) -> tuple[dict[str, Run], str | None]:
    """Load every embedding kind of some embeddings directories as runs named ``{probe}/{key}``.

    A second directory of the same probe is named by its folder instead: ``{dir name}/{key}``.

    Args:
        dirs: Embeddings directories (``predict`` with ``EmbeddingWriter``, or ``evaluate --save_embeddings``).

    Returns:
        ``({run name: (ids, emb)}, the dataset root recorded with the first directory that has one, or None)``.
    """
    runs: dict[str, Run] = {}
    root = None
    for d in dirs:
        meta = read_meta(d)
        root = root or meta.get("data_root")
        if meta.get("split", "test") != "test":
            log.warning("%s holds %s-split embeddings; the protocol evaluates the test split.", d, meta["split"])
        for key in meta.get("keys", [EMBEDDING_KEYS[0]]):
            name = f"{meta.get('probe', PROBES[0])}/{key}"
            if name in runs:
                name = f"{Path(d).name}/{key}"
            runs[name] = load_embeddings(d, key)
    return runs, root


def embed_probes(embedder: Embedder, ids: list[str], notes: Mapping[str, Note], probes: Sequence[str],
                 batch_size: int, save_dir: Path | None, data_root: str) -> dict[str, Run]:
    """Embed the pool once per probe, as runs named ``{probe}/{key}``; probes other than ``full`` need vision.

    Args:
        embedder: The model.
        ids: Note ids of the pool, in row order.
        notes: Notes by id (a dict, or a lazy mapping over streaming data: read as they are embedded).
        probes: Probes to embed (``full``, ``only_image``, ``only_text``).
        batch_size: Notes per forward pass.
        save_dir: Also write each probe's embeddings to ``save_dir/<probe>`` (an embeddings directory), or None.
        data_root: Dataset root recorded with the saved embeddings.

    Returns:
        ``{run name: (ids, emb)}``.
    """
    runs: dict[str, Run] = {}
    has_vision = getattr(embedder.module.encoder, "vision", None) is not None
    pool = NotesInOrder(notes, ids)
    for probe in probes:
        if probe != "full" and not has_vision:
            log.info("Skipping probe %s: the model has no vision tower.", probe)
            continue
        arrays = embedder.embed_all(pool, batch_size=batch_size, progress=True, probe=probe)
        if save_dir is not None:
            write_embeddings(save_dir / probe, ids, arrays, probe=probe, data_root=data_root,
                             variant=getattr(embedder.module.encoder, "variant", None))
        for key, emb in arrays.items():
            runs[f"{probe}/{key}"] = (ids, emb)
    return runs
