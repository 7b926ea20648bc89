#!/usr/bin/env bash
# Size trade-off at the quick preset's scale: students distilled from the quick run's sparse teacher.
# Usage: benchmarks/size_tradeoff/run.sh [NAME ...]   (default: every student)
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root
DATA=../shared/data/aclImdb_v1.tar.gz
T=runs/quick_23/sparse_teacher
COMMON="--teacher $T --data $DATA --train-limit 1000 --val-max 200 --unlabeled unsup --unlabeled-limit 800 --epochs 1 --lr 5e-4 --batch-size 16 --max-length 256 --seed 42 --no-progress"
ONLY=" $* "  # student names to run (default: all of them)
run() {
  name=$1; shift
  if [[ "$ONLY" != "  " && "$ONLY" != *" $name "* ]]; then return; fi
  .venv/bin/sdbert distill $COMMON --output runs/size/$name "$@"
  .venv/bin/sdbert evaluate --model runs/size/$name --data $DATA --split test --limit 1000 --no-progress
}
run w384_l3_pretrained --layers 3 --heads 4 --init pretrained
run w384_l2_pretrained --layers 2 --heads 4 --init pretrained
run w256_l3_random_hidden --layers 3 --heads 4 --hidden 256 --init random --hidden-weight 1
run w192_l3_random_hidden --layers 3 --heads 4 --hidden 192 --init random --hidden-weight 1
# Factorised embeddings (ALBERT-style: MiniLM's tables projected onto their top singular directions)
run e192_l3_pretrained --layers 3 --heads 4 --init pretrained --embedding-size 192
run e112_l3_pretrained --layers 3 --heads 4 --init pretrained --embedding-size 112
run e64_l3_pretrained --layers 3 --heads 4 --init pretrained --embedding-size 64
# A vocabulary cut to the wordpieces the transfer texts use most (full-width tables, MiniLM's rows)
run v8192_l3_pretrained --layers 3 --heads 4 --init pretrained --vocab-size 8192
run v4096_l3_pretrained --layers 3 --heads 4 --init pretrained --vocab-size 4096
