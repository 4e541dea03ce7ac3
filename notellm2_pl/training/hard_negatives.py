"""Hard negatives mined from the model's own index (docs/method.md#hard-negatives).

After a warm-up of ``start_step`` optimiser steps, and then every ``refresh_every`` steps, :class:`HardNegativeMiner`
embeds every note of the training pairs with the current model (eval mode, no gradient, the validation path: full
late-fusion gate), finds each query's nearest notes with the exact top-k kernel
(:func:`~notellm2_pl.retrieval.scoring.exact_topk`) and keeps, for each training pair ``(q, t)``, the best-scoring notes
that are related neither to ``q`` nor to ``t`` within depth 2 of the training-pair graph
(:class:`~notellm2_pl.data.pair_graph.PairGraph`). Every training batch then carries these notes after its
``[queries; targets]`` rows, and the contrastive loss scores every anchor against them as extra negatives
(:func:`~notellm2_pl.model.losses.contrastive_loss`'s ``negatives``).

The false-negative estimate logged at every mining pass, ``train/hard_negatives/false_negative_share``, is the share
of mined negatives ``n`` of a query ``q`` that are related to ``q`` by evidence the exclusion did not use: a path of
exactly 3 training pairs, or a validation pair ``(q, n)``. It is a lower bound of the true share (relations no pair
records stay invisible).

How the negatives reach the batches: the training :class:`~notellm2_pl.data.torch_datasets.PairDataset` holds a
shared-memory table of negative positions per pair (data-loader workers see every refresh); batches already
prefetched when a pass ends keep the negatives they were built with.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import move_data_to_device
from torch.utils.data import DataLoader

from notellm2_pl.data.pair_graph import PairGraph
from notellm2_pl.data.torch_datasets import NoteDataset, PairDataset, collate_notes
from notellm2_pl.model.config import config_from_value
from notellm2_pl.retrieval.scoring import exact_topk
from notellm2_pl.training.fusion_scale import fusion_scale

if TYPE_CHECKING:
    from notellm2_pl.training.module import NoteLLM2Module

log = logging.getLogger(__name__)

METRIC_PREFIX = "train/hard_negatives/"
"""Prefix of the statistics logged at every mining pass."""

EXCLUDED_DEPTH = 2
"""Notes within this many training pairs of the query or of its target are never mined as its negatives."""


@dataclass(frozen=True)
class HardNegativeConfig:
    """Settings of hard-negative mining, set as ``model.hard_negatives.<field>``.

    Attributes:
        start_step: Optimiser step of the first mining pass (the warm-up before it trains on in-batch negatives
            only). None: off (the default).
        refresh_every: Mine again every this many steps after ``start_step`` (0: mine once).
        per_pair: Mined negatives added to the batch per training pair.
        top_k: Nearest notes read per query; the negatives are the best of them outside the excluded graph
            neighbourhood (a pair whose ``top_k`` nearest notes are all related gets none).
        skip_top: Leave out this many of the best non-related notes (the likeliest false negatives).
    """

    start_step: int | None = None
    refresh_every: int = 0
    per_pair: int = 1
    top_k: int = 20
    skip_top: int = 0

    def __post_init__(self) -> None:
        if self.start_step is not None and self.start_step < 0:
            raise ValueError(f"model.hard_negatives.start_step must be >= 0 (or null: off), got {self.start_step}.")
        if self.refresh_every < 0 or self.per_pair < 1 or self.skip_top < 0:
            raise ValueError("model.hard_negatives needs refresh_every >= 0, per_pair >= 1 and skip_top >= 0; got "
                             f"{self.refresh_every}, {self.per_pair}, {self.skip_top}.")
        if self.top_k < self.skip_top + self.per_pair:
            raise ValueError(f"model.hard_negatives.top_k ({self.top_k}) must be at least skip_top + per_pair "
                             f"({self.skip_top + self.per_pair}): set --model.hard_negatives.top_k "
                             f"{max(20, self.skip_top + self.per_pair)}.")

    @property
    def enabled(self) -> bool:
        """Mining is on (``start_step`` set)."""
        return self.start_step is not None

    def due(self, step: int, last: int | None) -> bool:
        """Whether a pass runs at optimiser step ``step``, the last one having run at ``last`` (None: never)."""
        if self.start_step is None or step < self.start_step or step == last:
            return False
        return last is None or (self.refresh_every > 0 and (step - self.start_step) % self.refresh_every == 0)

    @classmethod
    def from_value(cls, value: HardNegativeConfig | Mapping[str, Any] | None) -> HardNegativeConfig:
        """The config itself, or one built from a mapping (checkpoint hyperparameters)."""
        return config_from_value(cls, value, "model.hard_negatives")

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, as stored in checkpoint hyperparameters."""
        return asdict(self)


