r"""Table 1 ablation: every training scheme with the same base config, budget, seed and data.

  python -m experiments.ablation --budget=60 --epochs=4 --data=synthetic --workdir=runs/ablation
  python -m experiments.ablation --budget=630900 --data=gopro --workdir=runs/table1 \
      --config=configs/biskip.py --config.train.batch_size=1 --data_path=/data/GOPRO_Large

The second command is the paper's set-up (§5): ``configs/biskip.py``, batch 1, and the config's
``train.num_epochs`` = 300 epochs (T of eq. 10) of one pass over GoPro's 2,103 training pairs
each (630,900 = 300 x 2,103 generator steps).

Trains each scheme of ``--schemes`` (default: the twelve of Table 1, ``schemes.TABLE1``) in
``WORKDIR/<scheme>`` with :func:`biskip_jax.train_lib.train_and_evaluate` for ``--budget``
generator steps, split into ``--epochs`` epochs (default: ``config.train.num_epochs``),
evaluates its last checkpoint with :mod:`biskip_jax.eval_lib` on the held-out split of
``--data``, and writes ``WORKDIR/ablation.md`` and ``WORKDIR/ablation.csv``: PSNR and SSIM next
to the paper's GoPro numbers. The scheme switches (loss letters, generator variant)
are applied to the base ``--config``; every other field, including ``--config.*`` overrides,
is shared.

Resumable: a scheme whose ``ablation_result.json`` exists is not trained again, and one that was
interrupted resumes from its last checkpoint. ``--budget``, ``--data`` and the epochs must match
what the workdir already holds.

Perceptual (P) schemes need VGG19's ImageNet weights (``--config.loss.vgg_weights`` or the
cache; see ``biskip_jax.vgg``). Without them, ``--vgg_weights=random`` trains those schemes
with randomly initialised VGG19 features, labelled as such in every table row, and
``--vgg_weights=skip`` leaves them out with a note.
"""

import csv
import json
import math
import os
import shlex
import sys
import time
from typing import Any, Sequence

import ml_collections
import numpy as np
from absl import app, flags

from biskip_jax import cli, schemes
from biskip_jax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
VGG_MODES = ("imagenet", "random", "skip")
RESULT_FILE = "ablation_result.json"
COLUMNS = ("scheme", "psnr", "ssim", "paper_psnr", "paper_ssim", "train_seconds", "note")
RANDOM_VGG_NOTE = "P with random VGG19 features, not ImageNet"
SKIPPED_VGG_NOTE = "skipped: needs VGG19 ImageNet weights (--vgg_weights)"


def define_flags() -> None:
  """Defines the script's flags (only when run as a script, so that tests can import it)."""
  from ml_collections import config_flags
  flags.DEFINE_string("workdir", None, "Folder of the per-scheme runs and the tables.")
  flags.DEFINE_integer("budget", None, "Generator steps per scheme.", lower_bound=1)
  flags.DEFINE_string("data", "synthetic", "synthetic | gopro | folder:PATH (train and "
                      "held-out splits of config.data).")
  flags.DEFINE_string("data_path", None, "Dataset root for gopro (default: config.data.path).")
  flags.DEFINE_list("schemes", list(schemes.TABLE1), "Schemes to train (LOSSES-VARIANT).")
  # No lower_bound: run() rejects a bad value with one line (absl adds a usage hint).
  flags.DEFINE_integer("epochs", 0, "Epochs the budget is split into (T of eq. 10; the SPL "
                       "λ changes once per epoch); 0: config.train.num_epochs.")
  flags.DEFINE_string("vgg_weights", "imagenet", "P schemes: imagenet (config.loss."
                      "vgg_weights or the cache), random (labelled in the table), skip, or a "
                      "path to torchvision's vgg19 .pth/.npz.")
  flags.DEFINE_integer("max_images", 0, "Evaluate the first N held-out images (0: all).",
                       lower_bound=0)
  config_flags.DEFINE_config_file("config", os.path.join(ROOT, "configs", "quickstart.py"),
                                  "Base config file[:SCHEME] (the scheme is replaced).",
                                  lock_config=True)
  flags.mark_flags_as_required(["workdir", "budget"])


