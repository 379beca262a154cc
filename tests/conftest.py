"""Shared pytest fixtures: tiny configs for fast CPU tests."""

import contextlib
import os

# Keep tests on the CPU and single-threaded XLA compiles predictable.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import flax  # noqa: E402  (after JAX_PLATFORMS)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import pytest  # noqa: E402
from jax.experimental.compilation_cache import compilation_cache  # noqa: E402

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
