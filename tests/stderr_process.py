"""A program (``train.py``) run by a test in a subprocess, its stderr collected by a thread."""

import os
import re
import subprocess
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class StderrProcess:
  """``args`` started in the repository root with ``env``; ``lines`` grows as stderr does."""

  def __init__(self, args, env):
    self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
    self.lines = []
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self):
    for line in self.proc.stderr:
      self.lines.append(line)

  @property
  def stderr(self):
    return "".join(self.lines)

  def wait_for(self, pattern, timeout, start=0):
    """The first match of ``pattern`` in stderr lines from ``start`` on, waiting for it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      for i in range(start, len(self.lines)):
        m = re.search(pattern, self.lines[i])
        if m:
          return i, m
      if self.proc.poll() is not None and not self._reader.is_alive():
        break
      time.sleep(0.05)
    pytest.fail(f"no {pattern!r} in the program's stderr (rc={self.proc.poll()}):\n"
                f"{self.stderr[-3000:]}")

  def finish(self, timeout):
    rc = self.proc.wait(timeout=timeout)
    self._reader.join(timeout=10)
    return rc

  def cleanup(self):
    if self.proc.poll() is None:
      self.proc.kill()
      self.proc.wait()
