"""Synthetic notes benchmark: procedurally drawn images + generated English text, in the canonical layout.

Why it exists: image neglect (docs/method.md#paper-claims, claim 2) can only be measured offline on data where part of what
makes two notes related is visible only in the image. docs/design.md#data records the regime where neglect shows up:
a frozen pretrained vision encoder, an LLM with text priors, and *most training pairs solvable from text alone*,
while short-text test pairs need the image. This generator makes that regime (and milder ones) reproducible.

Signal design:

* Notes belong to latent **clusters** (items). A pair is two notes of the same cluster.
* **Visual identity** (image only): shape x primary colour x pattern x accent colour (the pattern's second
  colour; ``solid`` has none). Each note draws it at a random position, scale and rotation, with per-note colour
  jitter, a random gradient background, smaller distractor shapes (from the same shape/colour/pattern
  vocabulary, some occluding the object) and pixel noise, so matching needs more than pixel equality.
* **Textual identity** (text only): a product name of two rare pseudo-words plus a category ("Velmor Quistak
  backpack"). The text never mentions shape, colour or pattern.
* **Long notes** name the product (title, topics and content; with probability ``partial_name_prob`` only one
  of the two name words). **Short notes** (``short_text_fraction`` of all notes) carry generic text from a pool
  shared by every cluster ("love this one", "new haul today"): only their image identifies the cluster.
* **Confusers**, so neither modality is trivially perfect: text families (clusters sharing the category and one
  name word), visual groups (same shape + colour with another pattern/accent, or same colour + pattern with
  another shape), and visual twins (an exact copy of another cluster's visual identity: only text separates them).
* **Badge twins** (opt-in, ``badge_twin_fraction`` > 0, preset ``layout``): every image also carries a small badge in
  its cluster's corner, and badge twins copy another cluster's visual identity but put the badge in another corner.
  Only *where* the badge is separates them in the image: layout, which a pooled feature vector (and a connector
  without positions) cannot see.
* **Training pairs** are biased towards long-long pairs (``train_long_pair_fraction``), so most training pairs
  are solvable from text alone (the docs/design.md#data regime). Test pairs are a random matching inside each test
  cluster, so the short-query/short-target subsets need the image. Train and test use disjoint clusters.

Files (see :func:`generate`): ``notes_{train,test}.csv``, ``pairs_{train,val,test}.csv``, the four
``pairs_test_{short,long}{query,gtdoc}.csv`` subsets (by the generator's own short/long flag),
``images/<note_id>.png``, ``notes_meta.csv`` (latent cluster, flags and identities per note; for analysis, never
for training) and ``dataset.json`` (written last: its presence marks a complete dataset).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import dataclasses
import json
import logging
import math
import multiprocessing
import os
import re
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

logger = logging.getLogger(__name__)

FORMAT_NAME = "notellm2_pl.data.synthetic"
FORMAT_VERSION = 1

NOTE_COLUMNS = ("note_id", "title", "topics", "content", "image")
PAIR_COLUMNS = ("query_id", "target_id")
SUBSET_FILES = ("shortquery", "shortgtdoc", "longquery", "longgtdoc")


@dataclass(frozen=True)
class SyntheticConfig:
    """Every setting of the synthetic benchmark. Defaults are frozen: changing one changes the dataset.

    Attributes:
        num_clusters: Number of latent items (clusters), train and test together.
        notes_per_cluster: Notes per cluster.
        test_fraction: Fraction of clusters (whole text families) that go to the test split.
        short_text_fraction: Fraction of all notes with short generic text that does not identify the cluster.
        partial_name_prob: Probability that a long note names only one of the two product-name words.
        train_pairs_per_cluster: Training pairs sampled per train cluster (capped by the possible pairs).
        val_pairs_per_cluster: Validation pairs per train cluster, disjoint from the training pairs.
        test_pairs_per_cluster: Test pairs per test cluster, a matching (each note in at most one pair).
        train_long_pair_fraction: Fraction of training pairs whose two notes both have long text (solvable from
            text alone); a negative value means unbiased sampling (the natural mix of short and long notes).
        text_family_fraction: Fraction of clusters in text families of 2-3 clusters sharing the category and one
            product-name word.
        visual_group_fraction: Fraction of clusters in visual confuser groups of 2-3 (same shape and colour with
            another pattern or accent, or same colour and pattern with another shape).
        visual_twin_fraction: Fraction of clusters whose visual identity copies another cluster's exactly.
        badge_twin_fraction: Fraction of clusters that copy another cluster's visual identity and differ from it only
            in the corner of a small badge (capped at half the clusters outside visual groups and twins); above 0
            every image also draws the badge at its cluster's corner (default 0: no badges).
        image_size: Side of the square RGB PNG images, in pixels.
        distractors_min: Minimum number of distractor shapes per image.
        distractors_max: Maximum number of distractor shapes per image.
        noise_std: Standard deviation of the pixel noise (0-255 scale, drawn at half resolution).
        colour_jitter: Standard deviation of the per-note colour jitter of the object (0-255 scale).
        seed: Random seed; the same seed and settings give byte-identical files.
    """

    num_clusters: int = 300
    notes_per_cluster: int = 10
    test_fraction: float = 0.25
    short_text_fraction: float = 0.35
    partial_name_prob: float = 0.1
    train_pairs_per_cluster: int = 12
    val_pairs_per_cluster: int = 1
    test_pairs_per_cluster: int = 4
    train_long_pair_fraction: float = 0.85
    text_family_fraction: float = 0.4
    visual_group_fraction: float = 0.4
    visual_twin_fraction: float = 0.05
    badge_twin_fraction: float = 0.0
    image_size: int = 96
    distractors_min: int = 1
    distractors_max: int = 3
    noise_std: float = 6.0
    colour_jitter: float = 12.0
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.num_clusters < 2:
            problems.append("num_clusters must be >= 2 (one train and one test cluster at least)")
        if self.notes_per_cluster < 2:
            problems.append("notes_per_cluster must be >= 2")
        if not 0.0 < self.test_fraction < 1.0:
            problems.append("test_fraction must be in (0, 1)")
        for name in ("short_text_fraction", "partial_name_prob", "text_family_fraction", "visual_group_fraction",
                     "visual_twin_fraction", "badge_twin_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be in [0, 1]")
        if self.train_long_pair_fraction > 1.0:
            problems.append("train_long_pair_fraction must be <= 1 (negative: unbiased)")
        if self.train_pairs_per_cluster < 1 or self.val_pairs_per_cluster < 0:
            problems.append("train_pairs_per_cluster must be >= 1 and val_pairs_per_cluster >= 0")
        if not 1 <= self.test_pairs_per_cluster <= self.notes_per_cluster // 2:
            problems.append(f"test_pairs_per_cluster must be in [1, notes_per_cluster // 2 = "
                            f"{self.notes_per_cluster // 2}]")
        if not 32 <= self.image_size <= 1024:
            problems.append("image_size must be in [32, 1024]")
        if not 0 <= self.distractors_min <= self.distractors_max:
            problems.append("need 0 <= distractors_min <= distractors_max")
        if self.noise_std < 0 or self.colour_jitter < 0:
            problems.append("noise_std and colour_jitter must be >= 0")
        if problems:
            raise ValueError("invalid SyntheticConfig: " + "; ".join(problems))


PRESETS: dict[str, SyntheticConfig] = {
    # Unit tests: a second or so.
    "tiny": SyntheticConfig(num_clusters=16, notes_per_cluster=6, test_pairs_per_cluster=2, train_pairs_per_cluster=6,
                            image_size=64),
    # Demo: generate + train a tiny model on 2 CPU cores in minutes. 3000 notes, 750 in the test pool.
    "demo": SyntheticConfig(),
    # docs/design.md#data's "more natural regime": 80 % of notes name the product, training pairs sampled without bias.
    "natural": SyntheticConfig(short_text_fraction=0.2, train_long_pair_fraction=-1.0),
    # Layout matters: badge twins (same object, badge in another corner; 89 of 300 clusters), no plain twins.
    "layout": SyntheticConfig(badge_twin_fraction=0.4, visual_twin_fraction=0.0),
    "small": SyntheticConfig(num_clusters=1000, notes_per_cluster=10),
    "large": SyntheticConfig(num_clusters=1200, notes_per_cluster=16, test_pairs_per_cluster=6,
                             train_pairs_per_cluster=30, val_pairs_per_cluster=2, image_size=128),
}

# ---------------------------------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------------------------------

SHAPES = ("circle", "square", "triangle", "pentagon", "hexagon", "star", "cross", "diamond", "heart", "crescent")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40), "orange": (245, 135, 20), "yellow": (240, 210, 30), "green": (40, 155, 60),
    "teal": (20, 155, 160), "blue": (40, 75, 215), "purple": (125, 50, 180), "pink": (240, 115, 180),
    "brown": (125, 75, 35), "black": (30, 30, 30),
}
PATTERNS = ("solid", "stripes", "dots", "checker", "rings", "grid", "chevron")
ACCENTS: dict[str, tuple[int, int, int]] = {"white": (245, 245, 240), "black": (25, 25, 25), "none": (0, 0, 0)}

CATEGORIES: dict[str, tuple[str, ...]] = {
    "mug": ("It keeps my coffee hot for ages.", "The handle feels sturdy.", "Fits perfectly under my machine."),
    "backpack": ("It fits my laptop and lunch.", "The straps are really comfy.", "Lots of little pockets inside."),
    "sneaker": ("They are super light on long walks.", "The sole has great grip.", "True to size for me."),
    "lamp": ("The light is warm and soft.", "Perfect for reading at night.", "The switch is easy to reach."),
    "candle": ("The scent fills the whole room.", "It burns slowly and evenly.", "Makes evenings so cozy."),
    "headphones": ("The sound is crisp and clear.", "Battery lasts all week.", "They fold flat for travel."),
    "notebook": ("The paper takes ink without bleeding.", "It lies flat when open.", "Great for journaling."),
    "scarf": ("It is soft and warm.", "Goes with every coat I own.", "Long enough to wrap twice."),
    "watch": ("The strap is comfy all day.", "Easy to read at a glance.", "Looks classy at work."),
    "tote": ("It holds all my groceries.", "The fabric feels strong.", "Folds into a tiny pouch."),
    "lipstick": ("The finish lasts through lunch.", "It does not dry my lips.", "Glides on smoothly."),
    "serum": ("My skin feels fresh after a week.", "It absorbs quickly.", "A few drops are enough."),
    "kettle": ("It boils water in a minute.", "Quiet and quick every morning.", "The lid opens easily."),
    "planter": ("My plants look happy in it.", "The drainage works well.", "Looks lovely on the shelf."),
    "blanket": ("It is very soft and warm.", "Perfect for movie nights.", "Washes well without pilling."),
    "sunglasses": ("They cut the glare on sunny days.", "Light on the nose.", "Come with a nice case."),
    "wallet": ("Slim enough for my pocket.", "Holds all my cards.", "The leather feels nice."),
    "hoodie": ("Cozy fabric and a relaxed fit.", "The hood keeps its shape.", "Great for lazy weekends."),
    "speaker": ("Loud enough for a party.", "The bass is surprisingly deep.", "Pairs in seconds."),
    "keyboard": ("Typing feels crisp and quiet.", "The keys have a nice travel.", "Connects to three devices."),
    "bottle": ("Keeps water cold all day.", "No leaks in my bag.", "Easy to clean."),
    "pillow": ("Supports my neck just right.", "Stays cool at night.", "Holds its shape."),
    "perfume": ("The scent lasts until evening.", "Fresh but not too strong.", "I get compliments daily."),
    "jacket": ("Warm without being bulky.", "The zip feels solid.", "Handles light rain well."),
}

SHORT_TITLES = (
    "love this one", "new haul today", "obsessed", "so happy with this", "look what I got", "weekend find",
    "my latest buy", "cannot stop using it", "ok this is cute", "guess what arrived", "today's pick",
    "little treat", "worth it?", "new fave", "just arrived", "mood", "had to get it", "small joys", "daily pick",
    "yes or no?", "treat yourself", "new in", "look at this", "my pick",
)
SHORT_CONTENTS = ("", "", "", "so good", "thoughts?", "10/10", "need I say more", "happy day", "so cute", "wow")
GENERIC_TAGS = ("haul", "dailylife", "ootd", "shopping", "newin", "favorites", "lifestyle", "giftideas", "weekend",
                "review", "musthave", "aesthetic")
LONG_TITLES = ("{name} {cat} review", "my new {name} {cat}", "{name}: honest review", "finally got the {name}",
               "{name} {cat} first look", "why I love {name}", "{name} {cat} thoughts")
LONG_OPENERS = ("Just picked up the {name} {cat} and I am impressed.", "The {name} {cat} is my new daily go-to.",
                "Been using the {name} {cat} for a week now.", "Trying out the {name} {cat} from my wishlist.",
                "Finally ordered the {name} {cat} everyone talks about.")
GENERIC_SENTENCES = ("Packaging was neat and delivery was fast.", "Would recommend it to friends.",
                     "Price felt fair for the quality.", "Honestly better than I expected.",
                     "Already thinking about a second one.", "It was a gift to myself this month.",
                     "Quality feels solid so far.", "Let me know if you want more details.")
NAME_SENTENCES = ("The {name} really stands out.", "Will keep using my {name}.",
                  "Cannot believe how good the {name} is.")

_ONSETS = ("b", "br", "c", "d", "dr", "f", "fl", "g", "gr", "k", "kl", "l", "m", "n", "p", "pr", "qu", "r", "s",
           "sk", "st", "t", "tr", "v", "vr", "z", "zh", "x")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou", "y", "ea", "io")
_CODAS = ("", "n", "r", "l", "s", "x", "k", "m", "th", "sh", "nd", "rt")
_WORD_RE = re.compile(r"[a-z0-9']+")


def _template_vocabulary() -> set[str]:
    """Every lower-case word our templates can emit; pseudo-words must avoid them."""
    texts: list[str] = [*SHORT_TITLES, *SHORT_CONTENTS, *GENERIC_TAGS, *LONG_TITLES, *LONG_OPENERS,
                        *GENERIC_SENTENCES, *NAME_SENTENCES, *CATEGORIES, *SHAPES, *COLOURS, *PATTERNS]
    for feats in CATEGORIES.values():
        texts.extend(feats)
    return {w for t in texts for w in _WORD_RE.findall(t.lower())}


def _pseudo_word(rng: np.random.Generator) -> str:
    n_syll = 2 if rng.random() < 0.75 else 3
    parts = [str(rng.choice(_ONSETS)) + str(rng.choice(_VOWELS)) for _ in range(n_syll)]
    return "".join(parts) + str(rng.choice(_CODAS))


def _make_words(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` distinct rare pseudo-words (4-9 letters) that never occur in the template vocabulary."""
    reserved = _template_vocabulary()
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        w = _pseudo_word(rng)
        if 4 <= len(w) <= 9 and w not in seen and w not in reserved:
            seen.add(w)
            out.append(w)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Latent structure
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class _Cluster:
    cid: int
    split: str = ""
    category: str = ""
    words: tuple[str, str] = ("", "")
    text_family: int = -1
    shape: str = ""
    colour: str = ""
    pattern: str = ""
    accent: str = ""
    visual_group: int = -1
    visual_twin_of: int = -1
    corner: int = -1  # badge corner 0-3 (top-left, top-right, bottom-left, bottom-right); -1: no badge
    badge_twin_of: int = -1

    @property
    def visual(self) -> tuple[str, str, str, str]:
        return (self.shape, self.colour, self.pattern, self.accent)

    @property
    def name(self) -> str:
        return f"{self.words[0].capitalize()} {self.words[1].capitalize()}"


