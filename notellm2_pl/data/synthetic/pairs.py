"""Pairs of the synthetic benchmark: train/val pairs biased towards long-long (text-solvable) pairs, test pairs (and
the val pairs of held-out clusters) a matching inside each cluster."""

from __future__ import annotations

import numpy as np

from notellm2_pl.data.synthetic.config import SyntheticConfig
from notellm2_pl.data.synthetic.notes import SynthNote


def sample_pairs(rng: np.random.Generator, cfg: SyntheticConfig, notes: list[SynthNote],
                 held_out: frozenset[int] = frozenset()) -> dict[str, list[tuple[int, int]]]:
    """Pairs as note indices: train/val from train clusters, test as a matching inside each test cluster.

    Args:
        rng: The pairs' random stream.
        cfg: Generator settings.
        notes: All notes.
        held_out: Train-side clusters held out for validation: a matching of ``test_pairs_per_cluster`` val pairs
            each, no training pairs (then no other cluster gives val pairs).

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}`` of (query index, target index).
    """
    by_cluster: dict[int, list[int]] = {}
    for i, n in enumerate(notes):
        by_cluster.setdefault(n.cid, []).append(i)
    out: dict[str, list[tuple[int, int]]] = {"train": [], "val": [], "test": []}

    def oriented(a: int, b: int) -> tuple[int, int]:
        return (a, b) if rng.random() < 0.5 else (b, a)

    for cid in sorted(by_cluster):
        idx = by_cluster[cid]
        if notes[idx[0]].split == "test" or cid in held_out:
            perm = [idx[int(k)] for k in rng.permutation(len(idx))]
            for k in range(cfg.test_pairs_per_cluster):
                out["val" if cid in held_out else "test"].append((perm[2 * k], perm[2 * k + 1]))
            continue
        combos = [(a, b) for ai, a in enumerate(idx) for b in idx[ai + 1:]]
        combos = [combos[int(k)] for k in rng.permutation(len(combos))]
        long_long = [p for p in combos if not notes[p[0]].is_short and not notes[p[1]].is_short]
        mixed = [p for p in combos if notes[p[0]].is_short or notes[p[1]].is_short]
        chosen: list[tuple[int, int]] = []
        for _ in range(min(cfg.train_pairs_per_cluster, len(combos))):
            if cfg.train_long_pair_fraction < 0:
                src = long_long if (rng.random() < len(long_long) / max(1, len(long_long) + len(mixed))) else mixed
            else:
                src = long_long if rng.random() < cfg.train_long_pair_fraction else mixed
            if not src:
                src = mixed or long_long
            chosen.append(src.pop())
        out["train"].extend(oriented(a, b) for a, b in chosen)
        chosen_set = set(chosen)
        rest = [p for p in combos if p not in chosen_set]
        if not held_out:
            out["val"].extend(oriented(a, b) for a, b in rest[: cfg.val_pairs_per_cluster])
    return out
