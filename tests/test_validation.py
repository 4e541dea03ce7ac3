"""Issue 7: validated data. Every bad-input class has a named error (raise) or is skipped and counted (skip).

docs/data.md maps each bad-input class to the test here that covers it.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from notellm2_pl.commands.validate_data import main as cli_main
from notellm2_pl.data.images import decode_image
from notellm2_pl.data.problems import DataError, severity
from notellm2_pl.data.prompts import TextLimits
from notellm2_pl.data.synthetic import PRESETS, generate
from notellm2_pl.data.tables import load_split
from notellm2_pl.data.validation import check_images, validate_dataset


# ------------------------------------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny") / "data"
    generate(root, PRESETS["tiny"])
    return root


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def _append(path: Path, *rows: list[str]) -> list[int]:
    """Append CSV rows; returns their 1-based line numbers (header = line 1; synthetic rows are single-line)."""
    n = len(_rows(path))
    with open(path, "a", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    return [n + 1 + i for i in range(len(rows))]


def _mini_canonical(root: Path, notes: list[list[str]] | bytes, pairs: list[list[str]] | None = None) -> Path:
    """A hand-made canonical dataset: notes_train.csv (rows or raw bytes), pairs_train.csv, images/a.png."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (10, 20, 30)).save(root / "images" / "a.png")
    if isinstance(notes, bytes):
        (root / "notes_train.csv").write_bytes(notes)
    else:
        with open(root / "notes_train.csv", "w", newline="", encoding="utf-8") as f:
            csv.writer(f, lineterminator="\n").writerows([["note_id", "title", "topics", "content", "image"], *notes])
    with open(root / "pairs_train.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows([["query_id", "target_id"], *(pairs or [["n1", "n2"]])])
    return root


def _good(i: int) -> list[str]:
    return [f"n{i}", f"title {i}", "a|b", f"content {i}", "images/a.png"]


# ------------------------------------------------------------------------------ planted corruptions (brief #7)
def _plant(src: Path, dst: Path) -> dict:
    """Copy the tiny dataset and plant one of each corruption; returns what was planted, with file:line."""
    shutil.copytree(src, dst)
    notes = _rows(dst / "notes_train.csv")
    ids = [r[0] for r in notes[1:]]
    line_of = {r[0]: i + 1 for i, r in enumerate(notes) if i}
    pairs = _rows(dst / "pairs_train.csv")[1:]
    a, b, c, d = ids[0], ids[1], ids[2], ids[3]
    img = lambda i: dst / "images" / f"{i}.png"
    data = img(a).read_bytes()
    img(a).write_bytes(data[: len(data) // 2])  # truncated image
    img(b).write_bytes(np.random.default_rng(0).bytes(500))  # random bytes
    img(c).unlink()  # missing image
    dup_line, empty_line = _append(dst / "notes_train.csv", [d, "dup title", "x", "dup content", f"images/{d}.png"],
                                   ["nEMPTY", "  ", "", "", f"images/{d}.png"])
    unknown_line, self_line = _append(dst / "pairs_train.csv", [ids[5], "nUNKNOWN"], [ids[6], ids[6]])
    return {
        "errors": {
            ("bad_image", f"notes_train.csv:{line_of[a]}", a),
            ("bad_image", f"notes_train.csv:{line_of[b]}", b),
            ("missing_image", f"notes_train.csv:{line_of[c]}", c),
            ("duplicate_id", f"notes_train.csv:{dup_line}", d),
            ("empty_note", f"notes_train.csv:{empty_line}", "nEMPTY"),
            ("unknown_pair_id", f"pairs_train.csv:{unknown_line}", None),
            ("self_pair", f"pairs_train.csv:{self_line}", ids[6]),
        },
        "bad_notes": {a, b, c},
        "dropped_pairs": sum(1 for q, t in pairs if {q, t} & {a, b, c}),
        "clean_pairs": len(pairs),
    }


def test_planted_corruptions_are_reported_exactly(tiny_root: Path, tmp_path: Path) -> None:
    planted = _plant(tiny_root, tmp_path / "bad")
    split = validate_dataset(tmp_path / "bad", on_error="skip", splits=["train"])["train"]
    errors = {(p.code, p.where, p.note_id) for p in split.report.problems if severity(p.code) == "error"}
    assert errors == planted["errors"]
    dropped = [p for p in split.report.problems if p.code == "pair_of_skipped_note"]
    assert len(dropped) == planted["dropped_pairs"] and all(p.action == "dropped" for p in dropped)
    assert not planted["bad_notes"] & set(split.notes)
    assert "nEMPTY" not in split.notes
    assert len(split.pairs["all"]) == planted["clean_pairs"] - planted["dropped_pairs"]
    assert all(q != t and q in split.notes and t in split.notes for q, t in split.pairs["all"])
    assert split.report.num_errors == len(planted["errors"])


def test_default_raise_names_first_problem_file_and_line(tiny_root: Path, tmp_path: Path) -> None:
    planted = _plant(tiny_root, tmp_path / "bad")
    with pytest.raises(DataError) as err:
        validate_dataset(tmp_path / "bad", on_error="raise", splits=["train"])
    # the notes table is read first; its first bad row is the duplicate id
    (code, where, note_id), = [e for e in planted["errors"] if e[0] == "duplicate_id"]
    assert err.value.code == code and err.value.where == where
    assert where in str(err.value) and note_id in str(err.value) and "--data.on_error skip" in str(err.value)


@pytest.mark.parametrize("kind", ["truncated", "random_bytes", "missing"])
def test_each_bad_image_raises_with_its_note_line(tiny_root: Path, tmp_path: Path, kind: str) -> None:
    root = tmp_path / "d"
    shutil.copytree(tiny_root, root)
    note_id = _rows(root / "notes_train.csv")[5][0]  # line 6
    path = root / "images" / f"{note_id}.png"
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif kind == "random_bytes":
        path.write_bytes(os.urandom(300))
    else:
        path.unlink()
    split = load_split(root, "train")  # rows are fine: images are checked separately
    with pytest.raises(DataError) as err:
        check_images(split, "raise")
    assert err.value.code == ("missing_image" if kind == "missing" else "bad_image")
    assert "notes_train.csv:6" in str(err.value) and note_id in str(err.value) and str(path) in str(err.value)


def test_datamodule_setup_checks_and_counts(tiny_root: Path, tmp_path: Path) -> None:
    from notellm2_pl.data.datamodule import NoteDataModule

    planted = _plant(tiny_root, tmp_path / "bad")
    dm = NoteDataModule(str(tmp_path / "bad"), on_error="skip")
    train = dm._split("train")
    assert not planted["bad_notes"] & set(train.notes)
    assert dm.report.counts["train: bad_image"] == 2 and dm.report.counts["train: self_pair"] == 1
    with pytest.raises(DataError, match="notes_train.csv:"):
        NoteDataModule(str(tmp_path / "bad"))._split("train")


def test_validate_data_cli(tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli_main([str(tiny_root)]) == 0
    _plant(tiny_root, tmp_path / "bad")
    out_json = tmp_path / "report.json"
    assert cli_main([str(tmp_path / "bad"), "--on-error", "skip", "--json", str(out_json)]) == 1
    out = capsys.readouterr().out
    assert "self_pair" in out and "pairs_train.csv:" in out and "error(s)" in out
    report = json.loads(out_json.read_text())
    assert report["train"]["counts"]["bad_image"] == 2
    assert cli_main([str(tmp_path / "bad")]) == 1
    assert "duplicate note id at notes_train.csv:" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- rows
def test_encoding_problems_named_with_line(tmp_path: Path) -> None:
    header = b"note_id,title,topics,content,image\n"
    good = b"n1,t,a,c,images/a.png\nn2,t,a,c,images/a.png\n"
    bad_utf8 = _mini_canonical(tmp_path / "u", header + good + b"n3,caf\xe9,a,c,images/a.png\n")
    with pytest.raises(DataError) as err:
        load_split(bad_utf8, "train")
    assert err.value.code == "invalid_utf8" and err.value.where == "notes_train.csv:4" and "0xe9" in str(err.value)
    nul = _mini_canonical(tmp_path / "n", header + good + b"n3,t\x00x,a,c,images/a.png\n")
    with pytest.raises(DataError, match="NUL byte.*notes_train.csv:4"):
        load_split(nul, "train")
    split = load_split(nul, "train", on_error="skip")
    assert set(split.notes) == {"n1", "n2"} and split.report.counts == {"nul_byte": 1}


def test_multiline_fields_keep_line_numbers_and_bad_rows(tmp_path: Path) -> None:
    raw = (b'note_id,title,topics,content,image\n'
           b'n1,t,a,"line one\nline two\nline three",images/a.png\n'  # lines 2-4
           b'n2,t,a,c,images/a.png\n'  # line 5
           b'n3,t,a,c\n'  # line 6: 4 fields
           b'n1,again,a,c,images/a.png\n'  # line 7: duplicate
           b'n4,t,a,"unterminated,images/a.png\n')  # line 8: CSV syntax error
    root = _mini_canonical(tmp_path / "m", raw)
    split = load_split(root, "train", on_error="skip")
    got = [(p.code, p.where) for p in split.report.problems]
    assert got[:2] == [("malformed_row", "notes_train.csv:6"), ("duplicate_id", "notes_train.csv:7")]
    assert got[2] == ("malformed_row", "notes_train.csv:8")
    assert split.notes["n1"].content == "line one\nline two\nline three" and split.origin["n2"] == "notes_train.csv:5"
    assert split.pairs["all"] == [("n1", "n2")]


def test_empty_note_self_pair_unknown_pair(tmp_path: Path) -> None:
    root = _mini_canonical(tmp_path / "e", [_good(1), _good(2), ["n3", " ", "", "\n", "images/a.png"]],
                           [["n1", "n2"], ["n1", "n1"], ["n2", "zz"], ["n3", "n1"]])
    for code, where in [("empty_note", "notes_train.csv:4")]:
        with pytest.raises(DataError) as err:
            load_split(root, "train")
        assert (err.value.code, err.value.where) == (code, where)
    split = load_split(root, "train", on_error="skip")
    assert [(p.code, p.where) for p in split.report.problems] == [
        ("empty_note", "notes_train.csv:4"), ("self_pair", "pairs_train.csv:3"),
        ("unknown_pair_id", "pairs_train.csv:4"), ("pair_of_skipped_note", "pairs_train.csv:5")]
    assert split.pairs["all"] == [("n1", "n2")]


def test_missing_column_typo_suggests_the_fix(tmp_path: Path) -> None:
    raw = b"note_idd,titel,topics,content,image\nn1,t,a,c,images/a.png\n"
    with pytest.raises(DataError, match=r"missing column\(s\) \['note_id'\].*'note_idd' -> 'note_id'"):
        load_split(_mini_canonical(tmp_path / "c", raw), "train")


def test_text_over_prompt_limits_is_counted_not_dropped(tmp_path: Path) -> None:
    long = ["n1", "T" * 30, "|".join(f"g{i}" for i in range(12)), "C" * 100, "images/a.png"]
    split = load_split(_mini_canonical(tmp_path / "t", [long, _good(2)]), "train", limits=TextLimits())
    (p,) = split.report.problems
    assert p.code == "text_truncated" and p.action == "kept" and p.note_id == "n1"
    assert "title 30 > 20" in p.detail and "content 100 > 80" in p.detail and "12 topics > 10" in p.detail
    assert split.notes["n1"].title == "T" * 30  # the loader keeps the text; the prompt cuts it


def test_jsonl_and_parquet_rows(tmp_path: Path) -> None:
    root = _mini_canonical(tmp_path / "j", [_good(1)])
    (root / "notes_train.csv").unlink()
    lines = [json.dumps({"note_id": "n1", "title": "t", "topics": ["a", "b"], "content": "c", "image": "images/a.png"}),
             "{not json", json.dumps(["a list"]),
             json.dumps({"note_id": 2, "title": "t2", "topics": "x|y", "content": "c", "image": "images/a.png"})]
    (root / "notes_train.jsonl").write_bytes("\n".join(lines).encode() + b"\n" + b'{"note_id": "n\xff"}\n')
    split = load_split(root, "train", on_error="skip")
    assert [(p.code, p.where) for p in split.report.problems if p.where.startswith("notes")] == [
        ("malformed_row", "notes_train.jsonl:2"), ("malformed_row", "notes_train.jsonl:3"),
        ("invalid_utf8", "notes_train.jsonl:5")]
    assert split.notes["n1"].topics == ["a", "b"] and split.notes["2"].topics == ["x", "y"]
    import pandas as pd

    (root / "notes_train.jsonl").unlink()
    pd.DataFrame({"note_id": ["n1", "n2", "n1"], "title": ["a", "b", "c"], "topics": [["x"], [], None],
                  "content": ["", "y", "z"], "image": ["images/a.png"] * 3}).to_parquet(root / "notes_train.parquet")
    split = load_split(root, "train", on_error="skip")
    assert [(p.code, p.where) for p in split.report.problems] == [("duplicate_id", "notes_train.parquet:row 3")]
    assert split.notes["n1"].topics == ["x"]


def test_official_layout_loads_as_is(tmp_path: Path) -> None:
    root = tmp_path / "off"
    (root / "images").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "images" / "1.jpg")
    (root / "notes_train.csv").write_bytes(
        'n1,标题,"正文 #好物[话题]# 第一行\n第二行",1.jpg,L1@L2@\n'.encode()
        + b"n2,t\x00x,c,1.jpg,L1@\n")
    (root / "note_pairs_train.csv").write_text("n1,n2\nn1,nX\n")
    split = load_split(root, "train")  # unknown ids are skipped (as the original does) even in raise mode
    assert split.notes["n1"].topics == ["好物"] and "第二行" in split.notes["n1"].content
    assert split.notes["n2"].title == "tx"
    assert [(p.code, p.where, p.action) for p in split.report.problems] == [
        ("nul_stripped", "notes_train.csv:3", "kept"), ("unknown_pair_id", "note_pairs_train.csv:2", "skipped")]
    check_images(split, "raise")
    assert split.pairs["all"] == [("n1", "n2")]


# --------------------------------------------------------------------------------------------- image modes
def _img(tmp_path: Path, name: str, img: Image.Image, **save) -> Path:
    path = tmp_path / name
    img.save(path, **save)
    return path


def test_image_modes_converted_with_a_counted_warning(tmp_path: Path) -> None:
    rgb = Image.new("RGB", (4, 4), (200, 100, 50))
    assert decode_image(_img(tmp_path, "rgb.png", rgb))[1] is None
    assert decode_image(_img(tmp_path, "l.png", rgb.convert("L")))[1] is None
    cmyk, mode = decode_image(_img(tmp_path, "c.jpg", rgb.convert("CMYK")))
    assert mode == "CMYK" and cmyk.mode == "RGB"
    assert decode_image(_img(tmp_path, "p.png", rgb.convert("P")))[1] == "P"
    rgba = Image.new("RGBA", (2, 1))
    rgba.putpixel((0, 0), (10, 20, 30, 0))
    rgba.putpixel((1, 0), (10, 20, 30, 255))
    flat, mode = decode_image(_img(tmp_path, "a.png", rgba))
    assert mode == "RGBA" and flat.getpixel((0, 0)) == (255, 255, 255) and flat.getpixel((1, 0)) == (10, 20, 30)
    la, mode = decode_image(_img(tmp_path, "la.png", rgba.convert("LA")))
    assert mode == "LA" and la.getpixel((0, 0)) == (255, 255, 255)
    ptr = rgb.convert("P")
    ptr.info["transparency"] = 0
    assert decode_image(_img(tmp_path, "pt.png", ptr, transparency=0))[1] == "P+transparency"
    deep = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16))
    out, mode = decode_image(_img(tmp_path, "d16.png", deep))
    assert mode.startswith("I") and [out.getpixel((i, 0))[0] for i in range(3)] == [0, 128, 255]


def test_unsupported_and_undecodable_images_are_named(tmp_path: Path) -> None:
    f = _img(tmp_path, "f.tif", Image.fromarray(np.ones((2, 2), dtype=np.float32)))
    with pytest.raises(DataError) as err:
        decode_image(f)
    assert err.value.code == "unsupported_image_mode"
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(DataError, match="Cannot decode image .*x.png") as err:
        decode_image(tmp_path / "x.png")
    assert err.value.code == "bad_image"
    with pytest.raises(DataError, match="not found") as err:
        decode_image(tmp_path / "nope.png")
    assert err.value.code == "missing_image"
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(DataError):
        decode_image(tmp_path / "dir.png")


def test_image_mode_warnings_and_no_image_at_load(tmp_path: Path) -> None:
    rows = [_good(1), ["n2", "t", "", "c", "images/cmyk.jpg"], ["n3", "t", "", "c", ""]]
    root = _mini_canonical(tmp_path / "i", rows, [["n1", "n2"], ["n1", "n3"]])
    Image.new("CMYK", (8, 8)).save(root / "images" / "cmyk.jpg")
    split = load_split(root, "train")
    with pytest.raises(DataError, match="no image at notes_train.csv:4"):
        check_images(split, "raise")
    check_images(split, "skip")
    assert {(p.code, p.note_id, p.action) for p in split.report.problems} == {
        ("image_converted", "n2", "kept"), ("no_image", "n3", "skipped"), ("pair_of_skipped_note", "n3", "dropped")}
    assert split.pairs["all"] == [("n1", "n2")]


def test_empty_id_is_named(tmp_path: Path) -> None:
    root = _mini_canonical(tmp_path / "z", [_good(1), _good(2), [" ", "t", "", "c", "images/a.png"]])
    with pytest.raises(DataError) as err:
        load_split(root, "train")
    assert (err.value.code, err.value.where) == ("empty_id", "notes_train.csv:4")
    assert load_split(root, "train", on_error="skip").report.counts == {"empty_id": 1}


def test_deferred_image_checks_need_raise_mode():
    from notellm2_pl.data.datamodule import NoteDataModule

    with pytest.raises(ValueError, match="check_images true"):
        NoteDataModule(check_images=False, on_error="skip")
    assert NoteDataModule(check_images=False).hparams.check_images is False
