#!/usr/bin/env bash
# The hidden-state loss on the quick budget (issue 23, item 2): the size trade-off's 3-layer student
# (benchmarks/size_tradeoff, w384_l3_pretrained: the same teacher, data and budget) without and with
# --hidden-weight 1 (each student layer's output against teacher layers 1, 3, 5; the teacher runs online).
# Usage: benchmarks/kd_variants/run_hidden.sh [SEED ...]   (default: 42 43)
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root
DATA=../shared/data/aclImdb_v1.tar.gz
COMMON="--teacher runs/quick_23/sparse_teacher --data $DATA --train-limit 1000 --val-max 200 --unlabeled unsup
  --unlabeled-limit 800 --epochs 1 --lr 5e-4 --batch-size 16 --max-length 256 --layers 3 --heads 4
  --init pretrained --no-progress"
for SEED in ${*:-42 43}; do
  for HIDDEN in 0 1; do
    name=hidden_weight_${HIDDEN}_seed_$SEED
    .venv/bin/sdbert distill $COMMON --seed $SEED --hidden-weight $HIDDEN --output runs/kd_hidden/$name
    .venv/bin/sdbert evaluate --model runs/kd_hidden/$name --data $DATA --split test --limit 1000 --no-progress
    mkdir -p benchmarks/kd_variants/hidden/$name
    cp runs/kd_hidden/$name/summary.json runs/kd_hidden/$name/eval_test.json benchmarks/kd_variants/hidden/$name/
  done
done
