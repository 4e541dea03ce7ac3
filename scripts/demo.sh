#!/usr/bin/env bash
# The offline demo, end to end on CPU (each step is skipped when its output already exists):
#   1. the synthetic notes benchmark            -> data/synthetic
#   2. text priors for a tiny Qwen2-shaped LLM  -> data/tiny-qwen2-prior  (a few minutes)
#   3. NoteLLM-2 training (recipes/demo.yaml)   -> runs/demo (TensorBoard logs, checkpoints)
#   4. the best checkpoint exported          -> runs/demo/export (Embedder.from_pretrained, serve, index)
#   5. test-set Recall@K of the export on all / short / long subsets, with the only-image / only-text probes, next
#      to the baselines that need no training (TF-IDF, BM25, the untrained backbones) and the baseline, collapse
#      and modality checks                   -> runs/demo/export/eval
#
#   bash scripts/demo.sh                      # PYTHON=/path/to/python to choose the interpreter
#   EXTRA="--trainer.max_epochs 1" bash scripts/demo.sh
set -euo pipefail

PYTHON="${PYTHON:-python}"
cd "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 TRANSFORMERS_VERBOSITY=error

start=$(date +%s)
[ -f data/synthetic/dataset.json ] || "${PYTHON}" -m notellm2_pl synth --out data/synthetic --preset demo
"${PYTHON}" -m notellm2_pl pretrain-text --data data/synthetic --out data/tiny-qwen2-prior
# shellcheck disable=SC2086
"${PYTHON}" -m notellm2_pl fit --config recipes/demo.yaml ${EXTRA:-}
"${PYTHON}" -m notellm2_pl export --config recipes/demo.yaml --ckpt_path runs/demo/checkpoints/best.ckpt \
    --out runs/demo/export
"${PYTHON}" -m notellm2_pl evaluate --model runs/demo/export --data data/synthetic --batch_size 128
echo "[demo] done in $(( $(date +%s) - start )) s. TensorBoard: tensorboard --logdir runs"
