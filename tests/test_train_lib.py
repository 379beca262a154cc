"""Tests for the training driver: resume equality, workdir checks, bad settings."""

import json
import os
import re
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio

from biskip_jax.config import config_checks
from biskip_jax.errors import UserError
from biskip_jax.inference import shipping
from biskip_jax.train import train_lib, train_step
from configs import tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config():
  config = tiny.get_config("SA1-BS")
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
  # Tracing steps 1 and 2 and image summaries change nothing but the profile folder and logs.
  profiled = _config()
  profiled.train.profile, profiled.train.profile_steps = True, (1, 3)
  profiled.train.image_every = 3
  straight = train_lib.train_and_evaluate(profiled, str(tmp_path / "a"))
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
  events = [n for n in os.listdir(tmp_path / "a") if n.startswith("events.out.tfevents")]
  assert events
  assert b"train/blur_restored_sharp" in (tmp_path / "a" / events[0]).read_bytes()
  assert not any(b"train/blur_restored_sharp" in p.read_bytes()
                 for p in (tmp_path / "b").glob("events.out.tfevents*"))
  assert any(".xplane.pb" in f for _, _, files in os.walk(tmp_path / "a" / "profile")
             for f in files)
  assert not (tmp_path / "b" / "profile").exists()
  # The learning rates of both networks, as the optax schedules give them (the last step's).
  g_lr, d_lr = train_step.learning_rates(_config(), 6)
  assert ma[6]["g_lr"] == float(g_lr(5)) and ma[6]["d_lr"] == float(d_lr(5))
  assert ma[2]["g_lr"] == pytest.approx(_config().optim.g_lr) and ma[6]["g_lr"] < ma[2]["g_lr"]


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


def _train_py(*args):
  return subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=300, env=dict(os.environ, PYTHONPATH=ROOT))


@pytest.mark.slow
def test_train_py_refuses_a_hand_edited_config_json_that_disagrees(tmp_path):
  from configs import quickstart  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "run"
  train_lib.save_or_check_config(quickstart.get_config(), str(workdir))  # As training wrote it.
  path = workdir / "config.json"
  edited = json.loads(path.read_text())
  edited["optim"]["g_lr"] = 0.0005  # The user edits the run's learning rate by hand ...
  path.write_text(json.dumps(edited, indent=2))
  before = path.read_bytes()
  # ... and runs the same command again.
  r = _train_py("--config=configs/quickstart.py", f"--workdir={workdir}")
  assert r.returncode == 2, r.stderr[-2000:]
  assert r.stderr.strip().splitlines() == [
      f"train.py: error: {path} was edited by hand and differs from the command line in "
      "optim.g_lr (0.0005 in the file, 0.002 on the command line): pass the file's values as "
      "--config.FIELD=... flags, or undo the edit"]
  assert path.read_bytes() == before  # Neither dropped nor rewritten.
  # Passing the edited value on the command line honours it.
  config = quickstart.get_config()
  config.optim.g_lr = 0.0005
  train_lib.save_or_check_config(config, str(workdir))
  assert json.loads(path.read_text())["optim"]["g_lr"] == 0.0005


@pytest.mark.slow
def test_train_py_with_an_invalid_config_json_is_one_line(tmp_path):
  from configs import quickstart  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "run"
  train_lib.save_or_check_config(quickstart.get_config(), str(workdir))
  path = workdir / "config.json"
  path.write_bytes(path.read_bytes()[:100])  # A bad edit (or a full disk).
  r = _train_py("--config=configs/quickstart.py", f"--workdir={workdir}")
  assert r.returncode == 2, r.stderr[-2000:]
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(
      f"train.py: error: {path} is not a valid config ("), lines
  assert lines[0].endswith("): undo the edit, or remove the file to use the command line's "
                           "config"), lines


def test_resume_with_other_training_settings_says_so(tmp_path, caplog):
  train_lib.save_or_check_config(_config(), str(tmp_path))
  longer = _config()
  longer.train.num_steps = 100
  with caplog.at_level("WARNING", logger="biskip_jax"):
    train_lib.save_or_check_config(longer, str(tmp_path))
  assert [r.getMessage() for r in caplog.records] == [
      f"{tmp_path}/config.json: the command line changes train.num_steps (6 in the file, 100 "
      "on the command line)"]
  with open(tmp_path / "config.json") as f:
    assert json.load(f)["train"]["num_steps"] == 100


def test_batch_must_divide_over_devices(monkeypatch):
  monkeypatch.setattr(jax, "device_count", lambda: 4)
  config = _config()
  config.train.batch_size = 6
  with pytest.raises(UserError, match=r"--config.train.batch_size=6 .* 4 devices"):
    config_checks.check_settings(config)


