"""Writing the synthetic benchmark to disk in the canonical layout, and reusing an existing one.

Files (see :func:`generate`): ``notes_{train,test}.csv``, ``pairs_{train,val,test}.csv``, the four
``pairs_test_{short,long}{query,gtdoc}.csv`` subsets (by the generator's own short/long flag),
``images/<note_id>.png``, ``notes_meta.csv`` (latent cluster, flags and identities per note; for analysis, never
for training) and ``dataset.json`` (written last: its presence marks a complete dataset). Tables and
``dataset.json`` are written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from notellm2_pl.atomic import atomic_write_bytes, atomic_write_text, cleanup_leftovers
from notellm2_pl.data.schema import NOTE_COLUMNS, PAIR_COLUMNS, SUBSET_NAMES
from notellm2_pl.data.synthetic.config import SyntheticConfig
from notellm2_pl.data.synthetic.identities import (
    Cluster,
    all_visuals,
    assign_badges,
    assign_visuals,
    build_text_identities,
    split_clusters,
)
from notellm2_pl.data.synthetic.notes import SynthNote, build_notes
from notellm2_pl.data.synthetic.painting import RenderJob, render_all
from notellm2_pl.data.synthetic.pairs import sample_pairs
from notellm2_pl.data.synthetic.paraphrase import assign_concepts, build_paraphrase_notes

logger = logging.getLogger(__name__)

FORMAT_NAME = "notellm2_pl.data.synthetic"
FORMAT_VERSION = 1

_OUTPUT_NAMES = ("notes_train.csv", "notes_test.csv", "notes_meta.csv", "pairs_train.csv", "pairs_val.csv",
                 "pairs_test.csv", *(f"pairs_test_{s}.csv" for s in SUBSET_NAMES))
_META_COLUMNS = ("note_id", "split", "cluster_id", "is_short", "mentioned_words", "text_identifies", "category",
                 "product_name", "shape", "colour", "pattern", "accent", "text_family", "visual_group",
                 "visual_twin_of")
_BADGE_COLUMNS = ("badge_corner", "badge_twin_of")
_PARAPHRASE_COLUMNS = ("attributes", "note_concepts", "note_forms")

Pairs = dict[str, list[tuple[int, int]]]
"""Pair set name -> (query index, target index) into the note list."""


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"))


def _prepare_root(root: Path, overwrite: bool) -> None:
    marker = root / "dataset.json"
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root} exists and is not a directory; pass a different --out")
    if root.is_dir() and any(root.iterdir()):
        if not overwrite:
            if marker.exists():
                raise FileExistsError(f"{root} already holds a synthetic dataset ({marker}); pass --overwrite "
                                      f"(overwrite=True) to replace it, or a different --out")
            raise FileExistsError(f"{root} is not empty and has no dataset.json (an interrupted generation or "
                                  f"another dataset); pass --overwrite (overwrite=True) to replace our files "
                                  f"there, or a different --out")
        marker.unlink(missing_ok=True)  # first: an interrupted rewrite must never look complete
        for name in (*_OUTPUT_NAMES, "dataset.json"):
            (root / name).unlink(missing_ok=True)
            cleanup_leftovers(root / name)  # temp files of an interrupted atomic write
        if (root / "images").is_dir():
            shutil.rmtree(root / "images")
    (root / "images").mkdir(parents=True, exist_ok=True)


def _describe(cfg: SyntheticConfig) -> dict[str, str]:
    """The human description stored in ``dataset.json``."""
    return {
        "clusters": "Notes belong to latent clusters (items); every pair is two notes of one cluster. Train and "
                    "test clusters are disjoint; notes_meta.csv holds the latent cluster of each note (analysis "
                    "only, never an input).",
        "image_only": "Visual identity = shape x colour x pattern x accent, drawn at random position, scale and "
                      "rotation with per-note colour jitter, a gradient background, distractor shapes and noise. "
                      "The text never mentions it.",
        **_text_description(cfg),
        **({"badges": "Every image carries a small badge at its cluster's corner; badge twins copy another "
                      "cluster's visual identity with the badge in another corner, so only layout separates them."}
           if cfg.badge_twin_fraction > 0 else {}),
        "pairs": "Training pairs favour long-long pairs (train_long_pair_fraction), so most are solvable from "
                 "text alone; " + ("val pairs are a matching inside held-out clusters (their notes are in "
                 "notes_train.csv, in no training pair; split 'val' in notes_meta.csv); " if cfg.val_cluster_fraction
                 else "val pairs are other pairs of train clusters; ") + "test pairs are a matching inside each "
                 "test cluster (each note in at most one pair), so the short subsets need the image.",
        "columns": "topics are tags joined by '|'; image is a path relative to this directory.",
    }


def _text_description(cfg: SyntheticConfig) -> dict[str, str]:
    """The text part of :func:`_describe`: templated (product names) or paraphrase text."""
    if not cfg.paraphrase_forms:
        return {
            "text_only": "Textual identity = a product name of two rare pseudo-words + a category. Long notes name "
                         f"it (with probability {cfg.partial_name_prob} only one word); short notes never do.",
            "short_notes": f"{cfg.short_text_fraction:.0%} of notes have short generic text shared by all clusters: "
                           "only the image identifies them. The subset files use this flag (is_short), not a length "
                           "threshold; short text is at most ~60 characters in all, long text more than 90.",
            "confusers": "Text families share the category and one name word; visual groups share shape+colour or "
                         "colour+pattern; visual twins copy another cluster's visual identity (text separates them).",
        }
    return {
        "text_only": "Paraphrase text: each note names its own item (a pseudo-word no other note uses) and expresses "
                     "some of its cluster's concepts (a category and three attributes), each in one of "
                     f"{cfg.paraphrase_forms} surface forms ({cfg.slang_forms} of them invented slang), so related "
                     "notes share meaning more often than words. A cluster's maker (product_name in notes_meta.csv) "
                     f"is named by long notes with probability {cfg.maker_mention_prob}; makers recur across "
                     f"unrelated clusters, and with probability {cfg.stray_mention_prob} a note mentions another "
                     "maker or other concepts in passing. notes_meta.csv: attributes (the cluster's), note_concepts "
                     "and note_forms (what the note says, in which words).",
        "short_notes": f"{cfg.short_text_fraction:.0%} of notes have short text (a few words): the maker, one "
                       "concept form or generic words. The subset files use this flag (is_short), not a length "
                       "threshold (text_lengths in this file gives both ranges).",
        "confusers": "Text families share the category and the maker; visual groups share shape+colour or "
                     "colour+pattern; visual twins copy another cluster's visual identity.",
    }


def _build_structure(config: SyntheticConfig) -> tuple[list[Cluster], list[SynthNote], Pairs, int, tuple[int, int]]:
    """Clusters, notes and pairs, each part from its own random stream of ``config.seed``.

    Returns:
        (clusters, notes, pairs, identities reused for lack of distinct ones, the images' seed words).
    """
    seeds = np.random.SeedSequence(config.seed).spawn(4)
    rng_struct, rng_text, rng_pairs = (np.random.default_rng(s) for s in seeds[:3])
    image_entropy = seeds[3].generate_state(2)
    clusters = build_text_identities(rng_struct, config)
    split_clusters(rng_struct, config, clusters)
    forced = assign_visuals(rng_struct, config, clusters)
    if config.badge_twin_fraction > 0:
        assign_badges(config, clusters)
    if config.paraphrase_forms:
        notes = build_paraphrase_notes(rng_text, config, clusters, assign_concepts(config, clusters))
    else:
        notes = build_notes(rng_text, config, clusters)
    pairs = sample_pairs(rng_pairs, config, notes, frozenset(c.cid for c in clusters if c.held_out))
    return clusters, notes, pairs, forced, (int(image_entropy[0]), int(image_entropy[1]))


def _test_subsets(test_pairs: list[tuple[int, int]], notes: list[SynthNote]) -> Pairs:
    """The test subsets of :data:`~notellm2_pl.data.schema.SUBSET_NAMES`, by the notes' own short/long flag."""
    side = {"query": 0, "gtdoc": 1}
    out: Pairs = {}
    for name in SUBSET_NAMES:
        short = name.startswith("short")
        k = side[name.removeprefix("short" if short else "long")]
        out[name] = [p for p in test_pairs if notes[p[k]].is_short == short]
    return out


def _write_tables(root: Path, config: SyntheticConfig, clusters: list[Cluster], notes: list[SynthNote],
                  pairs: Pairs, subsets: Pairs) -> None:
    """Notes, meta and pair tables, rows sorted by note id (notes) or in sampling order (pairs)."""
    for split in ("train", "test"):
        rows = sorted((n.note_id, n.title, "|".join(n.topics), n.content, f"images/{n.note_id}.png")
                      for n in notes if n.split == split)
        _write_csv(root / f"notes_{split}.csv", NOTE_COLUMNS, rows)
    badges = config.badge_twin_fraction > 0  # badge columns only then: other datasets keep their bytes
    paraphrase = config.paraphrase_forms > 0  # likewise the paraphrase columns
    meta = sorted(
        (n.note_id, _meta_split(n, clusters), n.cid, int(n.is_short), " ".join(n.mention), int(n.text_identifies),
         clusters[n.cid].category, clusters[n.cid].maker if paraphrase else clusters[n.cid].name,
         *clusters[n.cid].visual, clusters[n.cid].text_family, clusters[n.cid].visual_group,
         clusters[n.cid].visual_twin_of,
         *((clusters[n.cid].corner, clusters[n.cid].badge_twin_of) if badges else ()),
         *((" ".join(clusters[n.cid].attributes), " ".join(n.concepts), "|".join(n.forms)) if paraphrase else ()))
        for n in notes
    )
    header = (*_META_COLUMNS, *(_BADGE_COLUMNS if badges else ()), *(_PARAPHRASE_COLUMNS if paraphrase else ()))
    _write_csv(root / "notes_meta.csv", header, meta)
    named = {**{name: pairs[name] for name in ("train", "val", "test")},
             **{f"test_{name}": ps for name, ps in subsets.items()}}
    for name, ps in named.items():
        _write_csv(root / f"pairs_{name}.csv", PAIR_COLUMNS, [(notes[a].note_id, notes[b].note_id) for a, b in ps])


def _meta_split(n: SynthNote, clusters: list[Cluster]) -> str:
    """``val`` for notes of held-out validation clusters, else the note's file split."""
    return "val" if clusters[n.cid].held_out else n.split


def _text_len(n: SynthNote) -> int:
    return len(n.title) + len("|".join(n.topics)) + len(n.content)


def _both(pairs: list[tuple[int, int]], notes: list[SynthNote], flag: str) -> float:
    """Fraction of ``pairs`` whose two notes both have the boolean attribute ``flag``."""
    return sum(getattr(notes[a], flag) and getattr(notes[b], flag) for a, b in pairs) / max(1, len(pairs))


def _statistics(clusters: list[Cluster], notes: list[SynthNote], pairs: Pairs, subsets: Pairs,
                forced: int) -> tuple[dict[str, int], dict[str, float], dict[str, float]]:
    """(counts, fractions, text lengths) of a generated dataset."""
    counts = {
        "clusters_train": sum(c.split == "train" for c in clusters),
        "clusters_test": sum(c.split == "test" for c in clusters),
        **({"clusters_val_held_out": sum(c.held_out for c in clusters)} if any(c.held_out for c in clusters) else {}),
        "notes_train": sum(n.split == "train" for n in notes),
        "notes_test": sum(n.split == "test" for n in notes),
        "notes_short": sum(n.is_short for n in notes),
        "pairs_train": len(pairs["train"]),
        "pairs_val": len(pairs["val"]),
        "pairs_test": len(pairs["test"]),
        **{f"pairs_test_{k}": len(v) for k, v in subsets.items()},
        "visual_identities_forced_shared": forced,
    }
    fractions = {
        "short_notes": counts["notes_short"] / len(notes),
        "train_pairs_both_long": sum(not notes[a].is_short and not notes[b].is_short for a, b in pairs["train"])
        / max(1, len(pairs["train"])),
        "train_pairs_text_solvable": _both(pairs["train"], notes, "text_identifies"),
        "test_pairs_text_solvable": _both(pairs["test"], notes, "text_identifies"),
    }
    short_lens = [_text_len(n) for n in notes if n.is_short] or [0]
    long_lens = [_text_len(n) for n in notes if not n.is_short] or [0]
    text_lengths = {"short_max_chars": max(short_lens), "long_min_chars": min(long_lens),
                    "short_mean_chars": float(np.mean(short_lens)), "long_mean_chars": float(np.mean(long_lens))}
    return counts, fractions, text_lengths


def _dataset_info(config: SyntheticConfig, counts: dict[str, int], fractions: dict[str, float],
                  text_lengths: dict[str, float]) -> dict[str, Any]:
    """The content of ``dataset.json``: format, settings, statistics, file names and a description."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": asdict(config),
        "counts": counts,
        "fractions": {k: round(v, 4) for k, v in fractions.items()},
        "text_lengths": text_lengths,
        "files": {
            "notes": ["notes_train.csv", "notes_test.csv"],
            "note_columns": list(NOTE_COLUMNS),
            "pairs": {"train": "pairs_train.csv", "val": "pairs_val.csv", "test": "pairs_test.csv",
                      **{k: f"pairs_test_{k}.csv" for k in SUBSET_NAMES}},
            "pair_columns": list(PAIR_COLUMNS),
            "images": "images/<note_id>.png",
            "meta": "notes_meta.csv",
        },
        "description": _describe(config),
    }


def generate(root: str | Path, config: SyntheticConfig, overwrite: bool = False,
             num_workers: int | None = None) -> dict[str, Any]:
    """Generate the synthetic benchmark into ``root`` in the canonical layout.

    ``dataset.json`` is written last: a directory without it is an incomplete (interrupted) generation and is
    never reused silently.

    Args:
        root: Output directory (created; must be empty or absent unless ``overwrite``).
        config: Generator settings.
        overwrite: Replace an existing dataset (or leftovers of an interrupted run) in ``root``. Only files this
            generator writes are removed.
        num_workers: Processes drawing images (the output does not depend on it). ``None``: up to 4 for 1000
            notes or more, else 0 (in-process).

    Returns:
        Statistics: counts per file, fractions (short notes, text-solvable training pairs, ...) and timings.

    Raises:
        FileExistsError: ``root`` is not empty and ``overwrite`` is false.
    """
    t0 = time.perf_counter()
    root = Path(root)
    _prepare_root(root, overwrite)
    clusters, notes, pairs, forced, image_entropy = _build_structure(config)
    t_struct = time.perf_counter() - t0
    jobs = _render_jobs(config, clusters, notes)
    image_bytes = render_all(root / "images", config, image_entropy, jobs, num_workers)
    t_images = time.perf_counter() - t0 - t_struct
    subsets = _test_subsets(pairs["test"], notes)
    _write_tables(root, config, clusters, notes, pairs, subsets)
    counts, fractions, text_lengths = _statistics(clusters, notes, pairs, subsets, forced)
    info = _dataset_info(config, counts, fractions, text_lengths)
    atomic_write_text(root / "dataset.json", json.dumps(info, indent=2, sort_keys=True) + "\n")
    elapsed = time.perf_counter() - t0
    logger.info("synthetic dataset written to %s: %d notes, %d train / %d test pairs in %.1f s", root, len(notes),
                counts["pairs_train"], counts["pairs_test"], elapsed)
    return {**counts, **fractions, **text_lengths, "image_bytes": image_bytes, "seconds": round(elapsed, 2),
            "seconds_images": round(t_images, 2), "root": str(root)}


def _render_jobs(config: SyntheticConfig, clusters: list[Cluster], notes: list[SynthNote]) -> list[RenderJob]:
    """What each note's image shows: its cluster's visual identity, or with probability ``1 - image_relevance`` a
    random one (drawn from a stream of its own, so ``image_relevance = 1`` leaves the dataset byte-identical)."""
    jobs = [(k, note.note_id, clusters[note.cid].visual, clusters[note.cid].corner) for k, note in enumerate(notes)]
    if config.image_relevance >= 1.0:
        return jobs
    rng = np.random.default_rng([config.seed, 0x1A6E])
    combos = all_visuals()
    out = []
    for k, note_id, visual, corner in jobs:
        if rng.random() >= config.image_relevance:
            visual, corner = combos[int(rng.integers(len(combos)))], int(rng.integers(4)) if corner >= 0 else corner
        out.append((k, note_id, visual, corner))
    return out


def ensure_dataset(root: str | Path, config: SyntheticConfig) -> Path:
    """Generate the dataset unless ``root/dataset.json`` exists; if it does, check it was made with ``config``.

    Args:
        root: Dataset directory.
        config: Expected generator settings.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: The stored settings differ from ``config`` (or the file is not a synthetic dataset).
        FileExistsError: ``root`` is not empty and has no ``dataset.json``.
    """
    root = Path(root)
    marker = root / "dataset.json"
    if not marker.exists():
        generate(root, config)
        return root
    try:
        stored = json.loads(marker.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{marker} is not valid JSON ({e}); pass a different --out or --overwrite") from e
    if stored.get("format") != FORMAT_NAME or stored.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{marker} is not a {FORMAT_NAME} v{FORMAT_VERSION} dataset; pass a different --out or "
                         f"--overwrite")
    want = asdict(config)
    have = {**asdict(SyntheticConfig()), **stored.get("config", {})}  # fields added since: their defaults
    diff = [f"{k}: stored {have.get(k)!r} != requested {v!r}" for k, v in want.items() if have.get(k) != v]
    if diff:
        raise ValueError(f"{root} holds a synthetic dataset made with other settings ({'; '.join(diff)}); pass a "
                         f"different --out or --overwrite")
    return root


