"""Losses of paper §4.2–4.3 (eq. 3–7, 12, 13; DESIGN §4), per sample and weighted by v_i.

Shapes: images ``[N, H, W, C]`` (values in [-1, 1]); features ``[N, h, w, c]``; per-sample
terms, critic scores and self-paced weights ``v`` are ``[N]``. The weights are constants of
the objectives (eq. 11 is solved in a separate majorisation step), so no gradient flows
through them. All functions are pure and jit-compatible; string/bool arguments are static.

With n the batch size, the objectives are (eq. 3's ``1/n`` applied to every sum):

* critic, eq. 12 (``−L_adv + P``): ``mean_i v_i (D(x̃_i) − D(x_i)) + β mean_i v_i gp_i``;
* generator, eq. 13: ``−mean_i v_i D(x̃_i) + mean_i v_i l_i``, where
  ``l_i = γ1 p_i + γ2 f_i`` is the bi-level loss of eq. 4.
"""

from typing import Callable

import jax
import jax.numpy as jnp

PIXEL_KINDS = ("l1", "l2", "none")

# Added under the square root of the gradient norm so the penalty's own gradient (taken
# w.r.t. the critic's parameters) stays finite where ∇D(x̂) = 0.
_NORM_EPS = 1e-12


def _per_sample_mean(a: jax.Array) -> jax.Array:
  """Mean over every axis but the first: [N, ...] -> [N], in at least float32."""
  a = a.astype(jnp.promote_types(a.dtype, jnp.float32))
  return jnp.mean(a.reshape(a.shape[0], -1), axis=1)


def _check_same_shape(a: jax.Array, b: jax.Array, what: str) -> None:
  if a.shape != b.shape:
    raise ValueError(f"{what}: shapes differ, {a.shape} vs {b.shape}")


def pixel_loss(x: jax.Array, y: jax.Array, kind: str) -> jax.Array:
  """Pixel term of eq. 4 per sample, normalised by ``c·w·h``.

  Args:
    x: [N, H, W, C] images (e.g. restored x̃).
    y: [N, H, W, C] images (e.g. sharp x).
    kind: ``"l1"``: ``‖x_i − y_i‖_1 / (c w h)`` (the paper's pixel term); ``"l2"``:
      ``‖x_i − y_i‖_2^2 / (c w h)`` (Table 1's "2" schemes); ``"none"``: zeros.

  Returns:
    [N] float32 (or wider) per-sample losses.

  Raises:
    ValueError: for mismatched shapes (``kind`` is one of :data:`PIXEL_KINDS`, as
      ``config_checks`` validates ``loss.pixel``).
  """
  _check_same_shape(x, y, "pixel_loss")
  if kind == "none":
    return jnp.zeros((x.shape[0],), jnp.float32)
  return _per_sample_mean({"l1": jnp.abs, "l2": jnp.square}[kind](x - y))


def feature_loss(fx: jax.Array, fy: jax.Array) -> jax.Array:
  """Feature (perceptual) term of eq. 4 per sample: ``‖F(x_i) − F(y_i)‖_2^2 / (c w h)``.

  Args:
    fx: [N, h, w, c] features F(x̃) (VGG19 conv3_3 in this project).
    fy: [N, h, w, c] features F(x).

  Returns:
    [N] per-sample mean squared feature differences.

  Raises:
    ValueError: for mismatched shapes.
  """
  _check_same_shape(fx, fy, "feature_loss")
  # The difference in at least float32: bfloat16 features (mixed precision) would lose most
  # of the small differences to rounding before the square.
  wide = jnp.promote_types(jnp.result_type(fx, fy), jnp.float32)
  return _per_sample_mean(jnp.square(fx.astype(wide) - fy.astype(wide)))


def frequency_loss(x: jax.Array, y: jax.Array) -> jax.Array:
  """Frequency term per sample: MIMO-UNet's frequency reconstruction loss (Cho et al. 2021).

  ``mean |Re F(x_i) − Re F(y_i)| and |Im F(x_i) − Im F(y_i)|``, ``F`` the unnormalised real
  2-D FFT over H and W of each channel (``torch.fft.rfft2``'s default, as MIMO-UNet), the mean
  over both parts of every frequency and channel. Not in the paper: L1 lets a blurry output
  pay little for the high frequencies it lacks; here they cost as much as the low ones.

  Args:
    x: [N, H, W, C] images (restored x̃).
    y: [N, H, W, C] images (sharp x).

  Returns:
    [N] float32 per-sample losses.
  """
  _check_same_shape(x, y, "frequency_loss")
  d = (x - y).astype(jnp.promote_types(x.dtype, jnp.float32))
  f = jnp.fft.rfft2(d, axes=(1, 2))
  return _per_sample_mean(jnp.stack([jnp.abs(f.real), jnp.abs(f.imag)], axis=-1))


def bilevel_loss(pixel: jax.Array, feature: jax.Array, gamma1: float | jax.Array,
                 gamma2: float | jax.Array) -> jax.Array:
  """Bi-level loss of each sample, ``l_i = γ1 p_i + γ2 f_i`` (eq. 4 and the l_i of eq. 11).

  Args:
    pixel: [N] pixel terms p_i from :func:`pixel_loss`.
    feature: [N] feature terms f_i from :func:`feature_loss` (zeros without P).
    gamma1: γ1, weight of the pixel term (100 in the paper setup).
    gamma2: γ2, weight of the feature term (0.1 in the paper setup).

  Returns:
    [N] bi-level losses.
  """
  return gamma1 * pixel + gamma2 * feature


