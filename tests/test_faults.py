"""Fault injection: a long run meets divergence, preemption, SIGKILL, a full disk, bad inputs.

Every test injects the fault and checks that the run ends well: it recovers and goes on, or
stops with a message saying what to do, and never loses its last complete checkpoint.

All training runs share one tiny configuration (``_config()``, which ``train.py`` receives as
``--config=configs/tiny.py:1-BS`` and ``_FLAGS``), and the module turns on JAX's persistent
compilation cache, so the train step is compiled once for the in-process runs and the
``train.py`` subprocesses together.
"""

import errno
import io
import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import types

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from orbax.checkpoint._src.path import async_path
from PIL import Image

from biskip_jax.config import config_checks
from biskip_jax.data.datasets import BadImageError, load_image, save_image
from biskip_jax.errors import UserError
from biskip_jax.inference import full_resolution
from biskip_jax.train import checkpointing, train_lib, train_step, workdir_lock
from configs import tiny
from tests import stderr_process
from tests.conftest import persistent_compile_cache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TMP = ".orbax-checkpoint-tmp"
def _no_space():
  return OSError(errno.ENOSPC, "No space left on device")

# ``train.py --config=configs/tiny.py:1-BS`` with these flags trains the model, data and
# compiled train step of ``_config()`` (its checkpoints every 100000 steps unless a test says).
_FLAGS = {"train.num_steps": 100000, "train.steps_per_epoch": 2, "train.log_every": 1,
          "train.checkpoint_every": 100000}


def _config(**train):
  """Tiny 1-BS run; a long schedule that tests end with ``stop_at_step``."""
  config = tiny.get_config("1-BS")
  config.train.num_steps = 100000
  config.train.steps_per_epoch = 2
  config.train.log_every = 1
  config.train.checkpoint_every = 2
  for k, v in train.items():
    config.train[k] = v
  return config


@pytest.fixture(scope="module", autouse=True)
def compile_cache(tmp_path_factory):
  """A persistent XLA cache for this module (and its subprocesses); restored afterwards."""
  with persistent_compile_cache(str(tmp_path_factory.mktemp("xla_cache"))) as path:
    yield path


def _train_rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return {r["step"]: r for r in map(json.loads, f) if r["split"] == "train"}


def _steps(workdir):
  """The checkpoint steps orbax lists in ``workdir`` (read from disk)."""
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"),
                                  options=ocp.CheckpointManagerOptions(create=False))
  steps = sorted(manager.all_steps())
  manager.close()
  return steps


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
  """A healthy run stopped at step 4: ``(workdir, final state)``, checkpoints 2 and 4."""
  workdir = str(tmp_path_factory.mktemp("good"))
  state = train_lib.train_and_evaluate(_config(), workdir, stop_at_step=4)
  assert int(state.step) == 4 and _steps(workdir) == [2, 4]
  return workdir, state


# Divergence ------------------------------------------------------------------------------


def _nan_config(monkeypatch):
  # A NaN loss weight is refused up front (config_checks); these tests want it to reach the
  # train step, as a fault that appears only once training runs.
  monkeypatch.setattr(config_checks, "check_ranges", lambda config, sections=None, where=None: None)
  config = _config(max_bad_steps=2)
  config.loss.gamma1 = float("nan")  # Every loss, hence every step, is NaN.
  return config


@pytest.mark.slow
def test_divergence_without_a_checkpoint_stops_with_advice(tmp_path, monkeypatch):
  with pytest.raises(UserError, match=r"training diverged") as e:
    train_lib.train_and_evaluate(_nan_config(monkeypatch), str(tmp_path))
  msg = str(e.value)
  assert "2 consecutive steps" in msg and "at step 2" in msg, msg
  assert "--config.optim.g_lr" in msg and "again after restoring" not in msg, msg
  assert _steps(str(tmp_path)) == []  # Nothing was saved from the diverged run.
  rows = _train_rows(str(tmp_path))
  assert rows[1]["finite"] == 0.0 and rows[2]["skipped_steps"] == 2.0


