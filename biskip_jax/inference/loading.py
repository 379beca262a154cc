"""Loading a generator from a ``--ckpt`` value: the one loader every program uses.

:func:`load_generator` takes ``None`` or ``pretrained[:NAME]`` (a shipped model),
``PATH/NAME.npz`` (a model file exported like it), or a training workdir, its ``best`` folder
or ``checkpoints/N``, and returns the run's config (upgraded onto today's fields), the
generator's variables and its step.
"""

import os
from typing import Any

import ml_collections

from biskip_jax.config import config_checks
from biskip_jax.errors import UserError
from biskip_jax.inference import pretrained

PRETRAINED = "pretrained"  # --ckpt value naming the shipped model ("pretrained:NAME" too).


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """Reads ``WORKDIR/config.json`` written by training (by any version: upgraded onto today's
  fields with :func:`biskip_jax.config.config_checks.upgrade`).

  Raises:
    UserError: no ``config.json``, or one that cannot be read, parsed or upgraded.
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise UserError(f"no config.json in {workdir}: --ckpt must be a training workdir "
                    "(or one of its checkpoints/N folders)")
  _, data = config_checks.read_config_file(path, "restore the run's config.json")
  return config_checks.upgrade(data, path)


def _split_ckpt_path(path: str) -> tuple[str, str, int | None]:
  """``WORKDIR`` | ``WORKDIR/checkpoints`` | ``WORKDIR/checkpoints/N`` | ``WORKDIR/best``."""
  path = os.path.abspath(path.rstrip("/"))
  if not os.path.exists(path):
    raise UserError(f"--ckpt {path} does not exist")
  base = os.path.basename(path)
  if base.isdigit():
    return os.path.dirname(os.path.dirname(path)), os.path.dirname(path), int(base)
  if base in ("checkpoints", "best"):
    return os.path.dirname(path), path, None
  return path, os.path.join(path, "checkpoints"), None


def _restore_run(path: str) -> tuple[ml_collections.ConfigDict, dict[str, Any], int]:
  """The generator variables of a training checkpoint (and nothing else), with the run's
  config.

  Args:
    path: a workdir (its newest checkpoint that restores), its ``best`` folder, or
      ``checkpoints/N``.

  Returns:
    ``(config, {"params", "batch_stats"}, step)``.

  Raises:
    UserError: no checkpoint, a damaged one (named explicitly, or all of them), or a
      ``config.json`` that does not fit the checkpoint.
  """
  # Imported here: orbax takes seconds to import, and a shipped model does not need it.
  from biskip_jax.train import checkpointing  # pylint: disable=g-import-not-at-top
  workdir, directory, step = _split_ckpt_path(path)
  config = load_run_config(workdir)
  try:
    variables, step = checkpointing.restore_generator_variables(directory, config, step)
  except (KeyError, TypeError, AttributeError, ValueError) as e:  # config.json lacks fields.
    raise UserError(f"{workdir}/config.json does not describe this run's model "
                    f"({checkpointing.reason(e)}): undo the edit") from e
  return config, variables, step


def is_pretrained(ckpt: str | None) -> bool:
  """Whether a ``--ckpt`` value names a shipped model: None, ``"pretrained[:NAME]"``."""
  return ckpt is None or ckpt == PRETRAINED or ckpt.startswith(PRETRAINED + ":")


def is_model_file(ckpt: str | None) -> bool:
  """Whether a ``--ckpt`` value names an exported model: shipped, or ``PATH/NAME.npz``."""
  return is_pretrained(ckpt) or ckpt.endswith(".npz")


def model_file(ckpt: str | None) -> tuple[str, str]:
  """``(name, directory)`` of the model a ``--ckpt`` of :func:`is_model_file` names."""
  if is_pretrained(ckpt):
    name = ckpt.split(":", 1)[1] if ckpt and ":" in ckpt else pretrained.DEFAULT_NAME
    return name, pretrained.DIRECTORY
  return os.path.basename(ckpt)[:-4], os.path.dirname(os.path.abspath(ckpt))


def workdir_of(path: str) -> str:
  """The training workdir of a ``--ckpt`` path (a workdir, its ``best`` or ``checkpoints/N``)."""
  return _split_ckpt_path(path)[0]


def load_generator(ckpt: str | None) -> tuple[ml_collections.ConfigDict, dict[str, Any],
                                               int | None]:
  """The one way a program gets a generator: its config, variables and step from a ``--ckpt``.

  Args:
    ckpt: ``None`` or ``"pretrained[:NAME]"``: a shipped model
      (``biskip_jax/inference/pretrained/``, size and SHA-256 checked); ``PATH/NAME.npz``: a model
      file exported like it (with ``PATH/NAME.json``); else a training workdir (its newest
      checkpoint that restores), its ``best`` folder or ``checkpoints/N``.

  Returns:
    ``(config, {"params", "batch_stats"}, step)``; a shipped model's step counts the steps
    of every run behind it (``provenance.step``; ``None`` if it does not record it).

  Raises:
    UserError: a missing path, or a missing or damaged model or checkpoint (one line naming
      it), or arrays that do not fit the config's model.
  """
  if is_model_file(ckpt):
    if not is_pretrained(ckpt) and not os.path.exists(ckpt):
      raise UserError(f"--ckpt {ckpt} does not exist")
    config, variables, meta = pretrained.read_verified(*model_file(ckpt))
    return config, variables, meta.get("provenance", {}).get("step")
  return _restore_run(ckpt)
