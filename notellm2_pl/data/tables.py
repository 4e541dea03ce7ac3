"""Reading notes and pairs tables from disk, in the canonical layout or the original NoteLLM release layout.

Canonical layout (CSV with a header, JSONL, or Parquet; the extension decides)::

    ROOT/notes_train.<ext>   note_id, title, topics, content, image     (topics: "a|b|c" or a list)
    ROOT/notes_test.<ext>    same columns: the test pool
    ROOT/notes.<ext>         optional single table, used for a split without its own notes file
    ROOT/pairs_{train,val,test}.<ext>             query_id, target_id
    ROOT/pairs_test_{shortquery,shortgtdoc,longquery,longgtdoc}.<ext>   optional subsets
    ROOT/images/...          image paths are relative to ROOT (or absolute)

Official NoteLLM layout (header-less CSVs, loaded as is)::

    ROOT/notes_{train,test}.csv          noteid, title, content, imgid, category
    ROOT/note_pairs_{train,val,test}.csv noteid1, noteid2
    ROOT/note_pairs_test_{shortquery,...}.csv
    ROOT/images/<imgid>  (train)   ROOT/images_test/<imgid>  (test)

Every problem has a code (:data:`notellm2_pl.data.problems.PROBLEMS`, docs/data.md) and is reported with its file
and line (CSV and JSONL lines count from 1, the header included; Parquet rows are ``row N``). Problems of severity
``error`` raise :class:`~notellm2_pl.data.problems.DataError` under ``on_error="raise"`` (the default) and skip the
row (counted) under ``on_error="skip"``; problems of severity ``warning`` never drop data: they are fixed in a
documented way and counted. Nothing is ever substituted silently. Image files are checked separately by
:func:`notellm2_pl.data.validation.check_images`.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from notellm2_pl.data.problems import DataError, IssueSink, LoadReport, OnError, Problem
from notellm2_pl.data.prompts import TextLimits
from notellm2_pl.data.records import scalar, table_records, text_problem
from notellm2_pl.data.schema import (
    ALL_PAIRS,
    NOTE_COLUMNS,
    OFFICIAL_NOTE_COLUMNS,
    OFFICIAL_PAIR_COLUMNS,
    PAIR_COLUMNS,
    SPLITS,
    SUBSET_NAMES,
    TABLE_EXTENSIONS,
)
from notellm2_pl.data.schema import (
    Split as SplitName,
)

log = logging.getLogger(__name__)

@dataclass
class Note:
    """One item. ``raw_len`` is the character length of title + content before any truncation.

    ``image`` is the image file's path; notes read from prepared streaming chunks also carry the file's bytes in
    ``image_bytes`` (decoded from them, ``image`` then only names the file).
    """

    note_id: str
    title: str
    topics: list[str]
    content: str
    image: str | None
    image_bytes: bytes | None = field(default=None, repr=False)

    @property
    def raw_len(self) -> int:
        """Characters of title + content + topics, before any truncation."""
        return len(self.title) + len(self.content) + sum(len(t) for t in self.topics)


@dataclass
class Split:
    """Notes of a split plus its pair files (``"all"`` and any subsets).

    Attributes:
        notes: Note id -> note, in table order.
        pairs: Pair set name (``all`` or a subset of :data:`~notellm2_pl.data.schema.SUBSET_NAMES`) -> pairs.
        report: Problems found while loading (and checking images).
        layout: ``canonical`` or ``official``.
        skipped_ids: Ids of notes skipped for a problem (their pairs are dropped and counted).
        origin: Note id -> ``file:line`` of its row.
    """

    notes: dict[str, Note]
    pairs: dict[str, list[tuple[str, str]]]
    report: LoadReport
    layout: str = "canonical"
    skipped_ids: set[str] = field(default_factory=set)
    origin: dict[str, str] = field(default_factory=dict)


def detect_layout(root: str | Path) -> Literal["official", "canonical"]:
    """Tell the layout from the files present.

    Args:
        root: Dataset directory.

    Returns:
        ``official`` (``note_pairs_*.csv``) or ``canonical`` (``pairs_*.{csv,jsonl,parquet}``).

    Raises:
        DataError: ``root`` is missing or holds neither layout.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"Data root {root} does not exist. Generate the demo data with "
                        f"`python -m notellm2_pl synth --out {root}` or pass --data.root DIR.")
    if (root / "note_pairs_train.csv").exists() or (root / "note_pairs_test.csv").exists():
        return "official"
    if any((root / f"pairs_{s}{e}").exists() for s in SPLITS for e in TABLE_EXTENSIONS):
        return "canonical"
    raise DataError(f"{root} holds neither the canonical layout (pairs_train.csv, notes_train.csv, ...) nor the "
                    f"official NoteLLM layout (note_pairs_train.csv, notes_train.csv, ...). See docs/data.md.")