@pytest.mark.slow
def test_divergence_restores_the_checkpoint_once_then_stops(good_run, tmp_path, caplog,
                                                            monkeypatch):
  workdir = str(tmp_path / "run")
  shutil.copytree(good_run[0], workdir)  # A good run with checkpoints 2 and 4 ...
  caplog.set_level(logging.INFO, logger="biskip_jax")
  with pytest.raises(UserError, match=r"training diverged") as e:  # ... then losses go NaN.
    train_lib.train_and_evaluate(_nan_config(monkeypatch), workdir)
  msg = str(e.value)
  assert "at step 6 again after restoring the checkpoint of step 4" in msg, msg
  assert "--config.optim.g_lr" in msg, msg
  log = [r.getMessage() for r in caplog.records]
  assert any("resumed from" in m and "at step 4" in m for m in log), log
  assert sum("restoring the checkpoint of step 4" in m for m in log) == 1, log
  assert _steps(workdir) == [2, 4]
  # The good checkpoints are untouched by the NaN steps.
  d = full_resolution.Deblurrer.from_checkpoint(workdir)
  assert d.step == 4
  for a, b in zip(jax.tree_util.tree_leaves(d.variables["params"]),
                  jax.tree_util.tree_leaves(good_run[1].gen.params)):
    np.testing.assert_array_equal(a, b)


# Preemption and SIGKILL ------------------------------------------------------------------


class _TrainPy(stderr_process.StderrProcess):
  """``python train.py`` on the tiny config in a subprocess, its stderr collected by a thread."""

  def __init__(self, workdir, cache_dir, **flags):
    args = [sys.executable, "train.py", "--config=configs/tiny.py:1-BS",
            f"--workdir={workdir}"]
    args += [f"--config.{k}={v}" for k, v in {**_FLAGS, **flags}.items()]
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu",
               JAX_COMPILATION_CACHE_DIR=cache_dir,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    super().__init__(args, env)


def _sigterm_once_training(run):
  """SIGTERM once a step is logged; the exit status must be 128 + 15."""
  try:
    run.wait_for(r"step \d+/100000", timeout=300)
    run.proc.send_signal(signal.SIGTERM)
    assert run.finish(timeout=120) == 143, run.stderr[-3000:]
  finally:
    run.cleanup()


def _leftovers(directory):
  return sorted(n for n in os.listdir(directory) if _TMP in n)


@pytest.mark.slow
def test_sigterm_with_data_worker_processes_exits_without_noise(good_run, compile_cache,
                                                                tmp_path):
  del good_run  # Only so that the train step is in the compilation cache.
  run = _TrainPy(str(tmp_path / "run"), compile_cache, **{"data.num_workers": 2})
  _sigterm_once_training(run)
  assert "run the same command to resume" in run.stderr
  # grain's workers are stopped by the run, not by the interpreter's exit hooks.
  assert "Traceback" not in run.stderr and "leaked" not in run.stderr, run.stderr[-3000:]


@pytest.mark.slow
def test_sigterm_then_sigkill_during_a_save_lose_nothing(good_run, compile_cache, tmp_path,
                                                         caplog):
  del good_run  # Only so that the train step is in the compilation cache.
  workdir = str(tmp_path / "run")
  ckpt_dir = os.path.join(workdir, "checkpoints")

  # 1. SIGTERM (preemption) once training is under way: checkpoint, hint, and the exit status
  # of a process ended by SIGTERM (128 + 15), so that `train.py && evaluate.py` stops there.
  run = _TrainPy(workdir, compile_cache)
  _sigterm_once_training(run)
  _, m = run.wait_for(r"stopped at step (\d+) after a signal", timeout=1)
  stopped = int(m.group(1))
  assert stopped >= 1 and "run the same command to resume" in run.stderr
  assert _steps(workdir) == [stopped] and os.listdir(ckpt_dir) == [str(stopped)]

  # 2. The same command resumes; SIGKILL it while it writes its second checkpoint.
  run = _TrainPy(workdir, compile_cache, **{"train.checkpoint_every": 1})
  try:
    i, _ = run.wait_for(rf"resumed from .* at step {stopped}\b", timeout=300)
    run.wait_for(rf"step {stopped + 1}/", timeout=300, start=i)
    seen, deadline = set(), time.monotonic() + 120
    while len(seen) < 2 and time.monotonic() < deadline and run.proc.poll() is None:
      seen.update(_leftovers(ckpt_dir))
      time.sleep(0.005)
    run.proc.send_signal(signal.SIGKILL)
    assert run.finish(timeout=60) == -signal.SIGKILL, run.stderr[-3000:]
  finally:
    run.cleanup()
  assert len(seen) == 2, f"no save seen in progress: {os.listdir(ckpt_dir)}"

  # Every step orbax lists is complete and restorable; the half-written one is not listed.
  steps = _steps(workdir)
  assert steps and steps[0] >= stopped, steps
  for step in steps:
    assert full_resolution.Deblurrer.from_checkpoint(os.path.join(ckpt_dir, str(step))).step == step
  latest = full_resolution.Deblurrer.from_checkpoint(workdir)
  assert latest.step == steps[-1]
  # The kill left the next checkpoint half-written.
  assert _leftovers(ckpt_dir) == [f"{steps[-1] + 1}{_TMP}"], (os.listdir(ckpt_dir), steps)

  # 3. Resuming once more continues from the latest complete checkpoint and rewrites the
  # half-written step over its leftover.
  caplog.set_level(logging.INFO, logger="biskip_jax")
  state = train_lib.train_and_evaluate(_config(), workdir, stop_at_step=steps[-1] + 1)
  assert int(state.step) == steps[-1] + 1
  assert any(f"at step {steps[-1]}" in r.getMessage() and "resumed" in r.getMessage()
             for r in caplog.records)
  assert _steps(workdir)[-1] == steps[-1] + 1
  assert not _leftovers(ckpt_dir)