# ------------------------------------------------------------------------------------------------ mining
@dataclass
class MinedNegatives:
    """One mining pass.

    Attributes:
        rows: ``(n_pairs, per_pair)`` graph positions of each pair's negatives, best first; ``-1``: none.
        stats: ``false_negative_share``, ``depth3_share``, ``heldout_pair_share`` (shares of the mined negatives;
            NaN when none), ``pairs_with_negative`` (share of pairs), ``mean_score`` (mean cosine similarity of a
            mined negative to its query).
    """

    rows: np.ndarray
    stats: dict[str, float]


def select_negatives(candidates: Sequence[int], query: int, target: int, graph: PairGraph, skip_top: int,
                     count: int) -> list[int]:
    """The first ``count`` candidates related to neither ``query`` nor ``target`` within depth 2, after
    leaving out the first ``skip_top`` such candidates.

    Args:
        candidates: Graph positions, best first (``-1`` ends the list).
        query: The pair's query position.
        target: The pair's target position.
        graph: The training-pair graph.
        skip_top: Non-related candidates left out first.
        count: Negatives wanted.
    """
    picked: list[int] = []
    for c in candidates:
        if c < 0 or len(picked) == count:
            break
        if graph.within(query, c, EXCLUDED_DEPTH) or graph.within(target, c, EXCLUDED_DEPTH):
            continue
        if skip_top:
            skip_top -= 1
            continue
        picked.append(int(c))
    return picked


def mine_negatives(emb: np.ndarray, graph: PairGraph, pair_rows: np.ndarray, config: HardNegativeConfig,
                   held_out: set[tuple[int, int]] | None = None) -> MinedNegatives:
    """Each pair's hard negatives from the exact top-k of its query, and the false-negative estimate.

    Args:
        emb: ``(N, d)`` L2-normalised embeddings of the graph's notes, in position order.
        graph: The training-pair graph.
        pair_rows: ``(n_pairs, 2)`` query and target positions of the training pairs.
        config: Mining settings (``top_k``, ``skip_top``, ``per_pair``).
        held_out: Held-out related pairs as ``(min, max)`` positions (e.g. validation pairs among these notes).

    Returns:
        The negatives and the pass's statistics (:class:`MinedNegatives`).
    """
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    queries = np.unique(pair_rows[:, 0])
    k = min(config.top_k, max(1, len(graph) - 1))
    _, cands = exact_topk(np.ascontiguousarray(emb[queries]), emb, k, exclude=queries)
    slot = {int(q): i for i, q in enumerate(queries)}
    rows = np.full((len(pair_rows), config.per_pair), -1, dtype=np.int64)
    for p, (q, t) in enumerate(pair_rows.tolist()):
        picked = select_negatives(cands[slot[q]].tolist(), q, t, graph, config.skip_top, config.per_pair)
        rows[p, :len(picked)] = picked
    return MinedNegatives(rows, negative_stats(emb, graph, pair_rows, rows, held_out or set()))


def negative_stats(emb: np.ndarray, graph: PairGraph, pair_rows: np.ndarray, rows: np.ndarray,
                   held_out: set[tuple[int, int]]) -> dict[str, float]:
    """The statistics of :class:`MinedNegatives` (the false-negative estimate: module docstring)."""
    mined = [(q, n) for (q, _), negs in zip(pair_rows.tolist(), rows.tolist()) for n in negs if n >= 0]
    depth3 = np.array([graph.within(q, n, EXCLUDED_DEPTH + 1) for q, n in mined], dtype=bool)
    heldout = np.array([(min(q, n), max(q, n)) in held_out for q, n in mined], dtype=bool)
    score = np.array([float(emb[q] @ emb[n]) for q, n in mined])
    nan = float("nan")
    return {"false_negative_share": float((depth3 | heldout).mean()) if mined else nan,
            "depth3_share": float(depth3.mean()) if mined else nan,
            "heldout_pair_share": float(heldout.mean()) if mined else nan,
            "pairs_with_negative": float((rows >= 0).any(1).mean()) if len(rows) else nan,
            "mean_score": float(score.mean()) if mined else nan}


# ------------------------------------------------------------------------------------------------ embedding
def embed_notes(module: NoteLLM2Module, notes: NoteDataset, batch_size: int,
                trainer: L.Trainer | None = None) -> np.ndarray:
    """``e_m`` of every note of ``notes`` as validation embeds them (eval mode, no gradient, full gate), ``(N, d)``.

    The training/eval mode of every submodule is restored after, so a frozen tower stays in eval mode.
    """
    # its own generator: an iterator draws a seed, which must not move the training RNG (exact resume)
    loader = DataLoader(notes, batch_size=batch_size, shuffle=False, collate_fn=collate_notes,
                        generator=torch.Generator())
    modes = {m: m.training for m in module.modules()}
    forward_context = trainer.precision_plugin.forward_context() if trainer is not None else contextlib.nullcontext()
    module.eval()
    out = []
    try:
        with torch.no_grad(), fusion_scale(module.encoder.gate, 1.0), forward_context:
            for batch in loader:
                out.append(module(move_data_to_device(batch, module.device)).e_m.float().cpu())
    finally:
        for m, training in modes.items():
            m.train(training)
    return torch.cat(out).numpy()


