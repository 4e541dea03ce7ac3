"""How much text the prompt's token budget cuts, per template (the mICL template is longer than the basic one).

``evaluate`` prints it for its pool and ``fit`` logs it for the training notes (a warning above :data:`WARN_SHARE`)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from notellm2_pl.data.processing import NoteProcessor
from notellm2_pl.data.tables import Note

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Truncation:
    """Token-budget cuts over a set of notes.

    Attributes:
        notes: Notes measured.
        cut: Notes whose templated prompt is longer than ``max_tokens`` (their text loses its tail).
        tokens_cut: Tokens cut over all notes.
        max_tokens: The budget.
        template: The model's template variant (``basic``, ``micl``, ``text``).
    """

    notes: int
    cut: int
    tokens_cut: int
    max_tokens: int
    template: str

    @property
    def share(self) -> float:
        """Fraction of notes cut."""
        return self.cut / max(1, self.notes)

    def line(self) -> str:
        """One human-readable line."""
        mean = self.tokens_cut / max(1, self.cut)
        return (f"prompt truncation ({self.template} template, max_tokens {self.max_tokens}): {self.cut} of "
                f"{self.notes} notes cut ({self.share:.1%}), {mean:.1f} tokens each on average"
                + ("; raise --data.max_tokens to keep more text" if self.cut else ""))


def measure_truncation(processor: NoteProcessor, notes: Iterable[Note]) -> Truncation:
    """Count the notes whose templated prompt exceeds the processor's ``max_tokens`` (no images are loaded)."""
    total = cut = tokens = 0
    for note in notes:
        extra = len(processor.prompt_ids(note)[0]) - processor.max_tokens
        total += 1
        if extra > 0:
            cut += 1
            tokens += extra
    return Truncation(total, cut, tokens, processor.max_tokens, processor.fmt.variant)


WARN_SHARE = 0.2
"""Share of notes cut by the token budget above which ``fit`` warns."""


def warn_if_truncating(processor: NoteProcessor, notes: Sequence[Note]) -> Truncation:
    """Log the truncation of ``notes`` at training start, as a warning when more than :data:`WARN_SHARE` are cut.

    A longer template (mICL's) spends more of ``max_tokens`` on its own words, so the same budget cuts more text:
    one variant then reads less of each note than another, which an ablation must not confuse with its method.
    """
    found = measure_truncation(processor, notes)
    (log.warning if found.share > WARN_SHARE else log.info)(found.line())
    return found
