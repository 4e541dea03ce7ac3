"""Issue 7: fuzzing the loaders, the image decoder and the prompt builder/processor (hypothesis, bounded examples).

Properties: round trips lose and duplicate nothing; hostile input fails only with the named :class:`DataError`;
no note text can create an image slot, an mICL marker or any other special token.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from notellm2_pl.data.images import decode_image
from notellm2_pl.data.problems import DataError
from notellm2_pl.data.tables import Note, load_split, split_official_content
from notellm2_pl.data.validation import check_images

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Template-breaking pieces: the template's own markers, tags of common LLMs, quotes/braces, control characters.
INJECT = ["<IMG>", "<IMG_EMB>", "<img>", "</img>", "{T}", "{G}", "{C}", '"', "'", "{", "}", "\\", "\n", "\r\n", "\r",
          "\t", "\x1b", "\x7f", "\u2028", "\u202e", "\ufeff", "<s>", "</s>", "<pad>", "<unk>", "<|endoftext|>", ",",
          "|", "#tag#", "#a[话题]#", "[话题]", "，", "“", "”", "压缩为一个词", "compress into one word", "Note:"]
CHARS = st.characters(blacklist_categories=("Cs",))  # any code point UTF-8 can encode
PIECES = st.one_of(st.text(CHARS, max_size=12), st.sampled_from(INJECT))
TEXT = st.lists(PIECES, max_size=8).map("".join)
HUGE = st.one_of(TEXT, st.integers(1, 400).flatmap(lambda n: st.sampled_from(INJECT).map(lambda s: s * n)))


# ------------------------------------------------------------------------------------------------- loaders
def _note_strategy(nul: bool = False):
    text = TEXT if nul else TEXT.map(lambda s: s.replace("\x00", ""))
    return st.tuples(text.filter(lambda s: s.strip()), st.lists(text.filter(lambda s: s and "|" not in s), max_size=4),
                     text)


IDS = st.lists(st.text(CHARS.filter(lambda c: c != "\x00"), min_size=1, max_size=10).filter(lambda s: s.strip()),
               min_size=2, max_size=8, unique=True)


@pytest.mark.slow
@FUZZ
@given(ids=IDS, data=st.data(), fmt=st.sampled_from(["csv", "jsonl"]))
def test_canonical_round_trip(ids: list[str], data: st.DataObject, fmt: str) -> None:
    notes = {i: data.draw(_note_strategy()) for i in ids}
    pairs = data.draw(st.lists(st.tuples(st.sampled_from(ids), st.sampled_from(ids)).filter(lambda p: p[0] != p[1]),
                               min_size=1, max_size=10))
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        if fmt == "csv":
            _write_csv(root / "notes_train.csv", ["note_id", "title", "topics", "content", "image"],
                       [[i, t, "|".join(g), c, f"images/{k}.png"] for k, (i, (t, g, c)) in enumerate(notes.items())])
        else:
            (root / "notes_train.jsonl").write_text("\n".join(
                json.dumps({"note_id": i, "title": t, "topics": g, "content": c, "image": f"images/{k}.png"},
                           ensure_ascii=data.draw(st.booleans()))
                for k, (i, (t, g, c)) in enumerate(notes.items())), encoding="utf-8")
        _write_csv(root / "pairs_train.csv", ["query_id", "target_id"], pairs)
        split = load_split(root, "train")
    assert split.report.num_errors == 0
    assert list(split.notes) == ids  # nothing lost, duplicated or reordered
    for i, (t, g, c) in notes.items():
        n = split.notes[i]
        assert (n.title, n.topics, n.content) == (t, [x for x in g if x], c)
    assert split.pairs["all"] == pairs


@pytest.mark.slow
@FUZZ
@given(ids=IDS, data=st.data())
def test_official_round_trip(ids: list[str], data: st.DataObject) -> None:
    notes = {i: data.draw(_note_strategy(nul=True)) for i in ids}
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        _write_csv(root / "notes_train.csv", None, [[i, t, c, f"{k}.jpg", "L1@L2@"]
                                                    for k, (i, (t, _, c)) in enumerate(notes.items())])
        _write_csv(root / "note_pairs_train.csv", None, [[ids[0], ids[1]], [ids[0], "unknown-id"]])
        split = load_split(root, "train")
    assert list(split.notes) == ids
    for i, (t, _, c) in notes.items():
        tags, content = split_official_content(c.replace("\x00", ""))
        n = split.notes[i]
        assert (n.title, n.topics, n.content) == (t.replace("\x00", ""), tags, content)
        assert n.image.endswith(f"images/{ids.index(i)}.jpg")
    assert split.pairs["all"] == [(ids[0], ids[1])] and split.report.counts["unknown_pair_id"] == 1
    assert split.report.counts["nul_stripped"] == sum(1 for t, _, c in notes.values() if "\x00" in t + c)


@FUZZ
@given(prefix=st.binary(max_size=300), junk=st.binary(max_size=300), header=st.booleans(),
       on_error=st.sampled_from(["raise", "skip"]), ext=st.sampled_from(["csv", "jsonl"]))
def test_random_bytes_in_tables_only_named_errors(prefix: bytes, junk: bytes, header: bool, on_error: str,
                                                   ext: str) -> None:
    head = b"note_id,title,topics,content,image\n" if ext == "csv" else b""
    good = (b"n1,t,a,c,images/a.png\nn2,t,a,c,images/a.png\n" if ext == "csv" else
            b'{"note_id":"n1","title":"t"}\n{"note_id":"n2","title":"t"}\n')
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / f"notes_train.{ext}").write_bytes((head if header else prefix) + good + junk)
        (root / "pairs_train.csv").write_bytes(b"query_id,target_id\nn1,n2\n" + junk)
        try:
            split = load_split(root, "train", on_error=on_error)
        except DataError as err:
            assert str(err)  # a named error with a message
            return
    if on_error == "skip" and header:
        assert {"n1", "n2"} <= set(split.notes) and ("n1", "n2") in split.pairs["all"]


# -------------------------------------------------------------------------------------------------- images
def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()


@FUZZ
@given(blob=st.one_of(st.binary(max_size=2000),
                      st.integers(0, len(PNG)).map(lambda n: PNG[:n]),
                      st.tuples(st.integers(0, len(PNG) - 1), st.integers(0, 255)).map(
                          lambda p: PNG[: p[0]] + bytes([p[1]]) + PNG[p[0] + 1:])))
def test_random_bytes_as_images(blob: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.png"
        path.write_bytes(blob)
        try:
            img, _ = decode_image(path)
        except DataError as err:
            assert err.code in ("bad_image", "unsupported_image_mode") and str(path) in str(err)
            return
        assert img.mode == "RGB" and img.size[0] > 0


def test_bad_image_never_becomes_a_blank_training_image(tmp_path: Path) -> None:
    from notellm2_pl.data.problems import LoadReport
    from notellm2_pl.data.tables import Split

    (tmp_path / "x.png").write_bytes(b"\x89PNG garbage")
    split = Split({"a": Note("a", "t", [], "c", str(tmp_path / "x.png"))}, {"all": []}, LoadReport())
    with pytest.raises(DataError):
        check_images(split, "raise")


# ------------------------------------------------------------------------------------- prompts / processor
@pytest.fixture(scope="module")
def formats():
    from notellm2_pl.data.processing import NoteFormat
    from notellm2_pl.plugins.testing import tiny_tokenizer

    tok = tiny_tokenizer()
    tok.add_tokens(["<img>", "</img>", "<IMG_EMB>"], special_tokens=True)  # as HFCausalLM.add_tokens does
    o, c, m = tok.convert_tokens_to_ids(["<img>", "</img>", "<IMG_EMB>"])
    return {(variant, preset): NoteFormat(tok, None, variant, preset, [o] if variant != "text" else [],
                                          [c] if variant != "text" else [], m if variant == "micl" else None)
            for variant in ("text", "basic", "micl") for preset in ("en", "zh")}


@FUZZ
@given(title=HUGE, topics=st.lists(HUGE, max_size=12), content=HUGE, variant=st.sampled_from(["text", "basic", "micl"]),
       preset=st.sampled_from(["en", "zh"]), probe=st.sampled_from(["full", "only_image"]),
       wide=st.booleans(), max_tokens=st.integers(40, 200))
def test_no_marker_injection(formats, title: str, topics: list[str], content: str, variant: str, preset: str,
                             probe: str, wide: bool, max_tokens: int) -> None:
    from notellm2_pl.data.processing import NoteProcessor
    from notellm2_pl.data.prompts import TextLimits

    fmt = formats[(variant, preset)]
    limits = TextLimits(10_000, 10_000, 100) if wide else TextLimits()
    proc = NoteProcessor(fmt, limits, max_tokens=max_tokens, probe=probe)
    ids, image_pos, marker_pos = proc.tokenize(Note("id", title, topics, content, None))
    tok = fmt.tokenizer
    suffix = proc._suffix_ids
    assert ids[len(ids) - len(suffix):] == suffix and len(ids) <= max_tokens + len(suffix)
    body = ids[: len(ids) - len(suffix)]
    specials = set(tok.all_special_ids) | set(tok.convert_tokens_to_ids(["<img>", "</img>", "<IMG_EMB>"]))
    placed = [i for i in body if i in specials]
    marker = [fmt.marker_id] if fmt.marker_id else []
    expected = list(proc._open_ids) + fmt.image_open_ids + fmt.image_close_ids + marker
    assert placed == expected  # exactly the template's special tokens, in the template's order
    if variant == "text":
        assert image_pos == -1 and marker_pos == -1
    else:
        assert body[image_pos - 1] == fmt.image_open_ids[0] and body[image_pos] == fmt.image_close_ids[0]
    if variant == "micl":
        assert body[marker_pos] == fmt.marker_id and marker_pos > image_pos
    else:
        assert marker_pos == -1


@FUZZ
@given(title=TEXT, topics=st.lists(TEXT, max_size=12), content=TEXT, preset=st.sampled_from(["en", "zh"]))
def test_rendered_fields_are_verbatim(title: str, topics: list[str], content: str, preset: str) -> None:
    from notellm2_pl.data.prompts import TextLimits, clean_fields, render

    t, g, c = clean_fields(title, topics, content, TextLimits(), preset)
    segs = render("micl", t, g, c, preset)
    assert [s.kind for s in segs if s.kind in ("image", "marker")] == ["image", "marker"]
    assert [s.text for s in segs if s.kind == "field"] == [t, g, c]
    assert len(t) <= 20 and len(c) <= 80


def _write_csv(path: Path, header: list[str] | None, rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)  # default "\r\n" terminator: fields with \r or \n are quoted
        if header:
            w.writerow(header)
        w.writerows(rows)
