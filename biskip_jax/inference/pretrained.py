"""The shipped model's files: written by :func:`export`, read back with its checksum by
:func:`read_verified`.

A shipped model is two files in ``biskip_jax/inference/pretrained/`` (package data):

* ``NAME.npz``: the generator's variables only (``params`` and, for batch norm,
  ``batch_stats``), one float32 array per leaf, keys joined with ``/``; no pickles, no critic,
  no optimizer state;
* ``NAME.json``: ``{"sha256": ..., "bytes": ..., "config": {...}, "provenance": {...}}``: the
  ``.npz``'s checksum and size, the training run's config (inference reads ``model`` and
  ``eval``; ``evaluate.py --data=synthetic`` reads ``data``, the run's held-out photos), and
  where the weights came from (:func:`biskip_jax.inference.shipping.lineage`): ``{"step": 9000,
  "runs": [{"workdir": "runs/pretrain", "steps": 6000}, {"workdir": "runs/pretrain2", "steps": 3000,
  "init_from": "pretrained"}]}``, every run behind the weights from the first, and ``step`` their
  sum.

:func:`read_verified` checks the size and the SHA-256 before reading a byte of the arrays, and
checks every array's shape against the generator the config builds; a missing, truncated or
altered file is a :class:`UserError` naming the file and how to get it back. Programs load a
model through :func:`biskip_jax.inference.loading.load_generator`, which calls it.

A training run is exported by :func:`biskip_jax.inference.shipping.export_run`
(``python -m biskip_jax.cli.pretrained``).
"""

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from biskip_jax.config import config_checks
from biskip_jax.errors import UserError
from biskip_jax.nn import models
from biskip_jax.output_files import atomic_write, sha256

DEFAULT_NAME = "biskip_general"  # The model `deblur.py` uses without --ckpt.
DIRECTORY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained")
_RESTORE_HINT = ("restore it with `git checkout -- biskip_jax/inference/pretrained/` or "
                 "reinstall biskip-jax, or pass --ckpt=RUN to use a training run instead")


def paths(name: str = DEFAULT_NAME,
          directory: str = DIRECTORY) -> tuple[str, str]:
  """``(weights .npz, metadata .json)`` paths of a shipped model."""
  return os.path.join(directory, f"{name}.npz"), os.path.join(directory, f"{name}.json")


def export(config: ml_collections.ConfigDict, variables: dict[str, Any], *,
           name: str = DEFAULT_NAME, directory: str = DIRECTORY,
           provenance: dict[str, Any] | None = None,
           dtype: str = "float32") -> tuple[str, str]:
  """Writes a generator as a shipped model (see the module docstring).

  Args:
    config: the run's config (kept whole but for absolute paths, which keep only their last
      component; it holds no weights).
    variables: ``{"params": ..., "batch_stats": ...}`` of the generator (batch_stats may be
      absent or empty).
    name: file stem.
    directory: destination folder (created if missing).
    provenance: JSON-serialisable facts about the run (workdir, step, data, ...); absolute
      paths keep only their last component, as in ``config``.
    dtype: of the stored arrays: "float32" (shipped models), or "float16" for half the size
      (a model brought back from a machine that can return only small files);
      :func:`read_verified` returns float32 either way.

  Returns:
    ``(npz path, json path)``.
  """
  os.makedirs(directory, exist_ok=True)
  npz_path, json_path = paths(name, directory)
  kept = {k: v for k, v in variables.items() if k in ("params", "batch_stats") and v}
  flat = traverse_util.flatten_dict(jax.device_get(kept), sep="/")
  arrays = {k: np.asarray(v, np.dtype(dtype)) for k, v in flat.items()}
  with atomic_write(npz_path) as f:
    np.savez(f, **arrays)
  meta = {
      "sha256": sha256(npz_path),
      "bytes": os.path.getsize(npz_path),
      "config": _without_folders(config.to_dict()),
      "provenance": _without_folders(provenance or {}),
  }
  write_json(json_path, meta)
  return npz_path, json_path


def _without_folders(tree: Any) -> Any:
  """``tree`` with each absolute path cut to its last component.

  A model file travels to other machines: the training data's folders on the machine that
  trained it mean nothing there (inference reads only ``model`` and ``eval``), and its name
  is all a reader needs to match the model card.
  """
  if isinstance(tree, dict):
    return {k: _without_folders(v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return type(tree)(_without_folders(v) for v in tree)
  if isinstance(tree, str) and os.path.isabs(tree):
    return os.path.basename(os.path.normpath(tree))
  return tree


def write_json(path: str, data: dict[str, Any]) -> None:
  with atomic_write(path, "w") as f:
    json.dump(data, f, indent=1, sort_keys=True, default=list)


def read_verified(name: str = DEFAULT_NAME, directory: str = DIRECTORY
                  ) -> tuple[ml_collections.ConfigDict, dict[str, Any], dict[str, Any]]:
  """Reads a shipped model (or one exported like it) after checking its size and SHA-256.

  Returns:
    ``(config, {"params", "batch_stats"}, metadata)``; ``config`` is the run's, upgraded onto
    today's fields (:func:`biskip_jax.config.config_checks.upgrade`).

  Raises:
    UserError: a missing, truncated, altered or mismatched file (one line naming it).
  """
  npz_path, json_path = paths(name, directory)
  for p in (json_path, npz_path):
    if not os.path.isfile(p):
      raise UserError(f"shipped model file {p} is missing: {_RESTORE_HINT}")
  try:
    with open(json_path) as f:
      meta = json.load(f)
    stored_config = meta["config"]
    expected_sha, expected_bytes = meta["sha256"], int(meta["bytes"])
  except (ValueError, KeyError, TypeError) as e:
    raise UserError(f"shipped model file {json_path} is damaged ({type(e).__name__}: {e}): "
                    f"{_RESTORE_HINT}") from e
  config = config_checks.upgrade(stored_config, json_path)
  size = os.path.getsize(npz_path)
  if size != expected_bytes:
    raise UserError(f"shipped model file {npz_path} has {size} bytes, expected "
                    f"{expected_bytes} (truncated or replaced): {_RESTORE_HINT}")
  if sha256(npz_path) != expected_sha:
    raise UserError(f"shipped model file {npz_path} fails its SHA-256 check (damaged or "
                    f"altered): {_RESTORE_HINT}")
  with np.load(npz_path, allow_pickle=False) as data:
    flat = {k: np.asarray(data[k], np.float32) for k in data.files}
  variables = traverse_util.unflatten_dict(flat, sep="/")
  model = models.generator_from_config(config.model)
  template = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
  models.check_shapes(variables, {c: template[c] for c in template if template[c]},
                      f"shipped model file {npz_path}", _RESTORE_HINT)
  variables.setdefault("batch_stats", {})
  return config, variables, meta
