#!/usr/bin/env bash
# The whole GPU measurement in one command, set-up included, within 7.5 minutes:
#
#   bash benchmarks/gpu.sh [OUTDIR] [--tiny] [--budget_s=450] [--parts=inference,...]
#
# OUTDIR defaults to $OUT if set, else bench_out. Run from anywhere; the Python
# is $PYTHON, else python3 (on the GPU machine: the one with jax[cuda] and torch). Modules the
# machine lacks (no network there: typically ml_collections) are unpacked from the wheelhouse
# .whl/, which `python -m benchmarks.wheelhouse` builds on a machine with network. Parts, most
# important first, each with a timeout cut to what is left of the budget:
#   inference           720x1280 float32 and bf16, 2160x3840 bf16 (ms/image, peak memory),
#                       JAX vs PyTorch eager, after the like-for-like check
#   train_step          SA1P-BS at batch 1 and 16 of 256x256, vs PyTorch eager, after the
#                       check of one step; a jax.profiler trace of the batch-1 step
#   train_step_bf16     the same with train.compute_dtype=bfloat16 (PyTorch: autocast)
#   mixed_precision     quickstart in float32 and bf16, same steps: held-out PSNR
#   inference_compile   720x1280 vs torch.compile
#   train_step_compile  batch 1 vs torch.compile
# It writes OUTDIR/results.md, results.json, log.txt and trace_train_step.tar.gz; exit status
# 0 when every part finished, 1 when one failed or was cut, 2 without a usable environment.
# --tiny (or BISKIP_GPU_TINY=1) runs the same steps with a tiny model on CPU in a few minutes
# (tests/test_benchmarks.py); its figures mean nothing.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench_out}"
if [[ $# -gt 0 && "$1" != -* ]]; then
  out="$1"
  shift
fi
exec "${PYTHON:-python3}" -m benchmarks.gpu_run --out="$out" "$@"
