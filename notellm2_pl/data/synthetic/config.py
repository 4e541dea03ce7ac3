"""Settings of the synthetic benchmark: :class:`SyntheticConfig` and the named :data:`PRESETS`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


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
        val_pairs_per_cluster: Validation pairs per train cluster, disjoint from the training pairs (when
            ``val_cluster_fraction`` is 0).
        val_cluster_fraction: Fraction of clusters (whole text families, from the train side) held out for
            validation: their notes stay in ``notes_train.csv`` but appear in no training pair, and the validation
            pairs are a matching inside each of them (``test_pairs_per_cluster`` pairs, as the test split), so
            validation Recall@K measures unseen items as test does. 0 (default): validation pairs are other pairs
            of the training clusters (seen items).
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
        image_relevance: Probability that a note's image shows its cluster's visual identity; otherwise it shows an
            identity drawn at random from all of them, so the image says nothing about the note's pairs (real
            catalogues where posters or photos carry little). 1.0 (default): every image is informative.
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
    val_cluster_fraction: float = 0.0
    test_pairs_per_cluster: int = 4
    train_long_pair_fraction: float = 0.85
    text_family_fraction: float = 0.4
    visual_group_fraction: float = 0.4
    visual_twin_fraction: float = 0.05
    badge_twin_fraction: float = 0.0
    image_relevance: float = 1.0
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
        if not 0.0 <= self.val_cluster_fraction < 1.0 - self.test_fraction:
            problems.append("val_cluster_fraction must be in [0, 1 - test_fraction)")
        for name in ("short_text_fraction", "partial_name_prob", "text_family_fraction", "visual_group_fraction",
                     "visual_twin_fraction", "badge_twin_fraction", "image_relevance"):
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
    # Weak images: text decides (few short notes), and only 30 % of images show their cluster's identity; the
    # others are random. The regime where late fusion may let a weak image drown the text (docs/ablations.md).
    # Validation pairs come from held-out clusters (15 %), so a fix can be chosen on validation; 15 training pairs
    # per remaining cluster keep the demo's 2,700 training pairs (84 batches of 32, the demo schedule's epoch).
    "weak_image": SyntheticConfig(image_relevance=0.3, short_text_fraction=0.1, val_cluster_fraction=0.15,
                                  train_pairs_per_cluster=15),
    "small": SyntheticConfig(num_clusters=1000, notes_per_cluster=10),
    "large": SyntheticConfig(num_clusters=1200, notes_per_cluster=16, test_pairs_per_cluster=6,
                             train_pairs_per_cluster=30, val_pairs_per_cluster=2, image_size=128),
}

# ---------------------------------------------------------------------------------------------------------------
# Vocabulary


def preset_config(preset: str = "demo", **overrides: Any) -> SyntheticConfig:
    """A preset's settings with some fields replaced.

    Args:
        preset: Key of :data:`PRESETS`.
        **overrides: :class:`SyntheticConfig` fields to change.

    Returns:
        The resulting (validated) config.

    Raises:
        ValueError: Unknown preset, or an invalid setting.
        TypeError: An override that is not a config field.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown synthetic preset {preset!r}; use one of {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[preset], **overrides)
