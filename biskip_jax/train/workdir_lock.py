"""One training process per workdir: a POSIX lock on ``WORKDIR/train.lock``.

The kernel releases the lock when its process ends, however it ends (kill -9 included), so a
crashed run never leaves the workdir locked; the file itself stays and only says who held it
last. Data-loader worker processes do not inherit the lock.
"""

import errno
import fcntl
import logging
import os
import socket
import time

from biskip_jax.errors import UserError, os_errors_as_user_errors

log = logging.getLogger("biskip_jax")

LOCK_FILE = "train.lock"


class WorkdirLock:
  """Context manager holding ``WORKDIR/train.lock`` for this process.

  Args:
    workdir: an existing training workdir.

  Raises:
    UserError: (on entry) another process holds the lock, or the workdir is not writable.
  """

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = os.path.join(workdir, LOCK_FILE)
    self._fd: int | None = None

  def __enter__(self) -> "WorkdirLock":
    with os_errors_as_user_errors(f"--workdir {self.workdir}: cannot write to the folder"):
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno in (errno.EACCES, errno.EAGAIN):
        holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
        os.close(fd)
        raise UserError(f"--workdir {self.workdir} is in use by another training process "
                        f"({holder}): wait for it to end or stop it, or use another --workdir"
                        ) from e
      # A file system without locks (e.g. some NFS setups): train unguarded, but say so.
      log.warning("cannot lock %s (%s): make sure no other training process uses this workdir",
                  self.path, e.strerror or e)
      os.close(fd)
      return self
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, started "
                  f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n".encode(), 0)
    self._fd = fd
    return self

  def __exit__(self, *exc) -> None:
    if self._fd is not None:
      os.close(self._fd)  # Releases the lock.
      self._fd = None
