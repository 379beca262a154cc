"""Datasets of blurred/sharp pairs (DESIGN §7).

Images are read with :mod:`biskip_jax.data.image_io` (its ``load_image``, ``save_image``,
``BadImageError``, ... are also importable from here, as before it existed).

The dataset modules (:mod:`.gopro`, :mod:`.kohler`, :mod:`.folder`, :mod:`.synthetic`) list
their examples as :class:`Pair` records or provide a source with the same interface as
:class:`FilePairSource`: ``len(source)``, ``source.name(i)`` and ``source.load(i)``, which
returns ``{"name": str, "blur": uint8[H, W, 3], "sharp": uint8[H, W, 3]}`` (plus
``"sharp_frames": list of uint8[H, W, 3]`` for Köhler). :mod:`biskip_jax.data.input_pipeline` turns
a source into training batches or evaluation examples.
"""

import dataclasses
from typing import Any, Iterable, Sequence

from biskip_jax.data.image_io import (  # noqa: F401  (re-exported)
  IMAGE_EXTENSIONS,
  BadImageError,
  decode_image,
  image_size,
  is_image_file,
  list_images,
  load_image,
  save_image,
)
from biskip_jax.errors import UserError

# Names of the data section's choices (``config.data.*``), validated by ``config_checks``.
SOURCES = ("gopro", "folder", "synthetic", "kohler", "frames", "mix")  # data.source
MIXABLE = ("gopro", "folder", "synthetic", "frames")  # data.mix's sources.
SMALL_IMAGES = ("error", "pad")  # data.small_images: images smaller than the crop.
GOPRO_FORMATS = ("folder", "tfds")  # data.gopro_format: PNG folders, or TFDS array_record.
BLUR_KINDS = ("blur", "blur_gamma")  # data.blur_kind: GoPro's blurred frames (as stored, gamma).


class BadImageWarning(UserWarning):
  """A training image was skipped because it could not be read."""


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