@pytest.mark.parametrize("field,value,match", [
    ("model.variant", "XL", "--config.model.variant='XL'"),
    ("model.norm", "group", "--config.model.norm='group': expected one of batch, instance, none"),
    ("model.pool", "stride", "--config.model.pool='stride': expected one of avg, max"),
    ("loss.pixel", "l3", "--config.loss.pixel='l3'"),
    ("loss.vgg_layer", "conv9_9", "--config.loss.vgg_layer='conv9_9': expected one of conv1_1"),
    ("data.blur_kind", "gamma", "--config.data.blur_kind='gamma': expected one of blur, "
     "blur_gamma"),
    ("critic.norm", "batch", "--config.critic.norm='batch'"),
    ("critic.num_layers", 0, "--config.critic.num_layers=0: must be an integer >= 1"),
    ("train.compute_dtype", "float16", "--config.train.compute_dtype='float16'")])
def test_bad_settings_name_the_flag(field, value, match):
  config = _config()
  section, key = field.split(".")
  config[section][key] = value
  with pytest.raises(UserError, match=match.replace("(", r"\(").replace("[", r"\[")):
    config_checks.check_settings(config)


@pytest.mark.parametrize("field,value,message", [
    ("optim.g_lr", -1.0, "--config.optim.g_lr=-1.0: must be a number > 0"),
    ("optim.d_lr", 0.0, "--config.optim.d_lr=0.0: must be a number > 0"),
    ("optim.g_lr", float("nan"), "--config.optim.g_lr=nan: must be a number > 0"),
    ("train.checkpoint_every", 0, "--config.train.checkpoint_every=0: must be an integer >= 1"),
    ("train.log_every", 0, "--config.train.log_every=0: must be an integer >= 1"),
    ("train.num_steps", 0,
     "--config.train.num_steps=0: must be an integer -1 (automatic) or >= 1"),
    ("data.max_bad_fraction", 1.5,
     "--config.data.max_bad_fraction=1.5: must be a number in [0, 1]"),
    ("optim.b2", 1.0, "--config.optim.b2=1.0: must be a number in [0, 1)"),
    ("model.channels", (4, 0, 8, 8, 8),
     "--config.model.channels=(4, 0, 8, 8, 8): each must be an integer >= 1"),
    ("train.batch_size", 2.5, "--config.train.batch_size=2.5: must be an integer >= 1"),
    ("data.synthetic.kernel_size", -3,
     "--config.data.synthetic.kernel_size=-3: must be an integer >= 1"),
    ("data.synthetic.jpeg_quality", (90, 60),
     "--config.data.synthetic.jpeg_quality=(90, 60): must be (lo, hi) with lo <= hi"),
    ("data.small_images", "crop",
     "--config.data.small_images='crop': expected one of error, pad"),
    ("data.synthetic.min_shake", 0.01,
     "--config.data.synthetic.min_shake=0.01: must be 0 (off) or at most max_shake=0.005")])
def test_numbers_out_of_range_name_the_flag_and_the_range(field, value, message):
  config = _config()
  *sections, key = field.split(".")
  node = config
  for section in sections:
    node = node[section]
  with node.ignore_type():
    node[key] = value
  with pytest.raises(UserError) as e:
    config_checks.check_settings(config)
  assert str(e.value) == message


def test_every_range_checked_field_exists_in_the_paper_config():
  from configs import biskip  # pylint: disable=g-import-not-at-top
  config = biskip.get_config()
  missing = [f for f in config_checks._FIELDS  # pylint: disable=protected-access
             if config_checks._get(config, f) is None]  # pylint: disable=protected-access
  assert not missing
  config_checks.check_ranges(config)  # The defaults pass.


@pytest.mark.slow
def test_train_py_refuses_a_negative_learning_rate_before_compiling(tmp_path):
  workdir = tmp_path / "run"
  for flag, message in (
      ("--config.optim.g_lr=-1", "train.py: error: --config.optim.g_lr=-1.0: must be a number "
       "> 0"),
      ("--config.train.checkpoint_every=0", "train.py: error: "
       "--config.train.checkpoint_every=0: must be an integer >= 1")):
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "train.py", "--config=configs/quickstart.py",
                        f"--workdir={workdir}", flag], cwd=ROOT, capture_output=True,
                       text=True, timeout=300, env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip().splitlines() == [message]
    assert not workdir.exists()  # Stopped before creating anything.
    assert time.monotonic() - t0 < 60  # Nothing compiled.


