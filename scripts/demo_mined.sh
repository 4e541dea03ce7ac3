#!/usr/bin/env bash
# From behaviour logs to a trained model, offline on CPU (each data step is skipped when its output exists):
#   1. the synthetic notes benchmark                      -> data/synthetic
#   2. synthetic behaviour logs over it (users, sessions,
#      popular notes, noise clicks)                       -> data/synthetic_logs.parquet
#   3. mine-pairs: co-occurrence pairs, cold-start split,
#      scored against the planted clusters                -> data/mined (precision / recall printed)
#   4. the text prior of the demo (shared with scripts/demo.sh) -> data/tiny-qwen2-prior
#   5. NoteLLM-2 (recipes/demo.yaml + recipes/demo_mined.yaml) trained on the mined pairs -> runs/mined
#   6. test-set Recall@K of the best checkpoint on the mined cold-start test pairs (chance: K / pool size)
#
#   bash scripts/demo_mined.sh                # PYTHON=/path/to/python to choose the interpreter
set -euo pipefail

PYTHON="${PYTHON:-python}"
cd "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 TRANSFORMERS_VERBOSITY=error

start=$(date +%s)
[ -f data/synthetic/dataset.json ] || "${PYTHON}" -m notellm2_pl synth --out data/synthetic --preset demo
[ -f data/mined/pairs_train.csv ] || "${PYTHON}" -m notellm2_pl mine-pairs --synthetic-log \
    --logs data/synthetic_logs.parquet --catalogue data/synthetic --out data/mined --score-against data/synthetic
"${PYTHON}" -m notellm2_pl pretrain-text --data data/synthetic --out data/tiny-qwen2-prior
# shellcheck disable=SC2086
"${PYTHON}" -m notellm2_pl fit --config recipes/demo.yaml --config recipes/demo_mined.yaml ${EXTRA:-}
"${PYTHON}" -m notellm2_pl evaluate --ckpt_path runs/mined/checkpoints/best.ckpt --out runs/mined/eval
echo "[demo_mined] done in $(( $(date +%s) - start )) s. TensorBoard: tensorboard --logdir runs/mined"
