"""The one exception type for user mistakes (bad flags, files, settings).

Entry points catch :class:`UserError` and print its message on one line, without a traceback;
anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
  """A mistake the user can fix: the message names the flag or file and what to do."""
