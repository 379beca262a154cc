"""Tests of biskip_jax.evaluation.metrics against hand computations and scikit-image references."""

import math

import numpy as np
import pytest
from scipy import ndimage
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from biskip_jax.evaluation import image_signature, metrics, shift_tolerant


def _sk_ssim(x, y, channel_axis=-1):
  return structural_similarity(x, y, channel_axis=channel_axis, gaussian_weights=True, sigma=1.5,
                               use_sample_covariance=False, data_range=255)


def _degrade(img: np.ndarray, rng: np.random.Generator, blur: float, noise: float) -> np.ndarray:
  """Blurs each channel and adds Gaussian noise; returns uint8 like the input."""
  out = img.astype(np.float64)
  sigma = (blur, blur) + (0,) * (img.ndim - 2)
  out = ndimage.gaussian_filter(out, sigma) + rng.normal(0.0, noise, img.shape)
  return np.clip(np.round(out), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
  return data.astronaut()  # [512, 512, 3] uint8


def test_psnr_hand_computation():
  x = np.zeros((4, 4, 3), np.uint8)
  y = x.copy()
  y[1, 2, 0] = 10  # One element of 48 off by 10 -> MSE = 100 / 48.
  expected = 10 * math.log10(255**2 / (100 / 48))
  assert metrics.psnr(x, y) == pytest.approx(expected, abs=1e-12)
  assert metrics.psnr(y, x) == pytest.approx(expected, abs=1e-12)  # No uint8 wrap-around.
  assert metrics.psnr(x / 255.0, y / 255.0, data_range=1.0) == pytest.approx(expected, abs=1e-9)


def test_psnr_matches_skimage_and_is_inf_for_identical(astronaut):
  rng = np.random.default_rng(0)
  x = astronaut[:64, :80]
  y = _degrade(x, rng, blur=1.0, noise=4.0)
  assert metrics.psnr(x, y) == pytest.approx(
      peak_signal_noise_ratio(x, y, data_range=255), abs=1e-10)
  assert metrics.psnr(x, x) == math.inf


@pytest.mark.parametrize("shape,blur,noise", [
    ((37, 53, 3), 1.2, 5.0),
    ((64, 64, 3), 0.0, 20.0),
    ((11, 11, 3), 0.8, 2.0),
    ((100, 71, 3), 2.5, 0.0),
])
def test_ssim_matches_skimage_on_real_images(astronaut, shape, blur, noise):
  rng = np.random.default_rng(hash(shape) % 2**32)
  y0, x0 = rng.integers(0, 512 - 100, size=2)
  x = astronaut[y0:y0 + shape[0], x0:x0 + shape[1]]
  y = _degrade(x, rng, blur=blur, noise=noise)
  got = metrics.ssim(x, y)
  assert got == pytest.approx(_sk_ssim(x, y), abs=1e-4)
  assert got < 1.0
  assert metrics.ssim(x, x) == pytest.approx(1.0, abs=1e-12)


def test_ssim_matches_skimage_on_random_and_float_images():
  rng = np.random.default_rng(1)
  for shape in [(23, 41, 3), (48, 33, 3)]:
    x = rng.integers(0, 256, shape).astype(np.uint8)
    y = rng.integers(0, 256, shape).astype(np.uint8)
    assert metrics.ssim(x, y) == pytest.approx(_sk_ssim(x, y), abs=1e-4)
    xf, yf = x.astype(np.float64), (0.5 * x + 0.5 * y).astype(np.float64)
    assert metrics.ssim(xf, yf) == pytest.approx(_sk_ssim(xf, yf), abs=1e-4)


def test_ssim_grayscale(astronaut):
  rng = np.random.default_rng(2)
  gray = astronaut[200:259, 100:161].mean(-1).round().astype(np.uint8)
  noisy = _degrade(gray, rng, blur=1.0, noise=6.0)
  assert metrics.ssim(gray, noisy) == pytest.approx(_sk_ssim(gray, noisy, None), abs=1e-4)


def test_shape_errors():
  with pytest.raises(ValueError, match="shape mismatch"):
    metrics.psnr(np.zeros((8, 8, 3)), np.zeros((8, 9, 3)))
  with pytest.raises(ValueError, match="11x11"):
    metrics.ssim(np.zeros((10, 20, 3)), np.zeros((10, 20, 3)))


def _kohler_scene(astronaut: np.ndarray):
  """Three 'recorded' 96x96 frames cut from one photo at known offsets, and a result."""
  rng = np.random.default_rng(4)
  base = astronaut[60:200, 150:290].astype(np.float64)
  size, origin = 96, 20

  def cut(dy, dx):
    return base[origin + dy:origin + dy + size, origin + dx:origin + dx + size]

  # Neighbouring frames along a trajectory: other offsets, a little motion blur.
  frames = np.stack([ndimage.gaussian_filter(cut(0, 0), (1.5, 1.5, 0)), cut(2, -3),
                     ndimage.gaussian_filter(cut(-4, 5), (1.5, 1.5, 0))])
  # The result sees the scene at offset (1, 1): result[i, j] = frames[1][i - 1, j + 4].
  result = cut(1, 1) + rng.normal(0.0, 0.5, (size, size, 3))
  return result, frames


def test_kohler_recovers_frame_and_shift(astronaut):
  result, frames = _kohler_scene(astronaut)
  scores = shift_tolerant.kohler_scores(result, frames, max_shift=6)
  assert scores["best_frame"] == 1
  assert scores["shift"] == (-1, 4)
  # Convention: np.roll(result, shift) matches the frame away from the wrapped border.
  rolled = np.roll(result, scores["shift"], axis=(0, 1))
  assert metrics.psnr(rolled[8:-8, 8:-8], frames[1][8:-8, 8:-8]) > 50
  unaligned = max(metrics.psnr(result, f) for f in frames)
  assert scores["psnr"] > 50 > unaligned + 20
  assert scores["mssim"] > 0.99
  assert scores["mssim"] == pytest.approx(metrics.ssim(rolled[:-1, 4:], frames[1][:-1, 4:]),
                                          abs=1e-3)
  no_shift = shift_tolerant.kohler_scores(result, frames, max_shift=0, fit_intensity=False)
  assert no_shift["shift"] == (0, 0) and no_shift["psnr"] == pytest.approx(unaligned)
  no_fit = shift_tolerant.kohler_scores(result, frames, max_shift=6, fit_intensity=False)
  assert (no_fit["best_frame"], no_fit["shift"]) == (1, (-1, 4))
  assert (no_fit["gain"], no_fit["offset"]) == (1.0, 0.0)


def test_kohler_gain_offset_fit(astronaut):
  ref = astronaut[300:364, 100:164].astype(np.float64)
  result = 0.9 * ref + 10.0
  fitted = shift_tolerant.kohler_scores(result, ref, max_shift=3)
  plain = shift_tolerant.kohler_scores(result, ref, max_shift=3, fit_intensity=False)
  assert fitted["psnr"] > 100 and fitted["shift"] == (0, 0)
  assert fitted["gain"] == pytest.approx(1 / 0.9) and fitted["offset"] == pytest.approx(-10 / 0.9)
  assert plain["psnr"] < 40
  rounded = result.round().astype(np.uint8)
  assert shift_tolerant.kohler_scores(rounded, ref, max_shift=3)["psnr"] > 50


def test_kohler_rejects_bad_inputs():
  with pytest.raises(ValueError, match="sharp_frames"):
    shift_tolerant.kohler_scores(np.zeros((32, 32, 3)), np.zeros((2, 32, 31, 3)))
  with pytest.raises(ValueError, match="max_shift"):
    shift_tolerant.kohler_scores(np.zeros((32, 32, 3)), np.zeros((32, 32, 3)), max_shift=11)


def _levin_reference(result, sharp, max_shift, step, border):
  """Levin et al.'s comp_upto_shift written out with scipy's interpolator (MATLAB interp2)."""
  from scipy.interpolate import RegularGridInterpolator  # pylint: disable=g-import-not-at-top
  h, w = sharp.shape
  ref = sharp[border:h - border, border:w - border]
  interp = RegularGridInterpolator((np.arange(h), np.arange(w)), result)
  yy, xx = np.meshgrid(np.arange(border, h - border), np.arange(border, w - border),
                       indexing="ij")
  best = None
  for dy in np.arange(-max_shift, max_shift + step / 2, step):
    for dx in np.arange(-max_shift, max_shift + step / 2, step):
      moved = interp(np.stack([yy + dy, xx + dx], -1))
      sse = np.sum((moved - ref) ** 2)
      if best is None or sse < best[0]:
        best = (sse, (dy, dx), moved)
  return best[1], peak_signal_noise_ratio(ref, best[2], data_range=255)


def test_levin_scores_match_a_direct_reference():
  rng = np.random.default_rng(0)
  sharp = ndimage.gaussian_filter(rng.uniform(0, 255, (48, 52)), 1.5)
  result = ndimage.shift(sharp, (-1.3, 0.6), order=3, mode="nearest")
  result += rng.normal(0, 2, sharp.shape)
  got = shift_tolerant.levin_scores(result, sharp, max_shift=2, step=0.5, border=12)
  shift, want = _levin_reference(result, sharp, max_shift=2, step=0.5, border=12)
  assert got["shift"] == shift == (-1.5, 0.5)  # result[i - 1.3, j + 0.6] ~ sharp[i, j].
  assert got["psnr"] == pytest.approx(want, abs=1e-9)
  window = (slice(12, -12), slice(12, -12))
  moved = ndimage.shift(result, (1.5, -0.5), order=1)[window]  # moved[i] = result[i - 1.5].
  assert got["ssim"] == pytest.approx(_sk_ssim(moved, sharp[window], channel_axis=None), abs=1e-9)


def test_levin_scores_find_a_sub_pixel_shift_exactly():
  # Bilinear interpolation is exact on a bilinear surface, so the true shift scores perfectly.
  def surface(y, x):
    return 40 + 1.5 * y + 2.0 * x + 0.02 * y * x

  yy, xx = np.mgrid[0:60, 0:60].astype(np.float64)
  sharp = surface(yy, xx)
  result = surface(yy + 2.25, xx - 3.75)  # result[i - 2.25, j + 3.75] = sharp[i, j].
  scores = shift_tolerant.levin_scores(np.repeat(result[..., None], 3, -1), sharp, border=15)
  assert scores["shift"] == (-2.25, 3.75)
  assert scores["psnr"] > 80 and scores["ssim"] == pytest.approx(1.0)  # Rounding error only.
  unshifted = shift_tolerant.levin_scores(result, sharp, max_shift=0)
  assert unshifted["psnr"] == pytest.approx(peak_signal_noise_ratio(
      sharp[15:-15, 15:-15], result[15:-15, 15:-15], data_range=255))


def test_levin_scores_compare_luma_and_reject_bad_settings(astronaut):
  gray = astronaut @ np.array([0.2989, 0.5870, 0.1140])
  assert shift_tolerant.levin_scores(astronaut[:64, :64], gray[:64, :64])["psnr"] == float("inf")
  with pytest.raises(ValueError, match="max_shift"):
    shift_tolerant.levin_scores(gray[:64, :64], gray[:64, :64], max_shift=16)
  with pytest.raises(ValueError, match="11x11"):
    shift_tolerant.levin_scores(gray[:40, :40], gray[:40, :40])
  with pytest.raises(ValueError, match="mismatch"):
    shift_tolerant.levin_scores(gray[:64, :64], gray[:64, :63])


@pytest.fixture(scope="module")
def blob_image():
  rng = np.random.default_rng(5)
  img = np.full((128, 128, 3), 100.0) + rng.normal(0.0, 2.0, (128, 128, 3))
  img[30:42, 80:92] = (230.0, 200.0, 60.0)
  return np.clip(img, 0, 255).astype(np.uint8)


def test_saliency_finds_the_blob(blob_image):
  sal = image_signature.image_signature_saliency(blob_image)
  assert sal.shape == (128, 128) and sal.dtype == np.float32
  assert sal.min() >= 0.0 and sal.max() <= 1.0 and sal.max() > 0.9
  iy, ix = np.unravel_index(np.argmax(sal), sal.shape)
  assert 26 <= iy < 46 and 76 <= ix < 96  # Within 4 px of the 12x12 blob.
  yy, xx = np.mgrid[:128, :128]
  background = np.hypot(yy - 35.5, xx - 85.5) > 24
  assert sal[30:42, 80:92].mean() > 5 * sal[background].mean()


def test_saliency_shape_and_similarity(astronaut, blob_image):
  photo = astronaut[:300, :420]  # Non-square: working size 64 x 46.
  sal = image_signature.image_signature_saliency(photo)
  assert sal.shape == (300, 420)
  assert 0.0 <= sal.min() and sal.max() <= 1.0
  assert image_signature.saliency_similarity(sal, sal) == pytest.approx(1.0)
  other = image_signature.image_signature_saliency(astronaut[200:500, 80:500])
  assert image_signature.saliency_similarity(sal, other) < 0.5
  blurred = image_signature.image_signature_saliency(
      _degrade(photo, np.random.default_rng(6), 1.0, 2.0))
  similarity = image_signature.saliency_similarity
  assert similarity(sal, blurred) > similarity(sal, other)
  flat = image_signature.image_signature_saliency(np.full((40, 50, 3), 7, np.uint8))
  assert flat.shape == (40, 50) and not flat.any()
  assert math.isnan(image_signature.saliency_similarity(sal[:40, :50], flat))
  with pytest.raises(ValueError, match="shape mismatch"):
    image_signature.saliency_similarity(sal, sal[:-1])


def test_saliency_heatmap(blob_image):
  sal = image_signature.image_signature_saliency(blob_image)
  heat = image_signature.saliency_heatmap(sal)
  assert heat.shape == (128, 128, 3) and heat.dtype == np.uint8
  iy, ix = np.unravel_index(np.argmax(sal), sal.shape)
  assert heat[iy, ix, 0] > heat[iy, ix, 2]  # 'jet': hot is red ...
  assert heat[0, 0, 2] > heat[0, 0, 0]  # ... and cold is blue.