def gradient_penalty(critic_fn: Callable[[jax.Array], jax.Array], real: jax.Array,
                     fake: jax.Array, key: jax.Array) -> jax.Array:
  """WGAN-GP term of eq. 7 per sample, ``(‖∇_x̂ D(x̂_i)‖_2 − 1)^2``; β is not applied.

  ``x̂_i = α_i x_i + (1 − α_i) x̃_i`` with one ``α_i ~ U[0, 1]`` per sample, and the norm
  runs over all of H, W and C of that sample (DeblurGAN's single α per batch and
  channel-only norm are deliberately not copied; DESIGN §4).

  The per-sample gradients come from one ``jax.grad`` of ``Σ_i D(x̂_i)``. This is exact only
  if each sample's score depends on that sample alone (``∂D(x̂_i)/∂x̂_j = 0`` for i ≠ j), as
  for the PatchGAN critic with instance norm or no norm; a critic with batch norm (or any
  cross-sample interaction) would mix the samples' gradients.

  Args:
    critic_fn: maps [N, H, W, C] images to [N] scores, sample-wise independent (see above);
      close over the critic's parameters to differentiate the penalty w.r.t. them.
    real: [N, H, W, C] sharp images x.
    fake: [N, H, W, C] restored images x̃ (normally under ``stop_gradient``).
    key: PRNG key for the α_i.

  Returns:
    [N] penalties, differentiable w.r.t. whatever ``critic_fn`` closes over (the norm is
    ``sqrt(Σ g² + 1e-12)``, so that gradient is finite even where ∇D(x̂) = 0).
  """
  _check_same_shape(real, fake, "gradient_penalty")
  n = real.shape[0]
  dtype = jnp.promote_types(jnp.result_type(real, fake), jnp.float32)
  alpha = jax.random.uniform(key, (n,) + (1,) * (real.ndim - 1), dtype)
  x_hat = alpha * real + (1.0 - alpha) * fake
  grads = jax.grad(lambda z: jnp.sum(critic_fn(z)))(x_hat)
  grads = grads.astype(jnp.promote_types(grads.dtype, jnp.float32))
  sq_norm = jnp.sum(jnp.square(grads).reshape(n, -1), axis=1)
  return jnp.square(jnp.sqrt(sq_norm + _NORM_EPS) - 1.0)


def critic_loss(d_real: jax.Array, d_fake: jax.Array, gp: jax.Array, weights: jax.Array,
                gp_weight: float | jax.Array) -> jax.Array:
  """Critic objective of eq. 12, ``−L_adv + P`` with self-paced weights (minimised).

  ``mean_i v_i (D(x̃_i) − D(x_i)) + β mean_i v_i gp_i``, the means over all n samples
  (zero-weight samples count in n but contribute nothing).

  Args:
    d_real: [N] critic scores D(x_i) of the sharp images.
    d_fake: [N] critic scores D(x̃_i) of the restored images.
    gp: [N] penalties from :func:`gradient_penalty`.
    weights: [N] self-paced weights v_i (eq. 11); treated as constants (``stop_gradient``).
    gp_weight: β (10 in the paper setup).

  Returns:
    Scalar loss.
  """
  v = jax.lax.stop_gradient(weights)
  return jnp.mean(v * (d_fake - d_real)) + gp_weight * jnp.mean(v * gp)


def generator_loss(d_fake: jax.Array, content: jax.Array, weights: jax.Array,
                   adversarial: bool, adv_weight: float | jax.Array = 1.0) -> jax.Array:
  """Generator objective of eq. 13 with eq. 3's ``1/n``.

  ``−w mean_i v_i D(x̃_i)`` (only if ``adversarial``) ``+ mean_i v_i l_i``; the paper's
  ``w`` is 1 (``loss.gamma_adv``).

  Args:
    d_fake: [N] critic scores D(x̃_i) of the restored images (ignored unless
      ``adversarial``).
    content: [N] bi-level losses l_i from :func:`bilevel_loss`.
    weights: [N] self-paced weights v_i; treated as constants (``stop_gradient``).
    adversarial: whether the scheme has the A (WGAN-GP) term; a static Python bool.
    adv_weight: w, the adversarial term's weight.

  Returns:
    Scalar loss.
  """
  v = jax.lax.stop_gradient(weights)
  loss = jnp.mean(v * content)
  if adversarial:
    loss = loss - adv_weight * jnp.mean(v * d_fake)
  return loss


def wasserstein_estimate(d_real: jax.Array, d_fake: jax.Array) -> jax.Array:
  """The critic's Earth-Mover estimate ``mean_i D(x_i) − mean_i D(x̃_i)`` (unweighted; logging).

  Args:
    d_real: [N] scores of the sharp images.
    d_fake: [N] scores of the restored images.

  Returns:
    Scalar.
  """
  return jnp.mean(d_real) - jnp.mean(d_fake)
