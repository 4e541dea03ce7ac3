"""The FLOP bookkeeping behind the MFU figures of ``benchmarks/bench_gpu.py`` (docs/scaling.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode, flop_registry

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_run_specs(bench):
    assert bench.parse_spec("32") == {"pairs": 32, "grad_ckpt": False, "grad_cache_chunk": None}
    assert bench.parse_spec("512,ckpt,gc=256") == {"pairs": 512, "grad_ckpt": True, "grad_cache_chunk": 256}
    with pytest.raises(SystemExit, match="must be even"):
        bench.parse_spec("64,gc=7")
    with pytest.raises(SystemExit, match="options are"):
        bench.parse_spec("64,fast")


@pytest.mark.parametrize("op", ["_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention"])
def test_gqa_attention_flops_follow_torchs_mha_formula(bench, op):
    b, h, sq, sk, d = 2, 4, 10, 12, 8
    q, k = torch.empty(b, h, sq, d), torch.empty(b, h, sk, d)
    fwd = getattr(torch.ops.aten, op).default
    bwd = getattr(torch.ops.aten, op + "_backward").default
    out = torch.empty(b, h, sq, d)
    want_fwd = flop_registry[fwd._overloadpacket](q, k, k, None, False, out_val=(out,)) if "efficient" in op else \
        flop_registry[fwd._overloadpacket](q, k, k, out_val=(out,))
    assert bench._attention_flops(fwd, (q, k, k)) == want_fwd == 4 * b * h * sq * sk * d
    # backward: (grad_out, query, key, value, out, ...) in every fused variant
    assert bench._attention_flops(bwd, (out, q, k, k, out)) == want_fwd * 5 // 2
    # grouped-query shapes (fewer K/V heads), which torch's formula rejects, count as the expanded MHA
    k_gqa = torch.empty(b, 2, sk, d)
    assert bench._attention_flops(fwd, (q, k_gqa, k_gqa)) == want_fwd


def test_flop_count_matches_torchs_counter_on_a_plain_step(bench):
    torch.manual_seed(0)
    layer = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 4))
    x = torch.randn(8, 16)

    def step():
        layer(x).square().sum().backward()

    ref = FlopCounterMode(display=False)
    with ref:
        step()
    assert bench._flops(step) == ref.get_total_flops() == 3 * 2 * 8 * (16 * 32 + 32 * 4) - 2 * 8 * 16 * 32