@pytest.mark.slow
def test_train_py_with_a_misspelled_config_field_is_one_line(tmp_path):
  r = _train_py("--config=configs/quickstart.py", f"--workdir={tmp_path / 'run'}",
                "--config.optim.glr=0.001")
  assert r.returncode == 2
  assert r.stderr.strip().splitlines() == [
      "train.py: error: --config.optim.glr: no such config field; did you mean g_lr?"]
  assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_train_py_with_an_unwritable_workdir_is_one_line(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a folder")
  r = _train_py("--config=configs/quickstart.py", f"--workdir={blocker / 'run'}")
  assert r.returncode == 2
  assert r.stderr.strip().splitlines() == [
      f"train.py: error: --workdir {blocker / 'run'}: cannot create the folder (Not a "
      "directory)"]
  locked = tmp_path / "locked"
  locked.mkdir()
  if subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode:
    pytest.skip("chattr +i is not permitted here: no way to make a folder unwritable as root")
  try:
    r = _train_py("--config=configs/quickstart.py", f"--workdir={locked}")
  finally:
    subprocess.run(["chattr", "-i", str(locked)], check=True)
  assert r.returncode == 2
  assert r.stderr.strip().splitlines() == [
      f"train.py: error: --workdir {locked}: cannot write to the folder (Operation not "
      "permitted)"]
  assert os.listdir(locked) == []


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


@pytest.mark.slow
def test_validation_compiles_once_per_run_and_uses_the_current_weights():
  """One Deblurrer per run: new weights do not recompile it (nor does the sharp-input check,
  whose figures are the PSNRs of the sharp images given back)."""
  config = tiny.get_config("1-BS")
  config.data.synthetic.num_eval = 2
  config.train.eval_num_images = 2
  config.train.eval_sharp_input = True
  state = train_step.create_train_state(config, 10, 32)
  validate = train_lib.Validator(config)
  first = validate(state)
  fn = validate._deblurrer._fn  # pylint: disable=protected-access
  sizes = len({ex["blur"].shape for ex in validate._examples})  # pylint: disable=protected-access
  params = jax.tree_util.tree_map(lambda p: p * 1.5, state.gen.params)
  scaled = state.replace(gen=state.gen.replace(params=params))
  second = validate(scaled)
  assert set(first) == set(validate.names) == {"psnr", "ssim", "num_images", "sharp_input_psnr",
                                               "sharp_input_psnr_min"}
  assert first["psnr"] != second["psnr"]
  assert first["num_images"] == 2
  # Independent of eval_lib's means: scikit-image's PSNR of each sharp image given back.
  psnrs = [peak_signal_noise_ratio(ex["sharp"], validate._deblurrer(ex["sharp"]))  # pylint: disable=protected-access
           for ex in validate._examples]  # pylint: disable=protected-access
  finite = [p for p in psnrs if np.isfinite(p)]
  np.testing.assert_allclose(second["sharp_input_psnr"], np.mean(finite), rtol=1e-6)
  np.testing.assert_allclose(second["sharp_input_psnr_min"], min(finite), rtol=1e-6)
  # The same compiled function served both validations: one program per image size.
  assert validate._deblurrer._fn is fn and fn._cache_size() == sizes  # pylint: disable=protected-access


@pytest.mark.slow
def test_the_validation_line_says_how_many_images_it_used(tmp_path, caplog):
  config = tiny.get_config("1-BS")
  config.train.num_steps, config.train.eval_every = 2, 2
  config.data.synthetic.num_eval, config.train.eval_num_images = 3, 2  # 2 of the split's 3.
  with caplog.at_level("INFO", logger="biskip_jax"):
    train_lib.train_and_evaluate(config, str(tmp_path))
  lines = [r.getMessage() for r in caplog.records if " eval: " in r.getMessage()]
  assert len(lines) == 1 and re.fullmatch(r"step 2 eval: psnr=\S+ ssim=\S+ num_images=2",
                                          lines[0]), lines


@pytest.mark.slow
def test_warm_start_takes_the_generator_of_a_run_and_nothing_else(tmp_path):
  source = _config()
  source.train.num_steps = 2
  trained = train_lib.train_and_evaluate(source, str(tmp_path / "source"))
  config = _config()
  config.train.seed = 1  # Another random init, so equality below means "copied".
  config.train.init_from = str(tmp_path / "source")
  fresh = train_step.create_train_state(config, 6, config.data.crop_size)
  (tmp_path / "child").mkdir()
  warm = train_lib.warm_start(fresh, config, str(tmp_path / "child"))
  # The new run's export will count the source's 2 steps too.
  assert shipping.lineage(str(tmp_path / "child"), "child", 4) == {"step": 6, "runs": [
      {"workdir": str(tmp_path / "source"), "steps": 2},
      {"workdir": "child", "steps": 4, "init_from": str(tmp_path / "source")}]}
  for a, b in zip(jax.tree_util.tree_leaves(warm.gen.params),
                  jax.tree_util.tree_leaves(trained.gen.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for a, b in zip(jax.tree_util.tree_leaves(warm.critic.params),
                  jax.tree_util.tree_leaves(fresh.critic.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # The critic starts fresh.
  assert int(warm.step) == 0


@pytest.mark.slow
def test_warm_start_from_another_model_or_a_missing_run_names_the_flag(tmp_path):
  source = _config()
  source.train.num_steps = 2
  train_lib.train_and_evaluate(source, str(tmp_path / "source"))
  config = _config()
  config.model.num_res_blocks = 2
  config.train.init_from = str(tmp_path / "source")
  fresh = train_step.create_train_state(config, 6, config.data.crop_size)
  with pytest.raises(UserError, match=r"init_from=.*model\.num_res_blocks"):
    train_lib.warm_start(fresh, config)
  config.train.init_from = str(tmp_path / "nowhere")
  with pytest.raises(UserError, match=r"--config\.train\.init_from=.*does not exist"):
    train_lib.warm_start(fresh, config)
