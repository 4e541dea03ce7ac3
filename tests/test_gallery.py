"""The ``gallery`` command: PNG sheet and self-contained HTML of queries and neighbours; the embedding projector."""

from __future__ import annotations

import re

import numpy as np
from PIL import Image


def test_gallery_png_html_and_projector(exported, tmp_path, capsys) -> None:
    from notellm2_pl.analysis.projector import METADATA_HEADER
    from notellm2_pl.commands.gallery import main
    from notellm2_pl.retrieval.evaluation import load_test_pool

    out = tmp_path / "gallery"
    capsys.readouterr()
    assert main(["--model", str(exported["export"]), "--data", str(exported["data"]), "--out", str(out), "--k", "3",
                 "--queries", "4", "--projector"]) == 0
    text = capsys.readouterr().out
    hits = int(re.search(r"(\d+)/4 queries find their target", text).group(1))
    with Image.open(out / "gallery.png") as img:
        img.load()
        assert img.width > 300 and img.height > 300
    page = (out / "gallery.html").read_text(encoding="utf-8")
    # query + 3 neighbours per row, plus the target for every miss
    assert page.count("<img ") == 4 * 4 + (4 - hits)
    assert page.count("data:image/png;base64,") == page.count("<img ")
    assert "src='http" not in page and "src='/" not in page  # self-contained

    ids, notes, _ = load_test_pool(exported["data"])
    proj = out / "projector"
    config = (proj / "projector_config.pbtxt").read_text()
    tensor_path = re.search(r'tensor_path: "([^"]+)"', config).group(1)
    meta_path = re.search(r'metadata_path: "([^"]+)"', config).group(1)
    sprite_path = re.search(r'image_path: "([^"]+)"', config).group(1)
    assert re.search(r"single_image_dim: 32", config)
    vectors = np.loadtxt(proj / tensor_path, delimiter="\t", ndmin=2)
    assert vectors.shape == (len(ids), 16)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    lines = (proj / meta_path).read_text(encoding="utf-8").splitlines()
    assert lines[0].split("\t") == METADATA_HEADER and len(lines) == len(ids) + 1
    first = lines[1].split("\t")
    assert first[0] == ids[0] and first[1] == (" ".join(notes[ids[0]].title.split())[:80] or "-")
    with Image.open(proj / sprite_path) as sprite:
        side = int(np.ceil(np.sqrt(len(ids)))) * 32
        assert sprite.size == (side, side)


def test_gallery_marks_hits_and_misses() -> None:
    from notellm2_pl.analysis.gallery import gallery_rows
    from notellm2_pl.retrieval.catalogue import Catalogue

    e = np.eye(6, dtype=np.float32)
    e[1] = e[0]  # q0's target is a duplicate of it: rank 1
    e[3] = (e[2] + e[4]) / np.sqrt(2)  # q3 (row 3) scores 0.707 with n2 and n4; its target n5 scores 0
    cat = Catalogue([f"n{i}" for i in range(6)], e)
    rows = gallery_rows(cat, [("n0", "n1"), ("n3", "n5")], k=2)
    assert rows[0].hit and rows[0].neighbours[0][0] == "n1" and rows[0].target_rank == 1
    assert not rows[1].hit and rows[1].target_rank == 3 and {n for n, _ in rows[1].neighbours} == {"n2", "n4"}
