"""Choices on validation (``VARIANT@CANDIDATE`` rows) and the test table of what was chosen."""

import json

from notellm2_pl.analysis.evidence import collect
from notellm2_pl.analysis.records import metric_key
from notellm2_pl.analysis.selection import choose, order_lines, selection_markdown, split_name


def _metrics(**recalls):
    """``{metric key: (mean, std, n)}`` with full-input R@10 per subset."""
    return {metric_key(s, "full", 10): (v, 0.0, 1) for s, v in recalls.items()}


def test_split_name_and_rows_without_candidates():
    assert split_name("notellm2@one_rate") == ("notellm2", "one_rate")
    assert split_name("notellm2") is None and split_name("@x") is None and split_name("x@") is None


def test_choose_takes_the_best_mean_over_seeds_and_a_tie_keeps_the_first_listed():
    names = ["basic@b", "basic@a", "micl@a", "micl@b", "zero_shot", "notellm2@a"]
    kept = {"basic@b": [0.5, 0.7], "basic@a": [0.61], "micl@a": [0.4], "micl@b": [0.4], "zero_shot": [0.9]}
    choices = {c.variant: c for c in choose(names, kept)}
    assert set(choices) == {"basic", "micl"}  # notellm2 has no finished run, zero_shot is no candidate
    assert choices["basic"].candidate == "a" and choices["basic"].validation == {"b": 0.6, "a": 0.61}
    assert choices["micl"].candidate == "a" and choices["micl"].row == "micl@a"
    assert choose(["micl@b", "micl@a"], kept)[0].candidate == "b"  # the tie goes to the row listed first


def test_order_lines_say_which_step_fails():
    test = {"basic": _metrics(shortquery=0.05), "micl": _metrics(shortquery=0.14),
            "late_fusion_only": _metrics(shortquery=0.42), "basic_late_fusion": _metrics(shortquery=0.50),
            "notellm2": _metrics(shortquery=0.46)}
    (line,) = order_lines(test)
    assert line.startswith("- `shortquery`: does not hold (basic_late_fusion < notellm2)")
    test["notellm2"] = _metrics(shortquery=0.51)
    assert order_lines(test)[0].startswith("- `shortquery`: holds")


def test_collect_writes_the_choice_made_on_validation_not_on_test(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    grid = tmp_path / "grid"
    # candidate a: better validation, worse test; b the other way round. The choice must be a.
    runs = {"basic@a-s0": ("basic@a", [0.3, 0.6], 0.2), "basic@b-s0": ("basic@b", [0.5, 0.4], 0.9),
            "zero_shot-s0": ("zero_shot", [0.1], 0.1)}
    for folder, (name, val, test_r10) in runs.items():
        (grid / folder).mkdir(parents=True)
        metrics = {metric_key(s, "full", 10): test_r10 for s in ("all", "shortquery")}
        (grid / folder / "done.json").write_text(json.dumps({"name": name, "seed": 0, "metrics": metrics}))
        with SummaryWriter(grid / folder / "tb" / "version_0") as tb:
            for step, v in enumerate(val):
                tb.add_scalar("val/recall", v, step)
    (grid / "summary.md").write_text("# s\n")
    (grid / "summary.csv").write_text("variant,subset\nbasic@a,all\nbasic@b,all\nzero_shot,all\n")
    files = collect(grid, tmp_path / "results", "python -m notellm2_pl ablate --grid g")
    assert tmp_path / "results" / "selection.md" in files
    text = (tmp_path / "results" / "selection.md").read_text()
    assert "| basic | a 0.600, b 0.500 | **a** |" in text
    assert "| basic | a | 0.200 / – |" in text  # the test row is the chosen candidate's, though b tests better


def test_selection_markdown_without_order_variants_has_no_order_section():
    (choice,) = choose(["x@a"], {"x@a": [0.5]})
    text = selection_markdown([choice], {"x@a": _metrics(all=0.3)})
    assert "| x | a | 0.300 / – |" in text and "paper's order" not in text
