"""``python -m notellm2_pl saliency``: information-flow saliency S_v / S_t / S_o per layer (docs/method.md#saliency).

The library side is :mod:`notellm2_pl.analysis.saliency` (the measure), :mod:`notellm2_pl.analysis.saliency_model`
(running the model) and :mod:`notellm2_pl.analysis.saliency_output` (plots and files).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from notellm2_pl.analysis.saliency import SaliencyResult
from notellm2_pl.analysis.saliency_model import compute_saliency, training_batches
from notellm2_pl.analysis.saliency_output import plot_saliency, write_saliency
from notellm2_pl.inference.factory import ModelAndConfig, build_from_checkpoint, build_from_config


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of the ``saliency`` command."""
    p = argparse.ArgumentParser(
        prog="python -m notellm2_pl saliency",
        description="Information-flow saliency (docs/method.md#saliency): per-layer S_v (image -> embedding token), "
                    "S_t (other tokens -> embedding token), S_o (among other tokens), from |sum_heads A * dL/dA| of "
                    "the contrastive loss on e_m over training-pair batches (eval mode, no optimiser step). Writes "
                    "saliency.json, saliency.png and TensorBoard events. Extra --model.* / --data.* arguments are "
                    "recipe overrides.",
        epilog="Examples:\n"
               "  python -m notellm2_pl saliency --ckpt_path runs/ablations/demo/basic-s0-xxxx/checkpoints/best.ckpt\n"
               "  python -m notellm2_pl saliency --config recipes/demo.yaml --num_batches 4   # untrained model\n"
               "  python -m notellm2_pl saliency --compare out/basic/saliency.json out/notellm2/saliency.json "
               "--out out/compare",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--ckpt_path", help="Checkpoint to analyse (fit records its backbones; --config for older).")
    p.add_argument("--config", action="append", help="Recipe(s) (repeatable); alone: analyse the untrained model.")
    p.add_argument("--compare", nargs="+", metavar="JSON", help="Only plot several saliency.json files together.")
    p.add_argument("--data", metavar="ROOT", help="Dataset root (default: the recipe's / checkpoint's).")
    p.add_argument("--num_batches", type=int, default=8, help="Batches of training pairs to average over (the "
                                                                "paper: 1000 batches of 32 notes).")
    p.add_argument("--batch_size", type=int, default=16, help="Pairs per batch (2x notes).")
    p.add_argument("--seed", type=int, default=0, help="Shuffle seed of the training pairs.")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1...")
    p.add_argument("--label", help="Model name in plots (default: the checkpoint's or recipe's name).")
    p.add_argument("--out", help="Output folder (default: <checkpoint dir>/saliency or runs/saliency/<label>).")
    p.add_argument("--no_tb", action="store_true", help="Do not write TensorBoard events.")
    return p


def compare(files: list[str], out_dir: str | None) -> int:
    """``--compare``: plot several ``saliency.json`` files together."""
    results = [SaliencyResult.from_dict(json.loads(Path(f).read_text())) for f in files]
    out = Path(out_dir or "runs/saliency/compare")
    out.mkdir(parents=True, exist_ok=True)
    plot_saliency(results, out / "saliency_compare.png")
    print(f"Wrote {out / 'saliency_compare.png'}")
    return 0


def load_model(args: argparse.Namespace, overrides: list[str]) -> tuple[ModelAndConfig, str, Path]:
    """The model to analyse, its label and the default output folder (from the checkpoint, else the recipe)."""
    if args.ckpt_path:
        run_dir = Path(args.ckpt_path).parent.parent
        built = build_from_checkpoint(args.ckpt_path, args.config, overrides)
        return built, args.label or run_dir.name, run_dir / "saliency"
    label = args.label or Path(args.config[-1]).stem
    return build_from_config(args.config, overrides), label, Path("runs/saliency") / label


def main(argv: list[str] | None = None) -> int:
    """Run ``saliency``; returns the exit code."""
    p = build_parser()
    args, overrides = p.parse_known_args(argv)
    if args.compare:
        return compare(args.compare, args.out)
    if not args.ckpt_path and not args.config:
        p.error("give --ckpt_path CKPT [--config RECIPE], --config RECIPE (untrained model), or --compare JSON...")
    (module, _, data_cfg), label, default_out = load_model(args, overrides)
    root = args.data or data_cfg.get("root")
    if not root:
        p.error("no dataset root recorded: pass --data ROOT.")
    module = module.to(args.device)
    batches = training_batches(module, root, data_cfg, args.batch_size, args.seed)
    result = compute_saliency(module, batches, args.num_batches, args.device, label)
    result.meta = {"ckpt_path": args.ckpt_path, "config": args.config, "data": str(root),
                   "batch_size": args.batch_size, "seed": args.seed, "overrides": overrides}
    out = Path(args.out) if args.out else default_out
    path = write_saliency(result, out, tb=not args.no_tb)
    print(f"Information flow of {label} ({result.num_notes} notes, {result.num_batches} batches), normalised per "
          f"layer:")
    print("  layer    S_v     S_t     S_o")
    for layer, (sv, st, so) in enumerate(result.scores):
        print(f"  {layer:>5}  {sv:.4f}  {st:.4f}  {so:.4f}")
    print(f"Wrote {path}, {out / 'saliency.png'}" + ("" if args.no_tb else f"; TensorBoard: {out / 'tb'}"))
    return 0