# ------------------------------------------------------------------------------------------------ the callback
class HardNegativeMiner(L.Callback):
    """Mines hard negatives into the training batches (module docstring); added by ``NoteLLM2Module`` when
    ``model.hard_negatives.start_step`` is set.

    Args:
        config: Mining settings.
    """

    def __init__(self, config: HardNegativeConfig) -> None:
        self.config = config
        self.dataset: PairDataset | None = None
        self.graph: PairGraph | None = None
        self.pair_rows: np.ndarray | None = None  # (n_pairs, 2) graph positions
        self.table: torch.Tensor | None = None  # (n_pairs, per_pair) shared with the dataset
        self.last_mined: int | None = None
        self._saved: torch.Tensor | None = None  # the table of a checkpoint, until attached

    # -------------------------------------------------------------------------------------------- hooks
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Attach the negatives table to the training dataset, before its loader starts any worker."""
        self._attach(trainer)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Re-attach when the trainer rebuilt the training loader (``reload_dataloaders_every_n_epochs``)."""
        self._attach(trainer)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        """Mine when a pass is due at this optimiser step; log its statistics."""
        step = trainer.global_step
        if not self.config.due(step, self.last_mined):
            return
        stats = self.mine(trainer, pl_module)
        self.last_mined = step
        pl_module.log_dict({METRIC_PREFIX + k: v for k, v in stats.items()}, on_step=True, on_epoch=False,
                           batch_size=1)

    def state_dict(self) -> dict[str, Any]:
        """The current negatives and the step they were mined at (tensors and ints: ``weights_only``-loadable)."""
        if self.table is None:
            return {}
        return {"negatives": self.table.clone(), "mined_at": -1 if self.last_mined is None else self.last_mined}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume with the checkpoint's negatives (attached at train start) and refresh schedule."""
        if state_dict:
            self._saved = state_dict["negatives"]
            self.last_mined = None if state_dict["mined_at"] < 0 else int(state_dict["mined_at"])

    # -------------------------------------------------------------------------------------------- work
    def mine(self, trainer: L.Trainer, pl_module: NoteLLM2Module) -> dict[str, float]:
        """One pass: embed the training notes, mine, write the shared table; returns the statistics."""
        self._attach(trainer)
        start = time.perf_counter()
        notes = NoteDataset(self.graph.note_ids, self.dataset.notes, self.dataset.processor)
        dm = getattr(trainer, "datamodule", None)
        batch_size = int(getattr(dm, "hparams", {}).get("eval_batch_size", 64))
        emb = embed_notes(pl_module, notes, batch_size, trainer)
        mined = mine_negatives(emb, self.graph, self.pair_rows, self.config, self._held_out(dm))
        self.table.copy_(torch.from_numpy(mined.rows))
        stats = {**mined.stats, "seconds": time.perf_counter() - start}
        log.info("Hard negatives mined at step %d over %d notes: %s", trainer.global_step, len(self.graph),
                 ", ".join(f"{k} {v:.3g}" for k, v in stats.items()))
        return stats

    def _held_out(self, dm: Any) -> set[tuple[int, int]]:
        """Validation pairs whose notes are both in the graph, as ``(min, max)`` positions."""
        pos = self.graph.position
        pairs = getattr(dm, "val_pairs", None) or []
        return {(min(pos[q], pos[t]), max(pos[q], pos[t])) for q, t in pairs if q in pos and t in pos}

    def _attach(self, trainer: L.Trainer) -> None:
        dataset = getattr(trainer.train_dataloader, "dataset", None)
        if not isinstance(dataset, PairDataset):
            raise TypeError("model.hard_negatives mines from the in-memory training pairs (NoteDataModule's "
                             f"PairDataset), not from {type(dataset).__name__}: with data.streaming set "
                             "--data.streaming null, or turn mining off with --model.hard_negatives.start_step null.")
        if dataset is self.dataset:
            return
        self.graph = PairGraph.from_pairs(dataset.pairs)
        pos = self.graph.position
        self.pair_rows = np.array([(pos[q], pos[t]) for q, t in dataset.pairs], dtype=np.int64).reshape(-1, 2)
        table = dataset.attach_negatives(self.graph.note_ids, self.config.per_pair)
        previous = self.table if self.table is not None else self._saved
        if previous is not None and previous.shape == table.shape:
            table.copy_(previous)
        elif previous is not None:
            log.warning("The saved hard negatives (%s) do not fit the training pairs (%s); mining again.",
                        tuple(previous.shape), tuple(table.shape))
            self.last_mined = None
        self.dataset, self.table, self._saved = dataset, table, None