def scheme_dirname(name: str) -> str:
  """A folder name for a scheme (``A2-BS-w/o-R`` -> ``A2-BS-w_o-R``)."""
  return name.replace("/", "_")


def resolve_epochs(base: ml_collections.ConfigDict, *, budget: int, epochs: int) -> int:
  """T of eq. 10 for ``--budget`` and ``--epochs``: ``epochs``, or the config's if it is 0.

  The budget is split into T epochs of ``ceil(budget / T)`` steps (``train.steps_per_epoch``);
  ``train_lib.resolve_schedule`` then counts ``ceil(budget / steps_per_epoch)`` epochs, which
  must be T again.

  Args:
    base: the base configuration (``train.num_epochs`` is read when ``epochs`` is 0).
    budget: generator steps per scheme.
    epochs: ``--epochs`` (0: ``base.train.num_epochs``).

  Returns:
    T, the number of epochs every scheme trains for.

  Raises:
    UserError: a negative ``epochs``, a non-positive budget or ``train.num_epochs``, or a
      budget that does not split into T epochs (fewer steps than epochs, for instance).
  """
  if budget < 1:
    raise UserError(f"--budget={budget}: expected a positive number of generator steps")
  if epochs < 0:
    raise UserError(f"--epochs={epochs}: expected a positive number of epochs, or 0 for the "
                    "config's train.num_epochs")
  source = f"--epochs={epochs}"
  if epochs == 0:
    epochs = int(base.train.num_epochs)
    source = f"config.train.num_epochs={epochs} (--epochs unset)"
    if epochs < 1:
      raise UserError(f"{source}: expected a positive number of epochs; pass --epochs")
  steps_per_epoch = math.ceil(budget / epochs)
  counted = math.ceil(budget / steps_per_epoch)
  if counted != epochs:
    raise UserError(f"{source} with --budget={budget}: {steps_per_epoch} step(s) per epoch give "
                    f"{counted} epochs, not {epochs}; use a budget of at least {epochs} steps "
                    "that splits into the epochs (e.g. a multiple of them) or another --epochs")
  return epochs


def scheme_config(base: ml_collections.ConfigDict, name: str, *, budget: int, epochs: int,
                  data: str, data_path: str | None,
                  vgg_weights: str | None) -> ml_collections.ConfigDict:
  """``base`` with scheme ``name``'s switches, ``budget`` steps in T epochs and ``--data``.

  Args:
    base: the base configuration (not modified).
    name: a scheme name (``schemes.parse_scheme``).
    budget: generator steps (``train.num_steps``).
    epochs: T of eq. 10, the epochs the budget is split into (``train.steps_per_epoch`` =
      ``ceil(budget / T)``); 0: ``base.train.num_epochs`` (see :func:`resolve_epochs`).
    data: ``--data`` value (see ``eval_lib.dataset_config``).
    data_path: dataset root override.
    vgg_weights: file for ``loss.vgg_weights`` (None: keep the base's).

  Raises:
    UserError: for a malformed scheme name or data spec, or a budget and epochs that do not
      give T epochs.
  """
  from biskip_jax import eval_lib
  try:
    s = schemes.parse_scheme(name)
  except ValueError as e:
    raise UserError(f"--schemes: {e}") from e
  config = eval_lib.dataset_config(base, data, data_path)  # A fresh, unlocked copy.
  config.scheme = s.name
  config.model.variant = s.variant
  config.loss.adversarial = s.adversarial
  config.loss.pixel = s.pixel
  config.loss.perceptual = s.perceptual
  config.loss.self_paced = s.self_paced
  if vgg_weights is not None:
    config.loss.vgg_weights = vgg_weights
  t = config.train
  t.num_epochs = resolve_epochs(base, budget=budget, epochs=epochs)
  t.num_steps = budget
  t.steps_per_epoch = math.ceil(budget / t.num_epochs)
  t.checkpoint_every = budget  # Only the final checkpoint (and on interruption).
  t.eval_every = 0  # Evaluated once at the end, on the full held-out split.
  t.image_every = 0
  t.log_every = max(1, min(t.log_every, budget))
  return config


