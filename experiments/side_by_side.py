r"""Blurred | restored [| unsharp mask] figures of real photos (no sharp reference needed).

  python -m experiments.side_by_side --out=docs/unpaired.jpg PHOTO_OR_FOLDER...
  python -m experiments.side_by_side --ckpt=runs/biskip --out=fig.jpg photos/

Each photo is restored whole by the model (``--ckpt``: a training run, or ``pretrained``, the
shipped model), then one row of the figure shows the same window of the input and of the
result at 1:1 scale (``--crop`` pixels, centred, or the whole image if smaller), so that the
blur and its removal are visible at full resolution. Rows are stacked in input order.
``--unsharp`` adds a third panel: the input through Pillow's unsharp mask (radius 2, 150 %),
the baseline a restoration should beat. The window is fixed by the rule above, before any
output is seen.
"""

import os
import sys

import numpy as np
from absl import flags
from PIL import Image

from biskip_jax import cli
from biskip_jax.data.image_io import BadImageError, load_image
from biskip_jax.errors import UserError
from biskip_jax.evaluation import baselines
from biskip_jax.inference import deblur_lib, full_resolution

FLAGS = flags.FLAGS
_GAP = 6  # Pixels between panels and rows.


def define_flags() -> None:
  """Defines the script's flags (only when run as a script, so that tests can import it)."""
  cli.define_ckpt_flag()
  flags.DEFINE_string("out", None, "Figure to write (.jpg or .png).")
  flags.DEFINE_integer("crop", 320, "Side of the centred 1:1 window shown per photo.")
  flags.DEFINE_integer("max_images", 8, "At most this many photos (0: all).")
  flags.DEFINE_bool("unsharp", False, "Add a third panel: the unsharp-mask baseline.")
  flags.mark_flags_as_required(["out"])


def centre_window(image: np.ndarray, size: int) -> np.ndarray:
  """The centred ``min(size, H) x min(size, W)`` window of ``[H, W, 3]``."""
  h, w = image.shape[:2]
  ch, cw = min(size, h), min(size, w)
  y0, x0 = (h - ch) // 2, (w - cw) // 2
  return image[y0:y0 + ch, x0:x0 + cw]


def compose(rows: list[tuple[np.ndarray, ...]]) -> np.ndarray:
  """Stacks rows of panels (``(blurred, restored[, ...])``) on a white canvas, ``uint8``."""
  if not rows:
    raise UserError("no photo to show")
  heights = [max(p.shape[0] for p in row) for row in rows]
  widths = [sum(p.shape[1] for p in row) + _GAP * (len(row) - 1) for row in rows]
  canvas = np.full((sum(heights) + _GAP * (len(rows) - 1), max(widths), 3), 255, np.uint8)
  y = 0
  for row, h in zip(rows, heights):
    x = 0
    for p in row:
      canvas[y:y + p.shape[0], x:x + p.shape[1]] = p
      x += p.shape[1] + _GAP
    y += h + _GAP
  return canvas


def main(argv: list[str]) -> None:
  files, missing = deblur_lib.expand_inputs(argv[1:])
  if missing or not files:
    raise UserError("; ".join(missing) or "no INPUT given: pass photos or folders")
  if FLAGS.crop < 1:
    raise UserError(f"--crop={FLAGS.crop}: expected >= 1")
  if FLAGS.max_images > 0:
    files = files[:FLAGS.max_images]
  deblurrer = full_resolution.Deblurrer.load(FLAGS.ckpt)
  rows = []
  for path in files:
    try:
      image = load_image(path)
    except BadImageError as e:
      print(f"side_by_side.py: skipped {e}", file=sys.stderr)
      continue
    panels = [image, deblurrer(image)]
    if FLAGS.unsharp:
      panels.append(baselines.unsharp_mask(image))
    rows.append(tuple(centre_window(p, FLAGS.crop) for p in panels))
    print(f"{os.path.basename(path)}: {image.shape[1]}x{image.shape[0]}", file=sys.stderr)
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
  Image.fromarray(compose(rows)).save(FLAGS.out, quality=90)
  print(f"wrote {FLAGS.out} ({len(rows)} rows: blurred | restored"
        f"{' | unsharp mask' if FLAGS.unsharp else ''})")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
