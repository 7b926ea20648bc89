#!/usr/bin/env bash
# Augmented transfer set on the quick preset (issue 23, item 2; Tang et al. 2019): N masked/windowed copies
# of each of the students' 800 labelled reviews join the transfer set, teacher-labelled. The output folder
# starts with copies of runs/quick_final's teachers and no-KD students (reused: the same settings and
# initial weights), so only the KD students and the teacher-logit pass are new.
# Usage: benchmarks/kd_variants/run_augment.sh [N]   (default 1)
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root
N=${1:-1}
OUT=runs/quick_augment$N
mkdir -p $OUT
for system in full_teacher sparse_teacher sparse_student_no_kd; do
  [ -d $OUT/$system ] || cp -r runs/quick_final/$system $OUT/
done
.venv/bin/sdbert reproduce --preset quick --data ../shared/data/aclImdb_v1.tar.gz --augment-copies $N \
  --output $OUT --no-progress
cp $OUT/results.json benchmarks/kd_variants/quick_augment_$N.json
.venv/bin/python tools/compare_reproductions.py runs/quick_final $OUT \
  --output benchmarks/kd_variants/quick_augment_${N}_vs_none.json
