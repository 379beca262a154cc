"""Inference speed of the Bi-Skip generator, JAX against PyTorch in the same run.

  python -m benchmarks.inference                      # defaults for the device found
  python -m benchmarks.inference --sizes=720x1280 --batches=1 --dtypes=bfloat16
  python -m benchmarks.inference --quick              # tiny model, seconds (what CI runs)

For each input size (H x W), batch size and compute dtype it prints ms per image, images/s,
peak device memory and, for JAX, the compile time and the model's GFLOP per image. Every JAX
row is followed by the same work in PyTorch (``benchmarks/torch_reference.py``, weights
ported from the JAX model) on the same device, and the ratio JAX time / PyTorch time
(below 1: JAX is faster). Before timing, the two implementations' outputs are compared
on the same weights (``--check``).

Peak memory: for JAX, the memory XLA plans for the call (arguments + outputs + temporaries);
for PyTorch on CUDA, ``torch.cuda.max_memory_allocated``; neither is reported on CPU for
PyTorch. Weights are random (speed does not depend on them); inputs are random images.
"""

import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from absl import app, flags
from ml_collections import config_flags

from benchmarks import common
from benchmarks import torch_reference as tr
from biskip_jax import conv, models, notebook_utils

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(common._ROOT, "configs", "biskip.py"),
    "Training config whose config.model is benchmarked (default: the paper's model).")
_SIZES = flags.DEFINE_string(
    "sizes", None, "Comma-separated HxW input sizes. Default: 256x256,720x1280,2160x3840 on "
    "GPU; 256x256,720x1280 on CPU.")
_BATCHES = flags.DEFINE_string("batches", "1,8", "Comma-separated batch sizes.")
_DTYPES = flags.DEFINE_string(
    "dtypes", None, "Comma-separated compute dtypes. Default: float32,bfloat16 on GPU; float32 "
    "on CPU (bf16 convolutions are emulated on most CPUs).")
_TORCH = flags.DEFINE_string(
    "torch", None, "PyTorch modes to compare: eager, compile (torch.compile), '' for none. "
    "Default: eager,compile on GPU; eager on CPU.")
_MAX_PIXELS = flags.DEFINE_integer(
    "max_batch_pixels", None, "Skip a size x batch above this many pixels. Default: "
    "4 x 2160 x 3840 on GPU, 720 x 1280 on CPU.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed calls before timing.")
_ITERS = flags.DEFINE_integer("iters", None, "Timed calls (median). Default 20 GPU, 3 CPU.")
_CHECK = flags.DEFINE_bool("check", True, "Compare JAX and PyTorch outputs first.")
_QUICK = flags.DEFINE_bool(
    "quick", False, "Tiny model on 64x64 inputs, one timed call: checks that the script runs.")


def _on_gpu() -> bool:
  return jax.default_backend() == "gpu"


def _list(text: str, cast=str) -> list:
  return [cast(t) for t in text.split(",") if t]


def _settings() -> dict:
  gpu = _on_gpu()
  s = dict(
      sizes=common.parse_sizes(_SIZES.value or ("256x256,720x1280,2160x3840" if gpu
                                                else "256x256,720x1280")),
      batches=_list(_BATCHES.value, int),
      dtypes=_list(_DTYPES.value or ("float32,bfloat16" if gpu else "float32")),
      torch=_list(_TORCH.value if _TORCH.value is not None else
                  ("eager,compile" if gpu else "eager")),
      max_pixels=_MAX_PIXELS.value or (4 * 2160 * 3840 if gpu else 720 * 1280),
      iters=_ITERS.value or (20 if gpu else 3), warmup=_WARMUP.value)
  if _QUICK.value:
    s.update(sizes=[(64, 64)], batches=[1], iters=1, warmup=1,
             torch=[m for m in s["torch"] if m == "eager"])
  return s


def _model_config():
  config = _CONFIG.value
  return notebook_utils.tiny_config(config) if _QUICK.value else config


