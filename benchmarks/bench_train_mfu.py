"""Training throughput and model-FLOP utilisation (MFU) of a SmolLM2-135M-shaped encoder step on CPU.

Measures, in one run:

1. this machine's fp32 matmul peak (best of square GEMMs, ``torch.mm``, same thread count);
2. one training step of a randomly initialised Llama with SmolLM2-135M's shape (hidden 576, 30 layers, 9 heads,
   3 KV heads, intermediate 1536, vocab 49152): forward of ``(B, T)`` tokens, last-token read-out, a linear head,
   the in-batch contrastive loss (``notellm2_pl.model.losses.contrastive_loss``), backward, AdamW step;
3. the FLOPs of that step, counted by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls/attention; the
   optimizer's elementwise work is not counted, as usual for MFU);
4. notes/s and MFU = achieved FLOP/s / measured peak.

Run by hand (not a test)::

    python benchmarks/bench_train_mfu.py --batch 16 --seq 128 --steps 5
    python benchmarks/bench_train_mfu.py --batch 16 --seq 128 --steps 5 --no-grad-ckpt --threads 2

Prints one JSON line with every figure and the 1-minute load average (other jobs share the cores).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import torch
import torch.nn.functional as F

SMOLLM2_135M = {
    "hidden_size": 576,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "intermediate_size": 1536,
    "vocab_size": 49152,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
}


def matmul_peak(n: int = 2048, reps: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """Best achieved FLOP/s of an ``n x n`` GEMM (the practical peak of this machine at this thread count)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = 0.0
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def build(args: argparse.Namespace) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Parameter, Any]:
    """Random-init SmolLM2-shaped decoder (no LM head), a 64-d head, the temperature and AdamW."""
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    cfg = LlamaConfig(**SMOLLM2_135M)
    cfg._attn_implementation = args.attn
    model = LlamaModel(cfg)
    if args.grad_ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    head = torch.nn.Linear(cfg.hidden_size, 64, bias=False)
    tau = torch.nn.Parameter(torch.tensor(3.0))
    params = list(model.parameters()) + list(head.parameters()) + [tau]
    if args.freeze_embeddings:  # the embedding matrix is 28M of the 135M parameters; its Adam update is costly
        model.embed_tokens.weight.requires_grad_(False)
        params = [p for p in params if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.001, foreach=True)
    return model, head, tau, opt


def step(model, head, tau, opt, ids: torch.Tensor, mask: torch.Tensor) -> float:
    """One contrastive training step; returns the loss."""
    from notellm2_pl.model.losses import contrastive_loss

    hidden = model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state  # (B, T, H)
    last = mask.sum(1) - 1
    e = F.normalize(head(hidden[torch.arange(ids.shape[0]), last]), dim=-1)  # (B, 64)
    loss = contrastive_loss(e, e, 0, tau.exp())
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16, help="notes per step (even: pairs)")
    p.add_argument("--seq", type=int, default=128, help="tokens per note (no padding: all rows full)")
    p.add_argument("--steps", type=int, default=5, help="timed steps (after 1 warm-up step)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    p.add_argument("--grad-ckpt", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--freeze-embeddings", action=argparse.BooleanOptionalAction, default=False)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    peak = matmul_peak()
    model, head, tau, opt = build(args)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, SMOLLM2_135M["vocab_size"], (args.batch, args.seq), generator=gen)
    mask = torch.ones_like(ids)
    step(model, head, tau, opt, ids, mask)  # warm-up (allocations, Adam state)

    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step(model, head, tau, opt, ids, mask)
    flops = counter.get_total_flops()

    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step(model, head, tau, opt, ids, mask)
        times.append(time.perf_counter() - t0)
    t = sorted(times)[len(times) // 2]  # median
    n_params = sum(p.numel() for p in model.parameters())
    res = {
        "bench": "train_mfu",
        "shape": "SmolLM2-135M (Llama)",
        "params": n_params,
        "batch": args.batch,
        "seq": args.seq,
        "threads": torch.get_num_threads(),
        "attn": args.attn,
        "grad_ckpt": args.grad_ckpt,
        "freeze_embeddings": args.freeze_embeddings,
        "step_s_median": round(t, 3),
        "step_s_all": [round(x, 3) for x in times],
        "notes_per_s": round(args.batch / t, 2),
        "tokens_per_s": round(args.batch * args.seq / t, 1),
        "step_gflop": round(flops / 1e9, 1),
        "gflop_per_token_6N": round(6 * n_params / 1e9, 3),
        "achieved_gflops": round(flops / t / 1e9, 1),
        "peak_fp32_matmul_gflops": round(peak / 1e9, 1),
        "mfu": round(flops / t / peak, 3),
        "loadavg_1m": os.getloadavg()[0],
        "torch": torch.__version__,
    }
    print(json.dumps(res))


if __name__ == "__main__":
    main()
