"""Stored configs of earlier versions, upgraded once onto today's fields (config_checks.upgrade).

The fixtures in ``tests/fixtures/configs/`` are the ``config.json`` that training wrote with
earlier versions of ``configs/biskip.py`` (scheme SA1P-BS), generated from the git history by
running that version's ``configs/biskip.py`` and ``biskip_jax/objective/schemes.py``:

* ``first.json``: the first version that wrote ``config.json`` (before ``model.zero_residual``,
  the synthetic blur's later fields, DeblurGAN's critic layout and ``critic.norm_affine``);
* ``before_warm_start.json``: DeblurGAN's critic, before ``train.init_from``,
  ``train.compute_dtype``, ``train.profile_steps``, ``eval.size_bucket``, the frames and mix
  sources and the frequency loss;
* ``before_timed_checkpoints.json``: before ``train.checkpoint_every_secs`` and
  ``train.stop_check_every``.
"""

import functools
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from biskip_jax.config import config_checks, config_defaults
from biskip_jax.errors import UserError
from biskip_jax.inference import loading
from biskip_jax.nn import models

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "configs")
NAMES = ("first", "before_warm_start", "before_timed_checkpoints")

# What the code did for each field a stored config lacked, before the upgrade existed: the
# defaults of its `.get(field, default)` fallbacks (input_pipeline, models, train_lib,
# train_step, loading.eval_settings: the paper config's eval section), and for
# train.profile_steps the absence of any trace before the field (train.profile captured
# nothing then; the later fallback (0, 0) traces no step either).
OLD_BEHAVIOUR = {
    "model.zero_residual": False,
    "data.synthetic.holdout_every": 0,
    "data.synthetic.length_range": (0.15, 1.0),
    "data.synthetic.exposure_range": (1.0, 1.0),
    "data.synthetic.noise_std_max": 0.0,
    "data.synthetic.gamma_max": 0.0,  # A fixed gamma.
    "data.synthetic.jpeg_prob": 0.0,
    "data.synthetic.jpeg_quality": (60, 95),
    "data.synthetic.sharp_prob": 0.0,
    "data.frames.odd_windows": False,
    "data.frames.scale_range": (1.0, 1.0),
    "data.synthetic.scale_range": (1.0, 1.0),
    "data.synthetic.eval_max_size": 0,
    "data.synthetic.highlight_prob": 0.0,
    "data.synthetic.highlight_gain": (1.0, 1.0),
    "data.synthetic.shot_noise": (0.0, 0.0),
    "data.synthetic.read_noise": (0.0, 0.0),
    "data.synthetic.roll_prob": 0.0,
    "data.synthetic.max_roll": 0.0,
    "data.synthetic.min_shake": 0.0,  # U(0.1, 1) x max_shake.
    "data.mix.gopro": 0.0, "data.mix.folder": 0.0, "data.mix.synthetic": 0.0,
    "data.mix.frames": 0.0,
    "loss.gamma_fft": 0.0,
    "train.compute_dtype": "float32",
    "train.init_from": "",
    "train.profile_steps": (0, 0),
    "train.checkpoint_every_secs": 0,
    "train.eval_sharp_input": False,
    "eval.size_bucket": 128,
    "data.random_transpose": False,
    "loss.gamma_adv": 1.0,  # The paper's eq. 13.
    "data.synthetic.eval_seed": 0,  # The stored train.seed (0 in every fixture).
}


def _stored(name):
  with open(os.path.join(FIXTURES, f"{name}.json")) as f:
    return json.load(f)


def _flat(tree, prefix=""):
  if isinstance(tree, dict):
    return {k: v for key, sub in tree.items() for k, v in _flat(sub, f"{prefix}{key}.").items()}
  return {prefix[:-1]: tree}


def _get(config, field):
  for part in field.split("."):
    config = config[part]
  return config


@pytest.mark.parametrize("name", NAMES)
def test_upgrade_keeps_stored_values_and_fills_the_rest(name):
  stored = _stored(name)
  config = config_checks.upgrade(stored, name)
  today = _flat(config_defaults.get_config().to_dict())
  got = _flat(config.to_dict())
  assert set(got) == set(today)
  for field, value in _flat(stored).items():
    if not field.startswith("critic."):  # The critic's layout is translated (next test).
      want = tuple(value) if isinstance(value, list) else value
      assert got[field] == want, field
  missing = set(today) - set(_flat(stored)) - {"critic.norm_affine"}
  # Fields only read by the frames source and by multi-host stops: today's defaults (no
  # earlier code read them), but for a frames field whose old behaviour differs.
  frames_read = "frames" in stored["data"]
  new_features = {f for f in missing if f.startswith("data.frames.")
                  and not (frames_read and f in OLD_BEHAVIOUR)} | {"train.stop_check_every"}
  assert missing - new_features <= set(OLD_BEHAVIOUR)
  for field in missing - new_features:
    assert got[field] == OLD_BEHAVIOUR[field], field
  for field in new_features:
    assert got[field] == today[field], field


def test_synthetic_eval_pairs_keep_the_stored_train_seed():
  stored = _stored("before_timed_checkpoints")
  stored["train"]["seed"] = 3
  assert config_checks.upgrade(stored, "x").data.synthetic.eval_seed == 3
  stored["data"]["synthetic"]["eval_seed"] = 5
  assert config_checks.upgrade(stored, "x").data.synthetic.eval_seed == 5