# Disk full -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_state():
  return train_step.create_train_state(tiny.get_config("1-BS"), 10, 32)


def _leaves(state):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.device_get(
      state.replace(rng=jax.random.key_data(state.rng))))]


@pytest.mark.slow
def test_failed_save_keeps_the_previous_checkpoint(small_state, tmp_path, monkeypatch, caplog):
  ckpt = checkpointing.Checkpointer(str(tmp_path), tiny.get_config("1-BS"))
  assert ckpt.save(1, small_state, None)

  # The disk fills up as the checkpoint of step 2 is committed (its files are written).
  rename = async_path.rename

  async def full_disk(src, dst):
    if os.sep + "2" + _TMP in str(src):
      raise _no_space()
    return await rename(src, dst)

  monkeypatch.setattr(async_path, "rename", full_disk)
  later = small_state.replace(step=small_state.step + 1)
  with caplog.at_level(logging.ERROR, logger="biskip_jax"):
    assert ckpt.save(2, later, None) is False
  assert any("step 2" in r.getMessage() and "No space left on device" in r.getMessage()
             for r in caplog.records if r.levelno == logging.ERROR), caplog.text
  assert ckpt.manager.latest_step() == 1 and _leftovers(ckpt.directory)
  assert _steps(str(tmp_path)) == [1]
  fresh = checkpointing.Checkpointer(str(tmp_path), tiny.get_config("1-BS"))  # As on resume.
  restored, step = fresh.restore_latest(small_state, None)
  fresh.close()
  assert step == 1
  for a, b in zip(_leaves(small_state), _leaves(restored)):
    np.testing.assert_array_equal(a, b)

  # The manager is not wedged: once space is back the next checkpoint is written.
  monkeypatch.setattr(async_path, "rename", rename)
  assert ckpt.save(3, later, None)
  assert ckpt.manager.latest_step() == 3
  ckpt.close()


@pytest.mark.slow
def test_failed_best_metric_write_keeps_the_previous_one(small_state, tmp_path, monkeypatch,
                                                         caplog):
  ckpt = checkpointing.Checkpointer(str(tmp_path), tiny.get_config("1-BS"))
  ckpt.save_best(1, small_state, None, 20.0)
  assert ckpt.best_metric() == 20.0

  def full_disk(obj, f):
    f.write(json.dumps(obj)[:3])
    raise _no_space()

  monkeypatch.setattr(checkpointing, "json", types.SimpleNamespace(dump=full_disk,
                                                                   load=json.load))
  with caplog.at_level(logging.ERROR, logger="biskip_jax"):
    ckpt.save_best(2, small_state, None, 25.0)  # Logged, not raised.
  assert "No space left on device" in caplog.text
  assert ckpt.best_metric() == 20.0  # A resumed run can still read it.
  ckpt.close()


@pytest.mark.slow
def test_training_goes_on_when_a_checkpoint_cannot_be_written(good_run, tmp_path, monkeypatch,
                                                              caplog):
  save = ocp.CheckpointManager.save
  calls = []

  def full_disk_at_step_2(self, step, *args, **kwargs):
    calls.append(step)
    if step == 2:
      raise _no_space()
    return save(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk_at_step_2)
  workdir = str(tmp_path)
  with caplog.at_level(logging.ERROR, logger="biskip_jax"):
    state = train_lib.train_and_evaluate(_config(checkpoint_every=1), workdir, stop_at_step=4)
  assert calls == [1, 2, 3, 4] and int(state.step) == 4
  assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
      f"checkpoint at step 2 could not be written to {workdir}/checkpoints "
      "([Errno 28] No space left on device); training continues and the previous "
      "checkpoint is kept"]
  assert _steps(workdir) == [1, 3, 4]
  # The failed save did not disturb training: same results as the healthy run.
  assert _train_rows(workdir) == _train_rows(good_run[0])


