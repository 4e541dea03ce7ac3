"""Information-flow saliency (docs/method.md#saliency) against direct autograd and naive loop references."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest
import torch

from notellm2_pl.analysis.saliency import SaliencyResult, closing_text, flow_scores, image_region, saliency_matrix
from notellm2_pl.analysis.saliency_model import batch_saliency, compute_saliency
from notellm2_pl.analysis.saliency_output import write_saliency
from notellm2_pl.data.processing import NoteProcessor, collate_pairs
from notellm2_pl.data.tables import Note


def _module(tiny_ckpts, micl=True, late_fusion=True, splice_mode="insert", kind="qwen2", **kwargs):
    from notellm2_pl_backbones.connectors import QFormerConnector
    from notellm2_pl_backbones.hf_llm import HFCausalLM
    from notellm2_pl_backbones.hf_vision import CLIPVision

    from notellm2_pl.model.config import EncoderConfig
    from notellm2_pl.training.module import NoteLLM2Module

    torch.manual_seed(0)
    conn = partial(QFormerConnector, num_query_tokens=3, num_layers=2, hidden_size=32, num_heads=2,
                   intermediate_size=64)
    encoder = EncoderConfig(micl=micl, late_fusion=late_fusion, embed_dim=16, splice_mode=splice_mode, **kwargs)
    return NoteLLM2Module(HFCausalLM(tiny_ckpts[kind]), CLIPVision(tiny_ckpts["clip"]), conn, encoder=encoder).eval()


def _pair_batch(module, image_dir, n_pairs=3):
    proc = NoteProcessor(module.note_format())
    notes = [Note(f"n{i}", "title " * (i + 1), ["tag"] * (i % 3), "word " * (2 * i + 1),
                  str(image_dir / f"img{i % 4}.png")) for i in range(2 * n_pairs)]
    return collate_pairs([(proc(notes[i]), proc(notes[i + n_pairs])) for i in range(n_pairs)])


@pytest.mark.parametrize("micl", [False, True])
def test_saliency_equals_direct_autograd(tiny_ckpts, image_dir, micl):
    """I_l from the analysis == |sum_heads A * dL/dA| computed directly with retain_grad + backward."""
    from notellm2_pl.model.losses import contrastive_loss

    module = _module(tiny_ckpts, micl=micl)
    batch = _pair_batch(module, image_dir)
    flags = [p.requires_grad for p in module.parameters()]
    mats, out = batch_saliency(module, batch)
    assert [p.requires_grad for p in module.parameters()] == flags  # restored
    assert all(p.grad is None for p in module.parameters())  # nothing accumulated, nothing stepped
    assert len(mats) == module.encoder.llm.num_layers

    # direct reference, written independently: backward() through the whole graph, gradient of one layer's A
    for p in module.parameters():
        p.requires_grad_(True)
    ref_out = module.encoder(batch, output_attentions=True)
    layer = 1
    attn = ref_out.attentions[layer]
    attn.retain_grad()
    ids = batch["note_hash"]
    loss = contrastive_loss(ref_out.e_m, ref_out.e_m, 0, module.tau.exp(), ids, ids)
    loss.backward()
    direct = (attn * attn.grad).sum(dim=1).abs()  # (B, T, T)
    direct = torch.nan_to_num(direct) * (1 - torch.eye(direct.shape[-1]))
    assert direct.abs().sum() > 0
    torch.testing.assert_close(mats[layer], direct.detach(), rtol=1e-4, atol=1e-10)
    torch.testing.assert_close(out.last_pos, ref_out.last_pos)


def test_saliency_keeps_a_frozen_tower_frozen_for_the_feature_cache(tiny_ckpts, image_dir, tmp_path):
    """A model trained with the feature cache (frozen tower) gives the same saliency, served from the cache."""
    plain = _module(tiny_ckpts)
    cached = _module(tiny_ckpts, feature_cache=True, feature_cache_dir=str(tmp_path / "store"))
    batch = _pair_batch(plain, image_dir)
    ref, _ = batch_saliency(plain, batch)
    for _ in range(2):  # the second pass reads the cache
        mats, _ = batch_saliency(cached, batch)
        assert not any(p.requires_grad for p in cached.encoder.vision.parameters())
        for a, b in zip(mats, ref):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-10)
    assert len(cached.encoder.feature_cache) > 0


def _naive_flows(sal: np.ndarray, t: int, v: set[int]) -> tuple[float, float, float]:
    """docs/method.md#saliency step 5 with explicit loops."""
    nv = len(v)
    s_v = sum(sal[t, j] for j in v) / nv if nv else 0.0
    s_t = sum(sal[t, j] for j in range(t) if j not in v) / (t - nv)
    total = sum(sal[i, j] for i in range(t + 1) for j in range(t + 1))
    s_o = (total - nv * s_v - (t - nv) * s_t) / (t * (t + 1) / 2 - t)
    return s_v, s_t, s_o


