"""Blur extents: synthetic camera-shake kernels against real blur in averaged video frames.

  python -m experiments.blur_extents --frames=FRAMES_DIR [--config=configs/pretrain.py]

Prints percentiles of two distributions, in pixels at the training scale:

* **synthetic**: :func:`biskip_jax.data.blur.kernel_extent` (the longer side of the box where the
  kernel is above 2 % of its peak) of kernels drawn with the config's ``data.synthetic``
  settings (a kernel blurs the photo after its per-record downscale, so its extent is in the
  pixels of the training crop);
* **rolled** (when ``max_roll`` > 0): shakes that also roll the camera
  (``data.synthetic.roll_prob``) blur each pixel differently; the extent of the path of each
  corner and of the centre of a 256x256 crop placed at random in a 1280x720 photo (the frames'
  size), the axis and span drawn as the training records draw them
  (:func:`biskip_jax.data.blur.random_roll`), each path rasterised and measured as a kernel;
* **real**: for windows of the config's ``data.frames.window`` frames at random starts, the
  motion between the first and the last frame of the window, measured by phase correlation
  (scikit-image) on a grid of 128x128 patches of the gray frames: the extent of a blur whose
  path is straight is ``max(|dy|, |dx|) + 1``, the same measure as the kernel's box. Patches
  without texture or without a good match after the shift are skipped; curved paths make this
  a lower bound. With ``data.frames.scale_range``, each window's motion is multiplied by its
  downscale factor, drawn as the training crops draw it.

A second table compares the paths' shapes, their **bend**: the distance of the path's middle
sample from the midpoint of the chord between its ends, over the chord's length (0 for a
straight path at constant speed; about 0.5 for a right-angle turn; above 1 for a shake that
comes back on itself). Synthetic: the shake's samples (``data.synthetic.min_shake`` and
``max_shake`` set how nearly straight they are); real: the motion from the window's first
frame to its middle frame and to its last, per patch. Only paths whose chord is at least
``--min_chord`` pixels are counted (a short chord's bend is mostly measurement noise); the
real line ends with the two distributions' Kolmogorov-Smirnov distance (scipy).

Only the training frames are measured (the held-out range of ``data.frames.eval_range`` is
left alone).
"""

from typing import Sequence

import numpy as np
import scipy.stats
from absl import app, flags
from ml_collections import config_flags

from biskip_jax.data import blur
from biskip_jax.data.datasets import frames

_FRAMES = flags.DEFINE_string("frames", None, "Folder of consecutive video frames.")
_NUM_KERNELS = flags.DEFINE_integer("kernels", 400, "Synthetic kernels drawn.")
_NUM_WINDOWS = flags.DEFINE_integer("windows", 40, "Real frame windows measured.")
_PATCH = flags.DEFINE_integer("patch", 128, "Side of the patches whose motion is measured.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the draws.")
_MIN_CHORD = flags.DEFINE_float("min_chord", 6.0, "Shortest chord (px) whose bend is counted.")
config_flags.DEFINE_config_file("config", "configs/pretrain.py", "Training config.")

PERCENTILES = (10, 25, 50, 75, 90, 99)


def _shake(rng: np.random.Generator, sy) -> np.ndarray:
  """One shake drawn as training draws it from ``sy`` (``blur.random_shake``), in pixels."""
  return blur.random_shake(rng, sy.kernel_size, max_anxiety=sy.max_shake,
                           min_anxiety=sy.get("min_shake", 0.0),
                           length_range=tuple(sy.length_range),
                           exposure_range=tuple(sy.exposure_range))


def synthetic_extents(sy, n: int, seed: int) -> np.ndarray:
  """Kernel extents (pixels of the crop the network sees) of ``n`` draws of ``sy``'s kernels."""
  rng = np.random.default_rng(seed)
  return np.asarray([blur.kernel_extent(blur.trajectory_to_kernel(_shake(rng, sy),
                                                                  sy.kernel_size))
                     for _ in range(n)], np.float64)


def bend(start: complex, middle: complex, end: complex) -> float:
  """``|middle - (start + end) / 2| / |end - start|``: 0 for a straight path at constant speed."""
  return abs(middle - (start + end) / 2) / max(abs(end - start), 1e-12)


