"""Datasets of blurred/sharp pairs (DESIGN §7) and the one place images are read and written.

Every image the project reads goes through :func:`load_image` (files) or :func:`decode_image`
(encoded bytes): whatever Pillow opens -- grayscale, 16-bit, RGBA, palette, CMYK, EXIF-rotated
JPEG -- comes back as ``uint8[H, W, 3]`` RGB. A file that cannot be read (missing, zero bytes,
truncated, not an image) raises :class:`BadImageError`, a :class:`~biskip_jax.errors.UserError`
naming the file.

The dataset modules (:mod:`.gopro`, :mod:`.kohler`, :mod:`.folder`, :mod:`.synthetic`) list
their examples as :class:`Pair` records or provide a source with the same interface as
:class:`FilePairSource`: ``len(source)``, ``source.name(i)`` and ``source.load(i)``, which
returns ``{"name": str, "blur": uint8[H, W, 3], "sharp": uint8[H, W, 3]}`` (plus
``"sharp_frames": list of uint8[H, W, 3]`` for Köhler). :mod:`biskip_jax.input_pipeline` turns a
source into training batches or evaluation examples.
"""

import dataclasses
import io
import os
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image, ImageOps

from biskip_jax.errors import UserError

# File extensions (lower case) treated as images when listing folders.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
                    ".gif")
# Pillow errors that mean "this file is not a readable image".
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


class BadImageError(UserError):
  """An image file that is missing, empty, truncated or not an image."""


class BadImageWarning(UserWarning):
  """A training image was skipped because it could not be read."""


def is_image_file(path: str) -> bool:
  """Whether ``path`` has an image extension and is not a hidden file."""
  base = os.path.basename(path)
  return not base.startswith(".") and os.path.splitext(base)[1].lower() in IMAGE_EXTENSIONS


