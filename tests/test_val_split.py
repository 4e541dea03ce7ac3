"""Validation that looks like the test: the seen-notes finding, and the note-disjoint split carved from training pairs
(docs/data.md#validation-on-unseen-notes)."""

from __future__ import annotations

import csv
import json
import logging
import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from notellm2_pl.commands import validate_data
from notellm2_pl.data.datamodule import NoteDataModule
from notellm2_pl.data.tables import load_split
from notellm2_pl.data.val_split import (
    carve_note_disjoint,
    measure_seen,
    pair_notes,
    resolve_val_split,
)
from notellm2_pl.data.validation import validate_dataset

COMPONENTS, SIZE = 10, 6
"""Training notes: 10 connected components of 6 notes each (a chain plus one chord: 6 pairs per component)."""


def _component_pairs(c: int) -> list[tuple[str, str]]:
    chain = [(f"a{c}_{i}", f"a{c}_{i + 1}") for i in range(SIZE - 1)]
    return chain + [(f"a{c}_0", f"a{c}_3")]


TRAIN_PAIRS = [p for c in range(COMPONENTS) for p in _component_pairs(c)]
ORPHANS = [f"o{i}" for i in range(6)]  # in notes_train, in no training pair
SEEN_VAL = [(f"a{c}_0", f"a{c}_2") for c in range(4)] + [(f"a{c}_1", f"a{c}_4") for c in range(4)]
TEST_IDS = [f"t{i}" for i in range(12)]


