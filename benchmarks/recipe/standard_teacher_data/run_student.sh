#!/usr/bin/env bash
# A student from the teacher trained on every labelled review (run.sh 24000): the standard preset's small
# student (3 layers, 4 heads, MiniLM's layers 0/2/4, vocabulary cut to 8,192 wordpieces, lr 2e-4, hidden
# dropout 0.1, one epoch, alpha 0.5) distilled on the teacher's own 24,000 labelled reviews, then scored on
# the preset's 5,000 test reviews. Usage: run_student.sh. Its summary.json and eval_test.json are copied here.
set -euo pipefail
cd "$(dirname "$0")/../../.."  # the repository root
DATA=../shared/data/aclImdb_v1.tar.gz
name=small_student_24000
out=runs/teacher_data/$name
.venv/bin/sdbert distill --teacher runs/teacher_data/sparse_teacher_24000 --data $DATA --train-limit 24000 \
  --val-max 500 --max-length 512 --epochs 1 --batch-size 16 --lr 2e-4 --dropout 0.1 --alpha 0.5 \
  --layers 3 --heads 4 --init pretrained --vocab-size 8192 --seed 42 --no-progress --output $out
.venv/bin/sdbert evaluate --model $out --data $DATA --split test --limit 5000 --no-progress
mkdir -p benchmarks/recipe/standard_teacher_data/$name
cp $out/summary.json $out/eval_test.json benchmarks/recipe/standard_teacher_data/$name/
