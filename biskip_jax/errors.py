"""The one exception type for user mistakes (bad flags, files, settings).

Entry points catch :class:`UserError` and print its message on one line, without a traceback;
anything else is a bug and keeps its traceback.
"""

import contextlib
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
