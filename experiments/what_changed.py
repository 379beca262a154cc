r"""What a model changed in paired images: brightness, detail, and where the error lies.

  python evaluate.py --ckpt=RUN --data=folder:PAIRS --out=OUT
  python -m experiments.what_changed --pairs=PAIRS --restored=OUT/restored

For each pair (``PAIRS/blur``, ``PAIRS/sharp``, named as ``evaluate.py --data=folder:`` names
them) and its restored image (``evaluate.py --out``'s ``restored/STEM.png``), on images in
[0, 1] (grey levels where stated):

* ``offset``: mean of (image - blurred input) over pixels and channels, in grey levels, for
  the restored image and for the sharp target: a model that learned a brightness bias moves
  the mean away from both;
* ``detail``: the standard deviation of the Laplacian of the grey image, as a ratio to the
  input's: 1 for an output that adds no detail, the sharp target's ratio for one that restores
  it all;
* ``low`` / ``high``: PSNR of the error (image - sharp) split by a Gaussian low-pass
  (sigma 3 px) into its low-frequency part (displacement, brightness, smooth shading) and the
  rest (missing detail, ringing, noise); for the input and the restored image. The two errors
  add up to the whole error, but not their PSNRs.

The last line is the mean over pairs.
"""

import os

import numpy as np
from absl import flags
from scipy import ndimage

from biskip_jax import cli
from biskip_jax.data.datasets import folder
from biskip_jax.data.image_io import load_image
from biskip_jax.errors import UserError
from biskip_jax.evaluation import metrics
from biskip_jax.evaluation.eval_lib import output_stem

FLAGS = flags.FLAGS
LOW_PASS_SIGMA = 3.0  # Pixels: wider than a few pixels' displacement of an edge.
COLUMNS = ("offset out", "offset sharp", "detail out", "detail sharp", "low in", "low out",
           "high in", "high out")


def define_flags() -> None:
  """Defines the script's flags (only when run as a script, so that tests can import it)."""
  flags.DEFINE_string("pairs", None, "Folder of blur/ and sharp/ pairs (evaluate.py's --data).")
  flags.DEFINE_string("restored", None, "evaluate.py --out's restored/ folder for those pairs.")
  flags.mark_flags_as_required(["pairs", "restored"])


def _float(img: np.ndarray) -> np.ndarray:
  return img.astype(np.float64) / 255.0


def _detail(img: np.ndarray) -> float:
  return float(ndimage.laplace(img.mean(axis=2)).std())


def _split_psnr(img: np.ndarray, sharp: np.ndarray) -> tuple[float, float]:
  err = img - sharp
  low = ndimage.gaussian_filter(err, (LOW_PASS_SIGMA, LOW_PASS_SIGMA, 0))
  zero = np.zeros_like(err)
  return metrics.psnr(low, zero, data_range=1.0), metrics.psnr(err - low, zero, data_range=1.0)


def compare(blurred: np.ndarray, restored: np.ndarray, sharp: np.ndarray) -> dict[str, float]:
  """The module docstring's figures for one ``uint8[H, W, 3]`` triple, keyed by ``COLUMNS``."""
  if not blurred.shape == restored.shape == sharp.shape:
    raise UserError(f"sizes differ: blurred {blurred.shape}, restored {restored.shape}, sharp "
                    f"{sharp.shape}")
  b, r, s = _float(blurred), _float(restored), _float(sharp)
  low_in, high_in = _split_psnr(b, s)
  low_out, high_out = _split_psnr(r, s)
  detail_in = max(_detail(b), 1e-12)
  return {"offset out": float((r - b).mean() * 255), "offset sharp": float((s - b).mean() * 255),
          "detail out": _detail(r) / detail_in, "detail sharp": _detail(s) / detail_in,
          "low in": low_in, "low out": low_out, "high in": high_in, "high out": high_out}


def table(pairs_dir: str, restored_dir: str) -> list[tuple[str, dict[str, float]]]:
  """``(name, compare(...))`` for every pair of ``pairs_dir``, then ``("mean", ...)``."""
  rows = []
  for pair in folder.list_pairs(pairs_dir):
    path = os.path.join(restored_dir, output_stem(pair.name) + ".png")
    if not os.path.isfile(path):
      raise UserError(f"--restored: no {path} for pair {pair.name}; run evaluate.py "
                      f"--data=folder:{pairs_dir} --out=OUT and pass OUT/restored")
    try:
      rows.append((pair.name, compare(load_image(pair.blur), load_image(path),
                                      load_image(pair.sharp))))
    except UserError as e:
      raise UserError(f"pair {pair.name} and {path}: {e}") from e
  rows.append(("mean", {c: float(np.mean([r[c] for _, r in rows])) for c in COLUMNS}))
  return rows


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}: pass --pairs and --restored")
  rows = table(FLAGS.pairs, FLAGS.restored)
  width = max(len(name) for name, _ in rows)
  print(f"{'image':<{width}} " + " ".join(f"{c:>12}" for c in COLUMNS))
  for name, row in rows:
    print(f"{name:<{width}} " + " ".join(f"{row[c]:12.3f}" for c in COLUMNS))


if __name__ == "__main__":
  define_flags()
  cli.run(main)
