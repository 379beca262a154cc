"""Train-step speed, JAX against PyTorch in the same run.

  python -m benchmarks.train_step                  # the paper's step (SA1P-BS), batch 1 and 16
  python -m benchmarks.train_step --breakdown      # also 1-BS and 1P-BS: where the time goes
  python -m benchmarks.train_step --quick          # tiny model, seconds (what CI runs)
  python -m benchmarks.train_step --compile_times=1,2,5   # compile seconds against n_critic

The paper's step (§5, Algorithm 1): batch 1 of 256x256 crops, scheme SA1P-BS, i.e. one
generator forward, ``n_critic`` = 2 WGAN-GP critic updates (gradient penalty: a double
backward through the critic), the VGG19 conv3_3 perceptual loss and one generator update.
The JAX step is ``biskip_jax.train.train_step`` exactly as training runs it (jitted over a device
mesh, state donated); PyTorch's is ``benchmarks/torch_reference.Trainer`` with weights ported
from the JAX state, on the same device. Steps run back to back (as in training) and the
device is synchronised once per timed block; figures are medians over ``--repeats`` blocks.
``torch.compile`` mode compiles the generator and VGG19 (the critic stays eager: the gradient
penalty's double backward is not supported by compiled autograd).

VGG19 weights are random here (speed does not depend on them). Peak memory as in
``benchmarks/inference.py``.

``--compile_times`` only compiles: the step of 1-BS and of the config's scheme (batch 1, the
same config otherwise) at each listed ``n_critic``, lowered from abstract inputs (no weights,
nothing runs), one after another in this process, so that the ratios between rows are
comparable on a busy machine. 1-BS has no critic: its rows show the noise.
"""

import os
import statistics
import time

import jax
import torch
from absl import app, flags
from ml_collections import config_flags

from benchmarks import common
from benchmarks import torch_reference as tr
from biskip_jax.objective import schemes
from biskip_jax.train import train_step
from configs import tiny

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(common._ROOT, "configs", "biskip.py"),
    "Training config (default: the paper's, scheme SA1P-BS).")
_BATCHES = flags.DEFINE_string("batches", "1,16", "Comma-separated global batch sizes.")
_CROP = flags.DEFINE_integer("crop", 256, "Crop size (the paper's 256).")
_TORCH = flags.DEFINE_string(
    "torch", None, "PyTorch modes: eager, compile; '' for none. Default: eager,compile on GPU, "
    "eager on CPU.")
_BREAKDOWN = flags.DEFINE_bool(
    "breakdown", False, "Also time schemes 1-BS (generator + L1) and 1P-BS (+ VGG19), "
    "at the first batch size, to show where the step's time goes.")
_DTYPES = flags.DEFINE_string(
    "dtypes", "float32", "Train-step compute dtypes (config.train.compute_dtype; params and "
    "optimizer state stay float32): float32, bfloat16.")
_STEPS = flags.DEFINE_integer("steps", None, "Steps per timed block. Default 20 GPU, 2 CPU.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed blocks (median).")
_MAX_BATCH = flags.DEFINE_integer(
    "max_cpu_batch", 4, "On CPU, skip batch sizes above this (a 16 x 256^2 step takes minutes).")
_CHECK = flags.DEFINE_bool("check", True, "Compare JAX and PyTorch on one step first.")
_JSON_OUT = flags.DEFINE_string(
    "json_out", None, "Also write the table as JSON to this file (rewritten after each row).")
_TRACE = flags.DEFINE_string(
    "trace", None, "Keep a jax.profiler trace of --trace_steps JAX steps at the first batch "
    "size and dtype in this folder (TensorBoard's profile plugin or Perfetto read it).")
_TRACE_STEPS = flags.DEFINE_integer("trace_steps", 3, "Steps in the --trace trace.")
_COMPILE_TIMES = flags.DEFINE_string(
    "compile_times", "", "Comma-separated n_critic values: only compile the step of 1-BS and "
    "of the config's scheme at each (batch 1, --crop, the first of --dtypes) and print the "
    "seconds; nothing runs.")
_QUICK = flags.DEFINE_bool(
    "quick", False, "Tiny model on 32x32 crops, one short block: checks that the script runs.")


def _config_for(scheme: str, batch: int, crop: int, dtype: str):
  config = _CONFIG.value.copy_and_resolve_references()
  if _QUICK.value:
    config = tiny.shrink(config)
  s = schemes.parse_scheme(scheme)
  config.model.variant = s.variant
  config.loss.update(adversarial=s.adversarial, pixel=s.pixel, perceptual=s.perceptual,
                     self_paced=s.self_paced)
  config.train.compute_dtype = dtype
  config.train.batch_size = batch
  config.data.crop_size = crop
  return config


