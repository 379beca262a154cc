"""Evaluates a trained model: ``biskip-evaluate --ckpt=RUN --data=DATA`` (gopro, kohler,
synthetic, frames[:PATH], mix, folder:PATH or levin:PATH).

The same as ``python evaluate.py ...`` from the repository root. Prints a table (per image and
mean PSNR/SSIM, the blurred input's as a baseline, seconds per image) and, with ``--out``, writes
``metrics.json``, ``per_image.csv``, the restored images, saliency heat maps and side-by-side
figures.
"""

import os

from absl import app, flags

from biskip_jax import cli
from biskip_jax.errors import stop_on_signals
from biskip_jax.evaluation import eval_lib

_CKPT = cli.define_ckpt_flag(required=True, also="'unsharp': Pillow's unsharp mask (a classical "
                             "baseline)")
_DATA = flags.DEFINE_string(
    "data", None, "gopro | kohler | synthetic | frames[:PATH] (held-out windows of video "
    "frames) | mix (the held-out pairs of every source of data.mix) | folder:PATH | levin:PATH "
    "(folder pairs scored also up to a sub-pixel shift, Levin et al.'s protocol).")
_DATA_PATH = flags.DEFINE_string("data_path", None,
                                 "Dataset root for gopro/kohler (default: the run's "
                                 "config.data.path).")
_OUT = flags.DEFINE_string("out", None, "Folder for metrics.json, CSV, images and figures.")
_MAX_IMAGES = flags.DEFINE_integer("max_images", 0, "Evaluate only the first N images (0: all).")
_DTYPE = cli.define_dtype_flag()
_SALIENCY = flags.DEFINE_bool("saliency", True, "Compute the saliency indicator (§6.2).")
_ENSEMBLE = cli.define_ensemble_flag()
_TILE, _OVERLAP = cli.define_tile_flags()
_SHARP_INPUT = flags.DEFINE_bool(
    "sharp_as_input", False, "Give the model each pair's sharp image as its input (the "
    "identity check: a sharp photo should come back unchanged); prints the lowest PSNR.")
cli.define_config_flag(
    "Optional config (a file or a shipped config's name) whose data section (with "
    "--config.data.* overrides) replaces the run's, e.g. quickstart for its held-out pairs.")
flags.mark_flags_as_required(["data"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  cli.log_progress_to_stderr()  # Our warnings as lines; orbax's restore chatter off.
  stop_on_signals()  # SIGTERM leaves no half-written file.
  data_config = cli.config_flag().data if flags.FLAGS.config is not None else None
  result = eval_lib.run(_CKPT.value, _DATA.value, _OUT.value, data_path=_DATA_PATH.value,
                        max_images=_MAX_IMAGES.value, dtype=_DTYPE.value,
                        saliency=_SALIENCY.value, data_config=data_config,
                        ensemble=_ENSEMBLE.value, sharp_input=_SHARP_INPUT.value,
                        tile_size=_TILE.value, tile_overlap=_OVERLAP.value)
  out = _OUT.value
  print(eval_lib.format_table(result, csv_path=os.path.join(out, "per_image.csv") if out else None))


def run() -> None:
  """Parses the flags and evaluates (the ``biskip-evaluate`` console script)."""
  cli.run(main)
