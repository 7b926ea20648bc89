#!/usr/bin/env bash
# The standard preset's student learning rate, chosen on validation only: the no-KD student (alpha 1,
# labels alone, the baseline KD has to beat) at the standard preset's data, length and budget, from the
# standard run's sparse teacher folder (only its tokenizer, config and starting checkpoint are used at
# alpha 1). Usage: run.sh [LR ...]. Each run's summary.json (best validation accuracy on the 500 held-out reviews) is copied here.
set -euo pipefail
cd "$(dirname "$0")/../../.."  # the repository root
DATA=../shared/data/aclImdb_v1.tar.gz
T=runs/standard_23/sparse_teacher
for LR in ${*:-1e-4 2e-4 5e-4 1e-3}; do  # learning rates to run (default: all of them)
  out=runs/student_lr/no_kd_lr$LR
  .venv/bin/sdbert distill --teacher $T --data $DATA --train-limit 4000 --val-max 500 --max-length 512 \
    --epochs 1 --batch-size 16 --lr $LR --seed 42 --alpha 1.0 --layers 3 --heads 4 --init pretrained \
    --no-progress --output $out
  mkdir -p benchmarks/recipe/standard_student_lr/no_kd_lr$LR
  cp $out/summary.json benchmarks/recipe/standard_student_lr/no_kd_lr$LR/
done
