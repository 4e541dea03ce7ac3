"""Data problems: their codes and severities, the error raised for bad data, and the report that counts them.

Every problem has a code (a key of :data:`PROBLEMS`; docs/data.md has the table of behaviours and the tests that
cover each) and is reported with its file and line. Problems of severity ``error`` raise :class:`DataError` under
``on_error="raise"`` and skip the row (counted) under ``on_error="skip"``; problems of severity ``warning`` never
drop data: they are fixed in a documented way and counted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

OnError = Literal["raise", "skip"]
"""What a loader does with an error-severity problem: raise :class:`DataError`, or skip the row and count it."""

PROBLEMS: dict[str, tuple[str, str]] = {
    "invalid_utf8": ("error", "invalid UTF-8 bytes"),
    "nul_byte": ("error", "NUL byte in a field"),
    "nul_stripped": ("warning", "NUL bytes removed (official layout, as the original loader does)"),
    "malformed_row": ("error", "malformed row"),
    "empty_id": ("error", "empty note id"),
    "duplicate_id": ("error", "duplicate note id"),
    "empty_note": ("error", "empty note (no title, topics or content)"),
    "unknown_pair_id": ("error", "pair names an unknown note id"),
    "self_pair": ("error", "self-pair (query id == target id)"),
    "pair_of_skipped_note": ("warning", "pair dropped because one of its notes was skipped"),
    "text_truncated": ("warning", "text longer than the prompt limits (truncated when the prompt is built)"),
    "no_image": ("error", "note has no image"),
    "missing_image": ("error", "image file not found"),
    "bad_image": ("error", "image file cannot be decoded (corrupt, truncated or not an image)"),
    "unsupported_image_mode": ("error", "image mode cannot be converted to RGB"),
    "image_converted": ("warning", "image converted to RGB (CMYK, palette, 16-bit, alpha flattened on white...)"),
    "val_notes_seen": ("warning", "validation pairs reuse training notes while the test is cold-start"),
}
"""Problem code -> (severity, description). ``error``: raise, or skip and count under ``on_error="skip"``.
``warning``: kept, fixed in a documented way, counted."""


class DataError(ValueError):
    """Invalid input data; the message names the file, line/id and what to do.

    Attributes:
        code: The problem code (a key of :data:`PROBLEMS`), or None for file-level errors.
        where: ``file:line`` (and id) of the problem, or None.
    """

    def __init__(self, message: str, code: str | None = None, where: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.where = where


@dataclass(frozen=True)
class Problem:
    """One reported problem.

    Attributes:
        code: Key of :data:`PROBLEMS` (or a free-form reason).
        where: ``file:line`` (or ``file:row N``, or an image path).
        note_id: The note concerned, when known.
        detail: Extra detail (decoder message, image mode, ...).
        action: ``skipped`` (row dropped), ``kept`` (fixed and kept) or ``dropped`` (pair of a skipped note).
    """

    code: str
    where: str
    note_id: str | None = None
    detail: str = ""
    action: str = "skipped"

    def __str__(self) -> str:
        ident = f" (id {self.note_id})" if self.note_id is not None else ""
        detail = f": {self.detail}" if self.detail else ""
        return f"{self.where}{ident}: {describe(self.code)}{detail} [{self.action}]"


def describe(code: str) -> str:
    """Human description of a problem code (the code itself when unknown)."""
    return PROBLEMS.get(code, ("error", code))[1]


def severity(code: str) -> str:
    """``error`` or ``warning`` (unknown codes are errors)."""
    return PROBLEMS.get(code, ("error", code))[0]


@dataclass
class LoadReport:
    """Everything skipped or fixed while loading: counts per problem code, and the problems themselves.

    Attributes:
        counts: Problem code -> number of occurrences (exact).
        examples: Problem code -> up to 5 locations, for summaries.
        problems: The problems, in the order found (at most ``max_listed`` per code; counts stay exact).
        max_listed: Cap on listed problems per code.
    """

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    max_listed: int = 1000

    def record(self, problem: Problem) -> None:
        """Count one problem and keep it in the list."""
        self.counts[problem.code] += 1
        where = problem.where + (f" ({problem.note_id})" if problem.note_id is not None else "")
        ex = self.examples.setdefault(problem.code, [])
        if len(ex) < 5:
            ex.append(where)
        if self.counts[problem.code] <= self.max_listed:
            self.problems.append(problem)

    def merge(self, other: LoadReport) -> None:
        """Add another report's problems to this one."""
        for p in other.problems:
            self.record(p)
        for code, n in other.counts.items():  # counts beyond the listing cap
            listed = sum(1 for p in other.problems if p.code == code)
            self.counts[code] += n - listed

    @property
    def num_errors(self) -> int:
        """Number of error-severity problems (rows, notes or pairs skipped)."""
        return sum(n for c, n in self.counts.items() if severity(c) == "error")

    def summary(self) -> str:
        """One line: ``code: count (e.g. where, ...)`` per problem code."""
        if not self.counts:
            return "no problems found"
        return "; ".join(f"{k}: {v} (e.g. {', '.join(self.examples.get(k, [])[:3])})"
                         for k, v in sorted(self.counts.items()))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: counts and the listed problems."""
        return {"counts": dict(self.counts),
                "problems": [{"code": p.code, "where": p.where, "note_id": p.note_id, "detail": p.detail,
                              "action": p.action} for p in self.problems]}


class IssueSink:
    """Where a loader sends each problem: raised as :class:`DataError` (errors under ``on_error="raise"``), else
    recorded in ``report``.

    Args:
        report: The report that counts the problems.
        on_error: ``raise`` or ``skip``.
    """

    def __init__(self, report: LoadReport, on_error: OnError) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error={on_error!r}: use 'raise' or 'skip'.")
        self.report, self.on_error = report, on_error

    def __call__(self, code: str, where: str, note_id: str | None = None, detail: str = "",
                 action: str | None = None) -> None:
        """Raise or record one problem (``action`` defaults to ``skipped`` for errors, ``kept`` for warnings)."""
        err = severity(code) == "error"
        if err and self.on_error == "raise":
            ident = f" (id {note_id})" if note_id is not None else ""
            raise DataError(f"{describe(code)} at {where}{ident}{': ' + detail if detail else ''}. Fix the data, or "
                            f"pass --data.on_error skip to skip and count such rows; `python -m notellm2_pl "
                            f"validate-data ROOT --on-error skip` lists every problem.", code=code, where=where)
        self.report.record(Problem(code, where, note_id, detail, action or ("skipped" if err else "kept")))

