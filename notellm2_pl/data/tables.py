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

Every problem has a code (see :data:`PROBLEMS` and docs/data.md) and is reported with its file and line (CSV and
JSONL lines count from 1, the header included; Parquet rows are ``row N``). Problems of severity ``error`` raise
:class:`DataError` under ``on_error="raise"`` (the default) and skip the row (counted) under ``on_error="skip"``;
problems of severity ``warning`` never drop data: they are fixed in a documented way and counted. Nothing is ever
substituted silently. Image files are checked separately by :func:`notellm2_pl.data.validation.check_images`.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

SUBSETS = ("shortquery", "shortgtdoc", "longquery", "longgtdoc")
EXTS = (".csv", ".jsonl", ".parquet")
OnError = Literal["raise", "skip"]

NOTE_COLUMNS = ("note_id", "title", "topics", "content", "image")
PAIR_COLUMNS = ("query_id", "target_id")
OFFICIAL_NOTE_COLUMNS = ("noteid", "title", "content", "imgid", "category")

# code -> (severity, description). "error": raise, or skip and count with on_error="skip". "warning": kept, fixed
# in a documented way, counted. docs/data.md has the table of behaviours and the tests that cover each.
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
}


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


@dataclass(frozen=True)
class Problem:
    """One reported problem.

    Attributes:
        code: Key of :data:`PROBLEMS` (or a free-form reason from :meth:`LoadReport.add`).
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

    def add(self, reason: str, where: str) -> None:
        """Count a free-form reason (kept for callers that predate :meth:`record`)."""
        self.record(Problem(reason, where))

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


@dataclass
class Split:
    """Notes of a split plus its pair files (``"all"`` and any subsets)."""

    notes: dict[str, Note]
    pairs: dict[str, list[tuple[str, str]]]
    report: LoadReport
    layout: str = "canonical"
    skipped_ids: set[str] = field(default_factory=set)
    origin: dict[str, str] = field(default_factory=dict)


class _Issues:
    """Routes problems: raise (errors under on_error="raise") or record."""

    def __init__(self, report: LoadReport, on_error: OnError) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error={on_error!r}: use 'raise' or 'skip'.")
        self.report, self.on_error = report, on_error

    def __call__(self, code: str, where: str, note_id: str | None = None, detail: str = "",
                 action: str | None = None) -> None:
        err = severity(code) == "error"
        if err and self.on_error == "raise":
            ident = f" (id {note_id})" if note_id is not None else ""
            raise DataError(f"{describe(code)} at {where}{ident}{': ' + detail if detail else ''}. Fix the data, or "
                            f"pass --data.on_error skip to skip and count such rows; `python -m notellm2_pl "
                            f"validate-data ROOT --on-error skip` lists every problem.", code=code, where=where)
        self.report.record(Problem(code, where, note_id, detail, action or ("skipped" if err else "kept")))


# ----------------------------------------------------------------------------------------------- layout detection
def detect_layout(root: str | Path) -> Literal["official", "canonical"]:
    """Tell the layout from the files present.

    Raises:
        DataError: ``root`` is missing or holds neither layout.
    """
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


# ------------------------------------------------------------------------------------------------- raw records
_BAD_UTF8 = re.compile("[\udc80-\udcff]")


def _decode(data: bytes) -> str:
    """UTF-8 with undecodable bytes kept as lone surrogates (found per record later); a leading BOM is dropped."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return data.decode("utf-8", errors="surrogateescape")


def _text_problem(values: list[Any], official: bool) -> tuple[str, str] | None:
    """(code, detail) of an encoding problem in a record's string values, or None."""
    for v in values:
        if isinstance(v, str):
            m = _BAD_UTF8.search(v)
            if m:
                return "invalid_utf8", f"byte 0x{ord(m.group(0)) - 0xDC00:02x}"
            if "\x00" in v and not official:
                return "nul_byte", ""
    return None


def _csv_records(path: Path) -> Iterator[tuple[int, list[str] | None, str]]:
    """Yield (first line, fields or None, error detail) per CSV record; multi-line quoted fields allowed."""
    text = _decode(path.read_bytes())
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    last = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            yield last + 1, None, f"CSV syntax: {err}"
            if reader.line_num == last:  # no progress: stop rather than loop
                return
            last = reader.line_num
            continue
        start, last = last + 1, reader.line_num
        if row:  # blank lines are not records
            yield start, row, ""


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict | None, str]]:
    for line_no, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        line = _decode(raw).strip()
        if not line:
            continue
        bad = _text_problem([line], official=False)
        if bad and bad[0] == "invalid_utf8":
            yield line_no, {"__bad__": line}, ""
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            yield line_no, None, f"invalid JSON: {err.msg} at column {err.colno}"
            continue
        if not isinstance(obj, dict):
            yield line_no, None, f"expected a JSON object, got {type(obj).__name__}"
            continue
        yield line_no, obj, ""


