"""Full-resolution inference: ``Deblurrer.from_checkpoint(dir)(uint8 HxWx3) -> uint8 HxWx3``.

Any size works: the generator reflect-pads to a multiple of 32 and crops back. Before that,
outside jit, the image is reflect-padded to a multiple of ``config.eval.size_bucket`` (128)
per side, so that photos of mixed sizes share a few compiled programs (one per bucket) instead
of one per size; the result is cropped back. Images above ``config.eval.max_pixels`` are
restored in overlapping tiles of ``config.eval.tile_size`` whose seams are blended with linear
ramps. Batch-norm models use their running statistics.

``ensemble=True`` is the geometric self-ensemble: the 8 flips/transposes of the input are
restored, undone and averaged in float before rounding. They run as one device call (a batch
of 8, or two batches of 4 in one program when H != W, since a transpose swaps H and W) when
8 padded images fit in ``eval.max_pixels``, else one transform after another. With tiling,
each tile is ensembled (the blending then works on ensembled tiles).
"""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from biskip_jax.data import image_io
from biskip_jax.errors import UserError
from biskip_jax.inference import loading, pretrained
from biskip_jax.nn import conv, models


def _ramp(n: int, overlap: int, first: bool, last: bool) -> np.ndarray:
  """1-D blending weights of a tile: linear ramps over the overlaps, 1 inside."""
  w = np.ones(n, np.float32)
  if overlap > 0:
    r = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
    if not first:
      w[:overlap] = r
    if not last:
      w[-overlap:] = r[::-1]
  return w


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
  if size <= tile:
    return [0]
  stride = tile - overlap
  starts = list(range(0, size - tile, stride)) + [size - tile]
  return sorted(set(starts))


def pad_to_bucket(image: np.ndarray, step: int) -> np.ndarray:
  """Reflect-pads [H, W, C] at the bottom and right to multiples of ``step`` (0: as is)."""
  if step <= 0:
    return image
  h, w = image.shape[:2]
  return np.pad(image, ((0, -h % step), (0, -w % step), (0, 0)), mode="reflect")


def dihedral(x: Any, k: int, inverse: bool = False) -> Any:
  """The k-th of the 8 flips/transposes of images [..., H, W, C], or its inverse.

  Args:
    x: a numpy or jax array [..., H, W, C].
    k: 0..7; bit 4 transposes H and W, bit 2 flips H, bit 1 flips W, applied in that order
      (and undone in the reverse order when ``inverse``). 0 is the identity.
    inverse: undo the k-th transform instead.

  Returns:
    [..., H, W, C], or [..., W, H, C] when ``k & 4``.
  """
  ops = [(k & 4, lambda a: a.swapaxes(-3, -2)), (k & 2, lambda a: a[..., ::-1, :, :]),
         (k & 1, lambda a: a[..., ::-1, :])]
  for on, op in reversed(ops) if inverse else ops:
    if on:
      x = op(x)
  return x


def check_tiling(tile_size: int | None, tile_overlap: int | None) -> None:
  """Refuses a negative ``--tile_size`` or ``--tile_overlap`` (None: the config's)."""
  if tile_size is not None and tile_size < 0:
    raise UserError(f"--tile_size={tile_size}: expected 0 (automatic) or a positive size")
  if tile_overlap is not None and tile_overlap < 0:
    raise UserError(f"--tile_overlap={tile_overlap}: expected 0 or a positive overlap")