# Determinism -----------------------------------------------------------------------------


@pytest.mark.slow
def test_same_config_gives_identical_runs(good_run, tmp_path):
  workdir, state = good_run
  again = train_lib.train_and_evaluate(_config(), str(tmp_path), stop_at_step=4)
  rows, rows_again = _train_rows(workdir), _train_rows(str(tmp_path))
  assert sorted(rows) == [1, 2, 3, 4] and rows == rows_again
  assert all(math.isfinite(rows[s]["g_loss"]) for s in rows)
  for a, b in zip(_leaves(state), _leaves(again)):
    np.testing.assert_array_equal(a, b)


# Inference inputs ------------------------------------------------------------------------


def _encoded(fmt, shape=(48, 40, 3), seed=0):
  buf = io.BytesIO()
  Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape, np.uint8)).save(
      buf, format=fmt)
  return buf.getvalue()


def _bad_files(tmp_path):
  """``{name: path}`` of files that are not readable images."""
  files = {}
  for seed in range(4):
    for ext in (".png", ".jpg"):
      n = np.random.default_rng(seed).integers(1, 5000)
      files[f"random{seed}{ext}"] = np.random.default_rng(seed).bytes(n)
  png, jpg = _encoded("PNG"), _encoded("JPEG")
  files.update({
      "truncated.png": png[:len(png) // 2], "truncated.jpg": jpg[:len(jpg) // 2],
      "header_only.png": png[:33], "header_only.jpg": jpg[:20],
      "empty.png": b"",
      "png_header_garbage.png": png[:8] + np.random.default_rng(9).bytes(2000),
      "jpeg_header_garbage.jpg": b"\xff\xd8\xff\xe0" + np.random.default_rng(8).bytes(2000),
      "text.jpg": b"hello, not an image\n" * 10,
  })
  # A PNG claiming 40000 x 40000 pixels (decompression bomb) with no pixel data.
  bomb = bytearray(png[:33])
  bomb[16:24] = (40000).to_bytes(4, "big") * 2
  files["bomb.png"] = bytes(bomb)
  paths = {}
  for name, data in files.items():
    (tmp_path / name).write_bytes(data)
    paths[name] = str(tmp_path / name)
  (tmp_path / "folder.png").mkdir()
  paths["folder.png"] = str(tmp_path / "folder.png")
  paths["missing.png"] = str(tmp_path / "missing.png")
  return paths


def test_unreadable_images_raise_bad_image_error_naming_the_file(tmp_path):
  for name, path in _bad_files(tmp_path).items():
    with pytest.raises(BadImageError) as e:  # Any other exception type fails the test.
      load_image(path)
    assert path in str(e.value), (name, str(e.value))


@pytest.mark.slow
def test_extreme_sizes_load_and_restore(small_state, tmp_path):
  deblurrer = full_resolution.Deblurrer(tiny.get_config("1-BS"), {
      "params": small_state.gen.params, "batch_stats": small_state.gen.batch_stats})
  for h, w in ((1, 1), (1, 5000)):
    img = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), np.uint8)
    path = str(tmp_path / f"{h}x{w}.png")
    save_image(path, img)
    loaded = load_image(path)
    np.testing.assert_array_equal(loaded, img)
    out = deblurrer(loaded)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8


# Two runs on one workdir -----------------------------------------------------------------


@pytest.mark.slow
def test_second_train_py_on_a_busy_workdir_stops_at_once(good_run, compile_cache, tmp_path):
  del good_run  # Only so that the train step is in the compilation cache.
  workdir = str(tmp_path / "run")
  first = _TrainPy(workdir, compile_cache)
  try:
    first.wait_for(r"step \d+/100000", timeout=300)
    config_json = os.path.join(workdir, "config.json")
    before = os.stat(config_json).st_mtime_ns
    second = _TrainPy(workdir, compile_cache)
    try:
      assert second.finish(timeout=120) == 2, second.stderr[-3000:]
    finally:
      second.cleanup()
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"train.py: error: --workdir {workdir} is in use by another "
                               f"training process (pid {first.proc.pid} on "), lines
    assert first.proc.poll() is None  # The first run goes on, its files untouched.
    assert os.stat(config_json).st_mtime_ns == before
  finally:
    first.proc.send_signal(signal.SIGKILL)  # A crash: the lock must not stay behind.
    first.finish(timeout=60)
    first.cleanup()
  with workdir_lock.WorkdirLock(workdir):
    pass


