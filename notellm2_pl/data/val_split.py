"""Validation on unseen notes: how far a dataset's validation and test notes overlap the training pairs, and a
note-disjoint validation split carved out of the training pairs (docs/data.md#validation-on-unseen-notes).

A note is **seen** when it appears in a training pair. A cold-start test (the official NoteLLM layout:
``notes_test`` holds other notes than ``notes_train``) ranks unseen notes, so a validation split whose pairs reuse
training notes ranks memorised items: every choice made on it (fusion strength, schedule, checkpoint, hard negatives)
is made on seen notes. :func:`measure_seen` tells that case (:attr:`SeenNotes.mismatch`), and
:func:`carve_note_disjoint` builds the validation split that looks like the test: whole connected components of the
training-pair graph (no validation note keeps a training-pair neighbour in training), and, when the components are too
large to be taken whole, regions grown greedily from random notes so that few pairs cross between the two sides; the
pairs that do cross are dropped from both (counted).
"""

from __future__ import annotations

import heapq
import logging
import random
from collections import deque
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Pair = tuple[str, str]
"""``(query_id, target_id)``."""

ValSplit = Literal["auto", "given", "note_disjoint"]
"""How the validation pairs are chosen: the dataset's own (``given``), carved out of the training pairs
(``note_disjoint``), or ``note_disjoint`` exactly when the test is cold-start and the given pairs are not (``auto``)."""

COLD_START_MAX_SEEN: float = 0.05
"""A test is cold-start when at most this share of its pool's notes, and of its pairs' notes, is seen in training."""

VAL_SEEN_MIN: float = 0.2
"""Validation pairs share notes with training when at least this share of their notes is seen in training."""


@dataclass(frozen=True)
class SeenNotes:
    """How many validation and test notes also appear in training pairs (the ``*_seen`` counts).

    Attributes:
        train_notes: Distinct notes of the training pairs.
        val_notes: Distinct notes of the validation pairs.
        val_seen: ... of which appear in a training pair.
        test_notes: Distinct notes of the test pairs (None: test split unknown).
        test_seen: ... of which appear in a training pair.
        test_pool: Notes of the test pool (None: test split unknown).
        test_pool_seen: ... of which appear in a training pair.
    """

    train_notes: int
    val_notes: int
    val_seen: int
    test_notes: int | None = None
    test_seen: int | None = None
    test_pool: int | None = None
    test_pool_seen: int | None = None

    @property
    def val_seen_share(self) -> float:
        """Share of the validation-pair notes that appear in training pairs (0 without validation pairs)."""
        return self.val_seen / self.val_notes if self.val_notes else 0.0

    @property
    def cold_start(self) -> bool | None:
        """Whether the test pool and the test pairs are (almost) disjoint from the training notes; None: unknown."""
        if self.test_pool is None or self.test_notes is None:
            return None
        shares = [s / n for s, n in ((self.test_pool_seen, self.test_pool), (self.test_seen, self.test_notes)) if n]
        return bool(shares) and max(shares) <= COLD_START_MAX_SEEN

    @property
    def mismatch(self) -> bool:
        """The test is cold-start while the validation pairs share notes with training."""
        return bool(self.cold_start) and self.val_seen_share >= VAL_SEEN_MIN

    def describe(self) -> str:
        """One sentence with the numbers, e.g. for a log line or a validate-data finding."""
        text = (f"{self.val_seen} of {self.val_notes} validation-pair notes ({self.val_seen_share:.0%}) appear in "
                f"training pairs ({self.train_notes} notes)")
        if self.cold_start is None:
            return text + "; the test split is unknown"
        kind = "cold-start" if self.cold_start else "not cold-start"
        return (text + f"; the test is {kind}: {self.test_pool_seen} of {self.test_pool} test-pool notes and "
                f"{self.test_seen} of {self.test_notes} test-pair notes do")


def pair_notes(pairs: Iterable[Pair]) -> set[str]:
    """The distinct note ids of some pairs."""
    return {n for p in pairs for n in p}


def measure_seen(train_pairs: Iterable[Pair], val_pairs: Iterable[Pair], test_pairs: Iterable[Pair] | None = None,
                 test_pool: Iterable[str] | None = None) -> SeenNotes:
    """Count the validation and test notes that also appear in training pairs.

    Args:
        train_pairs: The training pairs.
        val_pairs: The validation pairs.
        test_pairs: The test pairs (``all``); None when the test split is unknown.
        test_pool: Ids of the test pool (the whole test notes table); None when unknown.

    Returns:
        The counts; :attr:`SeenNotes.mismatch` says whether validation should be carved from the training pairs.
    """
    seen = pair_notes(train_pairs)
    val = pair_notes(val_pairs)
    out = SeenNotes(len(seen), len(val), len(val & seen))
    if test_pairs is None or test_pool is None:
        return out
    test, pool = pair_notes(test_pairs), set(test_pool)
    return SeenNotes(out.train_notes, out.val_notes, out.val_seen, len(test), len(test & seen), len(pool),
                     len(pool & seen))