def _bench_jax(model_config, variables, images, dtype, s):
  model = models.generator_from_config(model_config).clone(dtype=dtype)
  # The options users' programs get (inference.Deblurrer, train_step.jit_train_step).
  fn = jax.jit(functools.partial(model.apply, train=False),
               compiler_options=conv.compiler_options(jax.default_backend()))
  x = jnp.asarray(images, jnp.float32) / 127.5 - 1.0
  lowered = fn.lower(variables, x)
  t0 = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t0
  sec = common.time_calls(lambda: compiled(variables, x), common.jax_sync, s["warmup"],
                          s["iters"])
  out = np.asarray(compiled(variables, x)[:1, :8, :8], np.float32)
  if not np.all(np.isfinite(out)):
    raise RuntimeError("JAX output is not finite")
  return sec, compile_s, common.xla_peak_bytes(compiled), common.gflop(lowered)


def _bench_torch(module, images, dtype, mode, s):
  device = common.torch_device()
  x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).to(device).float() / 127.5 - 1.0
  fn = torch.compile(module) if mode == "compile" else module
  autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")

  def call():
    with torch.inference_mode(), autocast:
      return fn(x)

  common.torch_reset_peak()
  t0 = time.perf_counter()
  common.torch_sync(call())
  first_s = time.perf_counter() - t0
  sec = common.time_calls(call, common.torch_sync, s["warmup"], s["iters"])
  return sec, first_s, common.torch_peak_bytes()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  s = _settings()
  torch.backends.cudnn.benchmark = True
  config = _model_config()
  print(f"# Bi-Skip inference benchmark ({config.model.variant}, channels "
        f"{tuple(config.model.channels)})")
  print("Device:", common.describe_device())
  if _CHECK.value:
    check_config = config.copy_and_resolve_references()
    common.print_equivalence(common.check_equivalence(check_config, crop=64, batch=2,
                                                        include_step=False))

  model = models.generator_from_config(config.model)
  variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, 64, 64, 3))))(jax.random.key(0))
  torch_model = tr.port_generator(tr.generator_from_config(config.model), variables)
  torch_model = torch_model.to(common.torch_device()).eval()

  header = ["size", "batch", "dtype", "impl", "compile s", "ms/image", "images/s",
            "peak MB", "GFLOP/image", "JAX/PyTorch time"]
  rows = []
  for (h, w) in s["sizes"]:
    for batch in s["batches"]:
      if h * w * batch > s["max_pixels"]:
        print(f"skipping {h}x{w} batch {batch}: over --max_batch_pixels={s['max_pixels']}")
        continue
      images = common.random_images(h * w + batch, (batch, h, w, 3))
      for dtype in s["dtypes"]:
        size = f"{h}x{w}"
        sec, compile_s, peak, gflop = _bench_jax(config.model, variables, images, dtype, s)
        per_image = sec / batch
        rows.append([size, batch, dtype, "JAX", f"{compile_s:.1f}", f"{per_image * 1e3:.2f}",
                     f"{1 / per_image:.1f}", common.fmt_mb(peak),
                     "-" if gflop is None else f"{gflop / batch:.1f}", ""])
        print(*rows[-1], sep="  ", flush=True)
        for mode in s["torch"]:
          try:
            t_sec, first_s, t_peak = _bench_torch(torch_model, images, dtype, mode, s)
          except Exception as e:  # torch.compile can fail on some setups; report, go on.
            rows.append([size, batch, dtype, f"PyTorch {mode}", "-", "failed", "-", "-", "-",
                         f"{type(e).__name__}: {str(e).splitlines()[0][:60]}"])
            print(*rows[-1], sep="  ", flush=True)
            continue
          t_per = t_sec / batch
          rows.append([size, batch, dtype, f"PyTorch {mode}",
                       f"{first_s:.1f}" if mode == "compile" else "-",
                       f"{t_per * 1e3:.2f}", f"{1 / t_per:.1f}", common.fmt_mb(t_peak), "",
                       f"{sec / t_sec:.3g}"])
          print(*rows[-1], sep="  ", flush=True)
  print()
  common.print_table(header, rows)


if __name__ == "__main__":
  app.run(main)
