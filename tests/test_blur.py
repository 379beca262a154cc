"""Tests for biskip_jax.data.blur: random camera-shake kernels and blurring in linear light."""

import numpy as np
import pytest
from skimage import data

from biskip_jax.data import blur


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
  return float(10 * np.log10(255.0**2 / mse))


@pytest.mark.parametrize("size", [1, 8, 15, 31])
def test_kernel_non_negative_sums_to_one_and_centred(size):
  for seed in range(5):
    k = blur.random_kernel(np.random.default_rng(seed), size)
    assert k.shape == (size, size) and k.dtype == np.float64
    assert k.min() >= 0.0
    np.testing.assert_allclose(k.sum(), 1.0, rtol=1e-12)
    ys, xs = np.mgrid[:size, :size]
    centre = (size - 1) / 2
    np.testing.assert_allclose([(k * ys).sum(), (k * xs).sum()], [centre, centre], atol=1e-6)


def test_kernel_same_for_same_seed_and_varies_with_seed():
  k0 = blur.random_kernel(np.random.default_rng(7), 31)
  np.testing.assert_array_equal(k0, blur.random_kernel(np.random.default_rng(7), 31))
  others = [blur.random_kernel(np.random.default_rng(s), 31) for s in range(8, 12)]
  assert all(np.abs(k0 - k).max() > 1e-3 for k in others)
  assert sum((k > 0).sum() > 4 for k in others) >= 3  # Real trajectories, not points.


def test_trajectory_constant_speed_and_length():
  x = blur.random_trajectory(np.random.default_rng(0), num_steps=500, length=20.0, anxiety=0.01)
  assert x.shape == (500,) and x[0] == 0
  steps = np.abs(np.diff(x))
  np.testing.assert_allclose(steps, 20.0 / 499, rtol=1e-9)


def test_straight_trajectory_gives_line_kernel():
  k = blur.trajectory_to_kernel(np.linspace(0, 6, 601) + 0j, 9)
  np.testing.assert_allclose(k.sum(axis=1)[4], 1.0)  # All mass on the middle row.
  assert (k[4, 1:8] > 0).all()


def test_blur_lowers_psnr_and_is_deterministic():
  sharp = data.astronaut()
  kernel = blur.random_kernel(np.random.default_rng(1), 31)
  b1 = blur.blur_image(sharp, kernel, np.random.default_rng(2), gamma=2.2, noise_std=0.01)
  b2 = blur.blur_image(sharp, kernel, np.random.default_rng(2), gamma=2.2, noise_std=0.01)
  np.testing.assert_array_equal(b1, b2)
  assert b1.dtype == np.uint8 and b1.shape == sharp.shape
  delta = np.zeros((31, 31))
  delta[15, 15] = 1.0
  noise_only = blur.blur_image(sharp, delta, np.random.default_rng(2), noise_std=0.01)
  assert _psnr(noise_only, sharp) - _psnr(b1, sharp) > 2.0
  b3 = blur.blur_image(sharp, kernel, np.random.default_rng(3), noise_std=0.01)
  assert (b3 != b1).any()  # The noise follows the generator.


def test_delta_kernel_without_noise_is_identity():
  sharp = data.chelsea()[:40, :50]
  delta = np.zeros((5, 5))
  delta[2, 2] = 1.0
  out = blur.blur_image(sharp, delta, np.random.default_rng(0), gamma=2.2, noise_std=0.0)
  np.testing.assert_array_equal(out, sharp)


def test_blur_in_linear_light_differs_from_gamma_one():
  sharp = np.zeros((20, 20, 3), np.uint8)
  sharp[:, 10:] = 255
  k = np.full((1, 3), 1 / 3)
  lin = blur.blur_image(sharp, k, np.random.default_rng(0), gamma=2.2, noise_std=0.0)
  raw = blur.blur_image(sharp, k, np.random.default_rng(0), gamma=1.0, noise_std=0.0)
  assert raw[0, 9, 0] == 85 and lin[0, 9, 0] == round(255 * (1 / 3) ** (1 / 2.2))