def resolve_val_split(requested: ValSplit, seen: SeenNotes | None) -> Literal["given", "note_disjoint"]:
    """The split ``requested`` stands for: ``auto`` is ``note_disjoint`` on a :attr:`SeenNotes.mismatch`.

    Args:
        requested: ``auto``, ``given`` or ``note_disjoint``.
        seen: The measured overlap (None: unknown, so ``auto`` keeps the given pairs).

    Raises:
        ValueError: An unknown ``requested`` value.
    """
    if requested not in ("auto", "given", "note_disjoint"):
        raise ValueError(f"data.val_split={requested!r}: use auto, given or note_disjoint.")
    if requested == "auto":
        return "note_disjoint" if seen is not None and seen.mismatch else "given"
    return requested


@dataclass(frozen=True)
class CarvedSplit:
    """Training pairs split into a note-disjoint validation split and what training keeps.

    Attributes:
        train_pairs: Training pairs with neither note in ``val_notes`` (file order).
        val_pairs: Training pairs with both notes in ``val_notes`` (file order).
        val_notes: The notes held out of training, sorted.
        dropped_pairs: Training pairs with exactly one note held out, dropped from both sides.
        components: Whole connected components held out.
        sampled_notes: Notes held out from components too large to be taken whole (0: components only).
    """

    train_pairs: list[Pair]
    val_pairs: list[Pair]
    val_notes: list[str]
    dropped_pairs: int
    components: int
    sampled_notes: int

    def describe(self) -> str:
        """One sentence with the numbers."""
        how = f"whole connected components of the training-pair graph: {self.components}"
        if self.sampled_notes:
            how += (f" + {self.sampled_notes} notes sampled from larger components ({self.dropped_pairs} training "
                    f"pairs crossing between the sides dropped)")
        return (f"{len(self.val_notes)} notes and {len(self.val_pairs)} validation pairs held out of training "
                f"({how}); {len(self.train_pairs)} training pairs left")


def _adjacency(pairs: Sequence[Pair]) -> dict[str, list[str]]:
    """Undirected neighbours of every note, sorted (a deterministic walk order)."""
    adj: dict[str, set[str]] = {}
    for q, t in pairs:
        adj.setdefault(q, set()).add(t)
        adj.setdefault(t, set()).add(q)
    return {n: sorted(v) for n, v in sorted(adj.items())}


def connected_components(adj: dict[str, list[str]]) -> list[list[str]]:
    """Connected components of a graph, each sorted, in the order of their smallest note id."""
    comps, done = [], set()
    for start in adj:  # sorted keys: components come in the order of their smallest id
        if start in done:
            continue
        done.add(start)
        comp, queue = [start], deque([start])
        while queue:
            for m in adj[queue.popleft()]:
                if m not in done:
                    done.add(m)
                    comp.append(m)
                    queue.append(m)
        comps.append(sorted(comp))
    return comps


def _grow_regions(adj: dict[str, list[str]], notes: list[str], need: int, rng: random.Random,
                  taken: set[str]) -> int:
    """Add ``need`` notes of ``notes`` to ``taken``, grown greedily from random seeds so that few pairs cross.

    From a seed, the next note is always the frontier note whose move adds the fewest crossing pairs (its pairs to
    notes outside minus its pairs into the region: ``degree - 2 * inside``, ties by id); a new seed starts when the
    frontier is empty. On graphs with hub notes (co-liked items) this drops several times fewer training pairs than
    independent note sampling and keeps more validation pairs (docs/data.md#validation-on-unseen-notes).
    Returns the number of notes added.
    """
    seeds = list(notes)
    rng.shuffle(seeds)
    added = 0
    inside: dict[str, int] = {}
    heap: list[tuple[int, str]] = []

    def take(note: str) -> None:
        taken.add(note)
        for m in adj[note]:
            if m not in taken:
                inside[m] = inside.get(m, 0) + 1
                heapq.heappush(heap, (len(adj[m]) - 2 * inside[m], m))

    for seed in seeds:
        if added >= need:
            break
        if seed in taken:
            continue
        take(seed)
        added += 1
        while heap and added < need:
            cost, m = heapq.heappop(heap)
            if m in taken or cost != len(adj[m]) - 2 * inside[m]:  # taken, or an outdated entry
                continue
            take(m)
            added += 1
        heap.clear()
    return added


