"""Shared start-up of the entry points: absl flag parsing with one-line error messages, the
flags several programs share (:func:`define_ckpt_flag`, :func:`define_dtype_flag`,
:func:`define_ensemble_flag`), :func:`run`, which turns a :class:`UserError` into one line and
the exit status 2, and the one place that turns a ``--config`` value into a config file.

``--config`` takes a file path (``configs/biskip.py``, ``/path/to/my_config.py``) or the name of a
config shipped with the package (``biskip``, ``quickstart``, ``pretrain``, ``tiny``), each
optionally followed by ``:ARG`` for its ``get_config`` (a Table 1 scheme, e.g.
``biskip:SA1P-BS``). A path that does not exist but names a shipped config
(``configs/biskip.py`` run from outside the repository) is the shipped one, so the installed
console scripts and notebooks work from any directory (:func:`config_path`).

The programs are the modules beside this one: ``train``, ``evaluate``, ``deblur``, ``demo``,
``export`` and ``pretrained`` (a run written as a shipped model). Each defines its flags on
import and a ``run()`` that parses them and calls its ``main`` through :func:`run`. The root
scripts (``python train.py ...``) and the console scripts of ``pyproject.toml``
(``biskip-train``, ...) both call it. Import one per process: their flags share names.
"""

import glob
import importlib.util
import logging as pylogging
import os
import re
import sys
import traceback
from typing import Callable, NoReturn

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags
from ml_collections.config_flags.config_flags import ConfigFileFlagParser  # Not re-exported.

from biskip_jax.errors import Stopped, UserError, raise_if_signalled
from biskip_jax.output_files import file_kind

# Flags defined through this module's helpers belong to the module that calls them (absl lists
# a module's own flags under --helpshort).
flags.disclaim_key_flags()


def _config_files(argv: list[str]) -> list[str]:
  """The files named by ``--config=SPEC`` / ``--config SPEC`` in ``argv`` (:func:`config_path`)."""
  values = [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
  values += [b for a, b in zip(argv, argv[1:]) if a == "--config"]
  return [config_path(v).partition(":")[0] for v in values]


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
  for path in _config_files(argv):
    kind = file_kind(path)
    if kind is not None:
      _fail(f"--config={path}: {kind}, not a config file")
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as e:  # config_flags: an override of a field not there.
    _fail(_unknown_field(e, argv))
  except flags.Error as e:
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    # config_flags embeds the config file's traceback; keep the flag and the final error.
    msg = lines[-1] if len(lines) > 1 else (lines[0] if lines else repr(e))
    flag = next((l for l in lines if l.startswith("flag --")), "")
    flag = flag.split(":", 1)[0] + ": " if flag else ""
    print(f"{prog()}: error: {flag}{msg}\nPass --helpshort for the flags.", file=sys.stderr)
    sys.exit(2)
  except Exception as e:  # pylint: disable=broad-except  # The config file's own error.
    where = _config_file_error(e, _config_files(argv))
    if where is None:
      raise
    _fail(f"--config: {where}")


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


def shipped_configs() -> dict[str, str]:
  """The configs shipped with the package: ``{name: path}`` (``configs/NAME.py``).

  Found, not imported: ``configs`` is the installed package beside ``biskip_jax`` (or the
  repository's folder when run from it).
  """
  spec = importlib.util.find_spec("configs")
  if spec is None or not spec.submodule_search_locations:
    return {}
  folder = os.path.abspath(list(spec.submodule_search_locations)[0])
  return {os.path.splitext(os.path.basename(p))[0]: p
          for p in sorted(glob.glob(os.path.join(folder, "*.py")))
          if not os.path.basename(p).startswith("_")}


def config_path(spec: str) -> str:
  """The config file behind a ``--config`` value ``PATH[:ARG]``, ``:ARG`` kept.

  An existing file is itself. Otherwise ``NAME``, ``NAME.py`` or ``configs/NAME.py`` where
  ``NAME`` is a shipped config (:func:`shipped_configs`) is that config's file, wherever the
  package is installed and whatever the working directory. Anything else comes back unchanged
  (the loader then reports it missing).
  """
  path, sep, arg = spec.partition(":")
  if os.path.isfile(path):
    return spec
  folder, base = os.path.split(os.path.normpath(path)) if path else ("", "")
  name = base[:-3] if base.endswith(".py") else base
  shipped = shipped_configs()
  if name in shipped and folder in ("", "configs") and (base.endswith(".py") or not folder):
    return shipped[name] + sep + arg
  return spec


def _not_found(spec: str, name: str = "config") -> str:
  path = spec.partition(":")[0]
  return (f"--{name}={spec}: no file {path}, and no shipped config of that name (shipped: "
          f"{', '.join(shipped_configs())})")


def load_config(spec: str) -> ml_collections.ConfigDict:
  """The config a ``--config`` value names (see :func:`config_path`), unlocked, for notebooks.

  E.g. ``load_config("biskip:A2-S")`` or ``load_config("configs/quickstart.py")``.

  Raises:
    UserError: no such file and no shipped config of that name.
  """
  resolved = config_path(spec)
  if not os.path.isfile(resolved.partition(":")[0]):
    raise UserError(_not_found(spec))
  config = ConfigFileFlagParser(name="config", lock_config=False).parse(resolved)
  config.keys()  # A file that fails to load gives a stand-in that raises when touched.
  return config


class _ConfigFileParser(ConfigFileFlagParser):
  """ml_collections' ``--config`` parser, given the file :func:`config_path` finds."""

  def parse(self, path):
    return super().parse(config_path(path))


def define_config_flag(help_string: str, *, name: str = "config") -> flags.FlagHolder:
  """``config_flags.DEFINE_config_file(name, lock_config=True)`` taking shipped config names.

  Read it with :func:`config_flag`, which reports a config that cannot be loaded on one line.
  """
  help_string += f" Shipped configs: {', '.join(shipped_configs())}."
  holder = config_flags.DEFINE_config_file(name, None, help_string, lock_config=True)
  flags.FLAGS[name].parser = _ConfigFileParser(name=name, lock_config=True)
  return holder


def define_ckpt_flag(*, required: bool = False, also: str = "") -> flags.FlagHolder:
  """``--ckpt``: the model a program loads (:func:`biskip_jax.inference.loading.load_generator`).

  Args:
    required: no default; else the shipped model, ``pretrained`` (``loading.PRETRAINED``,
      spelled out here so that parsing flags does not import JAX).
    also: help for the values only this program takes, e.g. ``"'unsharp': ..."``.
  """
  help_string = ("Training workdir, its best/ or checkpoints/N; 'pretrained[:NAME]': a shipped "
                 "model; PATH/NAME.npz: a model file exported like it")
  help_string += f"; {also}." if also else "."
  if not required:
    help_string += " Default: the shipped model."
  holder = flags.DEFINE_string("ckpt", None if required else "pretrained", help_string)
  if required:
    flags.mark_flag_as_required("ckpt")
  return holder


def define_dtype_flag() -> flags.FlagHolder:
  """``--dtype``: the generator's compute dtype at inference."""
  return flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                           "Compute dtype (bfloat16 for GPUs; measure the PSNR change).")