def _group_sizes(rng: np.random.Generator, n_members: int) -> list[int]:
    """Split ``n_members`` into groups of 2 or 3 (a lone leftover joins the last group)."""
    sizes: list[int] = []
    left = n_members
    while left >= 2:
        s = 3 if (left >= 3 and rng.random() < 0.4) else 2
        sizes.append(s)
        left -= s
    if left == 1 and sizes:
        sizes[-1] += 1
    return sizes


def _build_text_identities(rng: np.random.Generator, cfg: SyntheticConfig) -> list[_Cluster]:
    n = cfg.num_clusters
    clusters = [_Cluster(cid=i) for i in range(n)]
    order = [int(i) for i in rng.permutation(n)]
    n_fam = int(round(cfg.text_family_fraction * n))
    sizes = _group_sizes(rng, n_fam) if n_fam >= 2 else []
    words = iter(_make_words(rng, 2 * n))
    categories = list(CATEGORIES)
    pos = 0
    family = 0
    for size in sizes:
        members = order[pos:pos + size]
        pos += size
        cat = categories[int(rng.integers(len(categories)))]
        shared = next(words)
        slot = int(rng.integers(2))
        for cid in members:
            own = next(words)
            c = clusters[cid]
            c.category, c.text_family = cat, family
            c.words = (shared, own) if slot == 0 else (own, shared)
        family += 1
    for cid in order[pos:]:
        c = clusters[cid]
        c.category = categories[int(rng.integers(len(categories)))]
        c.words = (next(words), next(words))
        c.text_family = family
        family += 1
    return clusters


