"""Builds the training-data subset that ``benchmarks/gpu_train.sh`` carries to a GPU machine.

  python -m benchmarks.gpu_data --frames=FRAMES_DIR --photos=PHOTOS_DIR [--out=.gpu_data]

The subset travels with the checkout, so it is bounded (``--max_mb``, default 30): the first
``--num_frames`` consecutive frames of each sequence of ``FRAMES_DIR`` (copied as they are, so
windows of them are real blur) into ``OUT/frames/``, and photos of ``PHOTOS_DIR`` (every
``--photo_every``-th of the sorted list, subfolders included) downscaled to at most
``--photo_side`` px and saved as JPEG quality 92 into ``OUT/photos/``, until the bound is
reached. ``OUT`` is git-ignored; copy it, and ``.whl/``, with the checkout to the GPU
machine. Prints what it wrote.
"""

import argparse
import os
import shutil
import sys

from PIL import Image

from biskip_jax.data import image_io
from biskip_jax.data.datasets import frames

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(frames_dir: str, photos_dir: str, out: str, *, num_frames: int = 100,
          photo_every: int = 4, photo_side: int = 1024, max_mb: float = 30.0) -> dict[str, int]:
  """Writes the subset; returns ``{"frames": n, "photos": n, "bytes": n}``."""
  budget = int(max_mb * 2**20)
  shutil.rmtree(out, ignore_errors=True)
  used = 0
  n_frames = 0
  for seq in frames.list_sequences(frames_dir):
    name = os.path.basename(os.path.dirname(seq[0]))
    dest = os.path.join(out, "frames", name)
    os.makedirs(dest, exist_ok=True)
    for path in seq[:num_frames]:
      size = os.path.getsize(path)
      if used + size > budget:
        break
      shutil.copyfile(path, os.path.join(dest, os.path.basename(path)))
      used += size
      n_frames += 1
  n_photos = 0
  dest = os.path.join(out, "photos")
  os.makedirs(dest, exist_ok=True)
  for i, rel in enumerate(image_io.list_images(photos_dir, recursive=True)):
    if i % photo_every:
      continue
    with Image.open(os.path.join(photos_dir, rel)) as im:
      im = im.convert("RGB")
      im.thumbnail((photo_side, photo_side), Image.Resampling.LANCZOS)
      target = os.path.join(dest, rel.replace("/", "_").rsplit(".", 1)[0] + ".jpg")
      im.save(target, quality=92)
    size = os.path.getsize(target)
    if used + size > budget:
      os.remove(target)
      break
    used += size
    n_photos += 1
  return {"frames": n_frames, "photos": n_photos, "bytes": used}


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--frames", required=True, help="folder of consecutive video frames")
  parser.add_argument("--photos", required=True, help="folder of sharp photographs")
  parser.add_argument("--out", default=os.path.join(_ROOT, ".gpu_data"))
  parser.add_argument("--num_frames", type=int, default=100)
  parser.add_argument("--photo_every", type=int, default=4)
  parser.add_argument("--photo_side", type=int, default=1024)
  parser.add_argument("--max_mb", type=float, default=30.0)
  args = parser.parse_args(argv)
  for flag, path in (("--frames", args.frames), ("--photos", args.photos)):
    if not os.path.isdir(path):
      print(f"gpu_data: error: {flag}={path} is not a folder", file=sys.stderr)
      return 2
  got = build(args.frames, args.photos, args.out, num_frames=args.num_frames,
              photo_every=args.photo_every, photo_side=args.photo_side, max_mb=args.max_mb)
  print(f"wrote {got['frames']} frames and {got['photos']} photos ({got['bytes'] / 2**20:.1f} "
        f"MiB) to {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