class Deblurrer:
  """Restores uint8 RGB images of any size with a trained generator.

  Args:
    config: the run's config (``config.model`` and ``config.eval`` are used).
    variables: ``{"params": ..., "batch_stats": ...}`` of the generator.
    dtype: compute dtype, ``"float32"`` or ``"bfloat16"`` (GPUs; measure the PSNR change).
    ensemble: average the restorations of the 8 flips/transposes (8x the compute).
    size_bucket: overrides ``config.eval.size_bucket`` (0: no size buckets).
    tile_size: overrides ``config.eval.tile_size`` (0: tile only above ``eval.max_pixels``).
    tile_overlap: overrides ``config.eval.tile_overlap``.

  Raises:
    UserError: a size bucket that is not 0 or a multiple of the generator's padding (32), or
      a negative tile size or overlap.
  """

  def __init__(self, config: ml_collections.ConfigDict, variables: dict[str, Any],
               dtype: str | None = None, *, ensemble: bool = False,
               size_bucket: int | None = None, tile_size: int | None = None,
               tile_overlap: int | None = None):
    self.config = config
    self.model = models.generator_from_config(config.model, dtype)
    self.variables = jax.device_put(variables)
    self.ensemble = ensemble
    options = conv.compiler_options(jax.default_backend())
    # One program per input shape: [N, H, W, 3] -> [N, H, W, 3], and the batched ensemble.
    self._fn = jax.jit(self._forward, compiler_options=options)
    self._ensemble_fn = jax.jit(self._forward_ensemble, compiler_options=options)
    eval_cfg = config.eval
    check_tiling(tile_size, tile_overlap)
    self.tile_size = int(eval_cfg.tile_size if tile_size is None else tile_size)
    self.tile_overlap = int(eval_cfg.tile_overlap if tile_overlap is None else tile_overlap)
    self.max_pixels = int(eval_cfg.max_pixels)
    self.size_bucket = int(eval_cfg.size_bucket if size_bucket is None else size_bucket)
    if self.size_bucket < 0 or self.size_bucket % self.model.multiple:
      raise UserError(f"--config.eval.size_bucket={self.size_bucket}: must be 0 or a multiple "
                      f"of {self.model.multiple} (the generator pads to it)")

  def _forward(self, variables: dict[str, Any], x: jax.Array) -> jax.Array:
    """[N, H, W, 3] uint8 -> [N, H, W, 3] float32 in [-1, 1] (unclipped)."""
    return self.model.apply(variables, image_io.to_model_range(jnp.asarray(x)), train=False)

  def _forward_ensemble(self, variables: dict[str, Any], x: jax.Array) -> jax.Array:
    """[H, W, 3] uint8 -> [H, W, 3] float32: the mean of the 8 transforms' restorations."""
    square = x.shape[0] == x.shape[1]
    # Transposed inputs are [W, H]: with H != W they form a second batch of 4.
    groups = [range(8)] if square else [(0, 1, 2, 3), (4, 5, 6, 7)]
    total = jnp.zeros(x.shape, jnp.float32)
    for ks in groups:
      out = self._forward(variables, jnp.stack([dihedral(x, k) for k in ks]))
      for i, k in enumerate(ks):
        total = total + dihedral(out[i], k, inverse=True)
    return total / 8

  @classmethod
  def from_checkpoint(cls, workdir_or_ckpt: str, dtype: str | None = None,
                      **kwargs: Any) -> "Deblurrer":
    """Loads the latest (or the named) checkpoint of a training run with its saved config.

    ``kwargs``: ``ensemble``, ``size_bucket`` (see the class).
    """
    return cls.load(workdir_or_ckpt, dtype=dtype, **kwargs)

  @classmethod
  def pretrained(cls, name: str = pretrained.DEFAULT_NAME, dtype: str | None = None,
                 **kwargs: Any) -> "Deblurrer":
    """The shipped general-purpose model (``biskip_jax/inference/pretrained/NAME.npz``),
    verified."""
    return cls.load(f"{loading.PRETRAINED}:{name}", dtype=dtype, **kwargs)

  @classmethod
  def load(cls, ckpt: str | None, dtype: str | None = None, **kwargs: Any) -> "Deblurrer":
    """``None`` or ``"pretrained[:NAME]"``: the shipped model; else a training run's path."""
    config, variables, step = loading.load_generator(ckpt)
    d = cls(config, variables, dtype=dtype, **kwargs)
    d.step = step
    return d

  def restore_float(self, image: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 -> [H, W, 3] float32 in [-1, 1] (unclipped), whole image at once.

    The image is padded to its size bucket (and cropped back); with ``ensemble``, the mean of
    the 8 flips/transposes.
    """
    h, w, _ = image.shape
    x = pad_to_bucket(np.asarray(image), self.size_bucket)
    if not self.ensemble:
      out = np.asarray(self._fn(self.variables, x[None]))[0]  # Indexed on the host.
    elif 8 * x.shape[0] * x.shape[1] <= self.max_pixels:
      out = np.asarray(self._ensemble_fn(self.variables, x))
    else:  # One transform at a time: at most two programs, [H, W] and [W, H].
      out = np.zeros(x.shape, np.float32)
      for k in range(8):
        y = np.asarray(self._fn(self.variables, dihedral(x, k)[None]))[0]
        out += dihedral(y, k, inverse=True)
      out /= 8
    return out[:h, :w]

  def _tiled(self, image: np.ndarray, tile: int) -> np.ndarray:
    h, w, _ = image.shape
    overlap = min(self.tile_overlap, tile // 2)
    acc = np.zeros((h, w, 3), np.float32)
    norm = np.zeros((h, w, 1), np.float32)
    ys, xs = _tile_starts(h, tile, overlap), _tile_starts(w, tile, overlap)
    for yi, y0 in enumerate(ys):
      for xi, x0 in enumerate(xs):
        patch = image[y0:y0 + tile, x0:x0 + tile]
        out = self.restore_float(patch)
        wy = _ramp(patch.shape[0], overlap, yi == 0, yi == len(ys) - 1)
        wx = _ramp(patch.shape[1], overlap, xi == 0, xi == len(xs) - 1)
        wgt = (wy[:, None] * wx[None, :])[..., None]
        acc[y0:y0 + tile, x0:x0 + tile] += out * wgt
        norm[y0:y0 + tile, x0:x0 + tile] += wgt
    return acc / norm

  def __call__(self, image: np.ndarray, tile_size: int | None = None) -> np.ndarray:
    """Restores one image.

    Args:
      image: [H, W, 3] uint8 RGB (any H, W >= 1).
      tile_size: overrides ``config.eval.tile_size``; 0 means tile only above ``max_pixels``.

    Returns:
      [H, W, 3] uint8, clipped and rounded.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
      raise ValueError(f"expected a uint8 [H, W, 3] image, got {image.dtype} {image.shape}")
    tile = self.tile_size if tile_size is None else tile_size
    if tile <= 0 and image.shape[0] * image.shape[1] > self.max_pixels:
      tile = 1024
    if tile > 0 and (image.shape[0] > tile or image.shape[1] > tile):
      out = self._tiled(image, tile)
    else:
      out = self.restore_float(image)
    return image_io.from_model_range(out)
