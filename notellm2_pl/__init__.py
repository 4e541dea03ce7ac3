"""notellm2_pl: NoteLLM-2 multimodal item-embedding models for I2I recommendation, on PyTorch Lightning.

Importing this package has no side effects: no plugin scan, no heavy imports. The public API is re-exported
lazily (PEP 562), so ``from notellm2_pl import Embedder`` imports torch only when it is asked for:

- :class:`Embedder` (``notellm2_pl.inference``): embed notes with an exported model;
- :class:`NoteLLM2Module` (``notellm2_pl.training``): the LightningModule;
- :class:`NoteDataModule` (``notellm2_pl.data``): the LightningDataModule;
- :mod:`registry` (``notellm2_pl.plugins``): the plugin registry.

The subpackages are the map of the design: ``plugins`` (contract, registry), ``model`` (encoder, late fusion,
losses), ``data`` (tables, prompts, processing, loaders), ``training`` (LightningModule, GradCache, text prior),
``retrieval`` (Recall@K, FAISS, embeddings), ``inference`` (model factory, export, Embedder), ``analysis``
(ablation grids, reports, saliency) and ``commands`` (the command line; the library never imports it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "Embedder": ("notellm2_pl.inference.embedder", "Embedder"),
    "NoteLLM2Module": ("notellm2_pl.training.module", "NoteLLM2Module"),
    "NoteDataModule": ("notellm2_pl.data.datamodule", "NoteDataModule"),
    "registry": ("notellm2_pl.plugins.registry", None),
}
__all__ = ["Embedder", "NoteDataModule", "NoteLLM2Module", "__version__", "registry"]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from notellm2_pl.data.datamodule import NoteDataModule
    from notellm2_pl.inference.embedder import Embedder
    from notellm2_pl.plugins import registry
    from notellm2_pl.training.module import NoteLLM2Module


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'notellm2_pl' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
