"""Shared pytest fixtures: tiny configs for fast CPU tests."""

import contextlib
import os
import shutil
import signal
import sys
import tempfile

# Keep tests on the CPU and single-threaded XLA compiles predictable.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# Compiling, not running, is most of a test's time (tiny models, a few steps). Two settings cut
# it for the whole run, in the test processes and the programs they start (which inherit the
# environment), unless BISKIP_TEST_COMPILE=default:
# * cheaper LLVM passes: XLA's HLO optimisations all run; a comparison of two runs compares runs
#   of the same settings, and references are compared within float tolerances;
# * one persistent XLA cache for the run (made by the first process, pytest's controller, and
#   removed by it at the end), so a program one test compiles, the tiny config's train step
#   above all, is loaded by the next.
_CACHE_OWNER = "BISKIP_TEST_XLA_CACHE_OWNER"
_FAST = os.environ.get("BISKIP_TEST_COMPILE") != "default"


def xla_flags(*flags: str) -> str:
  """``XLA_FLAGS`` for a program a test starts with an environment of its own: ``flags`` and
  the cheaper LLVM passes."""
  fast = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true")
  return " ".join(flags + (fast if _FAST else ()))


if _FAST:
  os.environ["XLA_FLAGS"] = xla_flags(*filter(None, [os.environ.get("XLA_FLAGS")]))
  if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="biskip_jax_xla_cache_")
    os.environ[_CACHE_OWNER] = str(os.getpid())
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

import flax  # noqa: E402  (after JAX_PLATFORMS)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import pytest  # noqa: E402
from jax.experimental.compilation_cache import compilation_cache  # noqa: E402

from biskip_jax import errors  # noqa: E402
from biskip_jax.inference import full_resolution  # noqa: E402
from biskip_jax.train import checkpointing, train_lib, train_step  # noqa: E402
from configs import tiny  # noqa: E402


@contextlib.contextmanager
def persistent_compile_cache(path: str):
  """JAX's persistent XLA cache in ``path`` for every compile of this process, restored after.

  Runs that compile the same programs again (other seeds, other workdirs) then load them.
  Subprocesses get the cache from ``JAX_COMPILATION_CACHE_DIR=path`` in their environment.
  """
  names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
           "jax_persistent_cache_min_entry_size_bytes")
  old = {n: getattr(jax.config, n) for n in names}
  for n, v in zip(names, (path, 0.0, 0)):
    jax.config.update(n, v)
  compilation_cache.reset_cache()
  try:
    yield path
  finally:
    for n, v in old.items():
      jax.config.update(n, v)
    compilation_cache.reset_cache()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A training workdir holding one checkpoint of a tiny model (step 5)."""
  path = str(tmp_path_factory.mktemp("run"))
  config = tiny.get_config("1-BS")
  state = train_step.create_train_state(config, 10, 32)
  # Give batch norm non-trivial running statistics and the residual a real magnitude.
  params = flax.core.unfreeze(state.gen.params)
  params["out"]["kernel"] = params["out"]["kernel"] * 5.0
  stats = jax.tree_util.tree_map(lambda x: x + 0.1, state.gen.batch_stats)
  state = state.replace(step=jnp.asarray(5, jnp.int32),
                        gen=state.gen.replace(params=params, batch_stats=stats))
  train_lib.save_or_check_config(config, path)
  ckpt = checkpointing.Checkpointer(path, config)
  assert ckpt.save(5, state, None)
  ckpt.close()
  return path, config, {"params": params, "batch_stats": stats}


def negative(image, tile_size=None):
  """A stand-in for the model (tested elsewhere): ``255 - image``, exact for comparisons and
  large and smooth enough to survive video compression."""
  del tile_size
  return 255 - image


@pytest.fixture(name="negative_model")
def _negative_model(monkeypatch):
  """Programs that load a model (``deblur_lib.run``, ...) restore with :func:`negative`."""
  monkeypatch.setattr(full_resolution.Deblurrer, "load",
                      lambda ckpt, dtype=None, **kwargs: negative)
  return negative


@pytest.fixture(name="stop_on_signals")
def _stop_on_signals(monkeypatch):
  """:func:`errors.stop_on_signals` in this process, as the programs install it; the earlier
  handlers, unraisable hook and the module's record of signals come back afterwards."""
  old = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
  monkeypatch.setattr(errors, "_received", None)
  monkeypatch.setattr(errors, "_holding", 0)
  monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
  errors.stop_on_signals()
  yield
  for sig, handler in old.items():
    signal.signal(sig, handler)


# Test files from the longest to the shortest to run (summed test times of a full run): pytest
# runs them in this order, and pytest-xdist (--dist loadfile) hands each worker the next file,
# so that the long files start first and the workers end together. Others follow.
_LONGEST_FILES = ("test_faults.py", "test_benchmarks.py", "test_train_step.py",
                  "test_multihost.py", "test_train_lib.py", "test_experiments.py",
                  "test_inference.py", "test_notebooks.py", "test_models.py")


def pytest_collection_modifyitems(config, items):
  del config
  rank = {name: i for i, name in enumerate(_LONGEST_FILES)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # Stable: file order kept.


def pytest_unconfigure(config):
  del config
  if os.environ.get(_CACHE_OWNER) == str(os.getpid()):
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
