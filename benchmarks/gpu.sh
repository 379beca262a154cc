#!/usr/bin/env bash
# The GPU benchmark suite in one command (run from the repository root on a CUDA machine with
# jax[cuda], torch with CUDA, and this project's requirements installed):
#
#   bash benchmarks/gpu.sh [OUTDIR]        # about 10 minutes on an H100; logs in OUTDIR
#
# 1. inference.py: 256x256, 720x1280 and 2160x3840, batch 1 and 8, float32 and bf16, JAX vs
#    PyTorch eager (the like-for-like check runs first);
# 2. inference.py: 720x1280, batch 1, vs torch.compile (compiles are slow: one size only);
# 3. train_step.py: the paper's SA1P-BS step at batch 1 and 16 vs PyTorch eager and
#    torch.compile, plus the breakdown (1-BS, 1P-BS) showing where the step's time goes.
# Paste the tables into benchmarks/RESULTS.md with the device line each script prints.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-bench_out}}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
# JAX and PyTorch share the GPU in one process: cap JAX's pool so PyTorch has room too.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.45}"
py="${PYTHON:-python3}"

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv | tee "$out/gpu.txt"
status=0
timeout 300 "$py" -m benchmarks.inference --torch=eager 2>&1 | tee "$out/inference.txt" \
  || status=1
timeout 150 "$py" -m benchmarks.inference --sizes=720x1280 --batches=1 --torch=compile \
  --nocheck 2>&1 | tee "$out/inference_compile.txt" || status=1
timeout 300 "$py" -m benchmarks.train_step --breakdown 2>&1 | tee "$out/train_step.txt" \
  || status=1
exit "$status"
