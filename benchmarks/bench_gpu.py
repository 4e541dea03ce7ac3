"""bf16 training step time and MFU of NoteLLM-2 at paper-like scale: Qwen2.5-0.5B-shaped LLM + SigLIP-base tower.

Random weights with the real architectures (written with ``save_pretrained`` and loaded through the same
``HFCausalLM`` / ``SiglipVision`` plugins a recipe uses), a 6-layer Q-Former with 16 queries, mICL + late fusion,
frozen tower, the full NoteLLM2Module loss (``compute_loss``), backward and AdamW step under ``torch.autocast``
bf16. FLOPs are counted with ``FlopCounterMode``; MFU is reported against both the measured bf16 GEMM peak of the
card and an optional nominal peak (``--nominal-tflops``, e.g. 989 for H100 SXM dense bf16).

The LLM's vocabulary is the small test tokenizer's (embedding lookups cost no FLOPs, so this does not change the
compute; it saves ~0.5 GB). Texts are random words cut to ``--tokens`` tokens.

Run on a GPU (each ``--runs`` spec is ``PAIRS[,ckpt][,gc=NOTES]``; all share one model)::

    python benchmarks/bench_gpu.py --runs 64 128,ckpt 512,ckpt,gc=256 --nominal-tflops 989 --profile prof.txt

Model FLOPs (MFU) are counted with activation checkpointing off; hardware FLOPs (HFU) include its recompute.
Each run also reports inference throughput (forward only, no grad): notes embedded per second.

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

from notellm2_pl.plugins.testing import TINY_WORDS

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


def build_module(root: Path, dry: bool, compile_llm: bool = False) -> Any:
    """Write random checkpoints of the benchmark shapes and build a NoteLLM2Module on them."""
    import transformers as tf
    from notellm2_pl_backbones.connectors import QFormerConnector
    from notellm2_pl_backbones.hf_llm import HFCausalLM
    from notellm2_pl_backbones.hf_vision import SiglipVision

    from notellm2_pl.model.config import EncoderConfig
    from notellm2_pl.plugins.testing import make_tiny_llm_checkpoint
    from notellm2_pl.training.module import NoteLLM2Module

    llm_path = make_tiny_llm_checkpoint(root / "llm", "qwen2", **(TINY_LLM if dry else QWEN25_05B))
    vcfg = TINY_VISION if dry else SIGLIP_BASE
    torch.manual_seed(0)
    tf.SiglipVisionModel(tf.SiglipVisionConfig(**vcfg)).save_pretrained(root / "vision")
    tf.SiglipImageProcessor(size={"height": vcfg["image_size"], "width": vcfg["image_size"]}).save_pretrained(
        root / "vision"
    )
    connector = functools.partial(QFormerConnector, **(TINY_QFORMER if dry else QFORMER))
    return NoteLLM2Module(
        HFCausalLM(llm_path),
        SiglipVision(str(root / "vision")),
        connector,
        encoder=EncoderConfig(embed_dim=64),
        lr=3e-6,
        lr_new=1e-4,
        compile_llm=compile_llm,
    )


def make_batch(module: Any, root: Path, n_pairs: int, tokens: int) -> dict[str, Any]:
    """``n_pairs`` random pairs processed exactly as the training loader does."""
    from PIL import Image

    from notellm2_pl.data.processing import NoteProcessor, collate_pairs
    from notellm2_pl.data.prompts import TextLimits
    from notellm2_pl.data.tables import Note

    rng = random.Random(0)
    (root / "img").mkdir(exist_ok=True)
    # no character cuts: the token budget binds, as with real notes (the test tokenizer's words are 1-2 tokens)
    limits = TextLimits(title_chars=10_000, content_chars=10_000)
    proc = NoteProcessor(module.note_format(), limits=limits, max_tokens=tokens)

    def note(i: int) -> dict[str, Any]:
        path = root / "img" / f"{i}.png"
        Image.new("RGB", (64, 64), tuple(rng.randrange(256) for _ in range(3))).save(path)
        words = " ".join(rng.choice(WORDS) for _ in range(400))
        return proc(Note(str(i), words[:20], ["tag"], words, str(path)), train=True)

    return collate_pairs([(note(2 * i), note(2 * i + 1)) for i in range(n_pairs)])


def train_step(
    module: Any,
    opt: torch.optim.Optimizer,
    batch: dict[str, Any],
    device: torch.device,
    dtype: torch.dtype | None,
    grad_cache_chunk: int | None,
) -> float:
    """Forward + loss + backward + AdamW step (GradCache in chunks of ``grad_cache_chunk`` notes when set)."""
    from notellm2_pl.training.gradcache import grad_cache_backward

    with _autocast(device, dtype):
        if grad_cache_chunk:
            loss, _ = grad_cache_backward(module, batch, grad_cache_chunk)
        else:
            loss, _ = module.compute_loss(batch)
            loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in module.parameters() if p.requires_grad], 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def _autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    if dtype is None:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype)


def _flops(fn: Any) -> int:
    """FLOPs that ``fn()`` executes, from torch's FLOP formulas (``torch.utils.flop_counter.flop_registry``).

    A bare dispatch mode rather than ``FlopCounterMode``: the latter's module tracker asserts inside GradCache's
    second (gradient-replay) pass.
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Count(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                try:
                    Count.total += formula(*args, **kwargs, out_val=out)
                except AssertionError:  # torch's attention formulas reject grouped-query (GQA) shapes
                    if "attention" not in str(func):
                        raise
                    Count.total += _attention_flops(func, args)
            return out

    with torch.compiler.set_stance("force_eager"), Count():  # compiled layers run eagerly while counting
        fn()
    return Count.total


def _attention_flops(func: Any, args: tuple) -> int:
    """FLOPs of a fused attention op whose K/V have fewer heads than Q (GQA), as torch counts the MHA case.

    Forward: ``Q K^T`` and ``P V``, ``4 B H Sq Sk D``. Backward (first tensor argument is the output's gradient):
    five products (``Q K^T`` is recomputed), 2.5 times the forward, as torch's formula for the MHA case.
    """
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    backward = "backward" in str(func)
    q, k = tensors[1:3] if backward else tensors[0:2]
    b, h, sq, d = q.shape  # (B, Hq, Sq, D)
    fwd = 4 * b * h * sq * k.shape[-2] * d
    return fwd * 5 // 2 if backward else fwd


def _sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU), so wall-clock times cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_time(fn: Any, steps: int, device: torch.device) -> float:
    times = []
    for _ in range(steps):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def profile_step(step: Any, device: torch.device, path: Path) -> dict[str, float]:
    """Profile one call of ``step``; write the top operators to ``path``; return wall vs device-busy time."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    step()
    _sync(device)
    t0 = time.perf_counter()
    with profile(activities=acts) as prof:
        step()
        _sync(device)
    wall = time.perf_counter() - t0
    events = prof.key_averages()
    # kernels only: not the ops that launch them, nor user annotations on the GPU timeline (Optimizer.step)
    cuda = torch.autograd.DeviceType.CUDA
    kernels = [e for e in events if e.device_type == cuda and not getattr(e, "is_user_annotation", False)]
    busy_us = sum(e.self_device_time_total for e in kernels)
    sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    path.write_text(events.table(sort_by=sort, row_limit=30, max_name_column_width=60))
    return {
        "profile_wall_s": round(wall, 4),
        "profile_device_busy_s": round(busy_us / 1e6, 4),
        "profile_kernels": sum(e.count for e in kernels),
    }


def parse_spec(spec: str) -> dict[str, Any]:
    """``PAIRS[,ckpt][,gc=NOTES]``, e.g. ``32``, ``32,ckpt``, ``512,ckpt,gc=256`` (gc as ``model.grad_cache_chunk``)."""
    head, *opts = spec.split(",")
    out: dict[str, Any] = {"pairs": int(head), "grad_ckpt": False, "grad_cache_chunk": None}
    for opt in opts:
        if opt == "ckpt":
            out["grad_ckpt"] = True
        elif opt.startswith("gc="):
            out["grad_cache_chunk"] = int(opt[3:])
            if out["grad_cache_chunk"] % 2:
                raise SystemExit(f"bad run spec {spec!r}: gc counts notes and must be even (a pair per two notes)")
        else:
            raise SystemExit(f"bad run spec {spec!r}: options are 'ckpt' and 'gc=N', e.g. --runs 32 32,ckpt 512,gc=256")
    return out


def bench_train(
    module: Any,
    batch: dict[str, Any],
    chunk_batch: dict[str, Any] | None,
    spec: dict[str, Any],
    device: torch.device,
    dtype: torch.dtype | None,
    steps: int,
    peak: float,
    nominal: float,
    profile_path: Path | None = None,
) -> dict[str, Any]:
    """Step time, model FLOPs (no recompute), hardware FLOPs (with recompute), MFU / HFU, peak memory; with
    ``profile_path``, also one profiled step (:func:`profile_step`)."""
    llm = module.encoder.llm
    opt = torch.optim.AdamW(module.param_groups(), betas=(0.9, 0.999), eps=1e-8)
    step = functools.partial(train_step, module, opt, batch, device, dtype, spec["grad_cache_chunk"])
    llm.set_grad_checkpointing(False)
    # MFU's numerator: one plain step (no recompute, no GradCache replay). For GradCache runs a plain step over
    # the whole batch may not fit, so it is the plain step of one chunk's pairs times the number of chunks
    # (linear in the batch except the B x B loss matrix, which is negligible).
    chunk = spec["grad_cache_chunk"]
    if chunk:
        model_flops = _flops(functools.partial(train_step, module, opt, chunk_batch, device, dtype, None))
        model_flops = model_flops * 2 * spec["pairs"] // chunk
    else:
        model_flops = _flops(step)
    llm.set_grad_checkpointing(spec["grad_ckpt"])
    hw_flops = _flops(step) if spec["grad_ckpt"] else model_flops
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step()  # warm-up in the measured setting
    t = _median_time(step, steps, device)
    profiled = profile_step(step, device, profile_path) if profile_path is not None else {}
    del opt
    return {
        "step_s_median": round(t, 4),
        "notes_per_s": round(2 * spec["pairs"] / t, 1),
        "model_tflop_per_step": float(f"{model_flops / 1e12:.4g}"),
        "hw_tflop_per_step": float(f"{hw_flops / 1e12:.4g}"),
        "achieved_model_tflops": round(model_flops / t / 1e12, 2),
        "mfu_vs_measured": round(model_flops / t / peak, 3),
        "hfu_vs_measured": round(hw_flops / t / peak, 3),
        "mfu_vs_nominal": round(model_flops / t / (nominal * 1e12), 3) if nominal else None,
        "max_mem_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
        **profiled,
    }


def bench_embed(
    module: Any, batch: dict[str, Any], device: torch.device, dtype: torch.dtype | None, steps: int
) -> dict[str, Any]:
    """Inference: notes embedded per second (forward only, no grad), the cost of indexing a catalogue."""
    module.eval()

    def fwd() -> None:
        with torch.no_grad(), _autocast(device, dtype):
            module(batch)

    fwd()
    t = _median_time(fwd, steps, device)
    module.train()
    module.encoder.vision.eval()
    n = int(batch["input_ids"].shape[0])
    return {"embed_s_median": round(t, 4), "embed_notes_per_s": round(n / t, 1)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--runs",
        nargs="+",
        default=["16,ckpt"],
        help="one spec per run: PAIRS[,ckpt][,gc=NOTES] (ckpt: activation checkpointing in the LLM; "
        "gc: GradCache chunk in notes, as model.grad_cache_chunk); all runs share one model",
    )
    p.add_argument("--tokens", type=int, default=140, help="text token budget per note (the paper's 140)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per run (median reported)")
    p.add_argument("--nominal-tflops", type=float, default=0.0, help="card's nominal dense bf16 TFLOP/s")
    p.add_argument("--out", type=Path, default=None, help="also append each result as a JSON line to this file")
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="profile one training step of the first run; write its top operators to this file",
    )
    p.add_argument("--compile", action="store_true", help="model.compile_llm: torch.compile each LLM layer")
    p.add_argument("--dry-run", action="store_true", help="tiny shapes on CPU, fp32, 2 pairs, 1 step")
    args = p.parse_args(argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    specs = [parse_spec(s) for s in args.runs]
    dry = args.dry_run or not torch.cuda.is_available()
    if dry:
        args.tokens, args.steps = min(args.tokens, 48), 1
        for s in specs:
            s["pairs"] = min(s["pairs"], 2)
            s["grad_cache_chunk"] = 2 if s["grad_cache_chunk"] else None
    device = torch.device("cpu" if dry else "cuda")
    dtype = None if dry else torch.bfloat16
    peak = bf16_peak(device) if not dry else float("nan")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        module = build_module(root, dry, args.compile).to(device)
        module.train()
        module.encoder.vision.eval()
        sizes = {s["pairs"] for s in specs} | {s["grad_cache_chunk"] // 2 for s in specs if s["grad_cache_chunk"]}
        batches = {n: make_batch(module, root, n, args.tokens) for n in sorted(sizes)}

    def on_device(n: int) -> dict[str, Any]:
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batches[n].items()}

    for spec in specs:
        batch = on_device(spec["pairs"])
        chunk_batch = on_device(spec["grad_cache_chunk"] // 2) if spec["grad_cache_chunk"] else None
        res: dict[str, Any] = {
            "bench": "gpu_step",
            "dry_run": dry,
            "device": torch.cuda.get_device_name(device) if not dry else "cpu",
            "torch": torch.__version__,
            "compile_llm": args.compile,
            **spec,
            "notes": 2 * spec["pairs"],
            "seq_len": int(batch["input_ids"].shape[1]),
            "trainable_params": sum(q.numel() for q in module.parameters() if q.requires_grad),
            "peak_bf16_gemm_tflops": round(peak / 1e12, 1),
        }
        try:
            prof = args.profile if spec is specs[0] else None  # the first run's step is profiled
            res.update(
                bench_train(
                    module, batch, chunk_batch, spec, device, dtype, args.steps, peak, args.nominal_tflops, prof
                )
            )
            res.update(bench_embed(module, batch, device, dtype, args.steps))
        except torch.cuda.OutOfMemoryError as err:
            res["error"] = f"out of memory: {str(err).splitlines()[0]}"
        module.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        line = json.dumps(res)
        print(line, flush=True)
        if args.out is not None:
            with args.out.open("a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    main()
