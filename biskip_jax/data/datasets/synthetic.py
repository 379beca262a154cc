"""Synthetic motion-blur pairs made on the fly from sharp images (quickstart and tests).

Sharp images are scikit-image's bundled photos (``config.data.synthetic.images = "skimage"``;
all of :data:`SKIMAGE_PHOTOS` ship inside the wheel and load offline) or every image of a
folder. Images named in ``config.data.synthetic.holdout`` (skimage names or file names/stems)
serve only the evaluation split; all others only training.

Record ``i`` of a split is the sharp image ``i % n`` blurred by :func:`biskip_jax.data.blur.
random_kernel` drawn from ``np.random.default_rng([seed, split_salt, i])``: the same config
gives the same pairs on any machine and in any worker. Training has a virtual epoch of
``config.data.synthetic.num_train`` records; evaluation has ``num_eval`` full-size pairs (or
their centre ``eval_max_size`` windows).

Training crops are made by blurring only the crop plus a kernel margin of the (optionally
downscaled) photo, never the whole photo. Noise-std ranges, exposure fractions, JPEG and a
share of sharp inputs are optional (:class:`SyntheticSource`, ``config.data.synthetic``).
"""

import os
from typing import Any, Sequence

import numpy as np
from PIL import Image

from biskip_jax.data import blur as blur_lib
from biskip_jax.data import image_io
from biskip_jax.errors import UserError

# scikit-image photos that load offline (checked with scikit-image 0.26, no pooch installed).
# Gray ones are turned into RGB; "motorcycle" is the left view of stereo_motorcycle().
SKIMAGE_PHOTOS = ("astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass",
                  "gravel", "hubble_deep_field", "immunohistochemistry", "moon", "motorcycle",
                  "rocket")
_SALT = {"train": 0, "eval": 1}
_MAX_CACHED = 32  # Decoded sharp images kept per process.


def load_skimage_photo(name: str) -> np.ndarray:
  """One of :data:`SKIMAGE_PHOTOS` as ``uint8[H, W, 3]`` RGB."""
  from skimage import data  # pylint: disable=g-import-not-at-top  # Slow import, rarely needed.
  if name not in SKIMAGE_PHOTOS:
    raise UserError(f"Unknown scikit-image photo {name!r} in --config.data.synthetic.holdout; "
                    f"choose from {SKIMAGE_PHOTOS}.")
  img = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
  img = np.asarray(img, np.uint8)
  return np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img[:, :, :3].copy()


def example_photo() -> tuple[str | None, np.ndarray]:
  """scikit-image's real camera-shake photo ``clock_motion.png``: ``(path, uint8 HxWx3)``.

  (The notebooks' default photo to deblur.) Falls back to ``(None, image)`` with the
  ``camera`` photo blurred by a random camera-shake kernel when the installed scikit-image
  lacks the file.
  """
  import skimage.data  # pylint: disable=g-import-not-at-top  # Slow import, rarely needed.
  for folder in (os.path.dirname(skimage.data.__file__), getattr(skimage.data, "data_dir", "")):
    path = os.path.join(folder, "clock_motion.png")
    if folder and os.path.isfile(path):
      return path, image_io.load_image(path)
  sharp = load_skimage_photo("camera")
  rng = np.random.default_rng(0)
  return None, blur_lib.blur_image(sharp, blur_lib.random_kernel(rng, 31), rng)


def _stem(spec: str) -> str:
  return spec.split(":", 1)[1] if spec.startswith("skimage:") else os.path.splitext(
      os.path.basename(spec))[0]


