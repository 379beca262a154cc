"""A folder of users' own pairs: ``PATH/blur/NAME`` <-> ``PATH/sharp/NAME``.

Any image format Pillow reads. Files are matched by their path relative to ``blur/`` and
``sharp/`` (subfolders allowed), first by the exact name, then by the name without extension
(``blur/x.jpg`` pairs with ``sharp/x.png``). If ``PATH/<split>/blur`` exists (e.g.
``PATH/train/blur``, ``PATH/test/blur``) the split's folder is used, otherwise ``PATH`` itself
serves every split. Files that pair with nothing are listed in a :class:`UnpairedWarning`;
a folder where nothing pairs is an error. Examples are sorted by name.
"""

import collections
import os
import warnings

from biskip_jax.data import datasets, image_io
from biskip_jax.errors import UserError


class UnpairedWarning(UserWarning):
  """Some images in a folder dataset have no partner and are ignored."""


def split_root(path: str, split: str | None) -> str:
  """The folder holding ``blur/`` and ``sharp/`` for ``split``: ``path/split`` or ``path``."""
  if split and os.path.isdir(os.path.join(path, split, "blur")):
    return os.path.join(path, split)
  return path


def list_pairs(path: str, split: str | None = None) -> list[datasets.Pair]:
  """Pairs ``blur/`` and ``sharp/`` images under ``path`` (or ``path/split``).

  Args:
    path: dataset folder.
    split: optional split subfolder, used if ``path/split/blur`` exists.

  Returns:
    The pairs, named by the blurred file's relative path, sorted.

  Raises:
    UserError: ``blur/`` or ``sharp/`` is missing, a name matches several sharp files, or
      nothing pairs.
  """
  root = split_root(path, split)
  blur_dir, sharp_dir = os.path.join(root, "blur"), os.path.join(root, "sharp")
  for d in (blur_dir, sharp_dir):
    if not os.path.isdir(d):
      raise UserError(f"Folder dataset {root} (--config.data.path) has no {os.path.basename(d)}/"
                      " subfolder. Expected PATH/blur/NAME and PATH/sharp/NAME with matching "
                      "names (the extension may differ), optionally under PATH/train and "
                      "PATH/test.")
  blurs, sharps = image_io.list_images(blur_dir, recursive=True), image_io.list_images(
      sharp_dir, recursive=True)
  sharp_set = set(sharps)
  by_stem = collections.defaultdict(list)
  for s in sharps:
    by_stem[os.path.splitext(s)[0]].append(s)
  pairs, used = [], set()
  unpaired = []
  for b in blurs:
    if b in sharp_set:
      s = b
    else:
      candidates = by_stem.get(os.path.splitext(b)[0], [])
      if len(candidates) > 1:
        raise UserError(f"Folder dataset: blurred image {os.path.join(blur_dir, b)} matches "
                        f"several sharp images {candidates} in {sharp_dir}; keep only one.")
      if not candidates:
        unpaired.append(f"blur/{b}")
        continue
      s = candidates[0]
    used.add(s)
    pairs.append(datasets.Pair(b, os.path.join(blur_dir, b), os.path.join(sharp_dir, s)))
  unpaired += [f"sharp/{s}" for s in sharps if s not in used]
  if not pairs:
    raise UserError(f"Folder dataset {root}: no blurred image in {blur_dir} ({len(blurs)} "
                    f"images) has a sharp image of the same name in {sharp_dir} ({len(sharps)} "
                    "images). Name the pairs alike, e.g. blur/x.png and sharp/x.png.")
  if unpaired:
    shown = ", ".join(unpaired[:20]) + (f", ... ({len(unpaired) - 20} more)"
                                        if len(unpaired) > 20 else "")
    warnings.warn(f"Folder dataset {root}: {len(unpaired)} images without a partner are ignored:"
                  f" {shown}", UnpairedWarning, stacklevel=2)
  return pairs