def _find(root: Path, stem: str) -> Path | None:
    for ext in TABLE_EXTENSIONS:
        if (root / f"{stem}{ext}").exists():
            return root / f"{stem}{ext}"
    return None


_TAG_RE = re.compile(r"#(\w+)#")


def split_official_content(content: str, max_tag_len: int = 16) -> tuple[list[str], str]:
    """Steps 1-2 of docs/method.md#text-preprocessing: drop ``[话题]``, move ``#tag#`` matches of at most
    ``max_tag_len`` characters into tags.

    Returns:
        (all qualifying tags in order, content with them removed). Tag count limits are applied by the prompt.
    """
    content = content.replace("[话题]", "")
    tags: list[str] = []

    def take(m: re.Match) -> str:
        if len(m.group(0)) <= max_tag_len:
            tags.append(m.group(1))
            return ""
        return m.group(0)

    return tags, _TAG_RE.sub(take, content)


def _parse_topics(value: object) -> list[str]:
    if isinstance(value, (list, tuple)) or (hasattr(value, "tolist") and not isinstance(value, str)):
        return [str(v) for v in list(value) if v is not None and str(v)]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    return [t for t in str(value).split("|") if t]


def _read_notes(path: Path, image_dir: Path, official: bool, issue: IssueSink, limits: TextLimits | None,
                skipped: set[str], origin: dict[str, str]) -> dict[str, Note]:
    """Notes of one table; ids of notes skipped for a problem go to ``skipped``, each note's row to ``origin``."""
    notes: dict[str, Note] = {}
    cols = OFFICIAL_NOTE_COLUMNS if official else NOTE_COLUMNS
    for where, rec, bad in table_records(path, cols, cols[:1], header=not official, issue=issue):
        if bad:
            rid = rec.get(cols[0])
            readable = isinstance(rid, (str, int)) and str(rid) and not text_problem([str(rid)], official)
            rid = str(rid) if readable else None
            issue(bad[0], where, rid, detail=bad[1])
            if rid is not None and rid not in notes:
                skipped.add(rid)  # its pairs are dropped (counted), not reported as unknown ids
            continue
        try:
            note_id = scalar(rec.get(cols[0]))
            title = scalar(rec.get("title"))
            if official:
                topics, content = split_official_content(scalar(rec.get("content")))
                img = scalar(rec.get("imgid"))
            else:
                topics, content = _parse_topics(rec.get("topics")), scalar(rec.get("content"))
                img = scalar(rec.get("image"))
        except TypeError as err:
            issue("malformed_row", where, detail=str(err))
            continue
        if not note_id.strip():
            issue("empty_id", where)
            continue
        if note_id in notes:
            issue("duplicate_id", where, note_id)
            continue
        if not (title.strip() or content.strip() or any(t.strip() for t in topics)):
            issue("empty_note", where, note_id)
            skipped.add(note_id)
            continue
        if limits is not None:
            cut = _cuts(title, topics, content, limits)
            if cut:
                issue("text_truncated", where, note_id, detail=cut)
        image = str(image_dir / img) if img.strip() else None
        notes[note_id] = Note(note_id, title, topics, content, image)
        origin[note_id] = where
    return notes


def _cuts(title: str, topics: list[str], content: str, limits: TextLimits) -> str:
    """Which fields the prompt's character limits will cut (empty string when none)."""
    parts = []
    if len(title.strip()) > limits.title_chars:
        parts.append(f"title {len(title.strip())} > {limits.title_chars} chars")
    if len(content.strip()) > limits.content_chars:
        parts.append(f"content {len(content.strip())} > {limits.content_chars} chars")
    if len(topics) > limits.max_tags:
        parts.append(f"{len(topics)} topics > {limits.max_tags}")
    return ", ".join(parts)


