"""A CPU-sized configuration for tests and smoke runs: a few thousand parameters, 32x32 crops.

  python train.py --config=configs/tiny.py:SA1-BS --workdir=/tmp/tiny \\
      --config.train.num_steps=4

``get_config(scheme)`` is the quickstart config (``configs/quickstart.py``) with a tiny
network, batch norm and a random (not zero-initialised) last conv: what the tests train and
compare, in process and through ``train.py``. :func:`shrink` makes any config that small for
a smoke test of its own pipeline (the notebooks' ``BISKIP_NOTEBOOK_TINY=1`` mode, the
benchmarks' ``--quick``); its results mean nothing.
"""

import ml_collections

from configs import quickstart


def _tiny_sizes(config: ml_collections.ConfigDict) -> None:
  """Shrinks the networks, crops, batch and data workers of ``config`` in place."""
  config.model.channels = (4, 8, 8, 8, 8)
  config.model.skip_channels = (2, 4, 4, 4)
  config.model.num_res_blocks = 1
  config.critic.features = 8
  config.critic.num_layers = 1
  config.loss.vgg_layer = "conv1_2"
  config.train.batch_size = 2
  config.train.image_every = 0  # Nothing compiles but the train step.
  config.train.eval_every = 0
  config.data.crop_size = 32
  config.data.num_workers = 0
  if "synthetic" in config.data:
    config.data.synthetic.num_eval = 2


def get_config(scheme: str = "1-BS") -> ml_collections.ConfigDict:
  """The tests' configuration: the quickstart's ``scheme`` (default ``1-BS``), tiny."""
  config = quickstart.get_config(scheme or "1-BS")
  _tiny_sizes(config)
  config.model.zero_residual = False  # Tests want a non-trivial random generator.
  # Batch norm whatever the quickstart uses: tiled inference equals whole-image inference only
  # with per-channel statistics that do not depend on the tile (and the 4-device test's
  # tolerance was set for it).
  config.model.norm = "batch"
  config.train.log_every = 2
  config.train.checkpoint_every = 4
  return config


def shrink(config: ml_collections.ConfigDict, steps: int = 4) -> ml_collections.ConfigDict:
  """A copy of ``config`` with the tiny network and crops of :func:`get_config`, ``steps`` long.

  It keeps the scheme (loss, critic), the normalisation and the data source; validation,
  image summaries and worker processes are off, and every step is logged.
  """
  config = ml_collections.ConfigDict(config.to_dict())
  _tiny_sizes(config)
  config.train.num_steps = steps
  config.train.steps_per_epoch = max(1, steps // 2)
  config.train.log_every = 1
  config.train.checkpoint_every = steps
  config.data.prefetch = 1
  if "synthetic" in config.data:
    config.data.synthetic.num_train = 16
  config.eval.num_figures = 2
  return config
