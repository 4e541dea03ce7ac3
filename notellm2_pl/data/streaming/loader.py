"""The streaming training loader: litdata's ``StreamingDataLoader`` with the exact resume of the in-memory path.

litdata's loader already saves its position in ``state_dict()`` and is sharded by litdata itself (chunks are
assigned to ranks and workers; under ``torch.distributed`` each rank reads its own share). Two things are added so a
resumed run matches an uninterrupted one as :mod:`notellm2_pl.data.sampling` guarantees for the in-memory path:

* the position saved is the number of batches **training consumed** (Lightning's batch progress), not the number
  the loader yielded: Lightning fetches one batch ahead, which litdata's own count includes (resuming from it would
  skip that batch);
* the torch, numpy and Python RNG states at save time, put back when the resumed loader is first iterated; and
  iterator creation draws its worker seeds from the loader's own generator, not from the global RNG.

Batches come from workers in turn (PyTorch's in-order delivery), so ``n`` consumed batches are ``n * batch_size``
samples and the last one came from worker ``(n - 1) % num_workers``: the state litdata would have written after
yielding exactly ``n`` batches.
"""

from __future__ import annotations

from typing import Any

import torch
from litdata import StreamingDataLoader, StreamingDataset

from notellm2_pl.data.sampling import Progress, get_rng_state, set_rng_state


class ResumableStreamingLoader(StreamingDataLoader):
    """``StreamingDataLoader`` whose checkpointed position is what training consumed, plus the RNG states.

    Args:
        dataset: The streaming dataset (training pairs).
        progress: ``(batches consumed this epoch, batches per epoch)`` from the trainer
            (:func:`~notellm2_pl.data.sampling.trainer_progress`); None: the batches this loader yielded.
        **kwargs: ``StreamingDataLoader`` arguments (``batch_size``, ``collate_fn``, ``drop_last``, ...).
    """

    def __init__(self, dataset: StreamingDataset, progress: Progress | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("generator", torch.Generator())  # iterator creation must not draw from the global RNG
        super().__init__(dataset, **kwargs)
        self.progress = progress
        self._pending_rng: dict[str, Any] | None = None

    def __iter__(self) -> Any:
        self.generator.manual_seed(self.dataset.seed + self.current_epoch)  # worker seeds depend on the epoch only
        if self._pending_rng is not None:
            set_rng_state(self._pending_rng)
            self._pending_rng = None
        yield from super().__iter__()

    def state_dict(self) -> dict[str, Any]:
        """litdata's state at the consumed position, and ``rng`` (tensors, ints, strings and lists)."""
        state = super().state_dict()
        if self.progress is not None:
            consumed, per_epoch = self.progress()
            self._rewind(state, consumed, per_epoch)
        state["rng"] = get_rng_state()
        return state

    def _rewind(self, state: dict[str, Any], consumed: int, per_epoch: int) -> None:
        """Make ``state`` litdata's state after exactly ``consumed`` batches of its epoch.

        A finished epoch (``consumed >= per_epoch``) saves no position, so the next iteration starts the next
        epoch; an epoch begun (a batch fetched) but not consumed saves the previous epoch as finished, so it starts
        again.
        """
        bs = int(self.batch_size or 1)
        samples = consumed * bs if 0 < consumed < per_epoch else 0
        if samples == state["num_samples_yielded"]:
            return
        if consumed == 0:
            state["current_epoch"] -= 1
        state["num_samples_yielded"] = samples
        state["dataset"] = dict(self.dataset.state_dict(samples, self.num_workers, bs))
        state["dataset"]["current_epoch"] = state["current_epoch"]
        state["latest_worker_idx"] = (consumed - 1) % max(1, self.num_workers) if samples else 0

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved position; the RNG states are restored when the loader is next iterated."""
        state = dict(state)
        self._pending_rng = state.pop("rng", None)
        super().load_state_dict(state)
