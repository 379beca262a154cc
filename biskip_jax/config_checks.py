"""Range checks of a training config's numeric fields, before anything is built or compiled.

``check_ranges(config)`` raises :class:`~biskip_jax.errors.UserError` naming the first field
out of range as its flag, with the allowed range: ``--config.optim.g_lr=-1.0: must be > 0``.
Fields a config does not have are skipped (older or hand-made configs).
"""

import math
from typing import Any, Callable

import ml_collections

from biskip_jax.errors import UserError

# (rule text, test) pairs; a test receives a number that is already known to be finite.
_RULES: dict[str, Callable[[float], bool]] = {
    "> 0": lambda x: x > 0,
    ">= 0": lambda x: x >= 0,
    ">= 1": lambda x: x >= 1,
    "in [0, 1]": lambda x: 0 <= x <= 1,
    "in [0, 1)": lambda x: 0 <= x < 1,
    "-1 (automatic) or >= 1": lambda x: x == -1 or x >= 1,
}

# Field -> rule. Integers are checked to be integers, every value to be finite.
_FIELDS: dict[str, str] = {
    "model.channels": ">= 1",
    "model.skip_channels": ">= 1",
    "model.num_res_blocks": ">= 0",
    "model.act_slope": ">= 0",
    "model.bn_momentum": "in [0, 1]",
    "critic.features": ">= 1",
    "critic.num_layers": ">= 0",
    "loss.gamma1": ">= 0",
    "loss.gamma2": ">= 0",
    "loss.gp_weight": ">= 0",
    "optim.g_lr": "> 0",
    "optim.d_lr": "> 0",
    "optim.b1": "in [0, 1)",
    "optim.b2": "in [0, 1)",
    "optim.decay_start": "in [0, 1]",
    "train.batch_size": ">= 1",
    "train.num_epochs": ">= 1",
    "train.steps_per_epoch": "-1 (automatic) or >= 1",
    "train.num_steps": "-1 (automatic) or >= 1",
    "train.n_critic": ">= 1",
    "train.log_every": ">= 1",
    "train.image_every": ">= 0",
    "train.checkpoint_every": ">= 1",
    "train.keep_checkpoints": ">= 1",
    "train.eval_every": ">= 0",
    "train.eval_num_images": ">= 1",
    "train.max_bad_steps": ">= 1",
    "data.crop_size": ">= 1",
    "data.num_workers": ">= 0",
    "data.prefetch": ">= 1",
    "data.max_bad_fraction": "in [0, 1]",
    "data.cache_max_mb": ">= 1",
    "data.crops_per_image": ">= 1",
    "data.synthetic.kernel_size": ">= 1",
    "data.synthetic.max_shake": ">= 0",
    "data.synthetic.noise_std": ">= 0",
    "data.synthetic.gamma": "> 0",
    "data.synthetic.num_eval": ">= 0",
    "data.synthetic.num_train": ">= 1",
    "eval.tile_size": ">= 0",
    "eval.max_pixels": ">= 1",
    "eval.tile_overlap": ">= 0",
    "eval.num_figures": ">= 0",
}

_INTEGERS = {"model.channels", "model.skip_channels", "model.num_res_blocks", "critic.features",
             "critic.num_layers", "data.crop_size", "data.num_workers", "data.prefetch",
             "data.cache_max_mb", "data.crops_per_image", "data.synthetic.kernel_size",
             "data.synthetic.num_eval", "data.synthetic.num_train", "eval.tile_size",
             "eval.max_pixels", "eval.tile_overlap", "eval.num_figures"} | {
                 f for f in _FIELDS if f.startswith("train.")}


def _get(config: ml_collections.ConfigDict, field: str) -> Any:
  node: Any = config
  for part in field.split("."):
    if not hasattr(node, "get") or part not in node:
      return None
    node = node[part]
  return node


def _bad(value: Any, rule: str, integer: bool) -> bool:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return True
  if not math.isfinite(value) or (integer and value != int(value)):
    return True
  return not _RULES[rule](value)


def check_ranges(config: ml_collections.ConfigDict) -> None:
  """Raises ``UserError`` for the first numeric field outside its allowed range.

  Args:
    config: a training config (``configs/biskip.py`` layout).

  Raises:
    UserError: ``--config.FIELD=VALUE: must be RULE`` (e.g. ``> 0``, ``in [0, 1]``).
  """
  for field, rule in _FIELDS.items():
    value = _get(config, field)
    if value is None:
      continue
    integer = field in _INTEGERS
    values = value if isinstance(value, (tuple, list)) else (value,)
    if not values or any(_bad(v, rule, integer) for v in values):
      kind = "an integer " if integer else "a number "
      each = "each " if isinstance(value, (tuple, list)) else ""
      raise UserError(f"--config.{field}={value!r}: {each}must be {kind}{rule}")