def _parquet_records(path: Path) -> Iterator[tuple[int, dict, str]]:
    import pandas as pd

    df = pd.read_parquet(path)
    for i, rec in enumerate(df.to_dict(orient="records"), start=1):
        yield i, rec, ""


def _where(path: Path, line: int) -> str:
    return f"{path.name}:{'row ' if path.suffix == '.parquet' else ''}{line}"


def _scalar(value: Any) -> str:
    """A table cell as text: None/NaN -> "", numbers and strings -> str; containers are rejected."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (dict, list, tuple)):
        raise TypeError(f"expected text, got a {type(value).__name__}")
    return str(value)


def _check_columns(path: Path, header: list[str], required: tuple[str, ...], known: tuple[str, ...]) -> None:
    missing = [c for c in required if c not in header]
    if not missing:
        return
    hints = []
    for col in header:
        close = difflib.get_close_matches(col, [k for k in known if k not in header], n=1, cutoff=0.6)
        if close:
            hints.append(f"{col!r} -> {close[0]!r}")
    raise DataError(f"{path.name}: missing column(s) {missing}; the header is {header}. Expected columns: "
                    f"{list(known)}" + (f" (rename {', '.join(hints)})" if hints else "") + ". See docs/data.md.",
                    where=f"{path.name}:1")


def _table_records(path: Path, columns: tuple[str, ...], required: tuple[str, ...], header: bool,
                   issue: _Issues) -> Iterator[tuple[str, dict[str, Any], tuple[str, str] | None]]:
    """Yield (where, record, problem) per record; ``problem`` is (code, detail) of an encoding/shape problem or None.

    Records too broken to read at all go to ``issue`` directly.
    """
    official = not header
    if path.suffix == ".csv":
        names: list[str] | None = None if header else list(columns)
        for line, row, err in _csv_records(path):
            where = _where(path, line)
            if row is None:
                issue("malformed_row", where, detail=err)
                continue
            if names is None:
                names = [h.strip() for h in row]
                _check_columns(path, names, required, columns)
                continue
            rec = dict(zip(names, row))
            bad = _text_problem(row, official)
            if bad:
                yield where, rec, bad
                continue
            if official and any("\x00" in v for v in row):
                row = [v.replace("\x00", "") for v in row]
                rec = dict(zip(names, row))
                issue("nul_stripped", where)
            if len(row) != len(names):
                yield where, rec, ("malformed_row", f"{len(row)} fields, expected {len(names)} ({', '.join(names)})")
                continue
            yield where, rec, None
        if names is None and header:
            raise DataError(f"{path.name} is empty: it needs a header line ({', '.join(columns)}) and rows.")
        return
    records = _jsonl_records(path) if path.suffix == ".jsonl" else _parquet_records(path)
    seen_cols = False
    for line, rec, err in records:
        where = _where(path, line)
        if rec is None:
            issue("malformed_row", where, detail=err)
            continue
        if "__bad__" in rec:
            issue("invalid_utf8", where, detail=_text_problem([rec["__bad__"]], False)[1])
            continue
        if not seen_cols:
            seen_cols = True
            _check_columns(path, list(rec), required, columns)
        missing = [c for c in required if c not in rec]
        if missing:
            yield where, rec, ("malformed_row", f"missing field(s) {missing}")
            continue
        yield where, rec, _text_problem(_flat_strings(rec), False)


def _flat_strings(rec: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    for v in rec.values():
        out.extend(v if isinstance(v, (list, tuple)) else [v])
    return out


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


def _parse_topics(value: object) -> list[str]:
    if isinstance(value, (list, tuple)) or (hasattr(value, "tolist") and not isinstance(value, str)):
        return [str(v) for v in list(value) if v is not None and str(v)]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    return [t for t in str(value).split("|") if t]


# ------------------------------------------------------------------------------------------------------- loading
def _read_notes(path: Path, image_dir: Path, official: bool, issue: _Issues, limits: Any | None,
                skipped: set[str], origin: dict[str, str]) -> dict[str, Note]:
    notes: dict[str, Note] = {}
    cols = OFFICIAL_NOTE_COLUMNS if official else NOTE_COLUMNS
    for where, rec, bad in _table_records(path, cols, cols[:1], header=not official, issue=issue):
        if bad:
            rid = rec.get(cols[0])
            rid = str(rid) if isinstance(rid, (str, int)) and str(rid) and not _text_problem([str(rid)], official) else None
            issue(bad[0], where, rid, detail=bad[1])
            if rid is not None and rid not in notes:
                skipped.add(rid)  # its pairs are dropped (counted), not reported as unknown ids
            continue
        try:
            note_id = _scalar(rec.get(cols[0]))
            title = _scalar(rec.get("title"))
            if official:
                topics, content = split_official_content(_scalar(rec.get("content")))
                img = _scalar(rec.get("imgid"))
            else:
                topics, content = _parse_topics(rec.get("topics")), _scalar(rec.get("content"))
                img = _scalar(rec.get("image"))
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


def _cuts(title: str, topics: list[str], content: str, limits: Any) -> str:
    """Which fields the prompt's character limits will cut (empty string when none)."""
    parts = []
    if len(title.strip()) > limits.title_chars:
        parts.append(f"title {len(title.strip())} > {limits.title_chars} chars")
    if len(content.strip()) > limits.content_chars:
        parts.append(f"content {len(content.strip())} > {limits.content_chars} chars")
    if len(topics) > limits.max_tags:
        parts.append(f"{len(topics)} topics > {limits.max_tags}")
    return ", ".join(parts)


