"""Tests for the Table 1 scheme parser and the shipped configs."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from biskip_jax.data import datasets, input_pipeline
from biskip_jax.nn import models
from biskip_jax.objective import schemes
from configs import biskip, pretrain, quickstart

EXPECTED = {  # name -> (self_paced, adversarial, pixel, perceptual, variant)
    "A2-S": (False, True, "l2", False, "S"),
    "A2-BS-cR": (False, True, "l2", False, "BS-cR"),
    "A2-BS-w/o-R": (False, True, "l2", False, "BS-w/o-R"),
    "A2-BS": (False, True, "l2", False, "BS"),
    "A2P-BS": (False, True, "l2", True, "BS"),
    "A1P-BS": (False, True, "l1", True, "BS"),
    "1-BS": (False, False, "l1", False, "BS"),
    "2-BS": (False, False, "l2", False, "BS"),
    "P-BS": (False, False, "none", True, "BS"),
    "2P-BS": (False, False, "l2", True, "BS"),
    "AP-BS": (False, True, "none", True, "BS"),
    "SA1P-BS": (True, True, "l1", True, "BS"),
}


def test_table1_has_twelve_schemes():
  assert set(schemes.TABLE1) == set(EXPECTED) and len(EXPECTED) == 12


@pytest.mark.parametrize("name", list(EXPECTED))
def test_parse_each_table1_scheme(name):
  s = schemes.parse_scheme(name)
  assert (s.self_paced, s.adversarial, s.pixel, s.perceptual, s.variant) == EXPECTED[name]


@pytest.mark.parametrize("name", list(EXPECTED))
def test_config_switches_follow_scheme(name):
  config = biskip.get_config(name)
  sp, adv, pix, perc, variant = EXPECTED[name]
  assert config.scheme == name
  assert (config.loss.self_paced, config.loss.adversarial, config.loss.pixel,
          config.loss.perceptual, config.model.variant) == (sp, adv, pix, perc, variant)


@pytest.mark.parametrize("name,match", [
    ("", "LOSSES-VARIANT"), ("BS", "LOSSES-VARIANT"), ("A2-XS", "variant 'XS'"),
    ("A3-BS", "loss letters 'A3'"), ("PA-BS", "loss letters 'PA'"), ("S-BS", "no loss"),
    ("SA-BS", "self-paced"), ("12-BS", "loss letters")])
def test_unknown_schemes_rejected_with_clear_message(name, match):
  with pytest.raises(ValueError, match=match):
    schemes.parse_scheme(name)


def test_other_wellformed_combinations_accepted():
  s = schemes.parse_scheme("SA2P-BS-cR")
  assert (s.self_paced, s.adversarial, s.pixel, s.perceptual, s.variant) == (
      True, True, "l2", True, "BS-cR")


def test_paper_settings():
  c = biskip.get_config()
  assert c.scheme == "SA1P-BS"
  assert (c.optim.g_lr, c.optim.d_lr, c.optim.decay_start) == (1e-4, 1e-4, 0.5)
  assert (c.loss.gamma1, c.loss.gamma2, c.loss.gp_weight) == (100.0, 0.1, 10.0)
  assert (c.train.batch_size, c.train.n_critic, c.train.num_epochs) == (1, 2, 300)
  assert c.data.crop_size == 256 and c.loss.vgg_layer == "conv3_3"
  assert tuple(c.model.channels) == (32, 64, 128, 128, 128)
  assert tuple(c.model.skip_channels) == (16, 32, 64, 64)
  for field in ("num_steps", "log_every", "checkpoint_every", "batch_size", "seed"):
    assert field in c.train
  assert (c.optim.b1, c.optim.b2) == (0.5, 0.999)  # DESIGN §6.
  assert c.loss.vgg_input == "imagenet"  # DESIGN §4.


def test_paper_config_builds_the_designs_networks():
  """configs/biskip.py's networks, as training builds them, have DESIGN §2–3's counts."""
  c = biskip.get_config()
  x = jnp.zeros((1, 64, 64, 3))
  g = models.generator_from_config(c.model)
  g_params = jax.eval_shape(lambda: g.init(jax.random.key(0), x, train=False))["params"]
  assert models.count_params(g_params) == 6_082_179  # DESIGN §2, BS with batch norm.
  assert (g.norm, g.pool, g.act_slope, g.variant) == ("batch", "avg", 0.2, "BS")
  d_params = jax.eval_shape(
      lambda: models.critic_from_config(c.critic).init(jax.random.key(0), x))["params"]
  # DESIGN §3 (DeblurGAN, n_layers=3): 4x4 convs 3->64->128->256->512->1, with biases.
  widths = [3, 64, 128, 256, 512, 1]
  assert models.count_params(d_params) == sum(
      16 * a * b + b for a, b in zip(widths, widths[1:])) == 2_764_737


def test_quickstart_is_offline_and_small():
  c = quickstart.get_config()
  assert isinstance(c, ml_collections.ConfigDict)
  assert c.data.source == "synthetic" and not c.loss.perceptual
  assert c.loss.pixel == "l1" and not c.loss.adversarial and not c.loss.self_paced
  sa = quickstart.get_config("SA1-BS")
  assert sa.loss.adversarial and sa.loss.self_paced


def test_pretrain_config_loads_and_builds(tmp_path):
  c = pretrain.get_config()
  # The shipped model's recipe: self-paced L1 (paper eq. 8-11), no VGG19 term, no critic.
  assert c.scheme == "S1-BS" and c.loss.self_paced
  assert not c.loss.perceptual and not c.loss.adversarial
  assert not pretrain.get_config("1-BS").loss.self_paced
  assert tuple(c.model.channels) == (32, 64, 128, 128, 128) and c.model.zero_residual
  # Every synthetic training crop of the run gets its own kernel (no record is seen twice).
  steps = c.train.num_epochs * c.train.steps_per_epoch
  assert c.data.synthetic.num_train >= steps * c.train.batch_size
  assert c.data.source == "mix" and c.data.mix.frames > 0 and c.data.mix.synthetic > 0
  # Data: a photo folder (every holdout_every-th photo held out) and one frame sequence.
  rng = np.random.default_rng(0)
  photos = tmp_path / "photos"
  photos.mkdir()
  names = [f"p{i:02d}" for i in range(12)]
  for name in names:
    datasets.save_image(photos / f"{name}.png", rng.integers(0, 256, (300, 280, 3), np.uint8))
  seq = tmp_path / "frames" / "seq"
  seq.mkdir(parents=True)
  for t in range(80):  # The last 15 % (12 frames) hold one 11-frame evaluation window.
    datasets.save_image(seq / f"{t:06d}.png", rng.integers(0, 256, (270, 260, 3), np.uint8))
  c.data.synthetic.images = str(photos)
  c.data.frames.path = str(tmp_path / "frames")
  train = input_pipeline.get_source(c, c.data.train_split, training=True)
  blur, sharp = train.random_crop(0, c.data.crop_size, np.random.default_rng(0))
  assert blur.shape == sharp.shape == (c.data.crop_size, c.data.crop_size, 3)
  ev = input_pipeline.get_source(c, c.data.eval_split)
  assert len(ev) == c.data.synthetic.num_eval + 1
  assert c.train.eval_num_images == c.data.synthetic.num_eval + c.data.frames.num_eval
  # The generator builds (shapes only, no compile).
  g = models.generator_from_config(c.model)
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  shapes = jax.eval_shape(lambda x: g.init(jax.random.key(0), x, train=False), x)
  assert models.count_params(shapes["params"]) > 1_000_000
