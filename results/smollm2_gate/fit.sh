#!/bin/bash
# usage: fit.sh NAME DATA STEPS VAL_EVERY [extra args]
name=$1; data=$2; steps=$3; every=$4; shift 4
out=/tmp/collapse/runs/$name
mkdir -p $out
cat > $out/override.yaml <<EOY
trainer:
  default_root_dir: $out
  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args: {save_dir: $out, name: log}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {dirpath: $out/checkpoints, filename: best, monitor: val/recall, mode: max,
                  save_last: true, auto_insert_metric_name: false}
EOY
cd /work/main && . .venv/bin/activate && /usr/bin/time -v python -m notellm2_pl fit --config recipes/smollm2_effnet.yaml \
  --config $out/override.yaml --data.root $data --data.val_pool_extra 300 \
  --trainer.max_steps $steps --trainer.val_check_interval $every "$@" > $out/out.txt 2>&1
echo rc $? >> $out/out.txt
