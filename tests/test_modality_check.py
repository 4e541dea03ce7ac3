"""The modality check fires when a probe beats the full note beyond noise, and stays silent otherwise."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from notellm2_pl.analysis.modality_check import (
    difference_noise,
    format_modality_check,
    modality_check,
    paired_noise,
)


def test_fires_on_an_image_drowned_model():
    recalls = {"full": {"all": 0.12, "longquery": 0.09}, "only_text": {"all": 0.19, "longquery": 0.16},
               "only_image": {"all": 0.04, "longquery": 0.03}}
    found = modality_check(recalls, {"all": 400, "longquery": 150})
    assert [(f.subset, f.probe) for f in found] == [("all", "only_text"), ("longquery", "only_text")]
    assert found[0].significant and found[0].margin > 2.0  # 0.07 on 400 queries
    assert not found[1].significant  # 0.07 on 150 queries: 1.8 standard errors
    text = format_modality_check(found, k=10, label="notellm2")
    assert "WARNING" in text and "full 0.120 < only_text 0.190" in text and "image drowns the text" in text
    assert "longquery: full 0.090 < only_text 0.160 (1.8 standard errors, n=150): within noise." in text


def test_silent_on_a_healthy_model_and_within_noise():
    healthy = {"full": {"all": 0.60}, "only_text": {"all": 0.45}, "only_image": {"all": 0.30}}
    assert modality_check(healthy, {"all": 400}) == []
    assert "ok" in format_modality_check([], k=10)
    close = {"full": {"all": 0.50}, "only_text": {"all": 0.51}}  # 0.01 on 100 queries: well inside one SE (0.07)
    (finding,) = modality_check(close, {"all": 100})
    assert not finding.significant
    assert "ok within noise" in format_modality_check([finding], k=10)


def test_text_drowning_the_image_is_named_too():
    found = modality_check({"full": {"shortquery": 0.03}, "only_image": {"shortquery": 0.25}}, {"shortquery": 300})
    assert found and found[0].probe == "only_image"
    assert "image neglect" in format_modality_check(found, k=10)


def test_noise_is_the_standard_error_of_the_difference():
    assert math.isclose(difference_noise(0.5, 0.5, 100), math.sqrt(0.25 / 100 * 2))
    assert difference_noise(0.5, 0.4, 0) == math.inf


def _dataset(root, n_pairs: int):
    root.mkdir()
    ids = [f"n{i:03d}" for i in range(2 * n_pairs)]
    for i in ids:
        Image.new("RGB", (8, 8), (len(i), 0, 0)).save(root / f"{i}.png")
    rows = ["note_id,title,topics,content,image"] + [f"{i},title {i},tag,some words for {i},{i}.png" for i in ids]
    (root / "notes_test.csv").write_text("\n".join(rows) + "\n")
    pairs = ["query_id,target_id"] + [f"{ids[2 * j]},{ids[2 * j + 1]}" for j in range(n_pairs)]
    (root / "pairs_test.csv").write_text("\n".join(pairs) + "\n")
    return ids


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("drowned", [True, False])
def test_evaluate_prints_the_modality_check(tmp_path, capsys, drowned):
    """A model whose full input is mostly noise while its text alone pairs the notes is flagged; a healthy one not."""
    from notellm2_pl.commands.evaluate import main as evaluate
    from notellm2_pl.retrieval.prediction_writer import write_embeddings

    ids = _dataset(tmp_path / "data", n_pairs=100)
    rng = np.random.default_rng(0)
    topic = np.repeat(rng.normal(size=(100, 16)), 2, axis=0)  # both notes of a pair share a text vector
    only_text = _unit(topic + 0.3 * rng.normal(size=topic.shape))
    noise = 3.0 if drowned else 0.1
    full = _unit(topic + noise * rng.normal(size=topic.shape))
    dirs = []
    for probe, emb in (("full", full), ("only_text", only_text)):
        dirs.append(str(write_embeddings(tmp_path / probe, ids, {"e_m": emb}, probe=probe,
                                         data_root=str(tmp_path / "data"))))
    assert evaluate(["--embeddings", *dirs, "--no_tb", "--out", str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    assert "modality check, Recall@10:" in out
    assert ("WARNING" in out and "image drowns the text" in out) == drowned
    assert ("ok: the full note" in out) == (not drowned)


def test_ablate_summary_has_the_modality_check():
    from notellm2_pl.analysis.summary import summary_markdown

    def record(name, seed, full, text):
        metrics = {"recall/all/full/R@10": full, "recall/all/only_text/R@10": text,
                   "recall/all/only_image/R@10": 0.05}
        return {"name": name, "seed": seed, "metrics": metrics, "num_queries": {"all": 368}}

    records = [record("basic", 0, 0.17, 0.16), record("notellm2", 0, 0.08, 0.17), record("notellm2", 1, 0.12, 0.16)]
    md = summary_markdown("quick", ["basic", "notellm2"], records)
    assert "## Modality check" in md
    assert "modality check (notellm2), Recall@10: WARNING" in md and "full 0.100 < only_text 0.165" in md
    assert "(basic)" not in md
    healthy = summary_markdown("quick", ["basic"], [record("basic", 0, 0.17, 0.16)])
    assert "ok: every variant's full input" in healthy


def test_paired_noise_is_the_standard_error_of_per_query_differences():
    a = np.array([1, 1, 0, 0, 1, 0, 1, 1], dtype=bool)
    b = np.array([1, 0, 0, 0, 1, 0, 0, 1], dtype=bool)
    d = a.astype(float) - b
    assert math.isclose(paired_noise(a, b), d.std(ddof=1) / math.sqrt(8))
    assert paired_noise(a, a) == 1 / 8  # identical hits: one query's worth, never zero
