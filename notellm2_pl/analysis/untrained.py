"""Zero-shot baselines: a recipe's freshly built (untrained) model saved as a checkpoint.

An ablation run with ``trainer.max_steps: 0`` trains nothing and so saves no checkpoint; evaluate and saliency take
checkpoints, so ``ablate save-untrained`` writes this one instead (the ``checkpoint`` stage of
:mod:`notellm2_pl.analysis.pipeline`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from notellm2_pl.atomic import atomic_save
from notellm2_pl.inference.factory import build_from_config


def save_untrained(configs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]) -> Path:
    """Build a recipe's model without training and save it as a checkpoint (atomically).

    Args:
        configs: Recipe file(s) or a resolved config.
        out: Checkpoint path to write.

    Returns:
        ``out``.
    """
    module, _, data_cfg = build_from_config(list(configs))
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                 "datamodule_hyper_parameters": data_cfg, "global_step": 0, "untrained": True}, path,
                saver=torch.save)
    return path
