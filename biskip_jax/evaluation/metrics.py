"""Image-quality metrics of the paper's evaluation (§6.1–6.2, DESIGN §8).

* :func:`psnr`, :func:`ssim`: per-image PSNR and SSIM on RGB in [0, 255], computed in float64
  numpy. The SSIM is Wang et al.'s (2004): Gaussian 11x11 window, σ = 1.5, K = (0.01, 0.03),
  population covariances, mean of the SSIM map over the valid region (a 5-pixel border is
  dropped), averaged over channels. It equals ``skimage.metrics.structural_similarity(x, y,
  channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  data_range=255)``.

Shift-tolerant protocols (Köhler's, Levin's) are in :mod:`.shift_tolerant`, the saliency
indicator of §6.2 in :mod:`.image_signature`.
"""

from typing import Any

import numpy as np
from scipy import ndimage

# SSIM constants (Wang et al. 2004).
_K1, _K2 = 0.01, 0.03
_SIGMA = 1.5
SSIM_RADIUS = 5  # int(3.5 * σ + 0.5): skimage's truncate=3.5 gives an 11x11 window.


def _gaussian_window(sigma: float = _SIGMA, radius: int = SSIM_RADIUS) -> np.ndarray:
  """Returns the normalised 1-D Gaussian, [2 * radius + 1] float64 (separable window)."""
  t = np.arange(-radius, radius + 1, dtype=np.float64)
  w = np.exp(-0.5 * (t / sigma) ** 2)
  return w / w.sum()


def as_hwc(x: Any, name: str) -> np.ndarray:
  """Returns `x` as float64 [H, W, C]; an [H, W] image gets C = 1."""
  a = np.asarray(x, dtype=np.float64)
  if a.ndim == 2:
    a = a[..., None]
  if a.ndim != 3:
    raise ValueError(f"{name} must be [H, W] or [H, W, C], got shape {np.shape(x)}")
  return a


def _check_pair(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
  a, b = as_hwc(x, "x"), as_hwc(y, "y")
  if a.shape != b.shape:
    raise ValueError(f"shape mismatch: {np.shape(x)} vs {np.shape(y)}")
  return a, b


def psnr(x: Any, y: Any, data_range: float = 255.0) -> float:
  """Peak signal-to-noise ratio in dB, ``10 log10(data_range² / MSE)``.

  Args:
    x, y: [H, W, 3] or [H, W] images (uint8 or float), same shape.
    data_range: peak value (255 for uint8 images).

  Returns:
    PSNR in dB as a Python float; ``inf`` for identical images.
  """
  a, b = _check_pair(x, y)
  mse = np.mean((a - b) ** 2)
  if mse == 0:
    return float("inf")
  return float(10.0 * np.log10(data_range**2 / mse))


def _ssim_channel(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
  """Mean SSIM of two [H, W] float64 channels over the valid (border-cropped) region."""
  w = _gaussian_window()

  def filt(a):  # Separable Gaussian; the reflected border is cropped below.
    return ndimage.correlate1d(ndimage.correlate1d(a, w, axis=0), w, axis=1)

  c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
  ux, uy = filt(x), filt(y)
  vx = filt(x * x) - ux * ux
  vy = filt(y * y) - uy * uy
  vxy = filt(x * y) - ux * uy
  s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
  r = SSIM_RADIUS
  return float(s[r:-r, r:-r].mean())


def ssim(x: Any, y: Any, data_range: float = 255.0) -> float:
  """Structural similarity (Wang et al. 2004), as skimage computes it (module docstring).

  Args:
    x, y: [H, W, 3] or [H, W] images (uint8 or float), same shape, H, W >= 11.
    data_range: dynamic range of the values (255 for uint8 images).

  Returns:
    Mean SSIM over the valid region, averaged over channels, as a Python float.
  """
  a, b = _check_pair(x, y)
  if min(a.shape[:2]) < 2 * SSIM_RADIUS + 1:
    raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {a.shape[:2]}")
  return float(np.mean([_ssim_channel(a[..., c], b[..., c], data_range)
                        for c in range(a.shape[-1])]))
