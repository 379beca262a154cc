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

Running the same command again resumes from the latest complete checkpoint: network weights,
batch statistics, both optimizer states, step, SPL state, PRNG key and the data iterator's
position are all restored, so an interrupted run continues exactly as if it had not stopped.
"""

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

from biskip_jax import (
  checkpointing,
  config_checks,
  input_pipeline,
  log_files,
  spl,
  train_step,
  vgg,
  workdir_lock,
)
from biskip_jax.errors import UserError, os_errors_as_user_errors

log = logging.getLogger("biskip_jax")

# Seconds between the tries of a run's final checkpoint (a disk may be freed meanwhile).
FINAL_SAVE_RETRY_DELAYS = (1.0, 3.0)


def maybe_initialize_distributed() -> None:
  """Calls ``jax.distributed.initialize()`` when a multi-host environment is detected.

  Recognised: ``JAX_COORDINATOR_ADDRESS`` (with ``JAX_NUM_PROCESSES``/``JAX_PROCESS_ID``),
  SLURM (``SLURM_NTASKS`` > 1), Open MPI (``OMPI_COMM_WORLD_SIZE`` > 1) and Cloud TPU pods
  (``TPU_WORKER_HOSTNAMES`` listing several hosts).
  """
  env = os.environ
  multi = ("JAX_COORDINATOR_ADDRESS" in env
           or int(env.get("SLURM_NTASKS", "1")) > 1
           or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
           or "," in env.get("TPU_WORKER_HOSTNAMES", ""))
  if multi and not jax.distributed.is_initialized():
    jax.distributed.initialize()
    log.info("jax.distributed initialised: process %d of %d", jax.process_index(),
                 jax.process_count())


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


def check_settings(config: ml_collections.ConfigDict) -> None:
  """Stops before any compute on settings that cannot work, naming the flag."""
  config_checks.check_ranges(config)
  n_dev = jax.device_count()
  b = config.train.batch_size
  if b < 1 or b % n_dev:
    raise UserError(f"--config.train.batch_size={b} must be a positive multiple of the "
                    f"{n_dev} devices the batch is split over")
  if config.train.n_critic < 1 and config.loss.adversarial:
    raise UserError("--config.train.n_critic must be >= 1 for adversarial schemes")
  if config.loss.pixel not in ("l1", "l2", "none"):
    raise UserError(f"--config.loss.pixel={config.loss.pixel!r}: expected l1, l2 or none")
  if config.loss.vgg_input not in ("imagenet", "raw"):
    raise UserError(f"--config.loss.vgg_input={config.loss.vgg_input!r}: expected imagenet "
                    "or raw")
  if config.train.get("compute_dtype", "float32") not in train_step.COMPUTE_DTYPES:
    raise UserError(f"--config.train.compute_dtype={config.train.compute_dtype!r}: expected "
                    f"one of {', '.join(train_step.COMPUTE_DTYPES)}")
  if config.critic.norm not in ("instance", "none"):
    raise UserError(f"--config.critic.norm={config.critic.norm!r}: expected instance or none")
  from biskip_jax import models  # pylint: disable=g-import-not-at-top
  for field, value, allowed in (("model.variant", config.model.variant, models.VARIANTS),
                                ("model.norm", config.model.norm, models.NORMS),
                                ("model.pool", config.model.pool, models.POOLS)):
    if value not in allowed:
      raise UserError(f"--config.{field}={value!r}: expected one of {', '.join(allowed)}")


def save_or_check_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes ``WORKDIR/config.json``, or checks the one there first.

  See :func:`biskip_jax.config_checks.save_or_check_config`: a different model shape or a
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
  return vgg.load_vgg19_params(config.loss.vgg_weights, layer=config.loss.vgg_layer)


class _Logger:
  """Progress lines, metrics.jsonl and TensorBoard (process 0 only).

  A write that fails (full or read-only disk) does not stop training: the first failure is
  logged and kept in ``failures``, later writes to that file are dropped, and the run ends
  with an error saying so (:func:`train_and_evaluate`).
  """

  def __init__(self, workdir: str, config: ml_collections.ConfigDict, total_steps: int):
    self.enabled = jax.process_index() == 0
    self.total_steps = total_steps
    self.failures: list[log_files.FailedWrite] = []
    self._step = 0
    self._last = (time.time(), None)
    if not self.enabled:
      return
    import tensorboardX  # pylint: disable=g-import-not-at-top
    with os_errors_as_user_errors(f"--workdir {workdir}: cannot write the logs"):
      self.writer = tensorboardX.SummaryWriter(workdir)
      log_files.guard_tensorboard(self.writer, self._failed("TensorBoard events"))
      self.writer.add_text("config", "```\n" + str(config) + "\n```", 0)
      self.jsonl = log_files.JsonLines(os.path.join(workdir, "metrics.jsonl"),
                                       self._failed("metrics.jsonl"))

  def _failed(self, what: str):
    def on_error(e: OSError) -> None:
      failure = log_files.FailedWrite(what, self._step, e)
      self.failures.append(failure)
      log.error("cannot write %s; training goes on, and the run will end with an error",
                failure)
    return on_error

  def scalars(self, step: int, values: dict[str, float], prefix: str = "train") -> None:
    if not self.enabled:
      return
    self._step = step
    for k, v in values.items():
      if math.isfinite(v):  # λ is ∞ in the first epoch: metrics.jsonl keeps it, TB can't.
        self.writer.add_scalar(f"{prefix}/{k}", v, step)
    self.jsonl.write(json.dumps({"step": step, "split": prefix, **values}))

  def spl(self, step: int, epoch: int, losses: np.ndarray, weights: np.ndarray, lam: float,
          q: float) -> None:
    """One ``"split": "spl"`` row: a step's per-sample l_i and v_i ([N] each), λ and q."""
    if not self.enabled:
      return
    self._step = step
    self.writer.add_histogram("spl/v", weights, step)
    row = {"step": step, "split": "spl", "epoch": epoch, "lam": lam, "q": q,
           "loss": [float(x) for x in losses], "v": [float(x) for x in weights]}
    self.jsonl.write(json.dumps(row))

  def progress(self, step: int, epoch: int, values: dict[str, float]) -> None:
    now = time.time()
    t0, s0 = self._last
    rate = (step - s0) / max(now - t0, 1e-9) if s0 is not None else float("nan")
    self._last = (now, step)
    eta = (self.total_steps - step) / rate if rate == rate and rate > 0 else float("nan")
    eta_s = time.strftime("%H:%M:%S", time.gmtime(eta)) if eta == eta else "?"
    keys = ("g_loss", "content", "pixel", "feature", "g_adv", "d_loss", "gp", "wasserstein")
    terms = " ".join(f"{k}={values[k]:.4g}" for k in keys if k in values)
    log.info("step %d/%d epoch %d | %.2f steps/s ETA %s | %s | v=%.3f lam=%.4g q=%.3f%s",
                 step, self.total_steps, epoch, rate, eta_s, terms, values.get("v_mean", 1),
                 values.get("lam", float("inf")), values.get("q", float("nan")),
                 f" skipped={values['skipped_steps']:.0f}" if values.get("skipped_steps")
                 else "")

  def images(self, step: int, blur: np.ndarray, restored: np.ndarray,
             sharp: np.ndarray) -> None:
    if not self.enabled:
      return
    grid = np.concatenate([blur, restored, sharp], axis=2)  # [N, H, 3W, 3]
    self.writer.add_images("train/blur_restored_sharp", grid, step, dataformats="NHWC")

  def close(self) -> None:
    if self.enabled:
      self.writer.close()
      self.jsonl.close()


