"""Paraphrase text of the synthetic benchmark (``paraphrase_forms`` > 0, preset ``paraphrase``): related notes say
the same things in different words.

Each note is about its **own item** (a pseudo-word name used by no other note, as every film has its own title);
what relates the notes of a cluster is what they say about it:

* **Concepts**: the cluster's category and three attributes from distinct aspects
  (:mod:`notellm2_pl.data.synthetic.lexicon`). A note expresses some of them, each in a surface form drawn at random
  from the concept's ``paraphrase_forms`` forms (English synonyms plus ``slang_forms`` invented words), so two
  related notes share a concept far more often than a word.
* **A maker** (brand): text families share one (and their category), as a director's films share a genre, and makers
  recur across unrelated clusters (about 3 clusters per maker). Long notes name it with ``maker_mention_prob``.
* **Distractors**: generic sentences from a pool shared by every cluster, and with ``stray_mention_prob`` a passing
  mention of another maker or of other concepts.
* **Short notes** carry at most one concept form or the maker (or nothing specific) in a few words.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from notellm2_pl.data.synthetic.config import SyntheticConfig
from notellm2_pl.data.synthetic.identities import Cluster
from notellm2_pl.data.synthetic.lexicon import (
    ADJECTIVE_ASPECTS,
    ASPECT_SENTENCES,
    ASPECTS,
    ATTRIBUTE_FORMS,
    CATEGORY_FORMS,
    DISTRACTOR_SENTENCES,
    GENERIC_TAGS,
    LONG_TITLES,
    MAKER_SENTENCES,
    OPENERS,
    SHORT_ASPECT_TITLES,
    SHORT_CATEGORY_TITLES,
    SHORT_CONTENTS,
    SHORT_GENERIC_TITLES,
    SHORT_MAKER_TITLES,
    STRAY_SENTENCES,
    lexicon_words,
)
from notellm2_pl.data.synthetic.notes import SynthNote, assign_ids, new_notes
from notellm2_pl.data.synthetic.vocabulary import make_words

ATTRIBUTES_PER_CLUSTER = 3
CLUSTERS_PER_MAKER = 3
ATTRIBUTES_PER_LONG_NOTE = ((1, 0.2), (2, 0.5), (3, 0.3))
"""(how many of its cluster's attributes a long note expresses, probability)."""
SHORT_CONCEPT_PROB = 0.6
"""Probability that a short note not naming its maker carries one concept form (else generic words only)."""
SHORT_CATEGORY_PROB = 0.35
"""Of those, the share whose concept is the category (the rest: one attribute)."""
_STREAM = 0x9A7A


@dataclass(frozen=True)
class Lexicon:
    """The surface forms, makers and item names of one paraphrase dataset.

    Attributes:
        forms: Concept (category or attribute key) -> its surface forms in this dataset.
        makers: Maker names (capitalised pseudo-words).
        items: One item name per note, in note order (capitalised pseudo-words, all distinct).
    """

    forms: dict[str, tuple[str, ...]]
    makers: tuple[str, ...]
    items: tuple[str, ...]

    def draw(self, rng: np.random.Generator, concept: str) -> str:
        """A surface form of ``concept``, uniformly at random."""
        forms = self.forms[concept]
        return forms[int(rng.integers(len(forms)))]


def aspect_of(concept: str) -> str:
    """The aspect of an attribute concept, ``category`` for a category."""
    return ATTRIBUTE_FORMS[concept][0] if concept in ATTRIBUTE_FORMS else "category"


def assign_concepts(cfg: SyntheticConfig, clusters: list[Cluster]) -> Lexicon:
    """Draw the dataset's lexicon and give each cluster a maker and its attributes (from a stream of its own).

    Text families (clusters sharing a category) share a maker; each family draws its maker from
    ``num_clusters / CLUSTERS_PER_MAKER`` makers, so a maker also recurs across unrelated clusters.

    Args:
        cfg: Generator settings (``paraphrase_forms`` > 0).
        clusters: Clusters with their category, text family and split (modified in place).

    Returns:
        The lexicon: ``paraphrase_forms`` forms per concept, makers and one item name per note.
    """
    rng = np.random.default_rng([cfg.seed, _STREAM])
    concepts = [*CATEGORY_FORMS, *ATTRIBUTE_FORMS]
    n_makers = max(2, round(cfg.num_clusters / CLUSTERS_PER_MAKER))
    n_items = cfg.num_clusters * cfg.notes_per_cluster
    words = make_words(rng, cfg.slang_forms * len(concepts) + n_makers + n_items, avoid=lexicon_words())
    slang, words = words[:cfg.slang_forms * len(concepts)], words[cfg.slang_forms * len(concepts):]
    n_english = cfg.paraphrase_forms - cfg.slang_forms
    forms: dict[str, tuple[str, ...]] = {}
    for k, concept in enumerate(concepts):
        english = CATEGORY_FORMS[concept] if concept in CATEGORY_FORMS else ATTRIBUTE_FORMS[concept][1]
        chosen = [english[int(i)] for i in rng.permutation(len(english))[:n_english]]
        forms[concept] = (*chosen, *slang[k * cfg.slang_forms:(k + 1) * cfg.slang_forms])
    makers = tuple(w.capitalize() for w in words[:n_makers])
    family_maker: dict[int, str] = {}
    by_aspect = {a: [c for c, (aspect, _) in ATTRIBUTE_FORMS.items() if aspect == a] for a in ASPECTS}
    for c in clusters:
        if c.text_family not in family_maker:
            family_maker[c.text_family] = makers[int(rng.integers(n_makers))]
        c.maker = family_maker[c.text_family]
        aspects = [ASPECTS[int(i)] for i in rng.permutation(len(ASPECTS))[:ATTRIBUTES_PER_CLUSTER]]
        c.attributes = tuple(by_aspect[a][int(rng.integers(len(by_aspect[a])))] for a in aspects)
    return Lexicon(forms=forms, makers=makers, items=tuple(w.capitalize() for w in words[n_makers:]))


def build_paraphrase_notes(rng: np.random.Generator, cfg: SyntheticConfig, clusters: list[Cluster],
                           lexicon: Lexicon) -> list[SynthNote]:
    """``cfg.notes_per_cluster`` notes per cluster with paraphrase text and ids.

    Args:
        rng: The text's random stream.
        cfg: Generator settings (``paraphrase_forms`` > 0).
        clusters: Clusters with their concepts (:func:`assign_concepts`).
        lexicon: The dataset's forms, makers and item names.

    Returns:
        The notes, grouped by cluster (their ids are in a random order).
    """
    notes = new_notes(rng, cfg, clusters)
    index: dict[tuple[str, str], set[int]] = {}  # (split, concept or maker) -> clusters that have it
    for c in clusters:
        for key in (c.category, *c.attributes, c.maker):
            index.setdefault((c.split, key), set()).add(c.cid)
    for k, note in enumerate(notes):
        c = clusters[note.cid]
        write = _short_note if note.is_short else _long_note
        write(rng, cfg, c, lexicon, lexicon.items[k], note)
        said = {*note.concepts, *note.mention}  # what the text says: does it fit exactly one cluster of its split?
        note.text_identifies = bool(said) and set.intersection(*(index[(c.split, x)] for x in said)) == {c.cid}
    assign_ids(rng, notes)
    return notes


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _long_note(rng: np.random.Generator, cfg: SyntheticConfig, c: Cluster, lex: Lexicon, item: str,
               note: SynthNote) -> None:
    """Fill a long note: title, opener, 1-3 attribute sentences, maybe the maker, distractors, maybe a stray."""
    sizes, probs = zip(*ATTRIBUTES_PER_LONG_NOTE, strict=True)
    n_attr = int(rng.choice(sizes, p=probs))
    attrs = [c.attributes[int(i)] for i in rng.permutation(len(c.attributes))[:n_attr]]
    cat = lex.draw(rng, c.category)
    concepts, forms = [c.category], [cat]
    adjectives = [a for a in attrs if aspect_of(a) in ADJECTIVE_ASPECTS]
    title = _pick(rng, LONG_TITLES if adjectives else [t for t in LONG_TITLES if "{attr}" not in t])
    if "{attr}" in title:
        f = lex.draw(rng, adjectives[0])
        concepts.append(adjectives[0])
        forms.append(f)
        title = title.format(item=item, cat=cat, attr=f)
    else:
        title = title.format(item=item, cat=cat)
    body = []
    for a in attrs:
        f = lex.draw(rng, a)
        concepts.append(a)
        forms.append(f)
        body.append(_pick(rng, ASPECT_SENTENCES[aspect_of(a)]).format(f=f))
    tags = [cat.replace(" ", "")]
    if rng.random() < cfg.maker_mention_prob:
        note.mention = (c.maker,)
        body.append(_pick(rng, MAKER_SENTENCES).format(maker=c.maker))
        if rng.random() < 0.5:
            tags.append(c.maker.lower())
    body.extend(DISTRACTOR_SENTENCES[int(i)] for i in rng.permutation(len(DISTRACTOR_SENTENCES))[:rng.integers(0, 3)])
    if rng.random() < cfg.stray_mention_prob:
        body.append(_stray_sentence(rng, c, lex))
    body = [body[int(i)] for i in rng.permutation(len(body))]
    opener = _pick(rng, OPENERS).format(item=item, cat=cat)
    tags.extend(str(t) for t in rng.choice(GENERIC_TAGS, size=int(rng.integers(1, 4)), replace=False))
    note.title, note.content = title, " ".join([opener, *body])
    note.topics = [tags[int(i)] for i in rng.permutation(len(tags))]
    note.concepts, note.forms = _unique(concepts, forms)


def _unique(concepts: list[str], forms: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(concepts, forms) with each (concept, form) once, in first-seen order."""
    seen = dict.fromkeys(zip(concepts, forms, strict=True))
    return tuple(c for c, _ in seen), tuple(f for _, f in seen)


def _stray_sentence(rng: np.random.Generator, c: Cluster, lex: Lexicon) -> str:
    """A passing mention of another maker, or of another category with an attribute this cluster lacks."""
    maker = _pick(rng, [m for m in lex.makers if m != c.maker])
    cat = lex.draw(rng, _pick(rng, [k for k in CATEGORY_FORMS if k != c.category]))
    adjectives = [a for a, (aspect, _) in ATTRIBUTE_FORMS.items() if aspect in ADJECTIVE_ASPECTS
                  and a not in c.attributes]
    return _pick(rng, STRAY_SENTENCES).format(maker=maker, cat=cat, f=lex.draw(rng, _pick(rng, adjectives)))


def _short_note(rng: np.random.Generator, cfg: SyntheticConfig, c: Cluster, lex: Lexicon, item: str,
                note: SynthNote) -> None:
    """Fill a short note: the maker, one concept form or generic words, in a few words (``item`` is unused: short
    notes do not name their item)."""
    del item
    concepts: list[str] = []
    forms: list[str] = []
    if rng.random() < cfg.maker_mention_prob / 2:
        note.mention = (c.maker,)
        title = _pick(rng, SHORT_MAKER_TITLES).format(maker=c.maker)
    elif rng.random() < SHORT_CONCEPT_PROB:
        title = _short_concept_title(rng, c, lex, concepts, forms)
    else:
        title = _pick(rng, SHORT_GENERIC_TITLES)
    tags = [str(t) for t in rng.choice(GENERIC_TAGS, size=int(rng.integers(0, 3)), replace=False)]
    if rng.random() < cfg.stray_mention_prob / 2:
        tags.append(_pick(rng, [m for m in lex.makers if m != c.maker]).lower())
    note.title, note.topics, note.content = title, tags, _pick(rng, SHORT_CONTENTS)
    note.concepts, note.forms = _unique(concepts, forms)


def _short_concept_title(rng: np.random.Generator, c: Cluster, lex: Lexicon, concepts: list[str],
                         forms: list[str]) -> str:
    """A short title carrying the category or one attribute (sometimes both); appends what it says."""
    if rng.random() < SHORT_CATEGORY_PROB:
        cat = lex.draw(rng, c.category)
        concepts.append(c.category)
        forms.append(cat)
        return _pick(rng, SHORT_CATEGORY_TITLES).format(cat=cat)
    attr = _pick(rng, c.attributes)
    f = lex.draw(rng, attr)
    concepts.append(attr)
    forms.append(f)
    template = _pick(rng, SHORT_ASPECT_TITLES[aspect_of(attr)])
    if "{cat}" not in template:
        return template.format(f=f)
    cat = lex.draw(rng, c.category)
    concepts.insert(0, c.category)
    forms.insert(0, cat)
    return template.format(f=f, cat=cat)
