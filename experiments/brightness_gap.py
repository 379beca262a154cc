"""Brightness gap: how much brighter a training input is than its sharp target.

  python -m experiments.brightness_gap --config=configs/pretrain.py \
    --config.data.frames.path=FRAMES --config.data.synthetic.images=PHOTOS [--pairs=DIR ...]

Prints, in grey levels (0-255), the mean of ``input - target`` per example and its
percentiles:

* for each training source of the config (``data.source``, or each source of a mix with a
  weight above 0), over random training crops drawn as training draws them (the sources'
  ``random_crop``, at ``data.crop_size``);
* for each ``--pairs`` folder of ``blur/`` and ``sharp/`` images, over its whole pairs.

Blurring in linear light brightens edges in display values (the display value of an average
is at least the average of the display values, for a concave display curve), so blurred
inputs can be brighter than their targets. A model learns whatever gap its training data has
and undoes it on every input: where the training gap is larger than the real blur's, the
model darkens real photos.
"""

from typing import Any, Sequence

import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from biskip_jax.data import image_io, input_pipeline
from biskip_jax.data.datasets import folder

PERCENTILES = (10, 50, 90)


def gap(blur: np.ndarray, sharp: np.ndarray) -> float:
  """Mean of ``blur - sharp`` in grey levels; both ``uint8[H, W, C]``."""
  return float(np.mean(blur.astype(np.float64)) - np.mean(sharp.astype(np.float64)))


def source_gaps(source: Any, n: int, crop: int, seed: int) -> np.ndarray:
  """Gaps of ``n`` random training crops of ``source`` (records ``0..n-1``)."""
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    pair = source.random_crop(i % len(source), crop, rng)
    if pair is not None:  # Images smaller than the crop are skipped.
      out.append(gap(*pair))
  return np.asarray(out, np.float64)


def pair_gaps(path: str) -> np.ndarray:
  """Gaps of the whole pairs of a folder (``blur/`` and ``sharp/``)."""
  return np.asarray([gap(image_io.load_image(p.blur), image_io.load_image(p.sharp))
                     for p in folder.list_pairs(path)], np.float64)


def training_sources(config: ml_collections.ConfigDict) -> list[tuple[str, Any]]:
  """``(name, source)`` for the config's training source, or each source of its mix."""
  d = config.data
  source = input_pipeline.get_source(config, d.train_split, training=True)
  if d.source != "mix":
    return [(d.source, source)]
  return list(zip(input_pipeline.mix_names(config), source.sources))


def _line(name: str, values: Sequence[float]) -> str:
  values = np.asarray(values, np.float64)
  cells = " ".join(f"{np.percentile(values, p):+6.2f}" for p in PERCENTILES)
  return f"{name:<28} {len(values):5d} {values.mean():+6.2f} {cells}"


def _define_flags() -> None:
  # Defined when run, not on import: other experiments imported beside it (tests) define
  # --seed and --config too.
  flags.DEFINE_integer("crops", 40, "Training crops drawn per source.")
  flags.DEFINE_multi_string("pairs", [], "Folders of blur/ and sharp/ pairs.")
  flags.DEFINE_integer("seed", 0, "Seed of the crop draws.")
  config_flags.DEFINE_config_file("config", "configs/pretrain.py", "Training config.")


def main(argv):
  del argv
  f = flags.FLAGS
  config = f.config
  print(f"{'input - target (grey levels)':<28} count   mean " +
        " ".join(f"{'p' + str(p):>6}" for p in PERCENTILES))
  for name, source in training_sources(config):
    print(_line(f"training: {name}", source_gaps(source, f.crops, config.data.crop_size, f.seed)))
  for path in f.pairs:
    print(_line(f"pairs: {path}", pair_gaps(path)))


if __name__ == "__main__":
  _define_flags()
  app.run(main)
