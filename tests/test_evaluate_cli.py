"""The evaluate command on a tiny model: table, JSON/CSV, TensorBoard, probes, and from saved embeddings."""

from __future__ import annotations

import json

import numpy as np
import pytest


def test_evaluate_model_writes_table_json_csv_tb_with_probes(exported, tmp_path, capsys):
    from notellm2_pl.commands.evaluate import main as cli_main

    out = tmp_path / "eval"
    assert cli_main(["--model", str(exported["export"]), "--out", str(out), "--batch_size", "16",
                     "--save_embeddings"]) == 0
    table = capsys.readouterr().out
    for row in ("full/e_m/all", "full/e_v/all", "only_image/e_m/all", "only_text/e_m/shortquery",
                "full/e_m/longgtdoc"):
        assert row in table
    assert "R@10" in table and "R@1k" in table
    res = json.loads((out / "results.json").read_text())
    assert "only_text/e_v/all" not in res  # constant embedding (blank image only): skipped, not a fake 1.0
    assert res["full/e_m/all"]["num_queries"] > 0 and set(res["full/e_m/all"]["recalls"]) == {
        "10", "20", "50", "100", "1000"}
    assert (out / "results.csv").read_text().startswith("subset,num_queries,pool_size,R@10")
    assert list((out / "tb").glob("events.out.tfevents.*"))
    assert (out / "embeddings" / "only_image" / "meta.json").is_file()

    # the same numbers from the saved embeddings, with custom K
    out2 = tmp_path / "eval2"
    emb_dirs = [str(out / "embeddings" / p) for p in ("full", "only_image")]
    assert cli_main(["--embeddings", *emb_dirs, "--out", str(out2), "--ks", "10,20", "--no_tb", "--baselines",
                     "none"]) == 0
    res2 = json.loads((out2 / "results.json").read_text())
    assert set(res2) == {f"{p}/{k}/{s}" for p in ("full", "only_image") for k in ("e_m", "e_v")
                         for s in ("all", "shortquery", "shortgtdoc", "longquery", "longgtdoc")}
    for name, r in res2.items():
        assert r["recalls"]["10"] == pytest.approx(res[name]["recalls"]["10"]), name
    assert not (out2 / "tb").exists()


def test_evaluate_needs_one_source(capsys):
    from notellm2_pl.commands.evaluate import main as cli_main

    with pytest.raises(SystemExit):
        cli_main(["--data", "x"])
    assert "--embeddings DIR" in capsys.readouterr().err


def test_default_ks_grow_with_the_pool():
    from notellm2_pl.retrieval.evaluation import default_ks

    assert default_ks(500) == [10, 20, 50, 100, 1000]
    assert default_ks(150_000) == [10, 20, 50, 100, 1000, 10_000, 100_000]
    assert np.all(np.diff(default_ks(10**7)) > 0)
