"""Evidence in the repository: the small files a grid produced, and docs tables rendered from them.

A result the docs cite must be checkable: :func:`collect` copies what a finished grid wrote (``summary.md``,
``summary.csv``, every run's ``eval/results.json`` and its record, each run's validation curve, and for a grid that
re-selects a setting the choice made on validation, :mod:`notellm2_pl.analysis.selection`) into a folder under
``results/`` together with ``provenance.json`` (the command, the commit, the machine). Docs then quote such files
between markers::

    <!-- BEGIN results/ablations/weak_image/summary.md -->
    ...rendered content...
    <!-- END results/ablations/weak_image/summary.md -->

:func:`render_docs` rewrites every marked block from the file it names, and the test-suite fails when a committed doc
differs from what the files render, so a table can only change together with its evidence.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import re
import shutil
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from notellm2_pl.analysis.baselines import baseline_recalls
from notellm2_pl.analysis.jsonl_table import parse_options, table_from_options
from notellm2_pl.analysis.records import parse_results, query_counts
from notellm2_pl.analysis.selection import choose, has_candidates, kept_scores, selection_markdown
from notellm2_pl.analysis.summary import aggregate, summary_markdown
from notellm2_pl.atomic import atomic_write_text

BLOCK = re.compile(r"(<!-- BEGIN (?P<path>\S+)(?P<opts>(?: [^\s>]+)*) -->\n)(?P<body>.*?)(<!-- END (?P=path) -->)",
                   re.DOTALL)
RECORD_KEYS = ("run_id", "name", "seed", "recipe", "configs", "overrides", "hparams", "metrics", "num_queries",
               "baselines", "seconds", "finished")


def provenance(command: str, repo: Path) -> dict[str, Any]:
    """Where a result comes from: the command, the commit (and whether the tree was dirty), the machine."""
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
        return out.stdout.strip()

    import torch

    return {"command": command, "commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain")),
            "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                        "cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
            "collected": time.strftime("%Y-%m-%dT%H:%M:%S")}


def collect(grid_out: Path, dest: Path, command: str, repo: Path = Path(".")) -> list[Path]:
    """Copy a finished grid's small files into ``dest`` (replacing what was there) and write ``provenance.json``.

    Args:
        grid_out: The grid's output folder (``summary.md``, ``summary.csv`` and one folder per run).
        dest: Evidence folder, e.g. ``results/ablations/weak_image``.
        command: The command that produced the grid, as a user would type it.
        repo: The repository (for the commit).

    Returns:
        The files written.
    """
    if not (grid_out / "summary.csv").is_file():
        raise FileNotFoundError(f"{grid_out} has no summary.csv: run `python -m notellm2_pl ablate --grid NAME "
                                f"--report-only --out {grid_out}` first.")
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "runs").mkdir(parents=True)
    written = []
    for name in ("summary.md", "summary.csv"):
        shutil.copyfile(grid_out / name, dest / name)
        written.append(dest / name)
    runs = sorted(done.parent for done in grid_out.glob("*/done.json"))
    for run_dir in runs:
        written += _collect_run(run_dir, dest / "runs" / run_dir.name)
    curves = {r.name: validation_curve(r) for r in runs}
    written.append(dest / "validation.md")
    atomic_write_text(written[-1], validation_table(curves))
    written += _write_selection(grid_out, dest, runs, curves)
    written.append(dest / "provenance.json")
    atomic_write_text(written[-1], json.dumps(provenance(command, repo), indent=2) + "\n")
    return written


def _write_selection(grid_out: Path, dest: Path, runs: list[Path],
                     curves: dict[str, dict[str, list[float]]]) -> list[Path]:
    """``selection.md`` when the grid has ``VARIANT@CANDIDATE`` rows (:mod:`notellm2_pl.analysis.selection`)."""
    with (grid_out / "summary.csv").open(encoding="utf-8", newline="") as f:
        names = list(dict.fromkeys(row["variant"] for row in csv.DictReader(f)))  # grid order
    if not has_candidates(names):
        return []
    records = {r.name: json.loads((r / "done.json").read_text(encoding="utf-8")) for r in runs}
    choices = choose(names, kept_scores(curves, records))
    atomic_write_text(dest / "selection.md", selection_markdown(choices, aggregate(list(records.values()))))
    return [dest / "selection.md"]


def _collect_run(run_dir: Path, dest: Path) -> list[Path]:
    dest.mkdir(parents=True)
    record = json.loads((run_dir / "done.json").read_text(encoding="utf-8"))
    atomic_write_text(dest / "record.json", json.dumps({k: record.get(k) for k in RECORD_KEYS}, indent=1) + "\n")
    out = [dest / "record.json"]
    if (run_dir / "eval" / "results.json").is_file():
        shutil.copyfile(run_dir / "eval" / "results.json", dest / "results.json")
        out.append(dest / "results.json")
    return out


def collect_single(eval_dir: Path, log_dir: Path, dest: Path, command: str, name: str,
                   repo: Path = Path(".")) -> list[Path]:
    """Evidence of one run outside a grid (e.g. the demo): its ``results.json``, a table rendered from it, its
    validation curve and ``provenance.json``, written to ``dest`` (replacing what was there).

    Args:
        eval_dir: ``evaluate``'s ``--out`` folder (holds ``results.json``).
        log_dir: The run's TensorBoard folder holding ``version_*`` (e.g. ``runs/demo``).
        dest: Evidence folder, e.g. ``results/demo``.
        command: The commands that produced the run and its evaluation, as a user types them.
        name: Row label of the table.
        repo: The repository (for the commit).

    Returns:
        The files written.
    """
    results = json.loads((eval_dir / "results.json").read_text(encoding="utf-8"))
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    shutil.copyfile(eval_dir / "results.json", dest / "results.json")
    record = {"name": name, "seed": 0, "metrics": parse_results(results), "num_queries": query_counts(results),
              "baselines": baseline_recalls(results)}
    atomic_write_text(dest / "summary.md", summary_markdown(name, [name], [record]))
    atomic_write_text(dest / "validation.md", validation_table({name: validation_curve(log_dir, "version_*")}))
    atomic_write_text(dest / "provenance.json", json.dumps(provenance(command, repo), indent=2) + "\n")
    return [dest / f for f in ("results.json", "summary.md", "validation.md", "provenance.json")]


def validation_curve(run_dir: Path, pattern: str = "tb/version_*") -> dict[str, list[float]]:
    """``{tag: [value per validation pass]}`` of a run's ``val/recall`` and ``val/fusion_scale`` (TensorBoard logs
    in the folders ``run_dir/pattern``)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    curves: dict[str, list[float]] = {}
    for events in sorted(run_dir.glob(pattern)):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in ("val/recall", "val/fusion_scale"):
            if tag in acc.Tags().get("scalars", []):
                curves[tag] = [e.value for e in acc.Scalars(tag)]
    return curves


