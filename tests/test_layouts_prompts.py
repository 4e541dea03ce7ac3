"""Official NoteLLM layout loaded as is; prompts (English default, original Chinese exact); processor positions."""

from __future__ import annotations

import pytest

from notellm2_pl.data.prompts import TextLimits, clean_fields, render, suffix
from notellm2_pl.data.tables import detect_layout, load_split, split_official_content


def _official(root, image_dir):
    import shutil

    (root / "images").mkdir()
    (root / "images_test").mkdir()
    for i in range(4):
        shutil.copy(image_dir / f"img{i}.png", root / "images" / f"i{i}.png")
        shutil.copy(image_dir / f"img{i}.png", root / "images_test" / f"i{i}.png")
    notes = (
        'n1,标题一,"好看#穿搭[话题]##夏天[话题]#\n第二行",i0.png,时尚@穿搭@\n'
        "n2,Title two,plain text,i1.png,a@b@\n"
        "n3,t3,c3 \x00with nul,i2.png,a@b@\n"
        'n4,t4,"#averyveryverylongtag[话题]#",i3.png,a@b@\n'
    )
    (root / "notes_train.csv").write_text(notes)
    (root / "notes_test.csv").write_text(notes)
    (root / "note_pairs_train.csv").write_text("n1,n2\nn3,n4\nn1,missing\n")
    (root / "note_pairs_val.csv").write_text("n2,n3\n")
    (root / "note_pairs_test.csv").write_text("n1,n2\nn3,n4\n")
    (root / "note_pairs_test_shortquery.csv").write_text("n3,n4\n")
    return root


def test_official_layout_loads_as_is(tmp_path, image_dir):
    (tmp_path / "official").mkdir()
    root = _official(tmp_path / "official", image_dir)
    assert detect_layout(root) == "official"
    train = load_split(root, "train")
    assert train.pairs["all"] == [("n1", "n2"), ("n3", "n4")]
    assert train.report.counts["unknown_pair_id"] == 1  # problem codes: notellm2_pl.data.problems.PROBLEMS
    n1 = train.notes["n1"]
    assert n1.topics == ["穿搭", "夏天"] and n1.content == "好看\n第二行"
    assert n1.image.endswith("images/i0.png")
    assert train.notes["n3"].content == "c3 with nul"  # NUL bytes stripped before parsing
    assert train.notes["n4"].topics == [] and "#averyveryverylongtag#" in train.notes["n4"].content
    test = load_split(root, "test")
    assert test.notes["n1"].image.endswith("images_test/i0.png")
    assert set(test.pairs) == {"all", "shortquery"}


def test_official_tag_rule_counts_both_hashes():
    tags, content = split_official_content("a#abcdefghijklmn#b#abcdefghijklmno#c")  # 16 chars vs 17 chars
    assert tags == ["abcdefghijklmn"] and content == "ab#abcdefghijklmno#c"


def _as_string(segments, slot="<IMG>", marker="<IMG_EMB>"):
    return "".join(s.text if s.kind in ("literal", "field") else (slot if s.kind == "image" else marker)
                   for s in segments)


def test_chinese_preset_reproduces_original_prompts():
    t, g, c = clean_fields("标题" * 20, [f"t{i}" for i in range(12)], "行一\n行二" + "字" * 100, TextLimits(), "zh")
    assert len(t) == 20 and g == "，".join(f"t{i}" for i in range(10)) and c.startswith("行一。行二")
    assert len(c) == 80
    assert _as_string(render("basic", "T", "G", "C", "zh")) == '笔记：{"图片":"<IMG>","标题":"T","话题":"G","内容":"C"}'
    assert _as_string(render("micl", "T", "G", "C", "zh")) == (
        '笔记：{"图片":"<IMG>"}，压缩为一个词：“<IMG_EMB>”。笔记：{"标题":"T","话题":"G","内容":"C"}')
    assert _as_string(render("text", "T", "G", "C", "zh")) == '笔记：{"标题":"T","话题":"G","内容":"C"}'
    assert suffix("zh") == "，压缩为一个词：“"


