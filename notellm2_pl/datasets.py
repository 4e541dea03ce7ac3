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

Bad-input behaviour (documented in docs/data.md): pairs naming an unknown note are skipped and counted (as the
original does); duplicate note ids, empty notes and self-pairs raise :class:`DataError` unless ``on_error="skip"``,
in which case they are skipped and counted; every count is reported in :class:`LoadReport`.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd

log = logging.getLogger(__name__)

SUBSETS = ("shortquery", "shortgtdoc", "longquery", "longgtdoc")
EXTS = (".csv", ".jsonl", ".parquet")
OnError = Literal["raise", "skip"]


class DataError(ValueError):
    """Invalid input data; the message names the file, line/id and what to do."""


@dataclass
class Note:
    """One item. ``raw_len`` is the character length of title + content before any truncation."""

    note_id: str
    title: str
    topics: list[str]
    content: str
    image: str | None

    @property
    def raw_len(self) -> int:
        return len(self.title) + len(self.content) + sum(len(t) for t in self.topics)


@dataclass
class LoadReport:
    """Counts of everything skipped or fixed while loading, per reason."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, where: str) -> None:
        self.counts[reason] += 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < 5:
            self.examples[reason].append(where)

    def summary(self) -> str:
        if not self.counts:
            return "no problems found"
        return "; ".join(f"{k}: {v} (e.g. {', '.join(self.examples[k][:3])})" for k, v in sorted(self.counts.items()))


@dataclass
class Split:
    """Notes of a split plus its pair files (``"all"`` and any subsets)."""

    notes: dict[str, Note]
    pairs: dict[str, list[tuple[str, str]]]
    report: LoadReport


# ----------------------------------------------------------------------------------------------- layout detection
def detect_layout(root: str | Path) -> Literal["official", "canonical"]:
    """Tell the layout from the files present."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"Data root {root} does not exist. Generate the demo data with "
                        f"`python -m notellm2_pl synth --out {root}` or pass --data.root DIR.")
    if (root / "note_pairs_train.csv").exists() or (root / "note_pairs_test.csv").exists():
        return "official"
    if any((root / f"pairs_{s}{e}").exists() for s in ("train", "val", "test") for e in EXTS):
        return "canonical"
    raise DataError(f"{root} holds neither the canonical layout (pairs_train.csv, notes_train.csv, ...) nor the "
                    f"official NoteLLM layout (note_pairs_train.csv, notes_train.csv, ...). See docs/data.md.")


def _find(root: Path, stem: str) -> Path | None:
    for ext in EXTS:
        if (root / f"{stem}{ext}").exists():
            return root / f"{stem}{ext}"
    return None


def _read_table(path: Path, header: bool = True, names: list[str] | None = None) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".jsonl":
        return pd.read_json(path, lines=True, dtype=False)
    text = path.read_bytes().replace(b"\x00", b"").decode("utf-8", errors="strict")
    return pd.read_csv(io.StringIO(text), header=0 if header else None, names=names, dtype=str,
                       keep_default_na=False, quotechar='"', engine="python")


# ----------------------------------------------------------------------------------------- official text handling
_TAG_RE = re.compile(r"#(\w+)#")


