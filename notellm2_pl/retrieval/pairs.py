"""Which pairs are evaluated: the at-most-once pair rule and the short/long test subsets.

:func:`accept_pairs` is steps 1-2 of docs/method.md#recall-at-k. :func:`derive_subsets` builds the subsets of
docs/method.md#short-and-long-subsets from raw text lengths, for datasets that ship no subset files; each subset is
then evaluated by the same protocol, with its own accepted queries removed from the pool.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

from notellm2_pl.data.schema import SUBSET_NAMES

Pair = tuple[str, str]
"""``(query_id, target_id)``."""

DEFAULT_SHORT_MAX_CHARS: int = 30
"""Default short-text threshold: raw title + content of at most this many characters is "short"."""

DEFAULT_LONG_MIN_CHARS: int = 100
"""Default long-text threshold: raw title + content of at least this many characters is "long".

100 equals the default truncation budget (``title_chars=20`` + ``content_chars=80``): a long note is one whose text
does not fit the model's input.
"""


def accept_pairs(pairs: Iterable[Pair], known_ids: Collection[str]) -> list[Pair]:
    """Apply the greedy at-most-once pair rule of docs/method.md#recall-at-k (steps 1-2).

    Pairs are walked in order. A pair is skipped if either note is not in ``known_ids``, if it pairs a note
    with itself, or if either note already appeared as the query or the target of an accepted pair. Each
    note is therefore used at most once and each accepted query has exactly one target.

    Args:
        pairs: ``(query_id, target_id)`` pairs in file order.
        known_ids: Ids of the notes that have an embedding (a ``set`` or dict keys for fast lookups).

    Returns:
        The accepted pairs, in their original order.
    """
    used: set[str] = set()
    accepted: list[Pair] = []
    for q, d in pairs:
        if q not in known_ids or d not in known_ids:
            continue
        if q == d or q in used or d in used:
            continue
        used.add(q)
        used.add(d)
        accepted.append((q, d))
    return accepted


def derive_subsets(
    pairs: Sequence[Pair],
    text_len: Mapping[str, int],
    short_max_chars: int = DEFAULT_SHORT_MAX_CHARS,
    long_min_chars: int = DEFAULT_LONG_MIN_CHARS,
) -> dict[str, list[Pair]]:
    """Build the short/long pair subsets from raw text lengths, for datasets without subset files.

    Rule (applied to the raw pairs, before the at-most-once filter, which then runs per subset):

    - ``shortquery``: ``text_len[query] <= short_max_chars``
    - ``shortgtdoc``: ``text_len[target] <= short_max_chars``
    - ``longquery``:  ``text_len[query] >= long_min_chars``
    - ``longgtdoc``:  ``text_len[target] >= long_min_chars``

    ``text_len`` should be the raw length (title + content characters, before any truncation). Pairs with a note
    missing from ``text_len`` go in no subset. Defaults: short = at most 30 characters (the text says little, the
    image has to carry the note); long = at least 100 characters (more than the default 20 + 80 character
    title/content truncation budget).

    Args:
        pairs: ``(query_id, target_id)`` pairs in file order.
        text_len: Raw text length per note id.
        short_max_chars: Largest length that counts as short.
        long_min_chars: Smallest length that counts as long.

    Returns:
        ``{"shortquery": [...], "shortgtdoc": [...], "longquery": [...], "longgtdoc": [...]}``, pairs in file order.

    Raises:
        ValueError: If the thresholds are negative or overlap (``short_max_chars >= long_min_chars``).
    """
    if short_max_chars < 0 or long_min_chars < 0:
        raise ValueError("short_max_chars and long_min_chars must be >= 0.")
    if short_max_chars >= long_min_chars:
        raise ValueError(
            f"short_max_chars ({short_max_chars}) must be < long_min_chars ({long_min_chars}) so that no note is "
            "both short and long."
        )
    out: dict[str, list[Pair]] = {name: [] for name in SUBSET_NAMES}
    for q, d in pairs:
        lq, ld = text_len.get(q), text_len.get(d)
        if lq is None or ld is None:
            continue
        if lq <= short_max_chars:
            out["shortquery"].append((q, d))
        if ld <= short_max_chars:
            out["shortgtdoc"].append((q, d))
        if lq >= long_min_chars:
            out["longquery"].append((q, d))
        if ld >= long_min_chars:
            out["longgtdoc"].append((q, d))
    return out
