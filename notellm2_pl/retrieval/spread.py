"""How spread out a set of embeddings is, and whether it has collapsed (docs/method.md#collapsed-embeddings).

A collapsed set (every note mapped to nearly the same vector) cannot rank anything: every score ties up to float
noise, and any Recall@K read from it says more about the tie rule than about the model. Two numbers describe a set
of L2-normalised rows ``u_i``:

* **spread** ``= 1 - ||mean_i u_i||^2``: the total variance of the unit vectors, in ``[0, 1]``. It equals
  ``(N - 1) / N * (1 - mean pairwise cosine)``, so a spread of 1e-4 means two notes' cosine is 0.9999 on average.
  Contrastively trained item embeddings sit around 0.5-1; a pretrained LLM's raw hidden states, which are very
  anisotropic, around 0.01-0.1. A set below :data:`COLLAPSE_SPREAD` is *collapsed*: score differences between
  notes are then within a few hundred float32 ulps of each other.
* **effective rank**: ``exp(entropy)`` of the normalised eigenvalues of the centred covariance (Roy and Vetterli,
  2007): how many directions the variation uses, 1 to ``d``. It is reported, not used to decide collapse: isotropic
  float noise around one point has a high effective rank.

Everything here is a pure function of an array.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from notellm2_pl.retrieval.ranking import as_float32_matrix

COLLAPSE_SPREAD = 1e-4
"""Spread below which a set counts as collapsed (mean pairwise cosine above ~0.9999)."""

SAMPLE_ROWS = 20_000
"""Rows the measure reads at most (an even sample of larger sets): enough for four significant digits."""


@dataclass(frozen=True)
class Spread:
    """The spread of one embedding set.

    Attributes:
        num_rows: Rows measured (after sampling).
        spread: ``1 - ||mean of the unit rows||^2``, in [0, 1].
        mean_cosine: Mean cosine between two different rows.
        effective_rank: ``exp(entropy)`` of the centred covariance's normalised eigenvalues (1 to d).
        mean_dim_std: Mean over dimensions of the per-dimension standard deviation of the unit rows.
    """

    num_rows: int
    spread: float
    mean_cosine: float
    effective_rank: float
    mean_dim_std: float

    @property
    def collapsed(self) -> bool:
        """Whether the set is below :data:`COLLAPSE_SPREAD` (a set of fewer than two rows never is)."""
        return self.num_rows >= 2 and self.spread < COLLAPSE_SPREAD

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly fields plus ``collapsed``."""
        return {**asdict(self), "collapsed": self.collapsed}

    def line(self, name: str) -> str:
        """One report line: ``name: spread ..., mean cosine ..., effective rank ...`` and the verdict."""
        verdict = "COLLAPSED" if self.collapsed else "ok"
        return (f"{name}: spread {self.spread:.3g}, mean cosine {self.mean_cosine:.4f}, effective rank "
                f"{self.effective_rank:.1f}, per-dim std {self.mean_dim_std:.2g}: {verdict}")


def embedding_spread(emb: Any, sample: int = SAMPLE_ROWS) -> Spread:
    """Measure the spread of an ``(N, d)`` embedding set (numpy or torch; rows are L2-normalised here).

    Args:
        emb: (N, d) embeddings; zero rows are left at zero.
        sample: Rows to read at most; a larger set is sampled evenly (deterministic).

    Returns:
        The :class:`Spread`.

    Raises:
        ValueError: If ``emb`` is not 2-D.
    """
    x = as_float32_matrix(emb, "embeddings").astype(np.float64)  # (N, d)
    if x.shape[0] > sample:
        x = x[np.linspace(0, x.shape[0] - 1, sample).round().astype(np.int64)]
    n = x.shape[0]
    if n == 0:
        return Spread(0, float("nan"), float("nan"), float("nan"), float("nan"))
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    u = x / np.where(norms > 0, norms, 1.0)  # (N, d) unit rows
    mean = u.mean(axis=0)  # (d,)
    spread = float(max(0.0, 1.0 - mean @ mean))
    sq = float((u * u).sum())  # N for unit rows (fewer if some rows are zero)
    mean_cos = float((n * n * (mean @ mean) - sq) / (n * (n - 1))) if n > 1 else float("nan")
    centred = u - mean  # (N, d)
    # the covariance (d, d) and the Gram matrix (N, N) share their non-zero eigenvalues: take the smaller
    gram = centred.T @ centred if centred.shape[1] <= n else centred @ centred.T
    eig = np.clip(np.linalg.eigvalsh(gram / n), 0.0, None)  # (min(N, d),)
    total = eig.sum()
    if total > 0:
        p = eig[eig > 0] / total
        eff_rank = float(math.exp(-(p * np.log(p)).sum()))
    else:
        eff_rank = 0.0 if n > 1 else float("nan")  # no variation at all
    return Spread(n, spread, mean_cos, eff_rank, float(u.std(axis=0).mean()))


def spread_metrics(sets: Mapping[str, Any], prefix: str = "val") -> tuple[dict[str, float], list[str]]:
    """Scalars of several embedding sets, for a logger, and the report lines of the collapsed ones.

    Args:
        sets: ``{key: (N, d) embeddings}`` (e.g. ``e_m``, ``e_v``).
        prefix: Scalar name prefix.

    Returns:
        ``({prefix/spread/key: ..., prefix/effective_rank/key: ...}, [Spread.line(key) of each collapsed set])``.
    """
    metrics: dict[str, float] = {}
    collapsed: list[str] = []
    for key, emb in sets.items():
        sp = embedding_spread(emb)
        metrics[f"{prefix}/spread/{key}"] = sp.spread
        metrics[f"{prefix}/effective_rank/{key}"] = sp.effective_rank
        if sp.collapsed:
            collapsed.append(sp.line(key))
    return metrics, collapsed