def split_official_content(content: str, max_tag_len: int = 16) -> tuple[list[str], str]:
    """METHOD §1.2 steps 1-2: drop ``[话题]``, move ``#tag#`` matches of at most ``max_tag_len`` chars into tags.

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


# ------------------------------------------------------------------------------------------------------- loading
def _notes_from_frame(df: pd.DataFrame, path: Path, image_dir: Path, official: bool, on_error: OnError,
                      report: LoadReport) -> dict[str, Note]:
    notes: dict[str, Note] = {}
    for line, row in enumerate(df.itertuples(index=False), start=1 if official else 2):
        where = f"{path.name}:{line}"
        if official:
            note_id, title, raw, img = str(row.noteid), str(row.title), str(row.content), str(row.imgid)
            topics, content = split_official_content(raw)
        else:
            note_id, title, content, img = str(row.note_id), str(row.title), str(row.content), row.image
            topics = _parse_topics(row.topics)
        if not note_id:
            _problem(report, on_error, "empty note id", where)
            continue
        if note_id in notes:
            _problem(report, on_error, "duplicate note id", f"{where} ({note_id})")
            continue
        if not (title.strip() or content.strip() or topics or img):
            _problem(report, on_error, "empty note", f"{where} ({note_id})")
            continue
        image = str(image_dir / str(img)) if img not in (None, "") and str(img) != "nan" else None
        notes[note_id] = Note(note_id, title, topics, content, image)
    return notes


def _parse_topics(value: object) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if str(v)]
    if value is None or (isinstance(value, float) and value != value):
        return []
    return [t for t in str(value).split("|") if t]


def _problem(report: LoadReport, on_error: OnError, reason: str, where: str) -> None:
    if on_error == "raise":
        raise DataError(f"{reason} at {where}. Fix the file, or pass --data.on_error skip to skip and count such rows.")
    report.add(reason, where)


def _pairs_from_frame(df: pd.DataFrame, path: Path, notes: dict[str, Note], on_error: OnError,
                      report: LoadReport, header: bool) -> list[tuple[str, str]]:
    pairs = []
    cols = list(df.columns)
    for line, (q, t) in enumerate(zip(df[cols[0]].astype(str), df[cols[1]].astype(str)), start=2 if header else 1):
        where = f"{path.name}:{line}"
        if q not in notes or t not in notes:
            report.add("pair with unknown note id (skipped)", where)
            continue
        if q == t:
            _problem(report, on_error, "self-pair", where)
            continue
        pairs.append((q, t))
    return pairs


def load_split(root: str | Path, split: Literal["train", "val", "test"], on_error: OnError = "raise") -> Split:
    """Load the notes and pair files of one split.

    The notes of ``train`` and ``val`` come from the train notes table; ``test`` from the test notes table (its
    whole table is the evaluation pool).

    Args:
        root: Dataset directory (either layout).
        split: ``train``, ``val`` or ``test``.
        on_error: ``raise`` (default) or ``skip`` (skip and count) for duplicate ids, empty notes, self-pairs.
    """
    root = Path(root)
    layout = detect_layout(root)
    report = LoadReport()
    note_split = "test" if split == "test" else "train"
    if layout == "official":
        path = root / f"notes_{note_split}.csv"
        df = _read_table(path, header=False, names=["noteid", "title", "content", "imgid", "category"])
        image_dir = root / ("images_test" if note_split == "test" else "images")
        notes = _notes_from_frame(df, path, image_dir, True, on_error, report)
        stem = f"note_pairs_{split}"
    else:
        path = _find(root, f"notes_{note_split}") or _find(root, "notes")
        if path is None:
            raise DataError(f"No notes_{note_split}.csv/.jsonl/.parquet (or notes.*) in {root}.")
        notes = _notes_from_frame(_read_table(path), path, root, False, on_error, report)
        stem = f"pairs_{split}"
    pairs: dict[str, list[tuple[str, str]]] = {}
    for name, file_stem in [("all", stem)] + [(s, f"{stem}_{s}") for s in SUBSETS] * (split == "test"):
        p = _find(root, file_stem)
        if p is None:
            if name == "all":
                raise DataError(f"Missing pair file {file_stem}.csv in {root}.")
            continue
        header = layout == "canonical"
        df = _read_table(p, header=header, names=None if header else ["noteid1", "noteid2"])
        pairs[name] = _pairs_from_frame(df, p, notes, on_error, report, header)
    if report.counts:
        log.warning("Loaded %s/%s with skips: %s", root, split, report.summary())
    return Split(notes=notes, pairs=pairs, report=report)


def read_json(path: str | Path) -> dict:
    """Small helper: read a JSON file."""
    return json.loads(Path(path).read_text())
