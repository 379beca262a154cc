"""Every check of a config's settings, the upgrade of stored configs, and the run's config.json.

``upgrade(stored, where)`` turns a config written by any version (a run's ``config.json``, a
shipped model's ``config`` section) into today's: fields it lacks take their defaults from
:mod:`biskip_jax.config.config_defaults`, or the value that reproduces what the code did before the
field existed (:data:`_BEFORE`); a field today's config does not have is a
:class:`~biskip_jax.errors.UserError` naming the file. Code after it reads every field
directly, with no fallbacks of its own.

``check_settings(config)`` (training, before anything is built) raises
:class:`~biskip_jax.errors.UserError` naming the first bad field as its flag: a number out of
range (``check_ranges``: ``--config.optim.g_lr=-1.0: must be a number > 0``), a range whose
low end is above its high end, a name that is not one of the allowed ones
(``--config.loss.pixel='l3': expected one of l1, l2, none``), a batch that does not split over
the devices, a field missing or unknown (``check_fields``). ``check_data(config)`` checks the
``data`` section alone (the input pipeline, also for evaluation). This is the one place names
are validated: the allowed ones are the constants of the modules that use them
(:data:`CHOICES`).

``save_or_check_config(config, workdir)`` keeps ``WORKDIR/config.json`` and, beside it,
``.config.json.sha256`` (the hash of the file as training wrote it), which tells a hand edit
from a file written by an earlier command line.
"""

import json
import logging
import math
import os
from typing import Any, Callable, Sequence

import jax
import ml_collections

from biskip_jax.config import config_defaults
from biskip_jax.data import datasets
from biskip_jax.data.datasets import frames
from biskip_jax.errors import UserError, os_errors_as_user_errors
from biskip_jax.nn import layers, models, vgg
from biskip_jax.objective import losses, schemes
from biskip_jax.output_files import atomic_write, file_kind, sha256
from biskip_jax.train import train_step

log = logging.getLogger("biskip_jax")

MODEL_SECTIONS = ("model", "critic")

# (rule text, test) pairs; a test receives a number that is already known to be finite.
_RULES: dict[str, Callable[[float], bool]] = {
    "> 0": lambda x: x > 0,
    ">= 0": lambda x: x >= 0,
    ">= 1": lambda x: x >= 1,
    "in [0, 1]": lambda x: 0 <= x <= 1,
    "in [0, 1)": lambda x: 0 <= x < 1,
    "in (0, 1]": lambda x: 0 < x <= 1,
    "in [1, 95]": lambda x: 1 <= x <= 95,  # JPEG quality: Pillow advises against > 95.
    "in [0, 90]": lambda x: 0 <= x <= 90,  # Degrees.
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
    "critic.num_layers": ">= 1",  # Stride-2 convs, the first included (DESIGN §3).
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
    "train.checkpoint_every_secs": ">= 0",
    "train.keep_checkpoints": ">= 1",
    "train.eval_every": ">= 0",
    "train.eval_num_images": ">= 1",
    "train.max_bad_steps": ">= 1",
    "train.stop_check_every": ">= 1",
    "train.profile_steps": ">= 0",
    "data.crop_size": ">= 1",
    "data.num_workers": ">= 0",
    "data.prefetch": ">= 1",
    "data.max_bad_fraction": "in [0, 1]",
    "data.cache_max_mb": ">= 1",
    "data.crops_per_image": ">= 1",
    "data.synthetic.kernel_size": ">= 1",
    "data.synthetic.max_shake": ">= 0",
    "data.synthetic.min_shake": ">= 0",
    "data.synthetic.noise_std": ">= 0",
    "data.synthetic.gamma": "> 0",
    "data.synthetic.gamma_max": ">= 0",
    "data.synthetic.num_eval": ">= 0",
    "data.synthetic.num_train": ">= 1",
    "data.synthetic.length_range": "> 0",
    "data.synthetic.exposure_range": "in (0, 1]",
    "data.synthetic.noise_std_max": ">= 0",
    "data.synthetic.jpeg_prob": "in [0, 1]",
    "data.synthetic.jpeg_quality": "in [1, 95]",
    "data.synthetic.sharp_prob": "in [0, 1]",
    "data.synthetic.scale_range": "in (0, 1]",
    "data.synthetic.eval_max_size": ">= 0",
    "data.synthetic.highlight_prob": "in [0, 1]",
    "data.synthetic.highlight_gain": ">= 1",
    "data.synthetic.shot_noise": ">= 0",
    "data.synthetic.read_noise": ">= 0",
    "data.synthetic.roll_prob": "in [0, 1]",
    "data.synthetic.max_roll": "in [0, 90]",
    "data.synthetic.holdout_every": ">= 0",
    "data.mix.gopro": ">= 0",
    "data.mix.folder": ">= 0",
    "data.mix.synthetic": ">= 0",
    "data.mix.frames": ">= 0",
    "data.frames.window": ">= 1",
    "data.frames.gamma": "> 0",
    "data.frames.eval_range": "in [0, 1]",
    "data.frames.eval_window": ">= 1",
    "data.frames.num_eval": ">= 0",
    "data.frames.eval_max_size": ">= 0",
    "data.frames.num_train": ">= 1",
    "data.frames.cache_mb": ">= 0",
    "data.frames.scale_range": "in (0, 1]",
    "data.frames.exposure_range": "> 0",
    "data.frames.white_balance": ">= 0",
    "loss.gamma_fft": ">= 0",
    "loss.gamma_adv": ">= 0",
    "eval.tile_size": ">= 0",
    "eval.max_pixels": ">= 1",
    "eval.tile_overlap": ">= 0",
    "eval.num_figures": ">= 0",
    "eval.size_bucket": ">= 0",
}