def _time_blocks(step, sync, warmup: int, steps: int, repeats: int) -> float:
  """Median seconds per step over ``repeats`` blocks of ``steps`` back-to-back steps."""
  for _ in range(warmup):
    sync(step())
  per_step = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = None
    for _ in range(steps):
      out = step()
    sync(out)
    per_step.append((time.perf_counter() - t0) / steps)
  return statistics.median(per_step)


def _trace(step, trace_dir: str, num_steps: int) -> None:
  """A jax.profiler trace of ``num_steps`` back-to-back steps (already compiled and warm)."""
  with jax.profiler.trace(trace_dir):
    out = None
    for i in range(num_steps):
      with jax.profiler.StepTraceAnnotation("train_step", step_num=i):
        out = step()
    common.jax_sync(out)


def _bench(table: common.Table, scheme: str, batch: int, dtype: str, modes: list[str],
           steps: int, repeats: int, trace_dir: str | None = None) -> None:
  crop = 32 if _QUICK.value else _CROP.value
  config = _config_for(scheme, batch, crop, dtype)
  state, vgg_params, g, d, tv = common.build_pair(config, crop)
  mesh = train_step.make_mesh()
  if batch % mesh.size:
    raise app.UsageError(f"batch {batch} does not divide over {mesh.size} devices")
  jitted = train_step.jit_train_step(config, config.train.num_epochs, mesh, state)
  state = train_step.replicate(state, mesh)
  host = {"blur": common.random_images(1, (batch, crop, crop, 3)),
          "sharp": common.random_images(2, (batch, crop, crop, 3))}
  batch_arrays = train_step.shard_batch(host, mesh)
  lowered = jitted.lower(state, batch_arrays, vgg_params)
  t0 = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t0
  peak = common.xla_peak_bytes(compiled)
  gflop = common.gflop(lowered)
  loop_note = ("GFLOP/step is XLA's cost analysis, which counts the body of the critic's "
               "fori_loop once: n_critic - 1 critic updates are not in it")
  if (gflop is not None and config.loss.adversarial and config.train.n_critic > 1
      and loop_note not in table.meta["notes"]):
    table.note(loop_note)
  holder = {"state": state}

  def jax_step():
    holder["state"], metrics = compiled(holder["state"], batch_arrays, vgg_params)
    return metrics

  sec = _time_blocks(jax_step, common.jax_sync, 2, steps, repeats)
  metrics = jax.device_get(jax_step())
  if not metrics["finite"]:
    raise RuntimeError(f"{scheme}: the JAX step was not finite: {metrics}")
  label = f"{scheme} {dtype}" if dtype != "float32" else scheme
  table.add([label, batch, "JAX", f"{compile_s:.1f}", f"{sec * 1e3:.1f}", f"{1 / sec:.2f}",
             f"{batch / sec:.1f}", common.fmt_mb(peak), "-" if gflop is None else f"{gflop:.0f}",
             ""])
  if trace_dir:
    try:
      _trace(jax_step, trace_dir, _TRACE_STEPS.value)
      table.note(f"jax.profiler trace of {_TRACE_STEPS.value} steps ({label}, batch {batch}) "
                 f"in {trace_dir}")
    except Exception as e:  # A profiler that cannot start (e.g. no CUPTI) costs no figures.
      table.note(f"no jax.profiler trace: {type(e).__name__}: {str(e).splitlines()[0][:120]}")

  device = common.torch_device()
  blur = torch.from_numpy(host["blur"].transpose(0, 3, 1, 2).copy()).to(device)
  sharp = torch.from_numpy(host["sharp"].transpose(0, 3, 1, 2).copy()).to(device)
  autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")
  for mode in modes:
    try:
      gm, vm = (torch.compile(g), torch.compile(tv)) if mode == "compile" else (g, tv)
      trainer = tr.Trainer(gm, d, vm if config.loss.perceptual else None, config.loss,
                           config.train.n_critic, config.optim.g_lr, config.optim.d_lr,
                           (config.optim.b1, config.optim.b2))

      def torch_step(trainer=trainer):
        with autocast:
          return trainer.step(blur, sharp)

      common.torch_reset_peak()
      t0 = time.perf_counter()
      common.torch_sync(torch_step())
      first_s = time.perf_counter() - t0
      t_sec = _time_blocks(torch_step, common.torch_sync, 1, steps, repeats)
    except Exception as e:  # torch.compile can fail on some setups; report and go on.
      table.add([label, batch, f"PyTorch {mode}", "-", "failed", "-", "-", "-", "",
                 f"{type(e).__name__}: {str(e).splitlines()[0][:60]}"])
      continue
    table.add([label, batch, f"PyTorch {mode}", f"{first_s:.1f}" if mode == "compile" else "-",
               f"{t_sec * 1e3:.1f}", f"{1 / t_sec:.2f}", f"{batch / t_sec:.1f}",
               common.fmt_mb(common.torch_peak_bytes()), "", f"{sec / t_sec:.3g}"])


