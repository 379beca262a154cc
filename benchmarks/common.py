"""Shared pieces of the benchmark scripts: device description, timers, memory, tables, and the
like-for-like check of the JAX code against ``benchmarks/torch_reference.py``.

Timing follows the usual rules: warm up first (compilation and autotuning stay out of the
figures; JAX compile time is reported separately), synchronise the device around each timed
call, repeat and report the median.
"""

import copy
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import torch

from benchmarks import torch_reference as tr
from biskip_jax.data import image_io
from biskip_jax.nn import models, vgg, vgg_loading
from biskip_jax.output_files import atomic_write
from biskip_jax.train import train_step

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def torch_device() -> torch.device:
  """The PyTorch device on the same hardware JAX uses (CUDA if JAX runs on a GPU)."""
  if jax.default_backend() == "gpu" and torch.cuda.is_available():
    return torch.device("cuda")
  return torch.device("cpu")


def _cpu_model() -> str:
  """The CPU's model name from /proc/cpuinfo ("" where there is none): machines differ."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return ""


def describe_device() -> str:
  """One line: hardware, software versions and thread counts."""
  dev = jax.devices()[0]
  if dev.platform == "cpu":
    hw = f"CPU {_cpu_model() or platform.processor() or platform.machine()}, " \
         f"{os.cpu_count()} cores"
  else:
    hw = f"{dev.device_kind}"
  return (f"{hw}; jax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__} "
          f"({torch_device().type}, {torch.get_num_threads()} threads); "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


def time_calls(fn: Callable[[], Any], sync: Callable[[Any], Any], warmup: int,
               iters: int) -> float:
  """Median seconds of ``sync(fn())`` over ``iters`` calls after ``warmup`` calls."""
  for _ in range(warmup):
    sync(fn())
  times = []
  for _ in range(iters):
    t0 = time.perf_counter()
    sync(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def jax_sync(out: Any) -> Any:
  return jax.block_until_ready(out)


def torch_sync(_: Any) -> None:
  if torch.cuda.is_available() and torch_device().type == "cuda":
    torch.cuda.synchronize()


def xla_peak_bytes(compiled: Any) -> int | None:
  """Device memory XLA plans for one call: arguments + outputs + temporaries − aliased."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # Some backends do not report it.
    return None
  if m is None:
    return None
  return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
             - m.alias_size_in_bytes)


def gflop(lowered: Any) -> float | None:
  """GFLOP of a lowered JAX computation by XLA's cost analysis (None if not reported)."""
  try:
    cost = lowered.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"]) / 1e9
  except Exception:  # Not every backend or version reports it.
    return None


def torch_reset_peak() -> None:
  if torch_device().type == "cuda":
    torch.cuda.reset_peak_memory_stats()


def torch_peak_bytes() -> int | None:
  if torch_device().type == "cuda":
    return int(torch.cuda.max_memory_allocated())
  return None


def device_peak_bytes() -> int | None:
  """XLA's high-water mark of device memory in this process (``memory_stats()``), or None.

  The allocator keeps no per-call peak and cannot be reset: run the largest case last, or
  read it as the peak of everything so far. CPU devices report nothing.
  """
  try:
    stats = jax.devices()[0].memory_stats()
  except Exception:  # Not every backend or version has memory_stats.
    return None
  if not stats or "peak_bytes_in_use" not in stats:
    return None
  return int(stats["peak_bytes_in_use"])


def torch_peak_reserved_bytes() -> int | None:
  """Peak memory PyTorch's caching allocator held on CUDA since the last reset, or None."""
  if torch_device().type == "cuda":
    return int(torch.cuda.max_memory_reserved())
  return None


def fmt_mb(nbytes: int | None) -> str:
  return "-" if nbytes is None else f"{nbytes / 2**20:.0f}"


def print_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
  """A Markdown table on stdout."""
  print("| " + " | ".join(header) + " |")
  print("|" + "|".join("---" for _ in header) + "|")
  for row in rows:
    print("| " + " | ".join(str(c) for c in row) + " |")
  sys.stdout.flush()