def _split_clusters(rng: np.random.Generator, cfg: SyntheticConfig, clusters: list[_Cluster]) -> None:
    """Assign whole text families to test until ``test_fraction`` of the clusters are there."""
    families: dict[int, list[_Cluster]] = {}
    for c in clusters:
        families.setdefault(c.text_family, []).append(c)
    fam_ids = sorted(families)
    fam_ids = [fam_ids[int(i)] for i in rng.permutation(len(fam_ids))]
    target = min(max(1, int(round(cfg.test_fraction * len(clusters)))), len(clusters) - 1)
    n_test = 0
    for f in fam_ids:
        members = families[f]
        split = "test" if n_test < target and n_test + len(members) < len(clusters) else "train"
        if split == "test":
            n_test += len(members)
        for c in members:
            c.split = split
    if n_test == len(clusters) or n_test == 0:  # pragma: no cover - guarded by the size checks above
        raise RuntimeError("could not split clusters into train and test")


def _all_visuals() -> list[tuple[str, str, str, str]]:
    out = []
    for s in SHAPES:
        for col in COLOURS:
            for p in PATTERNS:
                if p == "solid":
                    out.append((s, col, p, "none"))
                    continue
                for a in ("white", "black"):
                    if not (col == "black" and a == "black"):
                        out.append((s, col, p, a))
    return out


