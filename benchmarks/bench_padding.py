"""Padding waste of training batches, and what length bucketing would save.

Tokenizes every training pair of a dataset exactly as the training loader does (template, truncation to
``--max-tokens``, suffix; the mICL variant with image tags and marker), then simulates epochs of random batches of
``--batch`` pairs (``[queries; targets]``, right-padded to the longest note) and reports the mean pad fraction of the
LLM input. Visual tokens (``--visual-tokens``, never padding) are added to every row. Bucketing is the library's
(``--data.length_bucketing POOL``, ``notellm2_pl.data.sampling.bucket_order``): pairs sorted by token length inside
pools of ``--pool`` batches, cut into batches, batches shuffled (the usual "sortish" sampler).

Note for contrastive training: bucketing changes which notes meet as negatives (similar lengths together),
a bias in the negative distribution; weigh it against the saved compute.

Run by hand::

    python benchmarks/bench_padding.py --data data/synthetic --tokenizer data/tiny-qwen2-prior
"""

from __future__ import annotations

import argparse
import json
import random

import numpy as np


def pair_lengths(data: str, tokenizer: str, max_tokens: int) -> np.ndarray:
    """Token length of the query and target of every training pair, ``(P, 2)``."""
    from transformers import AutoTokenizer

    from notellm2_pl.data.processing import NoteFormat, NoteProcessor
    from notellm2_pl.data.tables import load_split

    tok = AutoTokenizer.from_pretrained(tokenizer)
    tok.add_tokens(["<img>", "</img>", "<IMG_EMB>"], special_tokens=True)
    o, c, m = tok.convert_tokens_to_ids(["<img>", "</img>", "<IMG_EMB>"])
    fmt = NoteFormat(tokenizer=tok, image_config=None, variant="micl", preset="en", image_open_ids=[o],
                     image_close_ids=[c], marker_id=m)
    proc = NoteProcessor(fmt, max_tokens=max_tokens)
    split = load_split(data, "train")
    cache = {k: len(proc.tokenize(n)[0]) for k, n in split.notes.items()}
    return np.array([(cache[q], cache[t]) for q, t in split.pairs["all"]])


def pad_fraction(batches: list[np.ndarray], lengths: np.ndarray, visual: int) -> float:
    """Mean over batches of padded positions / all positions of the LLM input."""
    fr = []
    for idx in batches:
        notes = lengths[idx].reshape(-1) + visual  # (2b,)
        fr.append(1.0 - notes.sum() / (notes.size * notes.max()))
    return float(np.mean(fr))


def random_batches(n: int, b: int, rng: random.Random) -> list[np.ndarray]:
    order = list(range(n))
    rng.shuffle(order)
    return [np.array(order[i:i + b]) for i in range(0, n - b + 1, b)]


def bucketed_batches(key: np.ndarray, b: int, pool: int, rng: random.Random) -> list[np.ndarray]:
    from notellm2_pl.data.sampling import bucket_order

    order = list(range(len(key)))
    rng.shuffle(order)
    flat = bucket_order(order, key.tolist(), b, pool, seed=rng.randrange(1 << 30))
    return [np.array(flat[i:i + b]) for i in range(0, len(flat) - b + 1, b)]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/synthetic")
    p.add_argument("--tokenizer", default="data/tiny-qwen2-prior")
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument("--batch", type=int, default=32, help="pairs per batch")
    p.add_argument("--visual-tokens", type=int, default=8)
    p.add_argument("--pool", type=int, default=50, help="batches per sorting pool")
    p.add_argument("--epochs", type=int, default=5)
    args = p.parse_args(argv)
    lengths = pair_lengths(args.data, args.tokenizer, args.max_tokens)
    rng = random.Random(0)
    res = {"bench": "padding", "pairs": len(lengths), "batch_pairs": args.batch,
           "note_len_mean": round(float(lengths.mean()), 1), "note_len_min": int(lengths.min()),
           "note_len_max": int(lengths.max())}
    for name, vis in (("text_only", 0), ("with_visual", args.visual_tokens)):
        rand = np.mean([pad_fraction(random_batches(len(lengths), args.batch, rng), lengths, vis)
                        for _ in range(args.epochs)])
        buck = np.mean([pad_fraction(bucketed_batches(lengths.max(1), args.batch, args.pool, rng), lengths, vis)
                        for _ in range(args.epochs)])
        res[f"pad_fraction_random_{name}"] = round(float(rand), 4)
        res[f"pad_fraction_bucketed_{name}"] = round(float(buck), 4)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
