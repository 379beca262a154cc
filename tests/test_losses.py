"""Tests of biskip_jax.objective.losses against NumPy references, hand values and finite
differences."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from biskip_jax.objective import losses

# Hand-checked batch of four samples with non-uniform self-paced weights (sample 2 has v = 0).
V = np.array([1.0, 0.5, 0.0, 0.25], np.float32)
D_REAL = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
D_FAKE = np.array([0.5, -1.0, 7.0, 2.0], np.float32)
GP = np.array([0.1, 0.2, 5.0, 0.4], np.float32)
CONTENT = np.array([2.0, 4.0, 100.0, 8.0], np.float32)


@pytest.fixture(scope="module")
def images():
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, (3, 5, 4, 3)).astype(np.float32)
  y = rng.uniform(-1, 1, (3, 5, 4, 3)).astype(np.float32)
  return x, y


# ----------------------------------------------------------------------------- eq. 4


def test_pixel_loss_matches_numpy(images):
  x, y = images
  l1 = losses.pixel_loss(jnp.asarray(x), jnp.asarray(y), "l1")
  l2 = losses.pixel_loss(jnp.asarray(x), jnp.asarray(y), "l2")
  assert l1.shape == l2.shape == (3,)
  # ‖x_i − y_i‖_1 / (c w h) and ‖x_i − y_i‖_2^2 / (c w h).
  np.testing.assert_allclose(np.asarray(l1), np.abs(x - y).sum(axis=(1, 2, 3)) / 60, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(l2), ((x - y) ** 2).sum(axis=(1, 2, 3)) / 60,
                             rtol=1e-6)
  none = losses.pixel_loss(jnp.asarray(x), jnp.asarray(y), "none")
  np.testing.assert_array_equal(np.asarray(none), np.zeros(3))
  assert none.dtype == jnp.float32


def test_pixel_loss_hand_value():
  x = jnp.zeros((2, 2, 2, 3))
  y = x.at[1, 0, 1, 2].set(0.6)  # One of 12 elements off by 0.6 in sample 1.
  np.testing.assert_allclose(np.asarray(losses.pixel_loss(x, y, "l1")), [0.0, 0.05], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(losses.pixel_loss(x, y, "l2")), [0.0, 0.03], rtol=1e-6)


def test_pixel_loss_errors(images):
  x, y = images
  with pytest.raises(ValueError, match="shapes differ"):
    losses.pixel_loss(x, y[:, :4], "l1")


def test_frequency_loss_matches_torch_rfft2_as_mimo_unet_uses_it(images):
  import torch
  x, y = images
  got = losses.frequency_loss(jnp.asarray(x), jnp.asarray(y))
  assert got.shape == (3,)
  # MIMO-UNet: L1Loss between torch.stack((fft.real, fft.imag), -1) of rfft2 over H and W,
  # here per sample (channels first, as torch's images are).
  fx = torch.fft.rfft2(torch.from_numpy(x).permute(0, 3, 1, 2))
  fy = torch.fft.rfft2(torch.from_numpy(y).permute(0, 3, 1, 2))
  d = torch.stack([fx.real, fx.imag], -1) - torch.stack([fy.real, fy.imag], -1)
  want = d.abs().reshape(3, -1).mean(1).numpy()
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)
  # A constant offset c lives in the DC bin alone: |c| H W over the (H, W // 2 + 1, C, 2) bins.
  z = jnp.zeros((1, 4, 6, 1))
  np.testing.assert_allclose(np.asarray(losses.frequency_loss(z + 0.5, z)),
                             [0.5 * 24 / (4 * 4 * 1 * 2)], rtol=1e-6)


def test_feature_and_bilevel_loss_match_numpy():
  rng = np.random.default_rng(1)
  fx = rng.normal(size=(2, 3, 2, 7)).astype(np.float32)
  fy = rng.normal(size=(2, 3, 2, 7)).astype(np.float32)
  f = losses.feature_loss(jnp.asarray(fx), jnp.asarray(fy))
  assert f.shape == (2,)
  np.testing.assert_allclose(np.asarray(f), ((fx - fy) ** 2).sum(axis=(1, 2, 3)) / 42,
                             rtol=1e-6)
  with pytest.raises(ValueError, match="shapes differ"):
    losses.feature_loss(fx, fy[:1])
  p = jnp.array([0.1, 0.02])
  bl = losses.bilevel_loss(p, f, 100.0, 0.1)
  np.testing.assert_allclose(np.asarray(bl), 100 * np.array([0.1, 0.02]) + 0.1 * np.asarray(f),
                             rtol=1e-6)


# ----------------------------------------------------------------------------- eq. 7


def _linear_critic(w):
  return lambda z: jnp.sum(z * w, axis=(1, 2, 3))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradient_penalty_linear_critic_is_exact(seed):
  """D(x) = Σ w·x has ∇D = w everywhere, so gp = (‖w‖ − 1)² for any α."""
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(1, 4, 3, 3)).astype(np.float32)
  w *= 2.5 / np.linalg.norm(w)  # ‖w‖ = 2.5 over all of H, W, C.
  real = jnp.asarray(rng.uniform(-1, 1, (5, 4, 3, 3)), jnp.float32)
  fake = jnp.asarray(rng.uniform(-1, 1, (5, 4, 3, 3)), jnp.float32)
  gp = losses.gradient_penalty(_linear_critic(jnp.asarray(w)), real, fake,
                               jax.random.key(seed))
  assert gp.shape == (5,)
  np.testing.assert_allclose(np.asarray(gp), np.full(5, 1.5**2), rtol=1e-5)


def _tiny_critic(params, z):
  """A per-sample nonlinear critic: tanh(flat(z) @ W1 + b1) @ w2 -> [N]."""
  w1, b1, w2 = params
  return jnp.tanh(z.reshape(z.shape[0], -1) @ w1 + b1) @ w2


def test_gradient_penalty_matches_finite_differences():
  with jax.enable_x64(True):
    rng = np.random.default_rng(3)
    shape = (3, 2, 3, 2)  # 12 elements per sample.
    params = (jnp.asarray(rng.normal(size=(12, 5))), jnp.asarray(rng.normal(size=(5,))),
              jnp.asarray(rng.normal(size=(5,))))
    real = rng.uniform(-1, 1, shape)
    # real == fake makes x̂ = real whatever α is, so the reference needs no α.
    gp = losses.gradient_penalty(functools.partial(_tiny_critic, params), jnp.asarray(real),
                                 jnp.asarray(real), jax.random.key(0))
    assert gp.dtype == jnp.float64

    w1, b1, w2 = (np.asarray(a) for a in params)

    def d_numpy(x):  # The same critic in NumPy float64, [M, 2, 3, 2] -> [M].
      return np.tanh(x.reshape(x.shape[0], -1) @ w1 + b1) @ w2

    eps = 1e-6
    basis = np.eye(12).reshape(12, *shape[1:]) * eps
    for i in range(shape[0]):
      grad = (d_numpy(real[i] + basis) - d_numpy(real[i] - basis)) / (2 * eps)
      expected = (np.linalg.norm(grad) - 1.0) ** 2
      assert float(gp[i]) == pytest.approx(expected, rel=1e-7, abs=1e-10)


def test_gradient_penalty_draws_alpha_per_sample():
  """D(x) = ½‖x‖² has ∇D(x̂) = x̂; with ‖x_i‖ = 1 and x̃ = 0, ‖∇‖ = α_i, gp_i = (α_i − 1)²."""
  n = 16
  real = jnp.ones((n, 2, 2, 1)) * 0.5  # ‖real_i‖ = 1, identical samples.
  fake = jnp.zeros_like(real)
  critic = lambda z: 0.5 * jnp.sum(jnp.square(z), axis=(1, 2, 3))
  gp = losses.gradient_penalty(critic, real, fake, jax.random.key(7))
  alpha = 1.0 - np.sqrt(np.asarray(gp))
  assert np.all((alpha >= 0) & (alpha <= 1))
  assert len(np.unique(np.round(alpha, 6))) == n  # One α per sample, not one per batch.
  assert alpha.std() > 0.1  # Spread like U[0, 1] (std ≈ 0.29), not clustered.
  # Deterministic for a key, different for another.
  again = losses.gradient_penalty(critic, real, fake, jax.random.key(7))
  np.testing.assert_array_equal(np.asarray(gp), np.asarray(again))
  other = losses.gradient_penalty(critic, real, fake, jax.random.key(8))
  assert not np.allclose(np.asarray(gp), np.asarray(other))
  # x̂ lies between real and fake: with real = 2·(the above), ‖∇‖ = 2α.
  gp2 = losses.gradient_penalty(critic, 2 * real, fake, jax.random.key(7))
  np.testing.assert_allclose(np.asarray(gp2), (2 * alpha - 1) ** 2, rtol=1e-4, atol=1e-6)


def test_gradient_penalty_gradient_is_finite_and_jittable():
  """Differentiating the penalty w.r.t. the critic's parameters (double backprop)."""
  real = jnp.asarray(np.random.default_rng(4).uniform(-1, 1, (2, 2, 3, 2)), jnp.float32)
  fake = jnp.zeros_like(real)

  @jax.jit
  def penalty(theta, key):
    critic = lambda z: theta * jnp.sum(z, axis=(1, 2, 3))  # ‖∇D‖ = |θ|·√12.
    return jnp.mean(losses.gradient_penalty(critic, real, fake, key))

  g0 = jax.grad(penalty)(jnp.float32(0.0), jax.random.key(0))  # ∇D = 0: the sqrt's kink.
  assert np.isfinite(float(g0))
  theta = 0.5
  value, g = jax.value_and_grad(penalty)(jnp.float32(theta), jax.random.key(0))
  s = np.sqrt(12.0)
  assert float(value) == pytest.approx((theta * s - 1) ** 2, rel=1e-5)
  assert float(g) == pytest.approx(2 * (theta * s - 1) * s, rel=1e-5)