# Checkpoints and logs that cannot be written ---------------------------------------------


def _chattr(flag, path):
  """``chattr +i``/``-i`` (as root, chmod does not stop writes); False where not permitted."""
  r = subprocess.run(["chattr", flag, str(path)], capture_output=True, text=True)
  return r.returncode == 0


@pytest.mark.slow
def test_train_py_whose_checkpoints_cannot_be_written_does_not_end_as_a_success(
    good_run, compile_cache, tmp_path):
  del good_run  # Only so that the train step is in the compilation cache.
  workdir = tmp_path / "run"
  ckpt_dir = workdir / "checkpoints"
  ckpt_dir.mkdir(parents=True)
  if not _chattr("+i", ckpt_dir):
    pytest.skip("chattr +i is not permitted here: no way to make a folder unwritable as root")
  try:
    run = _TrainPy(str(workdir), compile_cache, **{"train.num_steps": 3,
                                                    "train.checkpoint_every": 2})
    try:
      rc = run.finish(timeout=300)
    finally:
      run.cleanup()
  finally:
    _chattr("-i", ckpt_dir)
  assert rc == 2, run.stderr[-3000:]
  assert "Traceback" not in run.stderr, run.stderr[-3000:]
  last = run.stderr.strip().splitlines()[-1]
  assert last.startswith(f"train.py: error: the final checkpoint of step 3 could not be "
                         f"written to {ckpt_dir} in 3 tries ("), last
  assert last.endswith("the newest checkpoint is none: free disk space or make the folder "
                       "writable, then run the same command"), last
  assert sorted(_train_rows(str(workdir))) == [1, 2, 3]  # Training itself went on.
  assert os.listdir(ckpt_dir) == []


def _fill(directory):
  """Writes ``directory/filler`` until the disk is full."""
  with open(os.path.join(directory, "filler"), "wb") as f:
    try:
      while True:
        f.write(b"\0" * 65536)
        f.flush()
    except OSError as e:
      assert e.errno == errno.ENOSPC, e


@pytest.mark.slow
def test_train_py_on_a_disk_that_fills_up_goes_on_then_reports_the_lost_work(
    good_run, compile_cache, tmp_path):
  del good_run  # Only so that the train step is in the compilation cache.
  disk = tmp_path / "disk"
  disk.mkdir()
  r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)],
                     capture_output=True, text=True)
  if r.returncode:
    pytest.skip(f"cannot mount a small tmpfs to fill up ({r.stderr.strip()})")
  try:
    workdir = disk / "run"
    run = _TrainPy(str(workdir), compile_cache)
    try:
      run.wait_for(r"step 2/100000", timeout=300)
      _fill(disk)  # The disk is full from about step 3 on.
      run.wait_for(r"cannot write metrics.jsonl from step \d+ on \(No space left", timeout=120)
      run.wait_for(r"step \d+/100000", timeout=60, start=len(run.lines))  # Training goes on.
      run.proc.send_signal(signal.SIGTERM)  # Then the job is preempted.
      rc = run.finish(timeout=120)
    finally:
      run.cleanup()
    rows = _train_rows(str(workdir))
  finally:
    subprocess.run(["umount", str(disk)], check=True)
  assert rc == 2, run.stderr[-3000:]  # Neither 0 nor 143: the final checkpoint is missing.
  assert "Traceback" not in run.stderr, run.stderr[-3000:]
  last = run.stderr.strip().splitlines()[-1]
  m = re.fullmatch(
      r"train\.py: error: the final checkpoint of step \d+ could not be written to "
      + re.escape(str(workdir / "checkpoints")) + r" in 3 tries \(.*\); the newest checkpoint "
      r"is none: free disk space or make the folder writable, then run the same command; "
      r"the logs in " + re.escape(str(workdir)) + r" could not be written: (.*); the metrics "
      r"since are lost", last)
  assert m, last
  assert re.search(r"metrics\.jsonl from step \d+ on \(No space left on device\)", m.group(1))
  assert 1 in rows and 2 in rows  # What was written before the disk filled up is intact.


# Damaged checkpoints ---------------------------------------------------------------------


def _data_files(step_dir):
  """The array data files of a checkpoint (OCDBT), largest first."""
  d = os.path.join(step_dir, "state", "ocdbt.process_0", "d")
  return sorted((os.path.join(d, f) for f in os.listdir(d)), key=os.path.getsize, reverse=True)


