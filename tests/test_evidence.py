"""Docs tables are rendered from committed evidence files, and a doc that drifts from its evidence fails here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from notellm2_pl.analysis.evidence import collect, render, render_docs

ROOT = Path(__file__).resolve().parents[1]


def test_committed_docs_match_their_evidence():
    docs = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
    stale = render_docs(docs, ROOT, write=False)
    assert not stale, f"run `python -m notellm2_pl evidence render`: out of date: {[str(d) for d in stale]}"


def test_render_replaces_marked_blocks_and_refuses_missing_files(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "t.md").write_text("# Title\n\n| a |\n|---|\n| 1 |\n")
    doc = "before\n<!-- BEGIN results/t.md -->\nstale\n<!-- END results/t.md -->\nafter\n"
    assert render(doc, tmp_path) == "before\n<!-- BEGIN results/t.md -->\n| a |\n|---|\n| 1 |\n" \
                                    "<!-- END results/t.md -->\nafter\n"
    with pytest.raises(FileNotFoundError, match="results/none.md"):
        render("<!-- BEGIN results/none.md -->\n<!-- END results/none.md -->", tmp_path)


def test_collect_copies_summaries_runs_and_provenance(tmp_path):
    grid = tmp_path / "grid"
    (grid / "basic-s0").mkdir(parents=True)
    (grid / "summary.md").write_text("# s\n")
    (grid / "summary.csv").write_text("variant\n")
    (grid / "basic-s0" / "done.json").write_text(json.dumps({"run_id": "basic-s0", "metrics": {}, "checkpoint": "x"}))
    (grid / "basic-s0" / "eval").mkdir()
    (grid / "basic-s0" / "eval" / "results.json").write_text("{}")
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(grid / "basic-s0" / "tb" / "version_0") as tb:  # two validation passes, a chosen scale each
        for step, (rec, scale) in enumerate([(0.5, 0.25), (0.75, 1.0)]):
            tb.add_scalar("val/recall", rec, step)
            tb.add_scalar("val/fusion_scale", scale, step)
    files = collect(grid, tmp_path / "results" / "g", "python -m notellm2_pl ablate --grid g", repo=ROOT)
    names = {f.relative_to(tmp_path / "results" / "g").as_posix() for f in files}
    assert names == {"summary.md", "summary.csv", "runs/basic-s0/record.json", "runs/basic-s0/results.json",
                     "validation.md", "provenance.json"}
    table = (tmp_path / "results" / "g" / "validation.md").read_text()
    assert "| basic-s0 | 0.500 / 0.750 | 0.750 | 0.25 / 1 |" in table
    prov = json.loads((tmp_path / "results" / "g" / "provenance.json").read_text())
    assert prov["command"].endswith("--grid g") and len(prov["commit"]) == 40 and prov["machine"]["cpus"]
    record = json.loads((tmp_path / "results" / "g" / "runs" / "basic-s0" / "record.json").read_text())
    assert "checkpoint" not in record


def test_collect_single_renders_a_run_outside_a_grid(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from notellm2_pl.analysis.evidence import collect_single

    (tmp_path / "eval").mkdir()
    results = {"full/e_m/all": {"num_queries": 300, "recalls": {"10": 0.64, "100": 0.97}},
               "only_text/e_m/all": {"num_queries": 300, "recalls": {"10": 0.25, "100": 0.5}}}
    (tmp_path / "eval" / "results.json").write_text(json.dumps(results))
    with SummaryWriter(tmp_path / "log" / "version_0") as tb:
        for step, rec in enumerate([0.5, 0.66]):
            tb.add_scalar("val/recall", rec, step)
    files = collect_single(tmp_path / "eval", tmp_path / "log", tmp_path / "results" / "demo", "bash demo.sh", "demo",
                           repo=ROOT)
    assert {f.name for f in files} == {"results.json", "summary.md", "validation.md", "provenance.json"}
    summary = (tmp_path / "results" / "demo" / "summary.md").read_text()
    assert "| demo | full | 0.640 / 0.970 |" in summary and "| demo | only_text | 0.250 / 0.500 |" in summary
    assert "| demo | 0.500 / 0.660 | 0.660 | - |" in (tmp_path / "results" / "demo" / "validation.md").read_text()


def test_jsonl_blocks_render_the_named_lines_and_dotted_columns(tmp_path):
    (tmp_path / "b.jsonl").write_text('{"pairs": 64, "t": {"1024": {"s": 1.5}}, "ok": true}\n'
                                      '{"pairs": 128, "t": {}, "ok": false, "x": null}\n')
    doc = ("<!-- BEGIN b.jsonl lines=2,1 columns=pairs,t.1024.s,ok -->\nold\n<!-- END b.jsonl -->\n"
           "<!-- BEGIN b.jsonl columns=pairs -->\n<!-- END b.jsonl -->\n")
    assert render(doc, tmp_path) == (
        "<!-- BEGIN b.jsonl lines=2,1 columns=pairs,t.1024.s,ok -->\n| pairs | t.1024.s | ok |\n|---|---|---|\n"
        "| 128 | - | false |\n| 64 | 1.5 | true |\n<!-- END b.jsonl -->\n"
        "<!-- BEGIN b.jsonl columns=pairs -->\n| pairs |\n|---|\n| 64 |\n| 128 |\n<!-- END b.jsonl -->\n")
    for bad, message in [("lines=3 columns=pairs", "has 2 lines"), ("lines=1", "needs columns"),
                         ("columns=pairs rows=1", "unknown marker options"), ("columns", "not key=value")]:
        with pytest.raises(ValueError, match=message):
            render(f"<!-- BEGIN b.jsonl {bad} -->\n<!-- END b.jsonl -->", tmp_path)