def _write_csv(path: Path, header: list[str], rows: list[tuple]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def write_dataset(root: Path, val_pairs: list[tuple[str, str]], test_ids: list[str] = TEST_IDS) -> Path:
    """A canonical dataset without images: notes_train/notes_test and pairs_{train,val,test}."""
    root.mkdir(parents=True, exist_ok=True)
    train_ids = sorted(pair_notes(TRAIN_PAIRS)) + ORPHANS
    note = ["note_id", "title", "topics", "content", "image"]
    _write_csv(root / "notes_train.csv", note, [(i, f"title {i}", "x|y", f"content of {i}", "") for i in train_ids])
    _write_csv(root / "notes_test.csv", note, [(i, f"title {i}", "z", f"content of {i}", "") for i in test_ids])
    pair = ["query_id", "target_id"]
    _write_csv(root / "pairs_train.csv", pair, TRAIN_PAIRS)
    _write_csv(root / "pairs_val.csv", pair, val_pairs)
    _write_csv(root / "pairs_test.csv", pair, list(zip(test_ids[::2], test_ids[1::2])))
    return root


@pytest.fixture()
def mismatched(tmp_path) -> Path:
    """Validation pairs on training notes (16 of 18 notes seen), a cold-start test (no test note in training)."""
    return write_dataset(tmp_path / "mismatch", SEEN_VAL + [("o0", "o1")])


def _dm(root: Path, **kwargs) -> NoteDataModule:
    """A datamodule set up for validation with a text-only stand-in processor (no model needed)."""
    args = {"check_images": False, "val_note_fraction": 0.25, "val_pool_extra": 3, **kwargs}
    dm = NoteDataModule(str(root), **args)
    dm.processor = SimpleNamespace(fmt=SimpleNamespace(image_config=None))
    dm.setup("validate")
    return dm


def test_measure_seen_counts_and_mismatch(mismatched):
    splits = {s: load_split(mismatched, s) for s in ("train", "val", "test")}
    seen = measure_seen(splits["train"].pairs["all"], splits["val"].pairs["all"], splits["test"].pairs["all"],
                        splits["test"].notes)
    assert (seen.train_notes, seen.val_notes, seen.val_seen) == (60, 18, 16)
    assert (seen.test_notes, seen.test_seen, seen.test_pool, seen.test_pool_seen) == (12, 0, 12, 0)
    assert seen.cold_start and seen.mismatch
    assert "16 of 18 validation-pair notes (89%)" in seen.describe()
    assert resolve_val_split("auto", seen) == "note_disjoint"
    assert resolve_val_split("given", seen) == "given"
    assert resolve_val_split("auto", None) == "given"
    with pytest.raises(ValueError, match="auto, given or note_disjoint"):
        resolve_val_split("random", seen)  # type: ignore[arg-type]


def test_validate_data_reports_the_finding(mismatched, capsys, tmp_path):
    report = tmp_path / "report.json"
    assert validate_data.main([str(mismatched), "--no-images", "--json", str(report)]) == 0  # a warning, not an error
    out = capsys.readouterr().out
    assert "val_notes_seen" in out
    assert "16 of 18 validation-pair notes (89%) appear in training pairs (60 notes)" in out
    assert "0 of 12 test-pool notes and 0 of 12 test-pair notes" in out
    finding = [p for p in json.loads(report.read_text())["val"]["problems"] if p["code"] == "val_notes_seen"]
    assert len(finding) == 1 and finding[0]["action"] == "kept" and "--data.val_split" in finding[0]["detail"]


def test_official_layout_finding_and_carve(tmp_path):
    """The official NoteLLM layout (header-less notes_{train,test}.csv, note_pairs_*.csv): the finding names the
    official validation file and ``auto`` carves."""
    root = tmp_path / "official"
    root.mkdir()
    train_ids = sorted(pair_notes(TRAIN_PAIRS)) + ORPHANS
    (root / "notes_train.csv").write_text("".join(f"{i},title {i},content of {i},,cat\n" for i in train_ids))
    (root / "notes_test.csv").write_text("".join(f"{i},title {i},content of {i},,cat\n" for i in TEST_IDS))
    for split, pairs in (("train", TRAIN_PAIRS), ("val", SEEN_VAL + [("o0", "o1")]),
                         ("test", list(zip(TEST_IDS[::2], TEST_IDS[1::2])))):
        (root / f"note_pairs_{split}.csv").write_text("".join(f"{q},{t}\n" for q, t in pairs))
    splits = validate_dataset(root, images=False)
    finding = [p for p in splits["val"].report.problems if p.code == "val_notes_seen"]
    assert len(finding) == 1 and finding[0].where == "note_pairs_val" and "16 of 18" in finding[0].detail
    dm = _dm(root)
    assert dm.val_split_used == "note_disjoint" and not pair_notes(dm.val_pairs) & pair_notes(
        dm.splits["train"].pairs["all"])


def test_auto_carves_a_note_disjoint_split_and_warns(mismatched, caplog):
    with caplog.at_level(logging.WARNING, logger="notellm2_pl.data.datamodule"):
        dm = _dm(mismatched)
    assert dm.val_split_used == "note_disjoint"
    warned = [r.getMessage() for r in caplog.records if "Validating on unseen notes" in r.getMessage()]
    assert len(warned) == 1
    assert "16 of 18 validation-pair notes (89%)" in warned[0] and "--data.val_split given" in warned[0]
    train_pairs = dm.splits["train"].pairs["all"]
    val_notes = pair_notes(dm.val_pairs)
    assert val_notes and not val_notes & pair_notes(train_pairs)  # no validation note in any training pair
    assert not set(dm.val_pool_ids) & pair_notes(train_pairs)  # nor any pool note
    # The validation pairs are real training-file pairs: exactly those among the held-out notes, in file order.
    assert dm.val_pairs == [p for p in TRAIN_PAIRS if set(p) <= val_notes]
    assert train_pairs == [p for p in TRAIN_PAIRS if not set(p) & val_notes]
    # Whole components (target 0.25 * 60 = 15 notes: two components of 6), so no pair was dropped.
    held = {n.split("_")[0] for n in val_notes}
    assert len(held) == 2 and val_notes == {f"{c}_{i}" for c in held for i in range(SIZE)}
    assert len(train_pairs) + len(dm.val_pairs) == len(TRAIN_PAIRS)
    # Pool: the held-out notes, then up to 3 notes training never sees (the orphans here).
    assert dm.val_pool_ids[:12] == sorted(val_notes) and set(dm.val_pool_ids[12:]) <= set(ORPHANS)
    assert len(dm.val_pool_ids) == 15


def test_the_carved_split_is_deterministic_under_its_seed(mismatched):
    a, b = _dm(mismatched, val_seed=3), _dm(mismatched, val_seed=3)
    assert (a.val_pairs, a.val_pool_ids) == (b.val_pairs, b.val_pool_ids)
    assert a.splits["train"].pairs == b.splits["train"].pairs
    others = {tuple(_dm(mismatched, val_seed=s).val_pool_ids) for s in range(4)}
    assert len(others) > 1  # the seed draws the held-out components
    assert _dm(mismatched, val_seed=3, seed=11).val_pool_ids == a.val_pool_ids  # data.seed does not move it


def test_given_keeps_todays_validation_exactly(mismatched, caplog):
    with caplog.at_level(logging.WARNING, logger="notellm2_pl.data.datamodule"):
        dm = _dm(mismatched, val_split="given", val_pool_extra=7, seed=5)
    assert dm.val_split_used == "given"
    val = load_split(mismatched, "val").pairs["all"]
    assert dm.val_pairs == val
    assert dm.splits["train"].pairs["all"] == TRAIN_PAIRS
    in_val = {n for p in val for n in p}  # the pool as drawn before val_split existed
    others = sorted(set(load_split(mismatched, "train").notes) - in_val)
    random.Random(5).shuffle(others)
    assert dm.val_pool_ids == sorted(in_val) + others[:7]
    warned = [r.getMessage() for r in caplog.records if "Validation ranks seen notes" in r.getMessage()]
    assert len(warned) == 1 and "16 of 18" in warned[0] and "--data.val_split note_disjoint" in warned[0]


@pytest.mark.parametrize("case", ["val_on_unseen_notes", "test_not_cold_start"])
def test_without_the_mismatch_auto_keeps_the_given_pairs(tmp_path, caplog, case):
    if case == "val_on_unseen_notes":
        root = write_dataset(tmp_path / case, [("o0", "o1"), ("o2", "o3"), ("o4", "o5")])
    else:  # the test pool reuses training notes
        root = write_dataset(tmp_path / case, SEEN_VAL, test_ids=[f"a{c}_{i}" for c in range(2) for i in range(SIZE)])
    with caplog.at_level(logging.INFO, logger="notellm2_pl.data.datamodule"):
        dm = _dm(root)
    assert dm.val_split_used == "given" and not dm.seen_notes.mismatch
    assert dm.val_pairs == load_split(root, "val").pairs["all"]
    assert dm.splits["train"].pairs["all"] == TRAIN_PAIRS
    assert not [r for r in caplog.records if "unseen notes" in r.getMessage() or "seen notes" in r.getMessage()]


def test_settings_are_checked_before_loading():
    with pytest.raises(ValueError, match="auto, given or note_disjoint"):
        NoteDataModule(val_split="held_out")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="val_split given"):
        NoteDataModule(streaming="prepared", val_split="note_disjoint")
    with pytest.raises(ValueError, match="val_note_fraction"):
        carve_note_disjoint(TRAIN_PAIRS, 1.5, 0)