def _restore_image(restored: jax.Array) -> np.ndarray:
  return np.asarray(jnp.clip(jnp.round((restored + 1.0) * 127.5), 0, 255).astype(jnp.uint8))


class Validator:
  """Validation during training: one compiled generator and one list of pairs per run.

  The held-out pairs (the first ``train.eval_num_images`` of ``data.eval_split``) are read
  once, and one :class:`inference.Deblurrer` serves every validation of the run with the
  current variables (its jitted function takes them as an argument, so nothing recompiles).
  """

  def __init__(self, config: ml_collections.ConfigDict):
    self._config = config
    self._deblurrer = None
    self._examples: list[dict[str, Any]] | None = None

  def __call__(self, state: train_step.TrainState) -> dict[str, float]:
    """PSNR/SSIM of the generator (running statistics) on the held-out pairs."""
    from biskip_jax import inference, metrics  # pylint: disable=g-import-not-at-top
    if self._examples is None:
      self._examples = list(itertools.islice(
          input_pipeline.create(self._config, self._config.data.eval_split),
          self._config.train.eval_num_images))
    variables = {"params": state.gen.params, "batch_stats": state.gen.batch_stats}
    if self._deblurrer is None:
      self._deblurrer = inference.Deblurrer(self._config, variables)
    else:
      self._deblurrer.variables = jax.device_put(variables)
    if not self._examples:
      return {}
    outs = [self._deblurrer(ex["blur"]) for ex in self._examples]
    return {"psnr": float(np.mean([metrics.psnr(o, ex["sharp"])
                                   for o, ex in zip(outs, self._examples)])),
            "ssim": float(np.mean([metrics.ssim(o, ex["sharp"])
                                   for o, ex in zip(outs, self._examples)]))}


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
  maybe_initialize_distributed()
  check_settings(config)
  workdir = os.path.abspath(workdir)
  with os_errors_as_user_errors(f"--workdir {workdir}: cannot create the folder"):
    os.makedirs(workdir, exist_ok=True)
  if jax.process_index() != 0:  # One lock per run, held by process 0 (a shared workdir).
    return _train(config, workdir, stop_at_step)
  with workdir_lock.WorkdirLock(workdir):
    return _train(config, workdir, stop_at_step)


