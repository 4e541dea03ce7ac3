"""Lexicon of the ``paraphrase`` text style: concepts, each with several surface forms, and the sentences that
carry them.

A **concept** is one thing a note can say about its item: its product type (a key of
:data:`~notellm2_pl.data.synthetic.vocabulary.CATEGORIES`, with the synonyms in :data:`CATEGORY_FORMS`) or one
attribute (:data:`ATTRIBUTE_FORMS`: a style, material, use, feel or season). Every concept has several English
surface forms (synonyms and paraphrases: "warm", "toasty", "snug", "cozy") and, per dataset, a few invented slang
words (pseudo-words no pretrained model has seen, as a catalogue's own jargon). The forms are global: the same
concept uses the same forms in train and test clusters, so a model can learn from training pairs which forms mean
the same thing, and TF-IDF, which matches only the identical word, cannot.

The text never mentions shape, colour or pattern (the image's identity), as in the templated style.
"""

from __future__ import annotations

import re

_WORD_RE = re.compile(r"[a-z0-9']+")

CATEGORY_FORMS: dict[str, tuple[str, ...]] = {
    "mug": ("mug", "cup", "coffee cup", "tumbler", "beaker"),
    "backpack": ("backpack", "rucksack", "daypack", "knapsack", "bookbag"),
    "sneaker": ("sneakers", "trainers", "running shoes", "kicks", "plimsolls"),
    "lamp": ("lamp", "desk light", "reading light", "lantern", "sconce"),
    "candle": ("candle", "scented candle", "tealight", "wax pillar", "votive"),
    "headphones": ("headphones", "headset", "earphones", "cans", "earbuds"),
    "notebook": ("notebook", "journal", "notepad", "planner", "sketchbook"),
    "scarf": ("scarf", "shawl", "muffler", "neck wrap", "stole"),
    "watch": ("watch", "wristwatch", "timepiece", "chronograph", "ticker"),
    "tote": ("tote", "tote bag", "shopper", "carryall", "market bag"),
    "lipstick": ("lipstick", "lip colour", "lip tint", "lippie", "lip crayon"),
    "serum": ("serum", "face oil", "skin elixir", "essence", "ampoule"),
    "kettle": ("kettle", "water boiler", "electric kettle", "teakettle", "hot pot"),
    "planter": ("planter", "plant pot", "flower pot", "jardiniere", "window box"),
    "blanket": ("blanket", "throw", "quilt", "comforter", "afghan"),
    "sunglasses": ("sunglasses", "shades", "sunnies", "aviators", "sun specs"),
    "wallet": ("wallet", "billfold", "card holder", "coin purse", "money clip"),
    "hoodie": ("hoodie", "sweatshirt", "pullover", "jumper", "crewneck"),
    "speaker": ("speaker", "boombox", "sound box", "soundbar", "loudspeaker"),
    "keyboard": ("keyboard", "keeb", "typing deck", "keyset", "mechanical board"),
    "bottle": ("water bottle", "flask", "canteen", "thermos", "hydration bottle"),
    "pillow": ("pillow", "cushion", "bolster", "headrest", "pillowcase"),
    "perfume": ("perfume", "fragrance", "cologne", "eau de parfum", "body mist"),
    "jacket": ("jacket", "coat", "parka", "windbreaker", "anorak"),
}

ASPECTS: tuple[str, ...] = ("style", "material", "use", "feel", "season")
"""Attribute aspects; a cluster's attributes come from distinct aspects."""
ADJECTIVE_ASPECTS: frozenset[str] = frozenset({"style", "feel"})
"""Aspects whose forms are adjectives (they fit "the {f} mug")."""

