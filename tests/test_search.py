"""The index and search commands: by note id and by new note, human-readable and --json."""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def index(exported):
    """Embeddings of the test notes (from the export) and a flat index over them."""
    from notellm2_pl import Embedder
    from notellm2_pl.commands.index import main as index_main
    from notellm2_pl.retrieval.evaluation import load_test_pool
    from notellm2_pl.retrieval.prediction_writer import write_embeddings

    ids, notes, _ = load_test_pool(exported["data"])
    arrays = Embedder.from_pretrained(exported["export"]).embed_all([notes[i] for i in ids], progress=False)
    emb_dir = write_embeddings(exported["root"] / "emb", ids, arrays, data_root=str(exported["data"]))
    path = exported["root"] / "index" / "notes.faiss"
    assert index_main(["--embeddings", str(emb_dir), "--out", str(path)]) == 0
    return {"path": path, "ids": ids, "notes": notes, "emb": arrays["e_m"], **exported}


def test_search_by_id_json_and_table(index, capsys):
    from notellm2_pl.commands.search import main as cli_main

    capsys.readouterr()
    q = index["ids"][0]
    assert cli_main(["--index", str(index["path"]), "--id", q, "--id", index["ids"][1], "--k", "5", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [r["query"]["note_id"] for r in res] == [q, index["ids"][1]]
    hits = res[0]["neighbours"]
    assert len(hits) == 5 and q not in [h["note_id"] for h in hits]
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert hits[0]["title"] == index["notes"][hits[0]["note_id"]].title
    # exact top-5 by brute force
    e = index["emb"]
    s = e @ e[0]
    s[0] = -np.inf
    assert [h["note_id"] for h in hits] == [index["ids"][i] for i in np.argsort(-s, kind="stable")[:5]]

    assert cli_main(["--index", str(index["path"]), "--id", q, "--k", "3"]) == 0
    text = capsys.readouterr().out
    assert f"query {q}" in text and "rank" in text and "score" in text


def test_search_new_note_finds_itself(index, capsys):
    from notellm2_pl.commands.search import main as cli_main

    capsys.readouterr()
    note = index["notes"][index["ids"][3]]
    argv = ["--index", str(index["path"]), "--model", str(index["export"]), "--title", note.title,
            "--topics", "|".join(note.topics), "--content", note.content, "--image", note.image, "--k", "3", "--json"]
    assert cli_main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    assert res[0]["query"]["note_id"] is None and len(res[0]["neighbours"]) == 3
    assert res[0]["neighbours"][0]["note_id"] == note.note_id
    assert res[0]["neighbours"][0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_search_errors_say_what_to_do(index, capsys):
    from notellm2_pl.commands.search import main as cli_main

    with pytest.raises(SystemExit):
        cli_main(["--index", str(index["path"]), "--id", "no-such-note"])
    assert "not in the index" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["--index", str(index["path"]), "--title", "a new note"])
    assert "--model EXPORT_DIR" in capsys.readouterr().err
