"""Late-fusion strength chosen on validation: the gate's inference scale, its selection, and old checkpoints."""

from __future__ import annotations

import dataclasses

import lightning as L
import pytest
import torch
from _scale_helpers import make_ckpts, make_pairs, tiny_module
from test_method import _PairData

from notellm2_pl.data.processing import NoteProcessor
from notellm2_pl.model.config import EncoderConfig
from notellm2_pl.model.late_fusion import LateFusionGate
from notellm2_pl.training.fusion_scale import choose_scale, fusion_scale


def test_gate_scale_applies_in_eval_only_and_old_state_dicts_load() -> None:
    torch.manual_seed(0)
    gate = LateFusionGate(6, 4)
    h, cls = torch.randn(3, 4), torch.randn(3, 6)
    full, z = gate(h, cls)
    torch.testing.assert_close(full, z * h + (1 - z) * gate.proj(cls))
    gate.inference_scale.fill_(0.25)
    torch.testing.assert_close(gate(h, cls)[0], full)  # training mode: always the full gate
    gate.eval()
    torch.testing.assert_close(gate(h, cls)[0], h + 0.25 * (full - h))
    with fusion_scale(gate, 0.0):
        torch.testing.assert_close(gate(h, cls)[0], h)
    assert float(gate.inference_scale) == 0.25  # restored after the block
    old = {k: v for k, v in gate.state_dict().items() if k != "inference_scale"}  # saved before the buffer existed
    fresh = LateFusionGate(6, 4)
    fresh.load_state_dict(old)  # strict
    assert float(fresh.inference_scale) == 1.0


def test_choose_scale_prefers_recall_then_the_larger_scale() -> None:
    assert choose_scale({0.0: 0.4, 0.5: 0.6, 1.0: 0.5}) == 0.5
    assert choose_scale({0.0: 0.6, 1.0: 0.6}) == 1.0
    with pytest.raises(ValueError):
        choose_scale({})
    with pytest.raises(ValueError, match="fusion_scales"):
        EncoderConfig(late_fusion=False, fusion_scales=(0.0, 1.0))
    assert EncoderConfig(fusion_scales=[0, 1]).to_dict()["fusion_scales"] == [0.0, 1.0]


def test_validation_falls_back_to_the_llm_state_when_the_image_drowns_the_text(tmp_path) -> None:
    """Query and target share their text but not their image, and the gate is made to mix in a loud random image
    vector: validation picks scale 0 (the LLM state), logs every candidate, and the checkpoint carries the choice."""
    module = tiny_module(make_ckpts(tmp_path / "ckpts"), micl=True, late_fusion=True,
                         fusion_scales=(0.0, 0.5, 1.0)).eval()
    with torch.no_grad():
        torch.nn.init.normal_(module.encoder.gate.proj.weight, std=3.0)  # the image vector dominates the mix
    pairs = [(q, dataclasses.replace(t, title=q.title, topics=q.topics, content=q.content))
             for q, t in make_pairs(tmp_path / "images", 24)[2:]]  # distinct notes; partners share the text
    data = _PairData(NoteProcessor(module.note_format(), max_tokens=64), pairs[:8], pairs)
    trainer = L.Trainer(accelerator="cpu", precision="32-true", logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.validate(module, datamodule=data, verbose=False)
    got = {k: float(v) for k, v in trainer.callback_metrics.items()}
    at = {s: got[f"val/recall_at_scale/{s:g}"] for s in (0.0, 0.5, 1.0)}
    assert at[0.0] > at[1.0] + 0.2, got
    assert got["val/fusion_scale"] == 0.0 and got["val/recall"] == at[0.0]
    assert got["val/recall_full_gate"] == at[1.0]
    assert float(module.encoder.gate.inference_scale) == 0.0
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    state = torch.load(tmp_path / "m.ckpt", weights_only=True)["state_dict"]
    assert float(state["encoder.gate.inference_scale"]) == 0.0


def test_remixed_embeddings_equal_a_forward_at_that_scale(tmp_path) -> None:
    """Validation re-mixes the recorded gate state instead of a second forward: the same embeddings."""
    from _scale_helpers import collate_pair_notes

    from notellm2_pl.training.fusion_scale import gate_states

    module = tiny_module(make_ckpts(tmp_path / "ckpts"), micl=True, late_fusion=True).eval()
    with torch.no_grad():
        torch.nn.init.normal_(module.encoder.gate.proj.weight, std=1.0)
        batch = collate_pair_notes(module, make_pairs(tmp_path / "images", 3))
        with gate_states(module.encoder.gate) as states:
            module(batch)
        h, g = states[0]
        with fusion_scale(module.encoder.gate, 0.5):
            want = module(batch).e_m
    torch.testing.assert_close(module.encoder.project(h + 0.5 * (g - h)), want)
    assert len(states) == 2  # e_m then e_v (mICL): the first call is e_m's