def warm_start(state: train_step.TrainState,
               config: ml_collections.ConfigDict) -> train_step.TrainState:
  """Replaces a new run's generator variables with those named by ``train.init_from``.

  The source is a shipped model (``"pretrained[:NAME]"``) or a training run / checkpoint
  path; only the generator is taken (the critic, both optimizers and the step start fresh).

  Raises:
    UserError: the source is missing or damaged, or its model differs from ``config.model``.
  """
  from biskip_jax import inference  # pylint: disable=g-import-not-at-top
  source = config.train.init_from
  flag = f"--config.train.init_from={source}"
  try:
    src_config, variables = inference.load_generator(source)[:2]
  except UserError as e:
    raise UserError(f"{flag}: {e}") from e
  as_json = lambda v: json.loads(json.dumps(v))  # Tuples and lists compare equal.
  diff = sorted(k for k in set(config.model) | set(src_config.model)
                if k != "dtype" and as_json(config.model.get(k)) != as_json(
                    src_config.model.get(k)))
  if diff:
    raise UserError(f"{flag}: its model differs from this run's in "
                    f"{', '.join(f'model.{k}' for k in diff)}; use the same model settings")
  new_stats = variables.get("batch_stats") or state.gen.batch_stats
  shapes = lambda tree: jax.tree.map(jnp.shape, tree)
  if (shapes(variables["params"]) != shapes(state.gen.params)
      or shapes(new_stats) != shapes(state.gen.batch_stats)):
    raise UserError(f"{flag}: its generator's arrays do not fit this run's model")
  cast = lambda new, old: jax.tree.map(lambda n, o: jnp.asarray(n, o.dtype), new, old)
  log.info("generator initialised from %s", source)
  return state.replace(gen=state.gen.replace(
      params=cast(variables["params"], state.gen.params),
      batch_stats=cast(new_stats, state.gen.batch_stats)))


