"""Multi-host training: two processes on CPU (gloo over a loopback coordinator) equal one.

The slow tests launch ``train.py`` as two processes with one CPU device each, and as one
process with two virtual devices (``--xla_force_host_platform_device_count=2``), on the tiny
config at the same global batch, seed and data order. They share a persistent compilation
cache, so each layout's train step is compiled once for the module.
"""

import contextlib
import functools
import json
import os
import re
import shutil
import signal
import socket
import sys
import time

import jax
import numpy as np
import pytest

from biskip_jax.errors import UserError
from biskip_jax.train import checkpointing, multihost, train_step, workdir_lock
from configs import tiny
from tests import stderr_process
from tests.conftest import xla_flags

ROOT = stderr_process.ROOT
SCHEME = "S1-BS"  # Self-paced: the per-sample l_i and v_i, and λ from the first epoch.
STEPS = 4
# The flags of every run: global batch 2, checkpoints at steps 2 and 4, an epoch of 2 steps
# (λ and q change after step 2).
_FLAGS = {"train.num_steps": STEPS, "train.steps_per_epoch": 2, "train.log_every": 1,
          "train.checkpoint_every": 2, "train.keep_checkpoints": 5, "train.batch_size": 2}


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class _Proc(stderr_process.StderrProcess):
  """One ``train.py`` process on the tiny config; ``env`` adds to (or sets) the launch's."""

  def __init__(self, workdir, cache_dir, *, env=(), flags=(), config_flags=None):
    args = [sys.executable, "train.py", f"--config=configs/tiny.py:{SCHEME}",
            f"--workdir={workdir}", *flags]
    args += [f"--config.{k}={v}" for k, v in {**_FLAGS, **(config_flags or {})}.items()]
    env = dict(env)
    full_env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu",
                    JAX_COMPILATION_CACHE_DIR=cache_dir,
                    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", **env)
    for name in ("XLA_FLAGS", multihost.ENV_ADDRESS, multihost.ENV_NUM_PROCESSES,
                 multihost.ENV_PROCESS_ID):
      if name not in env:
        full_env.pop(name, None)
    full_env.setdefault("XLA_FLAGS", xla_flags())
    super().__init__(args, full_env)


def _two_processes(workdir, cache_dir, *, flags=(), config_flags=None, port=None):
  """``train.py`` as processes 0 and 1 of a run, one CPU device each (the env-var launch)."""
  address = f"127.0.0.1:{port or _free_port()}"
  return [_Proc(workdir, cache_dir, flags=flags, config_flags=config_flags,
                env={multihost.ENV_ADDRESS: address, multihost.ENV_NUM_PROCESSES: "2",
                     multihost.ENV_PROCESS_ID: str(i)}) for i in range(2)]


def _one_process_two_devices(workdir, cache_dir):
  return _Proc(workdir, cache_dir,
               env={"XLA_FLAGS": xla_flags("--xla_force_host_platform_device_count=2")})


@contextlib.contextmanager
def _killed_at_exit(procs):
  """The processes, killed if still running when the block ends (a failed test)."""
  try:
    yield procs
  finally:
    for p in procs:
      p.cleanup()


def _finish_all(procs, timeout=1800):
  with _killed_at_exit(procs):
    rcs = [p.finish(timeout) for p in procs]
  for p, rc in zip(procs, rcs):
    assert rc == 0, p.stderr[-3000:]


@functools.cache
def _template():
  return train_step.create_train_state(tiny.get_config(SCHEME), STEPS, 32)


def _state(workdir, step):
  """The train state of checkpoint ``step`` restored in this (one-device) process."""
  ckpt = checkpointing.Checkpointer(workdir, tiny.get_config(SCHEME))
  try:
    state = ckpt.restore(step, _template(), None)
  finally:
    ckpt.close()
  return jax.tree.map(np.asarray, state.replace(rng=jax.random.key_data(state.rng)))


def _assert_same_state(workdir_a, workdir_b, step):
  a, b = _state(workdir_a, step), _state(workdir_b, step)
  paths = jax.tree_util.tree_leaves_with_path(a)
  assert len(paths) > 20  # Both networks, both optimizers, SPL, step, key.
  for (path, x), y in zip(paths, jax.tree_util.tree_leaves(b)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=jax.tree_util.keystr(path))
  assert int(a.step) == step


