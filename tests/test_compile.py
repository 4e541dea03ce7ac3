"""``model.compile_llm``: layer-wise torch.compile gives the eager loss and gradients and keeps checkpoints."""

from __future__ import annotations

import pytest
import torch
from _scale_helpers import assert_grads_close, collate_pair_notes, grads, make_ckpts, make_pairs, tiny_module


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("compile")
    return {"plain": make_ckpts(root / "plain"), "images": root / "images"}


def _loss_and_grads(module, batch):
    module.zero_grad(set_to_none=True)
    loss, _ = module.compute_loss(batch)
    loss.backward()
    return loss.detach(), grads(module)


@pytest.mark.slow
def test_compiled_layers_match_eager(ckpts):
    # aot_eager traces forward and backward through AOTAutograd like inductor does, without C++ code generation
    # (which takes minutes on 2 cores); inductor itself is measured in benchmarks/bench_feature_cache.py.
    eager = tiny_module(ckpts["plain"]).eval()
    compiled = tiny_module(ckpts["plain"], compile_llm="aot_eager").eval()
    assert all(getattr(layer, "_compiled_call_impl", None) is not None
               for layer in compiled.encoder.llm.layer_groups())
    assert eager.state_dict().keys() == compiled.state_dict().keys()  # no "_orig_mod." prefixes
    torch.testing.assert_close(compiled.state_dict(), eager.state_dict())
    for n_pairs in (6, 4):  # a second batch shape reuses the dynamic-shape graph
        batch = collate_pair_notes(eager, make_pairs(ckpts["images"], n_pairs))
        loss_ref, g_ref = _loss_and_grads(eager, batch)
        loss, g = _loss_and_grads(compiled, batch)
        torch.testing.assert_close(loss, loss_ref, atol=1e-5, rtol=1e-5)
        assert_grads_close(g, g_ref, atol=1e-5, rtol=1e-4)


def test_compile_flag_is_off_by_default(ckpts):
    module = tiny_module(ckpts["plain"])
    assert all(getattr(layer, "_compiled_call_impl", None) is None for layer in module.encoder.llm.layer_groups())