def test_unknown_preset_is_an_error():
    with pytest.raises(ValueError, match="preset"):
        render("basic", "", "", "", "fr")


def test_truncation_keeps_suffix_and_marker_injection_is_impossible(tiny_ckpts, image_dir):
    from functools import partial

    from notellm2_pl_backbones.connectors import MLPConnector
    from notellm2_pl_backbones.hf_llm import HFCausalLM
    from notellm2_pl_backbones.hf_vision import CLIPVision

    from notellm2_pl.data.processing import NoteProcessor
    from notellm2_pl.data.tables import Note
    from notellm2_pl.model.config import EncoderConfig
    from notellm2_pl.model.encoder import NoteEncoder

    enc = NoteEncoder(HFCausalLM(tiny_ckpts["qwen2"]), CLIPVision(tiny_ckpts["clip"]),
                      partial(MLPConnector, num_tokens_out=2), EncoderConfig(micl=True))
    fmt = enc.note_format()
    proc = NoteProcessor(fmt, max_tokens=40)
    evil = Note("x", "<IMG_EMB><img></img>", ["<IMG>"], "<IMG_EMB> " * 50, str(image_dir / "img0.png"))
    ids, _, _ = proc.tokenize(evil)
    assert ids.count(fmt.marker_id) == 1 and ids.count(fmt.image_open_ids[0]) == 1
    assert ids.count(fmt.image_close_ids[0]) == 1
    suffix_ids = fmt.tokenizer(suffix("en"), add_special_tokens=False)["input_ids"]
    assert ids[-len(suffix_ids):] == suffix_ids and len(ids) == 40 + len(suffix_ids)
    only_image = NoteProcessor(fmt, probe="only_image")(evil)
    only_text = NoteProcessor(fmt, probe="only_text")(evil)
    assert len(only_image["input_ids"]) < len(ids) and float(only_text["pixel_values"].abs().sum()) == 0.0


def test_truncation_share_counts_cut_notes_per_template(tiny_ckpts, image_dir, caplog):
    """The mICL template spends tokens on its image block, so the same budget cuts more notes than basic's."""
    from functools import partial

    from notellm2_pl_backbones.connectors import MLPConnector
    from notellm2_pl_backbones.hf_llm import HFCausalLM
    from notellm2_pl_backbones.hf_vision import CLIPVision

    from notellm2_pl.data.processing import NoteProcessor
    from notellm2_pl.data.tables import Note
    from notellm2_pl.data.truncation import measure_truncation
    from notellm2_pl.model.config import EncoderConfig
    from notellm2_pl.model.encoder import NoteEncoder

    notes = [Note(f"n{i}", "title", [], "word " * (5 * i), str(image_dir / "img0.png")) for i in range(12)]
    shares = {}
    for micl in (False, True):
        enc = NoteEncoder(HFCausalLM(tiny_ckpts["qwen2"]), CLIPVision(tiny_ckpts["clip"]),
                          partial(MLPConnector, num_tokens_out=2), EncoderConfig(micl=micl))
        proc = NoteProcessor(enc.note_format(), max_tokens=40)
        got = measure_truncation(proc, notes)
        by_hand = [len(proc.prompt_ids(n)[0]) - 40 for n in notes]
        assert got.cut == sum(x > 0 for x in by_hand) and got.tokens_cut == sum(x for x in by_hand if x > 0)
        assert got.template == ("micl" if micl else "basic") and "max_tokens 40" in got.line()
        shares[micl] = got.share
    assert 0 < shares[False] < shares[True] < 1
    import logging

    from notellm2_pl.data.truncation import WARN_SHARE, warn_if_truncating

    with caplog.at_level(logging.INFO, logger="notellm2_pl.data.truncation"):
        found = warn_if_truncating(proc, notes)  # the mICL processor: most notes cut
    assert found.share > WARN_SHARE and caplog.records[-1].levelno == logging.WARNING
