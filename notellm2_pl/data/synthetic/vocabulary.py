"""Vocabulary of the synthetic benchmark: visual identities (shapes, colours, patterns, accents), text templates
and the rare pseudo-words that make up product names."""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

Visual = tuple[str, str, str, str]
"""A visual identity: (shape, colour, pattern, accent)."""

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


def make_words(rng: np.random.Generator, n: int, avoid: Iterable[str] = ()) -> list[str]:
    """``n`` distinct rare pseudo-words (4-9 letters) that never occur in the template vocabulary nor in ``avoid``."""
    reserved = _template_vocabulary() | set(avoid)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        w = _pseudo_word(rng)
        if 4 <= len(w) <= 9 and w not in seen and w not in reserved:
            seen.add(w)
            out.append(w)
    return out
