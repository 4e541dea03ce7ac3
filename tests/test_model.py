"""Splicing, read-out positions (basic and mICL), late fusion and the head on tiny real backbones."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from notellm2_pl.data.processing import NoteProcessor, collate
from notellm2_pl.data.tables import Note
from notellm2_pl.model.config import EncoderConfig
from notellm2_pl.model.encoder import NoteEncoder, splice
from notellm2_pl.model.late_fusion import LateFusionGate


@pytest.fixture(scope="module")
def backbones(tiny_ckpts):
    from notellm2_pl_backbones.hf_llm import HFCausalLM
    from notellm2_pl_backbones.hf_vision import CLIPVision

    return lambda kind="qwen2": (HFCausalLM(tiny_ckpts[kind]), CLIPVision(tiny_ckpts["clip"]))


def _notes(image_dir, n=4):
    return [Note(f"n{i}", "title " * (i + 1), ["tag"] * i, "word " * (3 * i), str(image_dir / f"img{i % 4}.png"))
            for i in range(n)]


def _encoder(backbones, connector, micl, late_fusion=False, kind="qwen2", splice_mode="insert"):
    llm, vision = backbones(kind)
    config = EncoderConfig(micl=micl, late_fusion=late_fusion, embed_dim=0, splice_mode=splice_mode)
    enc = NoteEncoder(llm, vision, connector, config)
    return enc.eval()


def _manual_rows(enc, batch, proc_items):
    """Build each row's spliced sequence by hand (no padding) and run the LLM on it alone."""
    vis = enc.vision(batch["pixel_values"])
    visual = enc.connector(vis.tokens)
    rows = []
    for i, item in enumerate(proc_items):
        ids = torch.tensor(item["input_ids"])
        emb = enc.llm.embed_tokens(ids[None])[0]
        p = item["image_pos"]
        seq = torch.cat([emb[:p], visual[i], emb[p:]])  # (L+Q, H)
        hidden = enc.llm(seq[None], torch.ones(1, seq.shape[0], dtype=torch.long)).hidden[0]
        rows.append((hidden, p, visual.shape[1], item))
    return rows


@pytest.mark.parametrize("num_tokens", [1, 3, 7])
@pytest.mark.parametrize("micl", [False, True])
def test_splice_positions_match_per_row_construction(backbones, image_dir, num_tokens, micl):
    from notellm2_pl_backbones.connectors import MLPConnector

    enc = _encoder(backbones, partial(MLPConnector, num_tokens_out=num_tokens), micl)
    proc = NoteProcessor(enc.note_format())
    items = [proc(n) for n in _notes(image_dir)]
    batch = collate(items)
    assert len({len(it["input_ids"]) for it in items}) > 1  # varying text lengths -> right padding
    with torch.no_grad():
        out = enc(batch)
        for i, (hidden, p, q, item) in enumerate(_manual_rows(enc, batch, items)):
            n = len(item["input_ids"])
            assert int(out.last_pos[i]) == n - 1 + q
            torch.testing.assert_close(out.e_m[i], torch.nn.functional.normalize(hidden[n - 1 + q], dim=-1),
                                       atol=1e-5, rtol=1e-4)
            assert out.image_span[i].tolist() == [p, p + q]
            if micl:
                k = item["marker_pos"]
                assert item["input_ids"][k] == enc.note_format().marker_id
                assert int(out.pos_v[i]) == k - 1 + q
                torch.testing.assert_close(out.e_v[i], torch.nn.functional.normalize(hidden[k - 1 + q], dim=-1),
                                           atol=1e-5, rtol=1e-4)


