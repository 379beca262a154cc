"""The paper's training setup (Bi-Skip, §4–5) on GoPro.

Usage:
  python train.py --config=configs/biskip.py --workdir=runs/biskip           # SA1P-BS
  python train.py --config=configs/biskip.py:A2-S --workdir=runs/a2s         # a Table 1 baseline
  python train.py --config=configs/biskip.py --config.train.num_epochs=1000  # the final model

The argument after ``:`` is one of Table 1's scheme names (``biskip_jax.objective.schemes.TABLE1``);
it sets the loss switches in ``config.loss`` and the generator variant in ``config.model``.
"""

import ml_collections

from biskip_jax.config import config_defaults


def get_config(scheme: str = "SA1P-BS") -> ml_collections.ConfigDict:
  """Returns the paper's configuration for training scheme ``scheme``.

  Every field and its comment: :mod:`biskip_jax.config.config_defaults`.
  """
  return config_defaults.get_config(scheme)