ATTRIBUTE_FORMS: dict[str, tuple[str, tuple[str, ...]]] = {
    # style: adjectives
    "minimalist": ("style", ("minimalist", "understated", "clean-lined", "pared-back", "no-frills")),
    "vintage": ("style", ("vintage", "retro", "old-school", "throwback", "heritage-style")),
    "playful": ("style", ("playful", "quirky", "whimsical", "cheeky", "goofy")),
    "elegant": ("style", ("elegant", "refined", "classy", "sophisticated", "polished")),
    "bold": ("style", ("bold", "loud", "eye-catching", "striking", "statement")),
    "rustic": ("style", ("rustic", "farmhouse", "earthy", "homespun", "country-style")),
    "futuristic": ("style", ("futuristic", "space-age", "sci-fi", "high-tech", "cyber")),
    "cute": ("style", ("cute", "adorable", "kawaii", "sweet", "charming")),
    # material: nouns
    "leather": ("material", ("leather", "full-grain hide", "tanned hide", "suede", "nappa")),
    "wood": ("material", ("wood", "timber", "oak", "walnut", "bamboo")),
    "ceramic": ("material", ("ceramic", "stoneware", "porcelain", "glazed clay", "earthenware")),
    "metal": ("material", ("metal", "steel", "aluminium", "brushed alloy", "titanium")),
    "cotton": ("material", ("cotton", "organic cotton", "jersey", "canvas", "linen")),
    "wool": ("material", ("wool", "merino", "cashmere", "chunky knit", "alpaca")),
    "recycled": ("material", ("recycled plastic", "upcycled scraps", "reclaimed fibre", "eco material",
                              "post-consumer waste")),
    "glass": ("material", ("glass", "crystal", "borosilicate", "frosted glass", "tempered glass")),
    # use: noun phrases
    "travel": ("use", ("travel", "long trips", "life on the road", "globetrotting", "vacations")),
    "office": ("use", ("the office", "work days", "my desk job", "meetings", "the commute")),
    "outdoors": ("use", ("hiking", "camping", "the trail", "the wilderness", "mountain days")),
    "gym": ("use", ("the gym", "workouts", "training sessions", "the weight room", "spin class")),
    "gifting": ("use", ("gifting", "a birthday present", "a stocking stuffer", "a housewarming gift",
                        "an anniversary surprise")),
    "kids": ("use", ("the kids", "children", "my little ones", "toddlers", "the nursery")),
    "night": ("use", ("late nights", "bedtime", "evenings", "after dark", "the night shift")),
    "study": ("use", ("studying", "exam season", "lectures", "homework", "the library")),
    # feel: adjectives
    "lightweight": ("feel", ("lightweight", "feather-light", "barely-there", "airy", "weightless")),
    "durable": ("feel", ("durable", "sturdy", "rugged", "heavy-duty", "indestructible")),
    "soft": ("feel", ("soft", "plush", "velvety", "silky", "cushy")),
    "warm": ("feel", ("warm", "toasty", "snug", "cozy", "insulated")),
    "compact": ("feel", ("compact", "pocket-sized", "tiny", "space-saving", "mini")),
    "luxurious": ("feel", ("luxurious", "premium", "high-end", "lavish", "posh")),
    "affordable": ("feel", ("affordable", "cheap", "budget", "wallet-friendly", "inexpensive")),
    "quiet": ("feel", ("quiet", "silent", "hushed", "whisper-quiet", "noiseless")),
    # season: noun phrases
    "summer": ("season", ("summer", "sunny days", "beach season", "heatwaves", "midsummer")),
    "winter": ("season", ("winter", "cold months", "snowy days", "frosty mornings", "midwinter")),
    "autumn": ("season", ("autumn", "fall", "sweater weather", "crisp days", "harvest time")),
    "spring": ("season", ("spring", "springtime", "blossom season", "april showers", "the thaw")),
}
"""Attribute concept -> (aspect, English surface forms)."""

ASPECT_SENTENCES: dict[str, tuple[str, ...]] = {
    "style": ("Love how {f} it looks.", "The design is so {f}.", "Such {f} vibes overall.",
              "Exactly the {f} look I wanted."),
    "material": ("Made of {f}.", "The {f} feels lovely.", "Nice to see real {f} here.", "The {f} is well finished."),
    "use": ("Perfect for {f}.", "Bought it for {f}.", "My go-to for {f}.", "It has been great for {f}."),
    "feel": ("It is so {f}.", "Really {f} for the price.", "Surprisingly {f}.", "Feels {f} in the hand."),
    "season": ("Ideal for {f}.", "Been using it all through {f}.", "A must for {f}.", "Made for {f}."),
}
"""Sentences carrying one attribute form ``{f}``, per aspect."""