def _to_rgb_uint8(img: Image.Image) -> np.ndarray:
  """Converts any Pillow image to ``uint8[H, W, 3]`` RGB (alpha dropped, 16 bit rescaled)."""
  img = ImageOps.exif_transpose(img)
  if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
    arr = np.asarray(img)
    if img.mode == "F":
      arr = arr * 255.0 if float(np.nanmax(arr, initial=0.0)) <= 1.0 else arr
      arr = np.clip(np.nan_to_num(arr), 0, 255).round().astype(np.uint8)
    elif img.mode != "I" or int(arr.max(initial=0)) > 255:  # 16-bit range -> 8 bit.
      arr = ((np.clip(arr.astype(np.int64), 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
    else:
      arr = arr.astype(np.uint8)
    return np.ascontiguousarray(np.repeat(arr[:, :, None], 3, axis=2))
  if img.mode == "P" and "transparency" in img.info:
    img = img.convert("RGBA")  # Avoids Pillow's warning; the alpha is dropped below.
  if img.mode != "RGB":
    img = img.convert("RGB")
  return np.asarray(img, dtype=np.uint8).copy()


def _open(fp: Any, name: str) -> np.ndarray:
  try:
    with Image.open(fp) as img:
      img.load()
      return _to_rgb_uint8(img)
  except _DECODE_ERRORS as e:
    raise BadImageError(f"Cannot read image {name}: {e}. Replace or remove the file.") from e


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
  """Reads an image file as RGB.

  Args:
    path: any image file Pillow can read.

  Returns:
    ``uint8[H, W, 3]`` RGB.

  Raises:
    BadImageError: the file is missing, empty, truncated or not an image.
  """
  path = os.fspath(path)
  if os.path.isfile(path) and os.path.getsize(path) == 0:
    raise BadImageError(f"Cannot read image {path}: the file is empty (0 bytes).")
  return _open(path, path)


def decode_image(data: bytes, name: str) -> np.ndarray:
  """Decodes image bytes (PNG, JPEG, ...) like :func:`load_image`; ``name`` goes in errors."""
  if not data:
    raise BadImageError(f"Cannot read image {name}: no data.")
  return _open(io.BytesIO(data), name)


def save_image(path: str | os.PathLike[str], img: np.ndarray) -> None:
  """Writes ``img`` to ``path``; the format follows the extension (PNG if none).

  Args:
    path: output file; parent folders are created.
    img: ``uint8[H, W, 3]`` RGB or ``uint8[H, W]`` gray.
  """
  img = np.asarray(img)
  if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
    raise ValueError(f"save_image expects uint8[H, W, 3] or uint8[H, W], got {img.dtype}"
                     f"{list(img.shape)} for {path}.")
  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  ext = os.path.splitext(path)[1].lower()
  kwargs = {"quality": 95} if ext in (".jpg", ".jpeg", ".webp") else {}
  Image.fromarray(img).save(path, format=None if ext else "PNG", **kwargs)


def image_size(path: str) -> tuple[int, int] | None:
  """``(height, width)`` of an image from its header (EXIF rotation applied); None if unreadable."""
  try:
    with Image.open(path) as img:
      w, h = img.size
      if img.format in ("JPEG", "MPO", "TIFF", "WEBP") and img.getexif().get(0x0112, 1) in (
          5, 6, 7, 8):
        w, h = h, w
      return h, w
  except _DECODE_ERRORS:
    return None


@dataclasses.dataclass(frozen=True)
class Pair:
  """One example on disk.

  Attributes:
    name: stable identifier used in reports, e.g. ``"GOPR0384_11_00/000001.png"``.
    blur: path of the blurred image.
    sharp: path of the sharp image.
    sharp_frames: Köhler only: all recorded sharp frames, in trajectory order.
  """
  name: str
  blur: str
  sharp: str
  sharp_frames: tuple[str, ...] = ()


def check_pair_sizes(pairs: Iterable[Pair], *, min_size: int = 0, flag_hint: str = "") -> None:
  """Checks from the headers that blur and sharp sizes match (and are >= ``min_size``).

  Unreadable headers are left for :func:`load_image` to report when the image is used.

  Raises:
    UserError: naming the first file whose size differs from its partner, or (``min_size``)
      the first image smaller than ``min_size`` in either dimension, with ``flag_hint``.
  """
  for p in pairs:
    sizes = {f: image_size(f) for f in (p.blur, p.sharp, *p.sharp_frames)}
    ref = sizes[p.blur]
    for f, s in sizes.items():
      if s is not None and ref is not None and s != ref:
        raise UserError(f"Size mismatch in pair {p.name!r}: {p.blur} is {ref[1]}x{ref[0]} but {f}"
                        f" is {s[1]}x{s[0]} (WxH). Blurred and sharp images must be aligned and of"
                        " equal size; fix or remove the pair.")
      if s is not None and min(s) < min_size:
        raise UserError(f"Image {f} is {s[1]}x{s[0]} (WxH), smaller than the {min_size}x{min_size}"
                        f" training crop. {flag_hint}")


class FilePairSource:
  """Examples read from image files: the source behind the gopro, folder and kohler datasets."""

  def __init__(self, pairs: Sequence[Pair]):
    self.pairs = list(pairs)

  def __len__(self) -> int:
    return len(self.pairs)

  def name(self, index: int) -> str:
    return self.pairs[index].name

  def load(self, index: int) -> dict[str, Any]:
    """Decodes example ``index``: ``{"name", "blur", "sharp"[, "sharp_frames"]}``, uint8 HxWx3."""
    p = self.pairs[index]
    out: dict[str, Any] = {"name": p.name, "blur": load_image(p.blur)}
    if p.sharp_frames:
      frames = [load_image(f) for f in p.sharp_frames]
      out["sharp_frames"] = frames
      out["sharp"] = frames[p.sharp_frames.index(p.sharp)]
    else:
      out["sharp"] = load_image(p.sharp)
    (h, w), (hs, ws) = out["blur"].shape[:2], out["sharp"].shape[:2]
    if (h, w) != (hs, ws):
      raise UserError(f"Size mismatch in pair {p.name!r}: {p.blur} is {w}x{h} but {p.sharp} is"
                      f" {ws}x{hs} (WxH). Blurred and sharp images must be aligned and of equal"
                      " size; fix or remove the pair.")
    return out
