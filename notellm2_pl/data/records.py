"""Raw records of a table file (CSV, JSONL or Parquet), each with its ``file:line``, and the encoding and shape
problems found in them. What the fields mean is up to the caller (:mod:`notellm2_pl.data.tables`)."""

from __future__ import annotations

import csv
import difflib
import io
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from notellm2_pl.data.problems import DataError, IssueSink

_BAD_UTF8 = re.compile("[\udc80-\udcff]")


def _decode(data: bytes) -> str:
    """UTF-8 with undecodable bytes kept as lone surrogates (found per record later); a leading BOM is dropped."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return data.decode("utf-8", errors="surrogateescape")


def text_problem(values: list[Any], official: bool) -> tuple[str, str] | None:
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
        bad = text_problem([line], official=False)
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
    import pandas as pd  # heavy, and only Parquet tables need it

    df = pd.read_parquet(path)
    for i, rec in enumerate(df.to_dict(orient="records"), start=1):
        yield i, rec, ""


def _where(path: Path, line: int) -> str:
    return f"{path.name}:{'row ' if path.suffix == '.parquet' else ''}{line}"


def scalar(value: Any) -> str:
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


Record = tuple[str, dict[str, Any], tuple[str, str] | None]
"""(where, field name -> value, (problem code, detail) of an encoding or shape problem, or None)."""


def table_records(path: Path, columns: tuple[str, ...], required: tuple[str, ...], header: bool,
                  issue: IssueSink) -> Iterator[Record]:
    """Yield (where, record, problem) per record; ``problem`` is (code, detail) of an encoding/shape problem or None.

    Records too broken to read at all go to ``issue`` directly.

    Args:
        path: A ``.csv``, ``.jsonl`` or ``.parquet`` table.
        columns: Known columns (the field names of a header-less CSV).
        required: Columns that must be present.
        header: The CSV has a header line (false: the header-less official layout, whose NUL bytes are stripped).
        issue: Where problems go.

    Raises:
        DataError: A required column is missing, or a CSV with a header is empty.
    """
    if path.suffix == ".csv":
        yield from _csv_table_records(path, columns, required, header, issue)
        return
    records = _jsonl_records(path) if path.suffix == ".jsonl" else _parquet_records(path)
    seen_cols = False
    for line, rec, err in records:
        where = _where(path, line)
        if rec is None:
            issue("malformed_row", where, detail=err)
            continue
        if "__bad__" in rec:
            issue("invalid_utf8", where, detail=text_problem([rec["__bad__"]], False)[1])
            continue
        if not seen_cols:
            seen_cols = True
            _check_columns(path, list(rec), required, columns)
        missing = [c for c in required if c not in rec]
        if missing:
            yield where, rec, ("malformed_row", f"missing field(s) {missing}")
            continue
        yield where, rec, text_problem(_flat_strings(rec), False)


def _csv_table_records(path: Path, columns: tuple[str, ...], required: tuple[str, ...], header: bool,
                       issue: IssueSink) -> Iterator[Record]:
    """:func:`table_records` of a CSV file."""
    official = not header
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
        bad = text_problem(row, official)
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


def _flat_strings(rec: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    for v in rec.values():
        out.extend(v if isinstance(v, (list, tuple)) else [v])
    return out

