"""Shift-tolerant scores of recorded real-blur benchmarks (paper §6.1, DESIGN §8).

* :func:`kohler_scores`: PSNR and MSSIM under Köhler et al.'s (2012) protocol — best over the
  recorded sharp frames and small translations (see its docstring for how it differs from
  their MATLAB code).
* :func:`levin_scores`: PSNR and SSIM at the best sub-pixel shift, Levin et al.'s (2009)
  protocol for their recorded camera-shake set.

Both score with :func:`biskip_jax.evaluation.metrics.psnr` and ``ssim``.
"""

from typing import Any

import numpy as np
import scipy.fft

from biskip_jax.evaluation import metrics


def _shift_mse(r: np.ndarray, f: np.ndarray, max_shift: int, fit: bool) -> np.ndarray:
  """MSE between `r` and `f` over the overlap, for every integer shift.

  Entry ``[dy + S, dx + S]`` compares ``r[i, j]`` with ``f[i + dy, j + dx]`` over all (i, j)
  where both exist (S = max_shift). Overlap sums come from integral images, the cross term
  from one FFT cross-correlation, so all (2S+1)² shifts cost about one FFT of the image.

  Args:
    r, f: [H, W, C] float64 result and reference.
    max_shift: S.
    fit: whether to fit ``a * r + b`` to `f` (least squares) at each shift before the MSE.

  Returns:
    [2S + 1, 2S + 1] float64 MSE per element (pixel × channel).
  """
  h, w, c = r.shape
  d = np.arange(-max_shift, max_shift + 1)
  r_y0, r_y1 = np.maximum(0, -d)[:, None], (h - np.maximum(0, d))[:, None]
  r_x0, r_x1 = np.maximum(0, -d)[None, :], (w - np.maximum(0, d))[None, :]

  def box(img, on_reference):  # Σ over the overlap of `img` (summed over channels).
    ii = np.pad(img.sum(-1).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    oy, ox = (d[:, None], d[None, :]) if on_reference else (0, 0)
    y0, y1, x0, x1 = r_y0 + oy, r_y1 + oy, r_x0 + ox, r_x1 + ox
    return ii[y1, x1] - ii[y0, x1] - ii[y1, x0] + ii[y0, x0]

  n = (r_y1 - r_y0) * (r_x1 - r_x0) * c
  s_r, s_rr = box(r, False), box(r * r, False)
  s_f, s_ff = box(f, True), box(f * f, True)
  shape = (scipy.fft.next_fast_len(h + max_shift), scipy.fft.next_fast_len(w + max_shift))
  spec = np.conj(scipy.fft.rfft2(r, shape, axes=(0, 1))) * scipy.fft.rfft2(f, shape, axes=(0, 1))
  corr = scipy.fft.irfft2(spec.sum(-1), shape)  # corr[dy, dx] = Σ r[i, j] f[i + dy, j + dx].
  s_rf = corr[np.ix_(d % shape[0], d % shape[1])]
  if fit:
    var_r = s_rr - s_r**2 / n
    cov = s_rf - s_r * s_f / n
    sse = s_ff - s_f**2 / n - np.where(var_r > 1e-9, cov**2 / np.maximum(var_r, 1e-9), 0.0)
  else:
    sse = s_rr - 2 * s_rf + s_ff
  return np.maximum(sse, 0.0) / n


def kohler_scores(result: Any, sharp_frames: Any, max_shift: int = 10,
                  data_range: float = 255.0, fit_intensity: bool = True) -> dict[str, Any]:
  """PSNR and MSSIM under the Köhler et al. (2012) benchmark protocol, as implemented here.

  What is computed: for every recorded sharp frame ``k`` and every integer translation
  ``(dy, dx)`` in ``[-max_shift, max_shift]²``, the result and the frame are cropped to their
  overlap (``result[i, j]`` against ``frame[i + dy, j + dx]``, i.e. ``np.roll(result, (dy, dx))
  ≈ frame``); with `fit_intensity`, a gain and offset ``a * result + b`` (one pair for all
  three channels) is fitted to the frame by least squares on that overlap; the MSE over RGB
  is taken. The (frame, shift) with the lowest MSE is kept; PSNR (RGB, overlap only) and MSSIM
  (:func:`ssim`, mean over R, G, B) are both reported at that one alignment.

  Differences from the benchmark's MATLAB code (``eval_image.m`` + ``metrix_mux``):

  * shift: they register the channel means by FFT cross-correlation peak (``dftregistration``,
    integer, unbounded); here the shift is searched exhaustively within ``max_shift`` by MSE.
  * intensity: they fit a gain only, ``<x, z> / <z, z>``, before registering; here gain and
    offset are fitted at every candidate shift (or nothing, ``fit_intensity=False``).
  * border: they zero-fill the shifted result and mask the frame, so the uncovered border
    counts as zero error over the full frame; here both are cropped to the overlap.
  * colour: ``metrix_mux`` converts both images to luminance 0.299 R + 0.587 G + 0.114 B before
    every metric; here PSNR and SSIM are on RGB.
  * MSSIM: their 'MSSIM' is ``mssim_index``, the 5-scale multi-scale SSIM (Wang et al. 2003);
    here it is the mean single-scale SSIM, as deblurring papers usually report it.
  * best-of: they take the maximum of each metric over frames separately (possibly from
    different frames); here both come from the (frame, shift) of the best MSE.

  Numbers are therefore close to, but not interchangeable with, the benchmark's own.

  Args:
    result: [H, W, 3] deblurred image (uint8 or float in [0, data_range]).
    sharp_frames: [K, H, W, 3] recorded sharp frames (or one [H, W, 3] frame).
    max_shift: largest translation searched, in pixels (2 * max_shift < min(H, W) - 10).
    data_range: peak value.
    fit_intensity: fit gain and offset of the result to each frame.

  Returns:
    ``{"psnr": float, "mssim": float, "best_frame": int, "shift": (dy, dx), "gain": float,
    "offset": float}`` (gain 1 and offset 0 without the fit).
  """
  r = metrics.as_hwc(result, "result")
  frames = np.asarray(sharp_frames, dtype=np.float64)
  if frames.ndim == r.ndim:
    frames = frames[None]
  if frames.shape[1:] != r.shape:
    raise ValueError(f"sharp_frames {np.shape(sharp_frames)} must be [K, *{r.shape}]")
  if max_shift < 0 or min(r.shape[:2]) - 2 * max_shift < 2 * metrics.SSIM_RADIUS + 1:
    raise ValueError(f"max_shift={max_shift} leaves no 11x11 overlap in {r.shape[:2]}")
  mses = np.stack([_shift_mse(r, f, max_shift, fit_intensity) for f in frames])
  k, iy, ix = np.unravel_index(np.argmin(mses), mses.shape)
  dy, dx = int(iy) - max_shift, int(ix) - max_shift
  h, w = r.shape[:2]
  ro = r[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
  fo = frames[k][max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)]
  gain, offset = 1.0, 0.0
  if fit_intensity:
    rc = ro - ro.mean()
    var = np.sum(rc * rc)
    gain = float(np.sum(rc * (fo - fo.mean())) / var) if var > 1e-9 else 0.0
    offset = float(fo.mean() - gain * ro.mean())
    ro = gain * ro + offset
  return {"psnr": metrics.psnr(ro, fo, data_range), "mssim": metrics.ssim(ro, fo, data_range),
          "best_frame": int(k), "shift": (dy, dx), "gain": gain, "offset": offset}


def _luma(x: Any, name: str) -> np.ndarray:
  """[H, W] float64: an RGB image's ITU-R 601 luma (MATLAB's ``rgb2gray``), a gray one as is."""
  a = metrics.as_hwc(x, name)
  if a.shape[-1] == 3:
    return a @ np.array([0.2989, 0.5870, 0.1140])
  if a.shape[-1] != 1:
    raise ValueError(f"{name} must be gray or RGB, got {a.shape[-1]} channels")
  return a[..., 0]


def _lerp(a: np.ndarray, start: float, n: int, axis: int) -> np.ndarray:
  """``a`` linearly interpolated at ``start, start + 1, ..., start + n - 1`` along ``axis``."""
  i = int(np.floor(start))
  f = start - i
  lo = np.take(a, np.arange(i, i + n), axis=axis)
  if f == 0:
    return lo
  return (1 - f) * lo + f * np.take(a, np.arange(i + 1, i + 1 + n), axis=axis)


def levin_scores(result: Any, sharp: Any, max_shift: float = 5.0, step: float = 0.25,
                 border: int = 15, data_range: float = 255.0) -> dict[str, Any]:
  """PSNR and SSIM up to a sub-pixel shift: Levin et al.'s (2009) protocol for their set.

  Blind deblurring recovers an image only up to a translation (a shifted kernel and a shifted
  image explain the same blur; Levin et al.'s recorded kernels are not centred, so their
  blurred images are displaced from the sharp ones), so their evaluation code
  (``comp_upto_shift``) scores the result at its best shift: ``border`` pixels are cut off
  each side of the sharp image; the result, bilinearly shifted by ``(dy, dx)`` on a grid of
  ``step`` within ``[-max_shift, max_shift]²`` (``shifted[i, j] = result[i + dy, j + dx]``),
  is compared with that window; the shift of least squared error is kept and PSNR and SSIM
  (:func:`ssim`) are computed there. Both images are compared in gray (ITU-R 601 luma), as
  Levin's images are gray.

  Args:
    result: [H, W, 3] or [H, W] restored (or blurred) image, in [0, data_range].
    sharp: the sharp image, same height and width.
    max_shift: largest shift searched, in pixels (<= border).
    step: shift grid spacing, in pixels.
    border: pixels of the sharp image left out on each side.
    data_range: peak value.

  Returns:
    ``{"psnr": float, "ssim": float, "shift": (dy, dx)}``.
  """
  r, s = _luma(result, "result"), _luma(sharp, "sharp")
  if r.shape != s.shape:
    raise ValueError(f"shape mismatch: {np.shape(result)} vs {np.shape(sharp)}")
  if not 0 <= max_shift <= border or step <= 0:
    raise ValueError(f"need 0 <= max_shift ({max_shift}) <= border ({border}) and step > 0")
  h, w = s.shape
  n1, n2 = h - 2 * border, w - 2 * border
  if min(n1, n2) < 2 * metrics.SSIM_RADIUS + 1:
    raise ValueError(f"border={border} leaves no 11x11 window in {s.shape}")
  ref = s[border:h - border, border:w - border]
  shifts = np.arange(-max_shift, max_shift + step / 2, step)
  best = (np.inf, None)
  for dy in shifts:
    rows = _lerp(r, border + dy, n1, axis=0)
    for dx in shifts:
      sse = np.sum((_lerp(rows, border + dx, n2, axis=1) - ref) ** 2)
      if sse < best[0]:
        best = (sse, (float(dy), float(dx)))
  dy, dx = best[1]
  moved = _lerp(_lerp(r, border + dy, n1, axis=0), border + dx, n2, axis=1)
  return {"psnr": metrics.psnr(moved, ref, data_range),
          "ssim": metrics.ssim(moved, ref, data_range),
          "shift": (dy, dx)}