def _assign_visuals(rng: np.random.Generator, cfg: SyntheticConfig, clusters: list[_Cluster]) -> int:
    """Give each cluster a visual identity: confuser groups, twins, unique rest. Returns #forced duplicates."""
    combos = _all_visuals()
    available = [combos[int(i)] for i in rng.permutation(len(combos))]
    used: set[tuple[str, str, str, str]] = set()
    forced = 0

    def take(pred: Any = None) -> tuple[str, str, str, str] | None:
        for k, v in enumerate(available):
            if v not in used and (pred is None or pred(v)):
                del available[k]
                used.add(v)
                return v
        return None

    group_id = 0
    for split in ("train", "test"):
        members = [c for c in clusters if c.split == split]
        order = [members[int(i)] for i in rng.permutation(len(members))]
        n_group = int(round(cfg.visual_group_fraction * len(order)))
        n_twin = min(int(round(cfg.visual_twin_fraction * len(order))), max(0, len(order) - n_group - 1))
        pos = 0
        for size in _group_sizes(rng, n_group) if n_group >= 2 else []:
            grp = order[pos:pos + size]
            pos += size
            base = take()
            if base is None:
                break
            same_shape = rng.random() < 0.5
            vis = [base]
            for _ in range(size - 1):
                if same_shape:  # same shape + colour, another pattern/accent
                    v = take(lambda x, b=base: x[0] == b[0] and x[1] == b[1])
                else:  # same colour + pattern (+accent), another shape
                    v = take(lambda x, b=base: x[1:] == b[1:])
                vis.append(v if v is not None else base)
                forced += v is None
            for c, v in zip(grp, vis, strict=True):
                c.shape, c.colour, c.pattern, c.accent = v
                c.visual_group = group_id
            group_id += 1
        twins = order[pos:pos + n_twin]
        rest = order[pos + n_twin:]
        for c in rest:
            v = take()
            if v is None:  # more clusters than distinct identities: reuse one
                v = _fallback(rng, combos)
                forced += 1
            c.shape, c.colour, c.pattern, c.accent = v
        twin_ids = {c.cid for c in twins}
        sources = [c for c in members if c.shape and c.cid not in twin_ids]
        for c in twins:
            src = sources[int(rng.integers(len(sources)))]
            c.shape, c.colour, c.pattern, c.accent = src.visual
            c.visual_twin_of = src.cid
    if forced:
        logger.warning("%d clusters reuse a visual identity (too few of the %d identities left for their "
                       "confuser group)", forced, len(combos))
    return forced


def _fallback(rng: np.random.Generator, combos: list[tuple[str, str, str, str]]) -> tuple[str, str, str, str]:
    """A random visual identity (used once the distinct identities are exhausted)."""
    return combos[int(rng.integers(len(combos)))]


