"""Tests for biskip_jax.data.blur: random camera-shake kernels and blurring in linear light."""

import numpy as np
import pytest
import scipy.ndimage
import scipy.stats
from skimage import data

from biskip_jax.data import blur


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
  return float(10 * np.log10(255.0**2 / mse)) if mse > 0 else float("inf")


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


def test_roll_angles_are_centred_with_the_drawn_span():
  for seed, span in ((0, 0.02), (1, 0.001), (2, 0.0)):
    a = blur.roll_angles(np.random.default_rng(seed), 500, span)
    assert a.shape == (500,)
    np.testing.assert_allclose([a.mean(), np.ptp(a)], [0.0, span], atol=1e-12)


def test_rolling_kernels_split_the_shake_kernel():
  """The chunks' kernels add up to the trajectory's kernel; each rolls by its samples' mean."""
  rng = np.random.default_rng(4)
  traj = blur.random_shake(rng, 31)
  angles = np.linspace(-0.01, 0.01, len(traj))
  rolls, kernels = blur.rolling_kernels(traj, angles, 31, chunks=5)
  assert kernels.shape == (5, 31, 31) and kernels.min() >= 0
  np.testing.assert_allclose(kernels.sum(0), blur.trajectory_to_kernel(traj, 31), atol=1e-12)
  spans = np.array_split(angles, 5)
  np.testing.assert_allclose(rolls, [s.mean() for s in spans])
  np.testing.assert_allclose(kernels.sum((1, 2)), [len(s) / len(traj) for s in spans])


def test_a_shake_without_roll_is_the_uniform_blur():
  sharp = data.astronaut()[:120, :100]
  traj = blur.random_shake(np.random.default_rng(5), 15)
  _, kernels = blur.rolling_kernels(traj, np.zeros(len(traj)), 15)
  a = blur.blur_image(sharp, kernels, np.random.default_rng(1), roll=np.zeros(len(kernels)),
                      roll_centre=(10.0, 500.0))
  b = blur.blur_image(sharp, blur.trajectory_to_kernel(traj, 15), np.random.default_rng(1))
  assert np.abs(a.astype(int) - b).max() <= 1


def test_a_pure_roll_matches_averaged_rotations():
  """Reference: the mean of scipy.ndimage.rotate's rotations of the linear image about its
  centre over a uniform spread of angles (symmetric, so the sign convention cannot matter).
  Near the axis the image stays sharp; far from it the roll blurs it."""
  sharp = data.astronaut()[100:301, 100:301]  # 201x201: the centre is pixel (100, 100).
  span_deg = 6.0
  angles = np.deg2rad(np.linspace(-span_deg / 2, span_deg / 2, 64))
  rolls, kernels = blur.rolling_kernels(np.zeros(64, complex), angles, 1, chunks=64)
  ours = blur.blur_image(sharp, kernels, np.random.default_rng(0), noise_std=0.0, roll=rolls,
                         roll_centre=(100.0, 100.0))
  lin = (sharp / 255.0) ** 2.2
  ref = np.mean([scipy.ndimage.rotate(lin, np.rad2deg(a), axes=(0, 1), reshape=False, order=1,
                                      mode="mirror") for a in angles], axis=0)
  ref = np.round(np.clip(ref, 0, 1) ** (1 / 2.2) * 255)
  inner = (slice(30, 171), slice(30, 171))
  assert _psnr(ours[inner], ref[inner]) > 40
  near, far = (slice(90, 111), slice(90, 111)), (slice(30, 51), slice(30, 51))
  assert _psnr(ours[near], sharp[near]) - _psnr(ours[far], sharp[far]) > 6


def test_min_anxiety_draws_the_anxiety_log_uniformly(monkeypatch):
  """With min_anxiety the anxiety is log-uniform on [min, max] (Kolmogorov-Smirnov against
  scipy's uniform law of its log) and takes the one draw the default U(0.1, 1) x max takes."""
  seen = []
  real = blur.random_trajectory
  monkeypatch.setattr(blur, "random_trajectory",
                      lambda rng, **kw: seen.append(kw["anxiety"]) or real(rng, **kw))
  rng = np.random.default_rng(0)
  for _ in range(400):
    blur.random_shake(rng, 15, max_anxiety=0.005, min_anxiety=0.0002, num_steps=20)
  logs = np.log(seen)
  lo, hi = np.log(0.0002), np.log(0.005)
  assert lo <= logs.min() and logs.max() <= hi
  assert scipy.stats.kstest(logs, scipy.stats.uniform(lo, hi - lo).cdf).pvalue > 1e-3
  # Uniform on the linear scale (the default's law) is rejected for the same draws.
  assert scipy.stats.kstest(np.exp(logs), scipy.stats.uniform(0.0002, 0.0048).cdf).pvalue < 1e-6
  a, b = np.random.default_rng(3), np.random.default_rng(3)
  blur.random_shake(a, 15, min_anxiety=0.001, num_steps=20)
  blur.random_shake(b, 15, num_steps=20)
  assert a.uniform() == b.uniform()  # Same draws taken: later records stay aligned.
  with pytest.raises(ValueError, match="min_anxiety"):
    blur.random_shake(rng, 15, max_anxiety=0.001, min_anxiety=0.002)


def test_low_anxiety_shakes_are_straight():
  """Without anxiety the path keeps its heading: its middle sample lies on the chord between
  its ends, halfway (a straight path at constant speed)."""
  for seed in range(5):
    x = blur.random_shake(np.random.default_rng(seed), 31, max_anxiety=1e-7, min_anxiety=1e-8)
    chord = x[-1] - x[0]
    assert abs(x[len(x) // 2] - (x[0] + x[-1]) / 2) < 1e-3 * abs(chord)
