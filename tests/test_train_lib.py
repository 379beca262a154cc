"""Tests for the training driver: resume equality, workdir checks, bad settings."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from biskip_jax import train_lib
from biskip_jax.errors import UserError
from tests.helpers import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config():
  config = tiny_config("SA1-BS")
  config.train.num_steps = 6
  config.train.steps_per_epoch = 2  # λ and q change across the restart.
  config.train.checkpoint_every = 100
  return config


def _train_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return {r["step"]: r for r in map(json.loads, f) if r["split"] == "train"}


def _leaves(state):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.device_get(
      state.replace(rng=jax.random.key_data(state.rng))))]


@pytest.mark.slow
def test_interrupted_run_resumes_bit_for_bit(tmp_path):
  straight = train_lib.train_and_evaluate(_config(), str(tmp_path / "a"))
  first = train_lib.train_and_evaluate(_config(), str(tmp_path / "b"), stop_at_step=3)
  assert int(first.step) == 3
  assert sorted(os.listdir(tmp_path / "b" / "checkpoints")) == ["3"]
  resumed = train_lib.train_and_evaluate(_config(), str(tmp_path / "b"))
  assert int(resumed.step) == int(straight.step) == 6
  for a, b in zip(_leaves(straight), _leaves(resumed)):
    np.testing.assert_array_equal(a, b)
  ma, mb = _train_metrics(tmp_path / "a"), _train_metrics(tmp_path / "b")
  assert ma[6] == mb[6] and float(ma[6]["lam"]) < float("inf")
  with open(tmp_path / "b" / "config.json") as f:
    assert json.load(f)["model"]["channels"] == [4, 8, 8, 8, 8]
  assert any(n.startswith("events.out.tfevents") for n in os.listdir(tmp_path / "a"))


def test_resume_with_another_model_is_refused(tmp_path):
  config = _config()
  train_lib.save_or_check_config(config, str(tmp_path))
  other = _config()
  other.model.channels = (8, 8, 8, 8, 8)
  with pytest.raises(UserError, match=r"different model .*model\.channels.*--workdir"):
    train_lib.save_or_check_config(other, str(tmp_path))
  longer = _config()
  longer.train.num_steps = 100  # Other training settings may change on resume.
  train_lib.save_or_check_config(longer, str(tmp_path))


def test_batch_must_divide_over_devices(monkeypatch):
  monkeypatch.setattr(jax, "device_count", lambda: 4)
  config = _config()
  config.train.batch_size = 6
  with pytest.raises(UserError, match=r"--config.train.batch_size=6 .* 4 devices"):
    train_lib.check_settings(config)


@pytest.mark.parametrize("field,value,match", [
    ("model.variant", "XL", "--config.model.variant='XL'"),
    ("loss.pixel", "l3", "--config.loss.pixel='l3'"),
    ("critic.norm", "batch", "--config.critic.norm='batch'"),
    ("critic.num_layers", 0, "--config.critic.num_layers=0: expected >= 1")])
def test_bad_settings_name_the_flag(field, value, match):
  config = _config()
  section, key = field.split(".")
  config[section][key] = value
  with pytest.raises(UserError, match=match.replace("(", r"\(").replace("[", r"\[")):
    train_lib.check_settings(config)


def test_resolve_schedule():
  config = _config()
  assert train_lib.resolve_schedule(config) == (2, 6, 3)
  config.train.num_steps = -1
  config.train.num_epochs = 5
  assert train_lib.resolve_schedule(config) == (2, 10, 5)


@pytest.mark.slow
def test_train_py_reports_user_errors_without_traceback(tmp_path):
  r = subprocess.run([sys.executable, "train.py", "--config=configs/quickstart.py:Q9-BS",
                      f"--workdir={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                     timeout=300, env=dict(os.environ, PYTHONPATH=ROOT))
  assert r.returncode != 0
  assert "Q9-BS" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
