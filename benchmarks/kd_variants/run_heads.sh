#!/usr/bin/env bash
# The students' heads on the quick budget (issue 23): the size trade-off's 3-layer student, started from
# MiniLM's layers 0, 2, 4, with the paper's 4 heads (MiniLM's 12 heads' q/k/v re-split into 4 wider heads)
# or with MiniLM's own 12 (its pretrained attention kept as it was). Same parameters, teacher, data, budget.
# Usage: benchmarks/kd_variants/run_heads.sh [SEED ...]   (default: 42 43)
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root
DATA=../shared/data/aclImdb_v1.tar.gz
COMMON="--teacher runs/quick_23/sparse_teacher --data $DATA --train-limit 1000 --val-max 200 --unlabeled unsup
  --unlabeled-limit 800 --epochs 1 --lr 5e-4 --batch-size 16 --max-length 256 --layers 3
  --init pretrained --no-progress"
for SEED in ${*:-42 43}; do
  for HEADS in 4 12; do
    name=heads_${HEADS}_seed_$SEED
    .venv/bin/sdbert distill $COMMON --seed $SEED --heads $HEADS --output runs/kd_heads/$name
    .venv/bin/sdbert evaluate --model runs/kd_heads/$name --data $DATA --split test --limit 1000 --no-progress
    mkdir -p benchmarks/kd_variants/heads/$name
    cp runs/kd_heads/$name/summary.json runs/kd_heads/$name/eval_test.json benchmarks/kd_variants/heads/$name/
  done
done