def test_replace_mode_llama_adds_no_image_tags(backbones, image_dir):
    from notellm2_pl_backbones.connectors import QFormerConnector

    conn = partial(QFormerConnector, num_query_tokens=4, num_layers=2, hidden_size=32, num_heads=2,
                   intermediate_size=64)
    enc = _encoder(backbones, conn, micl=True, kind="llama", splice_mode="replace")
    fmt = enc.note_format()
    assert fmt.image_open_ids == [] and fmt.image_close_ids == [] and fmt.marker_id is not None
    ids, image_pos, marker_pos = NoteProcessor(fmt).tokenize(_notes(image_dir)[0])
    assert ids[0] == fmt.tokenizer.bos_token_id  # the Llama-style tokenizer keeps its BOS
    assert 0 < image_pos < marker_pos


def test_new_tokens_are_mean_initialised(backbones):
    from notellm2_pl_backbones.connectors import MLPConnector

    llm, vision = backbones()
    before = llm.model.get_input_embeddings().weight.detach().clone()
    enc = NoteEncoder(llm, vision, partial(MLPConnector, num_tokens_out=2), EncoderConfig(micl=True, late_fusion=True))
    weight = enc.llm.model.get_input_embeddings().weight
    fmt = enc.note_format()
    for tid in fmt.image_open_ids + fmt.image_close_ids + [fmt.marker_id]:
        torch.testing.assert_close(weight[tid], before.mean(0))


def test_gate_formula():
    torch.manual_seed(0)
    gate = LateFusionGate(vision_dim=3, hidden_size=4)
    h, cls = torch.randn(2, 4), torch.randn(2, 3)
    out, z = gate(h, cls)
    v = cls @ gate.proj.weight.T
    z_ref = torch.sigmoid(torch.cat([h, v], -1) @ gate.gate.weight.T)
    torch.testing.assert_close(z, z_ref)
    torch.testing.assert_close(out, z_ref * h + (1 - z_ref) * v)
    assert gate.proj.bias is None and gate.gate.bias is None


def test_splice_function_keeps_mask_and_order():
    text = torch.arange(2 * 4, dtype=torch.float).view(2, 4, 1)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    visual = torch.full((2, 2, 1), -1.0)
    out, m = splice(text, mask, torch.tensor([1, 3]), visual)
    assert out[0, :, 0].tolist() == [0, -1, -1, 1, 2, 3]
    assert out[1, :, 0].tolist() == [4, 5, 6, -1, -1, 7]
    assert m.tolist() == [[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]]


def test_invalid_combinations_say_what_to_set(backbones):
    llm, vision = backbones()
    with pytest.raises(ValueError, match="model.encoder.micl: false"):
        NoteEncoder(llm, vision, None, EncoderConfig(micl=True, late_fusion=True))
    with pytest.raises(ValueError, match="model.encoder.late_fusion: false"):
        NoteEncoder(llm, None, None, EncoderConfig(micl=False, late_fusion=True))


@pytest.mark.parametrize(("settings", "expected"), [
    ({"splice_mode": "middle"}, "model.encoder.splice_mode must be one of insert, replace"),
    ({"prompt_preset": "fr"}, "model.encoder.prompt_preset must be one of en, zh"),
    ({"new_token_init": "zero"}, "model.encoder.new_token_init must be one of mean, normal"),
    ({"image_tokens": ["<img>"]}, "model.encoder.image_tokens takes two tokens"),
    ({"embed_dim": -1}, "model.encoder.embed_dim must be >= 0"),
    ({"feature_cache_dir": "/x"}, "model.encoder.feature_cache_dir needs model.encoder.feature_cache: true"),
])
def test_encoder_config_says_what_to_type(settings, expected):
    with pytest.raises(ValueError, match=expected):
        EncoderConfig(**settings)


def test_encoder_config_round_trips_through_plain_dicts():
    config = EncoderConfig(micl=False, image_tokens=["<a>", "</a>"], embed_dim=8)
    assert config.image_tokens == ("<a>", "</a>")
    plain = config.to_dict()
    assert plain["image_tokens"] == ["<a>", "</a>"] and EncoderConfig.from_value(plain) == config
    with pytest.raises(ValueError, match="model.encoder has no option"):
        EncoderConfig.from_value({"micll": True})


