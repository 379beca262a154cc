"""The training driver: ``train_and_evaluate(config, workdir)`` (Algorithm 1 over epochs).

Workdir layout::

  WORKDIR/config.json          the resolved config of the run (checked on resume)
  WORKDIR/train.lock           held by the running train.py: a second one on WORKDIR stops
  WORKDIR/checkpoints/N/       orbax checkpoints (latest ``train.keep_checkpoints``)
  WORKDIR/best/N/              the checkpoint with the best validation PSNR (if validating)
  WORKDIR/events.out.tfevents* TensorBoard scalars, images and the config (tensorboardX)
  WORKDIR/metrics.jsonl        one JSON object per log step / validation run; self-paced runs
                               add a ``"split": "spl"`` row per log step with the step's
                               per-sample l_i and v_i (eq. 4, 11), λ, q and the epoch
  WORKDIR/profile/             a jax.profiler trace of ``train.profile_steps`` (train.profile)
  WORKDIR/init_from.json       a warm-started run's source and the runs behind it (lineage)

Logs go through :mod:`biskip_jax.train.logs.writers` (TensorBoard, ``metrics.jsonl``, the terminal);
the progress line and the profiler window are :mod:`biskip_jax.train.logs.periodic_actions`.

Running the same command again resumes from the latest complete checkpoint: network weights,
batch statistics, both optimizer states, step, SPL state, PRNG key and the data iterator's
position are all restored, so an interrupted run continues exactly as if it had not stopped.
"""

import contextlib
import itertools
import json
import logging
import math
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from biskip_jax.config import config_checks
from biskip_jax.data import input_pipeline
from biskip_jax.errors import UserError, os_errors_as_user_errors
from biskip_jax.evaluation import eval_lib
from biskip_jax.inference import loading, shipping
from biskip_jax.nn import models, vgg_loading
from biskip_jax.objective import spl
from biskip_jax.train import checkpointing, multihost, train_step, workdir_lock
from biskip_jax.train.logs import periodic_actions, writers

log = logging.getLogger("biskip_jax")

# Seconds between the tries of a run's final checkpoint (a disk may be freed meanwhile).
FINAL_SAVE_RETRY_DELAYS = (1.0, 3.0)


def resolve_schedule(config: ml_collections.ConfigDict) -> tuple[int, int, int]:
  """Returns ``(steps_per_epoch, total_steps, total_epochs)`` resolved at run time.

  ``total_epochs`` is T of eq. 10; with ``train.num_steps > 0`` it is the number of (possibly
  partial) epochs those steps span.
  """
  t = config.train
  if t.steps_per_epoch > 0:
    steps_per_epoch = int(t.steps_per_epoch)
  else:
    steps_per_epoch = max(1, math.ceil(input_pipeline.num_train_examples(config)
                                       / t.batch_size))
  if t.num_steps > 0:
    total_steps = int(t.num_steps)
    total_epochs = max(1, math.ceil(total_steps / steps_per_epoch))
  else:
    total_steps = int(t.num_epochs) * steps_per_epoch
    total_epochs = int(t.num_epochs)
  return steps_per_epoch, total_steps, total_epochs


