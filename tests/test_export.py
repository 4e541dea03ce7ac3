"""Embedding export (prediction writer shards), model export -> reload -> same embeddings, and the Embedder API."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from notellm2_pl.plugins.testing import write_tiny_recipe


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny recipe, its module (new parts perturbed, as if trained), and the test notes."""
    from notellm2_pl.data.tables import load_split
    from notellm2_pl.inference.factory import build_from_config

    root = tmp_path_factory.mktemp("tiny")
    cfg, data = write_tiny_recipe(root)
    module, model_cfg, data_cfg = build_from_config(cfg)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.encoder.head.parameters():
            p.add_(0.01 * torch.randn_like(p))
    notes = load_split(data, "test").notes
    return {"root": root, "cfg": cfg, "data": data, "module": module.eval(), "model_cfg": model_cfg,
            "data_cfg": data_cfg, "notes": [notes[k] for k in sorted(notes)]}


def test_export_reload_gives_same_embeddings(tiny, tmp_path):
    from safetensors import safe_open

    from notellm2_pl.inference.embedder import Embedder
    from notellm2_pl.inference.export import export_model

    out = export_model(tiny["module"], tiny["model_cfg"], tiny["data_cfg"], tmp_path / "export")
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors", "tokenizer"}
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["llm"]["class_path"].endswith("HFCausalLM") and cfg["data"]["max_tokens"] == 96
    assert list(cfg["referenced_parts"]) == ["vision"]  # frozen tower: a reference, not a copy
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert not any(k.startswith("encoder.vision.") for k in keys)
    assert any(k.startswith("encoder.llm.") for k in keys) and any(k.startswith("encoder.connector.") for k in keys)
    from transformers import AutoTokenizer

    assert "<IMG_EMB>" in AutoTokenizer.from_pretrained(out / "tokenizer").get_vocab()

    before = Embedder(tiny["module"], max_tokens=96).embed_all(tiny["notes"], batch_size=8, progress=False)
    after = Embedder.from_pretrained(out).embed_all(tiny["notes"], batch_size=8, progress=False)
    assert set(before) == set(after) == {"e_m", "e_v"}
    for k in before:
        np.testing.assert_allclose(after[k], before[k], atol=1e-5, rtol=0)


def test_embedder_api_accepts_dicts_and_batches_consistently(tiny):
    from notellm2_pl.inference.embedder import Embedder

    emb = Embedder(tiny["module"], max_tokens=96)
    notes = tiny["notes"][:7]
    dicts = [{"title": n.title, "topics": "|".join(n.topics), "content": n.content, "image": n.image} for n in notes]
    a = emb.embed(notes, batch_size=3, progress=True)
    b = emb.embed(dicts, batch_size=16, progress=False)
    assert a.shape == (7, 16) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    text_only = emb.embed(notes[:2], probe="only_text", progress=False)
    assert not np.allclose(text_only, a[:2])
    with pytest.raises(KeyError, match="e_x"):
        emb.embed(notes, key="e_x")


def test_export_command_from_checkpoint(tiny, tmp_path, capsys):
    from notellm2_pl.commands.export import main as cli_main
    from notellm2_pl.inference.embedder import Embedder

    ckpt = tmp_path / "model.ckpt"
    unrecorded = {k: v for k, v in tiny["module"].hparams.items() if k not in ("llm", "vision", "connector")}
    torch.save({"state_dict": tiny["module"].state_dict(), "hyper_parameters": unrecorded}, ckpt)
    with pytest.raises(ValueError, match="--config"):  # a checkpoint that does not record its backbones
        cli_main(["--ckpt_path", str(ckpt), "--out", str(tmp_path / "x")])
    assert cli_main(["--config", str(tiny["cfg"]), "--ckpt_path", str(ckpt), "--out", str(tmp_path / "exp")]) == 0
    assert "Embedder.from_pretrained" in capsys.readouterr().out
    got = Embedder.from_pretrained(tmp_path / "exp").embed(tiny["notes"][:5], progress=False)
    want = Embedder(tiny["module"], max_tokens=96).embed(tiny["notes"][:5], progress=False)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_export_llm_only_loads_as_the_llm_of_a_later_recipe(tiny, tmp_path, capsys):
    from notellm2_pl_backbones.hf_llm import HFCausalLM

    from notellm2_pl.commands.export import main as cli_main

    llm = tiny["module"].encoder.llm
    ckpt = tmp_path / "model.ckpt"
    with torch.no_grad():  # as if fine-tuned: the exported decoder must be this one, not the recipe's prior
        trained = {k: v + 0.01 * torch.randn_like(v) for k, v in tiny["module"].state_dict().items()}
    torch.save({"state_dict": trained}, ckpt)
    out = tmp_path / "llm"
    assert cli_main(["--config", str(tiny["cfg"]), "--ckpt_path", str(ckpt), "--out", str(out), "--llm_only"]) == 0
    assert f"--model.llm.init_args.pretrained {out}" in capsys.readouterr().out
    assert (out / "config.json").is_file() and not (out / "tokenizer").exists()  # a plain save_pretrained layout
    reloaded = HFCausalLM(pretrained=str(out))
    assert "<IMG_EMB>" in reloaded.tokenizer.get_vocab()  # the tokens the recipe added travel with it
    got = reloaded.model.state_dict()
    assert set(got) == set(llm.model.state_dict())
    for k, v in got.items():
        torch.testing.assert_close(v, trained[f"encoder.llm.model.{k}"], atol=0, rtol=0)
    with pytest.raises(FileExistsError):
        cli_main(["--config", str(tiny["cfg"]), "--ckpt_path", str(ckpt), "--out", str(out), "--llm_only",
                  "--no_overwrite"])


