"""Metric writers in clu's shape (``clu.metric_writers``, which needs TensorFlow: not used).

Every writer has one interface -- ``write_scalars(step, scalars)``, ``write_images(step,
images)``, ``write_hparams(hparams)``, ``flush()``, ``close()`` -- and :class:`MultiWriter`
sends each call to several:

* :class:`TensorBoardWriter`: ``WORKDIR/events.out.tfevents*`` (tensorboardX);
* :class:`JsonLinesWriter`: ``WORKDIR/metrics.jsonl``, one JSON object per split and call,
  ``{"step": N, "split": "train", "g_loss": ..., ...}``; :func:`read_metrics` reads it back;
* :class:`LoggingWriter`: the terminal (the ``biskip_jax`` logger).

Scalar names are ``"SPLIT/NAME"`` (``train/g_loss``, ``eval/psnr``, ``spl/v``). A value is a
number or, for per-sample values (the self-paced ``spl/loss`` and ``spl/v``, eq. 4 and 11), a
vector ``[N]``: TensorBoard shows it as a histogram, ``metrics.jsonl`` as a list.

A log that cannot be written (full or read-only disk) does not stop training: the writer
reports its first failure (a :class:`~biskip_jax.train.logs.log_files.FailedWrite`) to
``on_failure`` and drops its later writes; the training driver ends the run with an error naming it.
"""

import collections
import json
import logging
import math
import os
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from biskip_jax.errors import UserError, os_errors_as_user_errors
from biskip_jax.train.logs import log_files

log = logging.getLogger("biskip_jax")

METRICS_FILE = "metrics.jsonl"  # The JSON-lines log in a training workdir.

Scalars = Mapping[str, Any]  # "SPLIT/NAME" -> float, or an [N] vector of per-sample values.
OnFailure = Callable[[log_files.FailedWrite], None]


def _by_split(scalars: Scalars) -> dict[str, dict[str, Any]]:
  """``{"train/a": 1, "eval/b": 2}`` -> ``{"train": {"a": 1}, "eval": {"b": 2}}`` (in order)."""
  out: dict[str, dict[str, Any]] = {}
  for key, value in scalars.items():
    split, _, name = key.rpartition("/")
    out.setdefault(split, {})[name] = value
  return out


def _is_vector(value: Any) -> bool:
  return np.ndim(value) > 0


class MetricWriter:
  """The interface of every writer; a call that a writer has no use for does nothing."""

  def write_scalars(self, step: int, scalars: Scalars) -> None:
    """Writes ``{"SPLIT/NAME": value}`` at ``step`` (values: numbers or [N] vectors)."""

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """Writes ``{"SPLIT/NAME": uint8 [N, H, W, 3]}`` at ``step``."""

  def write_hparams(self, hparams: Any) -> None:
    """Writes the run's configuration (a ``ConfigDict`` or a mapping)."""

  def flush(self) -> None:
    """Writes out what is buffered."""

  def close(self) -> None:
    """Flushes and releases the files."""


class TensorBoardWriter(MetricWriter):
  """TensorBoard event files in ``logdir`` (tensorboardX: no TensorFlow).

  Non-finite scalars are left out (λ is ∞ in the first epoch: TensorBoard cannot show it);
  vectors are written as histograms. Event files are written by a background thread: a
  failure there is reported with the step of the latest write.
  """

  def __init__(self, logdir: str, on_failure: OnFailure):
    import tensorboardX  # pylint: disable=g-import-not-at-top
    self._step = 0
    self._on_failure = on_failure
    self._writer = tensorboardX.SummaryWriter(logdir)
    log_files.guard_tensorboard(self._writer, self._failed)

  def _failed(self, error: OSError) -> None:
    self._on_failure(log_files.FailedWrite("TensorBoard events", self._step, error))

  def write_scalars(self, step: int, scalars: Scalars) -> None:
    self._step = step
    for key, value in scalars.items():
      if _is_vector(value):
        self._writer.add_histogram(key, np.asarray(value), step)
      elif math.isfinite(value):
        self._writer.add_scalar(key, value, step)

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    self._step = step
    for key, value in images.items():
      self._writer.add_images(key, value, step, dataformats="NHWC")

  def write_hparams(self, hparams: Any) -> None:
    self._writer.add_text("config", "```\n" + str(hparams) + "\n```", 0)

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


class JsonLinesWriter(MetricWriter):
  """``metrics.jsonl``: per call, one line per split, ``{"step", "split", NAME: value...}``.

  Vectors become lists; ∞ and NaN are written as JSON's ``Infinity``/``NaN`` (Python's
  ``json`` reads them back). Lines are whole even on a full disk (:class:`log_files.JsonLines`).
  """

  def __init__(self, path: str, on_failure: OnFailure):
    self._step = 0
    self._on_failure = on_failure
    self._what = os.path.basename(path)
    self._lines = log_files.JsonLines(path, self._failed)

  def _failed(self, error: OSError) -> None:
    self._on_failure(log_files.FailedWrite(self._what, self._step, error))

  def write_scalars(self, step: int, scalars: Scalars) -> None:
    self._step = step
    for split, values in _by_split(scalars).items():
      row = {k: [float(x) for x in np.asarray(v).reshape(-1)] if _is_vector(v)
             else v.item() if isinstance(v, np.generic) else v for k, v in values.items()}
      self._lines.write(json.dumps({"step": step, "split": split, **row}))

  def close(self) -> None:
    self._lines.close()


