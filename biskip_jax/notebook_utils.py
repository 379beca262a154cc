"""Small helpers shared by the notebooks in ``notebooks/`` (and their test).

* :func:`tiny_config`: a copy of a config shrunk to seconds of CPU work (a smoke test of the
  whole pipeline, selected in the notebooks by ``BISKIP_NOTEBOOK_TINY=1``; its results mean
  nothing);
* :func:`read_metrics`: ``WORKDIR/metrics.jsonl`` as per-split series, ready to plot;
* :func:`example_photo`: scikit-image's real motion-blurred photo ``clock_motion.png``.
"""

import collections
import json
import os
from typing import Any

import ml_collections
import numpy as np


def tiny_config(config: ml_collections.ConfigDict, steps: int = 4) -> ml_collections.ConfigDict:
  """A copy of ``config`` with a tiny network, 32x32 crops, batches of 2 and ``steps`` steps.

  It keeps the scheme (loss, critic) and the data source; validation during training, image
  summaries and worker processes are turned off so that nothing but the train step compiles.
  """
  config = ml_collections.ConfigDict(config.to_dict())
  config.model.channels = (4, 8, 8, 8, 8)
  config.model.skip_channels = (2, 4, 4, 4)
  config.model.num_res_blocks = 1
  config.critic.features = 8
  config.critic.num_layers = 1
  config.loss.vgg_layer = "conv1_2"
  config.train.batch_size = 2
  config.train.num_steps = steps
  config.train.steps_per_epoch = max(1, steps // 2)
  config.train.log_every = 1
  config.train.checkpoint_every = steps
  config.train.image_every = 0
  config.train.eval_every = 0
  config.data.crop_size = 32
  config.data.num_workers = 0
  config.data.prefetch = 1
  if "synthetic" in config.data:
    config.data.synthetic.num_train = 16
    config.data.synthetic.num_eval = 2
  config.eval.num_figures = 2
  return config


def read_metrics(workdir: str) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
  """Reads ``WORKDIR/metrics.jsonl`` into ``{split: {name: (steps, values)}}``.

  Splits are ``"train"`` (the loss terms, self-paced weight, ...), ``"eval"`` (validation
  PSNR/SSIM) and ``"run"`` (the schedule). Non-finite values (λ is ∞ in the first epoch) are
  kept; plotting skips them.
  """
  series: dict[str, dict[str, list[tuple[int, float]]]] = collections.defaultdict(
      lambda: collections.defaultdict(list))
  path = os.path.join(workdir, "metrics.jsonl")
  with open(path) as f:
    for line in f:
      line = line.strip()
      if not line:
        continue
      record = json.loads(line)
      step, split = record.pop("step"), record.pop("split", "train")
      for k, v in record.items():
        if isinstance(v, (int, float)):
          series[split][k].append((int(step), float(v)))
  out: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
  for split, by_name in series.items():
    out[split] = {}
    for k, pts in by_name.items():
      last: dict[int, float] = {}
      for s, v in pts:  # A resumed run may log a step twice: keep the latest value.
        last[s] = v
      steps = np.array(sorted(last), np.int64)
      out[split][k] = (steps, np.array([last[s] for s in steps], np.float64))
  return out


def example_photo() -> tuple[str | None, Any]:
  """scikit-image's real camera-shake photo ``clock_motion.png``: ``(path, uint8 HxWx3)``.

  Falls back to ``(None, image)`` with scikit-image's ``camera`` photo blurred by a random
  camera-shake kernel when the file is missing from the installed scikit-image.
  """
  import skimage.data  # pylint: disable=g-import-not-at-top

  from biskip_jax import blur, datasets  # pylint: disable=g-import-not-at-top
  from biskip_jax.datasets import synthetic  # pylint: disable=g-import-not-at-top
  for folder in (os.path.dirname(skimage.data.__file__), getattr(skimage.data, "data_dir", "")):
    path = os.path.join(folder, "clock_motion.png")
    if folder and os.path.isfile(path):
      return path, datasets.load_image(path)
  sharp = synthetic.load_skimage_photo("camera")
  rng = np.random.default_rng(0)
  return None, blur.blur_image(sharp, blur.random_kernel(rng, 31), rng)

