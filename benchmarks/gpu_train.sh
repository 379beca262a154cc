#!/usr/bin/env bash
# Trains the shipped model's recipe on a GPU machine within 9 minutes, set-up included:
#
#   bash benchmarks/gpu_train.sh [OUTDIR] [--tiny] [--budget_s=540] [--data=.gpu_data]
#
# OUTDIR defaults to $OUT if set. Before, on a machine with network:
#   python -m benchmarks.wheelhouse --set=train            # .whl/: what the GPU image lacks
#   python -m benchmarks.gpu_data --frames=F --photos=P    # .gpu_data/: at most 30 MB
# then copy .whl/ and .gpu_data/ with the checkout to the GPU machine and run this there
# (at most 9 minutes). It writes OUTDIR/biskip_gpu.npz (float16) and .json, train_log.txt,
# metrics.jsonl and summary.json (see benchmarks/gpu_train.py). --tiny: a CPU dry run.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu_train_out}"
if [[ $# -gt 0 && "$1" != -* ]]; then
  out="$1"
  shift
fi
exec "${PYTHON:-python3}" -m benchmarks.gpu_train --out="$out" "$@"
