"""Where a training step's time goes, and how close it runs to the CPU's peak.

  python -m benchmarks.profile_step --config=configs/pretrain.py [--batch=4] [--crop=256]

Compiles the train step exactly as training runs it, times ``--steps`` steps, then traces
``--trace_steps`` more with ``jax.profiler`` and sums the XLA:CPU op events (one per thunk,
on the thread pool's threads) by kind:
convolutions and dots (with what XLA fused into them), reductions (the norms, the losses),
other fusions (element-wise work), copies and transposes, FFTs, and the rest. It prints:

* crops per second and milliseconds per step;
* the step's FLOPs from XLA's cost analysis, the achieved GFLOP/s, and the fraction of the
  peak of ``--cores`` cores at the clock ``/proc/cpuinfo`` reports with ``--flops_per_cycle``
  single-precision FLOPs per cycle and core (32: two 256-bit FMA pipes, as AVX-512 runs on
  AMD Zen 4), and of a large float32 matrix product's rate measured in the same run (what
  XLA:CPU can reach at best here);
* the table of time by op kind.
"""

import collections
import os
import re
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from benchmarks import common
from biskip_jax.train import train_step

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(common._ROOT, "configs", "pretrain.py"), "Training config.")
_BATCH = flags.DEFINE_integer("batch", None, "Global batch (default: the config's).")
_CROP = flags.DEFINE_integer("crop", None, "Crop size (default: the config's).")
_STEPS = flags.DEFINE_integer("steps", 4, "Timed steps (after 2 warm-up steps).")
_TRACE_STEPS = flags.DEFINE_integer("trace_steps", 2, "Traced steps.")
_CORES = flags.DEFINE_integer("cores", os.cpu_count() or 1, "Cores for the peak.")
_FLOPS_PER_CYCLE = flags.DEFINE_integer(
    "flops_per_cycle", 32, "Single-precision FLOPs per cycle and core for the peak.")

# Op kind by the HLO instruction name of a thunk's event (e.g. "conv_general_dilated.12",
# "multiply_reduce_fusion.3", "copy.7"), first match wins.
_KINDS = (("convolution", r"^(conv|convolution|ynn|onednn)"), ("fft", r"^fft"),
          ("dot", r"^dot"), ("reduction (norms, losses)", r"^.*reduce"),
          ("copy / transpose", r"^(copy|transpose|.*copy|.*transpose)"),
          ("fusion (element-wise)", r"^.*fusion"))
# Events that wrap others or mark thread-pool activity, not ops.
_NOT_OPS = ("ThunkExecutor", "ThreadpoolListener", "end: ")


def kind_of(name: str) -> str:
  for kind, pattern in _KINDS:
    if re.match(pattern, name):
      return kind
  return "other"


def clock_mhz() -> float | None:
  """The clock /proc/cpuinfo reports (MHz), or None."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.lower().startswith("cpu mhz"):
          return float(line.split(":")[1])
  except OSError:
    pass
  return None


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
  """float32 GFLOP/s of an ``n x n`` matrix product under XLA:CPU (median of ``repeats``)."""
  a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    f(a).block_until_ready()
    times.append(time.perf_counter() - t0)
  return 2 * n**3 / statistics.median(times) / 1e9


def op_times(trace_dir: str) -> dict[str, float]:
  """Seconds of XLA:CPU op events in a ``jax.profiler`` trace, summed by :func:`kind_of`.

  Ops run on the XLA thread pool's threads, several at once, so the sums add up the threads'
  busy time (at most cores x wall time).
  """
  path = None
  for folder, _, files in os.walk(trace_dir):
    path = next((os.path.join(folder, f) for f in files if f.endswith(".xplane.pb")), path)
  data = jax.profiler.ProfileData.from_file(path)
  totals: dict[str, float] = collections.defaultdict(float)
  for plane in data.planes:
    if not plane.name.startswith("/host:CPU"):
      continue
    for line in plane.lines:
      if not line.name.startswith("tf_XLAEigen"):
        continue
      for event in line.events:
        if not event.name.startswith(_NOT_OPS):
          totals[kind_of(event.name)] += event.duration_ns / 1e9
  return dict(totals)


def main(argv):
  del argv
  config = _CONFIG.value
  if _BATCH.value:
    config.train.batch_size = _BATCH.value
  if _CROP.value:
    config.data.crop_size = _CROP.value
  b, c = config.train.batch_size, config.data.crop_size
  print(common.describe_device())
  mesh = train_step.make_mesh()
  state = train_step.replicate(train_step.create_train_state(config, 1000, c), mesh)
  step = train_step.jit_train_step(config, 10, mesh, state)
  rng = np.random.default_rng(0)
  batch = {k: rng.integers(0, 256, (b, c, c, 3), dtype=np.uint8) for k in ("blur", "sharp")}
  sharded = train_step.shard_batch(batch, mesh)
  t0 = time.perf_counter()
  lowered = step.lower(state, sharded, {})
  lowered.compile()
  compile_s = time.perf_counter() - t0
  flops = (common.gflop(lowered) or float("nan")) * 1e9
  for _ in range(2):
    state, m = step(state, sharded, {})
  jax.block_until_ready(m)
  times = []
  for _ in range(_STEPS.value):
    t0 = time.perf_counter()
    state, m = step(state, sharded, {})
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
  seconds = statistics.median(times)
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir):
      for _ in range(_TRACE_STEPS.value):
        state, m = step(state, sharded, {})
      jax.block_until_ready(m)
    totals = op_times(trace_dir)
  mhz = clock_mhz()
  peak = _CORES.value * _FLOPS_PER_CYCLE.value * mhz / 1e3 if mhz else None
  achieved = flops / seconds / 1e9
  mm = matmul_gflops()
  print(f"scheme {config.scheme}, batch {b} of {c}x{c}, compute {config.train.compute_dtype}, "
        f"loss.gamma_fft {config.loss.get('gamma_fft', 0.0)}: compile {compile_s:.1f} s")
  print(f"{seconds * 1e3:.0f} ms/step (median of {len(times)}), {b / seconds:.2f} crops/s")
  print(f"{flops / 1e9:.0f} GFLOP/step (XLA cost analysis): {achieved:.0f} GFLOP/s")
  if peak:
    print(f"peak {_CORES.value} cores x {_FLOPS_PER_CYCLE.value} FLOP/cycle x {mhz:.0f} MHz = "
          f"{peak:.0f} GFLOP/s: {achieved / peak:.0%} of it")
  print(f"float32 {2048}^2 matrix product: {mm:.0f} GFLOP/s: the step runs at "
        f"{achieved / mm:.0%} of it")
  total = sum(totals.values())
  per_step = 1e3 / _TRACE_STEPS.value
  print(f"\n| op kind | ms/step (busy time of {_CORES.value} threads) | share |\n|---|---|---|")
  for kind, t in sorted(totals.items(), key=lambda kv: -kv[1]):
    print(f"| {kind} | {t * per_step:.0f} | {t / total:.0%} |")


if __name__ == "__main__":
  app.run(main)
