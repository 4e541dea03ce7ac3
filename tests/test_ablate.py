"""The ablate grid: naming, resume, collection, reports and TensorBoard views read back with TensorBoard's reader."""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from notellm2_pl.analysis.grid import load_grid, plan
from notellm2_pl.analysis.pipeline import shell_lines
from notellm2_pl.analysis.reports import write_reports
from notellm2_pl.analysis.run_folder import MARKER
from notellm2_pl.analysis.runner import run_one
from notellm2_pl.analysis.tensorboard_views import read_layout, read_run_events

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {  # what a resolved config holds for each fake run (only what the views read)
    "basic": {"encoder": {"micl": False, "late_fusion": False}},
    "notellm2": {"encoder": {"micl": True, "late_fusion": True}},
    "ratio_1_1": {"encoder": {"micl": True, "late_fusion": True}, "loss_weights": [1.0, 1.0]},
}
SUBSETS = ("all", "shortquery")


def _recall(name: str, seed: int, probe: str, subset: str, k: int) -> float:
    """Deterministic fake recall of one run."""
    base = {"basic": 0.2, "notellm2": 0.5, "ratio_1_1": 0.4}[name] + 0.01 * seed
    return round(base + {"full": 0.0, "only_image": 0.1, "only_text": -0.1}[probe] + (0.3 if k == 100 else 0.0)
                 + (0.05 if subset == "shortquery" else 0.0), 6)