def image_specs(images: str, holdout: Sequence[str], split: str,
                holdout_every: int = 0) -> list[str]:
  """Sharp images of a split: ``"skimage:NAME"`` entries or file paths.

  Args:
    images: ``"skimage"`` or a folder of sharp images (subfolders included).
    holdout: names (skimage names, file names or stems) kept for evaluation.
    split: ``"train"`` (everything but the holdout) or ``"eval"`` (the holdout).
    holdout_every: > 0: also hold out every ``holdout_every``-th image of the sorted list,
      starting with the first (a held-out share of a large folder without naming files).

  Raises:
    UserError: unknown folder or photo names, or an empty split.
  """
  holdout = tuple(holdout or ())
  if images == "skimage":
    for h in holdout:
      if h not in SKIMAGE_PHOTOS:
        load_skimage_photo(h)  # Raises the error listing the names.
    specs = [f"skimage:{n}" for n in SKIMAGE_PHOTOS]
  else:
    if not os.path.isdir(images):
      raise UserError(f"--config.data.synthetic.images={images!r} is neither 'skimage' nor a "
                      "folder of sharp images.")
    specs = [os.path.join(images, f) for f in image_io.list_images(images, recursive=True)]
    if not specs:
      raise UserError(f"--config.data.synthetic.images={images}: no images in the folder.")

  def held(i: int, spec: str) -> bool:
    return (_stem(spec) in holdout or os.path.basename(spec) in holdout
            or (holdout_every > 0 and i % holdout_every == 0))

  out = [s for i, s in enumerate(specs) if held(i, s) == (split == "eval")]
  if not out:
    what = ("every image is in --config.data.synthetic.holdout; leave some for training"
            if split == "train" else "no image matches --config.data.synthetic.holdout="
            f"{holdout}; name some of {[_stem(s) for s in specs][:10]} there")
    raise UserError(f"Synthetic data from {images}: {what}.")
  return out


