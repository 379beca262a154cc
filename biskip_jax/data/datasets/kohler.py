"""Köhler et al. 2012 real camera-shake benchmark (evaluation only).

R. Köhler, M. Hirsch, B. Mohler, B. Schölkopf, S. Harmeling, "Recording and Playback of Camera
Shake: Benchmarking Blind Deconvolution with a Real-World Database", ECCV 2012. 4 sharp images
x 12 recorded camera trajectories = 48 blurred images (800x800). The benchmark comes as five
archives at http://people.kyb.tuebingen.mpg.de/rolfk/BenchmarkECCV2012/ (:data:`URL`):
``BlurryImages.zip`` and ``GroundTruth_pngs_Image1.zip`` .. ``GroundTruth_pngs_Image4.zip``
(:data:`ARCHIVES`), unzipped into one folder::

  Kohler/Blurry{i}_{j}.png                               i = 1..4 image, j = 1..12 trajectory
  Kohler/Image{i}/Kernel{j}/GroundTruth{i}_{j}_{k}.png   k = 1..K: sharp frames recorded along
                                                         trajectory j (any K >= 1; ~199)

Also read: the blurred images in ``Kohler/BlurryImages/``; the ``Image{i}`` folders inside
``Kohler/GroundTruth/`` or inside a folder named after their archive
(``Kohler/GroundTruth_pngs_Image{i}/``, as some unzip tools make); and the flat layout
``Kohler/GroundTruth/GroundTruth{i}_{j}_{k}.png`` (or those files directly in ``Kohler/``).
``.png``, ``.jpg`` and ``.jpeg`` are accepted. Examples are sorted by (i, j) and named
``"Blurry{i}_{j}.png"``; each carries ``"sharp_frames"``, all K ground-truth frames in order of
k (for the metrics' Köhler protocol: best PSNR over frames after alignment), and ``"sharp"``,
the middle frame ``k = (K + 1) // 2`` (index ``(K - 1) // 2`` of the sorted frames).
"""

import collections
import os
import re

from biskip_jax.data import datasets, image_io
from biskip_jax.errors import UserError

URL = "http://people.kyb.tuebingen.mpg.de/rolfk/BenchmarkECCV2012/"
ARCHIVES = ("BlurryImages.zip",) + tuple(f"GroundTruth_pngs_Image{i}.zip" for i in range(1, 5))
_IMAGE_DIR = re.compile(r"^Image(\d+)$", re.IGNORECASE)
_KERNEL_DIR = re.compile(r"^Kernel(\d+)$", re.IGNORECASE)
_ARCHIVE_DIR = re.compile(r"^GroundTruth_pngs_Image\d+$", re.IGNORECASE)
_BLURRY = re.compile(r"^Blurry(\d+)_(\d+)\.(png|jpe?g)$", re.IGNORECASE)
_TRUTH = re.compile(r"^GroundTruth(\d+)_(\d+)_(\d+)\.(png|jpe?g)$", re.IGNORECASE)


def _scan(folder: str, pattern: re.Pattern[str]) -> dict[tuple[int, ...], str]:
  out = {}
  if os.path.isdir(folder):
    for f in os.listdir(folder):
      m = pattern.match(f)
      if m and image_io.is_regular_file(os.path.join(folder, f)):
        out[tuple(int(g) for g in m.groups()[:-1])] = os.path.join(folder, f)
  return out


def _subdirs(folder: str, pattern: re.Pattern[str]) -> list[str]:
  if not os.path.isdir(folder):
    return []
  return sorted(os.path.join(folder, d) for d in os.listdir(folder)
                if pattern.match(d) and os.path.isdir(os.path.join(folder, d)))


def _scan_truth(root: str) -> dict[tuple[int, ...], str]:
  """``{(i, j, k): path}`` of the ground-truth frames in every supported layout."""
  truth = {**_scan(root, _TRUTH), **_scan(os.path.join(root, "GroundTruth"), _TRUTH)}
  # The archives' own layout: Image{i}/Kernel{j}/GroundTruth{i}_{j}_{k}.png.
  parents = [root, os.path.join(root, "GroundTruth"), *_subdirs(root, _ARCHIVE_DIR)]
  for parent in parents:
    for image_dir in _subdirs(parent, _IMAGE_DIR):
      for kernel_dir in _subdirs(image_dir, _KERNEL_DIR):
        truth.update(_scan(kernel_dir, _TRUTH))
  return truth


def list_pairs(root: str) -> list[datasets.Pair]:
  """Lists the benchmark's examples, sorted by image and trajectory.

  Args:
    root: the ``Kohler`` folder (see the module docstring for the layout).

  Returns:
    One :class:`~biskip_jax.data.datasets.Pair` per blurred image, with ``sharp_frames`` set.

  Raises:
    UserError: the folder or its files are missing (the message says where it looked, what it
      expected and where to get it), or a blurred image has no ground-truth frame.
  """
  expected = (f"Expected {', '.join(ARCHIVES)} from {URL} unzipped into {root} (giving "
              "Blurry{i}_{j}.png and Image{i}/Kernel{j}/GroundTruth{i}_{j}_{k}.png); pass that "
              "folder as evaluate.py --data_path or --config.data.path.")
  if not os.path.isdir(root):
    raise UserError(f"Köhler dataset not found: {root} is not a folder (--config.data.path). "
                    f"{expected}")
  blurry = {**_scan(root, _BLURRY), **_scan(os.path.join(root, "BlurryImages"), _BLURRY)}
  truth = _scan_truth(root)
  if not blurry:
    raise UserError(f"Köhler dataset not found: no Blurry{{i}}_{{j}} images in {root} or "
                    f"{os.path.join(root, 'BlurryImages')}. {expected}")
  frames = collections.defaultdict(list)
  for (i, j, _), path in sorted(truth.items()):
    frames[(i, j)].append(path)
  pairs = []
  for (i, j), blur in sorted(blurry.items()):
    if not frames[(i, j)]:
      raise UserError(f"Köhler blurred image {blur} has no ground truth: expected frames "
                      f"{os.path.join(root, f'Image{i}', f'Kernel{j}')}/GroundTruth{i}_{j}_{{k}}"
                      f".png: download GroundTruth_pngs_Image{i}.zip from {URL} and unzip it "
                      f"into {root}.")
    fs = tuple(frames[(i, j)])
    pairs.append(datasets.Pair(os.path.basename(blur), blur, fs[(len(fs) - 1) // 2], fs))
  return pairs