class FakeRunner:
    """Stands in for the subprocesses: writes what fit / evaluate / saliency would write, and counts calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, cmd: list[str], log_path: Path) -> int:
        sub = cmd[3]
        self.calls.append(sub)
        if sub == "fit":
            run_dir = Path(cmd[cmd.index("--trainer.default_root_dir") + 1])
            name, seed = re.match(r"(.+)-s(\d+)-", run_dir.name).groups()
            cfg = {"seed_everything": int(seed), "weights_only": None, "trainer": {"max_steps": 5},
                   "model": {**CONFIGS[name], "connector": {"class_path": "QFormerConnector",
                                                            "init_args": {"num_query_tokens": 8}},
                             "vision": {"class_path": "EfficientNetLite0"}},
                   "data": {"root": "data/x"}}
            (run_dir / "tb" / "version_0").mkdir(parents=True)
            (run_dir / "tb" / "version_0" / "config.yaml").write_text(yaml.safe_dump(cfg))
            (run_dir / "checkpoints").mkdir()
            (run_dir / "checkpoints" / "best.ckpt").write_bytes(b"ckpt")
        elif sub == "evaluate":
            out = Path(cmd[cmd.index("--out") + 1])
            run_dir = out.parent
            assert (run_dir / "model_config.yaml").exists()
            assert "weights_only" not in yaml.safe_load((run_dir / "model_config.yaml").read_text())
            name, seed = re.match(r"(.+)-s(\d+)-", run_dir.name).groups()
            res = {f"{p}/e_m/{s}": {"recalls": {str(k): _recall(name, int(seed), p, s, k) for k in (10, 100)},
                                    "num_queries": 10}
                   for p in ("full", "only_image", "only_text") for s in SUBSETS}
            out.mkdir(parents=True)
            (out / "results.json").write_text(json.dumps(res))
        elif sub == "saliency":
            out = Path(cmd[cmd.index("--out") + 1])
            out.mkdir(parents=True)
            flows = {"S_v": [0.1, 0.2], "S_t": [0.5, 0.4], "S_o": [0.4, 0.4]}
            (out / "saliency.json").write_text(json.dumps({"label": cmd[cmd.index("--label") + 1], "normalised": flows,
                                                           "raw": flows, "num_notes": 4, "num_batches": 1}))
        return 0


@pytest.fixture()
def grid(tmp_path):
    spec = {"name": "fake", "seeds": [0], "saliency_batches": 1, "evaluate_args": ["--batch_size", "8"],
            "sweeps": {"ratio": {"label": "w_t : 1", "log_x": True}},
            "runs": [{"name": "basic", "recipe": "recipes/ablations/demo/basic.yaml"},
                     {"name": "notellm2", "recipe": "recipes/ablations/demo/notellm2.yaml", "sweeps": {"ratio": 9}},
                     {"name": "ratio_1_1", "recipe": "recipes/ablations/demo/ratio_1_1.yaml", "sweeps": {"ratio": 1},
                      "plot": False}]}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    return load_grid(str(path))


def test_run_names_are_deterministic(grid):
    a = plan(grid, [0, 1])
    b = plan(grid, [0, 1])
    assert [s.run_id for s in a] == [s.run_id for s in b]
    assert len({s.run_id for s in a}) == 6
    assert all(re.fullmatch(r"[a-z0-9_]+-s[01]-[0-9a-f]{8}", s.run_id) for s in a)
    other = plan(grid, [0], ["--trainer.max_steps", "3"])
    assert {s.run_id for s in other}.isdisjoint({s.run_id for s in a})  # overrides are part of the name
    assert a[0].configs[0].endswith("recipes/ablations/demo/base.yaml")  # from the recipe's `# base:` header
    assert a[0].configs[-1].endswith("recipes/ablations/demo/basic.yaml")
    assert "--seed_everything" in shell_lines(a[:1], Path("out"), grid)[0]


def test_per_run_seeds(tmp_path):
    path = tmp_path / "grid.yml"
    path.write_text(yaml.safe_dump({"name": "g", "seeds": [0], "runs": [
        {"name": "basic", "recipe": "recipes/ablations/demo/basic.yaml", "seeds": [0, 1]},
        {"name": "micl", "recipe": "recipes/ablations/demo/micl.yaml"}]}))
    grid = load_grid(str(path))
    assert [(s.run.name, s.seed) for s in plan(grid)] == [("basic", 0), ("basic", 1), ("micl", 0)]
    assert [(s.run.name, s.seed) for s in plan(grid, [3])] == [("basic", 3), ("micl", 3)]  # --seeds wins


def test_grid_prepare_runs_before_each_runs_own_prepare(tmp_path):
    path = tmp_path / "grid.yml"
    path.write_text(yaml.safe_dump({"name": "g", "prepare": ["python -c 'print(1)'"], "runs": [
        {"name": "basic", "recipe": "recipes/ablations/demo/basic.yaml"},
        {"name": "backbone_llama", "recipe": "recipes/ablations/demo/backbone_llama.yaml"}]}))
    grid = load_grid(str(path))
    basic, llama = plan(grid)
    assert basic.prepare == ("python -c 'print(1)'",)
    assert llama.prepare[0] == "python -c 'print(1)'" and "pretrain-text" in llama.prepare[1]  # grid's, then recipe's
    lines = shell_lines([basic], Path("out"), grid)
    assert "print(1)" in lines[0] and lines[0].index("print(1)") < lines[0].index(" fit ")
    runner, seen = FakeRunner(), []

    def recording(cmd, log_path):
        seen.append(cmd)
        return 0 if cmd[1] == "-c" else runner(cmd, log_path)

    run_one(basic, tmp_path / "out", grid, recording)
    assert seen[0][1:] == ["-c", "print(1)"] and seen[0][0] == sys.executable and seen[1][3] == "fit"


def test_finished_run_whose_recipe_changed_warns(tmp_path, caplog):
    base = Path("recipes/ablations/demo/base.yaml").resolve()
    recipe = tmp_path / "variant.yaml"
    recipe.write_text(f"# base: {base}\n# changes: model.encoder.micl\nmodel:\n  encoder:\n    micl: false\n")
    path = tmp_path / "grid.yml"
    path.write_text(yaml.safe_dump({"name": "g", "runs": [{"name": "basic", "recipe": str(recipe)}]}))
    grid = load_grid(str(path))
    out, runner = tmp_path / "out", FakeRunner()
    first = run_one(plan(grid)[0], out, grid, runner)
    recipe.write_text(recipe.read_text() + "# a comment is not a change\n")
    with caplog.at_level("WARNING"):
        assert run_one(plan(grid)[0], out, grid, runner) == first
    assert "changed" not in caplog.text
    recipe.write_text(recipe.read_text().replace("micl: false", "micl: true"))
    runner.calls.clear()
    with caplog.at_level("WARNING"):
        assert run_one(plan(grid)[0], out, grid, runner) == first  # kept, never silently retrained...
    assert runner.calls == [] and "recipe files changed" in caplog.text  # ...but the user is told


@pytest.mark.slow
def test_grid_resume_collect_and_views(grid, tmp_path):
    out = tmp_path / "out"
    runner = FakeRunner()
    specs = plan(grid, [0, 1])
    records = [run_one(s, out, grid, runner) for s in specs]
    assert runner.calls.count("fit") == 6 and runner.calls.count("evaluate") == 6
    assert runner.calls.count("saliency") == 6
    assert all((out / s.run_id / MARKER).exists() for s in specs)

    # resume: finished runs are never retrained
    runner.calls.clear()
    again = [run_one(s, out, grid, runner) for s in specs]
    assert runner.calls == [] and again == records

    # a run with evaluation results but no marker (a cluster job) is collected, not retrained
    (out / specs[0].run_id / MARKER).unlink()
    assert run_one(specs[0], out, grid, runner, collect_only=True)["metrics"] == records[0]["metrics"]
    assert runner.calls == []
    # an unfinished run folder (no results) is cleared and redone
    (out / specs[1].run_id / MARKER).unlink()
    (out / specs[1].run_id / "eval" / "results.json").unlink()
    (out / specs[1].run_id / "stale.txt").write_text("x")
    run_one(specs[1], out, grid, runner)
    assert runner.calls[:2] == ["fit", "evaluate"] and not (out / specs[1].run_id / "stale.txt").exists()

    paths = write_reports(out, grid, records)
    names = {p.name for p in paths}
    assert {"summary.md", "summary.csv", "recall_by_variant.png", "probes.png", "sweep_ratio.png", "saliency.png",
            "tb"} <= names

    # summary: mean over the two seeds
    rows = list(csv.DictReader((out / "summary.csv").open()))
    row = next(r for r in rows if (r["variant"], r["subset"], r["probe"]) == ("notellm2", "shortquery", "only_image"))
    expected = (_recall("notellm2", 0, "only_image", "shortquery", 10)
                + _recall("notellm2", 1, "only_image", "shortquery", 10)) / 2
    assert float(row["R@10"]) == pytest.approx(expected) and row["n_seeds"] == "2"
    md = (out / "summary.md").read_text()
    assert "| basic | only_text |" in md and f"{expected:.3f}" in md

    # TensorBoard: hparams + final metrics of every run, read back with TensorBoard's event reader
    for spec in specs:
        hp, scalars = read_run_events(out / "tb" / spec.run_id)
        assert hp["variant"] == spec.run.name and hp["seed"] == spec.seed
        assert hp["micl"] == ("true" if CONFIGS[spec.run.name]["encoder"]["micl"] else "false")
        assert hp["num_query_tokens"] == 8
        for probe in ("full", "only_image", "only_text"):
            for subset in SUBSETS:
                for k in (10, 100):
                    want = _recall(spec.run.name, spec.seed, probe, subset, k)
                    assert scalars[f"recall/{subset}/{probe}/R@{k}"] == pytest.approx(want, abs=1e-6)
    _, sweep = read_run_events(out / "tb" / "sweeps")
    assert "sweep/ratio/all/full/R@10" in sweep
    layout = read_layout(out / "tb")
    assert layout is not None
    charts = {c.title: [ch.multiline.tag[0] for ch in c.chart] for c in layout.category}
    assert charts["Recall@10 by subset (every run, every probe)"] == [r"recall/all/.*/R@10$",
                                                                      r"recall/shortquery/.*/R@10$"]
    assert any(t.startswith("sweep/ratio/") for c in charts.values() for t in c)

    # rewriting the views replaces them (no duplicate sessions)
    write_reports(out, grid, records)
    hp, _ = read_run_events(out / "tb" / specs[0].run_id)
    assert hp["variant"] == "basic"


def test_reuse_counts_runs_finished_in_other_folders(grid, tmp_path, capsys):
    from notellm2_pl.commands.ablate import main as cli_main

    runner = FakeRunner()
    seed0 = tmp_path / "seed0"
    first = [run_one(s, seed0, grid, runner) for s in plan(grid, [0])]
    runner.calls.clear()
    both, specs = tmp_path / "both", plan(grid, [0, 1])
    records = [run_one(s, both, grid, runner, reuse=[seed0]) for s in specs]
    assert runner.calls.count("fit") == 3  # only seed 1 trains
    assert [r for r, s in zip(records, specs, strict=True) if s.seed == 0] == first
    assert not any((both / s.run_id).exists() for s in specs if s.seed == 0)  # used where it is, not copied

    grid_file = str(tmp_path / "grid.yaml")
    assert cli_main(["--grid", grid_file, "--seeds", "0", "1", "--out", str(both), "--reuse", str(seed0),
                     "--list"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert len(listing) == 6 and not any(line.startswith("todo") for line in listing)
    assert sum(line.startswith(f"done in {seed0}") for line in listing) == 3  # the other three are in --out

    report = tmp_path / "report"
    assert cli_main(["--grid", grid_file, "--seeds", "0", "1", "--out", str(report), "--reuse", str(seed0),
                     str(both), "--report-only"]) == 0
    rows = list(csv.DictReader((report / "summary.csv").open()))
    row = next(r for r in rows if (r["variant"], r["subset"], r["probe"]) == ("notellm2", "shortquery", "full"))
    assert row["n_seeds"] == "2"
    assert float(row["R@10"]) == pytest.approx((_recall("notellm2", 0, "full", "shortquery", 10)
                                                + _recall("notellm2", 1, "full", "shortquery", 10)) / 2)
    assert cli_main(["--grid", grid_file, "--out", str(report), "--reuse", str(tmp_path / "nope"), "--list"]) == 2

    # cluster lines: only the runs not finished in a --reuse folder; the collect hint keeps --reuse and the overrides
    capsys.readouterr()
    assert cli_main(["--grid", grid_file, "--seeds", "0", "1", "--out", str(report), "--reuse", str(seed0),
                     "--print-commands", "--", "--trainer.max_steps", "3"]) == 0
    printed = capsys.readouterr().out
    hint = printed.splitlines()[0]
    assert hint.startswith("# grid fake: 6 runs") and hint.endswith("--report-only -- --trainer.max_steps 3")
    assert cli_main(["--grid", grid_file, "--seeds", "0", "1", "--out", str(report), "--reuse", str(seed0),
                     "--print-commands"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("# grid fake: 3 runs") and f"--reuse {seed0} --report-only" in printed
    assert all(f"# {s.run_id}\n" in printed for s in specs if s.seed == 1)
    assert not any(f"# {s.run_id}\n" in printed for s in specs if s.seed == 0)


@pytest.mark.slow
def test_ablate_cli_tiny_real_run(tmp_path, tiny_ckpts):
    """fit -> evaluate -> saliency -> marker -> reports through the real CLI on tiny backbones."""
    from _tiny_grid import run_tiny_grid

    from notellm2_pl.data.synthetic import PRESETS, generate

    data = tmp_path / "data"
    generate(data, PRESETS["tiny"])
    out = run_tiny_grid(tmp_path, data, tiny_ckpts)
    (run_dir,) = [p for p in out.iterdir() if p.name.startswith("basic-s0-")]
    record = json.loads((run_dir / MARKER).read_text())
    assert (run_dir / "checkpoints" / "best.ckpt").exists()
    assert record["saliency"] and (run_dir / "saliency" / "saliency.png").exists()
    for probe in ("full", "only_image", "only_text"):
        assert record["metrics"][f"recall/all/{probe}/R@10"] is not None
    hp, scalars = read_run_events(out / "tb" / run_dir.name)
    assert hp["micl"] == "false" and hp["late_fusion"] == "false" and hp["variant"] == "basic"
    assert scalars["recall/all/full/R@10"] == pytest.approx(record["metrics"]["recall/all/full/R@10"], abs=1e-6)