def _truncate(path):
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


# A failed orbax restore leaves its other reads' coroutines to the garbage collector, which
# reports each as an unraisable exception: noise, not the outcome under test.
_ORBAX_NOISE = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


_DAMAGE = {
    # Every array file cut short, as by a copy onto a full disk. (Which file holds the
    # generator's arrays varies from run to run: one file alone may spare them.)
    "truncated data files": lambda step_dir: [_truncate(f) for f in _data_files(step_dir)],
    "missing _METADATA": lambda step_dir: os.remove(os.path.join(step_dir, "state",
                                                                 "_METADATA")),
    "truncated _METADATA": lambda step_dir: _truncate(os.path.join(step_dir, "state",
                                                                   "_METADATA")),
}


@pytest.mark.slow
@_ORBAX_NOISE
@pytest.mark.parametrize("damage", sorted(_DAMAGE))
def test_resume_skips_a_damaged_latest_checkpoint(good_run, tmp_path, caplog, damage):
  workdir = str(tmp_path / "run")
  shutil.copytree(good_run[0], workdir)  # Checkpoints 2 and 4 ...
  ckpt_dir = os.path.join(workdir, "checkpoints")
  _DAMAGE[damage](os.path.join(ckpt_dir, "4"))  # ... and 4 is damaged.
  caplog.set_level(logging.INFO, logger="biskip_jax")
  state = train_lib.train_and_evaluate(_config(), workdir, stop_at_step=4)
  warnings_ = [r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING and "checkpoint" in r.getMessage()
               and "stopped at step 4" not in r.getMessage()]  # (stop_at_step's own line)
  assert len(warnings_) == 1, warnings_
  assert warnings_[0].startswith(f"the checkpoint {ckpt_dir}/4 cannot be restored ("), warnings_
  assert warnings_[0].endswith(f"); resuming from the checkpoint of step 2 instead (the "
                               f"damaged one is kept as {ckpt_dir}/4.damaged)"), warnings_
  assert any("resumed from" in r.getMessage() and "at step 2" in r.getMessage()
             for r in caplog.records)
  # Steps 3 and 4 are trained again, exactly as the first time, and step 4 is saved anew.
  assert _steps(workdir) == [2, 4] and "4.damaged" in os.listdir(ckpt_dir)
  for a, b in zip(_leaves(state), _leaves(good_run[1])):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
@_ORBAX_NOISE
def test_resume_with_no_restorable_checkpoint_is_one_line(good_run, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(good_run[0], workdir)
  for step in ("2", "4"):
    os.remove(os.path.join(workdir, "checkpoints", step, "state", "_METADATA"))
  with pytest.raises(UserError) as e:
    train_lib.train_and_evaluate(_config(), workdir, stop_at_step=5)
  msg = str(e.value)
  assert msg.startswith(f"no checkpoint in {workdir}/checkpoints can be restored (steps 4, 2); "
                        f"the newest: the checkpoint {workdir}/checkpoints/4 cannot be "
                        "restored ("), msg
  assert "\n" not in msg and _steps(workdir) == [2, 4]  # Nothing renamed or removed.


def _run_py(args):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable] + args, cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300)