class LoggingWriter(MetricWriter):
  """The terminal: one line per split and call, ``step N eval: psnr=26.06 ssim=0.7257``.

  Splits in ``skip`` are not shown: the training loop's ``train`` scalars are in the progress
  line (:class:`biskip_jax.train.logs.periodic_actions.ReportProgress`), and per-sample ``spl`` rows
  are too long for a terminal.
  """

  def __init__(self, skip: Sequence[str] = ("train", "spl")):
    self._skip = tuple(skip)

  def write_scalars(self, step: int, scalars: Scalars) -> None:
    for split, values in _by_split(scalars).items():
      if split in self._skip:
        continue
      shown = " ".join(f"{k}={v}" if isinstance(v, (int, np.integer)) else f"{k}={v:.4g}"
                       for k, v in values.items() if not _is_vector(v))
      log.info("step %d %s: %s", step, split, shown)


class MultiWriter(MetricWriter):
  """Sends every call to each of ``writers``."""

  def __init__(self, writers: Sequence[MetricWriter]):
    self.writers = list(writers)

  def write_scalars(self, step: int, scalars: Scalars) -> None:
    for w in self.writers:
      w.write_scalars(step, scalars)

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    for w in self.writers:
      w.write_images(step, images)

  def write_hparams(self, hparams: Any) -> None:
    for w in self.writers:
      w.write_hparams(hparams)

  def flush(self) -> None:
    for w in self.writers:
      w.flush()

  def close(self) -> None:
    for w in self.writers:
      w.close()


class FailureLog:
  """Collects the first failed write of each log file (``failures``) and logs it."""

  def __init__(self):
    self.failures: list[log_files.FailedWrite] = []

  def __call__(self, failure: log_files.FailedWrite) -> None:
    self.failures.append(failure)
    log.error("cannot write %s; training goes on, and the run will end with an error", failure)


def create_default_writer(workdir: str, on_failure: OnFailure, *,
                          just_logging: bool = False) -> MultiWriter:
  """TensorBoard, ``metrics.jsonl`` and the terminal for a training run in ``workdir``.

  Args:
    workdir: the run's folder (exists).
    on_failure: receives the first failed write of each file (e.g. a :class:`FailureLog`).
    just_logging: only the terminal (processes other than 0 of a multi-host run).

  Raises:
    UserError: the files cannot be created.
  """
  if just_logging:
    return MultiWriter([LoggingWriter()])
  with os_errors_as_user_errors(f"--workdir {workdir}: cannot write the logs"):
    return MultiWriter([TensorBoardWriter(workdir, on_failure),
                        JsonLinesWriter(os.path.join(workdir, METRICS_FILE), on_failure),
                        LoggingWriter()])


Series = dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]


def read_rows(workdir: str) -> Iterator[dict[str, Any]]:
  """The rows of ``WORKDIR/metrics.jsonl`` in file order (each has ``step`` and ``split``).

  Raises:
    OSError: the file cannot be read.
    UserError: a line that is not a metrics row, named ``PATH:LINE``.
  """
  path = os.path.join(workdir, METRICS_FILE)
  with open(path) as f:
    for lineno, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
        row["step"], row["split"] = int(row["step"]), row["split"]
      except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}:{lineno}: not a metrics row ({e})") from e
      yield row


def read_metrics(workdir: str) -> Series:
  """Reads ``WORKDIR/metrics.jsonl`` into ``{split: {name: (steps, values)}}``, ready to plot.

  Splits are ``"train"`` (the loss terms, self-paced weight, learning rates, ...), ``"eval"``
  (validation PSNR/SSIM), ``"run"`` (the schedule) and ``"spl"`` (λ, q, epoch; the per-sample
  lists are left out). Non-finite values (λ is ∞ in the first epoch) are kept; plotting skips
  them. A step logged twice (a resumed or rewound run) keeps its latest value.
  """
  series: dict[str, dict[str, list[tuple[int, float]]]] = collections.defaultdict(
      lambda: collections.defaultdict(list))
  for record in read_rows(workdir):
    step, split = record.pop("step"), record.pop("split")
    for k, v in record.items():
      if isinstance(v, (int, float)):
        series[split][k].append((step, float(v)))
  out: Series = {}
  for split, by_name in series.items():
    out[split] = {}
    for k, pts in by_name.items():
      last = dict(pts)  # Later rows of a step replace earlier ones.
      steps = np.array(sorted(last), np.int64)
      out[split][k] = (steps, np.array([last[s] for s in steps], np.float64))
  return out
