"""Exact resume: a seeded, resumable training order and the RNG states, saved in every checkpoint.

Lightning restores a dataloader that has ``state_dict()`` / ``load_state_dict()`` (its ``_Stateful`` protocol):
the state is stored under ``loops.fit_loop.state_dict.combined_loader`` of the checkpoint and loaded before the
first batch of a resumed run. :class:`ResumableDataLoader` stores:

* the sampler's epoch and seed, and how many batches of that epoch training has consumed (read from Lightning's
  own batch progress at save time, so batches the loader pre-fetched but training did not use are not skipped);
* the torch (CPU and CUDA), numpy and Python RNG states at save time. They are put back when the resumed loader is
  first iterated, i.e. right before the next training step, so dropout draws continue exactly.

A resumed run then sees the same batches in the same order and the same random draws as an uninterrupted run
(tests/test_resume.py checks losses and final weights at atol 1e-5 on CPU). Everything stored is tensors, ints and
lists, so checkpoints stay loadable with ``torch.load(weights_only=True)``.

Limits: data-side randomness must not draw from the global RNG for the resume to be bit-exact (the default
``train_flip: false`` draws nothing; the random flip draws from it in the loader, so with ``train_flip: true`` the
order is exact but flips may differ after a resume). The shuffle is :class:`torch.utils.data.DistributedSampler`'s
(seed + epoch), so the order does not depend on the number of workers.

Optional length bucketing (``data.length_bucketing``): within pools of that many batches of the shuffled order,
pairs are sorted by length and cut into batches, and the batches of the epoch are shuffled (:func:`bucket_order`), so
a batch pads less. It is a pure function of (seed, epoch), so resume stays exact.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

if TYPE_CHECKING:
    import lightning as L

log = logging.getLogger(__name__)

Progress = Callable[[], tuple[int, int]]


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (seeded per-epoch shuffle, one shard per rank) that can start mid-epoch.

    Being a ``DistributedSampler``, Lightning keeps it as is under DDP instead of wrapping it.

    Args:
        dataset: The dataset (only its length is used).
        num_replicas: Number of ranks.
        rank: This rank.
        shuffle: Shuffle with ``torch.Generator().manual_seed(seed + epoch)``.
        seed: Shuffle seed (the same on every rank).
        lengths: Per-sample length (any monotone proxy of the padded length), for bucketing.
        batch_size: Batch size per rank (bucketing cuts batches of this size).
        bucket_pool: Sort by length within pools of this many batches (0: no bucketing).
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0, lengths: Sequence[int] | None = None, batch_size: int = 1,
                 bucket_pool: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        if bucket_pool and (lengths is None or len(lengths) != len(dataset)):
            raise ValueError("Length bucketing needs one length per sample.")
        self.lengths, self.batch_size, self.bucket_pool = lengths, batch_size, bucket_pool
        self.skip = 0  # samples of ``self.epoch`` (this rank) to skip on the next iteration only

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        if self.bucket_pool:
            indices = bucket_order(indices, self.lengths, self.batch_size, self.bucket_pool,
                                   seed=self.seed + self.epoch)
        skip, self.skip = self.skip, 0
        return iter(indices[skip:])

    # __len__ stays the full epoch: Lightning counts the resumed epoch's batches from its restored progress.


def bucket_order(order: Sequence[int], lengths: Sequence[int], batch_size: int, pool: int, seed: int) -> list[int]:
    """Reorder ``order`` so consecutive ``batch_size`` chunks hold samples of similar length.

    The shuffled ``order`` is cut into pools of ``pool`` batches; each pool is sorted by length and cut into
    batches; all full batches of the epoch are shuffled (``random.Random(seed)``) and the leftover samples (fewer than
    one batch) go last, where ``drop_last`` drops them as it would without bucketing. Larger pools pad less, but
    similar-length notes meet more often as in-batch negatives.
    """
    batches, rest = [], []
    for start in range(0, len(order), batch_size * pool):
        chunk = sorted(order[start:start + batch_size * pool], key=lambda i: lengths[i])
        full = len(chunk) - len(chunk) % batch_size
        batches += [chunk[i:i + batch_size] for i in range(0, full, batch_size)]
        rest += chunk[full:]
    random.Random(seed).shuffle(batches)
    return [i for b in batches for i in b] + rest


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` over a :class:`ResumableSampler` whose position and RNG states go into checkpoints.

    Args:
        dataset: Training dataset.
        sampler: The resumable sampler.
        progress: Returns ``(batches consumed this epoch, batches per epoch)`` from the trainer; None: nothing is
            consumed (a checkpoint without a trainer resumes at the start of the epoch).
        **kwargs: Passed to ``DataLoader`` (``batch_size``, ``collate_fn``, ``drop_last``, ``num_workers``, ...).
    """

    def __init__(self, dataset: Dataset, sampler: ResumableSampler, progress: Progress | None = None,
                 **kwargs: Any) -> None:
        kwargs.setdefault("generator", torch.Generator())  # iterator creation must not draw from the global RNG
        super().__init__(dataset, sampler=sampler, **kwargs)
        self.progress = progress
        self._pending_rng: dict[str, Any] | None = None

    def __iter__(self):
        sampler: ResumableSampler = self.sampler  # type: ignore[assignment]
        self.generator.manual_seed(sampler.seed + sampler.epoch)  # worker seeds depend on the epoch only
        if self._pending_rng is not None:
            set_rng_state(self._pending_rng)
            self._pending_rng = None
        return super().__iter__()

    def state_dict(self) -> dict[str, Any]:
        """Sampler position and RNG states (tensors, ints and lists only: ``weights_only``-loadable)."""
        sampler: ResumableSampler = self.sampler  # type: ignore[assignment]
        consumed, per_epoch = self.progress() if self.progress is not None else (0, len(self))
        return {"epoch": int(sampler.epoch), "seed": int(sampler.seed), "consumed_batches": int(consumed),
                "batches_per_epoch": int(per_epoch), "batch_size": int(self.batch_size or 1),
                "num_replicas": int(sampler.num_replicas), "num_samples": int(sampler.num_samples),
                "rng": get_rng_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved position; RNG states are restored when the loader is next iterated."""
        sampler: ResumableSampler = self.sampler  # type: ignore[assignment]
        if (state["num_samples"], state["num_replicas"]) != (sampler.num_samples, sampler.num_replicas) \
                or state["seed"] != sampler.seed or state["batch_size"] != self.batch_size:
            log.warning("Resuming with another dataset size, seed, batch size or world size than the checkpoint's "
                        "(%s); the data order restarts at the beginning of epoch %d instead of continuing exactly.",
                        {k: state[k] for k in ("num_samples", "num_replicas", "seed", "batch_size")},
                        state["epoch"])
            sampler.set_epoch(state["epoch"])
            return
        if state["consumed_batches"] >= state["batches_per_epoch"]:  # saved at the end of an epoch
            sampler.set_epoch(state["epoch"] + 1)
        else:
            sampler.set_epoch(state["epoch"])
            sampler.skip = state["consumed_batches"] * state["batch_size"]
        self._pending_rng = state.get("rng")


def trainer_progress(trainer: L.Trainer) -> Progress:
    """``progress`` for :class:`ResumableDataLoader`: batches processed this epoch, per Lightning's loop state."""
    def progress() -> tuple[int, int]:
        loop = trainer.fit_loop.epoch_loop
        per_epoch = trainer.num_training_batches
        per_epoch = int(per_epoch) if per_epoch != float("inf") else 1 << 62
        return int(loop.batch_progress.current.processed), per_epoch

    return progress


def resumable_loader(dataset: Dataset, trainer: L.Trainer | None, batch_size: int, seed: int, shuffle: bool = True,
                     lengths: Sequence[int] | None = None, bucket_pool: int = 0,
                     **kwargs: Any) -> ResumableDataLoader:
    """The training loader: seeded shuffle sharded by the trainer's world size, resumable mid-epoch.

    Args:
        dataset: Training dataset.
        trainer: The Lightning trainer (world size, rank, progress), or None outside a trainer.
        batch_size: Batch size per rank.
        seed: Shuffle seed.
        shuffle: Shuffle (else dataset order).
        lengths: Per-sample lengths for bucketing.
        bucket_pool: Length bucketing within pools of this many batches (0: off; :func:`bucket_order`).
        **kwargs: More ``DataLoader`` arguments (``collate_fn``, ``drop_last``, ``num_workers``, ...).
    """
    world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
    sampler = ResumableSampler(dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed, lengths=lengths,
                               batch_size=batch_size, bucket_pool=bucket_pool)
    progress = trainer_progress(trainer) if trainer is not None else None
    return ResumableDataLoader(dataset, sampler, progress, batch_size=batch_size, **kwargs)


# ------------------------------------------------------------------------------------------------------ RNG
def get_rng_state() -> dict[str, Any]:
    """torch (CPU, CUDA), numpy and Python RNG states as tensors / ints / lists (``weights_only``-loadable)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": int(version), "state": list(py_state), "gauss": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`get_rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
