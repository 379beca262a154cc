"""What bfloat16 mixed-precision training costs: quickstart runs in float32 and bfloat16.

  python -m benchmarks.mixed_precision                 # the quickstart's 1920 steps, each dtype
  python -m benchmarks.mixed_precision --steps=480     # shorter
  python -m benchmarks.mixed_precision --quick         # tiny model, 4 steps: checks it runs

For each ``config.train.compute_dtype`` it trains ``configs/quickstart.py`` (or ``--config``)
from the same initial parameters on the same batches, then restores the held-out synthetic
pairs (``coffee`` and ``rocket``, 8 blurs) in float32 and reports the step rate and the
held-out PSNR, with the difference to float32. Parameters and optimizer state are float32 in
both runs (:func:`biskip_jax.train.train_step.compute_dtype`).

The batches come from a pool of ``--pool`` random synthetic crops made once, not from the
streaming input pipeline (which needs grain): the figure is the precision's cost, measured
on identical data, and fits a short GPU window. The step rate includes assembling each batch
from the pool and copying it to the device.
"""

import os
import time

import jax
import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from benchmarks import common
from biskip_jax.data.datasets import synthetic
from biskip_jax.evaluation import metrics
from biskip_jax.inference import full_resolution
from biskip_jax.objective import spl
from biskip_jax.train import train_step
from configs import tiny

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(common._ROOT, "configs", "quickstart.py"),
    "Training config (default: the quickstart's, synthetic blur of scikit-image photos).")
_STEPS = flags.DEFINE_integer(
    "steps", None, "Train steps per dtype. Default: the config's (quickstart: 1920).")
_DTYPES = flags.DEFINE_string("dtypes", "float32,bfloat16", "Compute dtypes, float32 first.")
_POOL = flags.DEFINE_integer("pool", 512, "Training crops made once and drawn from.")
_JSON_OUT = flags.DEFINE_string(
    "json_out", None, "Also write the table as JSON to this file (rewritten after each row).")
_QUICK = flags.DEFINE_bool(
    "quick", False, "Tiny model on 32x32 crops, 4 steps, 2 held-out pairs: checks it runs.")


def _source(config: ml_collections.ConfigDict, split: str) -> synthetic.SyntheticSource:
  """The config's synthetic source of ``split`` ("train" or "eval")."""
  sy = config.data.synthetic
  return synthetic.SyntheticSource(
      synthetic.image_specs(sy.images, sy.holdout, split),
      num_examples=sy.num_train if split == "train" else sy.num_eval,
      seed=config.train.seed, split=split, kernel_size=sy.kernel_size,
      max_anxiety=sy.max_shake, noise_std=sy.noise_std, gamma=sy.gamma,
      length_range=sy.length_range, exposure_range=sy.exposure_range,
      noise_std_max=sy.noise_std_max, jpeg_prob=sy.jpeg_prob, jpeg_quality=sy.jpeg_quality,
      sharp_prob=sy.sharp_prob, scale_range=sy.scale_range, eval_max_size=sy.eval_max_size)


def make_pool(config: ml_collections.ConfigDict, size: int) -> dict[str, np.ndarray]:
  """``size`` random training crops: ``{"blur", "sharp"}``, uint8 [size, crop, crop, 3]."""
  source = _source(config, "train")
  rng = np.random.default_rng(config.train.seed)
  crop = config.data.crop_size
  blur, sharp = [], []
  while len(blur) < size:
    pair = source.random_crop(int(rng.integers(len(source))), crop, rng)
    if pair is not None:
      blur.append(pair[0])
      sharp.append(pair[1])
  return {"blur": np.stack(blur), "sharp": np.stack(sharp)}


def _batches(pool: dict[str, np.ndarray], batch: int, steps: int, seed: int, flip: bool):
  """``steps`` batches drawn from ``pool`` with random flips; the same for every dtype."""
  rng = np.random.default_rng(seed)
  for _ in range(steps):
    idx = rng.integers(len(pool["blur"]), size=batch)
    b, s = pool["blur"][idx], pool["sharp"][idx]
    if flip:
      flips = rng.uniform(size=2) < 0.5
      for axis, f in zip((2, 1), flips):
        if f:
          b, s = np.flip(b, axis), np.flip(s, axis)
    yield {"blur": np.ascontiguousarray(b), "sharp": np.ascontiguousarray(s)}


