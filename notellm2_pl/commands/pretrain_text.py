"""``python -m notellm2_pl pretrain-text``: give a tiny LLM text priors (see notellm2_pl.training.text_prior)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from notellm2_pl.training.text_prior import (
    DEFAULT_CONFIG,
    DEFAULT_MAX_MINUTES,
    DEFAULT_MAX_STEPS,
    DEFAULT_VOCAB_SIZE,
    REUSE_KEYS,
    finished_settings,
    note_texts,
    pretrain_text_prior,
    prior_settings,
)


def build_parser(prog: str = "python -m notellm2_pl pretrain-text") -> argparse.ArgumentParser:
    """Argument parser of the ``pretrain-text`` command."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Give a tiny LLM text priors: train a byte-level BPE tokenizer on the training notes, then a "
        "bounded causal-LM pretraining run on CPU (fp32). Writes a Hugging Face checkpoint directory that the "
        "HF LLM backbone loads with `pretrained: OUT`.",
        epilog="Example: python -m notellm2_pl pretrain-text --data data/demo --out checkpoints/text_prior "
        "--max-minutes 3",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", required=True, help="dataset root (canonical or official NoteLLM layout); train notes")
    p.add_argument("--out", required=True, help="output checkpoint directory")
    p.add_argument("--config", default=None,
                   help="HF causal-LM config: JSON string with model_type, path to a JSON file, or a directory / hub "
                   f"id with config.json. Default: {json.dumps(DEFAULT_CONFIG)}")
    p.add_argument("--tokenizer", default=None, help="existing tokenizer (path / hub id); default: train one")
    p.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE, help="BPE vocabulary bound")
    p.add_argument("--max-steps", type=int, default=DEFAULT_MAX_STEPS, help="optimiser steps (default: %(default)s)")
    p.add_argument("--max-minutes", type=float, default=DEFAULT_MAX_MINUTES,
                   help="optional wall-clock bound; the prior then depends on the machine's speed (default: none)")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per step")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per packed sequence")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--train-pair-notes-only", action="store_true",
                   help="use only the notes of training pairs (items held out for validation stay unseen by the prior "
                        "and its tokenizer)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``pretrain-text``; returns the process exit code (0 also when a finished prior is reused)."""
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    texts = note_texts(args.data, train_pair_notes_only=args.train_pair_notes_only)
    wanted = prior_settings(texts, args.config, args.tokenizer, args.vocab_size, args.max_steps, args.max_minutes,
                            args.batch_size, args.seq_len, args.lr, seed=args.seed)
    existing = finished_settings(args.out)
    if existing is not None and not args.overwrite:
        if all(existing.get(k) == wanted[k] for k in REUSE_KEYS):
            print(f"{args.out} already holds a finished text prior with these settings; skipping "
                  f"(pass --overwrite to retrain).")
            return 0
        print(f"{args.out} holds a text prior trained with different settings. Pass --overwrite to replace it, "
              f"or choose another --out.")
        return 2
    if Path(args.out).exists() and existing is None and not args.overwrite:
        print(f"{args.out} exists but is not a finished text prior. Pass --overwrite or choose another --out.")
        return 2
    stats = pretrain_text_prior(
        texts, args.out, config=args.config, tokenizer=args.tokenizer, vocab_size=args.vocab_size,
        max_steps=args.max_steps, max_minutes=args.max_minutes, batch_size=args.batch_size, seq_len=args.seq_len,
        lr=args.lr, seed=args.seed, overwrite=True, extra_settings={"data": str(args.data)},
    )
    print(json.dumps(stats, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