def _rows(workdir, split):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return {r["step"]: r for r in map(json.loads, f) if r["split"] == split}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("xla_cache"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cache_dir):
  """The same 4 steps as two processes and as one process with two devices (concurrently)."""
  two, one = (str(tmp_path_factory.mktemp(n)) for n in ("two_processes", "one_process"))
  procs = _two_processes(two, cache_dir) + [_one_process_two_devices(one, cache_dir)]
  _finish_all(procs)
  return two, one


@pytest.mark.slow
def test_two_processes_train_as_one_process_with_two_devices(runs):
  two, one = runs
  for step in (2, STEPS):
    _assert_same_state(two, one, step)
  # Process 0 logs the global batch's per-sample l_i and v_i, as the one process does.
  spl_two, spl_one = _rows(two, "spl"), _rows(one, "spl")
  assert sorted(spl_two) == list(range(1, STEPS + 1))
  for step, row in spl_one.items():
    assert len(row["loss"]) == 2
    np.testing.assert_allclose(spl_two[step]["loss"], row["loss"], rtol=1e-5)
    np.testing.assert_allclose(spl_two[step]["v"], row["v"], rtol=1e-5)


@pytest.mark.slow
def test_checkpoints_resume_across_process_counts(runs, cache_dir, tmp_path):
  """Step 2 of a two-process run finishes in one process, and the other way round."""
  two, one = runs
  from_two, from_one = str(tmp_path / "from_two"), str(tmp_path / "from_one")
  for src, dst in ((two, from_two), (one, from_one)):
    shutil.copytree(src, dst)
    shutil.rmtree(os.path.join(dst, "checkpoints", str(STEPS)))  # As if stopped at step 2.
  procs = [_one_process_two_devices(from_two, cache_dir)] + _two_processes(from_one, cache_dir)
  _finish_all(procs)
  for p in procs:
    assert "resumed from" in p.stderr and "at step 2" in p.stderr, p.stderr[-3000:]
  for resumed in (from_two, from_one):
    _assert_same_state(resumed, one, STEPS)


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_one_step_with_one_checkpoint(cache_dir,
                                                                            tmp_path):
  workdir = str(tmp_path)
  procs = _two_processes(workdir, cache_dir, config_flags={
      "train.num_steps": 100000, "train.checkpoint_every": 100000,
      "train.stop_check_every": 2})
  with _killed_at_exit(procs):
    for p in procs:
      p.wait_for(r"step 1/100000", timeout=1800)
    procs[1].proc.send_signal(signal.SIGTERM)
    rcs = [p.finish(timeout=300) for p in procs]
  assert rcs == [143, 143], [p.stderr[-2000:] for p in procs]
  stops = [re.findall(r"stopped at step (\d+)", p.stderr) for p in procs]
  assert stops[0] and stops[0] == stops[1], stops
  step = int(stops[0][0])
  assert step % 2 == 0  # At a check of train.stop_check_every.
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == [str(step)]


@pytest.mark.slow
@pytest.mark.parametrize("killed", [0, 1])
def test_a_killed_process_stops_the_other_with_an_error(cache_dir, tmp_path, killed):
  procs = _two_processes(str(tmp_path), cache_dir, flags=["--heartbeat_timeout=10"],
                         config_flags={"train.num_steps": 100000,
                                       "train.checkpoint_every": 100000})
  with _killed_at_exit(procs):
    for p in procs:
      p.wait_for(r"step 1/100000", timeout=1800)
    procs[killed].proc.kill()
    start = time.monotonic()
    other = procs[1 - killed]
    rc = other.finish(timeout=120)
    took = time.monotonic() - start
  assert rc != 0 and took < 60, (rc, took, other.stderr[-3000:])
  if killed == 1:  # Process 0's coordinator lives on: its step's collective fails first.
    errors = [l for l in other.lines if "error:" in l]
    assert len(errors) == 1 and "process 0: a collective with the other processes failed" in (
        errors[0]) and "Traceback" not in other.stderr, other.stderr[-3000:]


@pytest.mark.slow
def test_a_busy_workdir_stops_every_process_with_one_line(cache_dir, tmp_path):
  with workdir_lock.WorkdirLock(str(tmp_path)):  # Held by "another train.py".
    with _killed_at_exit(_two_processes(str(tmp_path), cache_dir)) as procs:
      rcs = [p.finish(timeout=300) for p in procs]
  assert rcs == [2, 2], [p.stderr[-2000:] for p in procs]
  for i, p in enumerate(procs):
    errors = [l for l in p.lines if "error:" in l]
    assert len(errors) == 1 and "is in use by another training process" in errors[0], p.stderr
    assert ("process 0: " in errors[0]) == (i == 1), errors
    assert "Traceback" not in p.stderr


