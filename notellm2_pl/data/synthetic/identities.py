"""Latent structure of the synthetic benchmark: clusters (items) with a textual identity (category + product name),
a visual identity (shape x colour x pattern x accent), their confusers, and the train/test split of clusters."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from notellm2_pl.data.synthetic.config import SyntheticConfig
from notellm2_pl.data.synthetic.vocabulary import CATEGORIES, COLOURS, PATTERNS, SHAPES, Visual, make_words

logger = logging.getLogger(__name__)


@dataclass
class Cluster:
    """One latent item and its identities.

    Attributes:
        cid: Cluster id (0..num_clusters-1).
        split: ``train`` or ``test`` (whole text families go to one split).
        category: Product category (a key of :data:`~notellm2_pl.data.synthetic.vocabulary.CATEGORIES`).
        words: The two pseudo-words of the product name.
        text_family: Id of the text family (clusters sharing the category and one name word).
        shape: Visual identity: shape.
        colour: Visual identity: primary colour.
        pattern: Visual identity: pattern.
        accent: Visual identity: the pattern's second colour (``none`` for ``solid``).
        visual_group: Id of the visual confuser group, -1 when none.
        visual_twin_of: Cluster whose visual identity this one copies, -1 when none.
        corner: Badge corner 0-3 (top-left, top-right, bottom-left, bottom-right); -1: no badge.
        badge_twin_of: Cluster whose visual identity this one copies with the badge elsewhere, -1 when none.
        held_out: A train-side cluster held out for validation (its notes are in no training pair).
        maker: Paraphrase text only: the maker (brand) its notes may name, shared with its text family and with
            some unrelated clusters.
        attributes: Paraphrase text only: its attribute concepts (keys of
            :data:`~notellm2_pl.data.synthetic.lexicon.ATTRIBUTE_FORMS`), one per aspect.
    """

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
    corner: int = -1
    badge_twin_of: int = -1
    held_out: bool = False
    maker: str = ""
    attributes: tuple[str, ...] = ()

    @property
    def visual(self) -> Visual:
        """(shape, colour, pattern, accent)."""
        return (self.shape, self.colour, self.pattern, self.accent)

    @property
    def name(self) -> str:
        """The product name, capitalised ("Velmor Quistak")."""
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


def build_text_identities(rng: np.random.Generator, cfg: SyntheticConfig) -> list[Cluster]:
    """Clusters with a category and a two-word product name; ``text_family_fraction`` of them in text families.

    Args:
        rng: The structure's random stream.
        cfg: Generator settings.

    Returns:
        ``cfg.num_clusters`` clusters, indexed by cid.
    """
    n = cfg.num_clusters
    clusters = [Cluster(cid=i) for i in range(n)]
    order = [int(i) for i in rng.permutation(n)]
    n_fam = round(cfg.text_family_fraction * n)
    sizes = _group_sizes(rng, n_fam) if n_fam >= 2 else []
    words = iter(make_words(rng, 2 * n))
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


def split_clusters(rng: np.random.Generator, cfg: SyntheticConfig, clusters: list[Cluster]) -> None:
    """Assign whole text families to test until ``test_fraction`` of the clusters are there, then hold out
    train-side families for validation until ``val_cluster_fraction`` (same draw order, no extra randomness)."""
    families: dict[int, list[Cluster]] = {}
    for c in clusters:
        families.setdefault(c.text_family, []).append(c)
    fam_ids = sorted(families)
    fam_ids = [fam_ids[int(i)] for i in rng.permutation(len(fam_ids))]
    target = min(max(1, round(cfg.test_fraction * len(clusters))), len(clusters) - 1)
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
    val_target = round(cfg.val_cluster_fraction * len(clusters))
    n_val = 0
    for f in fam_ids:
        members = families[f]
        if n_val >= val_target or members[0].split != "train" or n_test + n_val + len(members) >= len(clusters):
            continue
        n_val += len(members)
        for c in members:
            c.held_out = True


def all_visuals() -> list[Visual]:
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


class _VisualPool:
    """The distinct visual identities not yet given to a cluster, in a random order."""

    def __init__(self, rng: np.random.Generator, combos: list[Visual]) -> None:
        self.available = [combos[int(i)] for i in rng.permutation(len(combos))]
        self.used: set[Visual] = set()

    def take(self, pred: Callable[[Visual], bool] | None = None) -> Visual | None:
        """Remove and return the first unused identity matching ``pred`` (None when there is none)."""
        for k, v in enumerate(self.available):
            if v not in self.used and (pred is None or pred(v)):
                del self.available[k]
                self.used.add(v)
                return v
        return None


def _assign_groups(rng: np.random.Generator, pool: _VisualPool, order: list[Cluster], n_group: int,
                   group_id: int) -> tuple[int, int, int]:
    """Visual confuser groups over the first ``n_group`` clusters of ``order``.

    Returns:
        (clusters of ``order`` consumed, next group id, identities reused for lack of a distinct one).
    """
    pos = forced = 0
    for size in _group_sizes(rng, n_group) if n_group >= 2 else []:
        grp = order[pos:pos + size]
        pos += size
        base = pool.take()
        if base is None:
            break
        same_shape = rng.random() < 0.5
        vis = [base]
        for _ in range(size - 1):
            if same_shape:  # same shape + colour, another pattern/accent
                v = pool.take(lambda x, b=base: x[0] == b[0] and x[1] == b[1])
            else:  # same colour + pattern (+accent), another shape
                v = pool.take(lambda x, b=base: x[1:] == b[1:])
            vis.append(v if v is not None else base)
            forced += v is None
        for c, v in zip(grp, vis, strict=True):
            c.shape, c.colour, c.pattern, c.accent = v
            c.visual_group = group_id
        group_id += 1
    return pos, group_id, forced


def _assign_split(rng: np.random.Generator, cfg: SyntheticConfig, pool: _VisualPool, combos: list[Visual],
                  members: list[Cluster], group_id: int) -> tuple[int, int]:
    """Visual identities of one split's clusters: confuser groups, then unique identities, then twins.

    Returns:
        (next group id, identities reused for lack of a distinct one).
    """
    order = [members[int(i)] for i in rng.permutation(len(members))]
    n_group = round(cfg.visual_group_fraction * len(order))
    n_twin = min(round(cfg.visual_twin_fraction * len(order)), max(0, len(order) - n_group - 1))
    pos, group_id, forced = _assign_groups(rng, pool, order, n_group, group_id)
    twins = order[pos:pos + n_twin]
    for c in order[pos + n_twin:]:
        v = pool.take()
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
    return group_id, forced


def assign_visuals(rng: np.random.Generator, cfg: SyntheticConfig, clusters: list[Cluster]) -> int:
    """Give each cluster a visual identity: confuser groups, twins, unique rest (per split).

    Args:
        rng: The structure's random stream.
        cfg: Generator settings.
        clusters: All clusters, split assigned (modified in place).

    Returns:
        Number of clusters that had to reuse an identity (too few distinct ones left).
    """
    combos = all_visuals()
    pool = _VisualPool(rng, combos)
    forced = group_id = 0
    for split in ("train", "test"):
        members = [c for c in clusters if c.split == split]
        group_id, n_forced = _assign_split(rng, cfg, pool, combos, members, group_id)
        forced += n_forced
    if forced:
        logger.warning("%d clusters reuse a visual identity (too few of the %d identities left for their "
                       "confuser group)", forced, len(combos))
    return forced


def _fallback(rng: np.random.Generator, combos: list[Visual]) -> Visual:
    """A random visual identity (used once the distinct identities are exhausted)."""
    return combos[int(rng.integers(len(combos)))]


def assign_badges(cfg: SyntheticConfig, clusters: list[Cluster]) -> None:
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


