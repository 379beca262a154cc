"""Reading, writing and listing images, and the model's value range: the one place for both.

Every image the project reads goes through :func:`load_image` (files) or :func:`decode_image`
(encoded bytes): whatever Pillow opens -- grayscale, 16-bit, RGBA, palette, CMYK, EXIF-rotated
JPEG -- comes back as ``uint8[H, W, 3]`` RGB. A file that cannot be read (missing, zero bytes,
truncated, not an image, not a regular file) raises :class:`BadImageError`, a
:class:`~biskip_jax.errors.UserError` naming the file. Only regular files are opened: a FIFO or
a device named like an image would block or never end. :func:`save_image` writes (whole or not
at all), :func:`list_images` lists a folder (skipping, with one line each, what is not a
regular file).

The networks see images in [-1, 1] (paper §4.1): :func:`to_model_range` and
:func:`from_model_range` convert between that and uint8 [0, 255], for NumPy and JAX arrays
alike.
"""

import io
import logging
import os
from typing import Any, TypeVar

import numpy as np
from PIL import Image, ImageOps

from biskip_jax.errors import UserError
from biskip_jax.output_files import atomic_write, file_kind

log = logging.getLogger("biskip_jax")

Array = TypeVar("Array")  # np.ndarray or jax.Array: the conversions keep the array type.

# File extensions (lower case) treated as images when listing folders (datasets, deblur.py).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm",
                    ".pgm", ".pbm", ".tga")
# Pillow errors that mean "this file is not a readable image".
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


class BadImageError(UserError):
  """An image file that is missing, empty, truncated or not an image."""


def is_image_file(path: str) -> bool:
  """Whether ``path`` has an image extension and is not a hidden file."""
  base = os.path.basename(path)
  return not base.startswith(".") and os.path.splitext(base)[1].lower() in IMAGE_EXTENSIONS


def is_regular_file(path: str) -> bool:
  """Whether ``path`` is a regular file (through links); logs one line when it is something
  else (a FIFO, a device, a socket, a folder), which callers then skip unopened."""
  kind = file_kind(path)
  if kind is not None:
    log.warning("skipped %s: %s, not a regular file", path, kind)
  return kind is None and os.path.lexists(path)


def list_images(folder: str, *, recursive: bool = False) -> list[str]:
  """Image files in ``folder`` (:func:`is_image_file`), relative to it, sorted.

  With ``recursive``, subfolders too (hidden ones skipped), as ``"sub/name.png"``. Names
  that are not regular files (a FIFO, a device, a folder called ``x.png``) are skipped with
  one logged line each.
  """
  if not recursive:
    return sorted(f for f in os.listdir(folder)
                  if is_image_file(f) and is_regular_file(os.path.join(folder, f)))
  out = []
  for dirpath, dirnames, filenames in os.walk(folder):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    rel = os.path.relpath(dirpath, folder)
    out += [f if rel == "." else f"{rel}/{f}".replace(os.sep, "/")
            for f in filenames
            if is_image_file(f) and is_regular_file(os.path.join(dirpath, f))]
  return sorted(out)


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


def _open(fp: Any, name: str, advice: str = "") -> np.ndarray:
  try:
    with Image.open(fp) as img:
      img.load()
      return _to_rgb_uint8(img)
  except _DECODE_ERRORS as e:
    # Pillow names what it was given: for bytes, "<_io.BytesIO object at 0x...>".
    reason = str(e).replace(repr(fp), repr(name))
    raise BadImageError(f"Cannot read image {name}: {reason}." + advice) from e


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
  """Reads an image file as RGB.

  Args:
    path: any image file Pillow can read.

  Returns:
    ``uint8[H, W, 3]`` RGB.

  Raises:
    BadImageError: the file is missing, empty, truncated, not an image or not a regular file
      (then it is not opened).
  """
  path = os.fspath(path)
  kind = file_kind(path)
  if kind is not None:
    raise BadImageError(f"Cannot read image {path}: it is {kind}, not a regular file.")
  if os.path.isfile(path) and os.path.getsize(path) == 0:
    raise BadImageError(f"Cannot read image {path}: the file is empty (0 bytes).")
  return _open(path, path, " Replace or remove the file.")


def decode_image(data: bytes, name: str) -> np.ndarray:
  """Decodes image bytes (PNG, JPEG, ...) like :func:`load_image`; ``name`` (e.g. an upload's
  file name) stands for the bytes in errors."""
  if not data:
    raise BadImageError(f"Cannot read image {name}: no data.")
  return _open(io.BytesIO(data), name)


def save_image(path: str | os.PathLike[str], img: np.ndarray) -> None:
  """Writes ``img`` to ``path``; the format follows the extension (PNG if none).

  Written with :func:`~biskip_jax.output_files.atomic_write`: an earlier file of that name stays
  as it was unless the new one is complete, and a link at ``path`` is replaced, not followed.

  Args:
    path: output file; parent folders are created.
    img: ``uint8[H, W, 3]`` RGB or ``uint8[H, W]`` gray.

  Raises:
    OSError: the file cannot be written.
  """
  img = np.asarray(img)
  if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
    raise ValueError(f"save_image expects uint8[H, W, 3] or uint8[H, W], got {img.dtype}"
                     f"{list(img.shape)} for {path}.")
  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  ext = os.path.splitext(path)[1].lower()
  fmt = Image.registered_extensions().get(ext) if ext else "PNG"
  if fmt is None:
    raise ValueError(f"unknown image file extension {ext!r} for {path}")
  kwargs = {"quality": 95} if ext in (".jpg", ".jpeg", ".webp") else {}
  with atomic_write(path) as f:
    Image.fromarray(img).save(f, format=fmt, **kwargs)


def image_size(path: str) -> tuple[int, int] | None:
  """``(height, width)`` of an image from its header (EXIF rotation applied); None if unreadable
  or not a regular file (left unopened)."""
  if file_kind(path) is not None:
    return None
  try:
    with Image.open(path) as img:
      w, h = img.size
      if img.format in ("JPEG", "MPO", "TIFF", "WEBP") and img.getexif().get(0x0112, 1) in (
          5, 6, 7, 8):
        w, h = h, w
      return h, w
  except _DECODE_ERRORS:
    return None


def to_model_range(images: Array) -> Array:
  """uint8 [..., H, W, 3] in [0, 255] -> float32 in [-1, 1] (x / 127.5 - 1)."""
  return images.astype(np.float32) / 127.5 - 1.0


def from_model_range(images: Array) -> Array:
  """Float [..., H, W, 3] in [-1, 1] (unclipped) -> uint8 in [0, 255], rounded and clipped."""
  return ((images + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
