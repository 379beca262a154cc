"""Tests for the metric writers and the periodic actions of the training loop."""

import json
import logging
import math
import os

import jax.numpy as jnp
import numpy as np
import pytest

from biskip_jax.train.logs import periodic_actions, writers


def test_json_lines_rows_keep_the_metrics_jsonl_format(tmp_path):
  failures = writers.FailureLog()
  w = writers.JsonLinesWriter(str(tmp_path / "metrics.jsonl"), failures)
  w.write_scalars(3, {"train/g_loss": 0.5, "train/lam": math.inf, "run/total_steps": 6})
  w.write_scalars(4, {"spl/epoch": 2, "spl/lam": np.float32(1.5), "spl/q": 2.0,
                      "spl/loss": np.array([0.25, 0.5], np.float32), "spl/v": np.ones(2)})
  w.close()
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert lines == [
      '{"step": 3, "split": "train", "g_loss": 0.5, "lam": Infinity}',
      '{"step": 3, "split": "run", "total_steps": 6}',
      '{"step": 4, "split": "spl", "epoch": 2, "lam": 1.5, "q": 2.0, "loss": [0.25, 0.5], '
      '"v": [1.0, 1.0]}']
  assert not failures.failures
  series = writers.read_metrics(str(tmp_path))
  np.testing.assert_array_equal(series["train"]["g_loss"][0], [3])
  assert series["spl"]["lam"][1][0] == 1.5 and "v" not in series["spl"]


def test_read_metrics_keeps_the_latest_row_of_a_step(tmp_path):
  with open(tmp_path / "metrics.jsonl", "w") as f:
    for step, loss in ((1, 3.0), (2, 2.0), (1, 1.0)):  # Step 1 again after a resume.
      f.write(json.dumps({"step": step, "split": "train", "g_loss": loss}) + "\n")
  steps, values = writers.read_metrics(str(tmp_path))["train"]["g_loss"]
  np.testing.assert_array_equal(steps, [1, 2])
  np.testing.assert_array_equal(values, [1.0, 2.0])


def test_a_log_that_cannot_be_written_is_reported_once_with_its_step(caplog):
  if not os.path.exists("/dev/full"):
    pytest.skip("no /dev/full")
  failures = writers.FailureLog()
  w = writers.JsonLinesWriter("/dev/full", failures)
  with caplog.at_level(logging.ERROR, logger="biskip_jax"):
    w.write_scalars(7, {"train/g_loss": 1.0})
    w.write_scalars(8, {"train/g_loss": 1.0})  # Dropped: reported once.
  assert [str(f) for f in failures.failures] == ["full from step 7 on (No space left on device)"]
  assert caplog.messages == ["cannot write full from step 7 on (No space left on device); "
                             "training goes on, and the run will end with an error"]


def test_multi_writer_sends_every_call_to_each_writer(tmp_path, caplog):
  failures = writers.FailureLog()
  w = writers.create_default_writer(str(tmp_path), failures)
  assert [type(x) for x in w.writers] == [writers.TensorBoardWriter, writers.JsonLinesWriter,
                                         writers.LoggingWriter]
  with caplog.at_level(logging.INFO, logger="biskip_jax"):
    w.write_hparams({"model": {"channels": (4, 8)}})
    w.write_scalars(2, {"eval/psnr": 26.06349, "eval/ssim": 0.72571})
    w.write_scalars(0, {"run/total_steps": 11000, "run/total_epochs": np.int64(11)})
    w.write_scalars(2, {"train/g_loss": 1.0})  # In the progress line, not a line of its own.
    w.write_images(2, {"train/blur_restored_sharp": np.zeros((1, 4, 12, 3), np.uint8)})
    w.flush()
  w.close()
  assert caplog.messages == ["step 2 eval: psnr=26.06 ssim=0.7257",
                             "step 0 run: total_steps=11000 total_epochs=11"]  # Not 1.1e+04.
  assert [json.loads(x)["split"] for x in open(tmp_path / "metrics.jsonl")] == ["eval", "run",
                                                                                "train"]
  assert any(n.startswith("events.out.tfevents") for n in os.listdir(tmp_path))
  assert not failures.failures
  only_terminal = writers.create_default_writer(str(tmp_path / "other"), failures,
                                                just_logging=True)
  assert [type(x) for x in only_terminal.writers] == [writers.LoggingWriter]


def test_progress_line_reports_steps_per_second_and_eta(caplog):
  now = [100.0]
  report = periodic_actions.ReportProgress(total_steps=100, clock=lambda: now[0])
  values = {"g_loss": 0.123456, "pixel": 0.01, "v_mean": 0.5, "lam": 2.0, "q": 1.5,
            "skipped_steps": 1.0}
  with caplog.at_level(logging.INFO, logger="biskip_jax"):
    report(10, epoch=1, values=values)
    now[0] += 5.0
    report(20, epoch=2, values=values)
  assert caplog.messages == [
      "step 10/100 epoch 1 | ? steps/s ETA ? | g_loss=0.1235 pixel=0.01 | v=0.500 lam=2 "
      "q=1.500 skipped=1",
      "step 20/100 epoch 2 | 2.00 steps/s ETA 00:00:40 | g_loss=0.1235 pixel=0.01 | v=0.500 "
      "lam=2 q=1.500 skipped=1"]


def test_profile_traces_its_window_only(tmp_path):
  logdir = str(tmp_path / "profile")
  profile = periodic_actions.Profile(logdir, (1, 2))
  x = jnp.ones(3)
  profile(0, x)
  assert not profile.tracing and not os.path.exists(logdir)
  profile(1, x)
  assert profile.tracing
  x = x * 2
  profile(2, x)
  assert not profile.tracing
  traces = [f for _, _, files in os.walk(logdir) for f in files if ".xplane.pb" in f]
  assert traces
  off = periodic_actions.Profile(str(tmp_path / "off"), (0, 5), enabled=False)
  off(0, x)
  off.close(x)
  assert not os.path.exists(tmp_path / "off")
