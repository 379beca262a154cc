r"""Deep priors of Skip vs Bi-Skip (paper §3.1, eq. 2, Fig. 2 and 4).

Fits one generator to one image and records the PSNR of its output at every iteration:

* task ``noise``: ``min_G ||G(z) - x0||^2`` (eq. 2), z a fixed random input, x0 a photo;
* task ``blur``: the same objective with the blurred photo as input (Fig. 4), i.e. how fast
  the network can map this one blurred image to its sharp version.

Each task is run with the Skip (``S``) and Bi-Skip (``BS``) generators of
:class:`biskip_jax.nn.models.BiSkip`, from the same initialisation seed; the paper claims that
Bi-Skip fits faster (Fig. 2). Run from the repository root::

  python -m experiments.deep_prior --out=runs/deep_prior   # 64x64, width x0.25: ~5 CPU-minutes
  python -m experiments.deep_prior --size=256 --width=1 --iters=2400  # closer to Fig. 2 (GPU)

Writes into ``--out``: ``deep_prior.csv`` (iteration, task, variant, psnr), ``deep_prior.png``
(PSNR curves), ``deep_prior_images.png`` (target, input and final outputs) and prints the
final PSNRs and the iterations each run needed to reach ``--report_psnr`` levels.

Notes on what is measured: the generator keeps its global residual (``G(z) = z + r``; z is
small noise so this changes little); batch norm uses the statistics of the single image, as
in training; the PSNR of iteration k is that of the output of the k-th forward pass (after
k - 1 Adam updates), rounded to uint8 as an image would be saved.
"""

import csv
import os
import time
from typing import Any, Sequence

import numpy as np
from absl import app, flags

from biskip_jax import cli
from biskip_jax.data import image_io
from biskip_jax.errors import UserError

FLAGS = flags.FLAGS
TASKS = ("noise", "blur")
CSV_COLUMNS = ("iteration", "task", "variant", "psnr")


def define_flags() -> None:
  """Defines the script's flags (only when run as a script, so that tests can import it)."""
  from biskip_jax.data.datasets import synthetic
  flags.DEFINE_string("out", "runs/deep_prior", "Output folder for the CSV and PNGs.")
  flags.DEFINE_integer("size", 64, "Side of the square target image (center crop, resized).",
                       lower_bound=8)
  flags.DEFINE_integer("iters", 500, "Adam iterations per (task, variant).", lower_bound=1)
  flags.DEFINE_float("lr", 1e-3, "Adam learning rate.", lower_bound=0.0)
  flags.DEFINE_enum("image", "astronaut", synthetic.SKIMAGE_PHOTOS,
                    "scikit-image photo used as x0.")
  flags.DEFINE_integer("seed", 0, "Seed of the initialisation, z and the blur kernel.")
  flags.DEFINE_float("width", 0.25, "Channel scale of the paper's widths (1 = 32..128).",
                     lower_bound=0.0)
  flags.DEFINE_integer("num_res_blocks", 3, "ResBlocks per level of BS (paper: 3).",
                       lower_bound=0)
  flags.DEFINE_list("variants", ["S", "BS"], "Generator variants: S, BS-w/o-R, BS-cR, BS.")
  flags.DEFINE_list("tasks", list(TASKS), "noise (G(z) -> x0, eq. 2) and/or blur "
                    "(G(blurred) -> sharp, Fig. 4).")
  flags.DEFINE_float("noise_scale", 0.1, "z ~ U(-s, s) per pixel and channel (model range "
                     "[-1, 1]).", lower_bound=0.0)
  flags.DEFINE_integer("kernel_size", 21, "Blur kernel side (pixels) for the blur task.",
                       lower_bound=1)
  flags.DEFINE_float("max_shake", 0.005, "Trajectory anxiety of the blur kernel.")
  flags.DEFINE_float("blur_noise", 0.01, "Gaussian noise std added to the blurred image.",
                     lower_bound=0.0)
  flags.DEFINE_list("report_psnr", ["20", "25", "30"],
                    "PSNR levels (dB) whose first iteration is printed.")


