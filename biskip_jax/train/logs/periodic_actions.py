"""Work the training loop does now and then, in the shape of ``clu.periodic_actions``.

(clu's own module imports TensorFlow, which this project does not depend on.)

* :class:`ReportProgress`: the terminal's progress line at each log step -- step, epoch,
  steps/s and ETA since the previous line, the loss terms, v, λ and q;
* :class:`Profile`: a ``jax.profiler`` trace of steps ``[first, last)`` into a folder
  (``WORKDIR/profile``, TensorBoard's profile plugin), behind ``config.train.profile``.
"""

import logging
import os
import time
from typing import Any, Callable, Mapping, Sequence

import jax

log = logging.getLogger("biskip_jax")

# The loss terms shown in the progress line, in this order (when the step reports them).
PROGRESS_TERMS = ("g_loss", "content", "pixel", "fft", "feature", "g_adv", "d_loss", "gp",
                  "wasserstein")


class ReportProgress:
  """Logs ``step S/T epoch E | R steps/s ETA hh:mm:ss | terms | v=.. lam=.. q=..``.

  The rate is measured between two calls: the first line, whose interval holds the step's
  compilation, shows ``? steps/s ETA ?``.

  Args:
    total_steps: steps of the whole run (for the ETA).
    terms: the scalars shown as ``name=value``.
    clock: seconds (``time.time``; tests pass a fake clock).
  """

  def __init__(self, total_steps: int, terms: Sequence[str] = PROGRESS_TERMS,
               clock: Callable[[], float] = time.time):
    self.total_steps = total_steps
    self._terms = tuple(terms)
    self._clock = clock
    self._last: tuple[float, int | None] = (clock(), None)

  def rate_and_eta(self, step: int) -> tuple[float, float]:
    """Steps/s since the previous call and seconds left (NaN on the first call)."""
    now = self._clock()
    t0, s0 = self._last
    rate = (step - s0) / max(now - t0, 1e-9) if s0 is not None else float("nan")
    self._last = (now, step)
    eta = (self.total_steps - step) / rate if rate == rate and rate > 0 else float("nan")
    return rate, eta

  def __call__(self, step: int, *, epoch: int, values: Mapping[str, float]) -> None:
    rate, eta = self.rate_and_eta(step)
    rate_s = f"{rate:.2f}" if rate == rate else "?"
    eta_s = time.strftime("%H:%M:%S", time.gmtime(eta)) if eta == eta else "?"
    terms = " ".join(f"{k}={values[k]:.4g}" for k in self._terms if k in values)
    log.info("step %d/%d epoch %d | %s steps/s ETA %s | %s | v=%.3f lam=%.4g q=%.3f%s",
             step, self.total_steps, epoch, rate_s, eta_s, terms, values.get("v_mean", 1),
             values.get("lam", float("inf")), values.get("q", float("nan")),
             f" skipped={values['skipped_steps']:.0f}" if values.get("skipped_steps") else "")


class Profile:
  """Traces the steps ``[first, last)`` of a run with ``jax.profiler`` into ``logdir``.

  Call it at the top of every step with the number of steps done (the index of the step
  about to run) and the latest outputs; :meth:`close` at the end. A run resumed inside or
  after the window is not traced.

  Args:
    logdir: the trace folder (``WORKDIR/profile``; open it with TensorBoard's profile plugin).
    window: ``(first, last)`` steps, 0-based; ``last <= first`` traces nothing.
    enabled: False makes every call a no-op (``config.train.profile``; process 0 only).
  """

  def __init__(self, logdir: str, window: Sequence[int], enabled: bool = True):
    self.logdir = logdir
    self.first, self.last = (int(x) for x in window)
    self.enabled = enabled and self.last > self.first
    self.tracing = False

  def __call__(self, step: int, outputs: Any = None) -> None:
    if not self.enabled:
      return
    if self.tracing and step >= self.last:
      self._stop(outputs)
    elif not self.tracing and step == self.first:
      os.makedirs(self.logdir, exist_ok=True)
      jax.profiler.start_trace(self.logdir)
      self.tracing = True
      log.info("profiling steps %d to %d into %s", self.first, self.last - 1, self.logdir)

  def _stop(self, outputs: Any) -> None:
    jax.block_until_ready(outputs)  # The traced steps' device work is in the trace.
    jax.profiler.stop_trace()
    self.tracing = False
    log.info("profile written to %s", self.logdir)

  def close(self, outputs: Any = None) -> None:
    """Ends a trace still running (a run that stopped inside the window)."""
    if self.tracing:
      self._stop(outputs)