def _read_pairs(path: Path, notes: dict[str, Note], official: bool, issue: _Issues,
                skipped: set[str]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    cols = ("noteid1", "noteid2") if official else PAIR_COLUMNS
    for where, rec, bad in _table_records(path, cols, cols, header=not official, issue=issue):
        if bad:
            issue(bad[0], where, detail=bad[1])
            continue
        try:
            q, t = _scalar(rec[cols[0]]), _scalar(rec[cols[1]])
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


def load_split(root: str | Path, split: Literal["train", "val", "test"], on_error: OnError = "raise",
               limits: Any | None = None) -> Split:
    """Load the notes and pair files of one split, checking every row (image files are checked separately).

    The notes of ``train`` and ``val`` come from the train notes table; ``test`` from the test notes table (its
    whole table is the evaluation pool).

    Args:
        root: Dataset directory (either layout).
        split: ``train``, ``val`` or ``test``.
        on_error: ``raise`` (default): the first error-severity problem raises :class:`DataError` naming its file
            and line. ``skip``: such rows are skipped and counted in ``Split.report``.
        limits: A :class:`notellm2_pl.data.prompts.TextLimits`; when given, notes whose text the prompt will cut are
            counted (``text_truncated``, kept).

    Raises:
        DataError: missing files or columns, or (``on_error="raise"``) the first bad row.
    """
    root = Path(root)
    if split not in ("train", "val", "test"):
        raise DataError(f"Unknown split {split!r}; use train, val or test.")
    layout = detect_layout(root)
    report = LoadReport()
    issue = _Issues(report, on_error)
    skipped: set[str] = set()
    note_split = "test" if split == "test" else "train"
    official = layout == "official"
    if official:
        path = root / f"notes_{note_split}.csv"
        if not path.exists():
            raise DataError(f"Missing {path.name} in {root} (official NoteLLM layout). See docs/data.md.")
        image_dir = root / ("images_test" if note_split == "test" else "images")
        stem = f"note_pairs_{split}"
    else:
        path = _find(root, f"notes_{note_split}") or _find(root, "notes")
        if path is None:
            raise DataError(f"No notes_{note_split}.csv/.jsonl/.parquet (or notes.*) in {root}. See docs/data.md.")
        image_dir = root
        stem = f"pairs_{split}"
    origin: dict[str, str] = {}
    notes = _read_notes(path, image_dir, official, issue, limits, skipped, origin)
    pairs: dict[str, list[tuple[str, str]]] = {}
    for name, file_stem in [("all", stem)] + [(s, f"{stem}_{s}") for s in SUBSETS] * (split == "test"):
        p = _find(root, file_stem)
        if p is None:
            if name == "all":
                raise DataError(f"Missing pair file {file_stem}.csv in {root}. See docs/data.md.")
            continue
        pairs[name] = _read_pairs(p, notes, official, issue, skipped)
    if report.num_errors:
        log.warning("Loaded %s/%s, skipping and counting: %s", root, split, report.summary())
    elif report.counts:
        log.info("Loaded %s/%s: %s", root, split, report.summary())
    return Split(notes=notes, pairs=pairs, report=report, layout=layout, skipped_ids=skipped, origin=origin)


def read_json(path: str | Path) -> dict:
    """Small helper: read a JSON file."""
    return json.loads(Path(path).read_text())