class Table:
  """A results table printed row by row and, with ``json_path``, kept as JSON after each row.

  The JSON file (``{"title", "device", "check", "header", "rows", "notes"}``, rows as lists of
  strings in header order) is rewritten after every row, so a run stopped by a timeout keeps
  the rows measured so far.
  """

  def __init__(self, title: str, header: Sequence[str], json_path: str | None = None):
    self.title = title
    self.header = list(header)
    self.rows: list[list[str]] = []
    self.meta: dict[str, Any] = {"device": describe_device(), "check": None, "notes": []}
    self.json_path = json_path
    self._write()

  def add(self, row: Sequence[Any]) -> None:
    """Appends one row (printed at once, two spaces between cells)."""
    self.rows.append([str(c) for c in row])
    print(*self.rows[-1], sep="  ", flush=True)
    self._write()

  def note(self, text: str) -> None:
    """A line printed now and kept with the table."""
    print(text, flush=True)
    self.meta["notes"].append(text)
    self._write()

  def set_check(self, errors: dict[str, float]) -> None:
    """Records (and prints) the like-for-like check."""
    print_equivalence(errors)
    self.meta["check"] = {k: float(v) for k, v in errors.items()}
    self._write()

  def print(self) -> None:
    print()
    print_table(self.header, self.rows)

  def _write(self) -> None:
    if not self.json_path:
      return
    data = dict(title=self.title, header=self.header, rows=self.rows, **self.meta)
    with atomic_write(self.json_path, "w") as f:
      json.dump(data, f, indent=1)


def parse_sizes(text: str) -> list[tuple[int, int]]:
  """"256x256,720x1280" -> [(256, 256), (720, 1280)] (height x width)."""
  sizes = []
  for item in filter(None, text.split(",")):
    h, _, w = item.partition("x")
    sizes.append((int(h), int(w or h)))
  return sizes


def random_images(seed: int, shape: tuple[int, ...]) -> np.ndarray:
  """uint8 images (never zeros: zeros can time faster than real data)."""
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# --- Like-for-like check. ---

def _rel(a: Any, ref: Any) -> float:
  a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
  return float(np.linalg.norm(a - ref) / max(np.linalg.norm(ref), 1e-30))


def _nchw(x: Any, device: torch.device) -> torch.Tensor:
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2))).to(device)


def _nhwc(t: torch.Tensor) -> np.ndarray:
  return t.detach().float().cpu().numpy().transpose(0, 2, 3, 1)


def build_pair(config: Any, crop: int, total_steps: int = 1000, seed: int = 0):
  """JAX train state, VGG params and the ported PyTorch networks with the same weights.

  Returns:
    ``(state, vgg_params, torch_generator, torch_critic, torch_vgg)`` (torch ones on
    :func:`torch_device`; ``torch_vgg`` None without the perceptual loss).
  """
  state = train_step.create_train_state(config, total_steps, crop)
  device = torch_device()
  g = tr.port_generator(tr.generator_from_config(config.model),
                        {"params": state.gen.params, "batch_stats": state.gen.batch_stats})
  d = tr.port_critic(tr.critic_from_config(config.critic), {"params": state.critic.params})
  torch.manual_seed(seed)
  layer = config.loss.vgg_layer
  index = {spec.name: spec.index for spec in vgg.LAYERS}[layer]
  tv = tr.vgg19_features(index)
  vgg_params = jax.tree_util.tree_map(
      jnp.asarray, vgg_loading.port_torchvision_vgg19(tr.vgg_state_dict(tv), layer))
  return state, vgg_params, g.to(device), d.to(device), tv.to(device).eval()


def gp_alphas(state: Any, n: int, n_critic: int) -> list[np.ndarray]:
  """The α_i of eq. 7 that the JAX step draws at ``state.step`` for each critic update."""
  key = jax.random.fold_in(state.rng, state.step)
  return [np.asarray(jax.random.uniform(jax.random.fold_in(key, k), (n, 1, 1, 1),
                                        jnp.float32)).reshape(n) for k in range(n_critic)]