def train(config: ml_collections.ConfigDict, pool: dict[str, np.ndarray],
          steps: int) -> tuple[train_step.TrainState, float, float]:
  """Trains ``steps`` steps on batches from ``pool``.

  Returns:
    ``(state, compile_seconds, steps_per_second)``; the rate leaves out the first step
    (compilation).
  """
  mesh = train_step.make_mesh()
  crop = config.data.crop_size
  state = train_step.create_train_state(config, steps, crop)
  jitted = train_step.jit_train_step(config, config.train.num_epochs, mesh, state)
  state = train_step.replicate(state, mesh)
  per_epoch = config.train.steps_per_epoch if config.train.steps_per_epoch > 0 else steps
  end_epoch = jax.jit(spl.end_epoch)
  t0 = time.perf_counter()
  t_first = None
  metrics_ = None
  for i, host in enumerate(_batches(pool, config.train.batch_size, steps, config.train.seed,
                                    config.data.random_flip)):
    state, metrics_ = jitted(state, train_step.shard_batch(host, mesh), {})
    if (i + 1) % per_epoch == 0:
      state = state.replace(spl=end_epoch(state.spl))
    if i == 0:
      jax.block_until_ready(metrics_)
      t_first = time.perf_counter()
  jax.block_until_ready(metrics_)
  t_end = time.perf_counter()
  if not float(metrics_["finite"]):
    raise RuntimeError(f"the last step was not finite: {jax.device_get(metrics_)}")
  rate = (steps - 1) / (t_end - t_first) if steps > 1 else float("nan")
  return state, t_first - t0, rate


def held_out_psnr(config: ml_collections.ConfigDict, state: train_step.TrainState,
                  pairs: list[dict]) -> tuple[float, float]:
  """Mean PSNR of the restored and of the blurred held-out pairs (float32 inference)."""
  variables = {"params": state.gen.params, "batch_stats": state.gen.batch_stats}
  deblurrer = full_resolution.Deblurrer(config, variables, dtype="float32")
  restored = [metrics.psnr(deblurrer(p["blur"]), p["sharp"]) for p in pairs]
  blurred = [metrics.psnr(p["blur"], p["sharp"]) for p in pairs]
  return float(np.mean(restored)), float(np.mean(blurred))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value.copy_and_resolve_references()
  if _QUICK.value:
    config = tiny.shrink(config)
    config.data.synthetic.num_eval = 2
    config.data.synthetic.eval_max_size = 64
  t = config.train
  steps = _STEPS.value or (4 if _QUICK.value else (
      t.num_steps if t.num_steps > 0 else t.num_epochs * t.steps_per_epoch))
  if steps < 1:
    raise app.UsageError("--steps must be >= 1 (or the config must set its step count)")
  dtypes = [d for d in _DTYPES.value.split(",") if d]
  title = (f"bf16 mixed precision: {config.scheme} on synthetic blur, {steps} steps of "
           f"{t.batch_size} x {config.data.crop_size}^2, held-out PSNR in float32")
  print(f"# {title}")
  header = ["compute dtype", "steps", "compile s", "steps/s", "held-out PSNR", "blurred PSNR",
            "gain dB", "PSNR - float32 dB"]
  table = common.Table(title, header, _JSON_OUT.value)
  print("Device:", table.meta["device"])
  t0 = time.perf_counter()
  pool = make_pool(config, 16 if _QUICK.value else _POOL.value)
  eval_source = _source(config, "eval")
  pairs = [eval_source.load(i) for i in range(len(eval_source))]
  table.note(f"{len(pool['blur'])} training crops and {len(pairs)} held-out pairs made in "
             f"{time.perf_counter() - t0:.1f} s")
  reference = None
  for dtype in dtypes:
    run_config = config.copy_and_resolve_references()
    run_config.train.compute_dtype = dtype
    state, compile_s, rate = train(run_config, pool, steps)
    psnr, blurred = held_out_psnr(run_config, state, pairs)
    reference = psnr if reference is None else reference
    table.add([dtype, steps, f"{compile_s:.1f}", f"{rate:.1f}", f"{psnr:.3f}",
               f"{blurred:.3f}", f"{psnr - blurred:+.3f}", f"{psnr - reference:+.3f}"])
  table.print()


if __name__ == "__main__":
  app.run(main)