def _assign_badges(cfg: SyntheticConfig, clusters: list[_Cluster]) -> None:
    """Badge corners for every cluster, and badge twins: another cluster's visual identity, another corner.

    Twins are drawn from clusters outside visual groups and plain twins, per split. Uses its own random stream, so
    the rest of the dataset is the same as without badges.
    """
    rng = np.random.default_rng([cfg.seed, 0xBAD6E])
    for c in clusters:
        c.corner = int(rng.integers(4))
    for split in ("train", "test"):
        free = [c for c in clusters if c.split == split and c.visual_group < 0 and c.visual_twin_of < 0]
        order = [free[int(i)] for i in rng.permutation(len(free))]
        n_twin = min(round(cfg.badge_twin_fraction * sum(c.split == split for c in clusters)), len(order) // 2)
        twins, sources = order[:n_twin], order[n_twin:]
        for c in twins:
            src = sources[int(rng.integers(len(sources)))]
            c.shape, c.colour, c.pattern, c.accent = src.visual
            c.corner = (src.corner + 1 + int(rng.integers(3))) % 4
            c.badge_twin_of = src.cid


# ---------------------------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------------------------


def _short_text(rng: np.random.Generator) -> tuple[str, list[str], str]:
    title = str(rng.choice(SHORT_TITLES))
    n_tags = int(rng.integers(0, 3))
    tags = [str(t) for t in rng.choice(GENERIC_TAGS, size=n_tags, replace=False)] if n_tags else []
    return title, tags, str(rng.choice(SHORT_CONTENTS))


def _long_text(rng: np.random.Generator, c: _Cluster, mention: tuple[str, ...]) -> tuple[str, list[str], str]:
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


# ---------------------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------------------


def _regular(k: int, phase: float = 0.0) -> np.ndarray:
    t = phase + np.arange(k) * 2 * np.pi / k
    return np.stack([np.cos(t), np.sin(t)], 1)


def _unit_shape(shape: str) -> np.ndarray:
    """Polygon of a shape in unit coordinates (radius ~1), as ``(K, 2)``."""
    if shape == "circle":
        return _regular(48)
    if shape == "square":
        return _regular(4, np.pi / 4) * 1.1
    if shape == "triangle":
        return _regular(3, -np.pi / 2) * 1.15
    if shape == "pentagon":
        return _regular(5, -np.pi / 2)
    if shape == "hexagon":
        return _regular(6)
    if shape == "star":
        pts = _regular(10, -np.pi / 2)
        return pts * np.where(np.arange(10) % 2 == 0, 1.15, 0.5)[:, None]
    if shape == "cross":
        a, b = 0.36, 1.0
        return np.array([(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a), (-b, a),
                         (-b, -a), (-a, -a)])
    if shape == "diamond":
        return np.array([(0.0, -1.15), (0.65, 0.0), (0.0, 1.15), (-0.65, 0.0)])
    if shape == "heart":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
        return np.stack([x, -y - 2.5], 1) / 15.0
    if shape == "crescent":
        # Outer unit circle minus a circle of radius 0.85 centred at (0.45, 0).
        outer = np.linspace(np.deg2rad(57.8), np.deg2rad(360 - 57.8), 36)
        inner = np.linspace(np.deg2rad(-84.4), np.deg2rad(-275.6), 30)
        pts_o = np.stack([np.cos(outer), np.sin(outer)], 1)
        pts_i = np.stack([0.45 + 0.85 * np.cos(inner), 0.85 * np.sin(inner)], 1)
        return np.concatenate([pts_o, pts_i]) * 1.1
    raise ValueError(f"unknown shape {shape!r}")


_UNIT_SHAPES: dict[str, np.ndarray] = {}


def _shape_alpha(shape: str, box: tuple[int, int, int, int], cx: float, cy: float, radius: float,
                 angle: float) -> np.ndarray:
    """Anti-aliased coverage ``(h, w)`` in [0, 1] over the pixel box ``(x0, y0, x1, y1)`` (2x supersampled)."""
    if shape not in _UNIT_SHAPES:
        _UNIT_SHAPES[shape] = _unit_shape(shape)
    pts = _UNIT_SHAPES[shape]
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    xy = (pts @ rot.T) * radius + np.array([cx - box[0], cy - box[1]])  # (K, 2) in box pixels
    ss = 2
    w, h = box[2] - box[0], box[3] - box[1]
    mask = Image.new("L", (w * ss, h * ss), 0)
    ImageDraw.Draw(mask).polygon([(float(x) * ss, float(y) * ss) for x, y in xy], fill=255)
    mask = mask.resize((w, h), Image.Resampling.BOX)
    return np.asarray(mask, dtype=np.float32) / 255.0


def _pattern_mask(pattern: str, grid: tuple[np.ndarray, np.ndarray], cx: float, cy: float, radius: float,
                  angle: float, period: float) -> np.ndarray:
    """Where the accent colour shows, ``(S, S)`` in {0, 1}, in the object's own (rotated, scaled) frame."""
    gx, gy = grid
    dx, dy = gx - cx, gy - cy
    u = (dx * math.cos(angle) + dy * math.sin(angle)) / (radius * period)
    v = (-dx * math.sin(angle) + dy * math.cos(angle)) / (radius * period)
    fu, fv = u - np.floor(u), v - np.floor(v)
    if pattern == "solid":
        m = np.zeros_like(u, dtype=bool)
    elif pattern == "stripes":
        m = fu < 0.5
    elif pattern == "dots":
        m = (fu - 0.5) ** 2 + (fv - 0.5) ** 2 < 0.3**2
    elif pattern == "checker":
        m = (np.floor(u) + np.floor(v)) % 2 == 0
    elif pattern == "rings":
        r = np.sqrt(u**2 + v**2)
        m = r - np.floor(r) < 0.5
    elif pattern == "grid":
        m = (fu < 0.22) | (fv < 0.22)
    elif pattern == "chevron":
        w = u + np.abs(fv - 0.5) * 1.5
        m = w - np.floor(w) < 0.5
    else:
        raise ValueError(f"unknown pattern {pattern!r}")
    return m.astype(np.float32)


def _paint(img: np.ndarray, rng: np.random.Generator, grid: tuple[np.ndarray, np.ndarray], visual: Sequence[str],
           cx: float, cy: float, radius: float, jitter: float) -> None:
    """Composite one patterned shape onto ``img`` (``(S, S, 3)`` float32) in place, within its bounding box."""
    shape, colour, pattern, accent = visual
    angle = float(rng.uniform(0, 2 * np.pi))
    bright = float(rng.uniform(0.85, 1.1))
    primary = np.clip(np.array(COLOURS[colour], np.float32) * bright + rng.normal(0, jitter, 3), 0, 255)
    acc = np.clip(np.array(ACCENTS[accent], np.float32) + rng.normal(0, jitter / 2, 3), 0, 255)
    period = float(rng.uniform(0.3, 0.4))
    size = img.shape[0]
    reach = 1.2 * radius  # every unit shape lies within radius 1.2
    x0, y0 = max(0, int(math.floor(cx - reach))), max(0, int(math.floor(cy - reach)))
    x1, y1 = min(size, int(math.ceil(cx + reach)) + 1), min(size, int(math.ceil(cy + reach)) + 1)
    if x1 <= x0 or y1 <= y0:
        return
    alpha = _shape_alpha(shape, (x0, y0, x1, y1), cx, cy, radius, angle)[..., None]  # (h, w, 1)
    region = img[y0:y1, x0:x1]
    if pattern == "solid":
        col: np.ndarray = primary
    else:
        sub = (grid[0][y0:y1, x0:x1], grid[1][y0:y1, x0:x1])
        m = _pattern_mask(pattern, sub, cx, cy, radius, angle, period)[..., None]  # (h, w, 1)
        col = primary * (1 - m) + acc * m
    region *= 1 - alpha
    region += col * alpha


BADGE = ("square", "black", "checker", "white")
"""The badge's look (identical in every image; only its corner differs)."""


def _paint_badge(img: np.ndarray, rng: np.random.Generator, grid: tuple[np.ndarray, np.ndarray], corner: int) -> None:
    """The badge near corner ``corner`` (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right), slightly jittered."""
    s = img.shape[0]
    margin = 0.12 * s
    cx = margin if corner in (0, 2) else s - margin
    cy = margin if corner in (0, 1) else s - margin
    jx, jy = rng.uniform(-0.03, 0.03, 2) * s
    _paint(img, rng, grid, BADGE, float(cx + jx), float(cy + jy), 0.07 * s, 6.0)


def _render_image(rng: np.random.Generator, cfg: SyntheticConfig, visual: tuple[str, str, str, str],
                  corner: int = -1) -> Image.Image:
    s = cfg.image_size
    coords = np.arange(s, dtype=np.float32) + 0.5
    grid = (coords[None, :].repeat(s, 0), coords[:, None].repeat(s, 1))  # x, y: (S, S) each
    # Background: a light random tint with a linear gradient in a random direction.
    base = rng.uniform(165, 240, 3).astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    ramp = ((grid[0] - s / 2) * math.cos(theta) + (grid[1] - s / 2) * math.sin(theta)) / s  # (S, S) in ~[-.7, .7]
    img = base[None, None, :] + ramp[..., None] * rng.uniform(-40, 40, 3).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.float32)
    n_distract = int(rng.integers(cfg.distractors_min, cfg.distractors_max + 1))
    in_front = rng.random(n_distract) < 0.25
    distractors = []
    for _ in range(n_distract):
        pattern = str(rng.choice(PATTERNS))
        col = str(rng.choice(list(COLOURS)))
        accent = "none" if pattern == "solid" else ("white" if col == "black" else str(rng.choice(["white", "black"])))
        vis = (str(rng.choice(SHAPES)), col, pattern, accent)
        distractors.append((vis, rng.uniform(0, s, 2), s * float(rng.uniform(0.07, 0.14))))
    for (vis, (dx, dy), r), front in zip(distractors, in_front, strict=True):
        if not front:
            _paint(img, rng, grid, vis, float(dx), float(dy), r, 10.0)
    radius = s * float(rng.uniform(0.2, 0.3))
    cx, cy = rng.uniform(radius * 0.8, s - radius * 0.8, 2)
    _paint(img, rng, grid, visual, float(cx), float(cy), radius, cfg.colour_jitter)
    for (vis, (dx, dy), r), front in zip(distractors, in_front, strict=True):
        if front:
            _paint(img, rng, grid, vis, float(dx), float(dy), r, 10.0)
    if corner >= 0:  # drawn last, on top: no draw at all without badges, so those images are unchanged
        _paint_badge(img, rng, grid, corner)
    if cfg.noise_std > 0:
        h = (s + 1) // 2
        noise = rng.normal(0, cfg.noise_std, (h, h, 1)).astype(np.float32)  # grey grain: keeps PNGs small
        img += noise.repeat(2, 0).repeat(2, 1)[:s, :s]
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB")


