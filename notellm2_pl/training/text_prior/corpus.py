"""The text prior's corpus: note texts of a dataset, their fingerprint, the held-out split and packed blocks."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch


def note_texts(root: str | Path, train_pair_notes_only: bool = False) -> list[str]:
    """Training-note texts of a dataset, each as ``"title topics content"`` (topics space-separated).

    Args:
        root: Dataset root (either layout).
        train_pair_notes_only: Use only the notes of the training pairs, so that items held out of training (a
            validation split of unseen items) stay unseen by the prior too: their words would otherwise be in the
            tokenizer and the language model, and validation Recall@K would overstate unseen items.
    """
    from notellm2_pl.data.tables import load_split

    split = load_split(root, "train", on_error="skip")
    in_pairs = {n for pairs in split.pairs.values() for p in pairs for n in p} if train_pair_notes_only else None
    texts = []
    for note_id, note in split.notes.items():
        if in_pairs is not None and note_id not in in_pairs:
            continue
        parts = (note.title.strip(), " ".join(note.topics).strip(), note.content.strip())
        text = " ".join(part for part in parts if part)
        if text:
            texts.append(text)
    return texts


def texts_fingerprint(texts: Sequence[str]) -> str:
    """Short SHA-256 over the texts (order-sensitive), stored with the checkpoint's settings."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:16]


def held_out_split(texts: Sequence[str], seed: int) -> tuple[list[str], list[str]]:
    """``(train, held-out)``: ~5 % of the texts (at most 200) held out when there are at least 40, else none."""
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    n_eval = min(200, len(texts) // 20) if len(texts) >= 40 else 0
    return [texts[i] for i in order[n_eval:]], [texts[i] for i in order[:n_eval]]


def pack(texts: Sequence[str], tokenizer: Any, seq_len: int) -> torch.Tensor:
    """``<s> text </s>`` for every text, concatenated and cut into ``(N, seq_len)`` blocks (tail dropped)."""
    enc = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    stream: list[int] = []
    for ids in enc:
        stream.extend([tokenizer.bos_token_id, *ids, tokenizer.eos_token_id])
    n_blocks = len(stream) // seq_len
    if n_blocks == 0:  # fewer tokens than one block: repeat the stream
        stream = stream * (seq_len // max(len(stream), 1) + 1)
        n_blocks = 1
    return torch.tensor(stream[: n_blocks * seq_len], dtype=torch.long).view(n_blocks, seq_len)  # (N, seq_len)