def _train(config: ml_collections.ConfigDict, workdir: str,
           stop_at_step: int | None) -> train_step.TrainState:
  """:func:`train_and_evaluate` once the settings are checked and the workdir is locked."""
  save_or_check_config(config, workdir)
  steps_per_epoch, total_steps, total_epochs = resolve_schedule(config)
  vgg_params = _load_vgg(config)  # Fails fast (offline, no weights) before compiling.

  mesh = train_step.make_mesh()
  state = train_step.create_train_state(config, total_steps, config.data.crop_size)
  train_iter = input_pipeline.create(config, config.data.train_split)
  ckpt = checkpointing.Checkpointer(workdir, config)
  state, restored_step = ckpt.restore_latest(state, train_iter)
  step = int(state.step)
  if restored_step is not None:
    log.info("resumed from %s at step %d", ckpt.directory, step)
  else:
    if config.train.get("init_from", ""):
      state = warm_start(state, config)
    from clu import parameter_overview  # pylint: disable=g-import-not-at-top
    log.info("generator:\n%s", parameter_overview.get_parameter_overview(state.gen.params))
    log.info("critic:\n%s", parameter_overview.get_parameter_overview(state.critic.params))

  state = train_step.replicate(state, mesh)
  p_step = train_step.jit_train_step(config, total_epochs, mesh, state)
  end_epoch = jax.jit(spl.end_epoch)
  logger = _Logger(workdir, config, total_steps)
  logger.scalars(step, {"steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
                        "total_epochs": total_epochs}, prefix="run")
  accum: dict[str, list[jax.Array]] = {}
  t_cfg = config.train
  validate = Validator(config)
  best = ckpt.best_metric()
  problems: list[str] = []  # Work lost: the run ends with an error naming it.
  with _Preemption() as preempt:
    while step < total_steps:
      batch = next(train_iter)
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        device_batch = train_step.shard_batch(batch, mesh)
        state, m = p_step(state, device_batch, vgg_params)
      step += 1
      losses_i, v_i = (m.pop(k) for k in train_step.PER_SAMPLE_METRICS)
      if config.loss.self_paced and step % t_cfg.log_every == 0:
        losses_i, v_i, lam, q = jax.device_get((losses_i, v_i, m["lam"], m["q"]))
        logger.spl(step, (step - 1) // steps_per_epoch + 1, losses_i, v_i, float(lam), float(q))
      for k, v in m.items():
        accum.setdefault(k, []).append(v)
      if step % steps_per_epoch == 0:
        state = state.replace(spl=end_epoch(state.spl))
      if step % t_cfg.log_every == 0 or step == total_steps:
        values = {k: float(np.mean(jax.device_get(v))) for k, v in accum.items()}
        values["skipped_steps"] = float(state.skipped_steps)
        accum = {}
        logger.scalars(step, values)
        logger.progress(step, (step - 1) // steps_per_epoch + 1, values)
        if int(state.bad_steps) >= t_cfg.max_bad_steps:
          state = train_step.replicate(
              ckpt.recover_from_divergence(state, train_iter, step), mesh)
          step = int(state.step)
      if t_cfg.image_every > 0 and step % t_cfg.image_every == 0:
        restored = state.gen.apply_fn({"params": state.gen.params,
                                       "batch_stats": state.gen.batch_stats},
                                      train_step.to_model_range(jnp.asarray(batch["blur"])))
        logger.images(step, batch["blur"], _restore_image(restored), batch["sharp"])
      if t_cfg.eval_every > 0 and (step % t_cfg.eval_every == 0 or step == total_steps):
        result = validate(state)
        if result:
          logger.scalars(step, result, prefix="eval")
          log.info("step %d validation: PSNR %.2f dB, SSIM %.4f", step, result["psnr"],
                       result["ssim"])
          if best is None or result["psnr"] > best:
            best = result["psnr"]
            ckpt.save_best(step, state, train_iter, best)
      stopping = preempt.requested or step == stop_at_step
      final = stopping or step == total_steps
      if step % t_cfg.checkpoint_every == 0 or final:
        saved = ckpt.save(step, state, train_iter)
        for delay in FINAL_SAVE_RETRY_DELAYS if final else ():
          if saved:
            break
          log.warning("retrying the checkpoint of step %d in %g s", step, delay)
          time.sleep(delay)
          saved = ckpt.save(step, state, train_iter)
        if final and not saved:
          latest = ckpt.manager.latest_step()
          problems.append(
              f"the final checkpoint of step {step} could not be written to {ckpt.directory} "
              f"in {len(FINAL_SAVE_RETRY_DELAYS) + 1} tries ({ckpt.last_error}); the newest "
              f"checkpoint is {'step ' + str(latest) if latest is not None else 'none'}: free "
              "disk space or make the folder writable, then run the same command")
      if stopping:
        if not problems:
          log.warning("stopped at step %d after a signal; run the same command to resume",
                      step)
        break
  ckpt.close()
  logger.close()
  if logger.failures:
    problems.append(f"the logs in {workdir} could not be written: "
                    f"{', '.join(map(str, logger.failures))}; the metrics since are lost")
  if problems:
    raise UserError("; ".join(problems))
  if preempt.requested and step < total_steps:
    raise Interrupted(preempt.signum, step, state)
  return state
