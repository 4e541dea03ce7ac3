"""Prompt templates and text preprocessing (docs/method.md#text-preprocessing, docs/method.md#templates), generated in
one place: every variant and preset comes from :data:`PRESETS` (docs/method.md#defects-of-the-original-code (B10)).

A template is rendered into *segments*, never into one string that is re-parsed: literal template text, the
note's own fields, the image slot and the mICL marker. A note's text is tokenised on its own with special-token
splitting, so no note can create an extra image slot or embedding marker (marker injection is impossible by
construction).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from notellm2_pl.data.schema import Probe

__all__ = ["MARKER", "PRESETS", "SLOT", "Probe", "Segment", "TextLimits", "Variant", "clean_fields", "render",
           "suffix"]

Variant = Literal["text", "basic", "micl"]

SLOT, MARKER = "<IMG>", "<IMG_EMB>"
_PIECES = re.compile(r"(\{T\}|\{G\}|\{C\}|<IMG>|<IMG_EMB>)")

PRESETS: dict[str, dict[str, str]] = {
    # English default: the same structure as the original, in words every tokenizer knows.
    "en": {
        "text": 'Note: {"title":"{T}","topic":"{G}","content":"{C}"}',
        "basic": 'Note: {"image":"<IMG>","title":"{T}","topic":"{G}","content":"{C}"}',
        "micl": 'Note: {"image":"<IMG>"}, compress into one word: "<IMG_EMB>". '
                'Note: {"title":"{T}","topic":"{G}","content":"{C}"}',
        "suffix": ', compress into one word: "',
        "tag_sep": ", ",
        "newline": ". ",
    },
    # The original Chinese prompts, exactly (docs/method.md#templates).
    "zh": {
        "text": '笔记：{"标题":"{T}","话题":"{G}","内容":"{C}"}',
        "basic": '笔记：{"图片":"<IMG>","标题":"{T}","话题":"{G}","内容":"{C}"}',
        "micl": '笔记：{"图片":"<IMG>"}，压缩为一个词：“<IMG_EMB>”。笔记：{"标题":"{T}","话题":"{G}","内容":"{C}"}',
        "suffix": "，压缩为一个词：“",
        "tag_sep": "，",
        "newline": "。",
    },
}


@dataclass(frozen=True)
class TextLimits:
    """Character cuts applied before tokenisation (docs/method.md#text-preprocessing).

    Attributes:
        title_chars: Keep the first N characters of the title.
        content_chars: Keep the first N characters of the content (after newline replacement).
        max_tags: Keep the first N topics.
    """

    title_chars: int = 20
    content_chars: int = 80
    max_tags: int = 10


@dataclass(frozen=True)
class Segment:
    """One piece of a rendered prompt: ``kind`` is ``literal``, ``field``, ``image`` or ``marker``."""

    kind: str
    text: str = ""


def clean_fields(title: str, topics: list[str], content: str, limits: TextLimits, preset: str) -> tuple[str, str, str]:
    """Apply the character cuts and join topics (steps 3-5 of docs/method.md#text-preprocessing)."""
    p = PRESETS[preset]
    tags = p["tag_sep"].join(topics[: limits.max_tags]).strip()
    content = content.replace("\r\n", "\n").replace("\n", p["newline"])[: limits.content_chars].strip()
    return title[: limits.title_chars].strip(), tags, content


def render(variant: Variant, title: str, tags: str, content: str, preset: str = "en") -> list[Segment]:
    """Render a template variant into segments (no suffix; the suffix is appended after truncation)."""
    if preset not in PRESETS:
        raise ValueError(f"Unknown prompt preset {preset!r}; use one of {sorted(PRESETS)}.")
    values = {"{T}": title, "{G}": tags, "{C}": content}
    segments: list[Segment] = []
    for piece in _PIECES.split(PRESETS[preset][variant]):
        if not piece:
            continue
        if piece in values:
            segments.append(Segment("field", values[piece]))
        elif piece == SLOT:
            segments.append(Segment("image"))
        elif piece == MARKER:
            segments.append(Segment("marker"))
        else:
            segments.append(Segment("literal", piece))
    return segments


def suffix(preset: str) -> str:
    """The compression suffix appended after truncation and never truncated."""
    return PRESETS[preset]["suffix"]