# ----------------------------------------------------------------------------- eq. 12, 13


def test_critic_loss_hand_value():
  # mean v(D̃ − D) = mean[−0.5, −1.5, 0, −0.5] = −0.625; β mean v·gp = 10·0.3/4 = 0.75.
  loss = losses.critic_loss(jnp.asarray(D_REAL), jnp.asarray(D_FAKE), jnp.asarray(GP),
                            jnp.asarray(V), 10.0)
  assert loss.shape == ()
  assert float(loss) == pytest.approx(0.125, abs=1e-6)
  uniform = losses.critic_loss(D_REAL, D_FAKE, GP, np.ones(4, np.float32), 10.0)
  assert float(uniform) == pytest.approx(np.mean(D_FAKE - D_REAL) + 10 * np.mean(GP), rel=1e-6)


def test_generator_loss_hand_value():
  # mean v·l = mean[2, 2, 0, 2] = 1.5; −mean v·D̃ = −mean[0.5, −0.5, 0, 0.5] = −0.125.
  with_adv = losses.generator_loss(jnp.asarray(D_FAKE), jnp.asarray(CONTENT), jnp.asarray(V),
                                   adversarial=True)
  without = losses.generator_loss(jnp.asarray(D_FAKE), jnp.asarray(CONTENT), jnp.asarray(V),
                                  adversarial=False)
  assert float(with_adv) == pytest.approx(1.375, abs=1e-6)
  assert float(without) == pytest.approx(1.5, abs=1e-6)


