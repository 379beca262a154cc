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

Peak memory: "peak MB" is, for JAX, the memory XLA plans for the call (arguments + outputs +
temporaries) and, for PyTorch on CUDA, ``torch.cuda.max_memory_allocated`` since the case
began. "device peak MB" is the allocators' own high-water mark: for JAX, the device's
``memory_stats()["peak_bytes_in_use"]`` of the whole process so far (it cannot be reset: put
the largest case last); for PyTorch, ``torch.cuda.max_memory_reserved``. CPUs report neither
for PyTorch, nor the device peak for JAX. Weights are random (speed does not depend on
them); inputs are random images.
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
from biskip_jax.data import image_io
from biskip_jax.nn import conv, models
from configs import tiny

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
_CASES = flags.DEFINE_string(
    "cases", None, "Comma-separated HxW:batch:dtype cases, e.g. 720x1280:1:float32,"
    "2160x3840:1:bfloat16; replaces --sizes, --batches and --dtypes. Run the largest last: "
    "the device peak column is the process's high-water mark.")
_JSON_OUT = flags.DEFINE_string(
    "json_out", None, "Also write the table as JSON to this file (rewritten after each row).")
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
  s["cases"] = [(size, batch, dtype) for size in s["sizes"] for batch in s["batches"]
                for dtype in s["dtypes"]]
  if _CASES.value:
    s["cases"] = [_parse_case(c) for c in _CASES.value.split(",") if c]
  if _QUICK.value:
    # Tiny model, 64x64; with --cases, each case's batch and dtype are kept.
    cases = [((64, 64), b, d) for _, b, d in s["cases"]] if _CASES.value else [
        ((64, 64), 1, d) for d in s["dtypes"][:1]]
    s.update(cases=cases, iters=1, warmup=1, torch=[m for m in s["torch"] if m == "eager"]
             if not _TORCH.value else s["torch"])
  return s


def _parse_case(text: str) -> tuple[tuple[int, int], int, str]:
  """"720x1280:1:bfloat16" -> ((720, 1280), 1, "bfloat16")."""
  parts = text.split(":")
  if len(parts) != 3 or parts[2] not in ("float32", "bfloat16"):
    raise app.UsageError(f"--cases: {text!r} is not HxW:batch:float32|bfloat16")
  return common.parse_sizes(parts[0])[0], int(parts[1]), parts[2]


def _model_config():
  config = _CONFIG.value
  return tiny.shrink(config) if _QUICK.value else config


def _bench_jax(model_config, variables, images, dtype, s):
  model = models.generator_from_config(model_config).clone(dtype=dtype)
  # The options users' programs get (full_resolution.Deblurrer, train_step.jit_train_step).
  fn = jax.jit(functools.partial(model.apply, train=False),
               compiler_options=conv.compiler_options(jax.default_backend()))
  x = image_io.to_model_range(jnp.asarray(images))
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
  return sec, first_s, common.torch_peak_bytes(), common.torch_peak_reserved_bytes()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  s = _settings()
  torch.backends.cudnn.benchmark = True
  config = _model_config()
  title = (f"Bi-Skip inference ({config.model.variant}, channels "
           f"{tuple(config.model.channels)})")
  print(f"# {title}")
  header = ["size", "batch", "dtype", "impl", "compile s", "ms/image", "images/s",
            "peak MB", "device peak MB", "GFLOP/image", "JAX/PyTorch time"]
  table = common.Table(title, header, _JSON_OUT.value)
  print("Device:", table.meta["device"])
  if _CHECK.value:
    check_config = config.copy_and_resolve_references()
    table.set_check(common.check_equivalence(check_config, crop=64, batch=2,
                                             include_step=False))

  model = models.generator_from_config(config.model)
  variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, 64, 64, 3))))(jax.random.key(0))
  torch_model = tr.port_generator(tr.generator_from_config(config.model), variables)
  torch_model = torch_model.to(common.torch_device()).eval()

  for (h, w), batch, dtype in s["cases"]:
    if h * w * batch > s["max_pixels"] and not _CASES.value:
      table.note(f"skipping {h}x{w} batch {batch}: over --max_batch_pixels={s['max_pixels']}")
      continue
    images = common.random_images(h * w + batch, (batch, h, w, 3))
    size = f"{h}x{w}"
    sec, compile_s, peak, gflop = _bench_jax(config.model, variables, images, dtype, s)
    per_image = sec / batch
    table.add([size, batch, dtype, "JAX", f"{compile_s:.1f}", f"{per_image * 1e3:.2f}",
               f"{1 / per_image:.1f}", common.fmt_mb(peak),
               common.fmt_mb(common.device_peak_bytes()),
               "-" if gflop is None else f"{gflop / batch:.1f}", ""])
    for mode in s["torch"]:
      try:
        t_sec, first_s, t_peak, t_reserved = _bench_torch(torch_model, images, dtype, mode, s)
      except Exception as e:  # torch.compile can fail on some setups; report, go on.
        table.add([size, batch, dtype, f"PyTorch {mode}", "-", "failed", "-", "-", "-", "-",
                   f"{type(e).__name__}: {str(e).splitlines()[0][:60]}"])
        continue
      t_per = t_sec / batch
      table.add([size, batch, dtype, f"PyTorch {mode}",
                 f"{first_s:.1f}" if mode == "compile" else "-", f"{t_per * 1e3:.2f}",
                 f"{1 / t_per:.1f}", common.fmt_mb(t_peak), common.fmt_mb(t_reserved), "",
                 f"{sec / t_sec:.3g}"])
  table.print()


if __name__ == "__main__":
  app.run(main)
