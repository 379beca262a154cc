"""The work behind ``deblur.py``: expand inputs, restore each image, report bad files."""

import glob
import os
import sys
from typing import Iterable

import numpy as np

from biskip_jax import inference
from biskip_jax.datasets import BadImageError, load_image, save_image
from biskip_jax.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm",
                    ".pgm", ".pbm", ".tga")


def expand_inputs(inputs: Iterable[str], video: bool = False) -> tuple[list[str], list[str]]:
  """Files, folders (recursive, image extensions only) and globs -> (files, missing)."""
  files, missing = [], []
  for item in inputs:
    if os.path.isdir(item):
      found = sorted(
          os.path.join(root, f) for root, _, names in os.walk(item) for f in names
          if video or f.lower().endswith(IMAGE_EXTENSIONS))
      files.extend(found)
      if not found:
        missing.append(f"{item}: folder holds no image files")
    elif os.path.isfile(item):
      files.append(item)
    else:
      matches = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
      if matches:
        files.extend(matches)
      else:
        missing.append(f"{item}: no such file, folder or matching glob")
  return list(dict.fromkeys(files)), missing


def _out_path(out_dir: str, path: str, fmt: str, taken: set) -> str:
  stem = os.path.splitext(os.path.basename(path))[0]
  candidate = os.path.join(out_dir, f"{stem}.{fmt}")
  k = 1
  while candidate in taken:  # Same base name from two folders: keep both.
    candidate = os.path.join(out_dir, f"{stem}_{k}.{fmt}")
    k += 1
  taken.add(candidate)
  return candidate


def _video(deblurrer: inference.Deblurrer, path: str, out_dir: str) -> None:
  try:
    import imageio.v2 as iio  # pylint: disable=g-import-not-at-top
    reader = iio.get_reader(path)
  except Exception as e:  # imageio raises many types for missing ffmpeg / bad files.
    raise BadImageError(f"{path}: cannot read as a video ({e}); --video needs the "
                        "imageio-ffmpeg package") from e
  fps = reader.get_meta_data().get("fps", 25)
  out = os.path.join(out_dir, os.path.splitext(os.path.basename(path))[0] + "_deblurred.mp4")
  with iio.get_writer(out, fps=fps) as writer:
    for frame in reader:
      frame = np.asarray(frame)[..., :3].astype(np.uint8)
      writer.append_data(deblurrer(frame))


def run(ckpt: str | None, out_dir: str, inputs: list[str], fmt: str = "png",
        dtype: str = "float32", tile_size: int | None = None, video: bool = False) -> list[str]:
  """Deblurs all inputs into ``out_dir``; returns the failure messages (also printed).

  ``ckpt`` is a training run's path, or None / ``"pretrained[:NAME]"`` for the shipped model.
  """
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  files, failures = expand_inputs(inputs, video=video)
  for msg in failures:
    print(f"deblur.py: {msg}", file=sys.stderr)
  if not files:
    raise UserError("nothing to deblur: " + "; ".join(failures))
  deblurrer = inference.Deblurrer.load(ckpt, dtype=dtype)
  try:
    os.makedirs(out_dir, exist_ok=True)
  except OSError as e:
    raise UserError(f"--out {out_dir}: cannot create the folder ({e.strerror})") from e
  taken: set = set()
  written = 0
  for path in tqdm(files, desc="deblur", unit="img", disable=len(files) < 2):
    try:
      if video:
        _video(deblurrer, path, out_dir)
        written += 1
        continue
      image = load_image(path)
      restored = deblurrer(image, tile_size=tile_size)
      save_image(_out_path(out_dir, path, fmt, taken), restored)
      written += 1
    except BadImageError as e:
      failures.append(str(e))
      print(f"deblur.py: skipped {e}", file=sys.stderr)
  # Counts images actually written (missing inputs are failures but not files).
  summary = f"deblur.py: {written} of {len(files)} written to {out_dir}"
  if failures:
    summary += f"; {len(failures)} input(s) failed"
  print(summary, file=sys.stderr)
  return failures