@pytest.mark.slow
@pytest.mark.parametrize("process_id, message", [
    (1, r"process 1: cannot reach the coordinator at 127\.0\.0\.1:\d+ \(--coordinator_address\) "
        r"within 3 s"),
    (0, r"process 0: not all processes joined the coordinator .* within 3 s")])
def test_a_coordinator_not_reached_is_one_line_after_the_timeout(cache_dir, tmp_path,
                                                                 process_id, message):
  """Process 1 without a process 0, and process 0 without the others."""
  start = time.monotonic()
  with _killed_at_exit([_Proc(str(tmp_path), cache_dir, flags=[
      f"--coordinator_address=127.0.0.1:{_free_port()}", "--num_processes=2",
      f"--process_id={process_id}", "--distributed_timeout=3"])]) as (p,):
    rc = p.finish(timeout=120)
  took = time.monotonic() - start
  assert rc == 2, p.stderr[-3000:]
  lines = [l for l in p.lines if l.strip() and "joining the coordinator" not in l]
  assert len(lines) == 1 and re.search(message, lines[0]), p.stderr[-3000:]
  assert took < 60, took


# Launch settings, checked before JAX is touched -------------------------------------------


@pytest.fixture
def no_launch_env(monkeypatch):
  for name in (multihost.ENV_ADDRESS, multihost.ENV_NUM_PROCESSES, multihost.ENV_PROCESS_ID,
               "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES"):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setattr(multihost, "_on_cloud_tpu_vm", lambda: False)
  return monkeypatch


@pytest.mark.parametrize("env, kwargs, message", [
    ({multihost.ENV_ADDRESS: "127.0.0.1:1234"}, {},
     r"set JAX_NUM_PROCESSES and JAX_PROCESS_ID too"),
    ({}, {"coordinator_address": "127.0.0.1:1234", "num_processes": 2},
     r"set JAX_PROCESS_ID too"),
    ({multihost.ENV_NUM_PROCESSES: "two", multihost.ENV_PROCESS_ID: "0"},
     {"coordinator_address": "127.0.0.1:1234"}, r"^JAX_NUM_PROCESSES=two: must be an integer"),
    ({}, {"coordinator_address": "127.0.0.1:1234", "num_processes": 2, "process_id": 2},
     r"^--process_id=2: must be below the number of processes \(--num_processes=2\)"),
    ({}, {"coordinator_address": "127.0.0.1", "num_processes": 2, "process_id": 1},
     r"^--coordinator_address=127\.0\.0\.1: expected HOST:PORT"),
    ({multihost.ENV_ADDRESS: "no-such-host.invalid:1234", multihost.ENV_NUM_PROCESSES: "2",
      multihost.ENV_PROCESS_ID: "1"}, {},
     r"^JAX_COORDINATOR_ADDRESS=no-such-host\.invalid:1234: cannot resolve no-such-host"),
])
def test_bad_launch_settings_name_the_flag_or_variable(no_launch_env, env, kwargs, message):
  for k, v in env.items():
    no_launch_env.setenv(k, v)
  with pytest.raises(UserError, match=message):
    multihost.initialize(**kwargs)
  assert not jax.distributed.is_initialized()


def test_process_0_needs_a_free_port(no_launch_env):
  with socket.socket() as busy:
    busy.bind(("", 0))
    busy.listen()
    port = busy.getsockname()[1]
    with pytest.raises(UserError, match=rf"^--coordinator_address=127\.0\.0\.1:{port}: port "
                       rf"{port} cannot be served on this machine .*choose another port"):
      multihost.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                           process_id=0)


def test_a_single_process_initializes_nothing(no_launch_env):
  multihost.initialize()
  assert not jax.distributed.is_initialized()


def test_one_process_agrees_with_itself():
  assert multihost.max_over_processes(15) == 15
  multihost.raise_first_error(None)
  with pytest.raises(UserError, match="busy"):
    multihost.raise_first_error(UserError("busy"))
  x = jax.numpy.arange(3.0)
  assert multihost.local_copy({"x": x})["x"] is x
