"""Tests of the synthetic notes benchmark (notellm2_pl.data.synthetic), on the tiny preset (seconds on 2 cores)."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from notellm2_pl.commands.synth import main as cli_main
from notellm2_pl.data.synthetic import (
    PRESETS,
    SyntheticConfig,
    ensure_dataset,
    generate,
)

TINY = PRESETS["tiny"]
NOTE_HEADER = ["note_id", "title", "topics", "content", "image"]
PAIR_HEADER = ["query_id", "target_id"]
PAIR_FILES = ["pairs_train.csv", "pairs_val.csv", "pairs_test.csv", "pairs_test_shortquery.csv",
              "pairs_test_shortgtdoc.csv", "pairs_test_longquery.csv", "pairs_test_longgtdoc.csv"]


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _pairs(root: Path, name: str) -> list[tuple[str, str]]:
    return [(r["query_id"], r["target_id"]) for r in _read(root / name)[1]]


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synth") / "tiny"
    stats = generate(root, TINY, num_workers=0)
    return root, stats


@pytest.fixture(scope="module")
def meta(tiny: tuple[Path, dict]) -> dict[str, dict[str, str]]:
    return {r["note_id"]: r for r in _read(tiny[0] / "notes_meta.csv")[1]}


def test_defaults_are_frozen() -> None:
    assert PRESETS["demo"] == SyntheticConfig()
    d = SyntheticConfig()
    assert (d.num_clusters, d.notes_per_cluster, d.short_text_fraction, d.image_size, d.test_fraction) == (
        300, 10, 0.35, 96, 0.25)
    assert (d.train_pairs_per_cluster, d.val_pairs_per_cluster, d.test_pairs_per_cluster, d.seed) == (12, 1, 4, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.seed = 1  # type: ignore[misc]


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="test_pairs_per_cluster"):
        SyntheticConfig(notes_per_cluster=6, test_pairs_per_cluster=4)
    with pytest.raises(ValueError, match="short_text_fraction"):
        SyntheticConfig(short_text_fraction=1.5)


def test_reproducible_bytes_and_worker_independent(tiny: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = tiny
    again = tmp_path / "again"
    generate(again, TINY, num_workers=2)  # other process count, same bytes
    h1, h2 = _hashes(root), _hashes(again)
    assert h1 == h2
    assert sum(k.startswith("images/") for k in h1) == TINY.num_clusters * TINY.notes_per_cluster
    other = tmp_path / "other"
    generate(other, dataclasses.replace(TINY, seed=TINY.seed + 1), num_workers=0)
    h3 = _hashes(other)
    assert h3["notes_train.csv"] != h1["notes_train.csv"]
    images = sorted(k for k in h1 if k.startswith("images/"))
    assert [h3[k] for k in images] != [h1[k] for k in images]


def test_layout_headers_and_images(tiny: tuple[Path, dict]) -> None:
    root, stats = tiny
    ids: dict[str, set[str]] = {}
    for split in ("train", "test"):
        header, rows = _read(root / f"notes_{split}.csv")
        assert header == NOTE_HEADER
        ids[split] = {r["note_id"] for r in rows}
        assert len(ids[split]) == len(rows) == stats[f"notes_{split}"]
        for r in rows:
            assert r["image"] == f"images/{r['note_id']}.png"
            assert r["title"]
            assert all(t and "|" not in t for t in r["topics"].split("|")) or r["topics"] == ""
    assert not ids["train"] & ids["test"]
    for name in PAIR_FILES:
        assert _read(root / name)[0] == PAIR_HEADER, name
    for nid in list(ids["train"])[:5] + list(ids["test"])[:5]:
        with Image.open(root / "images" / f"{nid}.png") as im:
            assert im.format == "PNG" and im.mode == "RGB" and im.size == (TINY.image_size, TINY.image_size)
    info = json.loads((root / "dataset.json").read_text())
    assert info["config"] == dataclasses.asdict(TINY)
    assert info["counts"]["pairs_test"] == len(_pairs(root, "pairs_test.csv"))
    assert info["counts"]["notes_train"] + info["counts"]["notes_test"] == TINY.num_clusters * TINY.notes_per_cluster
    assert not list(root.glob("*.tmp"))
    assert not list(root.glob(".tmp-*"))  # no leftovers of the atomic writes


def test_pairs_valid_disjoint_and_same_cluster(tiny: tuple[Path, dict], meta: dict[str, dict[str, str]]) -> None:
    root, stats = tiny
    train_ids = {r["note_id"] for r in _read(root / "notes_train.csv")[1]}
    test_ids = {r["note_id"] for r in _read(root / "notes_test.csv")[1]}
    train, val, test = (_pairs(root, f"pairs_{s}.csv") for s in ("train", "val", "test"))
    assert train and val and test
    for pairs, pool in ((train, train_ids), (val, train_ids), (test, test_ids)):
        for q, t in pairs:
            assert q in pool and t in pool and q != t
            assert meta[q]["cluster_id"] == meta[t]["cluster_id"]
    unordered = {frozenset(p) for p in train}
    assert len(unordered) == len(train)  # no duplicate training pairs
    assert not unordered & {frozenset(p) for p in val}
    used = [n for p in test for n in p]
    assert len(used) == len(set(used))  # test pairs are a matching: each note once
    train_clusters = {meta[n]["cluster_id"] for n in train_ids}
    assert not train_clusters & {meta[n]["cluster_id"] for n in test_ids}  # disjoint clusters
    assert stats["train_pairs_text_solvable"] > 0.5  # docs/design.md#data regime: most training pairs solvable by text


def test_subsets_match_short_flags(tiny: tuple[Path, dict], meta: dict[str, dict[str, str]]) -> None:
    root, _ = tiny
    test = _pairs(root, "pairs_test.csv")
    short = {n for n, r in meta.items() if r["is_short"] == "1"}
    expected = {
        "shortquery": [p for p in test if p[0] in short],
        "shortgtdoc": [p for p in test if p[1] in short],
        "longquery": [p for p in test if p[0] not in short],
        "longgtdoc": [p for p in test if p[1] not in short],
    }
    for name, pairs in expected.items():
        assert _pairs(root, f"pairs_test_{name}.csv") == pairs, name
    assert expected["shortquery"] and expected["longquery"]
    assert len(short) == round(TINY.short_text_fraction * len(meta))


def test_short_text_never_names_the_product(tiny: tuple[Path, dict], meta: dict[str, dict[str, str]]) -> None:
    root, stats = tiny
    all_name_words = {w.lower() for r in meta.values() for w in r["product_name"].split()}
    categories = {r["category"] for r in meta.values()}
    notes = _read(root / "notes_train.csv")[1] + _read(root / "notes_test.csv")[1]
    n_long_named = 0
    for r in notes:
        m = meta[r["note_id"]]
        words = set(re.findall(r"[a-z0-9']+", f"{r['title']} {r['topics'].replace('|', ' ')} {r['content']}".lower()))
        if m["is_short"] == "1":
            assert not words & all_name_words, r
            assert not words & categories, r
            assert len(r["title"]) + len(r["topics"]) + len(r["content"]) <= stats["short_max_chars"]
        else:
            mentioned = set(m["mentioned_words"].split())
            assert mentioned and mentioned <= words
            assert m["category"] in words
            assert len(r["title"]) + len(r["topics"]) + len(r["content"]) > stats["short_max_chars"]
            n_long_named += mentioned == {w.lower() for w in m["product_name"].split()}
    assert n_long_named > 0


def test_refuses_reuse_and_detects_interrupted_run(tmp_path: Path) -> None:
    cfg = dataclasses.replace(TINY, num_clusters=4, notes_per_cluster=4, test_pairs_per_cluster=1,
                              train_pairs_per_cluster=2, image_size=32)
    root = tmp_path / "d"
    generate(root, cfg)
    with pytest.raises(FileExistsError, match="overwrite"):
        generate(root, cfg)
    (root / "dataset.json").unlink()  # what an interrupted run leaves behind
    with pytest.raises(FileExistsError, match="no dataset.json"):
        generate(root, cfg)
    with pytest.raises(FileExistsError, match="no dataset.json"):
        ensure_dataset(root, cfg)
    generate(root, dataclasses.replace(cfg, num_clusters=3), overwrite=True)
    assert len(list((root / "images").iterdir())) == 3 * 4  # stale images of the old run are gone
    assert (root / "dataset.json").exists()


def test_ensure_dataset(tmp_path: Path) -> None:
    cfg = dataclasses.replace(TINY, num_clusters=4, notes_per_cluster=4, test_pairs_per_cluster=1,
                              train_pairs_per_cluster=2, image_size=32)
    root = tmp_path / "e"
    assert ensure_dataset(root, cfg) == root
    stamp = (root / "dataset.json").stat().st_mtime_ns
    assert ensure_dataset(str(root), cfg) == root
    assert (root / "dataset.json").stat().st_mtime_ns == stamp  # not regenerated
    with pytest.raises(ValueError, match=r"seed.*different --out or --overwrite"):
        ensure_dataset(root, dataclasses.replace(cfg, seed=5))


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    argv = ["--out", str(out), "--preset", "tiny", "--num-clusters", "5", "--image-size", "32", "--seed", "3"]
    assert cli_main(argv) == 0
    info = json.loads((out / "dataset.json").read_text())
    assert info["config"]["num_clusters"] == 5 and info["config"]["seed"] == 3
    assert cli_main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert cli_main([*argv, "--overwrite"]) == 0
    mtime = (out / "dataset.json").stat().st_mtime_ns
    capsys.readouterr()
    assert cli_main([*argv, "--exist-ok"]) == 0  # same settings: kept, not regenerated
    assert "keeping it" in capsys.readouterr().out and (out / "dataset.json").stat().st_mtime_ns == mtime
    assert cli_main([*argv[:-1], "4", "--exist-ok"]) == 2  # another seed: still an error
    assert "seed" in capsys.readouterr().err
    assert cli_main(["--out", str(tmp_path / "fresh"), "--preset", "tiny", "--num-clusters", "5", "--image-size",
                     "32", "--exist-ok"]) == 0  # absent: generated as usual
    assert (tmp_path / "fresh" / "dataset.json").exists()
    assert cli_main(["--out", str(tmp_path / "bad"), "--short-text-fraction", "2"]) == 2
    with pytest.raises(SystemExit) as e:
        cli_main(["--help"])
    assert e.value.code == 0
    helptext = capsys.readouterr().out
    assert "--num-clusters" in helptext and "--short-text-fraction" in helptext and "demo" in helptext


def test_badge_twins_differ_only_in_the_badge_corner(tiny: tuple[Path, dict], tmp_path: Path) -> None:
    import numpy as np

    from notellm2_pl.data.synthetic import render_image

    root = tmp_path / "layout"
    generate(root, dataclasses.replace(TINY, badge_twin_fraction=0.4), num_workers=0)
    rows = _read(root / "notes_meta.csv")[1]
    by_cluster = {r["cluster_id"]: r for r in rows}
    twins = {r["cluster_id"]: r for r in rows if r["badge_twin_of"] != "-1"}
    assert twins, "the option made no badge twins"
    visual = ("shape", "colour", "pattern", "accent")
    for t in twins.values():
        src = by_cluster[t["badge_twin_of"]]
        assert (src["split"], src["badge_twin_of"]) == (t["split"], "-1")
        assert [t[k] for k in visual] == [src[k] for k in visual] and t["badge_corner"] != src["badge_corner"]
    # notes and pairs are what the same config without badges writes (the badges draw from their own stream)
    def tables(r: Path) -> dict[str, str]:
        return {k: v for k, v in _hashes(r).items() if k.startswith(("notes_train", "notes_test", "pairs_"))}

    assert tables(root) == tables(tiny[0]) and len(tables(root)) == 9
    assert "badge_corner" not in _read(tiny[0] / "notes_meta.csv")[0]
    assert "badges" not in json.loads((tiny[0] / "dataset.json").read_text())["description"]
    # the badge is drawn in its corner and nowhere else; without a corner no random draw is spent on it
    cfg = dataclasses.replace(TINY, image_size=64, noise_std=0.0)
    ident = ("circle", "blue", "dots", "white")
    draw = [np.asarray(render_image(np.random.default_rng(7), cfg, ident, c), dtype=int) for c in (-1, 0, 3)]
    for corner, img in zip((0, 3), draw[1:]):
        changed = np.argwhere(np.abs(img - draw[0]).sum(-1) > 0)
        assert len(changed) > 20
        y, x = changed.mean(0)
        assert (x < 32 and y < 32) if corner == 0 else (x > 32 and y > 32)


def test_ensure_dataset_accepts_datasets_from_before_a_new_field(tmp_path: Path) -> None:
    root = ensure_dataset(tmp_path / "d", TINY)
    marker = root / "dataset.json"
    info = json.loads(marker.read_text())
    del info["config"]["badge_twin_fraction"]  # written by a version without the field
    marker.write_text(json.dumps(info))
    assert ensure_dataset(root, TINY) == root
    with pytest.raises(ValueError, match="badge_twin_fraction"):
        ensure_dataset(root, dataclasses.replace(TINY, badge_twin_fraction=0.2))


def test_image_relevance_draws_random_images_for_the_rest():
    """``image_relevance`` p: about p of the images show their cluster's identity; p = 1 changes nothing."""
    import dataclasses

    from notellm2_pl.data.synthetic import PRESETS
    from notellm2_pl.data.synthetic.dataset import _build_structure, _render_jobs

    cfg = dataclasses.replace(PRESETS["demo"], image_relevance=0.3)
    clusters, notes, *_ = _build_structure(cfg)
    jobs = _render_jobs(cfg, clusters, notes)
    own = sum(visual == clusters[n.cid].visual for (_, _, visual, _), n in zip(jobs, notes)) / len(notes)
    assert 0.27 < own < 0.36  # 0.3 plus the random draws that hit the cluster's own identity by chance
    full = dataclasses.replace(cfg, image_relevance=1.0)
    clusters, notes, *_ = _build_structure(full)
    assert all(v == clusters[n.cid].visual for (_, _, v, _), n in zip(_render_jobs(full, clusters, notes), notes))