class SyntheticSource:
  """Blurred/sharp pairs generated from sharp images; interface of ``FilePairSource``.

  Per record, beyond the kernel: an optional downscale of the sharp photo (``scale_range``,
  varies blur size against content size), a noise std drawn from ``[noise_std,
  noise_std_max]``, a blur gamma drawn from ``[gamma, gamma_max]``, JPEG compression of the
  input with probability ``jpeg_prob`` (quality from ``jpeg_quality``) and, for training
  only, a share ``sharp_prob`` of records whose input is the sharp crop itself (noise and
  JPEG still apply) so that the model learns to leave sharp images alone, and a share
  ``roll_prob`` of blurred records whose shake also rolls the camera by up to ``max_roll``
  degrees about a point drawn over the whole (downscaled) photo, its optical axis
  (:func:`biskip_jax.data.blur.rolling_kernels`: blur that varies over the image; the roll's
  streaks are kept within the kernel's half-size over the window). Features left at
  their defaults draw no random numbers: pairs stay those of earlier versions. The arguments
  come from ``config.data.synthetic``, checked by
  :func:`biskip_jax.config.config_checks.check_data` (``input_pipeline.get_source``).
  """

  def __init__(self, specs: Sequence[str], *, num_examples: int, seed: int, split: str,
               kernel_size: int = 31, max_anxiety: float = 0.005, noise_std: float = 0.01,
               gamma: float = 2.2, gamma_max: float = 0.0,
               length_range: Sequence[float] = (0.15, 1.0),
               exposure_range: Sequence[float] = (1.0, 1.0), noise_std_max: float = 0.0,
               jpeg_prob: float = 0.0, jpeg_quality: Sequence[int] = (60, 95),
               sharp_prob: float = 0.0, scale_range: Sequence[float] = (1.0, 1.0),
               eval_max_size: int = 0, highlight_prob: float = 0.0,
               highlight_gain: Sequence[float] = (1.0, 1.0),
               shot_noise: Sequence[float] = (0.0, 0.0),
               read_noise: Sequence[float] = (0.0, 0.0), roll_prob: float = 0.0,
               max_roll: float = 0.0, min_anxiety: float = 0.0):
    # An empty evaluation split is allowed: a mix then evaluates on its other sources only.
    if num_examples < (1 if split == "train" else 0):
      raise UserError(f"Synthetic {split} split needs >= 1 examples, got {num_examples} "
                      "(--config.data.synthetic.num_train / num_eval).")
    self.specs = list(specs)
    self.num_examples = num_examples
    self.split = split
    self._seed = (seed % 2**32, _SALT[split])
    self._kw = dict(kernel_size=kernel_size, max_anxiety=max_anxiety, min_anxiety=min_anxiety,
                    length_range=tuple(length_range), exposure_range=tuple(exposure_range))
    self._noise_std, self._gamma = noise_std, gamma
    self._noise_std_max = noise_std_max
    self._gamma_max = gamma_max
    self._jpeg_prob, self._jpeg_quality = jpeg_prob, tuple(jpeg_quality)
    self._sharp_prob = sharp_prob if split == "train" else 0.0
    # Training only: evaluation pairs stay uniform blur, comparable between runs.
    self._roll_prob = roll_prob if split == "train" and max_roll > 0 else 0.0
    self._max_roll = np.deg2rad(max_roll)
    self._scale_range = tuple(scale_range)
    self._eval_max_size = eval_max_size
    self._highlight_prob, self._highlight_gain = highlight_prob, tuple(highlight_gain)
    self._shot_noise, self._read_noise = tuple(shot_noise), tuple(read_noise)
    self._cache: dict[int, np.ndarray] = {}

  def __getstate__(self) -> dict[str, Any]:
    return {**self.__dict__, "_cache": {}}  # Workers decode their own copies.

  def __len__(self) -> int:
    return self.num_examples

  def _spec(self, index: int) -> int:
    return index % len(self.specs)

  def name(self, index: int) -> str:
    return f"{_stem(self.specs[self._spec(index)])}_{index:04d}.png"

  def sharp(self, index: int) -> np.ndarray:
    """The sharp image of example ``index`` at its original size, ``uint8[H, W, 3]``."""
    j = self._spec(index)
    if j not in self._cache:
      spec = self.specs[j]
      img = (load_skimage_photo(spec[8:]) if spec.startswith("skimage:")
             else image_io.load_image(spec))
      if len(self._cache) >= _MAX_CACHED:
        self._cache.pop(next(iter(self._cache)))
      self._cache[j] = img
    return self._cache[j]

  def kernel(self, index: int) -> np.ndarray:
    """The blur kernel of example ``index``, ``float64[k, k]`` summing to 1
    (:func:`blur_lib.random_kernel` of the record's generator)."""
    return blur_lib.trajectory_to_kernel(self._trajectory(index), self._kw["kernel_size"])

  def _trajectory(self, index: int) -> np.ndarray:
    """The shake behind :meth:`kernel`, ``complex128[T]`` in pixels."""
    rng = np.random.default_rng([*self._seed, index])
    kw = dict(self._kw)
    return blur_lib.random_shake(rng, kw.pop("kernel_size"), **kw)

  def _shake(self, index: int, rng: np.random.Generator, size: tuple[int, int],
             origin: tuple[int, int], photo: tuple[int, int]) -> tuple[np.ndarray, dict]:
    """The blur of record ``index`` for a window of ``size`` at ``origin`` (y, x) of a photo
    of size ``photo``: ``(kernel, blur_image's roll arguments)``.

    With probability ``roll_prob`` the shake also rolls (:func:`blur_lib.random_roll`,
    :func:`blur_lib.rolling_kernels`).
    """
    if not (self._roll_prob > 0 and rng.uniform() < self._roll_prob):
      return self.kernel(index), {}
    k = self._kw["kernel_size"]
    trajectory = self._trajectory(index)
    angles, axis = blur_lib.random_roll(rng, len(trajectory), max_roll=self._max_roll,
                                        kernel_size=k, size=size, origin=origin, photo=photo)
    chunk_angles, kernels = blur_lib.rolling_kernels(trajectory, angles, k)
    return kernels, {"roll": chunk_angles, "roll_centre": axis}

  def _degrade(self, sharp: np.ndarray, index: int, rng: np.random.Generator,
               origin: tuple[int, int] = (0, 0),
               photo: tuple[int, int] | None = None) -> np.ndarray:
    """The network input made from ``sharp``: blur (or not), highlights, noise, JPEG; ``uint8``.

    ``sharp`` is the window at ``origin`` (y, x) of a photo of size ``photo`` (default: the
    window is the photo), where a rolled shake draws its axis. Features left at their defaults
    draw no random numbers (earlier configs' pairs stay the same).
    """
    keep_sharp = self._sharp_prob > 0 and rng.uniform() < self._sharp_prob
    std = self._noise_std
    if self._noise_std_max > self._noise_std:
      std = rng.uniform(self._noise_std, self._noise_std_max)
    gain = 1.0
    if self._highlight_prob > 0 and rng.uniform() < self._highlight_prob:
      gain = rng.uniform(*self._highlight_gain)
    shot = rng.uniform(*self._shot_noise) if max(self._shot_noise) > 0 else 0.0
    read = rng.uniform(*self._read_noise) if max(self._read_noise) > 0 else 0.0
    gamma = self._gamma
    if self._gamma_max > self._gamma:
      gamma = rng.uniform(self._gamma, self._gamma_max)
    if keep_sharp and not (shot or read):
      out = blur_lib.add_noise(sharp, rng, std)
    else:
      kernel, roll_kw = (np.ones((1, 1)), {}) if keep_sharp else self._shake(
          index, rng, sharp.shape[:2], origin, photo or sharp.shape[:2])
      out = blur_lib.blur_image(sharp, kernel, rng, gamma=gamma, noise_std=std,
                                highlight_gain=1.0 if keep_sharp else gain, shot_noise=shot,
                                read_noise=read, **roll_kw)
    if self._jpeg_prob > 0 and rng.uniform() < self._jpeg_prob:
      lo, hi = self._jpeg_quality
      out = blur_lib.jpeg_compress(out, int(rng.integers(lo, hi + 1)))
    return out

  def _draw_scale(self, index: int, crop: int, rng: np.random.Generator) -> float:
    """Downscale factor of the sharp photo for this record (1: none; nothing drawn)."""
    lo, hi = self._scale_range
    if (lo, hi) == (1.0, 1.0):
      return 1.0
    h, w = self.sharp(index).shape[:2]
    return max(rng.uniform(lo, hi), min(crop / min(h, w), 1.0))  # Keep room for the crop.

  def scaled_size(self, index: int, scale: float) -> tuple[int, int]:
    """``(height, width)`` of the sharp image of ``index`` downscaled by ``scale``."""
    h, w = self.sharp(index).shape[:2]
    return (h, w) if scale == 1.0 else (max(1, round(h * scale)), max(1, round(w * scale)))

  def _region(self, index: int, scale: float, y0: int, y1: int, x0: int,
              x1: int) -> np.ndarray:
    """Rows ``y0:y1``, columns ``x0:x1`` of the sharp image downscaled by ``scale``.

    Resizes only that region (Pillow's ``box``), which equals cropping the whole downscaled
    image (Lanczos).
    """
    sharp = self.sharp(index)
    if scale == 1.0:
      return sharp[y0:y1, x0:x1]
    h, w = sharp.shape[:2]
    hs, ws = self.scaled_size(index, scale)
    sy, sx = h / hs, w / ws
    img = Image.fromarray(sharp).resize((x1 - x0, y1 - y0), Image.Resampling.LANCZOS,
                                        box=(x0 * sx, y0 * sy, x1 * sx, y1 * sy))
    return np.asarray(img, np.uint8)

  def load(self, index: int) -> dict[str, Any]:
    """Example ``index``: ``{"name", "blur", "sharp"}``, uint8 HxWx3.

    Full size, or the centre ``eval_max_size`` window (per side) when that is set.
    """
    rng = np.random.default_rng([*self._seed, index, 1])
    sharp = self.sharp(index)
    m = self._eval_max_size
    if m:
      h, w = sharp.shape[:2]
      hh, ww = min(h, m), min(w, m)
      blur, sharp = self.load_window(index, (h - hh) // 2, (w - ww) // 2, hh, ww, rng)
    else:
      blur = self._degrade(sharp, index, rng)
    return {"name": self.name(index), "blur": blur, "sharp": sharp}

  def random_crop(self, index: int, size: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
    """A random ``size x size`` training pair, blurring only the crop's neighbourhood.

    Returns:
      ``(blur, sharp)``, each ``uint8[size, size, 3]``, or None if the image is smaller than
      the crop (the caller pads the full pair instead).
    """
    scale = self._draw_scale(index, size, rng)
    h, w = self.scaled_size(index, scale)
    if h < size or w < size:
      return None
    top, left = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
    return self.load_window(index, top, left, size, size, rng, scale=scale)

  def load_window(self, index: int, top: int, left: int, height: int, width: int,
                  rng: np.random.Generator, *,
                  scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Blurs only what a crop needs; equals cropping the full blurred image (before noise).

    The window plus a kernel margin (clipped at the image borders, where the blur reflects as
    on the full image) is blurred and its centre kept.

    Args:
      index: record.
      top, left, height, width: the window, in the coordinates of the image downscaled by
        ``scale``.
      rng: source of the noise, JPEG and sharp-share draws.
      scale: downscale factor of the sharp image (1: original size).

    Returns:
      ``(blur, sharp)``, each ``uint8[height, width, 3]``.
    """
    k = self._kw["kernel_size"]
    h, w = self.scaled_size(index, scale)
    y0, x0 = max(top - (k - 1) // 2, 0), max(left - (k - 1) // 2, 0)
    y1, x1 = min(top + height + k // 2, h), min(left + width + k // 2, w)
    region = self._region(index, scale, y0, y1, x0, x1)
    degraded = self._degrade(region, index, rng, (y0, x0), (h, w))
    window = (slice(top - y0, top - y0 + height), slice(left - x0, left - x0 + width))
    return degraded[window], region[window]