def synthetic_bends(sy, n: int, seed: int, min_chord: float) -> np.ndarray:
  """Bends of ``n`` draws of ``sy``'s shakes (as the kernel holds them) whose chord is at
  least ``min_chord`` pixels."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    x = blur.fit_to_kernel(_shake(rng, sy), sy.kernel_size)
    if abs(x[-1] - x[0]) >= min_chord:
      out.append(bend(x[0], x[len(x) // 2], x[-1]))
  return np.asarray(out, np.float64)


def rolled_extents(sy, n: int, seed: int, photo: tuple[int, int] = (720, 1280),
                   crop: int = 256) -> np.ndarray:
  """Extents at the 4 corners and the centre of a crop of ``n`` shakes with roll
  (``sy.max_roll`` degrees; every draw rolls)."""
  rng = np.random.default_rng(seed)
  k = sy.kernel_size
  out = []
  for _ in range(n):
    traj = _shake(rng, sy)
    origin = (int(rng.integers(photo[0] - crop + 1)), int(rng.integers(photo[1] - crop + 1)))
    angles, (ay, ax) = blur.random_roll(rng, len(traj), max_roll=np.deg2rad(sy.max_roll),
                                        kernel_size=k, size=(crop, crop), origin=origin,
                                        photo=photo)
    shift = blur.fit_to_kernel(traj, k)  # The translation as the kernel holds it.
    for qy, qx in ((0, 0), (0, crop), (crop, 0), (crop, crop), (crop / 2, crop / 2)):
      q = complex(qx - ax, qy - ay)  # x + iy from the axis.
      path = shift + q * (np.exp(1j * angles) - 1)  # A roll moves q along its circle.
      out.append(blur.kernel_extent(blur.trajectory_to_kernel(path, 2 * k + 1)))
  return np.asarray(out, np.float64)


def _gray(img: np.ndarray) -> np.ndarray:
  return img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def _patch_motions(sequence: Sequence[str], window: tuple[int, int],
                   eval_range: Sequence[float], n: int, patch: int, seed: int,
                   scale_range: Sequence[float], middle: bool):
  """Yields ``(scale, to_middle, to_last)`` per matched patch of ``n`` random training
  windows: the motion (``x + 1j * y`` pixels, by phase correlation) from the window's first
  frame to its middle frame (0 unless ``middle``) and to its last; ``scale ~ U(scale_range)``
  per window (none drawn for ``(1, 1)``)."""
  from skimage.registration import phase_cross_correlation  # pylint: disable=g-import-not-at-top

  from biskip_jax.data import image_io  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  lo, hi = frames.held_out(len(sequence), eval_range)

  def motion(pa, pb):
    shift, error, _ = phase_cross_correlation(pa, pb, upsample_factor=4, normalization=None)
    # Normalised RMS error after the shift: large for a poor match.
    return complex(shift[1], shift[0]) if error < 0.3 else None

  for _ in range(n):
    length = int(rng.integers(window[0], window[1] + 1))
    starts = [s for s in range(len(sequence) - length + 1) if s + length <= lo or s >= hi]
    start = starts[rng.integers(len(starts))]
    scale = 1.0 if tuple(scale_range) == (1.0, 1.0) else rng.uniform(*scale_range)
    a = _gray(image_io.load_image(sequence[start]))
    b = _gray(image_io.load_image(sequence[start + length - 1]))
    m = _gray(image_io.load_image(sequence[start + length // 2])) if middle else None
    h, w = a.shape
    for y in range(0, h - patch + 1, patch):
      for x in range(0, w - patch + 1, patch):
        cut = lambda f, y=y, x=x: f[y:y + patch, x:x + patch]
        if cut(a).std() < 3.0:  # Flat patches: no reliable correlation peak.
          continue
        to_last = motion(cut(a), cut(b))
        to_middle = motion(cut(a), cut(m)) if middle else 0j
        if to_last is not None and to_middle is not None:
          yield scale, to_middle, to_last


def real_extents(sequence: Sequence[str], window: tuple[int, int], eval_range: Sequence[float],
                 n: int, patch: int, seed: int,
                 scale_range: Sequence[float] = (1.0, 1.0)) -> np.ndarray:
  """Per-patch motion extents between the first and last frames of ``n`` random windows.

  Each window's motion is multiplied by a downscale factor ``s ~ U(scale_range)`` (none is
  drawn for ``(1, 1)``), as ``FramesSource`` downscales training crops.
  """
  return np.asarray([max(abs(last.real), abs(last.imag)) * scale + 1
                     for scale, _, last in _patch_motions(sequence, window, eval_range, n,
                                                          patch, seed, scale_range, False)],
                    np.float64)


def real_bends(sequence: Sequence[str], window: tuple[int, int], eval_range: Sequence[float],
               n: int, patch: int, seed: int, min_chord: float) -> np.ndarray:
  """Per-patch bends of the motion through ``n`` random windows (first, middle and last
  frame) whose chord is at least ``min_chord`` pixels."""
  return np.asarray([bend(0j, mid, last)
                     for _, mid, last in _patch_motions(sequence, window, eval_range, n, patch,
                                                        seed, (1.0, 1.0), True)
                     if abs(last) >= min_chord], np.float64)


def _line(name: str, values: np.ndarray, digits: int = 1) -> str:
  cells = " ".join(f"{np.percentile(values, p):6.{digits}f}" for p in PERCENTILES)
  return f"{name:<10} {len(values):6d} {cells}"


def main(argv):
  del argv
  config = flags.FLAGS.config
  sy, fr = config.data.synthetic, config.data.frames
  print("extent (px)  count " + " ".join(f"{'p' + str(p):>6}" for p in PERCENTILES))
  print(_line("synthetic", synthetic_extents(sy, _NUM_KERNELS.value, _SEED.value)))
  if sy.max_roll > 0:
    print(_line("rolled", rolled_extents(sy, _NUM_KERNELS.value, _SEED.value)))
  sequences = frames.list_sequences(_FRAMES.value) if _FRAMES.value else []
  for seq in sequences:
    print(_line("real", real_extents(seq, tuple(fr.window), fr.eval_range, _NUM_WINDOWS.value,
                                     _PATCH.value, _SEED.value, fr.scale_range)))
  print(f"\nbend (chord >= {_MIN_CHORD.value:g} px) " + " ".join(f"{'p' + str(p):>6}"
                                                              for p in PERCENTILES))
  synthetic = synthetic_bends(sy, _NUM_KERNELS.value, _SEED.value, _MIN_CHORD.value)
  print(_line("synthetic", synthetic, 3))
  for seq in sequences:
    real = real_bends(seq, tuple(fr.window), fr.eval_range, _NUM_WINDOWS.value, _PATCH.value,
                      _SEED.value, _MIN_CHORD.value)
    print(_line("real", real, 3) + "   Kolmogorov-Smirnov distance to synthetic: "
          f"{scipy.stats.ks_2samp(synthetic, real).statistic:.3f}")


if __name__ == "__main__":
  app.run(main)
