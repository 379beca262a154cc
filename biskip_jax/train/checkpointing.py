"""Checkpoints of a run: train state + data-iterator position, with orbax.

Orbax writes each checkpoint into a temporary folder and renames it when complete, so a run
killed at any moment (SIGKILL during a save included) leaves the previous complete checkpoint
as the latest one. A failed write (full or read-only disk) is reported and training goes on
with the previous checkpoint kept. The temporary folders such a kill leaves
(``N.orbax-checkpoint-tmp*``) are removed, one line each, when the next run starts.

A checkpoint that cannot be restored is one line (which, why, and which is used instead).
Orbax's reads run on an asyncio loop that it closes at the first error; reads still in flight
then complete into the closed loop, and each reports "RuntimeError: Event loop is closed" as an
unraisable exception, seconds later: :func:`_quiet_closed_loops` drops exactly those.
"""

import json
import logging
import os
import shutil
import sys
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from biskip_jax.errors import UserError
from biskip_jax.nn import models
from biskip_jax.output_files import atomic_write
from biskip_jax.train import multihost, train_step

log = logging.getLogger("biskip_jax")
_TMP_MARK = ".orbax-checkpoint-tmp"  # In the names of orbax's unfinished checkpoint folders.


def _is_closed_loop_noise(unraisable: Any) -> bool:
  e = unraisable.exc_value
  return isinstance(e, RuntimeError) and str(e) == "Event loop is closed"


def _quiet_closed_loops() -> None:
  """Drops "Event loop is closed" unraisable errors from now on (all else is still printed).

  Called once a restore has failed: the reads orbax left in flight finish later, when this
  module's code has long returned, so the filter stays for the rest of the process.
  """
  previous = sys.unraisablehook
  if getattr(previous, "_biskip_quiet", False):
    return

  def hook(unraisable):
    if not _is_closed_loop_noise(unraisable):
      previous(unraisable)

  hook._biskip_quiet = True  # pylint: disable=protected-access
  sys.unraisablehook = hook


def remove_unfinished(directory: str) -> list[str]:
  """Removes the temporary folders of saves that never finished (a kill during a save).

  Only for the one process that writes ``directory`` (training holds the workdir's lock): a
  save in progress has such a folder too.

  Returns:
    The folders removed (each also logged).
  """
  try:
    names = sorted(n for n in os.listdir(directory) if _TMP_MARK in n)
  except OSError:
    return []
  removed = []
  for name in names:
    path = os.path.join(directory, name)
    try:
      shutil.rmtree(path)
    except OSError as e:
      log.warning("cannot remove %s, a checkpoint whose save never finished (%s): remove it by "
                  "hand", path, e.strerror or e)
      continue
    log.warning("removed %s: a checkpoint whose save never finished (the run was stopped "
                "during it)", path)
    removed.append(path)
  return removed


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
    if jax.process_index() == 0:
      for d in (self.directory, self.best_directory):
        remove_unfinished(d)
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
    """Saves a checkpoint; on an I/O error logs it and returns False (training goes on).

    Every process of a multi-process run calls it at the same step and gets the same answer:
    a save that failed in one process failed for all, so that they retry or give up together.
    """
    manager = manager or self.manager
    if step in (manager.all_steps() or []):
      return True
    failed = False
    try:
      manager.save(step, args=self._args(state, it), force=True)
      manager.wait_until_finished()
    except (OSError, ValueError, RuntimeError) as e:
      _quiet_closed_loops()
      self.last_error, failed = e, True
      log.error("checkpoint at step %d could not be written to %s (%s); training "
                    "continues and the previous checkpoint is kept", step, manager.directory, e)
    if multihost.max_over_processes(failed) and not failed:
      self.last_error = RuntimeError("the write failed in another process")
      failed = True
    return not failed

  def save_best(self, step: int, state: train_step.TrainState, it: Any, psnr: float) -> None:
    """Keeps ``state`` as the best checkpoint by validation PSNR."""
    if self.save(step, state, it, manager=self.best_manager) and jax.process_index() == 0:
      # Written aside and renamed: a full disk or a kill never leaves a truncated best.json
      # (which would stop every resume).
      try:
        with atomic_write(self._best_file, "w") as f:
          json.dump({"step": step, "psnr": psnr}, f)
      except OSError as e:
        log.error("%s could not be written (%s); training continues", self._best_file, e)

  def best_metric(self) -> float | None:
    if os.path.exists(self._best_file):
      with open(self._best_file) as f:
        return float(json.load(f)["psnr"])
    return None

  def restore(self, step: int, template: train_step.TrainState, it: Any,
              manager: ocp.CheckpointManager | None = None) -> train_step.TrainState:
    """Restores checkpoint ``step`` into the structure of ``template`` (and the iterator).

    Raises:
      UserError: the checkpoint is damaged or does not fit ``template``.
    """
    manager = manager or self.manager
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, _to_savable(template))
    where = f"{manager.directory}/{step}"
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
    except Exception as e:  # pylint: disable=broad-except  # tensorstore raises Exception.
      _quiet_closed_loops()
      raise UserError(f"the checkpoint {where} cannot be restored ({reason(e)})") from e
    models.check_shapes(restored.state, abstract, f"the checkpoint {where}")
    _set_iter_state(it, restored.data)
    return _from_savable(restored.state, self._impl)

  def restore_latest(self, template: train_step.TrainState,
                     it: Any) -> tuple[train_step.TrainState, int | None]:
    """Restores the newest checkpoint that restores, or returns ``template`` if there is none.

    Newer checkpoints that cannot be restored (damaged files) are skipped with a warning and
    renamed ``N.damaged``, so that the resumed run can write step N again.

    Raises:
      UserError: there are checkpoints, and none of them restores.
    """
    state, step, failures = _newest_that_restores(
        self.manager.all_steps(), lambda s: self.restore(s, template, it))
    if step is None:
      if failures:
        raise UserError(_none_restores(self.directory, failures))
      return template, None
    for bad, why in failures:
      kept = self._set_aside(bad)
      log.warning("%s; resuming from the checkpoint of step %d instead%s", why, step,
                  f" (the damaged one is kept as {kept})" if kept else "")
    if failures and jax.process_count() > 1:  # Every host sees process 0's renames.
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices("biskip_jax.train.checkpointing.set_aside")
      self.manager.reload()
    return state, step

  def _set_aside(self, step: int) -> str | None:
    """Renames a damaged checkpoint ``N`` to ``N.damaged`` (orbax then ignores it)."""
    if jax.process_index() != 0:
      return None
    src = os.path.join(self.directory, str(step))
    dst = f"{src}.damaged"
    k = 1
    while os.path.exists(dst):
      dst, k = f"{src}.damaged{k}", k + 1
    try:
      os.rename(src, dst)
    except OSError as e:
      log.error("cannot rename the damaged checkpoint %s (%s): remove it by hand, or the run "
                "cannot save step %d again", src, e.strerror or e, step)
      return None
    self.manager.reload()
    return dst

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