def test_flow_scores_match_naive_loops():
    g = torch.Generator().manual_seed(0)
    b, length = 4, 12
    sal = torch.rand(b, length, length, generator=g).tril(-1)  # causal, zero diagonal
    sal[:, :, :] += torch.rand(b, length, length, generator=g).triu(1)  # junk above the diagonal: must be ignored
    sal = sal.tril(-1)
    target = torch.tensor([11, 9, 7, 11])
    start, end = torch.tensor([2, 1, 0, 0]), torch.tensor([5, 4, 3, 0])  # last row: no image region
    got = flow_scores(sal, target, start, end).numpy()
    for i in range(b):
        v = set(range(int(start[i]), int(end[i])))
        np.testing.assert_allclose(got[i], _naive_flows(sal[i].numpy(), int(target[i]), v), rtol=1e-5)


def test_saliency_matrix_zero_diagonal_and_nan():
    a = torch.ones(1, 2, 3, 3)
    g = torch.full((1, 2, 3, 3), -1.0)
    g[0, 0, 0, 1] = float("nan")
    m = saliency_matrix(a, g)
    assert torch.all(m.diagonal(dim1=1, dim2=2) == 0)
    assert m[0, 0, 1] == 0 and m[0, 1, 0] == 2


@pytest.mark.parametrize("micl,splice_mode", [(False, "insert"), (False, "replace"), (True, "insert")])
def test_image_region_from_tracked_positions(tiny_ckpts, image_dir, micl, splice_mode):
    module = _module(tiny_ckpts, micl=micl, splice_mode=splice_mode, kind="qwen2")
    batch = _pair_batch(module, image_dir)
    fmt = module.note_format()
    with torch.no_grad():
        out = module.encoder(batch)
    start, end = image_region(module.encoder, batch, out)
    q = 3
    for i in range(batch["input_ids"].shape[0]):
        p = int(batch["image_pos"][i])
        if splice_mode == "insert":  # open tag, visual tokens, close tag
            assert int(start[i]) == p - len(fmt.image_open_ids) == p - 1
        else:
            assert int(start[i]) == p
        if not micl:
            assert int(end[i]) == p + q + len(fmt.image_close_ids)
            continue
        # through pos_v, the marker and the tokens spelling the closing '".' of the compression segment
        m = int(batch["marker_pos"][i])
        assert int(out.pos_v[i]) + 1 == m + q  # the marker, spliced
        n_close = int(end[i]) - (m + q + 1)
        closing = fmt.tokenizer.decode(batch["input_ids"][i, m + 1: m + 1 + n_close].tolist()).replace(" ", "")
        assert closing.startswith(closing_text("en")) and n_close >= 1
        shorter = fmt.tokenizer.decode(batch["input_ids"][i, m + 1: m + n_close].tolist()).replace(" ", "")
        assert not shorter.startswith(closing_text("en"))
    assert closing_text("zh") == "”。"


def test_compute_saliency_normalised_and_written(tiny_ckpts, image_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    module = _module(tiny_ckpts, micl=True)
    batches = [_pair_batch(module, image_dir), _pair_batch(module, image_dir, n_pairs=2)]
    res = compute_saliency(module, batches, num_batches=5, label="tiny")
    assert res.num_batches == 2 and res.num_notes == 10
    assert res.scores.shape == (module.encoder.llm.num_layers, 3)
    np.testing.assert_allclose(res.scores.sum(1), 1.0, rtol=1e-6)
    assert (res.scores[:, 0] > 0).all()  # the image region receives some flow
    path = write_saliency(res, tmp_path)
    back = SaliencyResult.from_dict(json.loads(path.read_text()))
    np.testing.assert_allclose(back.scores, res.scores)
    assert (tmp_path / "saliency.png").stat().st_size > 0
    ea = EventAccumulator(str(tmp_path / "tb"))
    ea.Reload()
    vals = [e.value for e in ea.Scalars("saliency/S_v")]
    np.testing.assert_allclose(vals, res.scores[:, 0], rtol=1e-6)