def carve_note_disjoint(train_pairs: Sequence[Pair], fraction: float, seed: int) -> CarvedSplit:
    """Hold ``fraction`` of the training-pair notes out of training as a note-disjoint validation split.

    Connected components of the training-pair graph are drawn in a random order and held out whole while they fit in
    the target (``round(fraction * notes)``, at least 2 notes); a component larger than the whole target is "huge".
    When the whole components leave part of the target unfilled and huge components exist, the rest is taken from
    them as regions grown greedily around random notes (each step takes the frontier note that adds the fewest crossing
    pairs), and the pairs crossing between the two sides are dropped.

    Args:
        train_pairs: The training pairs, in file order.
        fraction: Share of the training-pair notes to hold out, in (0, 1).
        seed: Seed of every random draw (same pairs, fraction and seed: the same split).

    Returns:
        The :class:`CarvedSplit`.

    Raises:
        ValueError: ``fraction`` outside (0, 1), or fewer than 2 training pairs.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"data.val_note_fraction={fraction}: use a share in (0, 1), e.g. 0.15.")
    if len(train_pairs) < 2:
        raise ValueError("A note-disjoint validation split needs at least 2 training pairs; set --data.val_split "
                         "given.")
    adj = _adjacency(train_pairs)
    target = max(2, round(fraction * len(adj)))
    comps = connected_components(adj)
    rng = random.Random(seed)
    rng.shuffle(comps)
    taken: set[str] = set()
    whole = 0
    for comp in comps:
        if len(taken) + len(comp) <= target:
            taken.update(comp)
            whole += 1
    huge = [n for comp in comps if len(comp) > target for n in comp]
    sampled = _grow_regions(adj, huge, target - len(taken), rng, taken) if huge and len(taken) < target else 0
    train, val, dropped = [], [], 0
    for q, t in train_pairs:
        inside = (q in taken) + (t in taken)
        if inside == 2:
            val.append((q, t))
        elif inside == 0:
            train.append((q, t))
        else:
            dropped += 1
    if not train or not val:
        raise ValueError(f"Carving {fraction} of the training notes left {len(train)} training and {len(val)} "
                         f"validation pairs; change --data.val_note_fraction, or set --data.val_split given.")
    return CarvedSplit(train, val, sorted(taken), dropped, whole, sampled)


def draw_val_pool(val_notes: Collection[str], candidates: Iterable[str], extra: int, seed: int) -> list[str]:
    """The validation pool: ``val_notes`` (sorted), then ``extra`` other ``candidates`` drawn with ``seed``.

    Args:
        val_notes: Notes of the validation pairs (or every held-out note).
        candidates: Notes the extra pool notes are drawn from (those in ``val_notes`` are skipped).
        extra: How many extra notes.
        seed: Seed of the draw (a shuffle of the sorted candidates).
    """
    others = sorted(set(candidates) - set(val_notes))
    random.Random(seed).shuffle(others)
    return sorted(val_notes) + others[:extra]


def validation_notice(requested: ValSplit, used: str, seen: SeenNotes | None,
                      carved: CarvedSplit | None) -> tuple[int, str] | None:
    """The log level and line that say which validation split ``fit`` uses, and why.

    Args:
        requested: ``data.val_split`` as set.
        used: The split it resolved to (:func:`resolve_val_split`).
        seen: The measured overlap (None: not measured).
        carved: The carved split when ``used`` is ``note_disjoint``.

    Returns:
        ``(logging level, message)``: a WARNING when validation ranks seen notes for a cold-start test, or when
        ``auto`` carved a split (the training pairs change); INFO for a requested carve; None when there is nothing
        to say.
    """
    numbers = seen.describe() if seen is not None else "overlap not measured"
    if used == "note_disjoint" and carved is not None:
        level = logging.WARNING if requested == "auto" else logging.INFO
        why = ("the given validation pairs share notes with training while the test is cold-start"
               if requested == "auto" else "data.val_split note_disjoint")
        return level, (f"Validating on unseen notes ({why}: {numbers}): {carved.describe()}. The given validation "
                       f"pairs are not used; keep them with --data.val_split given "
                       f"(docs/data.md#validation-on-unseen-notes).")
    if seen is not None and seen.mismatch:
        return logging.WARNING, (
            f"Validation ranks seen notes while the test ranks unseen ones: {numbers}. Every choice made on validation "
            f"(fusion_scales, schedule, checkpoint, hard negatives) is then made on seen notes; validate on a "
            f"note-disjoint split carved from the training pairs with --data.val_split note_disjoint (or the default "
            f"auto) (docs/data.md#validation-on-unseen-notes).")
    return None