def _compile_times(n_critics: list[int], crop: int, dtype: str) -> None:
  """Trace-and-lower and compile seconds of the step per scheme and ``n_critic``."""
  scheme = _CONFIG.value.scheme
  title = f"Train-step compile time ({dtype}, batch 1, crops {crop}x{crop})"
  # CPU seconds (all threads of this process) move less than wall seconds on a shared machine.
  header = ["scheme", "n_critic", "lower s", "compile s", "compile CPU s",
            "compile / first row"]
  table = common.Table(title, header, _JSON_OUT.value)
  print(f"# {title}")
  print("Device:", table.meta["device"])
  mesh = train_step.make_mesh()
  first = None
  for name in ("1-BS", scheme):
    for n in n_critics:
      config = _config_for(name, 1, crop, dtype)
      config.train.n_critic = n
      state, batch, vgg_params = train_step.abstract_step_inputs(config, 1, crop)
      jitted = train_step.jit_train_step(config, config.train.num_epochs, mesh, state)
      t0 = time.perf_counter()
      lowered = jitted.lower(state, batch, vgg_params)
      t1, c1 = time.perf_counter(), time.process_time()
      lowered.compile()
      t2, c2 = time.perf_counter(), time.process_time()
      first = first or t2 - t1
      table.add([name, n, f"{t1 - t0:.1f}", f"{t2 - t1:.1f}", f"{c2 - c1:.1f}",
                 f"{(t2 - t1) / first:.2f}"])
  table.print()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _COMPILE_TIMES.value:
    try:
      n_critics = [int(n) for n in _COMPILE_TIMES.value.split(",") if n]
    except ValueError:
      raise app.UsageError(f"--compile_times={_COMPILE_TIMES.value}: expected comma-separated "
                           "integers such as 1,2,5") from None
    if not n_critics or min(n_critics) < 1:
      raise app.UsageError(f"--compile_times={_COMPILE_TIMES.value}: n_critic must be >= 1")
    _compile_times(n_critics, 32 if _QUICK.value else _CROP.value,
                   _DTYPES.value.split(",")[0])
    return
  gpu = jax.default_backend() == "gpu"
  torch.backends.cudnn.benchmark = True
  modes = [m for m in (_TORCH.value if _TORCH.value is not None else
                       ("eager,compile" if gpu else "eager")).split(",") if m]
  batches = [int(b) for b in _BATCHES.value.split(",") if b]
  steps = _STEPS.value or (20 if gpu else 2)
  repeats = _REPEATS.value
  if _QUICK.value:
    batches, modes, steps, repeats = batches[:1], [m for m in modes if m == "eager"], 1, 1
  elif not gpu:
    skipped = [b for b in batches if b > _MAX_BATCH.value]
    if skipped:
      print(f"skipping batch sizes {skipped} on CPU (over --max_cpu_batch={_MAX_BATCH.value})")
    batches = [b for b in batches if b <= _MAX_BATCH.value]
  scheme = _CONFIG.value.scheme
  crop = 32 if _QUICK.value else _CROP.value
  title = (f"Bi-Skip train step ({scheme}, crops {crop}x{crop}, "
           f"n_critic {_CONFIG.value.train.n_critic})")
  print(f"# {title}")
  header = ["scheme", "batch", "impl", "compile s", "ms/step", "steps/s", "images/s",
            "peak MB", "GFLOP/step", "JAX/PyTorch time"]
  table = common.Table(title, header, _JSON_OUT.value)
  print("Device:", table.meta["device"])
  if _CHECK.value:
    config = _config_for(scheme, 2, 32 if _QUICK.value else 64, "float32")
    table.set_check(common.check_equivalence(config, crop=config.data.crop_size))

  dtypes = [t for t in _DTYPES.value.split(",") if t]
  trace_dir = _TRACE.value
  for dtype in dtypes:
    for batch in batches:
      _bench(table, scheme, batch, dtype, modes, steps, repeats, trace_dir)
      trace_dir = None
  if _BREAKDOWN.value:
    for part in ("1-BS", "1P-BS"):
      _bench(table, part, batches[0], dtypes[0], modes[:1], steps, repeats)
  table.print()


if __name__ == "__main__":
  app.run(main)
