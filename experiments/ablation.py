r"""Table 1 ablation: every training scheme with the same base config, budget, seeds and data.

  python -m experiments.ablation --budget=60 --epochs=4 --data=synthetic --workdir=runs/ablation
  python -m experiments.ablation --budget=630900 --data=gopro --workdir=runs/table1 \
      --config=configs/biskip.py --config.train.batch_size=1 --data_path=/data/GOPRO_Large
  python -m experiments.ablation --config=configs/ablation.py --data=mix ...  # see there

The second command is the paper's set-up (§5): ``configs/biskip.py``, batch 1, and the config's
``train.num_epochs`` = 300 epochs (T of eq. 10) of one pass over GoPro's 2,103 training pairs
each (630,900 = 300 x 2,103 generator steps). The third is the reduced protocol of
``configs/ablation.py`` (real and synthetic blur, seeds, GoPro pairs for evaluation).

Trains each scheme of ``--schemes`` (default: the twelve of Table 1, ``schemes.TABLE1``) with
each of ``--seeds`` seeds (``train.seed`` + 0, 1, ...) in ``WORKDIR/<scheme>/seed<S>`` with
:func:`biskip_jax.train.train_lib.train_and_evaluate` for ``--budget`` generator steps, split into
``--epochs`` epochs (default: ``config.train.num_epochs``). The runs of one seed share their
initialisation seed and their training data and its order, so schemes compare in pairs. Each
run's last checkpoint is evaluated with :mod:`biskip_jax.evaluation.eval_lib` on the held-out split
of ``--data`` (``mix`` and ``frames`` keep the base config's data sections) and on every
``--eval_data`` dataset; ``--eval_every`` also validates during training, for the curves.
:mod:`experiments.ablation_report` then writes ``WORKDIR/ablation.md`` (mean ± standard
deviation over seeds per scheme, the paired comparisons of the paper's claims, next to the
paper's GoPro numbers), the CSV files and the validation curves. The scheme switches (loss
letters, generator variant) and the seed are applied to the base ``--config``; every other
field, including ``--config.*`` overrides, is shared.

Resumable: a run whose ``ablation_result.json`` exists is not trained again (it is only
evaluated on ``--eval_data`` datasets it lacks), and one that was interrupted resumes from its
last checkpoint. ``--budget``, ``--data`` and the epochs must match what the workdir already
holds.

Perceptual (P) schemes need VGG19's ImageNet weights (``--config.loss.vgg_weights`` or the
cache; see ``biskip_jax.nn.vgg``). Without them, ``--vgg_weights=random`` trains those schemes
with randomly initialised VGG19 features, labelled as such in every table row, and
``--vgg_weights=skip`` leaves them out with a note.
"""

import json
import math
import os
import re
import shlex
import sys
import time
from typing import Any, Sequence

import ml_collections
import numpy as np
from absl import app, flags

from biskip_jax import cli
from biskip_jax.errors import UserError
from biskip_jax.objective import schemes
from biskip_jax.output_files import atomic_write
from experiments import ablation_report
from experiments.ablation_report import RESULT_FILE, SETTINGS_FILE, read_json, scheme_dirname

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
VGG_MODES = ("imagenet", "random", "skip")
RANDOM_VGG_NOTE = "P with random VGG19 features, not ImageNet"
SKIPPED_VGG_NOTE = "skipped: needs VGG19 ImageNet weights (--vgg_weights)"
# What a run keeps of each evaluation (eval_lib's metrics.json, in the run's eval folder, has
# the rest: per-image rows, seconds per image).
EVAL_KEYS = ("psnr", "ssim", "blurred_psnr", "blurred_ssim", "num_images")