def test_held_out_validation_clusters_are_unseen_in_training() -> None:
    """``val_cluster_fraction``: val pairs are a matching inside held-out train-side clusters no training pair uses."""
    from notellm2_pl.data.synthetic.dataset import _build_structure

    cfg = dataclasses.replace(PRESETS["demo"], val_cluster_fraction=0.15, num_clusters=120)
    clusters, notes, pairs, *_ = _build_structure(cfg)
    held = {c.cid for c in clusters if c.held_out}
    assert all(clusters[c].split == "train" for c in held)
    assert 0.10 * 120 <= len(held) <= 0.20 * 120
    train_notes = {i for p in pairs["train"] for i in p}
    val_notes = [i for p in pairs["val"] for i in p]
    assert not train_notes & set(val_notes)
    assert len(val_notes) == len(set(val_notes)) == 2 * cfg.test_pairs_per_cluster * len(held)
    assert {notes[i].cid for i in val_notes} == held
    assert all(notes[a].cid == notes[b].cid for a, b in pairs["val"])
    assert all(notes[i].split == "train" for i in val_notes)  # notes_train.csv, so the val pool can hold them
    plain_clusters, _, plain_pairs, *_ = _build_structure(dataclasses.replace(cfg, val_cluster_fraction=0.0))
    assert not any(c.held_out for c in plain_clusters)
    assert {notes[a].cid for a, _ in plain_pairs["val"]} <= {c.cid for c in plain_clusters if c.split == "train"}
    with pytest.raises(ValueError, match="val_cluster_fraction"):
        SyntheticConfig(val_cluster_fraction=0.8)


