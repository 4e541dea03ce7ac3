"""Saved hyperparameters across layouts: checkpoints of every release keep loading.

Layouts:

* **flat** (before ``model.encoder`` existed): the encoder's settings (``micl``, ``late_fusion``, ``embed_dim``...)
  sit at the top level of the module's hyperparameters, next to the training settings.
* **current**: they sit in one plain dict under ``encoder`` (never a dataclass object, so checkpoints stay loadable
  with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from typing import IO, Any

import torch

from notellm2_pl.model.config import encoder_keys

ENCODER_KEY = "encoder"
HPARAMS_KEY = "hyper_parameters"  # LightningModule.CHECKPOINT_HYPER_PARAMS_KEY


def is_flat_layout(hparams: Mapping[str, Any]) -> bool:
    """Whether ``hparams`` holds any encoder setting at the top level (the flat layout)."""
    return any(k in hparams for k in encoder_keys())


def migrate_hparams(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """Module hyperparameters of any layout in the current one (a copy; current ones come back unchanged).

    Encoder settings found at the top level move under ``encoder``; values already under ``encoder`` win.
    """
    hp = dict(hparams)
    flat = {k: hp.pop(k) for k in encoder_keys() if k in hp}
    if flat:
        nested = hp.get(ENCODER_KEY) or {}
        hp[ENCODER_KEY] = {**flat, **dict(nested)}
    return hp


def migrate_checkpoint_file(source: str | os.PathLike[str] | IO[bytes], folder: str | os.PathLike[str]) -> str | None:
    """A copy of a flat-layout checkpoint with migrated hyperparameters, written into ``folder``; None if current.

    The tensors are memory-mapped while copying (for a checkpoint file), so the copy costs disk, not memory. Only
    checkpoints of the flat layout are copied; a source this function cannot read (a remote URL, an old
    non-zip file) is left to Lightning as it is.

    Args:
        source: The checkpoint's path or open binary file.
        folder: Where the copy goes (e.g. a temporary directory).

    Returns:
        The copy's path, or None when the checkpoint needs no migration.
    """
    try:
        if isinstance(source, (str, os.PathLike)):
            ckpt = torch.load(source, map_location="cpu", mmap=True, weights_only=True)
        else:
            start = source.tell()
            ckpt = torch.load(source, map_location="cpu", weights_only=True)
            source.seek(start)
    except (OSError, RuntimeError, pickle.UnpicklingError):
        return None
    hparams = ckpt.get(HPARAMS_KEY) if isinstance(ckpt, dict) else None
    if not isinstance(hparams, Mapping) or not is_flat_layout(hparams):
        return None
    ckpt[HPARAMS_KEY] = migrate_hparams(hparams)
    path = os.path.join(folder, "migrated.ckpt")
    torch.save(ckpt, path)
    return path
