"""Log files that survive a full or read-only disk: the first failed write is kept, not raised.

Training must not crash half-way because ``metrics.jsonl`` or a TensorBoard event file cannot
grow, nor end as a success with its logs cut short: these writers record the first
``OSError`` (``error``) and drop later writes; the training driver reports it when the run
ends. tensorboardX writes events in a background thread, where an exception would kill the
thread and then block training on its full queue; :func:`guard_tensorboard` wraps the file
writer that thread uses.
"""

import logging
import os
import threading
from typing import Any, Callable

log = logging.getLogger("biskip_jax")


class FailedWrite:
  """The first failed write of a log file: ``what`` (file), ``step`` and the ``OSError``."""

  def __init__(self, what: str, step: int, error: OSError):
    self.what, self.step, self.error = what, step, error

  def __str__(self) -> str:
    return f"{self.what} from step {self.step} on ({self.error.strerror or self.error})"


class JsonLines:
  """Appends whole lines to a file; after a failed write, drops every later line.

  A line that fails half-way is cut off again, so the file always ends with a complete line
  (a partial last line left by a killed run is cut off on opening).

  Args:
    path: the file (opened in append mode).
    on_error: called once with the ``OSError`` of the first failed write.
  """

  def __init__(self, path: str, on_error: Callable[[OSError], None]):
    # An OSError here stops the run before training (the caller makes it a UserError).
    self._f = open(path, "ab", buffering=0)
    self._on_error = on_error
    self.ok = True
    end = self._f.seek(0, os.SEEK_END)
    if end:
      with open(path, "rb") as f:
        f.seek(max(end - 65536, 0))
        tail = f.read()
      if not tail.endswith(b"\n"):
        self._f.truncate(end - len(tail) + tail.rfind(b"\n") + 1 if b"\n" in tail else 0)

  def write(self, line: str) -> None:
    if not self.ok:
      return
    data = memoryview((line + "\n").encode("utf-8"))
    start = self._f.seek(0, os.SEEK_END)
    try:
      while data:
        data = data[self._f.write(data):]
    except OSError as e:
      self.ok = False
      try:
        self._f.truncate(start)  # Frees space: no half line left behind.
      except OSError:
        pass
      self._on_error(e)

  def close(self) -> None:
    self._f.close()


class _GuardedEventsWriter:
  """tensorboardX's ``EventsWriter`` whose ``OSError``s are reported, not raised."""

  def __init__(self, inner: Any, on_error: Callable[[OSError], None]):
    self._inner = inner
    self._on_error = on_error
    self._lock = threading.Lock()
    self.ok = True

  def _call(self, name: str, *args: Any) -> None:
    with self._lock:
      if not self.ok:
        return
      try:
        getattr(self._inner, name)(*args)
      except OSError as e:
        self.ok = False
        self._on_error(e)

  def write_event(self, event: Any) -> None:
    self._call("write_event", event)

  def flush(self) -> None:
    self._call("flush")

  def close(self) -> None:
    try:
      self._inner.close()
    except OSError:
      pass  # A close after a failed write re-raises that failure: already reported.


def guard_tensorboard(writer: Any, on_error: Callable[[OSError], None]) -> bool:
  """Makes a ``tensorboardX.SummaryWriter`` report write errors to ``on_error``.

  Returns:
    False if this tensorboardX's internals are not the known ones (writer left as is).
  """
  try:
    events = writer._get_file_writer().event_writer  # pylint: disable=protected-access
    guarded = _GuardedEventsWriter(events._ev_writer, on_error)  # pylint: disable=protected-access
    events._ev_writer = guarded  # pylint: disable=protected-access
    events._worker._record_writer = guarded  # pylint: disable=protected-access
  except AttributeError:
    log.warning("tensorboardX internals changed: a full disk may stop training")
    return False
  return True
