"""bf16 training step time and MFU of NoteLLM-2 at paper-like scale: Qwen2.5-0.5B-shaped LLM + SigLIP-base tower.

Random weights with the real architectures (written with ``save_pretrained`` and loaded through the same
``HFCausalLM`` / ``SiglipVision`` plugins a recipe uses), a 6-layer Q-Former with 16 queries, mICL + late fusion,
frozen tower, the full NoteLLM2Module loss (``compute_loss``), backward and AdamW step under ``torch.autocast``
bf16. FLOPs are counted with ``FlopCounterMode``; MFU is reported against both the measured bf16 GEMM peak of the
card and an optional nominal peak (``--nominal-tflops``, e.g. 989 for H100 SXM dense bf16).

The LLM's vocabulary is the small test tokenizer's (embedding lookups cost no FLOPs, so this does not change the
compute; it saves ~0.5 GB). Texts are random words cut to ``--tokens`` tokens.

Run on a GPU::

    python benchmarks/bench_gpu.py --batch 32 --steps 10 --nominal-tflops 989
    python benchmarks/bench_gpu.py --batch 32 --steps 10 --grad-cache-chunk 16

Dry run on CPU with tiny shapes (checks the script end to end, fp32)::

    python benchmarks/bench_gpu.py --dry-run
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from notellm2_pl.testing import TINY_WORDS

QWEN25_05B = {
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": True,
}
SIGLIP_BASE = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "image_size": 224,
    "patch_size": 16,
}
QFORMER = {"num_query_tokens": 16, "num_layers": 6, "hidden_size": 768, "num_heads": 12, "intermediate_size": 3072}
TINY_LLM = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 1024,
    "tie_word_embeddings": True,
}
TINY_VISION = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
}
TINY_QFORMER = {"num_query_tokens": 4, "num_layers": 2, "hidden_size": 32, "num_heads": 2, "intermediate_size": 64}
WORDS = TINY_WORDS


def bf16_peak(device: torch.device, n: int = 8192, reps: int = 10) -> float:
    """Best achieved bf16 GEMM FLOP/s on ``device``."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    torch.mm(a, b)
    torch.cuda.synchronize(device)
    best = 0.0
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        torch.cuda.synchronize(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def build_module(root: Path, dry: bool, grad_ckpt: bool, grad_cache_chunk: int | None) -> Any:
    """Write random checkpoints of the benchmark shapes and build a NoteLLM2Module on them."""
    import transformers as tf
    from notellm2_pl_backbones.connectors import QFormerConnector
    from notellm2_pl_backbones.hf_llm import HFCausalLM
    from notellm2_pl_backbones.hf_vision import SiglipVision

    from notellm2_pl.module import NoteLLM2Module
    from notellm2_pl.testing import make_tiny_llm_checkpoint

    llm_path = make_tiny_llm_checkpoint(root / "llm", "qwen2", **(TINY_LLM if dry else QWEN25_05B))
    vcfg = TINY_VISION if dry else SIGLIP_BASE
    torch.manual_seed(0)
    tf.SiglipVisionModel(tf.SiglipVisionConfig(**vcfg)).save_pretrained(root / "vision")
    tf.SiglipImageProcessor(size={"height": vcfg["image_size"], "width": vcfg["image_size"]}).save_pretrained(
        root / "vision"
    )
    connector = functools.partial(QFormerConnector, **(TINY_QFORMER if dry else QFORMER))
    return NoteLLM2Module(
        HFCausalLM(llm_path, gradient_checkpointing=grad_ckpt),
        SiglipVision(str(root / "vision")),
        connector,
        embed_dim=64,
        lr=3e-6,
        lr_new=1e-4,
        grad_cache_chunk=grad_cache_chunk,
    )


def make_batch(module: Any, root: Path, n_pairs: int, tokens: int) -> dict[str, Any]:
    """``n_pairs`` random pairs processed exactly as the training loader does."""
    from PIL import Image

    from notellm2_pl.datasets import Note
    from notellm2_pl.processing import NoteProcessor, collate_pairs

    rng = random.Random(0)
    (root / "img").mkdir(exist_ok=True)
    proc = NoteProcessor(module.note_format(), max_tokens=tokens)

    def note(i: int) -> dict[str, Any]:
        path = root / "img" / f"{i}.png"
        Image.new("RGB", (64, 64), tuple(rng.randrange(256) for _ in range(3))).save(path)
        words = " ".join(rng.choice(WORDS) for _ in range(200))
        return proc(Note(str(i), words[:20], ["tag"], words, str(path)), train=True)

    return collate_pairs([(note(2 * i), note(2 * i + 1)) for i in range(n_pairs)])


def train_step(
    module: Any, opt: torch.optim.Optimizer, batch: dict[str, Any], device: torch.device, dtype: torch.dtype | None
) -> float:
    """Forward + loss + backward + AdamW step (GradCache when the module has ``grad_cache_chunk``)."""
    from notellm2_pl.gradcache import grad_cache_backward

    ctx = torch.autocast(device.type, dtype=dtype) if dtype is not None else torch.autocast(device.type, enabled=False)
    with ctx:
        if module.hparams.grad_cache_chunk:
            loss, _ = grad_cache_backward(module, batch, module.hparams.grad_cache_chunk)
        else:
            loss, _ = module.compute_loss(batch)
            loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in module.parameters() if p.requires_grad], 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16, help="pairs per step (2x notes)")
    p.add_argument("--tokens", type=int, default=140, help="text token budget per note (the paper's 140)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--grad-ckpt", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--grad-cache-chunk", type=int, default=None)
    p.add_argument("--nominal-tflops", type=float, default=0.0, help="card's nominal dense bf16 TFLOP/s")
    p.add_argument("--dry-run", action="store_true", help="tiny shapes on CPU, fp32, 2 pairs, 1 step")
    args = p.parse_args(argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    dry = args.dry_run or not torch.cuda.is_available()
    if dry:
        args.batch, args.tokens, args.steps = min(args.batch, 2), min(args.tokens, 48), 1
    device = torch.device("cpu" if dry else "cuda")
    dtype = None if dry else torch.bfloat16
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        module = build_module(root, dry, args.grad_ckpt, args.grad_cache_chunk).to(device)
        module.train()
        module.encoder.vision.eval()
        batch = make_batch(module, root, args.batch, args.tokens)
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    opt = torch.optim.AdamW([g for g in module.param_groups()], betas=(0.9, 0.999), eps=1e-8)
    sync = (lambda: torch.cuda.synchronize(device)) if not dry else (lambda: None)
    train_step(module, opt, batch, device, dtype)  # warm-up
    sync()
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        train_step(module, opt, batch, device, dtype)
    flops = counter.get_total_flops()
    times = []
    for _ in range(args.steps):
        sync()
        t0 = time.perf_counter()
        train_step(module, opt, batch, device, dtype)
        sync()
        times.append(time.perf_counter() - t0)
    t = sorted(times)[len(times) // 2]
    peak = bf16_peak(device) if not dry else float("nan")
    res = {
        "bench": "gpu_step",
        "dry_run": dry,
        "device": torch.cuda.get_device_name(device) if not dry else "cpu",
        "pairs": args.batch,
        "notes": 2 * args.batch,
        "seq_len": int(batch["input_ids"].shape[1]),
        "grad_ckpt": args.grad_ckpt,
        "grad_cache_chunk": args.grad_cache_chunk,
        "trainable_params": sum(q.numel() for q in module.parameters() if q.requires_grad),
        "step_s_median": round(t, 4),
        "notes_per_s": round(2 * args.batch / t, 1),
        "step_tflop": round(flops / 1e12, 3),
        "achieved_tflops": round(flops / t / 1e12, 2),
        "peak_bf16_gemm_tflops": round(peak / 1e12, 1),
        "mfu_vs_measured": round(flops / t / peak, 3),
        "mfu_vs_nominal": round(flops / t / (args.nominal_tflops * 1e12), 3) if args.nominal_tflops else None,
        "max_mem_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if not dry else None,
    }
    print(json.dumps(res))


if __name__ == "__main__":
    main()