def test_generator_loss_weighs_the_adversarial_term():
  # 1.5 − 0.1 · 0.125 (the hand values above); ∂/∂D̃_i = −w v_i / n.
  loss = losses.generator_loss(D_FAKE, CONTENT, V, True, adv_weight=0.1)
  assert float(loss) == pytest.approx(1.4875, abs=1e-6)
  grads = jax.grad(lambda d: losses.generator_loss(d, CONTENT, V, True, 0.1))(
      jnp.asarray(D_FAKE))
  np.testing.assert_allclose(np.asarray(grads), -0.1 * V / 4, rtol=1e-6)


def test_wasserstein_estimate():
  est = losses.wasserstein_estimate(jnp.asarray(D_REAL), jnp.asarray(D_FAKE))
  assert float(est) == pytest.approx(2.5 - 2.125, abs=1e-6)


def test_zero_weight_removes_a_sample():
  changed = lambda a: jnp.asarray(a).at[2].set(-123.0)  # Sample 2 has v = 0.
  c0 = losses.critic_loss(D_REAL, D_FAKE, GP, V, 10.0)
  c1 = losses.critic_loss(changed(D_REAL), changed(D_FAKE), changed(GP), V, 10.0)
  g0 = losses.generator_loss(D_FAKE, CONTENT, V, True)
  g1 = losses.generator_loss(changed(D_FAKE), changed(CONTENT), V, True)
  assert float(c0) == float(c1) and float(g0) == float(g1)
  # ...and receives no gradient, while the others get v_i/n.
  grads = jax.grad(lambda d: losses.critic_loss(D_REAL, d, GP, V, 10.0))(jnp.asarray(D_FAKE))
  np.testing.assert_allclose(np.asarray(grads), V / 4, rtol=1e-6)
  grads = jax.grad(lambda l: losses.generator_loss(D_FAKE, l, V, True))(jnp.asarray(CONTENT))
  np.testing.assert_allclose(np.asarray(grads), V / 4, rtol=1e-6)


def test_no_gradient_through_weights():
  gc = jax.grad(lambda v: losses.critic_loss(D_REAL, D_FAKE, GP, v, 10.0))(jnp.asarray(V))
  gg = jax.grad(lambda v: losses.generator_loss(D_FAKE, CONTENT, v, True))(jnp.asarray(V))
  np.testing.assert_array_equal(np.asarray(gc), 0.0)
  np.testing.assert_array_equal(np.asarray(gg), 0.0)


def test_losses_under_jit():
  critic = jax.jit(losses.critic_loss)
  gen = jax.jit(losses.generator_loss, static_argnames="adversarial")
  assert float(critic(D_REAL, D_FAKE, GP, V, 10.0)) == pytest.approx(0.125, abs=1e-6)
  assert float(gen(D_FAKE, CONTENT, V, adversarial=True)) == pytest.approx(1.375, abs=1e-6)
  pix = jax.jit(losses.pixel_loss, static_argnames="kind")
  x = jnp.zeros((2, 2, 2, 3))
  np.testing.assert_allclose(np.asarray(pix(x, x.at[1, 0, 1, 2].set(0.6), kind="l1")),
                             [0.0, 0.05], rtol=1e-6)
