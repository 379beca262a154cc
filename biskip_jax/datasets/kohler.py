"""Köhler et al. 2012 real camera-shake benchmark (evaluation only).

R. Köhler, M. Hirsch, B. Mohler, B. Schölkopf, S. Harmeling, "Recording and Playback of Camera
Shake: Benchmarking Blind Deconvolution with a Real-World Database", ECCV 2012. 4 sharp images
x 12 recorded camera trajectories = 48 blurred images (800x800), downloadable from
http://webdav.tuebingen.mpg.de/pixel/benchmark4camerashake/ (the blurred images and the ground
truth come as separate archives).

Supported layout (the file names of the benchmark's archives)::

  Kohler/BlurryImages/Blurry{i}_{j}.png           i = 1..4 image, j = 1..12 trajectory
  Kohler/GroundTruth/GroundTruth{i}_{j}_{k}.png   k = 1..K: sharp frames recorded along
                                                  trajectory j (any K >= 1)

``.png``, ``.jpg`` and ``.jpeg`` are accepted, and so are both kinds of files directly in
``Kohler/`` without the two subfolders. Examples are sorted by (i, j) and named
``"Blurry{i}_{j}.png"``; each carries ``"sharp_frames"``, all K ground-truth frames in order of
k (for the metrics' Köhler protocol: best PSNR over frames after alignment), and ``"sharp"``,
the middle frame ``k = (K + 1) // 2`` (index ``(K - 1) // 2`` of the sorted frames).
"""

import collections
import os
import re

from biskip_jax import datasets
from biskip_jax.errors import UserError

URL = "http://webdav.tuebingen.mpg.de/pixel/benchmark4camerashake/"
_BLURRY = re.compile(r"^Blurry(\d+)_(\d+)\.(png|jpe?g)$", re.IGNORECASE)
_TRUTH = re.compile(r"^GroundTruth(\d+)_(\d+)_(\d+)\.(png|jpe?g)$", re.IGNORECASE)


def _scan(folder: str, pattern: re.Pattern[str]) -> dict[tuple[int, ...], str]:
  out = {}
  if os.path.isdir(folder):
    for f in os.listdir(folder):
      m = pattern.match(f)
      if m:
        out[tuple(int(g) for g in m.groups()[:-1])] = os.path.join(folder, f)
  return out


def list_pairs(root: str) -> list[datasets.Pair]:
  """Lists the benchmark's examples, sorted by image and trajectory.

  Args:
    root: the ``Kohler`` folder (see the module docstring for the layout).

  Returns:
    One :class:`~biskip_jax.datasets.Pair` per blurred image, with ``sharp_frames`` set.

  Raises:
    UserError: the folder or its files are missing (the message says where it looked, what it
      expected and where to get it), or a blurred image has no ground-truth frame.
  """
  expected = (f"Expected {root}/BlurryImages/Blurry{{i}}_{{j}}.png and "
              f"{root}/GroundTruth/GroundTruth{{i}}_{{j}}_{{k}}.png (download both archives from "
              f"{URL}, unzip them into one folder and pass --config.data.path=/path/to/Kohler).")
  if not os.path.isdir(root):
    raise UserError(f"Köhler dataset not found: {root} is not a folder (--config.data.path). "
                    f"{expected}")
  blurry = {**_scan(root, _BLURRY), **_scan(os.path.join(root, "BlurryImages"), _BLURRY)}
  truth = {**_scan(root, _TRUTH), **_scan(os.path.join(root, "GroundTruth"), _TRUTH)}
  if not blurry:
    raise UserError(f"Köhler dataset not found: no Blurry{{i}}_{{j}} images in {root} or "
                    f"{os.path.join(root, 'BlurryImages')}. {expected}")
  frames = collections.defaultdict(list)
  for (i, j, _), path in sorted(truth.items()):
    frames[(i, j)].append(path)
  pairs = []
  for (i, j), blur in sorted(blurry.items()):
    if not frames[(i, j)]:
      raise UserError(f"Köhler blurred image {blur} has no ground truth: expected "
                      f"{os.path.join(root, 'GroundTruth')}/GroundTruth{i}_{j}_{{k}}.png frames. "
                      f"Download the ground-truth archive from {URL}.")
    fs = tuple(frames[(i, j)])
    pairs.append(datasets.Pair(os.path.basename(blur), blur, fs[(len(fs) - 1) // 2], fs))
  return pairs