def load_target(image: str, size: int) -> np.ndarray:
  """A scikit-image photo, center-cropped to a square and resized: uint8 [size, size, 3]."""
  from skimage import transform

  from biskip_jax.data.datasets import synthetic
  img = synthetic.load_skimage_photo(image)
  h, w = img.shape[:2]
  s = min(h, w)
  top, left = (h - s) // 2, (w - s) // 2
  img = img[top:top + s, left:left + s]
  out = transform.resize(img, (size, size), anti_aliasing=True, preserve_range=True)
  return np.clip(np.round(out), 0, 255).astype(np.uint8)


def make_inputs(target: np.ndarray, tasks: Sequence[str], *, seed: int, noise_scale: float,
                kernel_size: int, max_shake: float,
                blur_noise: float) -> dict[str, np.ndarray]:
  """The fixed network input of each task.

  Args:
    target: uint8 [H, W, 3] sharp image x0.
    tasks: names from :data:`TASKS`.
    seed: seed of z, the kernel and the blur noise.
    noise_scale: z ~ U(-noise_scale, noise_scale).
    kernel_size: blur kernel side.
    max_shake: kernel trajectory anxiety (``blur.random_kernel``'s ``max_anxiety``).
    blur_noise: noise std of the blurred image ([0, 1] units).

  Returns:
    ``{task: float32 [1, H, W, 3]}`` in the model range [-1, 1] (z need not be).
  """
  from biskip_jax.data import blur
  rng = np.random.default_rng(seed)
  out = {}
  for task in tasks:
    if task == "noise":
      z = rng.uniform(-noise_scale, noise_scale, size=target.shape)
      out[task] = z.astype(np.float32)[None]
    elif task == "blur":
      kernel = blur.random_kernel(rng, kernel_size, max_anxiety=max_shake)
      b = blur.blur_image(target, kernel, rng, noise_std=blur_noise)
      out[task] = image_io.to_model_range(b)[None]
    else:
      raise UserError(f"--tasks: unknown task {task!r}; expected {', '.join(TASKS)}")
  return out


def make_generator(variant: str, width: float, num_res_blocks: int) -> Any:
  """The paper's generator (configs/biskip.py) with channels scaled by ``width``."""
  from biskip_jax.nn import models
  from configs import biskip
  if variant not in models.VARIANTS:
    raise UserError(f"--variants: unknown variant {variant!r}; expected one of "
                    f"{', '.join(models.VARIANTS)}")
  m = biskip.get_config().model
  scale = lambda cs: tuple(max(1, int(round(c * width))) for c in cs)
  return models.BiSkip(variant=variant, channels=scale(m.channels),
                       skip_channels=scale(m.skip_channels), num_res_blocks=num_res_blocks,
                       norm=m.norm, pool=m.pool, act_slope=m.act_slope,
                       bn_momentum=m.bn_momentum)