def reason(e: BaseException) -> str:
  """The first line of an exception's root cause (tensorstore's messages run to pages)."""
  while e.__cause__ is not None:  # Orbax wraps tensorstore's precise error in generic ones.
    e = e.__cause__
  line = next((l.strip() for l in str(e).splitlines() if l.strip()), type(e).__name__)
  return line if len(line) <= 300 else line[:297] + "..."


def _newest_that_restores(steps: Any, restore: Any) -> tuple[Any, int | None,
                                                            list[tuple[int, str]]]:
  """Tries ``restore(step)`` from the newest step down until one does not raise UserError.

  Returns:
    ``(result, step, failures)``: ``step`` is None when none restored; ``failures`` are the
    ``(step, message)`` of the newer steps that did not, newest first.
  """
  failures = []
  for step in sorted(steps, reverse=True):
    try:
      return restore(step), step, failures
    except UserError as e:
      failures.append((step, str(e)))
  return None, None, failures


def _none_restores(directory: str, failures: list[tuple[int, str]]) -> str:
  steps = ", ".join(str(s) for s, _ in failures)
  return (f"no checkpoint in {directory} can be restored (steps {steps}); the newest: "
          f"{failures[0][1]}. Is the run's config.json edited, or are the files damaged?")


def restore_generator_variables(directory: str, config: ml_collections.ConfigDict,
                                step: int | None = None) -> tuple[dict[str, Any], int]:
  """Restores only the generator's variables of a checkpoint folder, for
  :func:`biskip_jax.inference.loading.load_generator` (the loader every program uses).

  Only the generator's arrays are read (orbax partial restore): damaged critic or optimizer
  arrays do not matter. Without ``step``, the newest checkpoint in ``directory`` that restores
  is used; newer ones that do not are skipped with a warning (nothing is renamed).

  Args:
    directory: a ``checkpoints`` or ``best`` folder of a training workdir.
    config: the run's config (the generator's shapes).
    step: a checkpoint to restore; None for the newest that restores.

  Returns:
    ``({"params", "batch_stats"}, step)``, host arrays.

  Raises:
    UserError: no (restorable) checkpoint, or one that does not fit ``config``.
  """
  template = jax.eval_shape(lambda: train_step.create_train_state(config, 1))
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = {"state": {"gen": jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
      {"params": template.gen.params, "batch_stats": template.gen.batch_stats})}}
  args = ocp.args.Composite(state=ocp.args.PyTreeRestore(
      item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
      partial_restore=True))
  manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
      create=False, enable_async_checkpointing=False))

  def restore(s: int) -> dict[str, Any]:
    where = f"{directory}/{s}"
    try:
      gen = manager.restore(s, args=args).state["state"]["gen"]
    except Exception as e:  # pylint: disable=broad-except  # tensorstore raises Exception.
      _quiet_closed_loops()
      raise UserError(f"the checkpoint {where} cannot be restored ({reason(e)})") from e
    models.check_shapes(gen, abstract["state"]["gen"], f"the checkpoint {where}")
    return gen

  try:
    if step is not None:  # A named checkpoint: its own error, no fallback.
      return restore(step), step
    gen, found, failures = _newest_that_restores(manager.all_steps(), restore)
    if found is None:
      raise UserError(_none_restores(directory, failures) if failures else
                      f"no complete checkpoint in {directory}: train first, or pass "
                      "--ckpt=WORKDIR/checkpoints/N")
    for _, why in failures:
      log.warning("%s; using the checkpoint of step %d instead", why, found)
    return gen, found
  finally:
    manager.close()