def write_random_vgg(path: str, layer: str, seed: int) -> str:
  """Writes randomly initialised VGG19 convs up to ``layer`` in torchvision's layout.

  Kaiming-normal kernels (fan-out, ReLU gain; torchvision's VGG initialisation) and zero
  biases, as ``features.N.weight`` [O, I, 3, 3] / ``features.N.bias`` [O] in an ``.npz``.
  """
  from biskip_jax import vgg
  if os.path.isfile(path):
    return path
  rng = np.random.default_rng(seed)
  state, in_ch = {}, 3
  for spec in vgg.LAYERS[:vgg.LAYER_NAMES.index(layer) + 1]:
    std = math.sqrt(2.0 / (spec.channels * 9))
    state[f"features.{spec.index}.weight"] = rng.normal(
        0.0, std, (spec.channels, in_ch, 3, 3)).astype(np.float32)
    state[f"features.{spec.index}.bias"] = np.zeros(spec.channels, np.float32)
    in_ch = spec.channels
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp.npz"
  np.savez(tmp, **state)
  os.replace(tmp, path)
  return path


def resolve_vgg(mode: str, base: ml_collections.ConfigDict, workdir: str,
                names: Sequence[str]) -> tuple[str | None, str]:
  """Returns ``(loss.vgg_weights or None to keep the base's, note for P rows)``.

  Raises:
    UserError: ``imagenet`` weights that cannot be loaded (before any training), or an
      unknown mode / missing file.
  """
  from biskip_jax import vgg
  needs_vgg = any(schemes.parse_scheme(n).perceptual for n in names)
  layer = base.loss.vgg_layer
  if mode == "skip" or not needs_vgg:
    return None, ""
  if mode == "random":
    path = os.path.join(workdir, f"vgg19_random_seed{base.train.seed}_{layer}.npz")
    return write_random_vgg(path, layer, base.train.seed), RANDOM_VGG_NOTE
  if mode == "imagenet":
    try:
      vgg.load_vgg19_params(base.loss.vgg_weights, layer=layer)
    except UserError as e:
      raise UserError(f"{e} Or pass --vgg_weights=random (labelled in the table) or "
                      "--vgg_weights=skip.") from e
    return None, ""
  if not os.path.isfile(mode):
    raise UserError(f"--vgg_weights={mode!r}: expected {', '.join(VGG_MODES)} or an existing "
                    "file")
  vgg.load_vgg19_params(mode, layer=layer)  # Fails here on a bad file, not mid-run.
  return os.path.abspath(mode), ""


def _read_json(path: str) -> dict[str, Any]:
  with open(path) as f:
    return json.load(f)


def _write_json(path: str, obj: dict[str, Any]) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)


def _check_same_run(run_dir: str, budget: int, data: str, steps_per_epoch: int) -> None:
  """Refuses a workdir whose scheme run used another budget, data or epoch length."""
  result = os.path.join(run_dir, RESULT_FILE)
  if os.path.exists(result):
    old = _read_json(result)
    old_budget, old_data = old.get("budget"), old.get("data")
    old_spe = old.get("steps_per_epoch")  # Absent from results written before it was kept.
  elif os.path.exists(os.path.join(run_dir, "config.json")):
    old = _read_json(os.path.join(run_dir, "config.json"))
    old_budget, old_data = old["train"]["num_steps"], None
    old_spe = old["train"]["steps_per_epoch"]
  else:
    return
  if old_budget != budget or (old_data is not None and old_data != data):
    raise UserError(f"{run_dir} holds a run with --budget={old_budget} --data={old_data}, "
                    f"not --budget={budget} --data={data}: use a new --workdir")
  if old_spe is not None and old_spe != steps_per_epoch:
    raise UserError(f"{run_dir} holds a run of {old_spe} steps per epoch, not {steps_per_epoch}: "
                    f"pass the --epochs it used ({math.ceil(budget / old_spe)}) or use a new "
                    "--workdir")