# ---------------------------------------------------------------------------------------------------------------
# Notes and pairs
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class _Note:
    cid: int
    split: str
    is_short: bool = False
    mention: tuple[str, ...] = ()
    note_id: str = ""
    title: str = ""
    topics: list[str] = dataclasses.field(default_factory=list)
    content: str = ""
    text_identifies: bool = False


def _build_notes(rng: np.random.Generator, cfg: SyntheticConfig, clusters: list[_Cluster]) -> list[_Note]:
    notes = [_Note(cid=c.cid, split=c.split) for c in clusters for _ in range(cfg.notes_per_cluster)]
    n_short = int(round(cfg.short_text_fraction * len(notes)))
    for i in rng.permutation(len(notes))[:n_short]:
        notes[int(i)].is_short = True
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
    width = max(6, len(str(len(notes) - 1)))
    for k, i in enumerate(rng.permutation(len(notes))):
        notes[int(i)].note_id = f"n{k:0{width}d}"
    return notes


def _sample_pairs(rng: np.random.Generator, cfg: SyntheticConfig,
                  notes: list[_Note]) -> dict[str, list[tuple[int, int]]]:
    """Pairs as note indices: train/val from train clusters, test as a matching inside each test cluster."""
    by_cluster: dict[int, list[int]] = {}
    for i, n in enumerate(notes):
        by_cluster.setdefault(n.cid, []).append(i)
    out: dict[str, list[tuple[int, int]]] = {"train": [], "val": [], "test": []}

    def oriented(a: int, b: int) -> tuple[int, int]:
        return (a, b) if rng.random() < 0.5 else (b, a)

    for cid in sorted(by_cluster):
        idx = by_cluster[cid]
        if notes[idx[0]].split == "test":
            perm = [idx[int(k)] for k in rng.permutation(len(idx))]
            for k in range(cfg.test_pairs_per_cluster):
                out["test"].append((perm[2 * k], perm[2 * k + 1]))
            continue
        combos = [(a, b) for ai, a in enumerate(idx) for b in idx[ai + 1:]]
        combos = [combos[int(k)] for k in rng.permutation(len(combos))]
        long_long = [p for p in combos if not notes[p[0]].is_short and not notes[p[1]].is_short]
        mixed = [p for p in combos if notes[p[0]].is_short or notes[p[1]].is_short]
        chosen: list[tuple[int, int]] = []
        for _ in range(min(cfg.train_pairs_per_cluster, len(combos))):
            if cfg.train_long_pair_fraction < 0:
                src = long_long if (rng.random() < len(long_long) / max(1, len(long_long) + len(mixed))) else mixed
            else:
                src = long_long if rng.random() < cfg.train_long_pair_fraction else mixed
            if not src:
                src = mixed or long_long
            chosen.append(src.pop())
        out["train"].extend(oriented(a, b) for a, b in chosen)
        chosen_set = set(chosen)
        rest = [p for p in combos if p not in chosen_set]
        out["val"].extend(oriented(a, b) for a, b in rest[: cfg.val_pairs_per_cluster])
    return out