@pytest.mark.slow
def test_deblur_and_evaluate_py_skip_a_damaged_latest_checkpoint(good_run, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(good_run[0], workdir)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  _DAMAGE["truncated data files"](os.path.join(ckpt_dir, "4"))
  before = sorted(os.listdir(ckpt_dir))
  photo = str(tmp_path / "photo.png")
  save_image(photo, np.random.default_rng(0).integers(0, 256, (24, 40, 3), np.uint8))
  skipped = (f"the checkpoint {ckpt_dir}/4 cannot be restored (", "); using the checkpoint of "
             "step 2 instead")
  r = _run_py(["deblur.py", f"--ckpt={workdir}", f"--out={tmp_path / 'out'}", photo])
  assert r.returncode == 0, r.stderr[-3000:]
  warned = [line for line in r.stderr.splitlines() if skipped[0] in line]
  assert len(warned) == 1 and warned[0].endswith(skipped[1]), r.stderr[-3000:]
  assert os.listdir(tmp_path / "out") == ["photo.png"] or sorted(
      os.listdir(tmp_path / "out")) == [".deblur_outputs.jsonl", "photo.png"]
  r = _run_py(["evaluate.py", f"--ckpt={workdir}", "--data=synthetic", "--max_images=1",
               "--nosaliency"])
  assert r.returncode == 0, r.stderr[-3000:]
  warned = [line for line in r.stderr.splitlines() if skipped[0] in line]
  assert len(warned) == 1 and warned[0].endswith(skipped[1]), r.stderr[-3000:]
  assert sorted(os.listdir(ckpt_dir)) == before  # Inference renames nothing.


@pytest.mark.slow
@_ORBAX_NOISE
def test_inference_reads_only_the_generator(good_run, tmp_path):
  """Critic and optimizer arrays that stop a resume do not stop inference from using step 4.

  Damaging one OCDBT data file cannot reliably spare the generator: orbax packs the arrays of
  all networks into shared files in an order that varies from run to run (so a test that cut
  one file failed whenever every file held some generator array). Here checkpoint 4 is
  written again with every critic array one channel wider than the config's critic: resuming
  from it fails, and inference, which reads the generator's arrays alone, still uses it.
  """
  workdir, state = good_run
  config = _config()
  copy = str(tmp_path / "run")
  shutil.copytree(workdir, copy)
  shutil.rmtree(os.path.join(copy, "checkpoints", "4"))
  widen = lambda x: np.zeros(x.shape[:-1] + (x.shape[-1] + 1,), x.dtype) if np.ndim(x) else x
  bad = state.replace(critic=state.critic.replace(
      params=jax.tree_util.tree_map(widen, state.critic.params),
      opt_state=jax.tree_util.tree_map(widen, state.critic.opt_state)))
  ckpt = checkpointing.Checkpointer(copy, config)
  try:
    assert ckpt.save(4, bad, None)
    with pytest.raises(UserError, match=r"the checkpoint \S*checkpoints/4 "):
      ckpt.restore(4, state, None)  # Training cannot resume from this checkpoint ...
  finally:
    ckpt.close()
  d = full_resolution.Deblurrer.from_checkpoint(copy)
  assert d.step == 4  # ... but inference can, with the generator exactly as trained.
  for a, b in zip(jax.tree_util.tree_leaves(d.variables["params"]),
                  jax.tree_util.tree_leaves(state.gen.params)):
    np.testing.assert_array_equal(a, b)


# Orbax reads still in flight when a restore fails finish later into the loop orbax closed;
# each then raises "Event loop is closed" as an unraisable error. The stand-in for orbax's
# restore below makes that happen every time (real damage does so only when the failing read
# is not the last), with tensorstore futures that the script resolves after the failure.
_IN_FLIGHT_READS = """
import asyncio, gc, sys, time
import orbax.checkpoint as ocp
import tensorstore as ts
from orbax.checkpoint._src import asyncio_utils
from biskip_jax.train import checkpointing
from biskip_jax.errors import UserError
from configs import tiny

promises = []

def damaged_restore(self, step, args=None):
  reads = [ts.Promise.new() for _ in range(20)]
  promises.extend(p for p, _ in reads)

  async def read(future):
    return await future

  async def damaged():
    await asyncio.sleep(0.01)
    raise ValueError("OUT_OF_RANGE: Error reading state.gen.params")

  async def restore():
    await asyncio.gather(*[read(f) for _, f in reads], damaged())

  asyncio_utils.run_sync(restore())

ocp.CheckpointManager.restore = damaged_restore
ocp.CheckpointManager.all_steps = lambda self, read=False: [4]
try:
  checkpointing.restore_generator_variables(sys.argv[1], tiny.get_config("1-BS"))
except UserError as e:
  print(e, file=sys.stderr)
for p in promises:
  p.set_result(0)

class Other:
  def __del__(self):
    raise ValueError("another unraisable error")

Other()
gc.collect()
time.sleep(0.2)
"""


@pytest.mark.slow
def test_reads_left_in_flight_by_a_failed_restore_print_nothing(tmp_path):
  r = subprocess.run([sys.executable, "-c", _IN_FLIGHT_READS, str(tmp_path)], cwd=ROOT,
                     env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu"),
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  lines = r.stderr.splitlines()
  assert lines[0] == (f"no checkpoint in {tmp_path} can be restored (steps 4); the newest: the "
                      f"checkpoint {tmp_path}/4 cannot be restored (OUT_OF_RANGE: Error reading "
                      "state.gen.params). Is the run's config.json edited, or are the files "
                      "damaged?"), r.stderr[-3000:]
  assert "Event loop is closed" not in r.stderr, r.stderr[-3000:]
  # Other unraisable errors are still shown.
  assert "ValueError: another unraisable error" in r.stderr, r.stderr[-3000:]


def test_unfinished_checkpoints_are_removed_when_training_starts(small_state, tmp_path, caplog):
  unfinished = [tmp_path / "checkpoints" / f"3{_TMP}", tmp_path / "best" / f"2{_TMP}-1700000000"]
  for d in unfinished:
    (d / "state").mkdir(parents=True)
    (d / "state" / "_METADATA").write_text("{")
  caplog.set_level(logging.WARNING, logger="biskip_jax")
  ckpt = checkpointing.Checkpointer(str(tmp_path), tiny.get_config("1-BS"))
  try:
    assert [r.getMessage() for r in caplog.records] == [
        f"removed {d}: a checkpoint whose save never finished (the run was stopped during it)"
        for d in unfinished]
    assert not _leftovers(ckpt.directory) and not _leftovers(ckpt.best_directory)
    assert ckpt.save(3, small_state, None) and _steps(str(tmp_path)) == [3]
  finally:
    ckpt.close()


# Config files ----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_config_file_that_does_not_compile_or_run_is_one_line(tmp_path):
  (tmp_path / "syntax.py").write_text("import ml_collections\n\ndef get_config():\n"
                                      "  c = ml_collections.ConfigDict(\n  return c\n")
  (tmp_path / "name.py").write_text("def get_config():\n  return undefined_name\n")
  os.mkfifo(tmp_path / "fifo.py")
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  expected = {
      "syntax.py": f"--config: {tmp_path / 'syntax.py'}:4: SyntaxError: '(' was never closed",
      "name.py": f"--config: {tmp_path / 'name.py'}:2: NameError: name 'undefined_name' is not "
                 "defined",
      "fifo.py": f"--config={tmp_path / 'fifo.py'}: a FIFO, not a config file",
  }
  for name, message in expected.items():
    r = subprocess.run([sys.executable, "train.py", f"--config={tmp_path / name}",
                        f"--workdir={tmp_path / 'run'}"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == f"train.py: error: {message}", (
        name, r.stderr[-3000:])
  assert not os.path.exists(tmp_path / "run")


# Data-loading workers --------------------------------------------------------------------


def _children(pid):
  """Pids of the live processes whose parent is ``pid``."""
  kids = []
  for name in os.listdir("/proc"):
    if name.isdigit():
      try:
        with open(f"/proc/{name}/stat") as f:
          fields = f.read().rsplit(")", 1)[1].split()
      except OSError:
        continue
      if int(fields[1]) == pid and fields[0] != "Z":
        kids.append(int(name))
  return kids


def _alive(pid):
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except OSError:
    return False


@pytest.mark.slow
def test_data_workers_end_with_a_killed_train_py(good_run, compile_cache, tmp_path):
  del good_run  # Only so that the train step is in the compilation cache.
  if not os.path.isdir("/proc/self"):
    pytest.skip("needs /proc to find the worker processes")
  run = _TrainPy(str(tmp_path / "run"), compile_cache, **{"data.num_workers": 1})
  workers = []
  try:
    run.wait_for(r"step 2/100000", timeout=300)
    workers = _children(run.proc.pid)
    assert workers, "no data-loading worker process found"
    run.proc.send_signal(signal.SIGKILL)
    assert run.finish(timeout=60) == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while any(map(_alive, workers)) and time.monotonic() < deadline:
      time.sleep(0.1)
    assert not any(map(_alive, workers)), "workers outlived the killed train.py by 10 s"
  finally:
    run.cleanup()
    for pid in workers:  # Only the workers this test started, by id.
      if _alive(pid):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
@_ORBAX_NOISE
def test_resume_with_a_config_json_that_does_not_fit_its_checkpoints_is_one_line(good_run,
                                                                                 tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(good_run[0], workdir)
  path = os.path.join(workdir, "config.json")
  with open(path) as f:
    edited = json.load(f)
  edited["model"]["channels"] = [8, 8, 8, 8, 8]  # Edited by hand ...
  with open(path, "w") as f:
    json.dump(edited, f)
  config = _config()
  config.model.channels = (8, 8, 8, 8, 8)  # ... and passed on the command line too.
  with pytest.raises(UserError) as e:
    train_lib.train_and_evaluate(config, workdir, stop_at_step=5)
  msg = str(e.value)
  assert msg.startswith(f"no checkpoint in {workdir}/checkpoints can be restored (steps 4, 2); "
                        f"the newest: the checkpoint {workdir}/checkpoints/4 "), msg
  assert msg.endswith("Is the run's config.json edited, or are the files damaged?"), msg
  assert "\n" not in msg and _steps(workdir) == [2, 4]
