"""Settings of pair mining (:class:`MiningConfig`, the paper's defaults), its error and its stage-by-stage report.

The definitions behind every setting are in docs/data.md#mining-pairs-from-behaviour-logs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

SplitMode = Literal["cold-start", "time"]
"""``time``: train pairs from earlier behaviour, val/test from later periods. ``cold-start``: the time split, then
val/test pairs touching any note of a train pair are dropped (new notes only)."""

WEEK_SECONDS: float = 7 * 24 * 3600.0
"""NoteLLM counts co-occurrence over one week of behaviour: the default window between a view and a later click."""


class MiningError(ValueError):
    """Mining cannot go on: an empty result after a stage (named in the message) or a bad setting.

    Attributes:
        report: The stages run so far (the last one is the stage that left nothing), when known.
    """

    def __init__(self, message: str, report: MiningReport | None = None):
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class MiningConfig:
    """Every mining parameter; the defaults are NoteLLM's (WWW'24, section 4.3 and 5.1).

    Attributes:
        window_s: Largest time (seconds) from viewing note A to clicking note B for the pair A->B to count.
        view_actions: Actions that count as viewing the query note A (used when the log has an ``action`` column).
        click_actions: Actions that count as clicking the target note B; a user's N is the number of distinct
            notes they clicked in the period.
        upper: Upper bound u: candidates of a note with a co-occurrence score above it are dropped.
        lower: Lower bound l: candidates with a score below it are dropped.
        top_t: t: the t highest-scoring remaining candidates of each note are kept.
        min_support: Fewest distinct users behind a pair (1: the paper's rule, no extra filter).
        symmetric: Count A->B and B->A for every co-occurrence (the paper's pairs are directed).
        split: ``cold-start`` (default) or ``time``.
        val_fraction: Share of the log's time span (before the test period) whose behaviour makes val pairs.
        test_fraction: Share of the log's time span at its end whose behaviour makes test pairs.
        val_start: Explicit start of the val period (epoch seconds); overrides ``val_fraction``.
        test_start: Explicit start of the test period (epoch seconds); overrides ``test_fraction``.
    """

    window_s: float = WEEK_SECONDS
    view_actions: tuple[str, ...] = ("view", "click")
    click_actions: tuple[str, ...] = ("click",)
    upper: float = 30.0
    lower: float = 0.01
    top_t: int = 10
    min_support: int = 1
    symmetric: bool = False
    split: SplitMode = "cold-start"
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    val_start: float | None = None
    test_start: float | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.window_s <= 0:
            problems.append("window must be > 0 seconds")
        if not 0 <= self.lower <= self.upper:
            problems.append(f"need 0 <= lower ({self.lower}) <= upper ({self.upper})")
        if self.top_t < 1 or self.min_support < 1:
            problems.append("top_t and min_support must be >= 1")
        if self.split not in ("cold-start", "time"):
            problems.append(f"split must be cold-start or time, not {self.split!r}")
        if not (0 <= self.val_fraction and 0 < self.test_fraction and self.val_fraction + self.test_fraction < 1):
            problems.append("need val_fraction >= 0, test_fraction > 0 and val_fraction + test_fraction < 1")
        if not self.click_actions or not self.view_actions:
            problems.append("view_actions and click_actions must not be empty")
        for name in (*self.view_actions, *self.click_actions):
            if "'" in name:
                problems.append(f"action name {name!r} must not contain a quote")
        if problems:
            raise MiningError("; ".join(problems))


@dataclass
class Stage:
    """One stage of the pipeline: what came in, what it kept, and what it dropped (reason -> count)."""

    name: str
    unit: str
    kept: int
    dropped: dict[str, int] = field(default_factory=dict)
    noted: dict[str, int] = field(default_factory=dict)
    detail: str = ""

    def line(self) -> str:
        """One printable line: ``stage: kept N unit; dropped ...; noted ...``."""
        out = f"{self.name:<22} kept {self.kept:>12,} {self.unit}"
        if self.dropped:
            out += "; dropped " + ", ".join(f"{v:,} {k}" for k, v in self.dropped.items())
        if self.noted:
            out += "; noted (kept) " + ", ".join(f"{v:,} {k}" for k, v in self.noted.items())
        return out + (f" ({self.detail})" if self.detail else "")


@dataclass
class MiningReport:
    """Stages in order, and the figures of the written dataset."""

    stages: list[Stage] = field(default_factory=list)
    outputs: dict[str, int] = field(default_factory=dict)
    cuts: dict[str, float] = field(default_factory=dict)

    def add(self, stage: Stage) -> Stage:
        """Record a stage; raise :class:`MiningError` naming it if it kept nothing."""
        self.stages.append(stage)
        if stage.kept == 0:
            raise MiningError(f"stage {stage.name!r} removed everything ({stage.line().strip()}); nothing is left "
                              "to mine. Check the inputs and settings named there.", self)
        return stage

    def lines(self) -> list[str]:
        """Printable lines, one per stage."""
        return [s.line() for s in self.stages]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {"stages": [{"name": s.name, "unit": s.unit, "kept": s.kept, "dropped": s.dropped,
                            "noted": s.noted, "detail": s.detail} for s in self.stages],
                "outputs": self.outputs, "cuts": self.cuts}