# ---------------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------------

_OUTPUT_NAMES = ("notes_train.csv", "notes_test.csv", "notes_meta.csv", "pairs_train.csv", "pairs_val.csv",
                 "pairs_test.csv", *(f"pairs_test_{s}.csv" for s in SUBSET_FILES))


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    os.replace(tmp, path)


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
        for name in _OUTPUT_NAMES:
            (root / name).unlink(missing_ok=True)
        if (root / "images").is_dir():
            shutil.rmtree(root / "images")
    (root / "images").mkdir(parents=True, exist_ok=True)


def _describe(cfg: SyntheticConfig) -> dict[str, Any]:
    return {
        "clusters": "Notes belong to latent clusters (items); every pair is two notes of one cluster. Train and "
                    "test clusters are disjoint; notes_meta.csv holds the latent cluster of each note (analysis "
                    "only, never an input).",
        "image_only": "Visual identity = shape x colour x pattern x accent, drawn at random position, scale and "
                      "rotation with per-note colour jitter, a gradient background, distractor shapes and noise. "
                      "The text never mentions it.",
        "text_only": "Textual identity = a product name of two rare pseudo-words + a category. Long notes name "
                     f"it (with probability {cfg.partial_name_prob} only one word); short notes never do.",
        "short_notes": f"{cfg.short_text_fraction:.0%} of notes have short generic text shared by all clusters: "
                       "only the image identifies them. The subset files use this flag (is_short), not a length "
                       "threshold; short text is at most ~60 characters in all, long text more than 90.",
        "confusers": "Text families share the category and one name word; visual groups share shape+colour or "
                     "colour+pattern; visual twins copy another cluster's visual identity (text separates them).",
        **({"badges": "Every image carries a small badge at its cluster's corner; badge twins copy another "
                      "cluster's visual identity with the badge in another corner, so only layout separates them."}
           if cfg.badge_twin_fraction > 0 else {}),
        "pairs": "Training pairs favour long-long pairs (train_long_pair_fraction), so most are solvable from "
                 "text alone; val pairs are other pairs of train clusters; test pairs are a matching inside each "
                 "test cluster (each note in at most one pair), so the short subsets need the image.",
        "columns": "topics are tags joined by '|'; image is a path relative to this directory.",
    }


_Job = tuple[int, str, tuple[str, str, str, str], int]  # (note index, note id, visual identity, badge corner)


def _render_chunk(folder: str, config: SyntheticConfig, entropy: tuple[int, int], jobs: list[_Job]) -> int:
    """Draw and save the images of ``jobs``; each note has its own generator, so order and workers don't matter."""
    total = 0
    for k, note_id, visual, corner in jobs:
        rng = np.random.default_rng([entropy[0], entropy[1], k])
        path = Path(folder) / f"{note_id}.png"
        _render_image(rng, config, visual, corner).save(path, format="PNG", optimize=False, compress_level=3)
        total += path.stat().st_size
    return total