def _hub_graph(communities: int = 40, size: int = 10) -> list[tuple[str, str]]:
    """One connected graph: dense communities chained by single bridges, plus a hub note linked to every community."""
    rng = random.Random(0)
    pairs = []
    for c in range(communities):
        notes = [f"c{c}_{i}" for i in range(size)]
        pairs += [(a, b) for i, a in enumerate(notes) for b in notes[i + 1:] if rng.random() < 0.5]
        pairs += [(notes[0], notes[1])] + [(notes[i], notes[i + 1]) for i in range(size - 1)]
        if c:
            pairs.append((f"c{c - 1}_{size - 1}", notes[0]))
        pairs.append(("hub", notes[2]))
    return list(dict.fromkeys(pairs))


def test_huge_components_are_sampled_with_few_crossing_pairs_dropped():
    pairs = _hub_graph()
    carved = carve_note_disjoint(pairs, 0.15, seed=1)
    held = set(carved.val_notes)
    assert carved.components == 0 and carved.sampled_notes == len(held) == round(0.15 * len(pair_notes(pairs)))
    crossing = [p for p in pairs if (p[0] in held) != (p[1] in held)]
    assert carved.dropped_pairs == len(crossing) > 0
    assert len(carved.train_pairs) + len(carved.val_pairs) + carved.dropped_pairs == len(pairs)
    assert not held & pair_notes(carved.train_pairs) and pair_notes(carved.val_pairs) <= held
    # Against independent note sampling of the same size: far fewer training pairs lost, more validation pairs.
    notes = sorted(pair_notes(pairs))
    random.Random(1).shuffle(notes)
    sample = set(notes[: len(held)])
    sampled_crossing = sum((p[0] in sample) != (p[1] in sample) for p in pairs)
    sampled_val = sum(p[0] in sample and p[1] in sample for p in pairs)
    assert carved.dropped_pairs < sampled_crossing / 2 and len(carved.val_pairs) > 2 * sampled_val
    assert carve_note_disjoint(pairs, 0.15, seed=1) == carved


def test_fit_validates_on_the_carved_split(tmp_path, monkeypatch):
    """A few training steps on the tiny synthetic data (validation reuses training notes, the test is cold-start):
    Recall@K is computed on the carved pool and pairs, and training never sees a held-out note."""
    import lightning as L
    from _scale_helpers import make_ckpts, tiny_module

    from notellm2_pl.data.synthetic import PRESETS, generate

    generate(tmp_path / "data", PRESETS["tiny"])
    module = tiny_module(make_ckpts(tmp_path / "ckpts"))
    dm = NoteDataModule(str(tmp_path / "data"), batch_size=4, eval_batch_size=8, max_tokens=64, val_pool_extra=5)
    seen: list[tuple[list[str], list[tuple[str, str]]]] = []
    recall = module._recall

    results: list[dict[str, float]] = []

    def spy(emb, idx, pool_ids, pairs):
        seen.append((list(pool_ids), list(pairs)))
        results.append(recall(emb, idx, pool_ids, pairs))
        return results[-1]

    monkeypatch.setattr(module, "_recall", spy)
    trainer = L.Trainer(accelerator="cpu", max_steps=2, val_check_interval=2, num_sanity_val_steps=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=dm)
    assert dm.val_split_used == "note_disjoint"
    given = load_split(tmp_path / "data", "val").pairs["all"]
    assert seen and seen[-1] == (dm.val_pool_ids, dm.val_pairs) and dm.val_pairs != given
    trained = pair_notes(dm.train_dataloader().dataset.pairs)
    assert not set(dm.val_pool_ids) & trained
    original = load_split(tmp_path / "data", "train").pairs["all"]
    assert set(dm.val_pairs) <= set(original)
    assert float(trainer.callback_metrics["val/recall"]) == pytest.approx(results[-1]["val/recall"])