def save_or_check_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes ``WORKDIR/config.json``, or checks the one there first.

  See :func:`biskip_jax.config.config_checks.save_or_check_config`: a different model shape or a
  hand-edited file that disagrees with the command line is refused with one line.
  """
  config_checks.save_or_check_config(config, workdir)


class Interrupted(Exception):
  """Training stopped early on SIGTERM/SIGINT, after writing a checkpoint.

  ``train.py`` exits with status ``128 + signum`` (143 for SIGTERM, 130 for Ctrl-C), as a
  process killed by the signal would, so ``train.py && evaluate.py`` stops there.

  Attributes:
    signum: the signal received.
    step: the step of the checkpoint written.
    state: the train state at that step.
  """

  def __init__(self, signum: int, step: int, state: Any):
    super().__init__(f"stopped at step {step} by signal {signum}; run the same command to "
                     "resume")
    self.signum, self.step, self.state = signum, step, state


class _Preemption:
  """SIGTERM/SIGINT: first signal asks for a final checkpoint, the second exits at once."""

  def __init__(self):
    self.requested = False
    self.signum = 0
    self._old = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread (e.g. a notebook worker): no handler.
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    if self.requested:
      log.warning("second signal %d: exiting now without a checkpoint", signum)
      os._exit(128 + signum)
    self.requested = True
    self.signum = signum
    log.warning("signal %d: saving a checkpoint and stopping (send again to exit now)",
                    signum)

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)


def _load_vgg(config: ml_collections.ConfigDict) -> Any:
  if not config.loss.perceptual:
    return {}
  return vgg_loading.load_vgg19_params(config.loss.vgg_weights, layer=config.loss.vgg_layer)


class Validator:
  """Validation during training, through :mod:`biskip_jax.evaluation.eval_lib` like ``evaluate.py``.

  The held-out pairs (the first ``train.eval_num_images`` of ``data.eval_split``) are listed,
  checked and read once, when the Validator is made; one ``eval_lib.deblurrer_for`` Deblurrer
  serves every validation of the run with the current variables (its jitted function takes
  them as an argument, so nothing recompiles: one program per image size per run).

  Raises:
    UserError: the evaluation split holds no pairs (at construction, before any training).
  """

  def __init__(self, config: ml_collections.ConfigDict):
    self._config = config
    self._deblurrer = None
    self._examples: list[dict[str, Any]] = list(itertools.islice(
        eval_lib.examples_of(config, what=f"--config.data.eval_split={config.data.eval_split}"),
        config.train.eval_num_images))

  @property
  def names(self) -> tuple[str, ...]:
    """The keys of every result, the same in every process (processes other than 0 send
    zeros under them to :func:`multihost.from_process_0`, which needs one structure)."""
    sharp = ("sharp_input_psnr", "sharp_input_psnr_min")
    return ("psnr", "ssim", "num_images") + (sharp if self._config.train.eval_sharp_input
                                             else ())

  def __call__(self, state: train_step.TrainState) -> dict[str, float | int]:
    """PSNR/SSIM of the generator (running statistics) on the held-out pairs, and how many.

    The count goes in the logs beside the means (``step N eval: psnr=... ssim=...
    num_images=2``): a validation on a few pairs differs from ``evaluate.py`` on all of them.
    With ``train.eval_sharp_input``, also the mean and lowest PSNR with each pair's sharp
    image as the input (:func:`eval_lib.sharp_as_input`).
    """
    variables = multihost.local_copy({"params": state.gen.params,
                                      "batch_stats": state.gen.batch_stats})
    if self._deblurrer is None:
      self._deblurrer = eval_lib.deblurrer_for(self._config, variables)
    else:
      self._deblurrer.variables = jax.device_put(variables)
    kw = dict(saliency=False, progress=False, timing=False, baseline=False)
    result = eval_lib.evaluate(self._deblurrer, self._examples, None, **kw)
    out = {"psnr": result["psnr"], "ssim": result["ssim"], "num_images": result["num_images"]}
    if self._config.train.eval_sharp_input:
      sharp = eval_lib.evaluate(self._deblurrer, eval_lib.sharp_as_input(self._examples), None,
                                **kw)
      # Images given back exactly have an infinite PSNR, left out of both (as evaluate.py
      # does); inf when every image is.
      out.update(sharp_input_psnr=sharp.get("psnr", math.inf),
                 sharp_input_psnr_min=sharp.get("psnr_min", math.inf))
    return out


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       stop_at_step: int | None = None) -> train_step.TrainState:
  """Trains (or resumes) the run in ``workdir`` and returns the final state.

  Args:
    config: the run configuration.
    workdir: checkpoints, logs and config of the run.
    stop_at_step: checkpoint and return at this step although the schedule goes on (for
      time-limited jobs and resume tests); the same command later continues the run.

  Raises:
    UserError: for settings, data or a workdir that cannot work (before any compute), and
      when the final checkpoint or the logs could not be written (after training).
    Interrupted: SIGTERM/SIGINT stopped the run before its last step (a checkpoint is saved).
  """
  multihost.initialize()  # Launch settings from the environment (train.py: its flags too).
  config_checks.check_settings(config)
  workdir = os.path.abspath(workdir)
  with contextlib.ExitStack() as stack:
    error = None
    try:
      with os_errors_as_user_errors(f"--workdir {workdir}: cannot create the folder"):
        os.makedirs(workdir, exist_ok=True)
      if jax.process_index() == 0:  # One lock per run, held by process 0 (a shared workdir).
        stack.enter_context(workdir_lock.WorkdirLock(workdir))
    except UserError as e:
      error = e
    multihost.raise_first_error(error)  # A busy workdir stops every process.
    return _train(config, workdir, stop_at_step)


def warm_start(state: train_step.TrainState, config: ml_collections.ConfigDict,
               workdir: str | None = None) -> train_step.TrainState:
  """Replaces a new run's generator variables with those named by ``train.init_from``.

  The source is a shipped model (``"pretrained[:NAME]"``) or a training run / checkpoint
  path; only the generator is taken (the critic, both optimizers and the step start fresh).
  With ``workdir`` (the new run's), the runs behind the source are recorded there
  (``shipping.record_init_from``): an export of the run then counts their steps too.

  Raises:
    UserError: the source is missing or damaged, or its model differs from ``config.model``.
  """
  source = config.train.init_from
  flag = f"--config.train.init_from={source}"
  if not (loading.is_pretrained(source) or os.path.exists(source)):
    raise UserError(f"{flag} does not exist: expected a training run's workdir (or its "
                    "checkpoints/N or best folder) or pretrained[:NAME] for a shipped model")
  try:
    src_config, variables, src_step = loading.load_generator(source)
  except UserError as e:
    raise UserError(f"{flag}: {e}") from e
  as_json = lambda c: json.loads(c.model.to_json_best_effort())  # Tuples equal lists.
  # model.dtype is the inference dtype (training's is train.compute_dtype).
  diff = [k for k in config_checks.differing_fields(as_json(src_config), as_json(config))
          if k != "dtype"]
  if diff:
    raise UserError(f"{flag}: its model differs from this run's in "
                    f"{', '.join(f'model.{k}' for k in diff)}; use the same model settings")
  new_stats = variables.get("batch_stats") or state.gen.batch_stats
  models.check_shapes({"params": variables["params"], "batch_stats": new_stats},
                      {"params": state.gen.params, "batch_stats": state.gen.batch_stats},
                      f"{flag}: its generator")
  cast = lambda new, old: jax.tree.map(lambda n, o: jnp.asarray(n, o.dtype), new, old)
  if workdir is not None and jax.process_index() == 0:
    with os_errors_as_user_errors(f"--workdir {workdir}: cannot write "
                                  f"{shipping.INIT_FROM_FILE}"):
      shipping.record_init_from(workdir, source, src_step)
  log.info("generator initialised from %s", source)
  return state.replace(gen=state.gen.replace(
      params=cast(variables["params"], state.gen.params),
      batch_stats=cast(new_stats, state.gen.batch_stats)))


def _train(config: ml_collections.ConfigDict, workdir: str,
           stop_at_step: int | None) -> train_step.TrainState:
  """:func:`train_and_evaluate` once the settings are checked and the workdir is locked."""
  run = _Loop(config, workdir)
  stopped = False  # By a signal or at stop_at_step, with a checkpoint.
  signum = 0  # The signal that stopped the run (in any process).
  with _Preemption() as preempt:
    while run.step < run.total_steps and not stopped:
      run.train_and_log(next(run.train_iter))
      signum = run.agreed_signal(preempt.signum)
      stopped = bool(signum) or run.step == stop_at_step
      run.checkpoint(final=stopped or run.step == run.total_steps)
  run.close(stopped=stopped)
  if signum and run.step < run.total_steps:
    raise Interrupted(signum, run.step, run.state)
  return run.state


class _Loop:
  """One training run's state and its pieces: the body of :func:`_train`'s loop.

  Built in two parts. First what can fail on the user's settings, data or disk, in each
  process on its own: saves the config, lists the data, loads VGG19, opens the writers; one
  process's error stops them all (:func:`multihost.raise_first_error`). Then what every
  process does together: restores the latest checkpoint into the state replicated over all
  devices (or initialises, and warm starts from ``train.init_from``), compiles the step.
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config, self.workdir = config, workdir
    main = jax.process_index() == 0
    self.failures = writers.FailureLog()
    error = None
    try:
      save_or_check_config(config, workdir)
      self.steps_per_epoch, self.total_steps, total_epochs = resolve_schedule(config)
      self.vgg_params = _load_vgg(config)  # Fails fast (offline, no weights) before compiling.
      self.train_iter = input_pipeline.create(config, config.data.train_split)
      self.validate = Validator(config) if config.train.eval_every > 0 else None
      self.writer = writers.create_default_writer(workdir, self.failures, just_logging=not main)
    except UserError as e:
      error = e
    multihost.raise_first_error(error)
    self.mesh = train_step.make_mesh()
    state = train_step.create_train_state(config, self.total_steps, config.data.crop_size)
    self.ckpt = checkpointing.Checkpointer(workdir, config)
    self.state = self._restore_or_start(state)
    self.step = int(self.state.step)
    self.p_step = train_step.jit_train_step(config, total_epochs, self.mesh, self.state)
    self.end_epoch = jax.jit(spl.end_epoch)
    self.summary_images = train_step.jit_summary_images(self.mesh)
    self.lr = train_step.learning_rates(config, self.total_steps)
    self.writer.write_hparams(config)
    self.writer.write_scalars(self.step, {
        "run/steps_per_epoch": self.steps_per_epoch, "run/total_steps": self.total_steps,
        "run/total_epochs": total_epochs})
    self.progress = periodic_actions.ReportProgress(self.total_steps)
    self.profile = periodic_actions.Profile(
        os.path.join(workdir, "profile"), config.train.profile_steps,
        enabled=main and config.train.profile)
    self.best = self.ckpt.best_metric()
    self.last_save = time.monotonic()
    self.accum: dict[str, list[jax.Array]] = {}
    self.problems: list[str] = []  # Work lost: the run ends with an error naming it.

  def _restore_or_start(self, state: train_step.TrainState) -> train_step.TrainState:
    """The latest checkpoint, else ``state`` (warm started), replicated on the mesh.

    The checkpoint is read straight into the replicated layout, whatever the number of
    processes and devices that wrote it.
    """
    restored, restored_step = self.ckpt.restore_latest(
        train_step.replicate(state, self.mesh), self.train_iter)
    if restored_step is not None:
      log.info("resumed from %s at step %d", self.ckpt.directory, int(restored.step))
      return restored
    if self.config.train.init_from:
      state = warm_start(state, self.config, self.workdir)
    from clu import parameter_overview  # pylint: disable=g-import-not-at-top
    log.info("generator:\n%s", parameter_overview.get_parameter_overview(state.gen.params))
    log.info("critic:\n%s", parameter_overview.get_parameter_overview(state.critic.params))
    return train_step.replicate(state, self.mesh)

  def epoch(self) -> int:
    """The epoch t (1-based, eq. 10) of the latest step."""
    return (self.step - 1) // self.steps_per_epoch + 1

  def _every(self, period: int) -> bool:
    return period > 0 and self.step % period == 0

  def agreed_signal(self, signum: int) -> int:
    """The stopping signal, the same in every process: 0 to go on.

    With one process, a signal stops at the step it arrives in. With several, the processes
    compare their signals every ``train.stop_check_every`` steps (a host sync, which costs
    the pipelining of one step) and all stop there if any process received one: SIGTERM to
    one host stops every host at the same step, with one checkpoint.
    """
    if jax.process_count() == 1:
      return signum
    if not self._every(self.config.train.stop_check_every):
      return 0
    return multihost.max_over_processes(signum)

  def train_and_log(self, batch: dict[str, np.ndarray]) -> None:
    """One train step (Algorithm 1), then its logs, images and validation when due."""
    t = self.config.train
    self.profile(self.step, self.state)
    with jax.profiler.StepTraceAnnotation("train", step_num=self.step):
      self.state, m = self.p_step(self.state, train_step.shard_batch(batch, self.mesh),
                                  self.vgg_params)
    self.step += 1
    per_sample = [m.pop(k) for k in train_step.PER_SAMPLE_METRICS]
    if self.config.loss.self_paced and self._every(t.log_every):
      self._write_spl(*per_sample, m["lam"], m["q"])
    for k, v in m.items():
      self.accum.setdefault(k, []).append(v)
    if self._every(self.steps_per_epoch):
      self.state = self.state.replace(spl=self.end_epoch(self.state.spl))
    if self._every(t.log_every) or self.step == self.total_steps:
      self._write_train_scalars()
    if self._every(t.image_every):
      self._write_images(batch)
    if self._every(t.eval_every) or (t.eval_every > 0 and self.step == self.total_steps):
      self._validate()

  def _write_spl(self, losses_i: jax.Array, v_i: jax.Array, lam: jax.Array,
                 q: jax.Array) -> None:
    """One ``"split": "spl"`` row: the step's per-sample l_i and v_i ([N], eq. 4, 11), λ, q."""
    losses_i, v_i, lam, q = jax.device_get((losses_i, v_i, lam, q))
    self.writer.write_scalars(self.step, {
        "spl/epoch": self.epoch(), "spl/lam": float(lam), "spl/q": float(q),
        "spl/loss": losses_i, "spl/v": v_i})

  def _write_train_scalars(self) -> None:
    """The means of the metrics since the last log step, the learning rates, the progress."""
    values = {k: float(np.mean(jax.device_get(v))) for k, v in self.accum.items()}
    self.accum = {}
    values["skipped_steps"] = float(self.state.skipped_steps)
    g_lr, d_lr = self.lr  # The rates the latest step used (step - 1, 0-based).
    values["g_lr"] = float(g_lr(self.step - 1))
    if self.config.loss.adversarial:
      values["d_lr"] = float(d_lr(self.step - 1))
    self.writer.write_scalars(self.step, {f"train/{k}": v for k, v in values.items()})
    self.progress(self.step, epoch=self.epoch(), values=values)
    if int(self.state.bad_steps) >= self.config.train.max_bad_steps:
      self.state = train_step.replicate(
          self.ckpt.recover_from_divergence(self.state, self.train_iter, self.step), self.mesh)
      self.step = int(self.state.step)

  def _write_images(self, batch: dict[str, np.ndarray]) -> None:
    """Blurred | restored | sharp of the latest global batch: ``[N, H, 3W, 3]`` uint8."""
    grid = self.summary_images(self.state.gen, train_step.shard_batch(batch, self.mesh))
    grid = multihost_utils.process_allgather(grid, tiled=True)  # Every process's part.
    self.writer.write_images(self.step, {"train/blur_restored_sharp": grid})

  def _validate(self) -> None:
    """PSNR/SSIM on the held-out pairs; the best checkpoint is kept by PSNR.

    Process 0 validates and every process takes its result, so that all of them save the
    same best checkpoint (a collective write) or none.
    """
    result = (self.validate(self.state) if jax.process_index() == 0
              else dict.fromkeys(self.validate.names, 0.0))
    result = {k: float(v) for k, v in multihost.from_process_0(
        {k: np.float64(v) for k, v in result.items()}).items()}
    self.writer.write_scalars(self.step, {f"eval/{k}": v for k, v in result.items()})
    if self.best is None or result["psnr"] > self.best:
      self.best = result["psnr"]
      self.ckpt.save_best(self.step, self.state, self.train_iter, self.best)

  def checkpoint(self, final: bool) -> None:
    """Saves every ``train.checkpoint_every`` steps (and ``train.checkpoint_every_secs``
    seconds); the final one is retried, then reported."""
    secs = self.config.train.checkpoint_every_secs
    due = secs > 0 and time.monotonic() - self.last_save >= secs
    if not (self._every(self.config.train.checkpoint_every) or final or due):
      return
    self.last_save = time.monotonic()
    saved = self.ckpt.save(self.step, self.state, self.train_iter)
    for delay in FINAL_SAVE_RETRY_DELAYS if final else ():
      if saved:
        break
      log.warning("retrying the checkpoint of step %d in %g s", self.step, delay)
      time.sleep(delay)
      saved = self.ckpt.save(self.step, self.state, self.train_iter)
    if final and not saved:
      latest = self.ckpt.manager.latest_step()
      self.problems.append(
          f"the final checkpoint of step {self.step} could not be written to "
          f"{self.ckpt.directory} in {len(FINAL_SAVE_RETRY_DELAYS) + 1} tries "
          f"({self.ckpt.last_error}); the newest checkpoint is "
          f"{'step ' + str(latest) if latest is not None else 'none'}: free disk space or make "
          "the folder writable, then run the same command")

  def close(self, stopped: bool) -> None:
    """Closes checkpoints and logs; raises ``UserError`` if work was lost."""
    if stopped and not self.problems:
      log.warning("stopped at step %d after a signal; run the same command to resume",
                  self.step)
    # Stop grain's worker processes while their queues are open; left to the interpreter's exit
    # hooks they leak shared memory and sometimes raise "handle is closed" on a closed queue.
    getattr(self.train_iter, "close", lambda: None)()
    self.profile.close(self.state)
    self.ckpt.close()
    self.writer.close()
    if self.failures.failures:
      self.problems.append(
          f"the logs in {self.workdir} could not be written: "
          f"{', '.join(map(str, self.failures.failures))}; the metrics since are lost")
    if self.problems:
      raise UserError("; ".join(self.problems))
