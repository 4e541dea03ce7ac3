"""Synthetic notes benchmark: procedurally drawn images + generated English text, in the canonical layout.

Why it exists: image neglect (docs/method.md#paper-claims, claim 2) can only be measured offline on data where part
of what makes two notes related is visible only in the image. docs/design.md#data records the regime where neglect
shows up: a frozen pretrained vision encoder, an LLM with text priors, and *most training pairs solvable from text
alone*, while short-text test pairs need the image. This generator makes that regime (and milder ones) reproducible.

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
* **Paraphrase text** (opt-in, ``paraphrase_forms`` > 0, preset ``paraphrase``) replaces the product names: each
  note is about its own item and says some of its cluster's concepts (a category and three attributes) in one of
  several surface forms, and may name the cluster's maker, which recurs across unrelated clusters too. Related notes
  share meaning more often than words, so TF-IDF and zero-shot encoders score well above chance and well below 1
  (:mod:`.paraphrase`; measured figures in :mod:`.config` and docs/data.md).
* **Training pairs** are biased towards long-long pairs (``train_long_pair_fraction``), so most training pairs
  are solvable from text alone (the docs/design.md#data regime). Test pairs are a random matching inside each test
  cluster, so the short-query/short-target subsets need the image. Train and test use disjoint clusters.

Modules: :mod:`.config` (settings and presets), :mod:`.vocabulary` (identities and text templates),
:mod:`.identities` (clusters, confusers, split), :mod:`.notes` (note text), :mod:`.lexicon` and :mod:`.paraphrase`
(paraphrase text), :mod:`.pairs`, :mod:`.painting` (images)
and :mod:`.dataset` (files on disk: :func:`generate`, :func:`ensure_dataset`). The ``synth`` command is
:mod:`notellm2_pl.commands.synth`.
"""

from notellm2_pl.data.schema import NOTE_COLUMNS, PAIR_COLUMNS
from notellm2_pl.data.synthetic.config import PRESETS, SyntheticConfig, preset_config
from notellm2_pl.data.synthetic.dataset import FORMAT_NAME, FORMAT_VERSION, ensure_dataset, generate
from notellm2_pl.data.synthetic.painting import BADGE, render_image
from notellm2_pl.data.synthetic.vocabulary import (
    ACCENTS,
    CATEGORIES,
    COLOURS,
    GENERIC_SENTENCES,
    GENERIC_TAGS,
    LONG_OPENERS,
    LONG_TITLES,
    NAME_SENTENCES,
    PATTERNS,
    SHAPES,
    SHORT_CONTENTS,
    SHORT_TITLES,
)

__all__ = [
    "ACCENTS", "BADGE", "CATEGORIES", "COLOURS", "FORMAT_NAME", "FORMAT_VERSION", "GENERIC_SENTENCES", "GENERIC_TAGS",
    "LONG_OPENERS", "LONG_TITLES", "NAME_SENTENCES", "NOTE_COLUMNS", "PAIR_COLUMNS", "PATTERNS", "PRESETS", "SHAPES",
    "SHORT_CONTENTS", "SHORT_TITLES", "SyntheticConfig", "ensure_dataset", "generate", "preset_config",
    "render_image",
]