def _read_pairs(path: Path, notes: dict[str, Note], official: bool, issue: IssueSink,
                skipped: set[str]) -> list[tuple[str, str]]:
    """Pairs of one table whose two notes are in ``notes`` (pairs of a ``skipped`` note are dropped and counted)."""
    pairs: list[tuple[str, str]] = []
    cols = OFFICIAL_PAIR_COLUMNS if official else PAIR_COLUMNS
    for where, rec, bad in table_records(path, cols, cols, header=not official, issue=issue):
        if bad:
            issue(bad[0], where, detail=bad[1])
            continue
        try:
            q, t = scalar(rec[cols[0]]), scalar(rec[cols[1]])
        except TypeError as err:
            issue("malformed_row", where, detail=str(err))
            continue
        if q in skipped or t in skipped:
            issue("pair_of_skipped_note", where, q if q in skipped else t, action="dropped")
            continue
        missing = [x for x in (q, t) if x not in notes]
        if missing:
            detail = f"{', '.join(repr(m) for m in missing)} not in the notes table"
            if official:  # the original release skips such pairs: loaded as is, but counted
                issue.report.record(Problem("unknown_pair_id", where, None, detail, "skipped"))
            else:
                issue("unknown_pair_id", where, detail=detail)
            continue
        if q == t:
            issue("self_pair", where, q)
            continue
        pairs.append((q, t))
    return pairs


def _sources(root: Path, layout: str, split: SplitName) -> tuple[Path, Path, str]:
    """(notes table, folder image paths are relative to, stem of the pair files) of one split."""
    note_split = "test" if split == "test" else "train"
    if layout == "official":
        path = root / f"notes_{note_split}.csv"
        if not path.exists():
            raise DataError(f"Missing {path.name} in {root} (official NoteLLM layout). See docs/data.md.")
        return path, root / ("images_test" if note_split == "test" else "images"), f"note_pairs_{split}"
    found = _find(root, f"notes_{note_split}") or _find(root, "notes")
    if found is None:
        raise DataError(f"No notes_{note_split}.csv/.jsonl/.parquet (or notes.*) in {root}. See docs/data.md.")
    return found, root, f"pairs_{split}"


def load_split(root: str | Path, split: SplitName, on_error: OnError = "raise",
               limits: TextLimits | None = None) -> Split:
    """Load the notes and pair files of one split, checking every row (image files are checked separately).

    The notes of ``train`` and ``val`` come from the train notes table; ``test`` from the test notes table (its
    whole table is the evaluation pool).

    Args:
        root: Dataset directory (either layout).
        split: ``train``, ``val`` or ``test``.
        on_error: ``raise`` (default): the first error-severity problem raises :class:`DataError` naming its file
            and line. ``skip``: such rows are skipped and counted in ``Split.report``.
        limits: When given, notes whose text the prompt will cut are counted (``text_truncated``, kept).

    Returns:
        The split: notes, pair sets (``all`` and, for ``test``, the subset files present) and its report.

    Raises:
        DataError: missing files or columns, or (``on_error="raise"``) the first bad row.
    """
    root = Path(root)
    if split not in SPLITS:
        raise DataError(f"Unknown split {split!r}; use train, val or test.")
    layout = detect_layout(root)
    report = LoadReport()
    issue = IssueSink(report, on_error)
    skipped: set[str] = set()
    official = layout == "official"
    path, image_dir, stem = _sources(root, layout, split)
    origin: dict[str, str] = {}
    notes = _read_notes(path, image_dir, official, issue, limits, skipped, origin)
    pairs: dict[str, list[tuple[str, str]]] = {}
    for name, file_stem in [(ALL_PAIRS, stem)] + [(s, f"{stem}_{s}") for s in SUBSET_NAMES] * (split == "test"):
        p = _find(root, file_stem)
        if p is None:
            if name == ALL_PAIRS:
                raise DataError(f"Missing pair file {file_stem}.csv in {root}. See docs/data.md.")
            continue
        pairs[name] = _read_pairs(p, notes, official, issue, skipped)
    if report.num_errors:
        log.warning("Loaded %s/%s, skipping and counting: %s", root, split, report.summary())
    elif report.counts:
        log.info("Loaded %s/%s: %s", root, split, report.summary())
    return Split(notes=notes, pairs=pairs, report=report, layout=layout, skipped_ids=skipped, origin=origin)
