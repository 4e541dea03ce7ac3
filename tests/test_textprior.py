"""Text prior: tokenizer training, a short causal-LM pretraining run, atomic save and reload, CLI skip logic."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from notellm2_pl.commands import pretrain_text
from notellm2_pl.training import text_prior as textprior

TEXTS = [
    "Velmor Quistak backpack review: roomy, light and the zips feel solid.",
    "new haul today love this one",
    "今天的穿搭分享，这件外套真的很好看 #穿搭#",
    "Drygreand Briovysh scarf is my new daily go-to. Quality feels solid so far.",
    "周末去咖啡店，拿铁很香，推荐给大家。",
    "Faibryl Truklyfy notebook: the paper takes ink without bleeding.",
    "honest review of the Velmor Quistak backpack after a month of commuting",
    "小红书笔记：护肤心得，压缩为一个词：“",
] * 3

TINY = {
    "model_type": "qwen2", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
    "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 64, "tie_word_embeddings": True,
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("tp") / "prior"
    stats = textprior.pretrain_text_prior(
        TEXTS, out, config=TINY, vocab_size=400, max_steps=40, max_minutes=1.0, batch_size=4, seq_len=32, lr=5e-3
    )
    return out, stats


def test_tokenizer_handles_chinese_and_english():
    tok = textprior.train_tokenizer(TEXTS, vocab_size=400)
    for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
        assert getattr(tok, name) is not None
    for text in ("今天的穿搭，压缩为一个词：“", "Velmor Quistak backpack", "emoji ✨ and unseen 字"):
        ids = tok(text)["input_ids"]
        assert ids[0] == tok.bos_token_id
        assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.unk_token_id not in tok("完全没见过的字符串 zxqv")["input_ids"]  # byte-level: nothing is unknown


def test_loss_falls_and_checkpoint_reloads(trained):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, stats = trained
    assert stats["steps"] == 40
    assert stats["last_loss"] < stats["first_loss"] - 1.0
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.model_type == "qwen2"
    assert model.config.vocab_size == len(tok)
    assert model.config.tie_word_embeddings
    text = "今天的穿搭 Velmor Quistak"
    ids = tok(text)["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True) == text
    meta = json.loads((out / textprior.META_FILE).read_text())
    assert meta["settings"]["config"]["hidden_size"] == 32
    assert len(meta["loss_curve"]) > 1
    assert not list(out.parent.glob(f".{out.name}.*")), "temporary directories left behind"


def test_refuses_to_overwrite(trained):
    out, _ = trained
    with pytest.raises(FileExistsError, match="overwrite"):
        textprior.pretrain_text_prior(TEXTS, out, config=TINY, max_steps=1)


def test_config_forms(tmp_path):
    assert textprior.resolve_config(None)["model_type"] == "qwen2"
    assert textprior.resolve_config('{"model_type": "llama", "hidden_size": 64}')["model_type"] == "llama"
    path = tmp_path / "c.json"
    path.write_text(json.dumps(TINY))
    assert textprior.resolve_config(str(path)) == TINY
    with pytest.raises(ValueError, match="model_type"):
        textprior.resolve_config({"hidden_size": 8})


@pytest.mark.slow
def test_llama_config_and_time_bound(tmp_path):
    cfg = {**TINY, "model_type": "llama"}
    stats = textprior.pretrain_text_prior(TEXTS, tmp_path / "llama", config=cfg, vocab_size=300, max_steps=10_000,
                                          max_minutes=0.05, batch_size=2, seq_len=16)
    assert 0 < stats["steps"] < 10_000
    assert stats["model_type"] == "llama"


def test_cli_skips_finished_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pretrain_text, "note_texts", lambda root, train_pair_notes_only=False: list(TEXTS))
    args = ["--data", "unused", "--out", str(tmp_path / "p"), "--config", json.dumps(TINY), "--max-steps", "3",
            "--vocab-size", "300", "--batch-size", "2", "--seq-len", "16"]
    assert pretrain_text.main(args) == 0
    assert "first_loss" in capsys.readouterr().out
    assert pretrain_text.main(args) == 0
    assert "skipping" in capsys.readouterr().out
    assert pretrain_text.main([*args[:-2], "--seq-len", "8"]) == 2
    assert "--overwrite" in capsys.readouterr().out
    assert pretrain_text.main([*args[:-2], "--seq-len", "8", "--overwrite"]) == 0


def test_default_bound_is_steps_so_the_prior_is_reproducible(tmp_path):
    """No wall-clock bound by default: the same texts, settings and seed give byte-identical weights."""
    import inspect

    from safetensors.torch import load_file

    assert inspect.signature(textprior.pretrain_text_prior).parameters["max_minutes"].default is None
    runs = [textprior.pretrain_text_prior(TEXTS, tmp_path / f"p{i}", config=TINY, vocab_size=300, max_steps=6,
                                          batch_size=2, seq_len=16) for i in range(2)]
    assert [r["steps"] for r in runs] == [6, 6]
    a, b = (load_file(str(tmp_path / f"p{i}" / "model.safetensors")) for i in range(2))
    assert a.keys() == b.keys()
    assert all(bool((a[k] == b[k]).all()) for k in a)


def test_held_out_validation_notes_can_be_left_out_of_the_prior(tmp_path):
    """``--train-pair-notes-only``: no note of a held-out validation cluster is prior text."""
    import csv
    import dataclasses

    from notellm2_pl.data.synthetic import PRESETS, generate
    from notellm2_pl.training.text_prior.corpus import note_texts

    root = tmp_path / "d"
    generate(root, dataclasses.replace(PRESETS["tiny"], num_clusters=24, val_cluster_fraction=0.25), num_workers=0)
    with open(root / "notes_meta.csv", newline="", encoding="utf-8") as f:
        meta = list(csv.DictReader(f))
    with open(root / "notes_train.csv", newline="", encoding="utf-8") as f:
        text = {r["note_id"]: r["title"] for r in csv.DictReader(f)}
    held_out_titles = {text[r["note_id"]] for r in meta if r["split"] == "val" and r["is_short"] == "0"}
    everything, kept = note_texts(root), note_texts(root, train_pair_notes_only=True)
    assert held_out_titles and len(kept) < len(everything)
    assert all(t in " ".join(everything) for t in held_out_titles)
    assert not any(t in " ".join(kept) for t in held_out_titles)  # the long notes' product names never reach it