def test_llm_plugins_without_save_pretrained_say_so():
    from notellm2_pl.plugins.contract import LLMBackbone

    with pytest.raises(NotImplementedError, match="--llm_only"):
        LLMBackbone.save_pretrained(object(), "x")  # the contract's default, as a plugin that keeps it


def test_prediction_writer_shards_merge_to_the_right_ids(tiny, tmp_path):
    import lightning as L

    from notellm2_pl.data.datamodule import NoteDataModule
    from notellm2_pl.inference.embedder import Embedder
    from notellm2_pl.retrieval.prediction_writer import EmbeddingWriter, load_embeddings, read_meta

    out = tmp_path / "emb"
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, callbacks=[EmbeddingWriter(str(out), shard_rows=7)])
    dm = NoteDataModule(root=str(tiny["data"]), eval_batch_size=4, max_tokens=96)
    trainer.predict(tiny["module"], datamodule=dm, return_predictions=False)
    meta = read_meta(out)
    assert meta["keys"] == ["e_m", "e_v"] and meta["probe"] == "full" and meta["world_size"] == 1
    assert len(list((out / "shards").glob("*.ids.json"))) > 1  # several shards
    ids, e_m = load_embeddings(out, "e_m")
    assert ids == [n.note_id for n in tiny["notes"]]
    want = Embedder(tiny["module"], max_tokens=96).embed_all(tiny["notes"], batch_size=4, progress=False)
    np.testing.assert_allclose(e_m, want["e_m"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(load_embeddings(out, "e_v")[1], want["e_v"], atol=1e-5, rtol=0)


def test_shards_of_several_ranks_merge_and_drop_padding(tmp_path):
    from notellm2_pl.retrieval.prediction_writer import load_embeddings, write_done, write_json, write_shard

    write_json(tmp_path / "meta.json", {"format": "notellm2-embeddings", "world_size": 2, "keys": ["e_m"]})
    rows = {f"n{i}": np.full(4, i, np.float32) for i in range(5)}
    # distributed sampler: rank 0 gets n0, n2, n4; rank 1 gets n1, n3 and a padding copy of n0
    for rank, parts in {0: [["n4", "n0"], ["n2"]], 1: [["n1", "n3", "n0"]]}.items():
        for part, ids in enumerate(parts):
            write_shard(tmp_path, rank, part, ids, {"e_m": np.stack([rows[i] for i in ids])})
        if rank == 0:
            with pytest.raises(FileNotFoundError, match="Rank 0"):
                load_embeddings(tmp_path)
        write_done(tmp_path, rank, len(parts), sum(map(len, parts)))
    ids, emb = load_embeddings(tmp_path)
    assert ids == ["n0", "n1", "n2", "n3", "n4"]
    np.testing.assert_array_equal(emb[:, 0], [0, 1, 2, 3, 4])
    with pytest.raises(KeyError, match="e_v"):
        load_embeddings(tmp_path, "e_v")
    assert not list(Path(tmp_path).rglob("*.tmp"))


def test_embedder_is_the_lazy_public_api():
    import notellm2_pl
    from notellm2_pl import Embedder
    from notellm2_pl.inference import embedder

    assert Embedder is embedder.Embedder is notellm2_pl.Embedder
