"""``python -m notellm2_pl export``: write a model export directory (or only its LLM) from a checkpoint."""

from __future__ import annotations

import argparse

from notellm2_pl.inference.export import export_llm, export_model
from notellm2_pl.inference.factory import build_from_checkpoint


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``export``; arguments it does not know are recipe overrides."""
    p = argparse.ArgumentParser(
        prog="python -m notellm2_pl export",
        description="Export a trained model to one directory (config.json, model.safetensors, tokenizer/) that "
                    "Embedder.from_pretrained(DIR) and `evaluate --model DIR` / `search --model DIR` load.",
        epilog="Other arguments are recipe overrides (as for fit). Example: python -m notellm2_pl export "
               "--config recipes/demo.yaml --ckpt_path runs/demo/checkpoints/best.ckpt --out runs/demo/export",
    )
    p.add_argument("--ckpt_path", required=True, help="Lightning checkpoint to export.")
    p.add_argument("--config", default=None, help="Recipe the checkpoint was trained with (needed unless the "
                                                  "checkpoint's hyperparameters name the backbones).")
    p.add_argument("--out", required=True, help="Export directory (replaced atomically if it exists).")
    p.add_argument("--no_overwrite", action="store_true", help="Fail instead of replacing an existing --out.")
    p.add_argument("--llm_only", action="store_true",
                   help="Write only the trained LLM and its tokenizer, as its plugin's pretrained directory (for "
                        "--model.llm.init_args.pretrained OUT in a later recipe).")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``export``; returns the exit code."""
    args, overrides = build_parser().parse_known_args(argv)  # the rest are recipe overrides, e.g. --data.max_tokens 96
    module, model_cfg, data_cfg = build_from_checkpoint(args.ckpt_path, args.config, overrides)
    if args.llm_only:
        out = export_llm(module, args.out, overwrite=not args.no_overwrite)
        print(f"Exported the LLM to {out}. Train from it with: --model.llm.init_args.pretrained {out}")
        return 0
    out = export_model(module, model_cfg, data_cfg, args.out, overwrite=not args.no_overwrite)
    print(f"Exported to {out}. Load it with: Embedder.from_pretrained({str(out)!r}), or run "
          f"`python -m notellm2_pl evaluate --model {out} --data DATA_ROOT`.")
    return 0