def define_ensemble_flag() -> flags.FlagHolder:
  """``--ensemble``: the geometric self-ensemble at inference."""
  return flags.DEFINE_bool("ensemble", False, "Geometric self-ensemble: average the "
                           "restorations of the 8 flips/transposes (8x the compute).")


def define_tile_flags() -> tuple[flags.FlagHolder, flags.FlagHolder]:
  """``--tile_size`` and ``--tile_overlap``: tiled inference (None: the model's ``config.eval``)."""
  size = flags.DEFINE_integer("tile_size", None, "Restore in overlapping tiles of this size "
                              "(0: only images above eval.max_pixels; default: the model's "
                              "config.eval.tile_size).")
  overlap = flags.DEFINE_integer("tile_overlap", None, "Overlap between tiles in pixels, "
                                 "blended linearly (default: the model's "
                                 "config.eval.tile_overlap).")
  return size, overlap


def _fail(message: str) -> NoReturn:
  """Ends the program with ``PROG: error: MESSAGE`` on one line of stderr and status 2."""
  print(f"{prog()}: error: {message}", file=sys.stderr)
  sys.exit(2)


def run(main: Callable[[list[str]], None]) -> None:
  """``absl.app.run`` with :func:`_parse_flags` (grain workers need absl's parsed flags).

  A :class:`UserError` from ``main`` ends the program with one line, ``PROG: error:
  MESSAGE``, and the exit status 2; a :class:`Stopped` with ``128 + signum``. Anything else is
  a bug and keeps its traceback.

  ``main``'s module (e.g. ``biskip_jax.cli.train``) may be imported by the script that starts
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
      try:
        main(argv)
      finally:
        raise_if_signalled()  # A signal whose Stopped a library dropped still stops here.
    except UserError as e:
      _fail(str(e))
    except Stopped as e:
      print(f"{prog()}: {e}; the files written so far are complete", file=sys.stderr)
      sys.exit(128 + e.signum)

  app.run(main_or_stopped, flags_parser=_parse_flags)


def config_flag(name: str = "config"):
  """The loaded ``--config``.

  Raises:
    UserError: a missing or broken config file (its file and line named).
  """
  try:
    config = getattr(flags.FLAGS, name)
    config.keys()  # config_flags loads lazily: touch it to surface load errors here.
    return config
  except (SyntaxError, NameError, TypeError, ValueError, ImportError) as e:
    where = _config_file_error(e, _config_files(sys.argv))
    if where is None:
      raise
    raise UserError(f"--{name}: {where}") from e
  except OSError as e:
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    reason = next((l for l in reversed(lines) if l.startswith("[Errno")), lines[-1])
    spec = flags.FLAGS[name].config_filename if hasattr(flags.FLAGS[name],
                                                        "config_filename") else ""
    if not os.path.exists(config_path(spec).partition(":")[0]):
      message = _not_found(spec, name)
    else:
      message = f"--{name}={spec}: cannot load the config file ({reason})"
    raise UserError(message) from e
