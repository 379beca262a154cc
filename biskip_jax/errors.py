"""The exceptions entry points end on with one line: user mistakes and stopping signals.

Entry points catch :class:`UserError` (bad flags, files, settings) and print its message on one
line, without a traceback, and :class:`Stopped` (SIGTERM or SIGINT under
:func:`stop_on_signals`); anything else is a bug and keeps its traceback.
"""

import contextlib
import signal
import sys
from typing import Iterator


class UserError(Exception):
  """A mistake the user can fix: the message names the flag or file and what to do."""


@contextlib.contextmanager
def os_errors_as_user_errors(message: str) -> Iterator[None]:
  """Turns an ``OSError`` in the block into ``UserError("MESSAGE (REASON)")``.

  For file and folder operations whose failure (a full, read-only or missing disk) the user
  must fix: ``message`` names the flag or file, the reason is the system's.
  """
  try:
    yield
  except OSError as e:
    raise UserError(f"{message} ({e.strerror or e})") from e


class Stopped(BaseException):
  """SIGTERM or SIGINT during a program that writes files (not ``Exception``: nothing catches
  it by accident, and every ``finally`` on the way removes its half-written file)."""

  def __init__(self, signum: int):
    super().__init__(f"stopped by signal {signum}")
    self.signum = signum


# The signal stop_on_signals' handler received (None: none yet), and how deeply the running code
# is inside signals_held.
_received: int | None = None
_holding = 0


def stop_on_signals() -> None:
  """SIGTERM and SIGINT raise :class:`Stopped` (inside :func:`signals_held`, at its end).

  Python runs a signal's handler between any two bytecodes, also in code whose exceptions are
  printed as ignored and dropped: a garbage-collection callback (JAX has one), a ``__del__``,
  C code calling back into Python. There the :class:`Stopped` is dropped silently (its signal
  is recorded) and :func:`raise_if_signalled`, which long loops call once per item, raises it
  again.
  """
  def handler(signum, frame):
    del frame
    global _received  # pylint: disable=global-statement
    _received = signum
    if not _holding:
      raise Stopped(signum)

  default_hook = sys.unraisablehook

  def unraisable_hook(unraisable):
    if not isinstance(unraisable.exc_value, Stopped):
      default_hook(unraisable)

  sys.unraisablehook = unraisable_hook
  for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, handler)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
  """A stopping signal received in the block (or dropped before it) raises :class:`Stopped`
  when the block ends.

  For C code that calls back into Python and would drop the :class:`Stopped` midway through
  its work: PyAV writes its MP4 through the output's Python file object, and a write that
  failed that way as the file closes would leave a broken clip, complete to all appearances.
  The block ends by raising even when it raises something else: the program was asked to
  stop.
  """
  global _holding  # pylint: disable=global-statement
  _holding += 1
  try:
    yield
  finally:
    _holding -= 1
    if not _holding:
      raise_if_signalled()


def raise_if_signalled() -> None:
  """Raises :class:`Stopped` if :func:`stop_on_signals`' handler has received a signal.

  Called once per item by loops over files, frames and images, and by the entry points last:
  a :class:`Stopped` that was dropped (see :func:`stop_on_signals`) still stops the program,
  with the signal's exit status.
  """
  if _received is not None:
    raise Stopped(_received)
