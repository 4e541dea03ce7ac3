"""GradCache: chunked encoding gives the plain large-batch loss and gradient."""

from __future__ import annotations

import pytest
import torch
from _scale_helpers import assert_grads_close, collate_pair_notes, grads, make_ckpts, make_pairs, tiny_module

from notellm2_pl.training.gradcache import grad_cache_backward, split_batch


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("gc")
    return {"plain": make_ckpts(root / "plain"), "images": root / "images"}


@pytest.fixture(scope="module")
def dropout_ckpts(tmp_path_factory):
    # attention dropout on (besides the Q-Former's 0.1): the replay must reproduce the masks
    return make_ckpts(tmp_path_factory.mktemp("gc_drop"), {"attention_dropout": 0.3})


def _plain(module, batch):
    module.zero_grad(set_to_none=True)
    loss, _ = module.compute_loss(batch)
    loss.backward()
    return loss.detach(), grads(module)


def _as_double(batch: dict) -> dict:
    return {k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in batch.items()}


@pytest.mark.parametrize("chunk", [3, 5, 24])
def test_grad_cache_equals_large_batch_gradient(ckpts, chunk):
    """In float64, so that the comparison tests the algorithm, not the float32 summation order of a CPU's GEMMs."""
    module = tiny_module(ckpts["plain"]).eval().double()  # dropout off: the plain pass draws other masks
    batch = _as_double(collate_pair_notes(module, make_pairs(ckpts["images"], 12)))  # 24 notes
    loss_ref, g_ref = _plain(module, batch)
    module.zero_grad(set_to_none=True)
    loss, parts = grad_cache_backward(module, batch, chunk, verify=True)
    torch.testing.assert_close(loss, loss_ref, atol=1e-6, rtol=1e-5)
    assert set(parts) == {"loss_m", "loss_v", "gate_mean"}
    g = grads(module)
    assert float(g["tau"].abs()) > 0
    assert_grads_close(g, g_ref, atol=1e-12, rtol=1e-9)


def test_grad_cache_replays_dropout(ckpts, dropout_ckpts):
    """With dropout active, every chunk's re-encoding matches its no-grad pass (RNG state restored)."""
    module = tiny_module(dropout_ckpts)
    batch = collate_pair_notes(module, make_pairs(ckpts["images"], 6))
    torch.manual_seed(1)
    a = module(batch).e_m
    torch.manual_seed(2)
    b = module(batch).e_m
    assert not torch.allclose(a, b)  # dropout really is on
    grad_cache_backward(module, batch, 4, verify=True)  # raises if a replay differs
    assert all(p.grad is not None for p in module.parameters() if p.requires_grad)


def test_split_batch_slices_rows_only():
    batch = {"input_ids": torch.zeros(5, 7), "note_ids": list("abcde"), "scalar": torch.tensor(1.0)}
    chunks = split_batch(batch, 2)
    assert [c["input_ids"].shape[0] for c in chunks] == [2, 2, 1]
    assert chunks[2]["note_ids"] == ["e"] and chunks[1]["scalar"] is batch["scalar"]
    with pytest.raises(ValueError):
        split_batch(batch, 0)


def test_module_switches_to_manual_optimisation_and_refuses_deepspeed(ckpts):
    from types import SimpleNamespace

    from notellm2_pl.training.gradcache import check_strategy

    module = tiny_module(ckpts["plain"], grad_cache_chunk=4)
    assert module.automatic_optimization is False
    assert tiny_module(ckpts["plain"]).automatic_optimization is True

    class DeepSpeedStrategy:
        pass

    with pytest.raises(ValueError, match="DeepSpeed"):
        check_strategy(SimpleNamespace(strategy=DeepSpeedStrategy()))


@pytest.mark.slow
def test_grad_cache_fit_runs_in_a_trainer(ckpts, tmp_path):
    """Two manual-optimisation steps in a real Trainer: parameters move, the scheduler steps, the loss is logged."""
    import lightning as L
    from torch.utils.data import DataLoader

    module = tiny_module(ckpts["plain"], grad_cache_chunk=4, warmup_ratio=0.0)
    pairs = make_pairs(ckpts["images"], 12)
    batches = [collate_pair_notes(module, pairs[:6]), collate_pair_notes(module, pairs[6:])]
    before = module.encoder.head.weight.detach().clone()
    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        limit_val_batches=0)
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    assert trainer.global_step == 2
    assert not torch.equal(before, module.encoder.head.weight)
    assert "train/loss" in trainer.callback_metrics


@pytest.mark.parametrize("micl", [True, False])
def test_loss_parts_report_the_gate_with_and_without_micl(ckpts, micl):
    module = tiny_module(ckpts["plain"], micl=micl).eval()
    batch = collate_pair_notes(module, make_pairs(ckpts["images"], 4))
    out = module(batch)
    _, parts = module.loss_from_output(out, batch["note_hash"])
    assert set(parts) == ({"loss_m", "loss_v", "gate_mean"} if micl else {"loss_m", "gate_mean"})
    torch.testing.assert_close(parts["gate_mean"], out.gate.mean())
    assert not parts["gate_mean"].requires_grad  # logged only, never part of the loss
