"""Markdown tables rendered from benchmark result files (JSON lines), for docs blocks that quote them.

A doc names the file, the lines and the columns in its marker (docs/design.md#evidence)::

    <!-- BEGIN benchmarks/results/h200_bench_gpu.jsonl lines=1,2 columns=pairs,step_s_median,mfu_vs_nominal -->
    <!-- END benchmarks/results/h200_bench_gpu.jsonl -->

Columns are dotted paths into each JSON object (``table.1024x1024.topk_s``); lines are 1-based line numbers of the
file (result files are append-only, so a line keeps its number), all lines when omitted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def parse_options(text: str) -> dict[str, str]:
    """``"lines=1,2 columns=a,b"`` -> ``{"lines": "1,2", "columns": "a,b"}``.

    Raises:
        ValueError: A word is not ``key=value``.
    """
    options = {}
    for word in text.split():
        key, sep, value = word.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"marker option {word!r} is not key=value (e.g. columns=a,b lines=1,2)")
        options[key] = value
    return options


def lookup(row: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path (``a.b.c``), None where a step is missing."""
    node: Any = row
    for step in path.split("."):
        if not isinstance(node, Mapping) or step not in node:
            return None
        node = node[step]
    return node


def cell(value: Any) -> str:
    """A table cell: ``-`` for missing, lower-case booleans, numbers as written, JSON for the rest."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float, str)):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def jsonl_table(path: Path, columns: Sequence[str], lines: Sequence[int] | None = None) -> str:
    """A markdown table: one row per selected line, one column per dotted path.

    Args:
        path: A JSON-lines file.
        columns: Dotted paths, in column order (also the header).
        lines: 1-based line numbers to show, in that order; None: every line.

    Raises:
        ValueError: No columns, or a line number beyond the file.
    """
    if not columns:
        raise ValueError(f"a table of {path} needs columns=a,b,... in its marker")
    rows = [json.loads(t) for t in path.read_text(encoding="utf-8").splitlines() if t.strip()]
    picked = range(1, len(rows) + 1) if lines is None else lines
    if any(not 1 <= i <= len(rows) for i in picked):
        raise ValueError(f"{path} has {len(rows)} lines; the marker asks for lines {list(picked)}")
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(cell(lookup(rows[i - 1], c)) for c in columns) + " |" for i in picked]
    return "\n".join(out) + "\n"


def table_from_options(path: Path, options: Mapping[str, str]) -> str:
    """:func:`jsonl_table` with the marker's ``columns=`` and optional ``lines=``."""
    unknown = set(options) - {"columns", "lines"}
    if unknown:
        raise ValueError(f"unknown marker options {sorted(unknown)} for {path} (known: columns, lines)")
    lines = [int(x) for x in options["lines"].split(",")] if "lines" in options else None
    return jsonl_table(path, options.get("columns", "").split(",") if options.get("columns") else [], lines)
