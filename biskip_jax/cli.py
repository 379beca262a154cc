"""Shared start-up of the entry points: absl flag parsing with one-line error messages."""

import logging as pylogging
import os
import re
import signal
import sys
import traceback
from typing import Callable

from absl import app, flags, logging


def _config_files(argv: list[str]) -> list[str]:
  """The files named by ``--config=FILE[:ARG]`` / ``--config FILE`` in ``argv``."""
  values = [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
  values += [b for a, b in zip(argv, argv[1:]) if a == "--config"]
  return [v if os.path.lexists(v) else v.split(":", 1)[0] for v in values]


def _config_file_error(e: BaseException, files: list[str]) -> str | None:
  """``FILE:LINE: SyntaxError: ...`` when ``e`` arose in (or compiling) one of ``files``."""
  real = {os.path.realpath(f) for f in files}
  if isinstance(e, SyntaxError) and e.filename and os.path.realpath(e.filename) in real:
    return f"{e.filename}:{e.lineno}: {type(e).__name__}: {e.msg}"
  frames = [f for f in traceback.extract_tb(e.__traceback__)
            if os.path.realpath(f.filename) in real]
  if frames:
    return f"{frames[-1].filename}:{frames[-1].lineno}: {type(e).__name__}: {e}"
  return None


def _parse_flags(argv: list[str]) -> list[str]:
  """Parses flags; a bad flag value (e.g. an unknown scheme) is one line, no traceback.

  So is a config file that does not compile or run (its file and line named), or one that is
  not a regular file (a FIFO would block the loader for ever).
  """
  prog = argv[0].rsplit("/", 1)[-1]
  from biskip_jax.output_files import file_kind  # pylint: disable=g-import-not-at-top
  for path in _config_files(argv):
    kind = file_kind(path)
    if kind is not None:
      print(f"{prog}: error: --config={path}: {kind}, not a config file", file=sys.stderr)
      sys.exit(2)
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as e:  # config_flags: an override of a field not there.
    print(f"{prog}: error: {_unknown_field(e, argv)}", file=sys.stderr)
    sys.exit(2)
  except flags.Error as e:
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    # config_flags embeds the config file's traceback; keep the flag and the final error.
    msg = lines[-1] if len(lines) > 1 else (lines[0] if lines else repr(e))
    flag = next((l for l in lines if l.startswith("flag --")), "")
    flag = flag.split(":", 1)[0] + ": " if flag else ""
    print(f"{prog}: error: {flag}{msg}\nPass --helpshort for the flags.", file=sys.stderr)
    sys.exit(2)
  except Exception as e:  # pylint: disable=broad-except  # The config file's own error.
    where = _config_file_error(e, _config_files(argv))
    if where is None:
      raise
    print(f"{prog}: error: --config: {where}", file=sys.stderr)
    sys.exit(2)


def _unknown_field(e: Exception, argv: list[str]) -> str:
  """``--config.optim.glr: no such config field; did you mean g_lr?`` from ml_collections'."""
  arg: object = e
  while isinstance(arg, BaseException) and arg.args:  # AttributeError(KeyError(message)).
    arg = arg.args[0]
  text = str(arg)
  lines = text.splitlines()
  key = lines[0].strip("'\"") if lines else "?"
  match = re.search(r'Did you mean "([^"]+)"', text)
  flag = next((a.split("=", 1)[0] for a in argv[1:] if a.startswith("--")
               and re.search(rf"\.{re.escape(key)}(\.|$)", a.split("=", 1)[0])), f"--config.{key}")
  return f"{flag}: no such config field" + (f"; did you mean {match.group(1)}?" if match else "")


def log_progress_to_stderr() -> None:
  """Our progress lines (logger ``biskip_jax``) on stderr; libraries only warn and err."""
  logging.set_verbosity(logging.WARNING)
  handler = pylogging.StreamHandler(sys.stderr)
  handler.setFormatter(pylogging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
  log = pylogging.getLogger("biskip_jax")
  log.addHandler(handler)
  log.setLevel(pylogging.INFO)
  log.propagate = False


class Stopped(BaseException):
  """SIGTERM or SIGINT during a program that writes files (not ``Exception``: nothing catches
  it by accident, and every ``finally`` on the way removes its half-written file)."""

  def __init__(self, signum: int):
    super().__init__(f"stopped by signal {signum}")
    self.signum = signum


def stop_on_signals() -> None:
  """SIGTERM and SIGINT raise :class:`Stopped`, which :func:`run` turns into one line and
  the exit status ``128 + signum``: what is written is complete, nothing half-written stays."""
  def handler(signum, frame):
    del frame
    raise Stopped(signum)

  for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, handler)


def prog() -> str:
  """The program's name for messages: ``train.py`` for ``python train.py``, or ``biskip-train``."""
  return os.path.basename(sys.argv[0])


def run(main: Callable[[list[str]], None]) -> None:
  """``absl.app.run`` with :func:`_parse_flags` (grain workers need absl's parsed flags).

  ``main``'s module (e.g. ``biskip_jax.entry.train``) may be imported by the script that starts
  the program (``train.py``, or the ``biskip-train`` console script): its flags are made the
  program's key flags, which ``--helpshort`` lists, and its docstring the usage text when the
  script has none.
  """
  module = sys.modules[main.__module__]
  if main.__module__ != "__main__":
    for flag in flags.FLAGS.get_key_flags_for_module(main.__module__):
      flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    script = sys.modules["__main__"]
    if not getattr(script, "__doc__", None):
      script.__doc__ = module.__doc__

  def main_or_stopped(argv: list[str]) -> None:
    try:
      main(argv)
    except Stopped as e:
      print(f"{prog()}: {e}; the files written so far are complete", file=sys.stderr)
      sys.exit(128 + e.signum)

  app.run(main_or_stopped, flags_parser=_parse_flags)


def config_flag(name: str = "config"):
  """The loaded ``--config``; a missing or broken config file exits with one line."""
  try:
    config = getattr(flags.FLAGS, name)
    config.keys()  # config_flags loads lazily: touch it to surface load errors here.
    return config
  except (SyntaxError, NameError, TypeError, ValueError, ImportError) as e:
    where = _config_file_error(e, _config_files(sys.argv))
    if where is None:
      raise
    print(f"{sys.argv[0].rsplit('/', 1)[-1]}: error: --{name}: {where}", file=sys.stderr)
    sys.exit(2)
  except OSError as e:
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    reason = next((l for l in reversed(lines) if l.startswith("[Errno")), lines[-1])
    path = flags.FLAGS[name].config_filename if hasattr(flags.FLAGS[name],
                                                        "config_filename") else ""
    print(f"{sys.argv[0].rsplit('/', 1)[-1]}: error: --{name}={path}: cannot load the config "
          f"file ({reason})", file=sys.stderr)
    sys.exit(2)
