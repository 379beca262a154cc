"""The saliency indicator of the paper's §6.2: the image signature of Hou, Harel & Koch (2012).

:func:`image_signature_saliency` maps an image to a saliency map, :func:`saliency_similarity`
compares two maps, :func:`saliency_heatmap` colours one for display.
"""

from typing import Any

import numpy as np
import scipy.fft
from scipy import ndimage

from biskip_jax.evaluation import metrics


def _resize(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """Bilinear resize of [H, W, ...] to `shape` (pixel-centre aligned), low-passed if shrinking."""
  factors = [shape[0] / a.shape[0], shape[1] / a.shape[1]] + [1.0] * (a.ndim - 2)
  sigma = [max(0.0, (1.0 / f - 1.0) / 2.0) for f in factors]
  if any(s > 0 for s in sigma):
    a = ndimage.gaussian_filter(a, sigma, mode="nearest")
  out = ndimage.zoom(a, factors, order=1, mode="nearest", grid_mode=True)
  return out[:shape[0], :shape[1]]


def image_signature_saliency(img: Any, size: int = 64,
                             sigma: float | None = None) -> np.ndarray:
  """Image-signature saliency map (Hou, Harel & Koch, TPAMI 2012), used in §6.2.

  Steps: the image (RGB, any range) is resized so that its longer side is `size` pixels
  (their default: 64 px width), then per channel ``x̄ = IDCT(sign(DCT(x)))`` (orthonormal 2-D
  DCT-II), the squares ``x̄²`` are summed over channels, smoothed by a Gaussian of standard
  deviation `sigma` (default 0.05 × the working width, as in the paper; their released code
  uses 0.045), normalised to [0, 1] and resized bilinearly back to the input's H x W.
  Differences from their code: channels are R, G, B rather than CIELAB, and the resizes are
  bilinear with a Gaussian anti-alias filter rather than MATLAB's bicubic ``imresize``.

  Args:
    img: [H, W, 3] (or [H, W]) image, uint8 or float.
    size: longer side of the working resolution, in pixels.
    sigma: smoothing standard deviation in working-resolution pixels; None for 0.05 × width.

  Returns:
    [H, W] float32 saliency in [0, 1] (all zeros for a constant image).
  """
  a = metrics.as_hwc(img, "img")
  h, w = a.shape[:2]
  scale = size / max(h, w)
  small_shape = (max(1, round(h * scale)), max(1, round(w * scale)))
  small = _resize(a, small_shape)
  sal = np.zeros(small_shape)
  for c in range(small.shape[-1]):
    coef = scipy.fft.dctn(small[..., c], norm="ortho")
    coef[np.abs(coef) <= 1e-9 * np.abs(coef).max()] = 0.0  # Round-off has no sign.
    signature = np.sign(coef)
    sal += scipy.fft.idctn(signature, norm="ortho") ** 2
  sigma = 0.05 * small_shape[1] if sigma is None else sigma
  sal = ndimage.gaussian_filter(sal, sigma, mode="reflect")
  lo, hi = sal.min(), sal.max()
  sal = (sal - lo) / (hi - lo) if hi - lo > 1e-12 else np.zeros_like(sal)
  return np.clip(_resize(sal, (h, w)), 0.0, 1.0).astype(np.float32)


def saliency_similarity(a: Any, b: Any) -> float:
  """Pearson correlation coefficient of two saliency maps.

  Args:
    a, b: [H, W] saliency maps of the same shape.

  Returns:
    Correlation in [-1, 1]; ``nan`` if either map is constant.
  """
  x, y = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
  if np.shape(a) != np.shape(b):
    raise ValueError(f"shape mismatch: {np.shape(a)} vs {np.shape(b)}")
  x, y = x - x.mean(), y - y.mean()
  denom = np.sqrt(np.sum(x * x) * np.sum(y * y))
  return float(np.sum(x * y) / denom) if denom > 0 else float("nan")


def saliency_heatmap(sal: Any, cmap: str = "jet") -> np.ndarray:
  """Colours a saliency map with a matplotlib colour map (as in the paper's Figure 8).

  Args:
    sal: [H, W] saliency in [0, 1] (clipped).
    cmap: matplotlib colour-map name.

  Returns:
    [H, W, 3] uint8 RGB.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top  # Only needed for pictures.
  rgba = matplotlib.colormaps[cmap](np.clip(np.asarray(sal, np.float64), 0.0, 1.0))
  return np.round(rgba[..., :3] * 255.0).astype(np.uint8)