def test_late_fusion_only_uses_text_template(backbones, image_dir):
    from notellm2_pl_backbones.connectors import NoConnector

    llm, vision = backbones()
    enc = NoteEncoder(llm, vision, NoConnector, EncoderConfig(micl=False, late_fusion=True, embed_dim=16))
    fmt = enc.note_format()
    assert fmt.variant == "text" and fmt.image_config is not None
    out = enc(collate([NoteProcessor(fmt)(n) for n in _notes(image_dir)]))
    assert out.e_m.shape == (4, 16) and out.gate is not None
    torch.testing.assert_close(out.e_m.norm(dim=-1), torch.ones(4))


def _late_fusion_module(tiny_ckpts, llm_kwargs=None, **kwargs):
    """A NoteLLM2Module (late fusion, no connector) built on freshly loaded, i.e. eval-mode, tiny backbones."""
    from notellm2_pl_backbones.hf_llm import HFCausalLM
    from notellm2_pl_backbones.hf_vision import CLIPVision

    from notellm2_pl.training.module import NoteLLM2Module

    llm, vision = HFCausalLM(tiny_ckpts["qwen2"], **(llm_kwargs or {})), CLIPVision(tiny_ckpts["clip"])
    assert not any(m.training for m in llm.model.modules())  # what from_pretrained gives
    return NoteLLM2Module(llm, vision, None, EncoderConfig(micl=False, late_fusion=True, embed_dim=8), **kwargs)


def test_module_trains_the_llm_in_train_mode_and_keeps_a_frozen_tower_in_eval(tiny_ckpts):
    # from_pretrained hands back eval-mode models and Lightning never calls .train(): the module must set the modes,
    # or an LLM with dropout would silently train without it.
    module = _late_fusion_module(tiny_ckpts)
    assert all(m.training for m in module.encoder.llm.modules())
    assert not any(m.training for m in module.encoder.vision.modules())
    assert module.encoder.gate.training and module.encoder.head.training
    unfrozen = _late_fusion_module(tiny_ckpts, freeze_vision=False)
    assert all(m.training for m in unfrozen.encoder.vision.modules())  # a trained tower trains in train mode


def test_gradient_checkpointing_is_active_in_a_built_module(tiny_ckpts, image_dir):
    # transformers checkpoints a decoder layer only in train mode; an eval-mode LLM silently stored every activation.
    module = _late_fusion_module(tiny_ckpts, llm_kwargs={"gradient_checkpointing": True})
    llm = module.encoder.llm
    calls = []
    for layer in llm.layer_groups():
        inner = layer._gradient_checkpointing_func
        layer._gradient_checkpointing_func = lambda *a, _f=inner, **k: calls.append(1) or _f(*a, **k)
    proc = NoteProcessor(module.note_format())
    out = module(collate([proc(n) for n in _notes(image_dir)]))
    out.e_m.sum().backward()
    assert len(calls) == len(llm.layer_groups()) > 0


@pytest.mark.parametrize("key_positions", [None, 5])
def test_qformer_sees_token_order_only_with_key_positions(key_positions):
    from notellm2_pl_backbones.connectors import QFormerConnector

    torch.manual_seed(0)
    conn = QFormerConnector.tiny(key_positions=key_positions).eval()
    x, other = torch.randn(2, 5, 32), torch.randn(2, 5, 32)
    permuted = x[:, torch.tensor([4, 3, 2, 1, 0])]
    # how much reordering the vision tokens moves the output, relative to new tokens altogether
    ratio = float((conn(x) - conn(permuted)).abs().max() / (conn(x) - conn(other)).abs().max())
    assert (ratio > 1e-3) if key_positions else (ratio < 1e-4)
    if key_positions:
        with pytest.raises(ValueError, match="key_positions 4"):
            conn(torch.randn(2, 4, 32))
