"""CPU inference of the exported generator: ONNX in onnxruntime against the JAX model.

  python -m benchmarks.export                  # the shipped model at 256x256 and 720x1280
  python -m benchmarks.export --rounds=9 --sizes=256x256
  python -m benchmarks.export --quick          # tiny random model, 64x64: checks that it runs

In one process, on the same input, it times three ways of running the same weights
(``biskip_jax/inference/export_lib.py``):

* ``JAX``: the model jitted as ``full_resolution.Deblurrer`` runs it (same compiler options);
* ``StableHLO``: the ``jax.export`` artifact, serialized, deserialized and called under jit;
* ``ONNX``: the jax2onnx file in an onnxruntime CPU session (default options: all graph
  optimizations, one intra-op thread per core).

The exported files take sides that are multiples of 32, so every size is reflect-padded first
(720x1280 -> 736x1280, what the JAX model pads to itself) and all three get that padded input.
The machine is shared and noisy, so the calls alternate (one call of each, then again, for
``--rounds`` rounds after a warm-up call each) and the table gives medians, with the
fastest and slowest call. Before timing, it prints how far each output is from the JAX one.
"""

import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from benchmarks import common
from biskip_jax import cli
from biskip_jax.data import image_io
from biskip_jax.inference import export_lib, loading
from biskip_jax.nn import conv, models

_CKPT = cli.define_ckpt_flag()
_SIZES = flags.DEFINE_string("sizes", "256x256,720x1280", "Comma-separated HxW input sizes.")
_ROUNDS = flags.DEFINE_integer("rounds", 7, "Timed calls of each implementation (median).")
_QUICK = flags.DEFINE_bool("quick", False, "Tiny random model, 64x64, one round.")


def _model() -> tuple[object, dict, str]:
  """``(config, variables, description)`` of the model to benchmark."""
  if _QUICK.value:
    from configs import quickstart, tiny  # pylint: disable=g-import-not-at-top
    config = tiny.shrink(quickstart.get_config())
    config.model.zero_residual = False  # Not the identity: the outputs differ from the input.
    model = models.generator_from_config(config.model)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    return config, variables, "tiny random model"
  config, variables, step = loading.load_generator(_CKPT.value)
  return config, variables, f"{_CKPT.value} (step {step})"


def _pad(x: np.ndarray, multiple: int) -> np.ndarray:
  """[N, H, W, C] reflect-padded at the bottom and right to multiples of ``multiple``."""
  ph, pw = -x.shape[1] % multiple, -x.shape[2] % multiple
  return np.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="reflect")


def _implementations(config, variables) -> tuple[dict, int]:
  """``{name: f(x [1, H, W, 3] float32) -> np.ndarray}`` and the sides' multiple."""
  import onnxruntime as ort  # pylint: disable=g-import-not-at-top
  fn, multiple = export_lib.generator_fn(config, variables)
  options = conv.compiler_options(jax.default_backend())
  model = models.generator_from_config(config.model)
  jitted = jax.jit(lambda v, x: model.apply(v, x, train=False), compiler_options=options)
  exported = jax.export.deserialize(export_lib.export_stablehlo(fn, multiple).serialize())
  shlo = jax.jit(exported.call, compiler_options=options)
  t0 = time.perf_counter()
  onnx_fn, _ = export_lib.generator_fn(config, variables, export_lib.ONNX_CONV_PLATFORM)
  session = ort.InferenceSession(export_lib.export_onnx(onnx_fn, multiple).SerializeToString(),
                                 providers=["CPUExecutionProvider"])
  print(f"ONNX conversion and session: {time.perf_counter() - t0:.1f} s")
  return {
      "JAX": lambda x: np.asarray(jitted(variables, x)),
      "StableHLO": lambda x: np.asarray(shlo(x)),
      "ONNX": lambda x: session.run(["y"], {"x": x})[0],
  }, multiple


def _time_alternating(impls: dict, x: np.ndarray, rounds: int) -> dict[str, list[float]]:
  """Seconds per call of each implementation, one call of each per round."""
  times = {name: [] for name in impls}
  for _ in range(rounds):
    for name, f in impls.items():
      t0 = time.perf_counter()
      f(x)
      times[name].append(time.perf_counter() - t0)
  return times


def _versions() -> str:
  v = export_lib.onnx_versions()
  return (f"onnxruntime {v['onnxruntime']} (CPUExecutionProvider, default threads), onnx "
          f"{v['onnx']}, jax2onnx {v['jax2onnx']} (opset {v['opset']})")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  export_lib.require_onnx()
  logging.set_verbosity(logging.WARNING)  # jax2onnx logs its arguments at INFO.
  sizes = [(64, 64)] if _QUICK.value else common.parse_sizes(_SIZES.value)
  rounds = 1 if _QUICK.value else _ROUNDS.value
  config, variables, what = _model()
  print(f"# Exported generator, CPU inference ({what}, {config.model.variant}, channels "
        f"{tuple(config.model.channels)}, norm {config.model.norm})")
  print("Device:", common.describe_device())
  print("Export:", _versions())
  impls, multiple = _implementations(config, variables)
  header = ["size", "padded", "impl", "first call s", "median ms", "min ms", "max ms",
            "max abs diff vs JAX", "time / JAX"]
  rows = []
  for h, w in sizes:
    x = _pad(image_io.to_model_range(common.random_images(h * w, (1, h, w, 3))), multiple)
    first, outputs = {}, {}
    for name, f in impls.items():  # Warm-up: compilation (JAX) or allocation (onnxruntime).
      t0 = time.perf_counter()
      outputs[name] = f(x)
      first[name] = time.perf_counter() - t0
    times = _time_alternating(impls, x, rounds)
    med = {name: statistics.median(t) for name, t in times.items()}
    for name in impls:
      diff = float(np.max(np.abs(outputs[name] - outputs["JAX"])))
      rows.append([f"{h}x{w}", f"{x.shape[1]}x{x.shape[2]}", name, f"{first[name]:.2f}",
                   f"{med[name] * 1e3:.1f}", f"{min(times[name]) * 1e3:.1f}",
                   f"{max(times[name]) * 1e3:.1f}", "-" if name == "JAX" else f"{diff:.1e}",
                   f"{med[name] / med['JAX']:.3g}"])
      print(*rows[-1], sep="  ", flush=True)
  print(f"\n{rounds} alternating rounds per size, medians:\n")
  common.print_table(header, rows)
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(main)