# ---------------------------------------------------------------------------------------------------------------
# The paraphrase preset: related notes share meaning in different words.

_WORDS = re.compile(r"[a-z0-9']+")


def _paraphrase_small(**overrides: object) -> SyntheticConfig:
    """The paraphrase preset at 40 clusters x 6 notes (structure only: about a second)."""
    from notellm2_pl.data.synthetic import preset_config

    return preset_config("paraphrase", num_clusters=40, notes_per_cluster=6, test_pairs_per_cluster=2,
                         train_pairs_per_cluster=6, **overrides)


def _note_words(note: object) -> set[str]:
    return set(_WORDS.findall(f"{note.title} {' '.join(note.topics)} {note.content}".lower()))


def _same_cluster_pairs(notes: list, long_only: bool = False) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(related, unrelated) index pairs over all notes (or the long ones)."""
    import itertools

    keep = [i for i, n in enumerate(notes) if not (long_only and n.is_short)]
    related, unrelated = [], []
    for a, b in itertools.combinations(keep, 2):
        (related if notes[a].cid == notes[b].cid else unrelated).append((a, b))
    return related, unrelated


def test_paraphrase_preset_is_demo_sized() -> None:
    """Same notes and training pairs as demo (the demo recipe's epoch), validation on held-out clusters."""
    from notellm2_pl.data.synthetic.dataset import _build_structure

    para, demo = PRESETS["paraphrase"], PRESETS["demo"]
    assert (para.num_clusters, para.notes_per_cluster, para.image_size) == (demo.num_clusters,
                                                                            demo.notes_per_cluster, demo.image_size)
    assert para.paraphrase_forms >= 2 and demo.paraphrase_forms == 0 and para.val_cluster_fraction > 0
    _, _, para_pairs, *_ = _build_structure(para)
    assert len(para_pairs["train"]) == 2700 == demo.train_pairs_per_cluster * round(
        demo.num_clusters * (1 - demo.test_fraction))


def test_paraphrase_dataset_keeps_the_invariants(tmp_path: Path) -> None:
    """Deterministic by seed, same layout, pairs inside clusters, subsets by the short flag, held-out val clusters."""
    cfg = dataclasses.replace(_paraphrase_small(), num_clusters=16, image_size=32)
    root, again, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    stats = generate(root, cfg, num_workers=0)
    generate(again, cfg, num_workers=0)
    generate(other, dataclasses.replace(cfg, seed=cfg.seed + 1), num_workers=0)
    assert _hashes(root) == _hashes(again)
    assert _hashes(other)["notes_train.csv"] != _hashes(root)["notes_train.csv"]
    header, rows = _read(root / "notes_meta.csv")
    assert header[-3:] == ["attributes", "note_concepts", "note_forms"]
    meta = {r["note_id"]: r for r in rows}
    for split in ("train", "test"):
        assert _read(root / f"notes_{split}.csv")[0] == NOTE_HEADER
    test, val, train = (_pairs(root, f"pairs_{s}.csv") for s in ("test", "val", "train"))
    assert all(meta[q]["cluster_id"] == meta[t]["cluster_id"] for q, t in test + val + train)
    assert {meta[n]["split"] for p in val for n in p} == {"val"}  # held-out clusters, in no training pair
    assert not {n for p in val for n in p} & {n for p in train for n in p}
    short = {n for n, r in meta.items() if r["is_short"] == "1"}
    assert _pairs(root, "pairs_test_shortquery.csv") == [p for p in test if p[0] in short]
    assert _pairs(root, "pairs_test_longgtdoc.csv") == [p for p in test if p[1] not in short]
    assert stats["short_max_chars"] < stats["long_min_chars"]
    assert "Paraphrase text" in json.loads((root / "dataset.json").read_text())["description"]["text_only"]


def test_paraphrase_related_notes_share_a_maker_more_often_but_not_always() -> None:
    from notellm2_pl.data.synthetic.dataset import _build_structure

    clusters, notes, *_ = _build_structure(_paraphrase_small())
    makers = {c.maker.lower() for c in clusters}
    assert len(makers) < len(clusters)  # makers recur across clusters
    words = [_note_words(n) for n in notes]
    related, unrelated = _same_cluster_pairs(notes)
    shared = [[bool(words[a] & words[b] & makers) for a, b in ps] for ps in (related, unrelated)]
    rate_related, rate_unrelated = (sum(s) / len(s) for s in shared)
    assert rate_related > 4 * rate_unrelated and rate_related < 0.8
    assert rate_unrelated > 0  # not a perfect key: unrelated notes share makers too
    for n in notes:
        if n.mention:
            assert n.mention == (clusters[n.cid].maker,) and n.mention[0].lower() in _note_words(n)


def test_paraphrase_word_overlap_is_partial() -> None:
    """Related long notes share more words than unrelated ones, clearly fewer than templated notes do."""
    import numpy as np

    from notellm2_pl.data.synthetic.dataset import _build_structure

    def jaccards(cfg: SyntheticConfig) -> tuple[float, float]:
        _, notes, *_ = _build_structure(cfg)
        words = [_note_words(n) for n in notes]
        return tuple(float(np.mean([len(words[a] & words[b]) / len(words[a] | words[b]) for a, b in ps]))
                     for ps in _same_cluster_pairs(notes, long_only=True))

    related, unrelated = jaccards(_paraphrase_small())
    templated_related, templated_unrelated = jaccards(_paraphrase_small(paraphrase_forms=0))
    assert related > unrelated + 0.015
    assert templated_related > related + 0.03
    assert related - unrelated < 0.6 * (templated_related - templated_unrelated)


def test_paraphrase_forms_differ_across_related_notes() -> None:
    from notellm2_pl.data.synthetic.dataset import _build_structure
    from notellm2_pl.data.synthetic.lexicon import ATTRIBUTE_FORMS, CATEGORY_FORMS
    from notellm2_pl.data.synthetic.paraphrase import assign_concepts

    cfg = _paraphrase_small()
    clusters, notes, *_ = _build_structure(cfg)
    lexicon = assign_concepts(cfg, [dataclasses.replace(c) for c in clusters])  # same stream: the same lexicon
    for concept, forms in lexicon.forms.items():
        english = CATEGORY_FORMS.get(concept) or ATTRIBUTE_FORMS[concept][1]
        assert len(set(forms)) == cfg.paraphrase_forms
        assert sum(f in english for f in forms) == cfg.paraphrase_forms - cfg.slang_forms
    for n in notes:
        c = clusters[n.cid]
        text = f"{n.title} {' '.join(n.topics)} {n.content}".lower()
        for concept, form in zip(n.concepts, n.forms, strict=True):
            assert concept in {c.category, *c.attributes} and form in lexicon.forms[concept]
            assert form.lower() in text
    related, _ = _same_cluster_pairs(notes, long_only=True)
    same = []
    for a, b in related:
        fa, fb = dict(zip(notes[a].concepts, notes[a].forms)), dict(zip(notes[b].concepts, notes[b].forms))
        same.extend(fa[k] == fb[k] for k in fa.keys() & fb.keys())
    assert len(same) > 100
    assert 0.1 < sum(same) / len(same) < 0.45  # about 1 / paraphrase_forms: mostly different words


def test_paraphrase_settings_are_validated_and_do_not_touch_templated_text() -> None:
    from notellm2_pl.data.synthetic.dataset import _build_structure

    for bad in ({"paraphrase_forms": 1}, {"paraphrase_forms": 3, "slang_forms": 3},
                {"paraphrase_forms": 7, "slang_forms": 1}):
        with pytest.raises(ValueError, match="paraphrase_forms"):
            SyntheticConfig(**bad)
    # the paraphrase knobs change nothing while the text is templated
    _, plain, *_ = _build_structure(TINY)
    _, knobs, *_ = _build_structure(dataclasses.replace(TINY, maker_mention_prob=0.1, stray_mention_prob=0.9,
                                                        slang_forms=0))
    assert [(n.title, n.content, n.note_id) for n in plain] == [(n.title, n.content, n.note_id) for n in knobs]


def test_paraphrase_lexicon_is_consistent() -> None:
    """Every category has forms, every concept the same number of English forms, and no form names two concepts."""
    from notellm2_pl.data.synthetic import CATEGORIES
    from notellm2_pl.data.synthetic.config import MAX_ENGLISH_FORMS
    from notellm2_pl.data.synthetic.lexicon import ASPECT_SENTENCES, ASPECTS, ATTRIBUTE_FORMS, CATEGORY_FORMS

    assert set(CATEGORY_FORMS) == set(CATEGORIES)
    all_forms = [*CATEGORY_FORMS.values(), *(forms for _, forms in ATTRIBUTE_FORMS.values())]
    assert {len(forms) for forms in all_forms} == {MAX_ENGLISH_FORMS}
    flat = [f for forms in all_forms for f in forms]
    assert len(flat) == len(set(flat))
    assert {aspect for aspect, _ in ATTRIBUTE_FORMS.values()} == set(ASPECTS) == set(ASPECT_SENTENCES)
