"""Tiny configurations shared by the tests (CPU-sized, seconds to compile)."""

import ml_collections

from configs import quickstart


def tiny_config(scheme: str = "SA1-BS", crop: int = 32,
                batch: int = 2) -> ml_collections.ConfigDict:
  """The quickstart config shrunk to a few thousand parameters and ``crop``-pixel crops."""
  config = quickstart.get_config(scheme)
  config.model.channels = (4, 8, 8, 8, 8)
  config.model.skip_channels = (2, 4, 4, 4)
  config.model.num_res_blocks = 1
  config.model.zero_residual = False  # Tests want a non-trivial random generator.
  # Batch norm whatever the quickstart uses: tiled inference equals whole-image inference only
  # with per-channel statistics that do not depend on the tile (and the 4-device test's
  # tolerance was set for it).
  config.model.norm = "batch"
  config.critic.features = 8
  config.critic.num_layers = 1
  config.loss.vgg_layer = "conv1_2"
  config.train.batch_size = batch
  config.train.log_every = 2
  config.train.checkpoint_every = 4
  config.train.image_every = 0
  config.train.eval_every = 0
  config.data.crop_size = crop
  config.data.num_workers = 0
  config.data.synthetic.num_eval = 2
  return config