def _render_all(folder: Path, config: SyntheticConfig, entropy: tuple[int, int], jobs: list[_Job],
                num_workers: int | None) -> int:
    if num_workers is None:
        num_workers = min(4, os.cpu_count() or 1) if len(jobs) >= 1000 else 0
    if num_workers <= 1:
        return _render_chunk(str(folder), config, entropy, jobs)
    chunks = [jobs[i::num_workers * 4] for i in range(num_workers * 4)]
    # spawn, not fork: the caller may hold threads (torch, BLAS) that a forked child must not inherit.
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=ctx) as pool:
        return sum(pool.map(_render_chunk, [str(folder)] * len(chunks), [config] * len(chunks),
                            [entropy] * len(chunks), chunks))


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
    seeds = np.random.SeedSequence(config.seed).spawn(4)
    rng_struct, rng_text, rng_pairs = (np.random.default_rng(s) for s in seeds[:3])
    image_entropy = seeds[3].generate_state(2)

    clusters = _build_text_identities(rng_struct, config)
    _split_clusters(rng_struct, config, clusters)
    forced = _assign_visuals(rng_struct, config, clusters)
    if config.badge_twin_fraction > 0:
        _assign_badges(config, clusters)
    notes = _build_notes(rng_text, config, clusters)
    pairs = _sample_pairs(rng_pairs, config, notes)
    t_struct = time.perf_counter() - t0

    jobs = [(k, note.note_id, clusters[note.cid].visual, clusters[note.cid].corner) for k, note in enumerate(notes)]
    image_bytes = _render_all(root / "images", config, (int(image_entropy[0]), int(image_entropy[1])), jobs,
                              num_workers)
    t_images = time.perf_counter() - t0 - t_struct

    def note_row(n: _Note) -> tuple[str, str, str, str, str]:
        return (n.note_id, n.title, "|".join(n.topics), n.content, f"images/{n.note_id}.png")

    for split in ("train", "test"):
        rows = sorted((note_row(n) for n in notes if n.split == split), key=lambda r: r[0])
        _write_csv(root / f"notes_{split}.csv", NOTE_COLUMNS, rows)
    badges = config.badge_twin_fraction > 0  # badge columns only then: other datasets keep their bytes
    meta = sorted(
        (n.note_id, n.split, n.cid, int(n.is_short), " ".join(n.mention), int(n.text_identifies),
         clusters[n.cid].category, clusters[n.cid].name, *clusters[n.cid].visual, clusters[n.cid].text_family,
         clusters[n.cid].visual_group, clusters[n.cid].visual_twin_of,
         *((clusters[n.cid].corner, clusters[n.cid].badge_twin_of) if badges else ()))
        for n in notes
    )
    _write_csv(root / "notes_meta.csv", ("note_id", "split", "cluster_id", "is_short", "mentioned_words",
                                         "text_identifies", "category", "product_name", "shape", "colour",
                                         "pattern", "accent", "text_family", "visual_group", "visual_twin_of",
                                         *(("badge_corner", "badge_twin_of") if badges else ())),
               meta)
    ids = {name: [(notes[a].note_id, notes[b].note_id) for a, b in ps] for name, ps in pairs.items()}
    for name in ("train", "val", "test"):
        _write_csv(root / f"pairs_{name}.csv", PAIR_COLUMNS, ids[name])
    subsets = {
        "shortquery": [p for p in pairs["test"] if notes[p[0]].is_short],
        "shortgtdoc": [p for p in pairs["test"] if notes[p[1]].is_short],
        "longquery": [p for p in pairs["test"] if not notes[p[0]].is_short],
        "longgtdoc": [p for p in pairs["test"] if not notes[p[1]].is_short],
    }
    for name, ps in subsets.items():
        _write_csv(root / f"pairs_test_{name}.csv", PAIR_COLUMNS, [(notes[a].note_id, notes[b].note_id) for a, b in ps])

    def text_len(n: _Note) -> int:
        return len(n.title) + len("|".join(n.topics)) + len(n.content)

    short_lens = [text_len(n) for n in notes if n.is_short] or [0]
    long_lens = [text_len(n) for n in notes if not n.is_short] or [0]
    train_pairs = pairs["train"]
    counts = {
        "clusters_train": sum(c.split == "train" for c in clusters),
        "clusters_test": sum(c.split == "test" for c in clusters),
        "notes_train": sum(n.split == "train" for n in notes),
        "notes_test": sum(n.split == "test" for n in notes),
        "notes_short": sum(n.is_short for n in notes),
        "pairs_train": len(train_pairs),
        "pairs_val": len(pairs["val"]),
        "pairs_test": len(pairs["test"]),
        **{f"pairs_test_{k}": len(v) for k, v in subsets.items()},
        "visual_identities_forced_shared": forced,
    }
    fractions = {
        "short_notes": counts["notes_short"] / len(notes),
        "train_pairs_both_long": sum(not notes[a].is_short and not notes[b].is_short for a, b in train_pairs)
        / max(1, len(train_pairs)),
        "train_pairs_text_solvable": sum(notes[a].text_identifies and notes[b].text_identifies
                                         for a, b in train_pairs) / max(1, len(train_pairs)),
        "test_pairs_text_solvable": sum(notes[a].text_identifies and notes[b].text_identifies
                                        for a, b in pairs["test"]) / max(1, len(pairs["test"])),
    }
    text_lengths = {"short_max_chars": max(short_lens), "long_min_chars": min(long_lens),
                    "short_mean_chars": float(np.mean(short_lens)), "long_mean_chars": float(np.mean(long_lens))}
    info = {
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
                      **{k: f"pairs_test_{k}.csv" for k in SUBSET_FILES}},
            "pair_columns": list(PAIR_COLUMNS),
            "images": "images/<note_id>.png",
            "meta": "notes_meta.csv",
        },
        "description": _describe(config),
    }
    tmp = root / "dataset.json.tmp"
    tmp.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, root / "dataset.json")
    elapsed = time.perf_counter() - t0
    logger.info("synthetic dataset written to %s: %d notes, %d train / %d test pairs in %.1f s", root, len(notes),
                len(train_pairs), len(pairs["test"]), elapsed)
    return {**counts, **fractions, **text_lengths, "image_bytes": image_bytes, "seconds": round(elapsed, 2),
            "seconds_images": round(t_images, 2), "root": str(root)}


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


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------


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
    """Build a config from parsed CLI arguments: the preset, then the explicit overrides.

    Args:
        args: Namespace from :func:`build_parser`.

    Returns:
        The resulting config.
    """
    overrides = {f.name: getattr(args, f.name) for f in fields(SyntheticConfig) if getattr(args, f.name) is not None}
    return dataclasses.replace(PRESETS[args.preset], **overrides)


def cli_main(argv: list[str] | None = None) -> int:
    """Command-line entry point: ``notellm2 synth --out DIR [--preset demo] [--seed S] [--overwrite | --exist-ok]``.

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
    raise SystemExit(cli_main())