def run_scheme(base: ml_collections.ConfigDict, name: str, workdir: str, *, budget: int,
               epochs: int, data: str, data_path: str | None, vgg_weights: str | None,
               note: str, max_images: int) -> dict[str, Any]:
  """Trains and evaluates one scheme (or reads its finished result); returns its row.

  The row has the :data:`COLUMNS` plus ``blurred_psnr``, ``blurred_ssim``, ``num_images``,
  ``budget``, ``data``, ``epochs`` (T), ``steps_per_epoch`` and ``resumed`` (True when read
  from an earlier run).
  """
  from biskip_jax import eval_lib, train_lib
  run_dir = os.path.join(workdir, scheme_dirname(name))
  config = scheme_config(base, name, budget=budget, epochs=epochs, data=data,
                         data_path=data_path, vgg_weights=vgg_weights)
  _check_same_run(run_dir, budget, data, config.train.steps_per_epoch)
  result_path = os.path.join(run_dir, RESULT_FILE)
  if os.path.exists(result_path):
    return {**_read_json(result_path), "resumed": True}
  t0 = time.perf_counter()
  train_lib.train_and_evaluate(config, run_dir)
  seconds = time.perf_counter() - t0
  result = eval_lib.run(run_dir, data, os.path.join(run_dir, "eval"), data_path=data_path,
                        max_images=max_images, saliency=False)
  paper = schemes.TABLE1.get(name, (None, None))
  row = {"scheme": name, "psnr": result["psnr"], "ssim": result["ssim"],
         "paper_psnr": paper[0], "paper_ssim": paper[1], "train_seconds": seconds,
         "note": note if config.loss.perceptual else "",
         "blurred_psnr": result.get("blurred_psnr"), "blurred_ssim": result.get("blurred_ssim"),
         "num_images": result["num_images"], "budget": budget, "data": data,
         "epochs": config.train.num_epochs, "steps_per_epoch": config.train.steps_per_epoch}
  _write_json(result_path, row)
  return {**row, "resumed": False}


def _fmt(value: Any, digits: int) -> str:
  return "" if value is None else (f"{value:.{digits}f}" if isinstance(value, float)
                                   else str(value))


