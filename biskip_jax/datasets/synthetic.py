"""Synthetic motion-blur pairs made on the fly from sharp images (quickstart and tests).

Sharp images are scikit-image's bundled photos (``config.data.synthetic.images = "skimage"``;
all of :data:`SKIMAGE_PHOTOS` ship inside the wheel and load offline) or every image of a
folder. Images named in ``config.data.synthetic.holdout`` (skimage names or file names/stems)
serve only the evaluation split; all others only training.

Record ``i`` of a split is the sharp image ``i % n`` blurred by :func:`biskip_jax.blur.
random_kernel` drawn from ``np.random.default_rng([seed, split_salt, i])``: the same config
gives the same pairs on any machine and in any worker. Training has a virtual epoch of
``config.data.synthetic.num_train`` records; evaluation has ``num_eval`` full-size pairs.
"""

import os
from typing import Any, Sequence

import numpy as np

from biskip_jax import blur as blur_lib
from biskip_jax import datasets
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


def _stem(spec: str) -> str:
  return spec.split(":", 1)[1] if spec.startswith("skimage:") else os.path.splitext(
      os.path.basename(spec))[0]


def image_specs(images: str, holdout: Sequence[str], split: str) -> list[str]:
  """Sharp images of a split: ``"skimage:NAME"`` entries or file paths.

  Args:
    images: ``"skimage"`` or a folder of sharp images.
    holdout: names (skimage names, file names or stems) kept for evaluation.
    split: ``"train"`` (everything but the holdout) or ``"eval"`` (the holdout).

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
    specs = [os.path.join(images, f) for f in sorted(os.listdir(images))
             if datasets.is_image_file(f)]
    if not specs:
      raise UserError(f"--config.data.synthetic.images={images}: no images in the folder.")

  def held(spec: str) -> bool:
    return _stem(spec) in holdout or os.path.basename(spec) in holdout

  out = [s for s in specs if held(s) == (split == "eval")]
  if not out:
    what = ("every image is in --config.data.synthetic.holdout; leave some for training"
            if split == "train" else "no image matches --config.data.synthetic.holdout="
            f"{holdout}; name some of {[_stem(s) for s in specs][:10]} there")
    raise UserError(f"Synthetic data from {images}: {what}.")
  return out


class SyntheticSource:
  """Blurred/sharp pairs generated from sharp images; interface of ``FilePairSource``."""

  def __init__(self, specs: Sequence[str], *, num_examples: int, seed: int, split: str,
               kernel_size: int = 31, max_anxiety: float = 0.005, noise_std: float = 0.01,
               gamma: float = 2.2):
    if num_examples < 1:
      raise UserError(f"Synthetic {split} split needs >= 1 examples, got {num_examples} "
                      "(--config.data.synthetic.num_train / num_eval).")
    if kernel_size < 1:
      raise UserError(f"--config.data.synthetic.kernel_size must be >= 1, got {kernel_size}.")
    self.specs = list(specs)
    self.num_examples = num_examples
    self._seed = (seed % 2**32, _SALT[split])
    self._kw = dict(kernel_size=kernel_size, max_anxiety=max_anxiety)
    self._noise_std, self._gamma = noise_std, gamma
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
    """The sharp image of example ``index``, ``uint8[H, W, 3]``."""
    j = self._spec(index)
    if j not in self._cache:
      spec = self.specs[j]
      img = (load_skimage_photo(spec[8:]) if spec.startswith("skimage:")
             else datasets.load_image(spec))
      if len(self._cache) >= _MAX_CACHED:
        self._cache.pop(next(iter(self._cache)))
      self._cache[j] = img
    return self._cache[j]

  def kernel(self, index: int) -> np.ndarray:
    """The blur kernel of example ``index``, ``float64[k, k]`` summing to 1."""
    rng = np.random.default_rng([*self._seed, index])
    return blur_lib.random_kernel(rng, self._kw["kernel_size"],
                                  max_anxiety=self._kw["max_anxiety"])

  def _blur(self, sharp: np.ndarray, index: int, rng: np.random.Generator) -> np.ndarray:
    return blur_lib.blur_image(sharp, self.kernel(index), rng, gamma=self._gamma,
                               noise_std=self._noise_std)

  def load(self, index: int) -> dict[str, Any]:
    """Full-size example ``index``: ``{"name", "blur", "sharp"}``, uint8 HxWx3."""
    sharp = self.sharp(index)
    rng = np.random.default_rng([*self._seed, index, 1])
    return {"name": self.name(index), "blur": self._blur(sharp, index, rng), "sharp": sharp}

  def load_window(self, index: int, top: int, left: int, height: int, width: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Blurs only what a crop needs; equals cropping the full blurred image (before noise).

    Returns:
      ``(blur, sharp)``, each ``uint8[height, width, 3]``.
    """
    sharp = self.sharp(index)
    k = self._kw["kernel_size"]
    h, w = sharp.shape[:2]
    y0, x0 = max(top - (k - 1) // 2, 0), max(left - (k - 1) // 2, 0)
    y1, x1 = min(top + height + k // 2, h), min(left + width + k // 2, w)
    blurred = self._blur(sharp[y0:y1, x0:x1], index, rng)
    window = (slice(top - y0, top - y0 + height), slice(left - x0, left - x0 + width))
    return blurred[window], sharp[top:top + height, left:left + width]
