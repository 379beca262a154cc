"""Shared start-up of the entry points: absl flag parsing with one-line error messages."""

import logging as pylogging
import os
import re
import sys
from typing import Callable

from absl import app, flags, logging


def _parse_flags(argv: list[str]) -> list[str]:
  """Parses flags; a bad flag value (e.g. an unknown scheme) is one line, no traceback."""
  prog = argv[0].rsplit("/", 1)[-1]
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
  app.run(main, flags_parser=_parse_flags)


def config_flag(name: str = "config"):
  """The loaded ``--config``; a missing or broken config file exits with one line."""
  try:
    config = getattr(flags.FLAGS, name)
    config.keys()  # config_flags loads lazily: touch it to surface load errors here.
    return config
  except OSError as e:
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    reason = next((l for l in reversed(lines) if l.startswith("[Errno")), lines[-1])
    path = flags.FLAGS[name].config_filename if hasattr(flags.FLAGS[name],
                                                        "config_filename") else ""
    print(f"{sys.argv[0].rsplit('/', 1)[-1]}: error: --{name}={path}: cannot load the config "
          f"file ({reason})", file=sys.stderr)
    sys.exit(2)