def fit(model: Any, inputs: dict[str, np.ndarray], target: np.ndarray, *, iters: int,
        lr: float, seed: int, rng_impl: str = "rbg") -> dict[str, dict[str, Any]]:
  """Minimises eq. 2, ``||G(input) - x0||^2``, for each input, from the same initialisation.

  One jitted step serves all tasks (their inputs have the same shape): it compiles once.

  Args:
    model: a :class:`biskip_jax.nn.models.BiSkip`.
    inputs: ``{task: float32 [1, H, W, 3]}``.
    target: uint8 [H, W, 3] x0.
    iters: Adam iterations per task.
    lr: Adam learning rate.
    seed: initialisation seed.
    rng_impl: PRNG implementation of the initialisation key (``config.rng_impl``).

  Returns:
    ``{task: {"psnr": float [iters] (iteration k's output, before its update),
    "output": uint8 [H, W, 3] (last output), "seconds": wall time (compilation included
    for the first task)}}``.
  """
  import jax
  import jax.numpy as jnp
  import optax

  x0 = image_io.to_model_range(jnp.asarray(target)[None])
  x0_u8 = jnp.asarray(target, jnp.float32)[None]
  tx = optax.adam(lr)

  @jax.jit
  def step(params, batch_stats, opt_state, z):
    def loss_fn(p):
      out, mutated = model.apply({"params": p, "batch_stats": batch_stats}, z, train=True,
                                 mutable=["batch_stats"])
      return jnp.mean(jnp.square(out - x0)), (out, mutated["batch_stats"])

    (_, (out, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    image = image_io.from_model_range(out).astype(jnp.float32)
    mse = jnp.mean(jnp.square(image - x0_u8))
    psnr = 10.0 * jnp.log10(255.0 ** 2 / jnp.maximum(mse, 1e-10))
    return optax.apply_updates(params, updates), new_stats, opt_state, psnr, image[0]

  variables = jax.jit(lambda k: model.init(k, x0, train=False))(jax.random.key(seed, impl=rng_impl))
  results = {}
  for task, z in inputs.items():
    params, stats = variables["params"], variables.get("batch_stats", {})
    opt_state = tx.init(params)
    z = jnp.asarray(z)
    t0 = time.perf_counter()
    curve = []
    for _ in range(iters):
      params, stats, opt_state, psnr, image = step(params, stats, opt_state, z)
      curve.append(psnr)
    curve = np.asarray(jax.device_get(jnp.stack(curve)), np.float64)
    results[task] = {"psnr": curve, "output": np.asarray(image, np.uint8),
                     "seconds": time.perf_counter() - t0}
  return results


def first_reaching(curve: np.ndarray, level: float) -> int | None:
  """The first iteration (1-based) whose PSNR is >= ``level``; None if never."""
  hits = np.nonzero(np.asarray(curve) >= level)[0]
  return int(hits[0]) + 1 if hits.size else None


def write_csv(path: str, results: dict[str, dict[str, dict[str, Any]]]) -> None:
  """Writes ``iteration, task, variant, psnr`` rows; ``results[variant][task]["psnr"]``."""
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(CSV_COLUMNS)
    for variant, by_task in results.items():
      for task, r in by_task.items():
        for k, p in enumerate(r["psnr"], start=1):
          writer.writerow([k, task, variant, f"{p:.4f}"])


def plot_curves(path: str, results: dict[str, dict[str, dict[str, Any]]],
                title: str) -> None:
  """PSNR against iteration, one panel per task, one line per variant."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  tasks = list(next(iter(results.values())))
  fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4), squeeze=False)
  labels = {"noise": "G(z) -> x0 (eq. 2, Fig. 2)", "blur": "G(blurred) -> sharp (Fig. 4)"}
  for ax, task in zip(axes[0], tasks):
    for variant, by_task in results.items():
      curve = by_task[task]["psnr"]
      ax.plot(np.arange(1, len(curve) + 1), curve, label=variant)
    ax.set_title(labels.get(task, task))
    ax.set_xlabel("iteration")
    ax.set_ylabel("PSNR (dB)")
    ax.grid(alpha=0.3)
    ax.legend()
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_images(path: str, target: np.ndarray, inputs: dict[str, np.ndarray],
                results: dict[str, dict[str, dict[str, Any]]], iters: int) -> None:
  """Rows: tasks; columns: target, input, each variant's last output (Fig. 2 / 4 style)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  tasks = list(inputs)
  cols = 2 + len(results)
  fig, axes = plt.subplots(len(tasks), cols, figsize=(2.6 * cols, 2.8 * len(tasks)),
                           squeeze=False)
  for row, task in zip(axes, tasks):
    shown = image_io.from_model_range(inputs[task][0])
    panels = [("target x0", target), (f"input ({task})", shown)]
    for variant, by_task in results.items():
      r = by_task[task]
      panels.append((f"{variant}, iter {iters}: {r['psnr'][-1]:.2f} dB", r["output"]))
    for ax, (name, img) in zip(row, panels):
      ax.imshow(img)
      ax.set_title(name, fontsize=9)
      ax.axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def summary(results: dict[str, dict[str, dict[str, Any]]], levels: Sequence[float]) -> str:
  """A text table: final and best PSNR, first iteration reaching each level, seconds."""
  head = (f"{'task':<6} {'variant':<9} {'final':>7} {'best':>7} "
          + " ".join(f"{f'>={lv:g}dB':>8}" for lv in levels) + f" {'seconds':>8}")
  lines = [head]
  tasks = list(next(iter(results.values())))
  for task in tasks:
    for variant, by_task in results.items():
      r = by_task[task]
      hits = [first_reaching(r["psnr"], lv) for lv in levels]
      lines.append(f"{task:<6} {variant:<9} {r['psnr'][-1]:7.2f} {np.max(r['psnr']):7.2f} "
                   + " ".join(f"{h if h is not None else '-':>8}" for h in hits)
                   + f" {r['seconds']:8.1f}")
  return "\n".join(lines)


def run(out: str, *, image: str, size: int, iters: int, lr: float, seed: int, width: float,
        num_res_blocks: int, variants: Sequence[str], tasks: Sequence[str],
        noise_scale: float, kernel_size: int, max_shake: float, blur_noise: float,
        report_psnr: Sequence[float]) -> dict[str, dict[str, dict[str, Any]]]:
  """The whole experiment; writes the CSV and the two PNGs into ``out`` and returns
  ``results[variant][task]`` (see :func:`fit`)."""
  if not variants or not tasks:
    raise UserError("--variants and --tasks need at least one entry each")
  for task in tasks:
    if task not in TASKS:
      raise UserError(f"--tasks: unknown task {task!r}; expected {', '.join(TASKS)}")
  if width * 16 < 1:
    raise UserError(f"--width={width} leaves layers without channels; use >= 0.0625")
  from configs import biskip
  rng_impl = biskip.get_config().rng_impl
  models = {v: make_generator(v, width, num_res_blocks) for v in variants}
  target = load_target(image, size)
  inputs = make_inputs(target, tasks, seed=seed, noise_scale=noise_scale,
                       kernel_size=kernel_size, max_shake=max_shake, blur_noise=blur_noise)
  os.makedirs(out, exist_ok=True)
  results = {}
  for variant, model in models.items():
    print(f"fitting {variant} ({', '.join(tasks)}) ...", flush=True)
    results[variant] = fit(model, inputs, target, iters=iters, lr=lr, seed=seed,
                           rng_impl=rng_impl)
  write_csv(os.path.join(out, "deep_prior.csv"), results)
  title = (f"{image} {size}x{size}, width x{width:g}, Adam lr {lr:g}, seed {seed}")
  plot_curves(os.path.join(out, "deep_prior.png"), results, title)
  plot_images(os.path.join(out, "deep_prior_images.png"), target, inputs, results, iters)
  print(summary(results, report_psnr))
  return results


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    levels = [float(v) for v in FLAGS.report_psnr]
  except ValueError as e:
    raise UserError(f"--report_psnr={','.join(FLAGS.report_psnr)}: expected numbers "
                    "(dB)") from e
  run(FLAGS.out, image=FLAGS.image, size=FLAGS.size, iters=FLAGS.iters, lr=FLAGS.lr,
      seed=FLAGS.seed, width=FLAGS.width, num_res_blocks=FLAGS.num_res_blocks,
      variants=FLAGS.variants, tasks=FLAGS.tasks, noise_scale=FLAGS.noise_scale,
      kernel_size=FLAGS.kernel_size, max_shake=FLAGS.max_shake,
      blur_noise=FLAGS.blur_noise, report_psnr=levels)
  print(f"wrote {FLAGS.out}/deep_prior.csv, deep_prior.png, deep_prior_images.png")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