LONG_TITLES = ("{item} {cat} review", "the {item}: my new {cat}", "{item} {cat} first look",
               "{attr} {cat}: the {item}", "why the {item} {cat} works", "{item} is one {attr} {cat}")
"""Titles of long notes: the note's own item name, a category form and (``{attr}``) an adjective form."""
OPENERS = ("Just picked up the {item} {cat}.", "The {item} is my new {cat}.", "Been testing this {cat} for a week.",
           "Finally ordered the {item} after months of looking for the right {cat}.", "Quick thoughts on my new {cat}.")
MAKER_SENTENCES = ("Another winner from {maker}.", "It is made by {maker}.", "{maker} keeps getting it right.",
                   "My second piece from {maker}.", "Did not expect this from {maker}.")
STRAY_SENTENCES = ("My friend swears by her {maker} one.", "My sister went with the {f} {cat} instead.",
                   "Still prefer my old {maker} for some things.", "Saw the {f} {cat} on sale next door.")
"""Distractors shared across clusters: another maker or another concept, no statement about the item."""
DISTRACTOR_SENTENCES = ("Packaging was neat and delivery was fast.", "Would recommend it to friends.",
                        "Price felt fair for the quality.", "Honestly better than I expected.",
                        "Already thinking about a second one.", "It was a treat to myself this month.",
                        "Customer service answered within a day.", "The box arrived a little dented.",
                        "Took a while to ship but worth the wait.", "Reviews online were mixed, so I was unsure.",
                        "Returned the first one, this one is fine.", "Let me know if you want more details.")
"""Generic sentences any note may carry."""
SHORT_ASPECT_TITLES: dict[str, tuple[str, ...]] = {
    "style": ("{f}!", "so {f}", "{f} {cat}"),
    "feel": ("{f}!", "so {f}", "{f} {cat}"),
    "material": ("{f} {cat}", "all {f}", "{f} love"),
    "use": ("for {f}", "{cat} for {f}", "{f} essentials"),
    "season": ("{f} mood", "{cat} for {f}", "ready for {f}"),
}
"""Titles of short notes that carry one attribute form ``{f}`` (and sometimes a category form ``{cat}``)."""
SHORT_CATEGORY_TITLES = ("new {cat}", "my {cat}", "{cat} day", "{cat} haul")
SHORT_MAKER_TITLES = ("{maker} haul", "{maker} again", "new {maker}", "{maker} love")
SHORT_GENERIC_TITLES = ("love this one", "new haul today", "obsessed", "look what I got", "weekend find",
                        "my latest buy", "guess what arrived", "today's pick", "little treat", "worth it?",
                        "new fave", "just arrived", "treat yourself", "new in", "yes or no?")
SHORT_CONTENTS = ("", "", "", "so good", "thoughts?", "10/10", "need I say more", "happy day", "wow")
GENERIC_TAGS = ("haul", "dailylife", "shopping", "newin", "favorites", "lifestyle", "review", "musthave",
                "aesthetic", "unboxing", "wishlist", "deals")


def lexicon_words() -> set[str]:
    """Every lower-case word the paraphrase lexicon can emit; invented words must avoid them."""
    texts: list[str] = [*LONG_TITLES, *OPENERS, *MAKER_SENTENCES, *STRAY_SENTENCES, *DISTRACTOR_SENTENCES,
                        *SHORT_CATEGORY_TITLES, *SHORT_MAKER_TITLES, *SHORT_GENERIC_TITLES, *SHORT_CONTENTS,
                        *GENERIC_TAGS]
    for forms in CATEGORY_FORMS.values():
        texts.extend(forms)
    for _, forms in ATTRIBUTE_FORMS.values():
        texts.extend(forms)
    for sentences in (*ASPECT_SENTENCES.values(), *SHORT_ASPECT_TITLES.values()):
        texts.extend(sentences)
    return {w for t in texts for w in _WORD_RE.findall(t.lower())}