def write_tables(workdir: str, rows: list[dict[str, Any]], header: Sequence[str]) -> None:
  """Writes ``ablation.csv`` (:data:`COLUMNS`) and ``ablation.md`` (``header`` lines, then
  the table, with the blurred input as a reference row)."""
  digits = {"psnr": 2, "ssim": 4, "paper_psnr": 2, "paper_ssim": 4, "train_seconds": 0}
  with open(os.path.join(workdir, "ablation.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(COLUMNS)
    for r in rows:
      writer.writerow(["" if r.get(c) is None else r[c] for c in COLUMNS])
  titles = ("scheme", "PSNR", "SSIM", "paper PSNR (GoPro)", "paper SSIM (GoPro)",
            "train s", "note")
  lines = list(header) + ["", "| " + " | ".join(titles) + " |",
                          "|" + "|".join([":---"] + ["---:"] * 5 + [":---"]) + "|"]
  for r in rows:
    lines.append("| " + " | ".join(_fmt(r.get(c), digits.get(c, 0)) for c in COLUMNS) + " |")
  blurred = [r for r in rows if r.get("blurred_psnr") is not None]
  if blurred:
    b = blurred[0]
    lines.append(f"| (blurred input) | {b['blurred_psnr']:.2f} | {b['blurred_ssim']:.4f} "
                 "| | | | no restoration |")
  with open(os.path.join(workdir, "ablation.md"), "w") as f:
    f.write("\n".join(lines) + "\n")


def run(base: ml_collections.ConfigDict, workdir: str, *, budget: int, data: str = "synthetic",
        data_path: str | None = None, names: Sequence[str] = tuple(schemes.TABLE1),
        epochs: int = 0, vgg_mode: str = "imagenet", max_images: int = 0,
        command: str = "") -> list[dict[str, Any]]:
  """Runs (or resumes) the ablation; writes and returns the table rows.

  ``epochs`` is T of eq. 10 (0: ``base.train.num_epochs``); see :func:`resolve_epochs`.

  Raises:
    UserError: bad scheme names, data, VGG weights, budget or epochs, or a workdir of another
      budget/data.
  """
  names = list(dict.fromkeys(n.strip() for n in names if n.strip()))
  if not names:
    raise UserError("--schemes is empty")
  for n in names:
    try:
      schemes.parse_scheme(n)
    except ValueError as e:
      raise UserError(f"--schemes: {e}") from e
  if data.partition(":")[0] == "kohler":
    raise UserError("--data=kohler has no training split: use synthetic, gopro or folder:PATH")
  from biskip_jax import eval_lib
  eval_lib.dataset_config(base, data, data_path)  # Validates --data before any work.
  resolve_epochs(base, budget=budget, epochs=epochs)  # And --budget with --epochs.
  os.makedirs(workdir, exist_ok=True)
  vgg_weights, vgg_note = resolve_vgg(vgg_mode, base, workdir, names)
  rows = []
  for i, name in enumerate(names):
    if vgg_mode == "skip" and schemes.parse_scheme(name).perceptual:
      paper = schemes.TABLE1.get(name, (None, None))
      rows.append({"scheme": name, "paper_psnr": paper[0], "paper_ssim": paper[1],
                   "note": SKIPPED_VGG_NOTE, "resumed": False})
      continue
    print(f"[{i + 1}/{len(names)}] {name}", flush=True)
    row = run_scheme(base, name, workdir, budget=budget, epochs=epochs, data=data,
                     data_path=data_path, vgg_weights=vgg_weights, note=vgg_note,
                     max_images=max_images)
    print(f"[{i + 1}/{len(names)}] {name}: PSNR {row['psnr']:.2f} dB, SSIM "
          f"{row['ssim']:.4f}" + (" (finished earlier, not retrained)" if row["resumed"]
                                  else f" ({row['train_seconds']:.0f} s)"), flush=True)
    rows.append(row)
  c = scheme_config(base, names[0], budget=budget, epochs=epochs, data=data,
                    data_path=data_path, vgg_weights=None)
  ch = tuple(c.model.channels)
  header = [
      "Ablation of Table 1's training schemes" + (f" (`{command}`)" if command else ""),
      "",
      f"Setup: {budget} generator steps per scheme, batch {c.train.batch_size}, "
      f"{c.data.crop_size}px crops, generator channels {ch}, ResBlocks per level: "
      f"{c.model.num_res_blocks}, VGG layer {c.loss.vgg_layer}, data `{data}`, seed "
      f"{c.train.seed}, {c.train.num_epochs} epochs (T of eq. 10) of "
      f"{c.train.steps_per_epoch} steps. Paper columns: Table 1 "
      "(GoPro, 300 epochs); they are not comparable with a run on other data or budgets.",
  ]
  write_tables(workdir, rows, header)
  return rows


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  cli.log_progress_to_stderr()
  command = "python -m experiments.ablation " + " ".join(shlex.quote(a) for a in sys.argv[1:])
  try:
    run(cli.config_flag(), FLAGS.workdir, budget=FLAGS.budget, data=FLAGS.data,
        data_path=FLAGS.data_path, names=FLAGS.schemes, epochs=FLAGS.epochs,
        vgg_mode=FLAGS.vgg_weights, max_images=FLAGS.max_images, command=command)
  except UserError as e:
    print(f"ablation.py: error: {e}", file=sys.stderr)
    sys.exit(2)
  with open(os.path.join(FLAGS.workdir, "ablation.md")) as f:
    print(f.read())


if __name__ == "__main__":
  define_flags()
  cli.run(main)
