"""Where each query's target ranks in the pool, ties broken at random (docs/method.md#ties).

A pure value type shared by the exact kernel (:class:`~notellm2_pl.retrieval.scoring.RankCounter`), the ranking of
:mod:`~notellm2_pl.retrieval.ranking` and the Recall@K protocol of :mod:`~notellm2_pl.retrieval.recall`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Ranks:
    """Where each query's target ranks in the pool, with ties broken at random (module docstring).

    Attributes:
        higher: (Q,) int64 pool notes scoring above the target's tie band.
        ties: (Q,) int64 other pool notes inside it (the target itself excluded).
    """

    higher: np.ndarray
    ties: np.ndarray

    @classmethod
    def strict(cls, ranks: np.ndarray | Sequence[int]) -> Ranks:
        """Ranks without ties (each entry the target's 0-based rank)."""
        higher = np.asarray(ranks, dtype=np.int64).reshape(-1)
        return cls(higher, np.zeros_like(higher))

    def __len__(self) -> int:
        return int(self.higher.shape[0])

    @property
    def expected(self) -> np.ndarray:
        """(Q,) float64 expected 0-based rank, ``higher + ties / 2``."""
        return self.higher + self.ties / 2.0

    def hits(self, k: int) -> np.ndarray:
        """(Q,) float64 probability that the target is among the top ``k``: ``clip((k - higher) / (ties + 1), 0, 1)``.

        Raises:
            ValueError: If ``k`` is not a positive integer.
        """
        if int(k) <= 0:
            raise ValueError(f"K must be a positive integer, got {k}.")
        return np.clip((int(k) - self.higher) / (self.ties + 1.0), 0.0, 1.0)

    def subset(self, index: np.ndarray | slice) -> Ranks:
        """The ranks of some queries."""
        return Ranks(self.higher[index], self.ties[index])
