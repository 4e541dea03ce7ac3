"""Epoch time with vs without the frozen-vision feature cache, on the demo configuration.

Trains the demo model (tiny Qwen2-shaped LLM + frozen EfficientNet-Lite0 + Q-Former, recipes/demo.yaml settings)
for the same ``--batches`` training steps twice per setting: a first pass (fills the cache) and a second pass (the
one measured: what every epoch after the first costs). Data loading runs in one worker, as in the recipe. Settings:
no cache; the in-memory cache (``model.encoder.feature_cache``: the tower is skipped, images are still decoded);
the on-disk store (``model.encoder.feature_cache_dir``: cached images are not decoded either), and a second run
sharing that store.

    python benchmarks/bench_feature_cache.py --batches 8
    python benchmarks/bench_feature_cache.py --batches 8 --compile   # model.compile_llm: true in every setting
Target: second-pass time without cache / with cache >= 2.
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from functools import partial


def _pass(module, loader, batches: int, opt) -> float:
    start = time.perf_counter()
    for batch in itertools.islice(loader, batches):
        loss, _ = module.compute_loss(batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
    return time.perf_counter() - start


def measure(cache: bool, batches: int, root: str, llm_path: str, cache_dir: str | None = None,
            compile_llm: bool = False) -> tuple[float, float]:
    """(first pass seconds, second pass seconds) for ``batches`` training steps."""
    import torch
    from notellm2_pl_backbones.connectors import QFormerConnector
    from notellm2_pl_backbones.hf_llm import HFCausalLM

    from notellm2_pl import registry
    from notellm2_pl.data.datamodule import NoteDataModule
    from notellm2_pl.model.config import EncoderConfig
    from notellm2_pl.training.module import NoteLLM2Module

    torch.manual_seed(0)
    vision = registry.get("vision", "EfficientNetLite0")(image_size=128)
    connector = partial(QFormerConnector, num_query_tokens=8, num_layers=2, hidden_size=128, num_heads=4,
                        intermediate_size=256)
    encoder = EncoderConfig(feature_cache=cache, feature_cache_dir=cache_dir)
    module = NoteLLM2Module(HFCausalLM(llm_path), vision, connector, encoder=encoder, lr=3e-4, lr_new=1e-3,
                            compile_llm=compile_llm)
    module.encoder.vision.eval()
    dm = NoteDataModule(root=root, batch_size=32, max_tokens=96, num_workers=1)
    dm.attach(module)
    dm.setup("fit")
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    loader = dm.train_dataloader()
    first = _pass(module, loader, batches, opt)
    second = _pass(module, loader, batches, opt)  # a fresh epoch over the same first batches (seeded sampler)
    return first, second


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--data", default="data/synthetic")
    p.add_argument("--llm", default="data/tiny-qwen2-prior")
    p.add_argument("--compile", action="store_true", help="model.compile_llm: true in every setting (inductor)")
    args = p.parse_args()
    run = partial(measure, batches=args.batches, root=args.data, llm_path=args.llm, compile_llm=args.compile)
    if args.compile:
        run(False, batches=2)  # warm inductor's on-disk kernel cache, so no setting pays the compilation
    with tempfile.TemporaryDirectory() as tmp:
        rows = {"no cache": run(False),
                "memory (feature_cache)": run(True),
                "disk (feature_cache_dir)": run(True, cache_dir=tmp),
                "disk, 2nd run, same store": run(True, cache_dir=tmp)}
    print(f"load average at end: {os.getloadavg()}; compile_llm: {args.compile}")
    print(f"| setting | first pass (s) | second pass (s) | speed-up of later epochs |  "
          f"({args.batches} steps of 32 pairs)")
    base = rows["no cache"][1]
    for name, (a, b) in rows.items():
        print(f"| {name} | {a:.1f} | {b:.1f} | {base / b:.2f}x |")
    disk = base / rows["disk (feature_cache_dir)"][1]
    print(f"target: >= 2x (no cache / cache, second pass); disk store: {disk:.2f}x")


if __name__ == "__main__":
    main()
