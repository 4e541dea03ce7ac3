"""How much text the prompt's token budget cuts, per template (the mICL template is longer than the basic one)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from notellm2_pl.data.processing import NoteProcessor
from notellm2_pl.data.tables import Note


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