def check_equivalence(config: Any, crop: int = 64, batch: int = 2, seed: int = 0,
                      include_step: bool = True) -> dict[str, float]:
  """Relative L2 errors between the JAX code and the PyTorch reference on the same weights.

  Compares, on one random uint8 batch [batch, crop, crop, 3]: the generator's output in
  inference and training mode, the critic's scores, the VGG features, the losses of one train
  step (same α_i for the gradient penalty) and the generator's output after that step,
  measured against how much the step changed it (so a wrong gradient shows up as ~1).
  ``include_step=False`` stops after the forward passes.

  Returns:
    ``{name: ‖torch − jax‖ / ‖jax‖}``.
  """
  device = torch_device()
  state, vgg_params, g, d, tv = build_pair(config, crop, seed=seed)
  blur = random_images(seed + 1, (batch, crop, crop, 3))
  sharp = random_images(seed + 2, (batch, crop, crop, 3))
  b = np.asarray(image_io.to_model_range(jnp.asarray(blur)))
  x = np.asarray(image_io.to_model_range(jnp.asarray(sharp)))
  gen = models.generator_from_config(config.model)
  crit = models.critic_from_config(config.critic)
  g_vars = {"params": state.gen.params, "batch_stats": state.gen.batch_stats}
  errors = {}
  g_copy = copy.deepcopy(g)
  # Jitted: one compile per function is faster than eager Flax's one per operation.
  g_apply = jax.jit(gen.apply, static_argnames=("train", "mutable"))
  with torch.no_grad():
    errors["G eval"] = _rel(_nhwc(g_copy.eval()(_nchw(b, device))),
                            g_apply(g_vars, b, train=False))
    jax_train, _ = g_apply(g_vars, b, train=True, mutable=("batch_stats",))
    errors["G train"] = _rel(_nhwc(g_copy.train()(_nchw(b, device))), jax_train)
    cond = _nchw(b, device) if config.critic.conditional else None
    d_args = (x, b) if config.critic.conditional else (x,)
    errors["D"] = _rel(d(_nchw(x, device), cond).cpu().numpy(),
                       jax.jit(crit.apply)({"params": state.critic.params}, *d_args))
    fns = train_step.StepFns(config, 10)
    errors["VGG"] = _rel(_nhwc(tv(_nchw(np.asarray(vgg.normalize_input(
        jnp.asarray(x), config.loss.vgg_input)), device))),
        jax.jit(fns.features)(vgg_params, x))
  if not include_step:
    return errors

  alphas = [torch.from_numpy(np.array(a)).to(device)
            for a in gp_alphas(state, batch, config.train.n_critic)]
  trainer = tr.Trainer(g, d, tv if config.loss.perceptual else None, config.loss,
                       config.train.n_critic, config.optim.g_lr, config.optim.d_lr,
                       (config.optim.b1, config.optim.b2))
  t_losses = trainer.step(_nchw(blur, device), _nchw(sharp, device), alphas)
  step = jax.jit(lambda s, bt, vp: train_step.train_step(s, bt, vp, fns=fns))
  new_state, metrics = step(state, {"blur": jnp.asarray(blur), "sharp": jnp.asarray(sharp)},
                            vgg_params)
  errors["step g_loss"] = _rel(t_losses["g_loss"].cpu().numpy(), metrics["g_loss"])
  if config.loss.adversarial:
    errors["step d_loss"] = _rel(t_losses["d_loss"].cpu().numpy(), metrics["d_loss"])
  after, _ = g_apply({"params": new_state.gen.params,
                      "batch_stats": new_state.gen.batch_stats}, b, train=True,
                     mutable=("batch_stats",))
  with torch.no_grad():
    t_after = _nhwc(g.train()(_nchw(b, device)))
  change = np.linalg.norm(np.asarray(after, np.float64) - np.asarray(jax_train, np.float64))
  errors["G after step (vs its change)"] = float(
      np.linalg.norm(t_after - np.asarray(after, np.float64)) / max(change, 1e-30))
  return errors


def print_equivalence(errors: dict[str, float]) -> None:
  print("Like-for-like check (relative L2 error, PyTorch vs JAX, same weights): "
        + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))
  sys.stdout.flush()