def validation_table(curves: dict[str, dict[str, list[float]]]) -> str:
    """Markdown: each run's validation Recall@K per pass, the kept checkpoint's (the best), and the late-fusion
    strength chosen at each pass when the run chose one (``model.encoder.fusion_scales``)."""
    intro = ("Validation Recall@K (`val/recall`) at each validation pass; the kept checkpoint is the best. "
             "`fusion scale`: the late-fusion strength chosen on validation at each pass (runs with "
             "`model.encoder.fusion_scales`).")
    lines = ["# Validation", "", intro, "", "| run | val/recall per pass | kept | fusion scale per pass |",
             "|---|---|---|---|"]
    for name, c in curves.items():
        rec, scale = c.get("val/recall", []), c.get("val/fusion_scale", [])
        lines.append(f"| {name} | {' / '.join(f'{v:.3f}' for v in rec)} | {max(rec, default=float('nan')):.3f} | "
                     f"{' / '.join(f'{v:g}' for v in scale) or '-'} |")
    return "\n".join(lines) + "\n"


def fragment(path: Path, options: str = "") -> str:
    """What a doc shows of an evidence file: a markdown file without its title line and with its headings two levels
    down (it sits inside a doc's section); a JSON-lines file as a table of the marker's ``columns=`` and ``lines=``
    (:mod:`notellm2_pl.analysis.jsonl_table`); else the file in a code block."""
    if path.suffix == ".jsonl":
        return table_from_options(path, parse_options(options))
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".md":
        lines = text.splitlines()
        if lines and lines[0].startswith("# "):
            lines = lines[1:]
        fenced = False
        for i, line in enumerate(lines):
            fenced ^= line.startswith("```")
            if not fenced and line.startswith("#"):
                lines[i] = "##" + line
        return "\n".join(lines).strip("\n") + "\n"
    return f"```\n{text.rstrip()}\n```\n"


def render(text: str, repo: Path) -> str:
    """``text`` with every marked block replaced by the :func:`fragment` of the file it names."""
    def replace(m: re.Match[str]) -> str:
        source = repo / m.group("path")
        if not source.is_file():
            raise FileNotFoundError(f"a doc quotes {m.group('path')}, which does not exist")
        return m.group(1) + fragment(source, m.group("opts")) + m.group(5)

    return BLOCK.sub(replace, text)


def render_docs(docs: Iterable[Path], repo: Path, write: bool = True) -> list[Path]:
    """Render every doc; returns the docs whose text changed (written unless ``write`` is false)."""
    changed = []
    for doc in docs:
        old = doc.read_text(encoding="utf-8")
        new = render(old, repo)
        if new != old:
            changed.append(doc)
            if write:
                atomic_write_text(doc, new)
    return changed
