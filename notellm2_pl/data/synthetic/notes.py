"""Notes of the synthetic benchmark: which notes are short, their text (generic for short notes, naming the product
for long ones) and their ids."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from notellm2_pl.data.synthetic.config import SyntheticConfig
from notellm2_pl.data.synthetic.identities import Cluster
from notellm2_pl.data.synthetic.vocabulary import (
    CATEGORIES,
    GENERIC_SENTENCES,
    GENERIC_TAGS,
    LONG_OPENERS,
    LONG_TITLES,
    NAME_SENTENCES,
    SHORT_CONTENTS,
    SHORT_TITLES,
)


@dataclass
class SynthNote:
    """One generated note (its latent cluster and flags are written to ``notes_meta.csv`` only).

    Attributes:
        cid: Its cluster.
        split: ``train`` or ``test`` (its cluster's split).
        is_short: Short generic text that does not identify the cluster.
        mention: The product-name words its text names (empty for short notes); paraphrase text: the maker, when
            the note names it.
        note_id: Its id (``n000123``), assigned in a random order.
        title: Title text.
        topics: Tags.
        content: Body text.
        text_identifies: Its text alone names exactly one cluster of its split.
        concepts: Paraphrase text only: the concepts of its cluster that its text expresses (category first).
        forms: Paraphrase text only: the surface forms it used for them, in the same order.
    """

    cid: int
    split: str
    is_short: bool = False
    mention: tuple[str, ...] = ()
    note_id: str = ""
    title: str = ""
    topics: list[str] = dataclasses.field(default_factory=list)
    content: str = ""
    text_identifies: bool = False
    concepts: tuple[str, ...] = ()
    forms: tuple[str, ...] = ()


def build_notes(rng: np.random.Generator, cfg: SyntheticConfig, clusters: list[Cluster]) -> list[SynthNote]:
    """``cfg.notes_per_cluster`` notes per cluster, with text and ids.

    Args:
        rng: The text's random stream.
        cfg: Generator settings.
        clusters: Clusters with their identities and split.

    Returns:
        The notes, grouped by cluster (their ids are in a random order).
    """
    notes = new_notes(rng, cfg, clusters)
    # Which (category, word) pairs are ambiguous inside a split: used to flag notes whose text identifies them.
    index: dict[tuple[str, str, str], set[int]] = {}
    for c in clusters:
        for w in c.words:
            index.setdefault((c.split, c.category, w), set()).add(c.cid)
    for note in notes:
        c = clusters[note.cid]
        if note.is_short:
            note.title, note.topics, note.content = _short_text(rng)
            continue
        note.mention = c.words if rng.random() >= cfg.partial_name_prob else (c.words[int(rng.integers(2))],)
        note.title, note.topics, note.content = _long_text(rng, c, note.mention)
        candidates = set.intersection(*(index[(c.split, c.category, w)] for w in note.mention))
        note.text_identifies = candidates == {c.cid}
    assign_ids(rng, notes)
    return notes


def new_notes(rng: np.random.Generator, cfg: SyntheticConfig, clusters: list[Cluster]) -> list[SynthNote]:
    """``cfg.notes_per_cluster`` notes per cluster without text, ``short_text_fraction`` of them flagged short.

    Args:
        rng: The text's random stream.
        cfg: Generator settings.
        clusters: Clusters with their split.

    Returns:
        The notes, grouped by cluster.
    """
    notes = [SynthNote(cid=c.cid, split=c.split) for c in clusters for _ in range(cfg.notes_per_cluster)]
    n_short = round(cfg.short_text_fraction * len(notes))
    for i in rng.permutation(len(notes))[:n_short]:
        notes[int(i)].is_short = True
    return notes


def assign_ids(rng: np.random.Generator, notes: list[SynthNote]) -> None:
    """Give the notes ids (``n000123``) in a random order."""
    width = max(6, len(str(len(notes) - 1)))
    for k, i in enumerate(rng.permutation(len(notes))):
        notes[int(i)].note_id = f"n{k:0{width}d}"


def _short_text(rng: np.random.Generator) -> tuple[str, list[str], str]:
    """(title, tags, content) of a short note: generic text shared by every cluster."""
    title = str(rng.choice(SHORT_TITLES))
    n_tags = int(rng.integers(0, 3))
    tags = [str(t) for t in rng.choice(GENERIC_TAGS, size=n_tags, replace=False)] if n_tags else []
    return title, tags, str(rng.choice(SHORT_CONTENTS))


def _long_text(rng: np.random.Generator, c: Cluster, mention: tuple[str, ...]) -> tuple[str, list[str], str]:
    """(title, tags, content) of a long note naming the words ``mention`` of its product and its category."""
    name = " ".join(w.capitalize() for w in mention)
    cat = c.category
    title = str(rng.choice(LONG_TITLES)).format(name=name, cat=cat)
    tags = [cat]
    if rng.random() < 0.7:
        tags.extend(mention)
    tags.extend(str(t) for t in rng.choice(GENERIC_TAGS, size=int(rng.integers(1, 4)), replace=False))
    tags = [tags[int(i)] for i in rng.permutation(len(tags))]
    sentences = [str(rng.choice(LONG_OPENERS)).format(name=name, cat=cat)]
    n_more = int(rng.integers(1, 5))  # 2-5 sentences in all
    pool = [*CATEGORIES[cat], *GENERIC_SENTENCES]
    for k in rng.permutation(len(pool))[:n_more]:
        sentences.append(pool[int(k)])
    if rng.random() < 0.3:
        sentences.insert(int(rng.integers(1, len(sentences) + 1)), str(rng.choice(NAME_SENTENCES)).format(name=name))
    return title, tags, " ".join(sentences)