def _critic_kernels(critic, features):
  x = jnp.zeros((1, 64, 64, 3))
  params = jax.eval_shape(critic.init, jax.random.key(0), x)["params"]
  return {k: v["kernel"].shape for k, v in params.items() if k.startswith("conv")}, params


def test_the_first_critic_layout_is_the_same_network():
  stored = _stored("first")
  assert "norm_affine" not in stored["critic"] and stored["critic"]["num_layers"] == 3
  stored["critic"]["features"] = 8  # Small; the layout does not depend on it.
  config = config_checks.upgrade(stored, "first.json")
  assert config.critic.norm_affine is True and config.critic.num_layers == 4
  # The critic of that version (its models.Critic): conv0 4x4 s2 (F); for k = 1..L+1
  # conv_k 4x4 (min(2^k, 8) F), stride 2 for k <= L, each followed by an instance norm
  # with scale and bias (flax's InstanceNorm defaults then); then "out" 4x4 (1). L = 3, F = 8:
  f = 8
  want = {"conv0": (4, 4, 3, f)}
  prev = f
  for k in range(1, 5):
    want[f"conv{k}"] = (4, 4, prev, min(2 ** k, 8) * f)
    prev = want[f"conv{k}"][-1]
  kernels, params = _critic_kernels(models.critic_from_config(config.critic), f)
  assert kernels == want
  assert all("scale" in params[f"norm{k}"]["in"] for k in range(1, 5))
  assert params["out"]["kernel"].shape == (4, 4, prev, 1)


@functools.partial(jax.jit, static_argnums=0)
def _forward(generator, x):
  """Initialises the generator and restores ``x`` (one program per generator)."""
  return generator.apply(generator.init(jax.random.key(0), x, train=False), x, train=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_an_upgraded_config_builds_and_runs(name):
  config = config_checks.upgrade(_stored(name), name)
  # CPU-sized as configs/tiny.py; every other field as stored.
  config.model.channels, config.model.skip_channels = (4, 8, 8, 8, 8), (2, 4, 4, 4)
  config.model.num_res_blocks = 1
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (1, 40, 48, 3)), jnp.float32)
  y = _forward(models.generator_from_config(config.model), x)
  assert y.shape == x.shape and bool(jnp.all(jnp.isfinite(y)))
  critic = models.critic_from_config(config.critic)
  scores = jax.eval_shape(lambda: critic.apply(critic.init(jax.random.key(1), x), x))
  assert scores.shape == (1,)


def test_load_run_config_upgrades_and_names_the_file_and_field(tmp_path):
  shutil.copy(os.path.join(FIXTURES, "before_warm_start.json"), tmp_path / "config.json")
  config = loading.load_run_config(str(tmp_path))
  assert config.train.init_from == "" and config.eval.size_bucket == 128
  assert config.train.profile_steps == (0, 0)
  path = str(tmp_path / "config.json")
  for edit, message in (
      (lambda c: c["model"].update(width=3),
       f"{path}: model.width is not a config field"),
      (lambda c: c.update(model=3), f"{path}: model must be a section of fields"),
      (lambda c: c["model"].update(norm="group"),
       f"{path}: model.norm='group': expected one of batch, instance, none"),
      (lambda c: c["optim"].update(g_lr=-1.0),
       f"{path}: optim.g_lr=-1.0: must be a number > 0")):
    stored = _stored("before_warm_start")
    edit(stored)
    (tmp_path / "config.json").write_text(json.dumps(stored))
    with pytest.raises(UserError) as e:
      loading.load_run_config(str(tmp_path))
    assert str(e.value).startswith(message), str(e.value)


def test_resuming_an_old_run_compares_its_upgraded_config(tmp_path, caplog):
  shutil.copy(os.path.join(FIXTURES, "before_timed_checkpoints.json"),
              tmp_path / "config.json")
  config = config_defaults.get_config("SA1P-BS")
  config.data.frames.odd_windows = False  # The run drew frames windows of every length.
  with caplog.at_level("WARNING", logger="biskip_jax"):
    config_checks.save_or_check_config(config, str(tmp_path))
  assert "changes" not in caplog.text  # Fields added since take the values the run had.
  with open(tmp_path / "config.json") as f:
    assert json.load(f)["train"]["stop_check_every"] == 10
  # The first version's critic is another network: its checkpoints cannot resume.
  old = tmp_path / "old"
  old.mkdir()
  shutil.copy(os.path.join(FIXTURES, "first.json"), old / "config.json")
  with pytest.raises(UserError, match=r"different critic \(differs in critic.norm_affine, "
                     r"critic.num_layers\)"):
    config_checks.save_or_check_config(config, str(old))


def test_a_config_file_lacking_or_adding_a_field_is_refused():
  config = config_defaults.get_config()
  config.check_fields_probe = 1
  with pytest.raises(UserError, match=r"--config.check_fields_probe is not a config field"):
    config_checks.check_fields(config)
  config = config_defaults.get_config()
  del config.train["stop_check_every"]
  with pytest.raises(UserError, match=r"--config lacks train.stop_check_every: build"):
    config_checks.check_fields(config)


def test_a_stored_frames_section_keeps_the_window_lengths_it_drew():
  """Runs of the frames source before odd_windows drew windows of every length; a config
  without a frames section never read one, so it takes today's default."""
  stored = config_defaults.get_config().to_dict()
  del stored["data"]["frames"]["odd_windows"]
  assert config_checks.upgrade(stored, "config.json").data.frames.odd_windows is False
  del stored["data"]["frames"]
  assert config_checks.upgrade(stored, "config.json").data.frames.odd_windows is True