_INTEGERS = {"model.channels", "model.skip_channels", "model.num_res_blocks", "critic.features",
             "critic.num_layers", "data.crop_size", "data.num_workers", "data.prefetch",
             "data.cache_max_mb", "data.crops_per_image", "data.synthetic.kernel_size",
             "data.synthetic.num_eval", "data.synthetic.num_train",
             "data.synthetic.jpeg_quality", "data.synthetic.eval_max_size",
             "data.synthetic.holdout_every", "data.frames.window", "data.frames.eval_window",
             "data.frames.num_eval", "data.frames.eval_max_size", "data.frames.num_train",
             "data.frames.cache_mb", "eval.tile_size",
             "eval.max_pixels", "eval.tile_overlap", "eval.num_figures", "eval.size_bucket"} | {
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


# (lo, hi) fields whose low end must not exceed the high end.
_ORDERED = ("data.synthetic.length_range", "data.synthetic.exposure_range",
            "data.synthetic.jpeg_quality", "data.synthetic.scale_range",
            "data.synthetic.highlight_gain", "data.synthetic.shot_noise",
            "data.synthetic.read_noise", "data.frames.window", "data.frames.eval_range",
            "data.frames.scale_range", "data.frames.exposure_range")

# (lo, hi) pairs of fields: a low field > 0 must not exceed the high one (0: the low one is off).
_ORDERED_PAIRS = (("data.synthetic.min_shake", "data.synthetic.max_shake"),)

# Field -> the names it may take: the constants of the modules that dispatch on them.
CHOICES: dict[str, Sequence[str]] = {
    "model.variant": schemes.VARIANTS, "model.norm": layers.NORMS, "model.pool": layers.POOLS,
    "critic.norm": models.CRITIC_NORMS, "loss.pixel": losses.PIXEL_KINDS,
    "loss.vgg_layer": vgg.LAYER_NAMES, "loss.vgg_input": vgg.INPUTS,
    "train.compute_dtype": train_step.COMPUTE_DTYPES, "data.source": datasets.SOURCES,
    "data.blur_kind": datasets.BLUR_KINDS, "data.small_images": datasets.SMALL_IMAGES,
    "data.gopro_format": datasets.GOPRO_FORMATS, "data.frames.curve": frames.CURVES}


def _in_sections(field: str, sections: Sequence[str] | None) -> bool:
  return sections is None or field.split(".", 1)[0] in sections


def _flag(field: str, where: str | None) -> str:
  """How a message names a field: as its flag, or as a field of the file ``where``."""
  return f"--config.{field}" if where is None else f"{where}: {field}"


def check_ranges(config: ml_collections.ConfigDict, sections: Sequence[str] | None = None,
                 where: str | None = None) -> None:
  """Raises ``UserError`` for the first numeric field outside its allowed range.

  Args:
    config: a config (``biskip_jax.config.config_defaults`` layout).
    sections: only the fields of these top-level sections (e.g. ``("data",)``); None: all.
    where: the file the config was read from (named in the message instead of the flag).

  Raises:
    UserError: ``--config.FIELD=VALUE: must be RULE`` (e.g. ``> 0``, ``in [0, 1]``), or
      ``... must be (lo, hi) with lo <= hi``.
  """
  for field, rule in _FIELDS.items():
    value = _get(config, field) if _in_sections(field, sections) else None
    if value is None:
      continue
    integer = field in _INTEGERS
    values = value if isinstance(value, (tuple, list)) else (value,)
    if not values or any(_bad(v, rule, integer) for v in values):
      kind = "an integer " if integer else "a number "
      each = "each " if isinstance(value, (tuple, list)) else ""
      raise UserError(f"{_flag(field, where)}={value!r}: {each}must be {kind}{rule}")
  for field in _ORDERED:
    value = _get(config, field) if _in_sections(field, sections) else None
    if value is not None and (len(value) != 2 or value[0] > value[1]):
      raise UserError(f"{_flag(field, where)}={tuple(value)!r}: must be (lo, hi) with lo <= hi")
  for lo_field, hi_field in _ORDERED_PAIRS:
    lo, hi = (_get(config, f) if _in_sections(f, sections) else None for f in (lo_field, hi_field))
    if lo is not None and hi is not None and 0 < lo and lo > hi:
      raise UserError(f"{_flag(lo_field, where)}={lo!r}: must be 0 (off) or at most "
                      f"{hi_field.rsplit('.', 1)[1]}={hi!r}")


def check_choices(config: ml_collections.ConfigDict, sections: Sequence[str] | None = None,
                  where: str | None = None) -> None:
  """Raises ``UserError`` for the first field whose name is not one of those allowed.

  Raises:
    UserError: ``--config.FIELD='VALUE': expected one of A, B, C`` (``where`` as in
      :func:`check_ranges`).
  """
  for field, allowed in CHOICES.items():
    value = _get(config, field) if _in_sections(field, sections) else None
    if value is not None and value not in allowed:
      raise UserError(f"{_flag(field, where)}={value!r}: expected one of {', '.join(allowed)}")


def check_data(config: ml_collections.ConfigDict) -> None:
  """The checks of :func:`check_settings` on the ``data`` section alone."""
  check_choices(config, ("data",))
  check_ranges(config, ("data",))


def check_settings(config: ml_collections.ConfigDict) -> None:
  """Stops before any compute on training settings that cannot work, naming the flag.

  Raises:
    UserError: a field missing, unknown, out of range or not one of its names (see the
      module docstring), a batch that is not a positive multiple of the devices, or an
      adversarial scheme without critic updates.
  """
  check_fields(config)
  check_choices(config)
  check_ranges(config)
  n_dev = jax.device_count()
  b = config.train.batch_size
  if b < 1 or b % n_dev:
    raise UserError(f"--config.train.batch_size={b} must be a positive multiple of the "
                    f"{n_dev} devices the batch is split over")
  if config.train.checkpoint_every_secs > 0 and jax.process_count() > 1:
    raise UserError("--config.train.checkpoint_every_secs needs a single process (processes "
                    "would disagree on when to save): use --config.train.checkpoint_every")
  if config.train.n_critic < 1 and config.loss.adversarial:
    raise UserError("--config.train.n_critic must be >= 1 for adversarial schemes")




def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    flat = {}
    for k, v in tree.items():
      flat.update(_flatten(v, f"{prefix}{k}."))
    return flat
  return {prefix[:-1]: tree}


_DEFAULTS_HINT = "today's fields and their defaults: biskip_jax/config/config_defaults.py"


def check_fields(config: ml_collections.ConfigDict) -> None:
  """Raises ``UserError`` if a config (a ``--config`` file) lacks a field or has one that
  today's config does not have."""
  have = set(_flatten(config.to_dict()))
  want = set(_flatten(config_defaults.get_config().to_dict()))
  if have - want:
    raise UserError(f"--config.{min(have - want)} is not a config field ({_DEFAULTS_HINT})")
  if want - have:
    missing = sorted(want - have)
    more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
    raise UserError(f"--config lacks {', '.join(missing[:3])}{more}: build the config on "
                    f"configs/biskip.py's get_config ({_DEFAULTS_HINT})")


# Fields added after configs were first stored, with the value that reproduces what the code
# did before them where today's default would not (a function of the merged config where that
# value came from another field). Every other field a stored config lacks
# takes today's default, which is what the code did without it; so does a field of a section
# the stored config lacks (no code of its time read that section).
_BEFORE: dict[str, Any] = {
    # train.profile took no trace before train.profile_steps named its steps: (0, 0) is none.
    "train.profile_steps": (0, 0),
    # Frames windows were of any length in data.frames.window before odd_windows.
    "data.frames.odd_windows": False,
    # Synthetic evaluation pairs were drawn from train.seed before data.synthetic.eval_seed.
    "data.synthetic.eval_seed": lambda config: config["train"]["seed"],
}


def _upgrade_critic(critic: dict[str, Any]) -> None:
  """A critic section written before ``critic.norm_affine``: the same network in today's terms.

  That critic's instance norms had a scale and bias, and its ``num_layers`` counted the
  stride-2 convs after the first (DeblurGAN's ``n_layers`` counts them all): ``L`` then is
  today's ``L + 1`` with ``norm_affine`` (same layers, channels, strides and parameter names).
  """
  if "norm_affine" not in critic:
    critic["norm_affine"] = True
    if isinstance(critic.get("num_layers"), int):
      critic["num_layers"] += 1


def _merge(defaults: dict[str, Any], stored: dict[str, Any], where: str,
           prefix: str = "") -> dict[str, Any]:
  """``defaults`` with the values of ``stored`` (JSON lists as tuples where the default is a
  tuple); a field of ``stored`` that ``defaults`` lacks is an error naming ``where``."""
  merged = dict(defaults)
  for key, value in stored.items():
    field = prefix + key
    if key not in defaults:
      raise UserError(f"{where}: {field} is not a config field (written by a newer version, "
                      f"or edited?): remove it ({_DEFAULTS_HINT})")
    default = defaults[key]
    if isinstance(default, dict) != isinstance(value, dict):
      kind = "a section of fields" if isinstance(default, dict) else "a value, not a section"
      raise UserError(f"{where}: {field} must be {kind}: undo the edit")
    if isinstance(default, dict):
      merged[key] = _merge(default, value, where, field + ".")
    elif isinstance(default, tuple) and isinstance(value, list):
      merged[key] = tuple(value)
    else:
      merged[key] = value
  return merged


def read_config_file(path: str, advice: str) -> tuple[bytes, dict[str, Any]]:
  """The bytes of a stored ``config.json`` and the JSON object they hold (not yet upgraded).

  Args:
    path: the file.
    advice: what the user should do, ending each error (the file's reader knows).

  Raises:
    UserError: naming ``path``: not a regular file, unreadable, not JSON or not an object.
  """
  kind = file_kind(path)
  if kind is not None:  # Reading a FIFO would wait for ever.
    raise UserError(f"{path} is {kind}, not a regular file: {advice}")
  with os_errors_as_user_errors(f"cannot read {path}"):
    with open(path, "rb") as f:
      raw = f.read()
  try:
    data = json.loads(raw)  # Bytes: a decoding error is a ValueError here too.
    if not isinstance(data, dict):
      raise ValueError("not a JSON object")
  except ValueError as e:
    raise UserError(f"{path} is not a valid config ({e}): {advice}") from e
  return raw, data


def upgrade(stored: Any, where: str) -> ml_collections.ConfigDict:
  """A stored config (of any earlier version) as today's config, checked.

  Args:
    stored: the config as read from JSON (nested dicts; a ``ConfigDict`` is accepted too).
    where: the file it was read from, named in errors (``WORKDIR/config.json``, a shipped
      model's ``NAME.json``).

  Returns:
    A config with every field of :func:`biskip_jax.config.config_defaults.get_config`: the stored
    values, the old behaviour for fields added since (:data:`_BEFORE`, :func:`_upgrade_critic`)
    and today's defaults for the rest.

  Raises:
    UserError: naming ``where`` and the field: a field today's config does not have, a
      section where a value belongs (or the reverse), a name or number that is not allowed.
  """
  if isinstance(stored, ml_collections.ConfigDict):
    stored = stored.to_dict()
  if not isinstance(stored, dict):
    raise UserError(f"{where}: the config is not a JSON object: undo the edit")
  stored = json.loads(json.dumps(stored))  # A deep copy, tuples as lists.
  if isinstance(stored.get("critic"), dict):
    _upgrade_critic(stored["critic"])
  merged = _merge(config_defaults.get_config().to_dict(), stored, where)
  present = _flatten(stored)
  for field, value in _BEFORE.items():
    section, name = field.rsplit(".", 1)
    if field not in present and any(k.startswith(section + ".") for k in present):
      node = merged
      for part in section.split("."):
        node = node[part]
      node[name] = value(merged) if callable(value) else value
  config = ml_collections.ConfigDict(merged)
  check_choices(config, where=where)
  check_ranges(config, where=where)
  return config


def differing_fields(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
  """Dotted names of the leaves that differ between two JSON-like config trees, sorted."""
  flat_old, flat_new = _flatten(old), _flatten(new)
  return sorted(k for k in set(flat_old) | set(flat_new) if flat_old.get(k) != flat_new.get(k))


def _describe(diff: list[str], old: dict[str, Any], new: dict[str, Any]) -> str:
  shown = [f"{k} ({old.get(k, 'absent')!r} in the file, {new.get(k, 'absent')!r} on the command "
           "line)" for k in diff[:3]]
  return ", ".join(shown) + (f" and {len(diff) - 3} more" if len(diff) > 3 else "")


def save_or_check_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes ``WORKDIR/config.json``; checks an existing one against ``config`` first.

  A ``config.json`` edited by hand (its hash is not the one training wrote) must agree with
  the command line: it is never silently replaced. A file that training wrote may differ in
  training settings (a longer ``train.num_steps`` on resume: the change is logged), not in
  the model's shape (``model``, ``critic``).

  Raises:
    UserError: the file is not valid JSON, was edited by hand and differs from ``config``,
      or describes another model shape.
  """
  path = os.path.join(workdir, "config.json")
  hash_path = os.path.join(workdir, ".config.json.sha256")
  new = json.loads(config.to_json_best_effort())
  if os.path.exists(path):
    raw, old = read_config_file(
        path, "undo the edit, or remove the file to use the command line's config")
    old = json.loads(upgrade(old, path).to_json_best_effort())  # Fields added since: as then.
    try:
      with open(hash_path) as f:
        edited = f.read().strip() != sha256(raw)
    except OSError:
      edited = False  # Written before hashes were kept: treat as training's own.
    flat_old, flat_new = _flatten(old), _flatten(new)
    diff = differing_fields(old, new)
    if edited and diff:
      raise UserError(
          f"{path} was edited by hand and differs from the command line in "
          f"{_describe(diff, flat_old, flat_new)}: pass the file's values as --config.FIELD=... "
          "flags, or undo the edit")
    for section in MODEL_SECTIONS:
      changed = [k for k in diff if k.startswith(section + ".")]
      if changed:
        raise UserError(
            f"{workdir} holds a run with a different {section} (differs in "
            f"{', '.join(changed)}): use a new --workdir, or the same --config as that run "
            f"(see {path})")
    if diff:
      log.warning("%s: the command line changes %s", path, _describe(diff, flat_old, flat_new))
  if jax.process_index() == 0:
    data = config.to_json_best_effort(indent=2).encode("utf-8")
    with os_errors_as_user_errors(f"--workdir {workdir}: cannot write {path}"):
      os.makedirs(workdir, exist_ok=True)
      for target, content in ((path, data), (hash_path,
                                             sha256(data).encode() + b"\n")):
        with atomic_write(target) as f:
          f.write(content)
