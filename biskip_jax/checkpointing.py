"""Checkpoints of a run: train state + data-iterator position, with orbax.

Orbax writes each checkpoint into a temporary folder and renames it when complete, so a run
killed at any moment (SIGKILL during a save included) leaves the previous complete checkpoint
as the latest one. A failed write (full or read-only disk) is reported and training goes on
with the previous checkpoint kept.
"""

import json
import logging
import os
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from biskip_jax import train_step
from biskip_jax.errors import UserError

log = logging.getLogger("biskip_jax")


def _to_savable(state: train_step.TrainState) -> dict[str, Any]:
  """A pytree of plain arrays: the typed PRNG key becomes its raw key data."""
  return {"state": state.replace(rng=jax.random.key_data(state.rng))}


def _from_savable(tree: dict[str, Any], impl: str) -> train_step.TrainState:
  state = tree["state"]
  return state.replace(rng=jax.random.wrap_key_data(state.rng, impl=impl))


def _iter_state(it: Any) -> dict[str, Any]:
  """The data iterator's position as a JSON-able dict (grain returns bytes or a dict)."""
  if it is None or not hasattr(it, "get_state"):
    return {}
  s = it.get_state()
  if isinstance(s, bytes):
    return {"bytes": s.decode("utf-8")}
  return {"dict": s}


def _set_iter_state(it: Any, saved: dict[str, Any]) -> None:
  if not saved or it is None or not hasattr(it, "set_state"):
    return
  it.set_state(saved["bytes"].encode("utf-8") if "bytes" in saved else saved["dict"])


class Checkpointer:
  """Latest-N checkpoints in ``WORKDIR/checkpoints`` and the best one in ``WORKDIR/best``."""

  def __init__(self, workdir: str, config: ml_collections.ConfigDict):
    self.directory = os.path.join(workdir, "checkpoints")
    self.best_directory = os.path.join(workdir, "best")
    self._impl = config.rng_impl
    options = ocp.CheckpointManagerOptions(max_to_keep=config.train.keep_checkpoints,
                                           create=True, enable_async_checkpointing=False)
    self.manager = ocp.CheckpointManager(self.directory, options=options)
    best_options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                                enable_async_checkpointing=False)
    self.best_manager = ocp.CheckpointManager(self.best_directory, options=best_options)
    self._best_file = os.path.join(workdir, "best.json")
    self.last_error: Exception | None = None  # Of the last failed save.

  def _args(self, state: train_step.TrainState, it: Any) -> ocp.args.Composite:
    return ocp.args.Composite(state=ocp.args.StandardSave(_to_savable(state)),
                              data=ocp.args.JsonSave(_iter_state(it)))

  def save(self, step: int, state: train_step.TrainState, it: Any,
           manager: ocp.CheckpointManager | None = None) -> bool:
    """Saves a checkpoint; on an I/O error logs it and returns False (training goes on)."""
    manager = manager or self.manager
    if step in (manager.all_steps() or []):
      return True
    try:
      manager.save(step, args=self._args(state, it), force=True)
      manager.wait_until_finished()
    except (OSError, ValueError, RuntimeError) as e:
      self.last_error = e
      log.error("checkpoint at step %d could not be written to %s (%s); training "
                    "continues and the previous checkpoint is kept", step, manager.directory, e)
      return False
    return True

  def save_best(self, step: int, state: train_step.TrainState, it: Any, psnr: float) -> None:
    """Keeps ``state`` as the best checkpoint by validation PSNR."""
    if self.save(step, state, it, manager=self.best_manager) and jax.process_index() == 0:
      # Written aside and renamed: a full disk or a kill never leaves a truncated best.json
      # (which would stop every resume).
      tmp = self._best_file + ".tmp"
      try:
        with open(tmp, "w") as f:
          json.dump({"step": step, "psnr": psnr}, f)
        os.replace(tmp, self._best_file)
      except OSError as e:
        log.error("%s could not be written (%s); training continues", self._best_file, e)

  def best_metric(self) -> float | None:
    if os.path.exists(self._best_file):
      with open(self._best_file) as f:
        return float(json.load(f)["psnr"])
    return None

  def restore(self, step: int, template: train_step.TrainState, it: Any,
              manager: ocp.CheckpointManager | None = None) -> train_step.TrainState:
    """Restores checkpoint ``step`` into the structure of ``template`` (and the iterator)."""
    manager = manager or self.manager
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, _to_savable(template))
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
    except (ValueError, KeyError, TypeError) as e:
      raise UserError(f"the checkpoint {manager.directory}/{step} does not fit this config's "
                      f"model ({str(e).splitlines()[0][:200]}); use a new --workdir or the "
                      "run's own config") from e
    _check_shapes(restored.state, abstract, f"{manager.directory}/{step}")
    _set_iter_state(it, restored.data)
    return _from_savable(restored.state, self._impl)

  def restore_latest(self, template: train_step.TrainState,
                     it: Any) -> tuple[train_step.TrainState, int | None]:
    """Restores the latest complete checkpoint, or returns ``template`` if there is none."""
    step = self.manager.latest_step()
    if step is None:
      return template, None
    return self.restore(step, template, it), step

  def recover_from_divergence(self, state: train_step.TrainState, it: Any,
                              step: int) -> train_step.TrainState:
    """After too many consecutive non-finite steps: back to the last good checkpoint, once."""
    last = self.manager.latest_step()
    if getattr(self, "_recovered_from", None) == last or last is None:
      raise UserError(
          f"training diverged: {int(state.bad_steps)} consecutive steps with NaN/Inf losses or "
          f"gradients at step {step}" + (" again after restoring the checkpoint of step "
                                         f"{last}" if last is not None else "") +
          "; lower --config.optim.g_lr/--config.optim.d_lr or check the data")
    log.error("%d consecutive non-finite steps at step %d: restoring the checkpoint of "
                  "step %d", int(state.bad_steps), step, last)
    self._recovered_from = last
    # The data iterator is NOT rewound: the replay sees new batches rather than repeating the
    # ones that diverged; the bad-step streak starts again from zero.
    del it
    restored = self.restore(last, state, None)
    return restored.replace(bad_steps=jax.numpy.zeros_like(restored.bad_steps))

  def close(self) -> None:
    self.manager.close()
    self.best_manager.close()


def _check_shapes(restored: Any, abstract: Any, where: str) -> None:
  flat_r = jax.tree_util.tree_leaves_with_path(restored)
  flat_a = dict(jax.tree_util.tree_leaves_with_path(abstract))
  for path, leaf in flat_r:
    want = flat_a.get(path)
    if want is not None and tuple(np.shape(leaf)) != tuple(np.shape(want)):
      raise UserError(f"the checkpoint {where} does not fit this config's model: "
                      f"{jax.tree_util.keystr(path)} has shape {np.shape(leaf)}, the config "
                      f"needs {tuple(np.shape(want))}; use a new --workdir or the run's own config")