def define_flags() -> None:
  """Defines the script's flags (only when run as a script, so that tests can import it)."""
  from ml_collections import config_flags
  flags.DEFINE_string("workdir", None, "Folder of the per-scheme runs and the tables.")
  flags.DEFINE_integer("budget", None, "Generator steps per scheme.", lower_bound=1)
  flags.DEFINE_string("data", "synthetic", "synthetic | gopro | frames[:PATH] | mix | "
                      "folder:PATH (train and held-out splits of config.data).")
  flags.DEFINE_string("data_path", None, "Dataset root for gopro (default: config.data.path).")
  flags.DEFINE_list("schemes", list(schemes.TABLE1), "Schemes to train (LOSSES-VARIANT).")
  # No lower_bound: run() rejects a bad value with one line (absl adds a usage hint).
  flags.DEFINE_integer("seeds", 1, "Runs per scheme, with seeds config.train.seed + 0, 1, ...")
  flags.DEFINE_integer("epochs", 0, "Epochs the budget is split into (T of eq. 10; the SPL "
                       "λ changes once per epoch); 0: config.train.num_epochs.")
  flags.DEFINE_list("eval_data", [], "More datasets each run is evaluated on after training "
                    "(folder:PATH, gopro, kohler, levin:PATH; see evaluate.py --data).")
  flags.DEFINE_integer("eval_every", 0, "Validation (config.data's held-out split, "
                       "config.train.eval_num_images) every N steps, for the curves; 0: none.")
  flags.DEFINE_string("vgg_weights", "imagenet", "P schemes: imagenet (config.loss."
                      "vgg_weights or the cache), random (labelled in the table), skip, or a "
                      "path to torchvision's vgg19 .pth/.npz.")
  flags.DEFINE_integer("max_images", 0, "Evaluate the first N held-out images (0: all).",
                       lower_bound=0)
  config_flags.DEFINE_config_file("config", os.path.join(ROOT, "configs", "quickstart.py"),
                                  "Base config file[:SCHEME] (the scheme is replaced).",
                                  lock_config=True)
  flags.mark_flags_as_required(["workdir", "budget"])


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
                  data: str, data_path: str | None, vgg_weights: str | None,
                  seed: int | None = None, eval_every: int = 0) -> ml_collections.ConfigDict:
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
    seed: ``train.seed`` (parameter init, data order, crops; None: keep the base's).
    eval_every: validation every N steps (0: none; the run is evaluated at the end).

  Raises:
    UserError: for a malformed scheme name or data spec, or a budget and epochs that do not
      give T epochs.
  """
  from biskip_jax.evaluation import eval_lib
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
  if seed is not None:
    t.seed = seed
  t.num_epochs = resolve_epochs(base, budget=budget, epochs=epochs)
  t.num_steps = budget
  t.steps_per_epoch = math.ceil(budget / t.num_epochs)
  t.checkpoint_every = budget  # Only the final checkpoint (and on interruption).
  t.eval_every = eval_every  # Curves only: every run is evaluated at the end anyway.
  t.image_every = 0
  t.log_every = max(1, min(t.log_every, budget))
  return config


def write_random_vgg(path: str, layer: str, seed: int) -> str:
  """Writes randomly initialised VGG19 convs up to ``layer`` in torchvision's layout.

  Kaiming-normal kernels (fan-out, ReLU gain; torchvision's VGG initialisation) and zero
  biases, as ``features.N.weight`` [O, I, 3, 3] / ``features.N.bias`` [O] in an ``.npz``.
  """
  from biskip_jax.nn import vgg
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
  with atomic_write(path) as f:
    np.savez(f, **state)
  return path


def resolve_vgg(mode: str, base: ml_collections.ConfigDict, workdir: str,
                names: Sequence[str]) -> tuple[str | None, str]:
  """Returns ``(loss.vgg_weights or None to keep the base's, note for P rows)``.

  Raises:
    UserError: ``imagenet`` weights that cannot be loaded (before any training), or an
      unknown mode / missing file.
  """
  from biskip_jax.nn import vgg_loading
  needs_vgg = any(schemes.parse_scheme(n).perceptual for n in names)
  layer = base.loss.vgg_layer
  if mode == "skip" or not needs_vgg:
    return None, ""
  if mode == "random":
    path = os.path.join(workdir, f"vgg19_random_seed{base.train.seed}_{layer}.npz")
    return write_random_vgg(path, layer, base.train.seed), RANDOM_VGG_NOTE
  if mode == "imagenet":
    try:
      vgg_loading.load_vgg19_params(base.loss.vgg_weights, layer=layer)
    except UserError as e:
      raise UserError(f"{e} Or pass --vgg_weights=random (labelled in the table) or "
                      "--vgg_weights=skip.") from e
    return None, ""
  if not os.path.isfile(mode):
    raise UserError(f"--vgg_weights={mode!r}: expected {', '.join(VGG_MODES)} or an existing "
                    "file")
  vgg_loading.load_vgg19_params(mode, layer=layer)  # Fails here on a bad file, not mid-run.
  return os.path.abspath(mode), ""


def _write_json(path: str, obj: dict[str, Any]) -> None:
  with atomic_write(path, "w") as f:
    json.dump(obj, f, indent=2)


def _check_same_run(run_dir: str, budget: int, data: str, steps_per_epoch: int) -> None:
  """Refuses a workdir whose scheme run used another budget, data or epoch length."""
  result = os.path.join(run_dir, RESULT_FILE)
  if os.path.exists(result):
    old = read_json(result)
    old_budget, old_data = old.get("budget"), old.get("data")
    old_spe = old.get("steps_per_epoch")  # Absent from results written before it was kept.
  elif os.path.exists(os.path.join(run_dir, "config.json")):
    old = read_json(os.path.join(run_dir, "config.json"))
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


def eval_dirname(spec: str, data: str) -> str:
  """The folder of a run's evaluation on ``spec``: ``eval`` for ``--data``'s held-out split."""
  if spec == data:
    return "eval"
  return "eval_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", ablation_report.dataset_label(spec))


def run_one(base: ml_collections.ConfigDict, name: str, seed: int, workdir: str, *,
            budget: int, epochs: int, data: str, data_path: str | None,
            eval_data: Sequence[str], eval_every: int, vgg_weights: str | None, note: str,
            max_images: int) -> dict[str, Any]:
  """Trains and evaluates one scheme with one seed (or reads its finished result).

  The result (``ablation_result.json``, also returned) has ``scheme``, ``seed``,
  ``train_seconds``, ``note``, ``budget``, ``data``, ``epochs`` (T), ``steps_per_epoch``
  and ``evals``: ``{dataset: {EVAL_KEYS}}`` (means over the dataset's images, by
  :func:`biskip_jax.evaluation.eval_lib.run`) for ``data`` and every ``eval_data``; the returned
  dict adds ``resumed`` (True when the training was read from an earlier run). Evaluations a
  finished run lacks are made and saved one by one.
  """
  from biskip_jax.evaluation import eval_lib
  from biskip_jax.train import train_lib
  path = ablation_report.run_dir(workdir, name, seed)
  config = scheme_config(base, name, budget=budget, epochs=epochs, data=data,
                         data_path=data_path, vgg_weights=vgg_weights, seed=seed,
                         eval_every=eval_every)
  _check_same_run(path, budget, data, config.train.steps_per_epoch)
  result_path = os.path.join(path, RESULT_FILE)
  resumed = os.path.exists(result_path)
  if resumed:
    result = read_json(result_path)
  else:
    t0 = time.perf_counter()
    train_lib.train_and_evaluate(config, path)
    result = {"scheme": name, "seed": seed, "train_seconds": time.perf_counter() - t0,
              "note": note if config.loss.perceptual else "", "budget": budget, "data": data,
              "epochs": config.train.num_epochs,
              "steps_per_epoch": config.train.steps_per_epoch, "evals": {}}
    _write_json(result_path, result)
  for spec in [data, *eval_data]:
    if spec not in result["evals"]:
      scores = eval_lib.run(path, spec, os.path.join(path, eval_dirname(spec, data)),
                            data_path=data_path if spec == data else None,
                            max_images=max_images, saliency=False)
      result["evals"][spec] = {k: scores.get(k) for k in EVAL_KEYS}
      _write_json(result_path, result)
  return {**result, "resumed": resumed}


def _check_layout(workdir: str, names: Sequence[str]) -> None:
  """Refuses a workdir of the one-seed layout (a run in ``WORKDIR/<scheme>`` itself)."""
  for name in names:
    folder = os.path.join(workdir, scheme_dirname(name))
    if any(os.path.exists(os.path.join(folder, f)) for f in (RESULT_FILE, "config.json")):
      raise UserError(f"{folder} holds a run made before runs were kept per seed "
                      f"({folder}/seed<S>): use a new --workdir")


def _check_datasets(base: ml_collections.ConfigDict, data: str, data_path: str | None,
                    eval_data: Sequence[str]) -> None:
  """Lists every evaluation dataset once (one line naming the flag if one is unusable)."""
  from biskip_jax.evaluation import eval_lib
  if data.partition(":")[0] in ("kohler", "levin"):
    raise UserError(f"--data={data} has no training split: use synthetic, gopro, frames[:PATH], "
                    "mix or folder:PATH")
  eval_lib.examples_of(eval_lib.dataset_config(base, data, data_path), 1, f"--data={data}")
  labels = [ablation_report.dataset_label(s) for s in [data, *eval_data]]
  twins = sorted({label for label in labels if labels.count(label) > 1})
  if twins:
    raise UserError(f"--eval_data: two datasets are named {twins[0]} (folders are named by "
                    "their last component): rename one")
  for spec in eval_data:
    try:
      eval_lib.examples_of(eval_lib.dataset_config(base, spec, None), 1, f"--eval_data={spec}")
    except UserError as e:
      raise UserError(f"--eval_data={spec}: {e}") from e


def _describe_setup(c: ml_collections.ConfigDict, *, budget: int, data: str, seeds: Sequence[int],
                    eval_data: Sequence[str], eval_every: int) -> str:
  """One paragraph: what every run shares."""
  ch = tuple(c.model.channels)
  if data == "mix":
    data = "mix (" + ", ".join(f"{k} {v:g}" for k, v in c.data.mix.items() if v > 0) + ")"
  evals = ", ".join(f"`{ablation_report.dataset_label(s)}`" for s in eval_data)
  return (f"Setup: {budget} generator steps per run, batch {c.train.batch_size}, "
          f"{c.data.crop_size}px crops, generator channels {ch}, skip channels "
          f"{tuple(c.model.skip_channels)}, ResBlocks per level: {c.model.num_res_blocks}, "
          f"{c.model.norm} norm, generator lr {c.optim.g_lr:g}, VGG layer {c.loss.vgg_layer}, "
          f"training data {data}, seeds {', '.join(map(str, seeds))}, {c.train.num_epochs} "
          f"epochs (T of eq. 10) of {c.train.steps_per_epoch} steps"
          + (f", validation every {eval_every} steps" if eval_every else "")
          + (f"; also evaluated on {evals}" if evals else "") + ".")


def run(base: ml_collections.ConfigDict, workdir: str, *, budget: int, data: str = "synthetic",
        data_path: str | None = None, names: Sequence[str] = tuple(schemes.TABLE1),
        seeds: int = 1, epochs: int = 0, eval_data: Sequence[str] = (), eval_every: int = 0,
        vgg_mode: str = "imagenet", max_images: int = 0,
        command: str = "") -> list[dict[str, Any]]:
  """Runs (or resumes) the ablation; writes the report and returns the runs' results.

  ``seeds`` runs per scheme, with ``base.train.seed + k``, k < ``seeds``; ``epochs`` is T of
  eq. 10 (0: ``base.train.num_epochs``), see :func:`resolve_epochs`. Runs go seed by seed
  (every scheme of the first seed, then the next), so paired comparisons exist early; the
  report is rewritten after every run.

  Raises:
    UserError: bad scheme names, seeds, data, VGG weights, budget or epochs, or a workdir of
      another budget/data/layout.
  """
  names = list(dict.fromkeys(n.strip() for n in names if n.strip()))
  if not names:
    raise UserError("--schemes is empty")
  for n in names:
    try:
      schemes.parse_scheme(n)
    except ValueError as e:
      raise UserError(f"--schemes: {e}") from e
  if seeds < 1:
    raise UserError(f"--seeds={seeds}: expected at least 1 run per scheme")
  if eval_every < 0:
    raise UserError(f"--eval_every={eval_every}: expected a number of steps >= 0 (0: none)")
  eval_data = [e for e in dict.fromkeys(s.strip() for s in eval_data if s.strip()) if e != data]
  _check_datasets(base, data, data_path, eval_data)
  resolve_epochs(base, budget=budget, epochs=epochs)  # And --budget with --epochs.
  _check_layout(workdir, names)
  os.makedirs(workdir, exist_ok=True)
  vgg_weights, vgg_note = resolve_vgg(vgg_mode, base, workdir, names)
  seed_values = [int(base.train.seed) + k for k in range(seeds)]
  skipped = [n for n in names if vgg_mode == "skip" and schemes.parse_scheme(n).perceptual]
  c = scheme_config(base, names[0], budget=budget, epochs=epochs, data=data,
                    data_path=data_path, vgg_weights=None)
  _write_json(os.path.join(workdir, SETTINGS_FILE), {
      "command": command, "budget": budget, "data": data, "schemes": names,
      "seeds": seed_values, "eval_data": eval_data, "eval_every": eval_every,
      "notes": {n: SKIPPED_VGG_NOTE for n in skipped},
      "setup": _describe_setup(c, budget=budget, data=data, seeds=seed_values,
                               eval_data=eval_data, eval_every=eval_every)})
  todo = [(seed, n) for seed in seed_values for n in names if n not in skipped]
  results = []
  for i, (seed, name) in enumerate(todo):
    tag = f"[{i + 1}/{len(todo)}] {name} seed {seed}"
    print(tag, flush=True)
    r = run_one(base, name, seed, workdir, budget=budget, epochs=epochs, data=data,
                data_path=data_path, eval_data=eval_data, eval_every=eval_every,
                vgg_weights=vgg_weights, note=vgg_note, max_images=max_images)
    e = r["evals"][data]
    print(f"{tag}: PSNR {e['psnr']:.2f} dB, SSIM {e['ssim']:.4f}"
          + (" (finished earlier, not retrained)" if r["resumed"]
             else f" ({r['train_seconds']:.0f} s)"), flush=True)
    results.append(r)
    ablation_report.write(workdir)
  ablation_report.write(workdir)  # Also when every scheme was skipped.
  return results


def main(argv: list[str]) -> None:
  from biskip_jax.train import train_lib
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  cli.log_progress_to_stderr()
  command = "python -m experiments.ablation " + " ".join(shlex.quote(a) for a in sys.argv[1:])
  try:
    run(cli.config_flag(), FLAGS.workdir, budget=FLAGS.budget, data=FLAGS.data,
        data_path=FLAGS.data_path, names=FLAGS.schemes, seeds=FLAGS.seeds, epochs=FLAGS.epochs,
        eval_data=FLAGS.eval_data, eval_every=FLAGS.eval_every, vgg_mode=FLAGS.vgg_weights,
        max_images=FLAGS.max_images, command=command)
  except train_lib.Interrupted as e:  # Checkpointed and logged: the same command resumes.
    sys.exit(128 + e.signum)
  with open(os.path.join(FLAGS.workdir, "ablation.md")) as f:
    print(f.read())


if __name__ == "__main__":
  define_flags()
  cli.run(main)
